"""The Python API for what the CLI does: `kdbench.sweep` and `kdbench.explain`, on a built-in
dataset and on your own arrays (the same numbers either way), and diagnose's advice in Python's
terms for a run on your arrays."""

from __future__ import annotations

import json

import pytest

import kdbench
from kdbench.analysis.advice import in_python
from kdbench.data.datasets import load_arrays

TINY = dict(dataset="digits", teacher_hidden=(16,), student_hidden=(8,), repeats=2, members=2,
            epochs=1, threads=1)  # fmt: skip


def _errors(folder):
    return [json.loads(x)["test_error"] for x in (folder / "records.jsonl").read_text().split()]


def test_sweep_on_your_arrays_equals_the_sweep_on_the_dataset(tmp_path):
    cfg = kdbench.Config().with_overrides(**TINY)
    grid = {"temperature": [2.0, 4.0]}
    builtin = kdbench.sweep(cfg, grid, tmp_path / "builtin", progress=False)
    a = load_arrays("digits")
    arrays = (a["train_images"], a["train_labels"], a["test_images"], a["test_labels"])
    mine = kdbench.sweep(cfg, grid, tmp_path / "mine", arrays=arrays, progress=False)
    assert [p["label"] for p in mine["points"]] == ["temperature=2", "temperature=4"]
    for p, q in zip(builtin["points"], mine["points"], strict=True):
        assert p["rows"] == q["rows"] and p["kd_vs_hard"] == q["kd_vs_hard"]
        folder = tmp_path / "mine" / q["folder"]
        assert (folder / "data.safetensors").is_file()  # the folder is complete
        assert sorted(_errors(folder)) == sorted(_errors(tmp_path / "builtin" / p["folder"]))
    assert (tmp_path / "mine" / "sweep.md").is_file()


def test_explain_from_python_skips_twins_and_reads_your_arrays(tmp_path, capsys):
    a = load_arrays("digits")
    arrays = (a["train_images"], a["train_labels"], a["test_images"], a["test_labels"])
    settings = {k: v for k, v in TINY.items() if k != "dataset"}
    table = kdbench.explain(tmp_path / "ex", ["paper", "hard-monitor"], arrays=arrays,
                            progress=False, **settings)  # fmt: skip
    assert "skipping hard-monitor" in capsys.readouterr().err  # fixed epochs: same as paper
    text = table.read_text()
    assert "| paper |" in text and "| hard-monitor |" not in text
    assert (tmp_path / "ex" / "paper" / "data.safetensors").is_file()


@pytest.mark.parametrize(
    ("cli", "python"),
    [
        ("--preset hard-monitor (stop on the hard-label validation loss)",
         'kdbench.preset("hard-monitor") (stop on the hard-label validation loss)'),
        ("a lower --learning-rate (now 0.001)", "a lower learning_rate (now 0.001)"),
        ("a larger --max-epochs (now 50)", "a larger max_epochs (now 50)"),
        ("a lower --temperature (5, 2.5), or `kdbench sweep --grid temperature=5,2.5,10`",
         'a lower temperature (5, 2.5), or `kdbench.sweep(cfg, {"temperature": [5, 2.5, 10]},'
         " out, arrays=(x_train, y_train, x_test, y_test))`"),
        ("a longer schedule for the teacher alone (--teacher-epochs 30)",
         "a longer schedule for the teacher alone (teacher_epochs=30)"),
    ],
)  # fmt: skip
def test_advice_for_a_python_run_is_in_pythons_terms(cli, python):
    assert in_python(cli) == python
    assert "--" not in in_python(cli)


def test_study_measures_latency_by_default_as_reproduce_does(tmp_path):
    a = load_arrays("digits")
    cfg = kdbench.Config().with_overrides(**{k: v for k, v in TINY.items() if k != "dataset"})
    arrays = (a["train_images"], a["train_labels"], a["test_images"], a["test_labels"])
    folder, summary = kdbench.study(*arrays, cfg, tmp_path / "r", progress=False)
    assert (folder / "resources.json").is_file()
    assert summary["resources"]["rows"]["student_hard"]["params"] > 0


def test_the_entry_points_are_listed_named_alike_and_annotated_right(tmp_path):
    """`dir(kdbench)` shows what `from kdbench import …` can take (they load on first use);
    every entry point calls its configuration `config`; `study` returns what `reproduce` does;
    the old `reproduce(cfg=…)` still works, with a DeprecationWarning."""
    import inspect
    import typing

    from kdbench.summary import Summary

    names = dir(kdbench)
    for name in ("reproduce", "study", "sweep", "explain", "load", "DistillationLoss"):
        assert name in names and getattr(kdbench, name) is not None
    for fn in (kdbench.reproduce, kdbench.study, kdbench.sweep):
        params = inspect.signature(fn).parameters
        assert "config" in params, fn.__name__
    for fn in (kdbench.reproduce, kdbench.study):
        hints = typing.get_type_hints(fn)
        assert typing.get_args(hints["return"])[1] is Summary, fn.__name__
    taken = tmp_path / "a file"
    taken.write_text("x")  # refused as a run folder: the call gets that far, then stops
    cfg = kdbench.Config().with_overrides(dataset="digits", repeats=1, members=2)
    with pytest.warns(DeprecationWarning, match="config="), pytest.raises(kdbench.KdbenchError):
        kdbench.reproduce(cfg=cfg, out=taken, progress=False)


def test_device_auto_is_cuda_where_visible_and_config_json_records_which(tmp_path, monkeypatch):
    """With a GPU present the device stayed the CPU; `device="auto"` picks it, and the run
    folder says which device trained (a resume elsewhere is checked against it)."""
    import json

    import torch

    import kdbench
    from kdbench.protocol.run import settle_device

    auto = kdbench.Config().with_overrides(device="auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert settle_device(auto).device == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert settle_device(auto).device == "cpu"
    cfg = auto.with_overrides(dataset="digits", repeats=1, members=1, epochs=1,
                              teacher_hidden=(16,), student_hidden=(8,), threads=1)  # fmt: skip
    folder, _ = kdbench.reproduce(cfg, tmp_path / "run", progress=False, measure_latency=False)
    assert json.loads((folder / "config.json").read_text())["config"]["device"] == "cpu"
