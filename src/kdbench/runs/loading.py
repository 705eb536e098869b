"""Get a trained model back from a run folder as an ordinary `nn.Module`.

    student = kdbench.load("runs/x", "student_from_ensemble", repeat=0)
    probs = student(x).softmax(-1)  # x [N, features], prepared as `student.preprocessing` says

Weights come from the run's safetensors checkpoints (no pickle) and are checked against the
run's configuration (layer sizes, classes) before they are used.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kdbench.config import Config
from kdbench.data.datasets import CLASSES, FEATURES, preprocessing
from kdbench.engine.architectures import NAMES, give
from kdbench.engine.mlp import layer_sizes, member_module
from kdbench.engine.modules import Ensemble, Factory
from kdbench.errors import ConfigError, RunFolderError
from kdbench.roles import STACK_OF_ROLE, Role, StackName
from kdbench.runs import guard
from kdbench.runs.checks import other_family
from kdbench.runs.store import load_members, read_config


def _check(params: list[torch.Tensor], cfg: Config, role: str, where: str) -> None:
    """The checkpoint's layer sizes against what the run's configuration implies."""
    got = [params[0].shape[0], *(w.shape[1] for w in params[0::2])]
    hidden = cfg.model.teacher_hidden if role == Role.TEACHER else cfg.model.student_hidden
    n_in = FEATURES.get(cfg.data.dataset, got[0])  # your arrays: any width
    n_out = CLASSES.get(cfg.data.dataset, got[-1])
    want = layer_sizes(n_in, hidden, n_out)
    if got != want:
        raise RunFolderError(
            f"{where} holds a network of sizes {got}, but the run's configuration implies"
            f" {want}: the checkpoint does not belong to this run"
        )


def _give(cfg: Config, role: str, module: Factory) -> None:
    """`module` as the factory of the run's architecture for `role`."""
    teacher = STACK_OF_ROLE[Role(role)] == StackName.TEACHERS
    arch = cfg.model.teacher_arch if teacher else cfg.model.student_arch
    if arch is None or arch.partition(":")[0] in NAMES:
        raise ConfigError(
            f"this run's {role} is the built-in {arch or 'fully connected net'}, rebuilt from its"
            " name; leave out module="
        )
    give(arch, module)


def load(
    run_dir: str | Path,
    role: str,
    repeat: int = 0,
    member: int | None = None,
    module: Factory | None = None,
) -> nn.Module:
    """The model of `role` (a row of Table 1) from repeat `repeat`, in eval mode. For the
    ensemble, `member` picks one member; without it you get the whole `Ensemble`. `module`:
    the factory your own architecture was trained with, where the run names it
    `python:<name>` (one another process cannot import); built-ins rebuild from their name."""
    run_dir = Path(run_dir)
    guard.unclaimed(run_dir)  # a run being written has no final models yet
    cfg = read_config(run_dir)
    if role not in {r.value for r in Role}:
        raise ConfigError(f"unknown role '{role}'; choose one of {', '.join(Role)}")
    if module is not None:
        _give(cfg, role, module)
    members = load_members(run_dir, role, repeat)
    family = other_family(cfg, STACK_OF_ROLE[Role(role)])  # None: fully connected
    if family is None:
        for params in members:
            _check(params, cfg, role, f"{run_dir} ({role}, repeat {repeat})")
    rebuild = member_module if family is None else family.member
    modules = [rebuild([p.unsqueeze(0) for p in params], 0) for params in members]
    if member is not None:
        if not 0 <= member < len(modules):
            raise ConfigError(f"{role} repeat {repeat} has members 0..{len(modules) - 1}")
        model = modules[member]
    else:
        model = modules[0] if len(modules) == 1 else Ensemble(modules)
    model.preprocessing = preprocessing(cfg.data.dataset)  # type: ignore[attr-defined]
    model.role, model.repeat = role, repeat  # type: ignore[attr-defined]
    return model.eval()
