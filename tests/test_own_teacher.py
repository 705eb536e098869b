"""Your own teacher: an nn.Module, an ONNX file or precomputed logits, against the oracle of
kdbench's own trained teacher (the same weights handed back must give the same study)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import kdbench
from kdbench.data import datasets as data
from kdbench.engine.mlp import MLP, init_stack
from kdbench.errors import ConfigError, DataError, RunFolderError
from kdbench.runs import export, store

SMALL = dict(
    repeats=1, members=2, epochs=3, batch_size=64, learning_rate=1e-2, teacher_hidden=(32,),
    student_hidden=(16,), threads=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    return data.digits_arrays()


def _args(a):
    return a["train_images"], a["train_labels"], a["test_images"], a["test_labels"]


def _records(folder) -> dict:
    recs = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    return {(r["role"], r["kind"], r["member"]): r for r in recs}


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """kdbench's own study (teacher trained) at both teacher_updates, and its teacher back."""
    out = {}
    for mode in ("frozen", "joint"):
        cfg = kdbench.Config().with_overrides(**SMALL, teacher_updates=mode)
        folder = tmp_path_factory.mktemp(mode) / "run"
        kdbench.study(*_args(digits), cfg, folder, progress=False, measure_latency=False)
        out[mode] = folder
    return out


@pytest.mark.parametrize("mode", ["frozen", "joint"])
def test_module_teacher_equals_the_trained_teacher_handed_back(digits, trained, mode, tmp_path):
    """Oracle: the same weights as an nn.Module give the same study, frozen or trained along
    (per-student copies with torch.optim.Adam against kdbench's stacked copies)."""
    teacher = kdbench.load(trained[mode], "teacher")
    cfg = kdbench.Config().with_overrides(**SMALL, teacher_updates=mode)
    folder, _ = kdbench.study(
        *_args(digits),
        cfg,
        tmp_path / "own",
        progress=False,
        teacher=teacher,
        measure_latency=False,
    )
    ours, theirs = _records(folder), _records(trained[mode])
    assert ours.keys() == theirs.keys()
    for key, rec in theirs.items():
        assert ours[key]["test_error"] == pytest.approx(rec["test_error"], abs=1e-6), key
        assert ours[key].get("epochs") == rec.get("epochs") or key[0] == "teacher"
        if mode == "joint" and key[0].startswith("student_from"):
            assert ours[key]["copies_test_error"] == pytest.approx(rec["copies_test_error"])
    for role in ("student_from_teacher", "student_from_ensemble"):
        a, b = kdbench.load(folder, role), kdbench.load(trained[mode], role)
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
    assert ours[("teacher", "model", 0)].get("epochs") is None  # nothing retrained it
    cfg_saved = json.loads((folder / "config.json").read_text())["config"]["model"]
    assert cfg_saved["own_teacher"] == "module:Sequential"
    assert len(cfg_saved["own_teacher_sha256"]) == 64
    assert "Your teacher (module:Sequential)" in (folder / "table.md").read_text()
    config_rows = (folder / "report.md").read_text().split("## Configuration")[1]
    assert "| Teacher | yours: module:Sequential (SHA-256 " in config_rows
    verdicts = (folder / "report.md").read_text().split("## Verdict")[1].split("##")[0]
    assert "your teacher" in verdicts.lower() and "large network" not in verdicts
    spent = json.loads((folder / "summary.json").read_text())["costs"]
    from_teacher = next(s for s in spent["strategies"] if s["strategy"] == "from_teacher")
    assert from_teacher["macs"] is None and from_teacher["amortised_macs"] > 0  # not its own
    assert "your teacher's own training is not counted" in from_teacher["note"]
    with pytest.raises(RunFolderError, match="your own"):
        kdbench.load(folder, "teacher")
    if mode == "frozen":  # the teacher was not changed by being used
        torch.testing.assert_close(
            teacher(torch.from_numpy(digits["test_images"])),
            kdbench.load(trained[mode], "teacher")(torch.from_numpy(digits["test_images"])),
        )


def test_onnx_and_logits_files_give_the_module_teachers_study(digits, trained, tmp_path):
    """The three forms of one teacher agree, with --train-limit applied to the logits files."""
    run = trained["frozen"]
    teacher = kdbench.load(run, "teacher")
    members = store.load_members(run, "teacher", 0)
    onnx_path = export.write_onnx(members, tmp_path / "t.onnx", MLP([64, 32, 10]))
    with torch.no_grad():
        z_train = teacher(torch.from_numpy(digits["train_images"]))
        z_test = teacher(torch.from_numpy(digits["test_images"]))
    save_file({"train": z_train, "test": z_test}, str(tmp_path / "t.safetensors"))
    np.save(tmp_path / "t.npy", torch.cat([z_train, z_test]).numpy())
    cfg = kdbench.Config().with_overrides(**SMALL, train_limit=1200)
    results = {}
    forms = {"module": teacher, "onnx": onnx_path, "safetensors": tmp_path / "t.safetensors",
             "npy": tmp_path / "t.npy"}  # fmt: skip
    for name, form in forms.items():
        folder, _ = kdbench.study(
            *_args(digits),
            cfg,
            tmp_path / name,
            progress=False,
            teacher=form,
            measure_latency=False,
        )
        results[name] = _records(folder)
    key_t, key_s = ("teacher", "model", 0), ("student_from_teacher", "model", 0)
    for name, recs in results.items():
        assert recs[key_t]["test_error"] == results["module"][key_t]["test_error"], name
        assert recs[key_t]["val_error"] == results["module"][key_t]["val_error"], name
        assert recs[key_s]["test_error"] == pytest.approx(
            results["module"][key_s]["test_error"], abs=2 / 360
        ), name  # ONNX Runtime's floats may differ in the last bits: a test image at most


class _Wide(nn.Module):
    def __init__(self, n_out: int, fill: float | None = None):
        super().__init__()
        self.linear, self.fill = nn.Linear(64, n_out), fill

    def forward(self, x):
        z = self.linear(x)
        return z if self.fill is None else torch.full_like(z, self.fill)


def test_bad_teachers_are_one_clear_error(digits, tmp_path):
    cfg = kdbench.Config().with_overrides(**SMALL)

    def study(teacher, **over):
        kdbench.study(*_args(digits), cfg.with_overrides(**over), tmp_path / "bad",
                      progress=False, teacher=teacher)  # fmt: skip

    with pytest.raises(DataError, match=r"10 classes, so it must give \[N, 10\]"):
        study(_Wide(5))
    with pytest.raises(DataError, match="NaN or infinite"):
        study(_Wide(10, float("nan")))
    with pytest.raises(DataError, match=r"must take \[N, 64\]"):
        study(nn.Linear(784, 10))
    np.save(tmp_path / "short.npy", np.zeros((100, 10), np.float32))
    with pytest.raises(DataError, match=r"\[1437 \+ 360, classes\]"):
        study(tmp_path / "short.npy")
    save_file({"train": torch.zeros(1437, 10)}, str(tmp_path / "half.safetensors"))
    with pytest.raises(DataError, match=r"lacks tensor\(s\) \['test'\]"):
        study(tmp_path / "half.safetensors")
    mnist_sized = [[p[0] for p in init_stack([784, 8, 10], [0])]]  # an MNIST model on digits
    export.write_onnx(mnist_sized, tmp_path / "wide.onnx", MLP([784, 8, 10]))
    with pytest.raises(DataError, match=r"takes input 'images' of shape \['batch', 784\]"):
        study(tmp_path / "wide.onnx")
    (tmp_path / "t.onnx").write_bytes(b"not onnx")
    with pytest.raises(DataError, match=r"cannot load .* as an ONNX model"):
        study(tmp_path / "t.onnx")
    with pytest.raises(ConfigError, match="--teacher-updates joint trains the teacher's weights"):
        study(tmp_path / "t.onnx", teacher_updates="joint")
    with pytest.raises(ConfigError, match=r"give an \.onnx model"):
        study(tmp_path / "t.pt")
    assert not (tmp_path / "bad").exists()  # nothing was written


def test_a_run_folder_refuses_another_teacher_and_resumes_with_its_own(digits, tmp_path):
    cfg = kdbench.Config().with_overrides(**{**SMALL, "epochs": 1})
    torch.manual_seed(0)
    first, second = _Wide(10), _Wide(10)
    folder, _ = kdbench.study(*_args(digits), cfg, tmp_path / "r", progress=False, teacher=first,
                                measure_latency=False)  # fmt: skip
    before = (folder / "records.jsonl").read_text()
    with pytest.raises(RunFolderError, match="own_teacher_sha256"):
        kdbench.study(*_args(digits), cfg, folder, progress=False, teacher=second)
    kdbench.study(*_args(digits), cfg, folder, progress=False, teacher=first)
    assert (folder / "records.jsonl").read_text() == before


def test_cli_teacher_flag(digits, tmp_path):
    """`kdbench reproduce --teacher` with a logits file; a wrong file is one line and exit 1
    (in-process: a subprocess would spend its time importing torch)."""
    from typer.testing import CliRunner

    from kdbench.cli.app import app

    z = torch.randn(1797, 10, generator=torch.Generator().manual_seed(0))
    save_file({"train": z[:1437], "test": z[1437:]}, str(tmp_path / "t.safetensors"))
    base = ["reproduce", "--dataset", "digits", "--repeats", "1", "--members", "2", "--epochs",
            "1", "--quiet", "--no-latency", "--threads", "1"]  # fmt: skip
    runner = CliRunner()
    ok = runner.invoke(app, [*base, "--own-teacher", str(tmp_path / "t.safetensors"), "--out",
                             str(tmp_path / "run")])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "Your teacher" in (tmp_path / "run" / "report.md").read_text()
    save_file({"train": z[:100], "test": z[1437:]}, str(tmp_path / "bad.safetensors"))
    bad = runner.invoke(app, [*base, "--own-teacher", str(tmp_path / "bad.safetensors"), "--out",
                              str(tmp_path / "bad")])  # fmt: skip
    assert bad.exit_code == 1  # a data error (usage errors exit 2)
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "'train' has shape [100, 10]" in lines[0], bad.stderr
    assert not (tmp_path / "bad").exists()
