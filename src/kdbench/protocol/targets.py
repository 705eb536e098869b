"""From upstream models to the distilled stack's targets.

`Upstream` is what stacks 1 and 2 hand over (each repeat's teacher, or your own teacher's
logits, and the ensemble members); `Plan` says which member of a distilled stack distils from
which teacher at which temperature and alpha; `cached_teachers`, `viewed_teachers` and
`trained_teachers` build the `teachers.Teachers` that serve its targets (frozen and cached; frozen
and run on each step's augmented images; or trained along).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from kdbench.config import Config, augments_of
from kdbench.data.datasets import Splits
from kdbench.engine.architectures import RoleModels
from kdbench.engine.losses import DistillationLoss, error_rate, loss_class
from kdbench.engine.objectives import Distillation
from kdbench.engine.stack_model import Params, select
from kdbench.engine.teachers import (
    CachedTeachers,
    CopyStack,
    FrozenCopies,
    ModuleCopies,
    Teachers,
    TrainedTeachers,
    copies_of,
)
from kdbench.protocol.own_teacher import OwnTeacher, TeacherLogits


@dataclass
class Upstream:
    """What distillation needs from the teachers and ensembles. Their logits on the training set
    cost as much as an epoch; they are computed only when a stack is actually distilled."""

    models: RoleModels  # the architectures of the teachers and of the ensemble members
    teachers: Params | None  # one teacher per repeat; None with your own teacher
    members: Params  # ensemble members, repeat-major: [R * K, ...]
    repeats: int
    own: OwnTeacher | None = None
    own_logits: TeacherLogits | None = None  # your teacher's logits on the run's data
    hard: Params | None = None  # the hard-label students, one per repeat (the self control)
    ids: tuple[int, ...] | None = None  # the repeat of each row (None: 0..repeats-1)

    @property
    def repeat_ids(self) -> list[int]:
        return list(self.ids) if self.ids is not None else list(range(self.repeats))

    @property
    def per_ensemble(self) -> int:
        return self.members[0].shape[0] // self.repeats

    def only(self, repeats: list[int]) -> Upstream:
        """The same upstream for some of its repeats (a grown run's missing ones), in that
        order: what a run of those repeats alone would hand over (itself, for all of them)."""
        if list(repeats) == self.repeat_ids:
            return self
        at = [self.repeat_ids.index(r) for r in repeats]
        k = self.per_ensemble
        device = self.members[0].device
        rows = torch.tensor(at, device=device)
        member_rows = torch.tensor([p * k + j for p in at for j in range(k)], device=device)
        return dataclasses.replace(
            self,
            teachers=None if self.teachers is None else select(self.teachers, rows),
            members=select(self.members, member_rows),
            repeats=len(at),
            hard=None if self.hard is None else select(self.hard, rows),
            ids=tuple(repeats),
        )

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Ensemble member logits on `x`: [R, K, N, C]."""
        ens = self.models.student.logits(self.members, x)
        return ens.view(self.repeats, -1, *ens.shape[1:])

    def teacher_logits(self, splits: Splits, part: str) -> torch.Tensor:
        """Teacher logits [R, N, C] on the `part` ("train", "val", "test") of `splits`."""
        if self.own_logits is not None:
            z = getattr(self.own_logits, part)
            return z.unsqueeze(0).expand(self.repeats, *z.shape)
        return self.models.teacher.logits(self.teachers, getattr(splits, f"x_{part}"))

    def logits(self, splits: Splits, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(teacher logits [R, N, C], ensemble member logits [R, K, N, C]) on `part`."""
        x = getattr(splits, f"x_{part}")
        return self.teacher_logits(splits, part), self.member_logits(x)


def one_or_each(values: list[float]) -> float | torch.Tensor:
    """One scalar when every member agrees (the ordinary study), else one value per member."""
    return values[0] if len(set(values)) == 1 else torch.tensor(values)


@dataclass
class Plan:
    """The distilled stack of several configurations: per member its repeat, its source
    (teacher or ensemble) and its configuration's temperature and alpha."""

    repeats: list[int]
    from_teacher: list[bool]
    temps: list[float]
    alphas: list[float]

    @classmethod
    def of(cls, cfgs: list[Config], n: int) -> Plan:
        """`n`: the repeats the stack distils (rows of the upstream it distils from)."""
        plan = cls([], [], [], [])
        for cfg in cfgs:
            plan.repeats += list(range(n)) * 2
            plan.from_teacher += [True] * n + [False] * n
            plan.temps += [cfg.distill.temperature] * 2 * n
            plan.alphas += [cfg.distill.alpha] * 2 * n
        return plan


def cached_teachers(cfgs, splits, up, loss: DistillationLoss) -> CachedTeachers:
    """Frozen teachers: [2R] target rows per distinct (temperature, ensemble targets); rows
    0..R-1 from each repeat's teacher, R..2R-1 from its ensemble."""
    n_rows = 2 * up.repeats
    train_logits, val_logits = up.logits(splits, "train"), up.logits(splits, "val")

    def rows(logits, temperature):
        teacher, ensemble = logits
        from_teacher = loss.targets(teacher.unsqueeze(0), temperature)
        from_ensemble = torch.stack([loss.targets(e, temperature) for e in ensemble])
        return torch.cat([from_teacher, from_ensemble])

    row_of: dict[tuple, int] = {}  # configurations with the same temperature share targets
    train_rows, val_rows, group = [], [], []
    for cfg in cfgs:
        k = cfg.distill
        key = (k.temperature, k.ensemble_targets)
        if key not in row_of:
            row_of[key] = n_rows * len(row_of)
            train_rows.append(rows(train_logits, k.temperature))
            val_rows.append(rows(val_logits, k.temperature))
        group += range(row_of[key], row_of[key] + n_rows)
    return CachedTeachers(torch.cat(train_rows), torch.cat(val_rows), torch.tensor(group))


def trained_teachers(cfg, up: Upstream, plan: Plan, loss: DistillationLoss):
    """Teachers trained along: each student's own copies of its teacher or ensemble members."""
    adam = (cfg.train.learning_rate, cfg.train.adam_eps)

    def copies(model, params, owners, per_owner) -> CopyStack:
        return copies_of(model, params, owners, per_owner, *adam)

    own = None
    if up.own is not None:  # config.validate allows joint with a module teacher only
        owners_t = [m for m, t in enumerate(plan.from_teacher) if t]
        own = ModuleCopies(up.own.module, owners_t, *adam, up.members[0].device)
    return _per_student(up, plan, loss, copies, own)


def viewed(cfg: Config, up: Upstream) -> bool:
    """Whether frozen teachers run on each step's images: the recipe augments them, and the
    teachers are kdbench's models (your own teacher's logits are of the clean images)."""
    return bool(augments_of(cfg.train)) and up.own is None


def viewed_teachers(up: Upstream, plan: Plan, loss: DistillationLoss) -> TrainedTeachers:
    """Frozen teachers run on each step's augmented images, as their students see them."""
    return _per_student(up, plan, loss, FrozenCopies, None)


def _per_student(up, plan: Plan, loss, copies, own: CopyStack | None) -> TrainedTeachers:
    """Each student's own rows of its teacher or of its ensemble's members, made by `copies`
    (model, params, owners, rows per owner); `own`: your teacher's copies instead."""
    k = up.per_ensemble
    owners_t = [m for m, t in enumerate(plan.from_teacher) if t]
    owners_e = [m for m, t in enumerate(plan.from_teacher) if not t]
    device = up.members[0].device
    if own is not None:
        teacher_copies = own
    else:
        teacher_rows = torch.tensor([plan.repeats[m] for m in owners_t], device=device)
        teacher_copies = copies(up.models.teacher, select(up.teachers, teacher_rows), owners_t, 1)
    member_rows = torch.tensor(
        [plan.repeats[m] * k + j for m in owners_e for j in range(k)], device=device
    )
    return TrainedTeachers(
        copies=[
            teacher_copies,
            copies(up.models.student, select(up.members, member_rows), owners_e, k),
        ],
        targets=loss.targets,
        temperature=one_or_each(plan.temps),
    )


def copies_test_error(teachers: TrainedTeachers, splits: Splits, n: int) -> list[list[float]]:
    """Per member of the distilled stack, the test error of each of its teacher copies."""
    out: list[list[float]] = [[] for _ in range(n)]
    for c in teachers.copies:
        logits = c.final_logits(splits.x_test)
        errors = error_rate(logits, splits.y_test.expand(len(logits), -1)).cpu().tolist()
        for owner, err in zip(c.slot_owner.tolist(), errors, strict=True):
            out[owner].append(err)
    return out


def from_one_each(cfg: Config, splits: Splits, up: Upstream, model, params: Params) -> Distillation:
    """Each repeat's student distils, at the run's loss, T and alpha, from row r of `params`
    (one frozen `model` per repeat: the hard-label student for the self-distillation control,
    the teacher for its assistant): cached targets, or with --augment the frozen model run on
    each step's augmented images (`viewed`)."""
    loss = loss_class(cfg.distill.loss).from_config(cfg)
    t = cfg.distill.temperature

    def rows(x: torch.Tensor) -> torch.Tensor:
        return loss.targets(model.logits(params, x).unsqueeze(0), t)  # [R, N, C]

    teachers: Teachers
    if viewed(cfg, up):
        copies = FrozenCopies(model, params, list(range(up.repeats)), 1)
        teachers = TrainedTeachers([copies], loss.targets, t)
    else:
        teachers = CachedTeachers(rows(splits.x_train), rows(splits.x_val),
                                  torch.arange(up.repeats))  # fmt: skip
    return Distillation(loss, teachers, temperature=t, alpha=cfg.distill.alpha,
                        monitor=cfg.distill.kd_monitor, members=up.repeats)  # fmt: skip
