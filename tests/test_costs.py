"""Training costs: counted work against a hand count, seconds shared by work, each strategy's
total, the verdict's cost clause, energy only where measured, old folders still reported."""

from __future__ import annotations

import itertools
import json
from statistics import fmean

import pytest

from kdbench.analysis import costs as analysis_costs
from kdbench.analysis.report import build_summary
from kdbench.engine.architectures import build
from kdbench.engine.meter import Measured, Meter
from kdbench.engine.work import counted, pass_cost
from kdbench.protocol.costs import apportion
from kdbench.records import Record
from kdbench.runs.store import read_records
from kdbench.summary import Summary, Timing


def _mlp_hand(sizes):
    """Forward: every weight once. Training step: forward, the weights' gradients, and the
    inputs' gradients of every layer but the first (the data needs none)."""
    forward = sum(a * b for a, b in itertools.pairwise(sizes))
    return forward, 3 * forward - sizes[0] * sizes[1]


def test_counted_work_of_an_mlp_and_a_cnn_matches_the_hand_count():
    for hidden in ((100,), (500, 400, 300, 200, 100)):
        sizes = (784, *hidden, 10)
        mlp = build("mlp:" + ",".join(map(str, hidden)), 784, 10, None)
        cost = pass_cost(mlp, 784)  # counted by hand in kdbench: torch's count is the oracle
        assert (cost.forward, cost.train_step) == _mlp_hand(sizes)
        assert counted(mlp, 784) == cost
    # cnn:4,8 on 28x28: conv 1->4 3x3 (26x26 out), pool, conv 4->8 3x3 (11x11), pool, 200->10
    conv1, conv2, dense = 26 * 26 * 4 * 9, 11 * 11 * 8 * 4 * 9, 5 * 5 * 8 * 10
    cost = pass_cost(build("cnn:4,8", 784, 10, (1, 28, 28)), 784)
    assert cost.forward == conv1 + conv2 + dense
    assert cost.train_step == 2 * (conv1 + conv2 + dense) + conv2 + dense
    assert cost.training(3, 100, 20) == 3 * (100 * cost.train_step + 20 * cost.forward)


def test_a_stacks_seconds_are_shared_by_counted_work_and_sum_to_its_time():
    measured = Measured(12.0, 1 << 20, "rss", 6.0)
    shares = apportion(measured, 12.0, [100, 300, 200], [None, 100, None])
    assert sum(s.seconds for s in shares) == pytest.approx(12.0)
    assert [s.seconds for s in shares] == pytest.approx([12 * 100 / 700, 12 * 400 / 700,
                                                         12 * 200 / 700])  # fmt: skip
    assert sum(s.energy_joules for s in shares) == pytest.approx(6.0)
    assert {s.peak_memory_bytes for s in shares} == {1 << 20}


def test_energy_comes_from_rapl_counters_with_wrap_around(tmp_path):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "max_energy_range_uj").write_text("1000000\n")
    (zone / "energy_uj").write_text("900000\n")
    (tmp_path / "intel-rapl:0:0").mkdir()  # a sub-zone: inside its package's count
    with Meter("cpu", rapl=tmp_path) as m:
        (zone / "energy_uj").write_text("150000\n")  # wrapped: 0.1 J + 0.15 J
    assert m.result.energy_joules == pytest.approx(0.25)
    with Meter("cpu", rapl=tmp_path / "none") as m:
        pass
    assert m.result.energy_joules is None and m.result.peak_memory_bytes > 0


def test_each_strategy_costs_what_its_student_needed(quick_run):
    """quick_run: 2 repeats, 3 members, 2 fixed epochs, 1800 training and 200 validation
    images; every number below is recomputed from the hand count."""
    records = read_records(quick_run)
    models = [r for r in records if r.is_model]
    teacher_f, teacher_t = _mlp_hand((784, 500, 400, 300, 200, 100, 10))
    student_f, student_t = _mlp_hand((784, 100, 10))
    n_train, n_val = 1800, 200
    by_role = {}
    for r in models:
        by_role.setdefault(str(r.role), []).append(r)
    for role, recs in by_role.items():
        for r in recs:
            step, forward = (teacher_t, teacher_f) if role == "teacher" else (student_t, student_f)
            assert r.train_macs == 2 * (n_train * step + n_val * forward), role  # 2 epochs
    assert {r.target_macs for r in by_role["student_from_teacher"]} == {
        (n_train + n_val) * teacher_f
    }
    assert {r.target_macs for r in by_role["student_from_ensemble"]} == {
        3 * (n_train + n_val) * student_f
    }
    summary = Summary.from_json(json.loads((quick_run / "summary.json").read_text()))
    spent = summary.costs
    hard = 2 * (n_train * student_t + n_val * student_f)
    from_teacher = spent.strategy("from_teacher")
    assert spent.strategy("hard_labels").macs == hard
    assert (
        from_teacher.macs
        == 2 * (n_train * teacher_t + n_val * teacher_f) + hard + (n_train + n_val) * teacher_f
    )
    assert from_teacher.amortised_macs == hard + (n_train + n_val) * teacher_f
    ensemble = spent.strategy("from_ensemble")
    assert ensemble.macs == 4 * hard + 3 * (n_train + n_val) * student_f
    assert ensemble.macs_vs_hard == pytest.approx(ensemble.macs / hard)
    # seconds: the mean over repeats of each strategy's parts, from the records
    secs = {role: fmean(sum(r.seconds for r in recs if r.repeat == k) for k in (0, 1))
            for role, recs in by_role.items()}  # fmt: skip
    assert from_teacher.seconds == pytest.approx(secs["teacher"] + secs["student_from_teacher"])
    assert ensemble.seconds == pytest.approx(secs["ensemble"] + secs["student_from_ensemble"])
    # the verdict says it, the report tabulates it, the figure is drawn
    verdict = summary.comparison("student_from_ensemble", "student_hard").verdict
    ratio = analysis_costs._ratio_text(ensemble.macs_vs_hard)
    assert f"at {ratio} the hard-label student's training compute" in verdict
    assert "if the ensemble already exists" in verdict
    report = (quick_run / "report.md").read_text()
    assert "## What each strategy cost to train" in report and "not measured here" in report
    assert (quick_run / "costs.png").stat().st_size > 0
    # resources.json holds them beside the device measurements, the same numbers
    resources = json.loads((quick_run / "resources.json").read_text())
    assert resources["training"] == json.loads((quick_run / "summary.json").read_text())["costs"]
    assert set(resources["rows"]) >= {"teacher", "student_hard"}
    assert "training" not in json.loads((quick_run / "summary.json").read_text())["resources"]


def test_a_run_without_costs_still_reports_and_says_what_is_missing():
    old = [Record("model", r, role, 0, None, 0.02, 0.03) for r in range(3)
           for role in ("teacher", "student_from_teacher", "student_hard")]  # fmt: skip
    summary = build_summary(old, 3, Timing(1.0))
    assert summary.costs.missing and "before kdbench counted" in summary.costs.missing
    assert "training compute" not in " ".join(c.verdict for c in summary.comparisons)
    assert "not recorded" in analysis_costs.markdown(summary.costs)
    back = Summary.from_json(json.loads(json.dumps(summary.to_json())))
    assert back.costs.missing == summary.costs.missing
