"""What each model costs on a device: parameters, multiply-accumulates, bytes of weights.

Counted from the layer sizes (an ensemble counts all its members), so they are exact and cheap.
Latency has to be measured: `time_per_image` is the one timer (a model's rows in `latency`, an
exported file's in `export`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch
from torch.utils import benchmark

from kdbench.engine.mlp import MLP
from kdbench.engine.stack_model import StackModel


def counts(sizes: Sequence[int], members: int = 1) -> dict[str, int]:
    """params, MACs per image, float32 bytes, int8 bytes (int8 weights, float32 biases, and one
    float32 scale and one zero point per weight matrix, as dynamic quantisation stores them)."""
    model = MLP(sizes)
    params, weights = model.parameters_per_member(), model.macs_per_image()
    biases, layers = params - weights, len(sizes) - 1
    return _counts(members, params, weights, weights, biases, layers)


def family_counts(model: StackModel, members: Sequence[Sequence[torch.Tensor]]) -> dict[str, int]:
    """The same for any architecture, from one model's `members` (each its tensors): MACs as
    the family counts them (`torch.utils.flop_counter` for a module); int8 bytes as dynamic
    quantisation stores a conv net (conv and dense weights int8, a scale and a zero point each;
    biases float32)."""
    tensors = members[0]
    weights = sum(t.numel() for t in tensors if t.dim() >= 2)
    params = sum(t.numel() for t in tensors)
    layers = sum(1 for t in tensors if t.dim() >= 2)
    macs = model.macs_per_image()
    return _counts(len(members), params, macs, weights, params - weights, layers)


def _counts(members, params, macs, weights, biases, layers) -> dict[str, int]:
    return {
        "params": members * params,
        "macs": members * macs,
        "bytes_float32": members * 4 * params,
        "bytes_int8": members * (weights + 4 * biases + 5 * layers),
    }


def time_per_image(fn: Callable[[], object], batch: int, min_run_time: float = 0.3) -> dict:
    """Median and quartiles of microseconds per image over the timer's blocks."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    per_image = [t / batch for t in m.times]
    q = statistics.quantiles(per_image, n=4) if len(per_image) > 1 else per_image * 3
    median = statistics.median(per_image)
    return {"median_us": 1e6 * median, "q1_us": 1e6 * min(q[0], median),
            "q3_us": 1e6 * max(q[-1], median)}  # fmt: skip
