"""Inference latency per image, measured: PyTorch eager and ONNX Runtime, batch 1 and 256.

Timed with `torch.utils.benchmark.Timer.blocked_autorange` (warm-up, blocks sized to the
timer's resolution, median and quartiles of the blocks), on a stated number of threads (default
1: what one core of a phone or a single-board computer gives you).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils import benchmark

from kdbench.engine.mlp import layer_sizes, stack_forward
from kdbench.roles import ROWS, Role
from kdbench.runs import export
from kdbench.runs.resources import figures

BATCHES = (1, 256)


def time_per_image(fn: Callable[[], object], batch: int, min_run_time: float = 0.3) -> dict:
    """Median and quartiles of microseconds per image over the timer's blocks."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    per_image = [t / batch for t in m.times]
    q = statistics.quantiles(per_image, n=4) if len(per_image) > 1 else per_image * 3
    median = statistics.median(per_image)
    return {"median_us": 1e6 * median, "q1_us": 1e6 * min(q[0], median),
            "q3_us": 1e6 * max(q[-1], median)}  # fmt: skip


def torch_forward(members: list[list[torch.Tensor]]) -> Callable[[torch.Tensor], torch.Tensor]:
    stacked = [torch.stack(ts) for ts in zip(*members, strict=True)]

    def fwd(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            logits = stack_forward(stacked, x)
            if len(members) == 1:
                return logits[0]
            return torch.softmax(logits, -1).mean(0)

    return fwd


def measure(members: list[list[torch.Tensor]], x: torch.Tensor, threads: int = 1) -> dict:
    """Latency per image of one model (or ensemble) in PyTorch and ONNX Runtime."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fwd = torch_forward(members)
        with tempfile.TemporaryDirectory() as tmp:
            path = export.write_onnx(members, Path(tmp) / "model.onnx")
            sess = export.session(path, threads)
            out = {"threads": threads}
            for batch in BATCHES:
                xt = x[:batch].contiguous()
                xn = xt.numpy()
                out[f"torch_b{batch}"] = time_per_image(lambda xt=xt: fwd(xt), batch)
                out[f"onnx_b{batch}"] = time_per_image(lambda xn=xn: export.run(sess, xn), batch)
        return out
    finally:
        torch.set_num_threads(previous)


def measure_rows(run_dir: Path, cfg: dict, x: torch.Tensor, repeat: int = 0, threads: int = 1):
    """Resources of every table row, from the run's checkpoints (repeat `repeat`): size and
    MACs counted, latency measured. The ensemble counts (and runs) all its members. Your own
    teacher is not measured: kdbench has only its logits."""

    n_in, n_out = x.shape[1], None
    out = {}
    for row in ROWS:
        if row == Role.TEACHER and cfg["model"].get("own_teacher") is not None:
            continue
        members = export.load_members(run_dir, row, repeat)
        n_out = members[0][-1].shape[-1]
        hidden = cfg["model"]["teacher_hidden" if row == "teacher" else "student_hidden"]
        sizes = layer_sizes(n_in, hidden, n_out)
        out[row] = {**figures(sizes, len(members)), "latency": measure(members, x, threads)}
    return {"repeat": repeat, "threads": threads, "rows": out}
