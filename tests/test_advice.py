"""Diagnose's advice on the teacher rests on the committed teacher-strength curve: its numbers
are the curve's, and a teacher on the curve's harmful side is told so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdbench.analysis import advice
from kdbench.analysis.diagnose import from_records
from kdbench.protocol.presets import resolve
from kdbench.records import Record
from kdbench.sweeps import strength

ROOT = Path(__file__).resolve().parents[1]


def test_the_curve_in_the_advice_is_the_committed_sweeps():
    result = json.loads((ROOT / advice.CURVE.folder / "sweep.json").read_text())
    gaps = strength.gaps(result)
    assert advice.CURVE.hurt_up_to_pp == pytest.approx(gaps.hurt_up_to_pp, abs=0.005)
    if gaps.helped_from_pp is None:
        assert advice.CURVE.helped_from_pp is None
        # the sentence's strongest teacher is the sweep's, with its advantage and difference
        top = min(result["points"], key=lambda p: p["rows"]["teacher"]["mean_pct"])
        gap = top["rows"]["student_hard"]["mean_pct"] - top["rows"]["teacher"]["mean_pct"]
        diff = top["kd_vs_hard"]["student_from_teacher"]["mean_diff_pp"]
        text = advice.CURVE.sentence()
        assert f"{gap:.2f} pp better: {diff:+.2f} pp".replace("-", "−") in text
        assert not top["kd_vs_hard"]["student_from_teacher"]["significant"]
    else:
        assert advice.CURVE.helped_from_pp == pytest.approx(gaps.helped_from_pp, abs=0.005)


def _records(teacher_err: float, hard_err: float, spread: float) -> list[Record]:
    out = []
    for r in range(5):
        wobble, other = spread * (r - 2), spread * ((3 * r) % 5 - 2)  # paired, not identical
        for role, err in (("teacher", teacher_err + wobble), ("student_hard", hard_err + other),
                          ("student_from_teacher", hard_err), ("ensemble", hard_err),
                          ("student_from_ensemble", hard_err)):  # fmt: skip
            out.append(Record(kind="model", role=role, repeat=r, member=0, val_error=err,
                              test_error=err, epochs=6, best_epoch=4,
                              diverged_epoch=None))  # fmt: skip
    return out


def test_a_clearly_better_teacher_on_the_harmful_side_of_the_curve_is_flagged():
    cfg = resolve("paper")
    hurt = advice.CURVE.hurt_up_to_pp
    # clearly better than the hard-label student (paired CI below 0), by less than the curve's
    close = from_records(_records(0.024 - hurt / 200, 0.024, 0.0001), cfg)
    (weak,) = [f for f in close if f.code == "weak-teacher"]
    assert "by less than a single teacher needed" in weak.title
    assert advice.CURVE.folder in weak.evidence and f"{hurt:.2f} pp" in weak.evidence
    # far better than any teacher that hurt on the curve: nothing to say
    far = from_records(_records(0.024 - (hurt + 1.0) / 100, 0.024, 0.0001), cfg)
    assert "weak-teacher" not in {f.code for f in far}
