"""Your own module is tried for what a stack needs before anything is written: each case is a
factory a user could write, refused in one line with exit 2 and no run folder, never mid-run
and never with a traceback (the catalogue of #41's class 6)."""

from __future__ import annotations

import pytest

from tests.in_process import kdbench

MODULE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(64, 10)

    def forward(self, x):
        return self.dense(x.flatten(1))


def Raises():
    raise RuntimeError("no weights file")


_ONE = Net()


def Shared():
    return _ONE


class Pair(Net):
    def forward(self, x):
        return self.dense(x.flatten(1)), x


class OneAtATime(Net):
    def forward(self, x):
        return self.dense(x.reshape(1, 64))


class Branchy(Net):
    def forward(self, x):
        if x.sum().item() > 0:  # Python control flow on a value: vmap cannot trace it
            return self.dense(x.flatten(1))
        return -self.dense(x.flatten(1))


class Masked(Net):
    def forward(self, x):  # which columns it keeps depends on the values: a data-dependent shape
        kept = x.flatten(1)[:, x.flatten(1).amax(0) > 0]
        return self.dense(torch.nn.functional.pad(kept, (0, 64 - kept.shape[1])))


def Double():
    return Net().double()
"""

CASES = [
    ("probes:Raises", "raised RuntimeError: no weights file"),
    ("probes:Shared", "returns the same module on every call"),
    ("probes:Pair", "gives outputs of shape tuple"),
    ("probes:OneAtATime", "works on one input but not on a batch of two"),
    ("probes:Branchy", "fails when kdbench trains members side by side"),
    ("probes:Masked", "fails when kdbench trains members side by side"),
    ("probes:Double", "in torch.float64; kdbench trains float32"),
    ("broken:Net", "importing broken raised SyntaxError"),
    (".probes:Net", "importing .probes raised TypeError"),
]


@pytest.mark.parametrize(("arch", "says"), CASES, ids=[c[0] for c in CASES])
def test_a_module_a_stack_cannot_train_is_one_line_before_anything(arch, says, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    (tmp_path / "probes.py").write_text(MODULE)
    (tmp_path / "broken.py").write_text("def Net(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    quick = ["--repeats", "1", "--members", "2", "--epochs", "1", "--threads", "1", "--quiet"]
    proc = kdbench("reproduce", "--dataset", "digits", "--student-arch", arch, *quick,
                   "--out", out)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert not out.exists()
