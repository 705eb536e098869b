"""Inference latency per image, measured: PyTorch eager and ONNX Runtime, batch 1 and 256.

Timed with `torch.utils.benchmark.Timer.blocked_autorange` (warm-up, blocks sized to the
timer's resolution, median and quartiles of the blocks), on a stated number of threads (default
1: what one core of a phone or a single-board computer gives you).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from kdbench.config import Config
from kdbench.engine.stack_model import StackModel
from kdbench.roles import ROWS, STACK_OF_ROLE, Role
from kdbench.runs import export
from kdbench.runs.checks import stack_model
from kdbench.runs.resources import counts, time_per_image
from kdbench.runs.store import load_members

BATCHES = (1, 256)


def torch_forward(
    members: export.Members, family: StackModel
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's eager forward (eval mode): logits (an ensemble's: log mean probability)."""
    module = export.as_module(members, family)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return run


def measure(members: export.Members, x: torch.Tensor, family: StackModel, threads: int = 1) -> dict:
    """Latency per image of one model (or ensemble) in PyTorch and ONNX Runtime, on inputs
    `x` (the dataset's rows, shaped here as the members take them)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fwd = torch_forward(members, family)
        with tempfile.TemporaryDirectory() as tmp:
            path = export.write_onnx(members, Path(tmp) / "model.onnx", family)
            sess = export.session(path, threads)
            out = {"threads": threads}
            for batch in BATCHES:
                xt = x[:batch].reshape(-1, *family.input_shape).contiguous()
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

    config = Config.from_dict(cfg)
    out = {}
    for row in ROWS:
        if row == Role.TEACHER and cfg["model"].get("own_teacher") is not None:
            continue
        members = load_members(run_dir, row, repeat)
        family = stack_model(config, STACK_OF_ROLE[row])
        size = counts(family.size(), len(members))
        out[row] = {**size, "latency": measure(members, x, family, threads)}
    return {"repeat": repeat, "threads": threads, "rows": out}
