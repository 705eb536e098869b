"""Settings bounded against memory before anything is written: a study whose largest stack
cannot fit is one line, not an allocation error after its folder is made.

The rule, stated in docs/guide.md: a stack of M members of P parameters holds its weights, their
gradients, the optimizer's state (Adam two tensors, SGD one with momentum), the final weights
and, with --restore-best, the best: `copies(cfg)` float32 copies of M x P numbers. The study's
need is its largest stack's, plus the teachers and ensembles it keeps while students train (one
copy each). It is refused when the need is more than the memory available on the device (the
CPU's MemAvailable, a GPU's free memory). Activations are not counted: they scale with the
batch, and a net whose weights fit but whose activations do not fails in torch's allocator."""

from __future__ import annotations

from pathlib import Path

import torch

from kdbench.config import Config
from kdbench.errors import ConfigError
from kdbench.progress import StackPlan
from kdbench.roles import StackName

FLOAT = 4  # bytes: every stack trains float32


def held(cfg: Config) -> list[str]:
    """The float32 copies of its weights a training stack holds (see the module docstring)."""
    t = cfg.train
    states = {"adam": ["Adam's two states", ""], "sgd": ["momentum"] if t.momentum else []}
    kept = ["weights", "gradients", *filter(None, states[t.optimizer]), "final weights"]
    return kept + ["best weights"] * bool(t.restore_best)


def copies(cfg: Config) -> int:
    """How many: Adam's two states count two."""
    return len(held(cfg)) + (cfg.train.optimizer == "adam")


def need(cfg: Config, plans: list[StackPlan]) -> tuple[int, StackPlan]:
    """Bytes the study holds at its peak, and the stack that sets it."""
    teachers = next((s for s in plans if s.name == StackName.TEACHERS), None)
    ensemble = next((s for s in plans if s.name == StackName.SMALL_NETWORKS), None)
    kept = sum(s.members * s.params for s in (teachers, ensemble) if s is not None) * FLOAT
    largest = max(plans, key=lambda s: s.members * s.params)
    peak = 0
    for s in plans:  # students train beside the teachers and ensembles they distil from
        upstream = s.name not in (StackName.TEACHERS, StackName.SMALL_NETWORKS)
        peak = max(peak, s.members * s.params * FLOAT * copies(cfg) + kept * upstream)
    return peak, largest


def available(device: str) -> int | None:
    """Bytes free for this study on `device`; None where the platform does not say."""
    if device == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check(cfg: Config, plans: list[StackPlan]) -> None:
    """Refuses a study whose peak (`need`) is more than the memory `available`."""
    have = available(cfg.device)
    peak, largest = need(cfg, plans)
    if have is None or peak <= have:
        return
    where = "GPU" if cfg.device == "cuda" else "machine"
    raise ConfigError(
        f"this study needs about {_gb(peak)} of memory and the {where} has {_gb(have)} free:"
        f" its {largest.name} stack holds {largest.members} models of {largest.params:,}"
        f" parameters, {copies(cfg)} float32 copies each ({', '.join(held(cfg))}); use smaller"
        " architectures or hidden sizes, or fewer --repeats or --members"
    )


def _gb(n: int) -> str:
    return f"{n / 2**30:,.1f} GB" if n >= 2**30 else f"{n / 2**20:,.0f} MB"
