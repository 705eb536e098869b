"""What each model costs on a device: parameters, multiply-accumulates, bytes of weights.

Counted from the layer sizes (an ensemble counts all its members), so they are exact and cheap;
latency, which has to be measured, lives in `latency`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise


def figures(sizes: Sequence[int], members: int = 1) -> dict[str, int]:
    """params, MACs per image, float32 bytes, int8 bytes (int8 weights, float32 biases, and one
    float32 scale and one zero point per weight matrix, as dynamic quantisation stores them)."""
    weights = sum(a * b for a, b in pairwise(sizes))
    biases = sum(sizes[1:])
    layers = len(sizes) - 1
    return {
        "params": members * (weights + biases),
        "macs": members * weights,
        "bytes_float32": members * 4 * (weights + biases),
        "bytes_int8": members * (weights + 4 * biases + 5 * layers),
    }
