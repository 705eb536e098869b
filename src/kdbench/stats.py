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
