"""One record type: written and read by `store`, and old run folders (the committed ones
included, written before the type existed) still load and report the same numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kdbench.errors import RunFolderError
from kdbench.records import VERSION, Record
from kdbench.roles import ROWS
from kdbench.runs.store import read_config, read_records
from tests.in_process import kdbench

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


def test_record_round_trip_and_version_one_reads():
    rec = Record(kind="model", repeat=1, role="teacher", member=0, diverged_epoch=None,
                 val_error=0.02, test_error=0.03, epochs=4, history=[{"epoch": 1}])  # fmt: skip
    raw = rec.to_json()
    assert raw["version"] == VERSION and raw["role"] == "teacher" and raw["diverged_epoch"] is None
    assert "copies_test_error" not in raw and "members" not in raw
    assert Record.from_json(raw) == rec
    old = {k: v for k, v in raw.items() if k != "version"}
    assert Record.from_json(old).version == 1
    with pytest.raises(RunFolderError, match="upgrade kdbench"):
        Record.from_json({**raw, "surprise": 1})


def test_committed_runs_load():
    records = read_records(RESULTS / "paper-mnist")
    assert len(records) == 10 * (1 + 10 + 1 + 2) + 10  # models, then one line per ensemble
    assert {r.role for r in records} == set(ROWS)  # Table 1: no controls then
    assert all(r.version == 1 for r in records)
    assert read_config(RESULTS / "paper-mnist").protocol.repeats == 10
    sweep = json.loads((RESULTS / "sweep-mnist" / "sweep.json").read_text())
    for point in sweep["points"]:  # folders relative to the sweep's own folder
        folder = RESULTS / "sweep-mnist" / point["folder"]
        assert len(read_records(folder)) == len(records)


def test_report_of_a_committed_run_gives_its_committed_numbers(tmp_path):
    run = tmp_path / "paper-mnist"
    shutil.copytree(RESULTS / "paper-mnist", run)
    before = json.loads((run / "summary.json").read_text())
    assert kdbench("report", run).returncode == 0
    after = json.loads((run / "summary.json").read_text())
    # no checkpoints are committed: the figures measured with them are kept, not dropped
    committed = json.loads((RESULTS / "paper-mnist" / "diagnose.json").read_text())
    assert committed["soft_targets"] is not None
    assert (
        json.loads((run / "diagnose.json").read_text())["soft_targets"] == committed["soft_targets"]
    )
    for row, got in after["rows"].items():
        assert got["errors_pct"] == before["rows"][row]["errors_pct"]
        assert got["mean_pct"] == pytest.approx(before["rows"][row]["mean_pct"])
