"""Aggregates of per-repeat error rates: mean, spread, 95% t-interval (SciPy, nothing by hand)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def summarize(errors: Sequence[float], confidence: float = 0.95) -> dict:
    """mean, sample std and t-interval; std and CI are None with fewer than two values."""
    x = np.asarray(errors, dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "ci95": None}
    std = float(x.std(ddof=1))
    if std == 0:
        ci = (mean, mean)
    else:
        ci = stats.t.interval(confidence, df=n - 1, loc=mean, scale=std / math.sqrt(n))
    return {"n": n, "mean": mean, "std": std, "ci95": [_clean(ci[0]), _clean(ci[1])]}


# Paired comparisons: (a, b) asks "how does a's error differ from b's?" (a − b > 0: a is worse).
COMPARISONS = (
    ("student_from_teacher", "student_hard"),
    ("student_from_ensemble", "student_hard"),
    ("student_from_ensemble", "student_from_teacher"),
    ("teacher", "student_hard"),
    ("ensemble", "student_hard"),
)
SIGNIFICANCE = 0.05


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjustment; controls the family-wise error rate."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def min_wilcoxon_p(n: int) -> float:
    """Smallest two-sided p an exact Wilcoxon signed-rank test can give with n pairs: 2 / 2^n."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """Paired difference a − b in percentage points: mean, t-CI, t-test, Wilcoxon, Cohen's d_z."""
    x = 100 * np.asarray(a, dtype=float)
    y = 100 * np.asarray(b, dtype=float)
    d = x - y
    n = len(d)
    out: dict = {"n": n, "mean_diff": float(d.mean()) if n else None, "unit": "percentage points"}
    if n < 2:
        return {**out, "ci95": None, "p_ttest": None, "p_wilcoxon": None, "d_z": None}
    sd = float(d.std(ddof=1))
    if sd == 0:
        same = float(d.mean()) == 0
        p = 1.0 if same else 0.0
        return {**out, "ci95": [float(d.mean())] * 2, "p_ttest": p, "p_wilcoxon": p, "d_z": None}
    t = stats.ttest_rel(x, y)
    ci = t.confidence_interval(confidence)
    p_w = float(stats.wilcoxon(x, y, zero_method="wilcox").pvalue)
    return {
        **out,
        "ci95": [float(ci.low), float(ci.high)],
        "p_ttest": float(t.pvalue),
        "p_wilcoxon": p_w,
        "d_z": float(d.mean() / sd),
    }


def compare_rows(rows: dict[str, list[tuple[int, float]]]) -> list[dict]:
    """Every comparison in COMPARISONS on runs paired by repeat, Holm-adjusted as one family."""
    out = []
    for a, b in COMPARISONS:
        ea, eb = dict(rows.get(a, [])), dict(rows.get(b, []))
        common = sorted(set(ea) & set(eb))
        out.append(
            {
                "a": a,
                "b": b,
                "repeats": common,
                **paired([ea[r] for r in common], [eb[r] for r in common]),
            }
        )
    ps = [c["p_ttest"] for c in out if c["p_ttest"] is not None]
    adjusted = iter(holm(ps))
    for c in out:
        c["p_holm"] = next(adjusted) if c["p_ttest"] is not None else None
    return out
