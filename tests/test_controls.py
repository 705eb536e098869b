"""The controls (`--controls`): the smoothed loss against its formula, the matched epsilon
against a hand computation, a control at epsilon 0 is the hard-label student, and the rows,
comparisons and verdicts a run with controls reports."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kdbench.engine.losses import smoothed_cross_entropy
from kdbench.protocol.presets import resolve
from kdbench.protocol.run import reproduce
from kdbench.runs.store import read_records
from tests.in_process import kdbench

TINY = dict(dataset="digits", teacher_hidden=(32,), student_hidden=(8,), repeats=2, members=2,
            patience=1, max_epochs=8, threads=1)  # fmt: skip


def test_smoothed_cross_entropy_is_the_formula_written_out():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4)
    labels = torch.randint(0, 4, (2, 5))
    eps = torch.tensor([0.1, 0.6])
    got = smoothed_cross_entropy(logits, labels, eps)
    for m in range(2):
        total = 0.0
        for b in range(5):
            z = logits[m, b].tolist()
            log_norm = math.log(sum(math.exp(v) for v in z))
            for c in range(4):
                target = (1 - eps[m].item()) * (c == labels[m, b].item()) + eps[m].item() / 4
                total -= target * (z[c] - log_norm)
        assert got[m].item() == pytest.approx(total / 5, rel=1e-5)
    plain = torch.nn.functional.cross_entropy(logits[0], labels[0])
    assert smoothed_cross_entropy(logits, labels, 0.0)[0].item() == pytest.approx(plain.item())


def test_matched_epsilon_is_the_wrong_class_mass_of_the_kd_targets():
    from kdbench.protocol import controls

    class Up:  # two repeats of a 1-member ensemble whose targets are known
        def member_logits(self, x):
            right = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])  # sample 0: class 0, 1: 1
            return torch.stack([right.unsqueeze(0), (2 * right).unsqueeze(0)])

    class Splits:
        x_train = torch.zeros(2, 1)
        y_train = torch.tensor([0, 1])

    cfg = resolve("paper", temperature=2.0, alpha=0.25)
    eps = controls.matched_epsilon(cfg, Splits(), Up())
    for scale, got in zip((1, 2), eps, strict=True):
        p_right = math.exp(3 * scale / 2) / (math.exp(3 * scale / 2) + 2)
        mass = 0.75 * (1 - p_right)
        assert got == pytest.approx(mass * 3 / 2, rel=1e-5)


def test_controls_without_regularisation_are_the_hard_label_student(tmp_path):
    """Smoothing at epsilon 0 and self-distillation at alpha = 1 leave only the hard-label CE:
    same seeds, same numbers, so a control's difference is its own."""
    cfg = resolve("paper", controls="smoothing,self", smoothing=0.0, alpha=1.0, **TINY)
    reproduce(cfg, tmp_path / "run", measure_latency=False)
    recs = read_records(tmp_path / "run")
    hard = {r.repeat: r.test_error for r in recs if r.role == "student_hard"}
    for role in ("student_smooth", "student_self"):
        assert {r.repeat: r.test_error for r in recs if r.role == role} == hard, role
    assert {r.target_macs for r in recs if r.role == "student_self"} != {None}


def test_a_run_with_controls_reports_them_and_resumes_without_retraining(tmp_path):
    cfg = resolve("controls", **TINY)
    folder, summary = reproduce(cfg, tmp_path / "run", measure_latency=False)
    assert {"student_smooth", "student_smooth_matched", "student_self"} <= set(summary.rows)
    pairs = {(c.a, c.b) for c in summary.comparisons}
    assert ("student_smooth", "student_hard") in pairs
    assert ("student_from_ensemble", "student_smooth_matched") in pairs
    assert len(summary.comparisons) == 5 + 3 * 3  # one Holm family
    verdicts = " ".join(c.verdict for c in summary.comparisons)
    assert "the matched label-smoothing control" in verdicts
    matched = [r for r in read_records(folder) if r.role == "student_smooth_matched"]
    assert len(matched) == 2 and all(0 < r.label_smoothing < 1 for r in matched)
    report = (folder / "report.md").read_text()
    assert "Control: hard labels, smoothed" in report
    before = (folder / "records.jsonl").read_text()
    again, _ = reproduce(cfg, folder, measure_latency=False)
    assert (again / "records.jsonl").read_text() == before
    saved = json.loads((folder / "summary.json").read_text())
    assert saved["rows"]["student_smooth_matched"]["n"] == 2
    # explain and sweep tables carry the controls, each run's own comparisons
    from kdbench.sweeps import explain, sweep
    from kdbench.sweeps.report import markdown

    table = explain.markdown(explain.collect([folder]))
    assert "## Controls" in table and "| smoothing − hard |" in table
    assert "| ensemble-KD − smoothing-matched |" in table
    mine = summary.comparison("student_smooth", "student_hard").mean_diff_pp
    assert f"| {mine:+.2f}" in table.split("## Controls")[1]
    entry = {"label": "alpha=0.1", "point": {"alpha": 0.1}, "folder": "run", "summary": summary}
    result = sweep.analyse({"alpha": [0.1]}, [entry])
    assert len(result["points"][0]["controls"]) == 3 * 3
    assert f"| alpha=0.1 | {mine:+.2f}" in markdown(json.loads(json.dumps(result)))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--controls", "smoothng"], "did you mean smoothing"),
        (["--controls", "smoothing", "--smoothing", "1"], "smoothing must be in [0, 1)"),
        (["--smoothing", "-0.1"], "smoothing must be in [0, 1)"),
    ],
)
def test_bad_controls_are_one_line_and_write_nothing(tmp_path, flags, message):
    out = tmp_path / "run"
    proc = kdbench("reproduce", "--dataset", "digits", *flags, "--out", out)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_the_teachers_regularisation_control_trains_with_its_dropout(tmp_path):
    cfg = resolve("paper", controls="teacher-reg,self", teacher_dropout=0.5, **TINY)
    folder, summary = reproduce(cfg, tmp_path / "run", measure_latency=False)
    recs = read_records(folder)
    reg = {r.repeat: r.test_error for r in recs if r.role == "student_teacher_reg"}
    hard = {r.repeat: r.test_error for r in recs if r.role == "student_hard"}
    assert set(reg) == {0, 1} and reg != hard  # dropout 0.5 changes what it learns
    assert {"student_self", "student_teacher_reg"} <= set(summary.rows)
    strategies = {s.strategy for s in summary.costs.strategies}
    assert {"self_distillation", "teacher_regularisation"} <= strategies
    selfd = summary.costs.strategy("self_distillation")
    assert selfd.macs > selfd.amortised_macs  # the hard-label student it distils from counts


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--controls", "teacher-reg"], "this teacher has neither"),
        (["--controls", "self", "--teacher-updates", "joint"], "frozen hard-label student"),
    ],
)
def test_a_control_the_run_cannot_have_is_refused(tmp_path, flags, message):
    out = tmp_path / "run"
    proc = kdbench("reproduce", "--dataset", "digits", *flags, "--out", out)
    assert proc.returncode == 2 and message in proc.stderr and not out.exists()
