"""The typed summary is summary.json's schema: every committed summary reads into it and writes
back byte for byte, and the mapping view a script may use is that same JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdbench.errors import RunFolderError
from kdbench.runs.store import read_summary, write_summary
from kdbench.summary import Summary

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "docs" / "results").rglob("summary.json"))


def test_there_are_committed_summaries_to_read():
    assert len(COMMITTED) >= 10


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT / "docs")))
def test_committed_summary_round_trips_byte_for_byte(path, tmp_path):
    summary = read_summary(path.parent)
    assert isinstance(summary.rows["student_hard"].n, int)
    write_summary(tmp_path, summary)
    assert (tmp_path / "summary.json").read_bytes() == path.read_bytes()
    assert dict(summary) == json.loads(path.read_text())  # the mapping view is the JSON
    assert summary["comparisons"][1]["verdict"] == summary.comparisons[1].verdict


def test_an_old_or_foreign_summary_is_one_clear_error(tmp_path):
    raw = json.loads(COMMITTED[0].read_text())
    old = {**raw, "rows": {k: {"mean": 0.02} for k in raw["rows"]}}  # fractions, before pct
    with pytest.raises(RunFolderError, match="older kdbench"):
        Summary.from_json(old)
    with pytest.raises(RunFolderError, match="not a kdbench summary"):
        Summary.from_json({"rows": raw["rows"]})
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="not valid JSON"):
        read_summary(tmp_path)
