"""What each model costs on a device: parameters, multiply-accumulates, bytes of weights.

Counted from the model (`StackModel.size`; an ensemble counts all its members), so they are
exact and cheap.
Latency has to be measured: `time_per_image` is the one timer (a model's rows in `latency`, an
exported file's in `export`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from kdbench.engine.stack_model import Size


def counts(size: Size, members: int = 1) -> dict[str, int]:
    """params, MACs per image, float32 bytes, int8 bytes of a model of `members` members of one
    `size` (`StackModel.size()`): int8 as dynamic quantisation stores it (weight matrices and
    filters int8 with one float32 scale and one zero point each; biases and normalisation
    scales float32)."""
    return {
        "params": members * size.params,
        "macs": members * size.macs,
        "bytes_float32": members * 4 * size.params,
        "bytes_int8": members * (size.weights + 4 * size.other + 5 * size.layers),
    }


def time_per_image(fn: Callable[[], object], batch: int, min_run_time: float = 0.3) -> dict:
    """Median and quartiles of microseconds per image over the timer's blocks."""
    from torch.utils import benchmark  # 0.2 s (it imports setuptools): only when timing

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    per_image = [t / batch for t in m.times]
    q = statistics.quantiles(per_image, n=4) if len(per_image) > 1 else per_image * 3
    median = statistics.median(per_image)
    return {"median_us": 1e6 * median, "q1_us": 1e6 * min(q[0], median),
            "q3_us": 1e6 * max(q[-1], median)}  # fmt: skip
