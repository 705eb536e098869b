"""What each model of a stack cost to train: its counted work, and its share of the stack's
measured time and energy.

A stack trains many models at once, so its wall time belongs to all of them; each member gets
the share its counted work is of the stack's (`engine.work`): a member that stopped early, or a
student distilled from ten ensemble members rather than one teacher, costs what it ran. The
shares sum to the stack's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kdbench.data.datasets import Splits
from kdbench.engine.meter import Measured
from kdbench.engine.stack_model import StackModel
from kdbench.engine.work import PassCost, pass_cost


@dataclass(frozen=True)
class MemberCost:
    """One model's training cost (fields as `records.Record` names them)."""

    train_macs: int
    target_macs: int | None  # None: not counted (your own teacher's passes)
    seconds: float
    peak_memory_bytes: int | None
    memory_kind: str | None
    energy_joules: float | None


def sizes(splits: Splits) -> tuple[int, int, int]:
    """(features, training inputs, validation inputs) the counts multiply."""
    return splits.n_features, len(splits.x_train), len(splits.x_val)


def training_macs(model: StackModel, splits: Splits, epochs: Sequence[int]) -> list[int]:
    """Each member's own training: its epochs of training steps and validation passes."""
    features, n_train, n_val = sizes(splits)
    cost = pass_cost(model, features)
    return [cost.training(e, n_train, n_val) for e in epochs]


def frozen_target_macs(teacher: PassCost, splits: Splits, teachers: int) -> int:
    """Frozen teachers' soft targets for one student: `teachers` forward passes over the
    training and validation inputs (made once and cached, not per step)."""
    _, n_train, n_val = sizes(splits)
    return teachers * (n_train + n_val) * teacher.forward


def viewed_target_macs(teacher: PassCost, splits: Splits, teachers: int, epochs: int) -> int:
    """Frozen teachers run on each step's augmented images for one student's `epochs`: a
    forward pass over the training inputs per epoch, and over the validation inputs."""
    _, n_train, n_val = sizes(splits)
    return teachers * epochs * (n_train + n_val) * teacher.forward


def one_teacher_target_macs(
    teacher: StackModel, splits: Splits, viewed: bool, epochs: Sequence[int]
) -> list[int]:
    """Per member, the MACs of its one frozen teacher's passes: once over the training set
    (cached targets), or every epoch on its augmented images (`viewed`)."""
    cost = pass_cost(teacher, splits.n_features)
    if viewed:
        return [viewed_target_macs(cost, splits, 1, e) for e in epochs]
    return [frozen_target_macs(cost, splits, 1)] * len(epochs)


def joint_target_macs(teacher: PassCost, splits: Splits, teachers: int, epochs: int) -> int:
    """Teachers trained along with one student for its `epochs`: each copy's training."""
    _, n_train, n_val = sizes(splits)
    return teachers * teacher.training(epochs, n_train, n_val)


def apportion(
    measured: Measured,
    seconds: float,
    train: Sequence[int],
    target: Sequence[int | None],
) -> list[MemberCost]:
    """The stack's `seconds` (and measured energy) shared by the members' counted work."""
    work = [t + (g or 0) for t, g in zip(train, target, strict=True)]
    total = sum(work) or 1
    joules = measured.energy_joules
    return [
        MemberCost(
            train_macs=t,
            target_macs=g,
            seconds=seconds * w / total,
            peak_memory_bytes=measured.peak_memory_bytes,
            memory_kind=measured.memory_kind,
            energy_joules=None if joules is None else joules * w / total,
        )
        for t, g, w in zip(train, target, work, strict=True)
    ]
