"""Aggregates of per-repeat error rates: mean, spread, 95% intervals (SciPy, nothing by hand).

An error rate lies in [0, 1], and at 2 repeats a plain t-interval is so wide that it crosses 0.
Intervals for a row's error are therefore t-intervals on the logit scale, back-transformed: they
stay inside (0, 1), are close to the plain t-interval when the spread is small, and widen toward
the far side of 0 or 1 instead of crossing it. Paired differences, which may be negative, keep
their plain t-intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from kdbench.roles import CONTROL_ROLES
from kdbench.summary import Comparison


def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


INTERVAL_METHOD = "t-interval on the logit scale, back-transformed (stays within 0–100%)"
FEW_REPEATS = 5  # below this many repeats, intervals and tests are flagged as not conclusive
FEW_REPEATS_NOTE = f"n < {FEW_REPEATS}: intervals and tests are not conclusive."
EDGE = 1e-4  # error rates are clipped to [EDGE, 1 - EDGE] before the logit (0 and 1 have none)


def error_interval(errors: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """95% interval of the mean error rate of `errors` (>= 2 values): a t-interval of the
    logits, back-transformed, so it stays inside (0, 1)."""
    x = np.clip(np.asarray(errors, dtype=float), EDGE, 1 - EDGE)
    z = np.log(x / (1 - x))
    sd = float(z.std(ddof=1))
    if sd == 0:
        return float(np.mean(errors)), float(np.mean(errors))
    lo, hi = stats.t.interval(confidence, df=len(z) - 1, loc=z.mean(), scale=sd / math.sqrt(len(z)))
    return float(1 / (1 + math.exp(-lo))), float(1 / (1 + math.exp(-hi)))


def pct(x: float) -> float:
    """A fraction as percent, rounded to what an error rate over 10,000 images means (float32
    noise such as 2.4100000858 off): every percent kdbench writes goes through here."""
    return round(100 * float(x), 4)


def summarize(errors: Sequence[float], confidence: float = 0.95) -> dict:
    """Of error rates given as fractions: mean, sample std and interval (`error_interval`), in
    percent; std and CI are None below two values."""
    x = np.asarray(errors, dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean_pct": None, "std_pct": None, "ci95_pct": None}
    mean = pct(x.mean())
    if n < 2:
        return {"n": 1, "mean_pct": mean, "std_pct": None, "ci95_pct": None}
    ci = [_clean(v) for v in error_interval(x, confidence)]
    return {"n": n, "mean_pct": mean, "std_pct": pct(x.std(ddof=1)),
            "ci95_pct": [None if v is None else pct(v) for v in ci]}  # fmt: skip


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


def _pp(x: float) -> float:
    return round(float(x), 4)  # percentage points, without float32 noise


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """Paired difference a − b in percentage points: mean, t-CI, t-test, Wilcoxon, Cohen's d_z."""
    x = 100 * np.asarray(a, dtype=float)
    y = 100 * np.asarray(b, dtype=float)
    d = x - y
    n = len(d)
    out: dict = {"n": n, "mean_diff_pp": _pp(d.mean()) if n else None}
    if n < 2:
        return {**out, "ci95_pp": None, "p_ttest": None, "p_wilcoxon": None, "d_z": None}
    sd = float(d.std(ddof=1))
    if sd == 0:
        same = float(d.mean()) == 0
        p = 1.0 if same else 0.0
        return {**out, "ci95_pp": [_pp(d.mean())] * 2, "p_ttest": p, "p_wilcoxon": p, "d_z": None}
    t = stats.ttest_rel(x, y)
    ci = t.confidence_interval(confidence)
    p_w = float(stats.wilcoxon(x, y, zero_method="wilcox").pvalue)
    return {
        **out,
        "ci95_pp": [_pp(ci.low), _pp(ci.high)],
        "p_ttest": float(t.pvalue),
        "p_wilcoxon": p_w,
        "d_z": float(d.mean() / sd),
    }


def adjusted_interval(
    ci: Sequence[float] | None,
    n: int,
    p: float | None,
    p_adjusted: float | None,
    alpha: float = SIGNIFICANCE,
) -> list[float] | None:
    """The paired t-interval widened to agree with a multiplicity-adjusted decision: at
    confidence 1 − alpha / k, where k = p_adjusted / p is what the adjustment multiplied this
    test's p by (Holm's factor for this comparison). It excludes 0 exactly when p_adjusted <
    alpha, so a verdict never prints an interval that disagrees with its call. Rebuilt from
    the 95% interval (its centre and standard error), so it needs no raw data."""
    if ci is None or n < 2 or p is None or p_adjusted is None or p <= 0 or ci[0] == ci[1]:
        return None if ci is None else list(ci)
    k = max(1.0, p_adjusted / p)
    centre, half = (ci[0] + ci[1]) / 2, (ci[1] - ci[0]) / 2
    se = half / stats.t.ppf(0.975, n - 1)
    wide = se * stats.t.ppf(1 - alpha / (2 * k), n - 1)
    return [_pp(centre - wide), _pp(centre + wide)]


def control_comparisons(control: str) -> tuple[tuple[str, str], ...]:
    """A control against the hard-label student, and each distilled student against it: does
    the teacher give more than the control's regularisation does?"""
    return ((control, "student_hard"), ("student_from_teacher", control),
            ("student_from_ensemble", control))  # fmt: skip


def compare_rows(rows: dict[str, list[tuple[int, float]]]) -> list[Comparison]:
    """Every comparison in COMPARISONS, and those of each control the rows hold, on runs
    paired by repeat, Holm-adjusted as one family."""
    out = []
    pairs = list(COMPARISONS)
    for row in rows:
        if row in CONTROL_ROLES.values():
            pairs += control_comparisons(str(row))
    for a, b in pairs:
        ea, eb = dict(rows.get(a, [])), dict(rows.get(b, []))
        common = sorted(set(ea) & set(eb))
        test = paired([ea[r] for r in common], [eb[r] for r in common])
        out.append(Comparison(a=a, b=b, repeats=common, **test))
    adjusted = iter(holm([c.p_ttest for c in out if c.p_ttest is not None]))
    for c in out:
        c.p_holm = next(adjusted) if c.p_ttest is not None else None
        c.ci95_holm_pp = adjusted_interval(c.ci95_pp, c.n, c.p_ttest, c.p_holm)
    return out
