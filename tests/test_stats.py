"""Statistics against SciPy called directly and hand-worked examples; verdict wording."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as ss

from kdbench.analysis import report
from kdbench.analysis.stats import compare_rows, holm, min_wilcoxon_p, paired, summarize
from kdbench.analysis.verdict import sentence, wilcoxon_note
from kdbench.records import Record
from kdbench.summary import Comparison, Timing

A = [0.0231, 0.0242, 0.0219, 0.0260, 0.0238, 0.0251, 0.0229, 0.0244, 0.0236, 0.0255]
B = [0.0221, 0.0230, 0.0222, 0.0241, 0.0225, 0.0240, 0.0227, 0.0230, 0.0229, 0.0240]


def test_summary_against_scipy():
    s = summarize(A)  # fractions in, percent out
    assert s["mean_pct"] == pytest.approx(100 * np.mean(A), abs=1e-4)
    assert s["std_pct"] == pytest.approx(100 * np.std(A, ddof=1), abs=1e-4)
    # written out: a t-interval of the logits, back-transformed
    z = np.log(np.array(A) / (1 - np.array(A)))
    half = ss.t.ppf(0.975, 9) * z.std(ddof=1) / math.sqrt(10)
    expit = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    want = [100 * expit(z.mean() - half), 100 * expit(z.mean() + half)]
    assert s["ci95_pct"] == pytest.approx(want, abs=1e-4)
    # with 10 repeats and a small spread it is close to the plain t-interval
    lo, hi = ss.t.interval(0.95, 9, loc=np.mean(A), scale=ss.sem(A))
    assert s["ci95_pct"] == pytest.approx([100 * lo, 100 * hi], abs=2e-3)
    assert summarize([0.02])["ci95_pct"] is None and summarize([])["mean_pct"] is None


@pytest.mark.parametrize(
    "errors",
    [
        [0.1374 - 0.0151, 0.1374 + 0.0151],  # the README's smoke run: 2 repeats, t-CI < 0
        [0.0, 0.0008],  # error rates at 0
        [0.001, 0.0002, 0.0, 0.0005, 0.0011, 0.0003, 0.0, 0.0004, 0.0009, 0.0001],
        [0.999, 0.97],
    ],
)
def test_error_intervals_stay_inside_0_and_1(errors):
    s = summarize(errors)
    lo, hi = (v / 100 for v in s["ci95_pct"])
    assert 0 <= lo <= hi <= 1
    assert lo <= float(np.median(errors)) + 1e-6 and float(np.median(errors)) <= hi + 1e-6
    plain = ss.t.interval(0.95, len(errors) - 1, loc=np.mean(errors), scale=ss.sem(errors))
    if plain[0] < 0:  # where the plain interval leaves [0, 1], this one does not
        assert lo > plain[0]


def _typed(c: dict) -> Comparison:
    """A comparison from the fields a verdict reads; the rest as a real one would have them."""
    rest = {"repeats": list(range(c["n"])), "p_ttest": c["p_holm"], "p_wilcoxon": None, "d_z": None}
    return Comparison(**{**rest, **c})


def test_verdict_interval_has_the_sentence_sign():
    worse = {"a": "student_from_teacher", "b": "student_hard", "n": 10, "mean_diff_pp": 1.03,
             "ci95_pp": [0.8, 1.2], "ci95_holm_pp": [0.72, 1.34], "p_holm": 0.0001}  # fmt: skip
    better = {**worse, "a": "student_from_ensemble", "mean_diff_pp": -0.40,
              "ci95_holm_pp": [-0.54, -0.26]}  # fmt: skip
    assert "worse by 1.03 percentage points" in sentence(_typed(worse))
    assert "Holm-adjusted 95% CI 0.72 to 1.34" in sentence(_typed(worse))
    assert "better by 0.40 percentage points" in sentence(_typed(better))
    assert "Holm-adjusted 95% CI 0.26 to 0.54" in sentence(_typed(better))
    unclear = {**better, "p_holm": 0.3, "ci95_holm_pp": [-0.9, 0.1]}
    assert "mean difference -0.40" in sentence(_typed(unclear))
    assert "CI -0.90 to +0.10" in sentence(_typed(unclear))
    # a summary written before the adjusted interval: the plain one, named as unadjusted
    old = {**worse, "ci95_holm_pp": None}
    assert "95% CI (unadjusted) 0.80 to 1.20" in sentence(_typed(old))


def test_the_adjusted_interval_agrees_with_holm_and_is_scipys_at_its_level():
    rng = np.random.default_rng(3)
    base = rng.normal(2.0, 0.3, size=8) / 100
    rows = {  # five comparisons of differing strength, one Holm family
        "teacher": base - rng.normal(0.0012, 0.001, 8),
        "student_from_teacher": base + rng.normal(0.0008, 0.0015, 8),
        "ensemble": base - rng.normal(0.004, 0.002, 8),
        "student_from_ensemble": base - rng.normal(0.0015, 0.002, 8),
        "student_hard": base,
    }
    out = compare_rows({k: list(enumerate(v.tolist())) for k, v in rows.items()})
    assert {c.p_holm < 0.05 for c in out} == {True, False}, "scenario: both calls occur"
    for c in out:
        lo, hi = c.ci95_holm_pp
        assert (lo > 0 or hi < 0) == (c.p_holm < 0.05)
        assert lo <= c.ci95_pp[0] and c.ci95_pp[1] <= hi  # never narrower
        # by hand: the t-interval at 1 - alpha / k, k = Holm's factor for this test
        d = 100 * (np.array(rows[c.a]) - np.array(rows[c.b]))
        k = c.p_holm / c.p_ttest
        half = ss.t.ppf(1 - 0.05 / (2 * k), 7) * d.std(ddof=1) / math.sqrt(8)
        assert [lo, hi] == pytest.approx([d.mean() - half, d.mean() + half], abs=2e-4)


def test_paired_against_scipy_and_by_hand():
    c = paired(A, B)
    d = 100 * (np.array(A) - np.array(B))
    assert c["mean_diff_pp"] == pytest.approx(d.mean(), abs=1e-4)
    assert c["p_ttest"] == pytest.approx(ss.ttest_rel(A, B).pvalue)
    assert c["p_wilcoxon"] == pytest.approx(ss.wilcoxon(A, B).pvalue)
    # by hand: mean ± t_{0.975, 9} * sd / sqrt(n)
    half = 2.2621571627409915 * d.std(ddof=1) / math.sqrt(10)
    assert c["ci95_pp"] == pytest.approx([d.mean() - half, d.mean() + half], abs=1e-4)
    assert c["d_z"] == pytest.approx(d.mean() / d.std(ddof=1))


def test_holm_hand_worked():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1, made monotone
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_min_wilcoxon_p():
    assert min_wilcoxon_p(5) == pytest.approx(0.0625)
    assert min_wilcoxon_p(6) == pytest.approx(0.03125)
    # the exact test really gives that with all 5 differences positive
    assert ss.wilcoxon([1, 2, 3, 4, 5]).pvalue == pytest.approx(0.0625)


def _comparison(mean, lo, hi, p, n=10):
    return _typed(
        {
            "a": "student_from_ensemble",
            "b": "student_hard",
            "n": n,
            "mean_diff_pp": mean,
            "ci95_pp": [lo, hi],
            "p_holm": p,
        }
    )


def test_verdict_wording_at_the_boundaries():
    worse = sentence(_comparison(0.42, 0.20, 0.64, 0.049))
    assert worse.startswith("Distilling from the ensemble made the student worse by 0.42")
    better = sentence(_comparison(-0.30, -0.5, -0.1, 0.01))
    assert (
        "made the student better by 0.30 percentage points compared with training on hard" in better
    )
    at_threshold = sentence(_comparison(0.42, -0.01, 0.85, 0.05))
    assert at_threshold.startswith("No detectable difference")
    assert "Wilcoxon" not in at_threshold
    few = sentence(_comparison(0.42, 0.1, 0.7, 0.02, n=5))
    assert "worse" in few and "Wilcoxon" not in few  # said once for the run, not per verdict
    assert "cannot get below p = 0.0625" in wilcoxon_note(5)
    assert wilcoxon_note(6) is None


def _records(repeats, with_ensemble=True):
    rng = np.random.default_rng(0)
    recs = []
    base = {
        "teacher": 0.020,
        "student_from_teacher": 0.029,
        "student_from_ensemble": 0.027,
        "student_hard": 0.022,
    }
    for r in range(repeats):
        for role, mu in base.items():
            recs.append(
                Record(
                    kind="model",
                    repeat=r,
                    role=role,
                    member=0,
                    val_error=0.0,
                    test_error=float(mu + rng.normal(0, 0.001)),
                    seconds=1.0,
                    diverged_epoch=None,
                )
            )
        if with_ensemble:
            recs.append(
                Record(
                    kind="ensemble",
                    repeat=r,
                    role="ensemble",
                    member=None,
                    diverged_epoch=None,
                    val_error=0.0,
                    test_error=float(0.018 + rng.normal(0, 0.001)),
                )
            )
    return recs


def test_compare_rows_pairs_by_repeat_and_adjusts_the_family():
    from kdbench.records import row_errors

    comps = compare_rows(row_errors(_records(10)))
    ps = [c.p_ttest for c in comps]
    assert [c.p_holm for c in comps] == pytest.approx(holm(ps))
    kd = next(c for c in comps if c.a == "student_from_teacher" and c.b == "student_hard")
    assert kd.mean_diff_pp > 0 and kd.p_holm < 0.05


def test_report_from_synthetic_partial_run(tmp_path):
    from kdbench.config import Config

    recs = _records(4)
    recs = [r for r in recs if not (r.repeat == 3 and r.role == "student_hard")]
    recs.append(
        Record(
            kind="model",
            repeat=1,
            role="student_hard",
            member=1,
            val_error=0.9,
            test_error=0.9,
            diverged_epoch=3,
            seconds=1.0,
        )
    )
    run_config = {"config": Config().to_dict(), "environment": {"python": "3"}}
    summary = report.render(tmp_path, recs, run_config, Timing(12.0))
    assert summary["partial"] and summary["completed_repeats"] == 3
    assert summary["rows"]["student_hard"]["repeats"] == [0, 1, 2]
    assert 90.0 not in summary["rows"]["student_hard"]["errors_pct"]
    text = (tmp_path / "report.md").read_text()
    assert "Partial run" in text and "diverged" in text
    assert json.loads((tmp_path / "summary.json").read_text())["comparisons"][0]["n"] == 3
    for name in ("table.md", "table.csv", "figure.png", "figure.svg"):
        assert (tmp_path / name).stat().st_size > 0
    assert "n < 5: intervals and tests are not conclusive" in text  # 3 completed repeats


@pytest.mark.parametrize(
    ("overrides", "paper"),
    [
        ({}, True),
        ({"train_limit": 2000}, False),
        ({"epochs": 2}, False),
        ({"dataset": "fashion-mnist"}, False),
        ({"temperature": 2.0}, False),  # a sweep point at another temperature
        ({"student_hidden": (800, 800)}, False),  # the Hinton presets' networks
        ({"kd_monitor": "hard", "restore_best": True}, True),  # readings of the same study
    ],
)
def test_paper_column_only_for_the_papers_data_and_training(tmp_path, overrides, paper):
    from kdbench.config import Config

    cfg = Config().with_overrides(**overrides)
    run_config = {"config": cfg.to_dict(), "environment": {"python": "3"}}
    summary = report.render(tmp_path, _records(10), run_config, Timing(1.0))
    table = (tmp_path / "table.md").read_text()
    assert ("| Paper |" in table) == paper and ("†" in table) == paper
    assert all((row["paper_pct"] is not None) == paper for row in summary["rows"].values())
    assert "not conclusive" not in table  # 10 repeats


def test_table_csv_is_tidy_in_percent(tmp_path):
    import csv

    from kdbench.config import Config

    recs = _records(3)
    run_config = {"config": Config().to_dict(), "environment": {"python": "3"}}
    report.render(tmp_path, recs, run_config, Timing(1.0))
    rows = list(csv.DictReader((tmp_path / "table.csv").read_text().splitlines()))
    assert len(rows) == len(recs)  # one per model (or combined ensemble) and repeat
    assert set(rows[0]) >= {"role", "repeat", "member", "test_error_pct"}
    by_key = {(r.role, r.repeat, r.kind): r for r in recs}
    for row in rows:
        rec = by_key[(row["role"], int(row["repeat"]), row["kind"])]
        assert row["test_error_pct"] == f"{100 * rec.test_error:.2f}"  # percent, no float noise


def test_summary_json_has_one_unit_and_names_it(tmp_path):
    """Error rates in percent (`_pct`), differences in percentage points (`_pp`), rounded: no
    bare `mean`/`ci95` whose unit a reader must guess, no float32 noise."""
    from kdbench.config import Config

    run_config = {"config": Config().to_dict(), "environment": {"python": "3"}}
    report.render(tmp_path, _records(10), run_config, Timing(1.0))
    summary = json.loads((tmp_path / "summary.json").read_text())
    bare = {"mean", "std", "ci95", "errors", "paper", "mean_diff", "unit"}

    def walk(obj, key=""):
        if isinstance(obj, dict):
            for k, v in obj.items():
                assert k not in bare, f"{k} does not say its unit"
                walk(v, k)
        elif isinstance(obj, list):
            for v in obj:
                walk(v, key)
        elif isinstance(obj, float) and key.endswith(("_pct", "_pp")):
            assert round(obj, 4) == obj, f"{key} = {obj!r}: float noise"
            if key.endswith("_pct"):
                assert 0 <= obj <= 100, f"{key} = {obj} is not a percent"

    walk(summary)
    row = summary["rows"]["student_hard"]
    assert row["mean_pct"] == pytest.approx(sum(row["errors_pct"]) / 10, abs=1e-4)
    assert 1 < row["mean_pct"] < 5  # the synthetic records' errors are about 2%, in percent


def _committed_runs():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "docs" / "results"
    return sorted(p.parent for p in root.rglob("records.jsonl"))


def test_no_verdict_of_a_committed_run_disagrees_with_its_interval():
    """Over every committed run as committed in summary.json (re-rendered by `kdbench report`):
    'no detectable difference' exactly where the verdict's interval contains 0."""
    runs = _committed_runs()
    assert len(runs) >= 10, "the committed runs should be found"
    for folder in runs:
        committed = json.loads((folder / "summary.json").read_text())["comparisons"]
        for c in (Comparison(**c) for c in committed):
            if c.p_holm is None:
                continue
            lo, hi = c.ci95_holm_pp
            says_none = c.verdict.startswith("No detectable difference")
            assert says_none == (lo <= 0 <= hi), f"{folder.name}: {c.verdict}"
