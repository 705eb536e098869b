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
from kdbench.engine.losses import ensemble_probs
from kdbench.engine.mlp import layer_sizes, stack_forward
from kdbench.engine.stack_model import StackModel
from kdbench.roles import ROWS, STACK_OF_ROLE, Role
from kdbench.runs import export
from kdbench.runs.checks import other_family
from kdbench.runs.resources import counts, family_counts, time_per_image
from kdbench.runs.store import load_members

BATCHES = (1, 256)


def torch_forward(
    members: export.Members, family: StackModel | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's eager forward: logits, or an ensemble's mean probabilities."""
    if family is not None:
        module = export.as_module(members, family)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return module(x)

        return run
    stacked = [torch.stack(ts) for ts in zip(*members, strict=True)]

    def fwd(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            logits = stack_forward(stacked, x)
            if len(members) == 1:
                return logits[0]
            return ensemble_probs(logits)

    return fwd


def measure(
    members: export.Members, x: torch.Tensor, threads: int = 1, family: StackModel | None = None
) -> dict:
    """Latency per image of one model (or ensemble) in PyTorch and ONNX Runtime."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fwd = torch_forward(members, family)
        with tempfile.TemporaryDirectory() as tmp:
            path = export.write_onnx(members, Path(tmp) / "model.onnx", family=family)
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
    config = Config.from_dict(cfg)
    out = {}
    for row in ROWS:
        if row == Role.TEACHER and cfg["model"].get("own_teacher") is not None:
            continue
        members = load_members(run_dir, row, repeat)
        family = other_family(config, STACK_OF_ROLE[row])
        if family is not None:
            size = family_counts(family, members)
        else:
            n_out = members[0][-1].shape[-1]
            hidden = cfg["model"]["teacher_hidden" if row == "teacher" else "student_hidden"]
            size = counts(layer_sizes(n_in, hidden, n_out), len(members))
        out[row] = {**size, "latency": measure(members, x, threads, family)}
    return {"repeat": repeat, "threads": threads, "rows": out}
