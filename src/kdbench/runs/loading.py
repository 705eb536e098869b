"""Get a trained model back from a run folder as an ordinary `nn.Module`.

    student = kdbench.load("runs/x", "student_from_ensemble", repeat=0)
    probs = student(x).softmax(-1)  # x shaped as `student.input_shape`, prepared as
                                    # `student.preprocessing` says

Weights and buffers come from the run's safetensors checkpoints (no pickle) and are checked
against the run's configuration (each tensor's shape, classes) before they are used. Reading
builds no native code and leaves the caller's random state as it was.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from kdbench.config import Config
from kdbench.data.datasets import preprocessing
from kdbench.engine.architectures import NAMES
from kdbench.engine.modules import Ensemble, Factory
from kdbench.engine.own_code import code_settings, give, trust
from kdbench.errors import ConfigError
from kdbench.roles import STACK_OF_ROLE, Role, StackName
from kdbench.runs import guard
from kdbench.runs.checks import stack_model
from kdbench.runs.store import load_members, read_config


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
    trust_code: bool = False,
) -> nn.Module:
    """The model of `role` (a row of Table 1) from repeat `repeat`, in eval mode. For the
    ensemble, `member` picks one member; without it you get the whole `Ensemble`. `module`:
    the factory your own architecture was trained with, where the run names it
    `python:<name>` (one another process cannot import); built-ins rebuild from their name.
    `trust_code`: import the architecture the run folder names as `package.module:Factory`
    (code: review it first); without it such a folder is refused, naming the module."""
    run_dir = Path(run_dir)
    guard.unclaimed(run_dir)  # a run being written has no final models yet
    cfg = read_config(run_dir)
    if role not in {r.value for r in Role}:
        raise ConfigError(f"unknown role '{role}'; choose one of {', '.join(Role)}")
    if module is not None:
        _give(cfg, role, module)
    if trust_code:
        trust(*code_settings(cfg))
    members = load_members(run_dir, role, repeat)  # each tensor checked against the model
    model_of = stack_model(cfg, STACK_OF_ROLE[Role(role)])
    modules = [model_of.member([p.unsqueeze(0) for p in params], 0) for params in members]
    if member is not None:
        if not 0 <= member < len(modules):
            raise ConfigError(f"{role} repeat {repeat} has members 0..{len(modules) - 1}")
        model = modules[member]
    else:
        model = modules[0] if len(modules) == 1 else Ensemble(modules)
    model.preprocessing = preprocessing(cfg.data.dataset)  # type: ignore[attr-defined]
    model.input_shape = model_of.input_shape  # type: ignore[attr-defined]
    model.role, model.repeat = role, repeat  # type: ignore[attr-defined]
    return model.eval()
