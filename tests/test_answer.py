"""The report's first line, the answer (`analysis.answer`): the strategy significantly better
than hard labels by the most, with the numbers of its Holm-adjusted comparison and its cost;
hard labels where none is; 'not yet' on too few repeats. Checked against every committed run's
own summary, the rule written out here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kdbench.analysis import answer
from kdbench.analysis.costs import STRATEGIES
from kdbench.roles import Role
from kdbench.runs.store import read_summary

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
RUNS = sorted(p.parent for p in RESULTS.glob("*/summary.json"))


def _expected(summary):
    """The rule, plainly: significant (Holm, n >= 3) and negative; the most negative wins."""
    best = None
    for name, role, _ in STRATEGIES:
        if role == Role.STUDENT_HARD or role not in summary.rows:
            continue
        c = summary.comparison(role, Role.STUDENT_HARD)
        significant = c.p_holm is not None and c.p_holm < 0.05 and c.n >= 3
        if (
            significant
            and c.mean_diff_pp < 0
            and (best is None or c.mean_diff_pp < best[1].mean_diff_pp)
        ):
            best = (name, c)
    return best


@pytest.mark.parametrize("folder", RUNS, ids=[p.name for p in RUNS])
def test_each_committed_run_answers_by_the_rule(folder):
    summary = read_summary(folder)
    got = answer.answer(summary, "the student")
    want = _expected(summary)
    text = answer.markdown(got)
    assert text.startswith("**Answer for the student:** ") and "\n" not in text
    if want is None:
        assert got.best is None and "train it on hard labels" in text
        for name, role, _ in STRATEGIES:  # each significantly worse strategy is named
            if role == Role.STUDENT_HARD or role not in summary.rows:
                continue
            c = summary.comparison(role, Role.STUDENT_HARD)
            if c.p_holm is not None and c.p_holm < 0.05 and c.n >= 3 and c.mean_diff_pp > 0:
                assert f"{answer.SHORT[name]} ({c.mean_diff_pp:+.2f} pp)" in text
        return
    name, c = want
    assert got.best.strategy == name
    assert answer.ADVICE[name] in text
    assert f"{c.mean_diff_pp:+.2f} pp" in text
    lo, hi = c.ci95_holm_pp
    assert f"95% CI {lo:+.2f} to {hi:+.2f}" in text
    cost = summary.costs.strategy(name) if summary.costs else None
    if cost is not None and cost.macs_vs_hard is not None:
        assert f"{cost.macs_vs_hard:.2g}× the hard-label student's training compute" in text


def test_paper_mnist_says_distil_from_the_ensemble():
    text = answer.markdown(answer.answer(read_summary(RESULTS / "paper-mnist"), "MLP 100"))
    assert "distil it from the ensemble" in text


def test_conv_fashion_mnist_says_hard_labels_and_that_the_teacher_hurts():
    text = answer.markdown(answer.answer(read_summary(RESULTS / "conv-fashion-mnist"), "cnn"))
    assert "train it on hard labels" in text
    assert "Significantly worse than hard labels: from the teacher (+2.79 pp)" in text


def test_too_few_pairs_is_not_yet_an_answer():
    summary = read_summary(RESULTS / "paper-mnist")
    few = dataclasses.replace(
        summary, comparisons=[dataclasses.replace(c, n=2) for c in summary.comparisons]
    )
    text = answer.markdown(answer.answer(few, "MLP 100"))
    assert "not yet: 2 paired repeats" in text and "distil" not in text


@pytest.mark.parametrize(("d_z", "n"), [(0.5, 34), (0.8, 15), (1.0, 10), (0.3, 90)])
def test_repeats_to_resolve_is_the_paired_t_tests_power(d_z, n):
    """80% power at alpha 0.05, two-sided: G*Power's sample sizes for a paired t-test (0.5 ->
    34, 0.8 -> 15), and a simulation of the test itself at n - 1 and n."""
    import numpy as np
    from scipy import stats

    from kdbench.analysis.answer import repeats_to_resolve

    assert repeats_to_resolve(d_z, 0.05) == n
    assert repeats_to_resolve(-d_z, 0.05) == n  # a gain or a loss alike
    rng = np.random.default_rng(1)
    for size, side in ((n - 1, -1), (n, 1)):
        x = rng.normal(d_z, 1.0, (40000, size))
        t = x.mean(1) / (x.std(1, ddof=1) / np.sqrt(size))
        power = float((np.abs(t) > stats.t.ppf(0.975, size - 1)).mean())
        assert (power - 0.8) * side > -0.01  # below 80% at n - 1, at least 80% at n
    assert repeats_to_resolve(None, 0.05) is None and repeats_to_resolve(0.01, 0.05) is None
