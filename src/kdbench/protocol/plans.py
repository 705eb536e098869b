"""The stacks a study trains: each one's name, members, and one member's cost (MACs per image,
parameters). The progress bar's ETA and the memory rule read the same list."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kdbench.config import Config, controls_of
from kdbench.engine.architectures import RoleModels
from kdbench.progress import StackPlan
from kdbench.roles import StackName
from kdbench.runs.store import RunStore


def stacks(cfg: Config, models: RoleModels) -> list[StackPlan]:
    """Every stack of the study, as many members as a fresh run trains (your own teacher's
    stack has none: kdbench does not train it)."""
    p = cfg.protocol
    teacher = (models.teacher.macs_per_image(), models.teacher.parameters_per_member())
    student = (models.student.macs_per_image(), models.student.parameters_per_member())
    distilled = student
    if cfg.distill.teacher_updates == "joint":  # each student's copies train along with it
        macs = student[0] + (teacher[0] + p.members * student[0]) // 2  # on average: they stop
        distilled = (macs, student[1] + teacher[1] + p.members * student[1])
    chosen = controls_of(cfg.distill)
    smoothing = len([c for c in chosen if c.startswith("smoothing")])
    assistant = (0, 0)
    if cfg.distill.assistant_arch is not None:
        a = models.assistant
        assistant = (a.macs_per_image(), a.parameters_per_member())
    plans = [
        StackPlan(StackName.TEACHERS, 0 if cfg.model.own_teacher else p.repeats, *teacher),
        StackPlan(StackName.ASSISTANTS, p.repeats * (assistant != (0, 0)), *assistant),
        StackPlan(StackName.SMALL_NETWORKS, p.repeats * (p.members + 1), *student),
        StackPlan(StackName.DISTILLED, 2 * p.repeats, *distilled),
        StackPlan(StackName.CONTROLS, p.repeats * smoothing, *student),
        StackPlan(StackName.SELF_DISTILLED, p.repeats * ("self" in chosen), *student),
        StackPlan(StackName.REGULARISED, p.repeats * ("teacher-reg" in chosen), *student),
    ]
    return [s for s in plans if s.members or s.name == StackName.TEACHERS]


def left(plans: list[StackPlan], folder: Path) -> list[StackPlan]:
    """What is still to train in `folder`: a stack already there costs nothing, or only its
    added repeats' models (a grown run); the teachers' stack stays while its checkpoint is
    missing."""
    rest = [dataclasses.replace(s, members=s.members - RunStore.stack_size(folder, s.name))
            for s in plans]  # fmt: skip
    return [s for s in rest if s.members > 0 or (s.name == StackName.TEACHERS and not
            RunStore.checkpoint_path(folder, s.name).is_file())]  # fmt: skip


def reuse_text(every: list[StackPlan], todo: list[StackPlan]) -> str:
    """What a resumed run reuses from its folder and what it still trains, in words:
    "reusing teachers (10 of 10), small networks (110 of 110); training distilled students
    (14 models left)"."""
    left = {s.name: s.members for s in todo}
    reused = [f"{s.name} ({s.members - left.get(s.name, 0)} of {s.members})" for s in every
              if s.members and left.get(s.name, 0) < s.members]  # fmt: skip
    trains = [f"{s.name} ({s.members} model{'s' if s.members != 1 else ''} left)" for s in todo
              if s.members]  # fmt: skip
    return (
        ("reusing " + ", ".join(reused) if reused else "nothing to reuse")
        + "; "
        + ("training " + ", ".join(trains) if trains else "nothing left to train")
    )
