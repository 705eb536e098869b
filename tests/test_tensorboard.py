"""`--track tensorboard`: a study and a sweep written as TensorBoard event files, read back with
TensorBoard's own reader, against the run folder's records and summary."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kdbench.cli.app import app
from kdbench.runs.store import read_records, read_summary

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)

SMALL = ["--dataset", "digits", "--repeats", "2", "--members", "2", "--epochs", "2",
         "--threads", "1", "--quiet"]  # fmt: skip


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_a_study_logs_each_models_curves_and_its_numbers_and_a_relog_replaces_them(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("KDBENCH_TENSORBOARD_DIR", str(tmp_path / "tb"))
    run = tmp_path / "run"
    args = ["reproduce", *SMALL, "--no-latency", "--out", str(run), "--track", "tensorboard"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"tensorboard: {tmp_path / 'tb' / 'run'}" in result.stderr
    board = tmp_path / "tb" / "run"
    records = [r for r in read_records(run) if r.kind == "model"]
    assert len(records) == 2 * (1 + 2 + 3)  # per repeat: teacher, 2 members, 3 students
    for rec in records:
        member = f"-m{rec.member}" if rec.role == "ensemble" else ""
        got = _scalars(board / "models" / rec.role / f"r{rec.repeat}{member}")
        assert got["val_loss"] == [(h["epoch"], pytest.approx(h["val_loss"])) for h in rec.history]
        assert got["test_error"] == [(rec.history[-1]["epoch"], pytest.approx(rec.test_error))]
    summary = read_summary(run)
    study = _scalars(board)
    for name, row in summary.rows.items():
        assert study[f"test_error_pct/{name}"] == [(0, pytest.approx(row.mean_pct))]
    diff = summary.comparison("student_from_teacher", "student_hard").mean_diff_pp
    assert study["vs_hard_pp/student_from_teacher"] == [(0, pytest.approx(diff))]

    # sent again (kdbench track): the folder is replaced, each curve still once
    result = CliRunner().invoke(app, ["track", str(run), "--to", "tensorboard"])
    assert result.exit_code == 0, result.output
    again = _scalars(board / "models" / "teacher" / "r0")
    assert len(again["val_loss"]) == len(records[0].history)
    assert not list((tmp_path / "tb").glob(".*tmp"))

    # a folder there that kdbench did not write is left alone: one line naming the fix
    (tmp_path / "tb" / "mine").mkdir()
    (tmp_path / "tb" / "mine" / "notes.txt").write_text("keep")
    result = CliRunner().invoke(
        app, ["track", str(run), "--to", "tensorboard", "--experiment", "mine"]
    )
    assert result.exit_code != 0 and "kdbench did not write" in result.stderr
    assert (tmp_path / "tb" / "mine" / "notes.txt").read_text() == "keep"


def test_a_sweep_logs_each_point_with_its_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_TENSORBOARD_DIR", str(tmp_path / "tb"))
    out = tmp_path / "sw"
    args = ["sweep", *SMALL, "--grid", "temperature=2,8", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--track", "tensorboard"])
    assert result.exit_code == 0, result.output
    points = json.loads((out / "sweep.json").read_text())["points"]
    for point in points:
        study = _scalars(tmp_path / "tb" / "sw" / point["label"])
        mean = point["rows"]["student_from_teacher"]["mean_pct"]
        assert study["test_error_pct/student_from_teacher"] == [(0, pytest.approx(mean))]


def test_without_tensorboard_the_flag_says_how_to_install_it(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    result = CliRunner().invoke(app, ["reproduce", *SMALL, "--track", "tensorboard"])
    assert result.exit_code == 2
    assert "pip install 'kdbench[tensorboard]'" in result.stderr
