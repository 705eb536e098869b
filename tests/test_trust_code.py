"""A run folder someone sends you runs no code: reading it (`report`, `diagnose`) never imports
the architecture it names as `package.module:Factory`, and building its models (`export`,
`kdbench.load`) imports it only with `--trust-code` / `trust_code=True`; code inside the run
folder is never imported, even then. The module here records that it was imported."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from kdbench.engine import own_code
from kdbench.errors import ConfigError, UntrustedCode
from tests.in_process import kdbench

MODULE = """
import os, pathlib
pathlib.Path(os.environ["KDBENCH_MARK"]).write_text("imported")
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(64, 10)

    def forward(self, x):
        return self.dense(x.flatten(1))
"""
TINY = ["--dataset", "digits", "--teacher-hidden", "16", "--repeats", "1", "--members", "2",
        "--epochs", "1", "--threads", "1", "--quiet", "--no-latency"]  # fmt: skip


@pytest.fixture
def sent_run(tmp_path, monkeypatch):
    """A finished run whose student is `marknet:Net`, as it reaches someone else: this process
    has consented to nothing, and the module is not imported yet."""
    sys.modules.pop("marknet", None)  # another test's import: this one must run the module
    code = tmp_path / "code"
    code.mkdir()
    (code / "marknet.py").write_text(MODULE)
    mark = tmp_path / "imported"
    monkeypatch.setenv("KDBENCH_MARK", str(mark))
    monkeypatch.syspath_prepend(str(code))
    run = tmp_path / "run"
    assert (
        kdbench("reproduce", *TINY, "--student-arch", "marknet:Net", "--out", run).returncode == 0
    )
    monkeypatch.setattr(own_code, "_TRUSTED", set())
    sys.modules.pop("marknet", None)
    mark.unlink()
    return run, mark


def test_reading_a_run_runs_none_of_its_code(sent_run, monkeypatch):
    run, mark = sent_run
    monkeypatch.setenv("KDBENCH_TENSORBOARD_DIR", str(run.parent / "tb"))
    for command in (["report"], ["diagnose"], ["decide"], ["track", "--to", "tensorboard"]):
        proc = kdbench(command[0], run, *command[1:])
        assert proc.returncode == 0, proc.stderr
        assert not mark.exists(), f"{command[0]} imported the folder's code"
    proc = kdbench("export", run, "--role", "student_hard", "--out", run.parent / "s.onnx")
    assert proc.returncode == 2 and "--trust-code" in proc.stderr and "marknet" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not mark.exists()
    import kdbench as api

    with pytest.raises(UntrustedCode, match="marknet:Net"):
        api.load(run, "student_hard")
    assert not mark.exists()


def test_consent_imports_it(sent_run):
    run, mark = sent_run
    assert kdbench("report", run, "--trust-code").returncode == 0
    assert mark.exists()
    import kdbench as api

    assert type(api.load(run, "student_hard", trust_code=True)).__name__ == "Net"


def test_code_inside_a_run_folder_is_never_imported(sent_run, monkeypatch):
    """A module shipped inside the folder, on the import path (a notebook opened there)."""
    run, mark = sent_run
    code = Path(run.parent / "code" / "marknet.py")
    shutil.move(code, run / "marknet.py")
    monkeypatch.syspath_prepend(str(run))
    import kdbench as api

    with pytest.raises(ConfigError, match="lies inside the run folder"):
        api.load(run, "student_hard", trust_code=True)
    assert not mark.exists()
