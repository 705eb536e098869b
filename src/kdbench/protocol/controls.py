"""The controls (`--controls`): students that tell a teacher's knowledge from plain
regularisation (Yuan et al., CVPR 2020: much of KD's gain is label smoothing).

- `smoothing`: the hard-label student trained on labels smoothed by a fixed epsilon;
- `smoothing-matched`: smoothed by the epsilon whose wrong-class mass equals what the ensemble's
  distillation targets put on wrong classes, alpha-mixed as the KD loss mixes them: as soft as
  KD's targets, with no knowledge of which classes are alike;
- `self`: distilled, with the run's T and alpha, from the repeat's own frozen hard-label student
  (a teacher with no more capacity than the student: born-again networks);
- `teacher-reg`: the hard-label student trained with the teacher's dropout and jitter, so a gain
  from the teacher is not just its augmentation reaching the student.

Each is a student of the same repeat with the students' seeds (same initialisation and
shuffling, so it pairs with them), trained after the distilled students: the smoothing controls
in one stack, the other two in a stack each (other objectives, other regularisation).
"""

from __future__ import annotations

import dataclasses

import torch

from kdbench.config import Config, controls_of
from kdbench.data.datasets import Splits
from kdbench.engine import trainer as engine
from kdbench.engine.losses import loss_class
from kdbench.engine.meter import Meter
from kdbench.engine.objectives import Distillation, SmoothedLabels
from kdbench.engine.work import pass_cost
from kdbench.protocol import costs
from kdbench.protocol.stacks import (
    HardLabelStack,
    StackCache,
    by_repeat,
    engine_train,
    make_stack,
    record_stack,
    trained_or_loaded,
)
from kdbench.protocol.targets import Upstream, from_one_each, viewed
from kdbench.records import Record
from kdbench.roles import CONTROL_ROLES, Role, StackName

MAX_EPSILON = 0.999  # a matched epsilon of 1 would be uniform targets: nothing left to learn


def matched_epsilon(cfg: Config, splits: Splits, up: Upstream) -> list[float]:
    """Per repeat, the smoothing epsilon as soft as the ensemble's KD targets: the targets'
    wrong-class mass on the training set, (1 − alpha)·mean(1 − target[label]), turned into the
    epsilon that gives the same mass, ε·(C − 1)/C."""
    loss = loss_class(cfg.distill.loss).from_config(cfg)
    members = up.member_logits(splits.x_train)  # [R, K, N, C]
    classes = members.shape[-1]
    out = []
    for ensemble in members:
        targets = loss.probabilities(ensemble, cfg.distill.temperature)  # [N, C]
        right = targets.gather(-1, splits.y_train.view(-1, 1).to(targets.device)).mean()
        mass = (1 - cfg.distill.alpha) * float(1 - right)
        out.append(min(mass * classes / (classes - 1), MAX_EPSILON))
    return out


def plan(cfg: Config, splits: Splits, up: Upstream) -> tuple[list[Role], list[float], int]:
    """(role per member, epsilon per member, MACs spent finding the matched epsilons) of the
    controls stack: each control once per repeat, in CONTROL_ROLES order."""
    repeats = up.repeats
    roles, eps, spent = [], [], 0
    for name in controls_of(cfg.distill):
        if name not in ("smoothing", "smoothing-matched"):
            continue  # their own stacks (`study.train_controls`)
        roles += [CONTROL_ROLES[name]] * repeats
        if name == "smoothing":
            eps += [float(cfg.distill.smoothing)] * repeats
        else:
            eps += matched_epsilon(cfg, splits, up)
            # the ensemble's passes over the training set that measured it (per control model)
            spent = (
                up.per_ensemble
                * len(splits.x_train)
                * pass_cost(up.models.student, splits.n_features).forward
            )
    return roles, eps, spent


def objective(eps: list[float]) -> SmoothedLabels:
    return SmoothedLabels(torch.tensor(eps))


def self_distillation(cfg: Config, splits: Splits, up: Upstream) -> Distillation:
    """The self-distillation control's objective: the run's loss, T and alpha, against the
    soft targets of each repeat's frozen hard-label student (member r distils from row r)."""
    return from_one_each(cfg, splits, up, up.models.student, up.hard)


def train_controls(
    cfg: Config,
    splits: Splits,
    up: Upstream,
    cache: StackCache | None = None,
    progress: engine.Progress | None = None,
) -> list[Record]:
    """The controls (`protocol.controls`), each its own stack after the distilled students,
    trained or loaded; none without `--controls`."""
    chosen = controls_of(cfg.distill)
    out = _self_distilled(cfg, splits, up, cache, progress) if "self" in chosen else []
    if "teacher-reg" in chosen:
        m, p = cfg.model, cfg.protocol
        spec = HardLabelStack(
            StackName.REGULARISED, [(r, "student", 0) for r in range(p.repeats)],
            [Role.STUDENT_TEACHER_REG] * p.repeats, up.models.student,
            (m.teacher_input_dropout, m.teacher_dropout), m.teacher_jitter,
        )  # fmt: skip
        out += trained_or_loaded(spec, cfg, splits, cache, progress)[1]
    return _smoothed(cfg, splits, up, cache, progress) + out


def _self_distilled(cfg, splits, up, cache, progress) -> list[Record]:
    """The self-distillation control: each repeat's student distilled, at the run's T and
    alpha, from that repeat's frozen hard-label student."""
    name, student = StackName.SELF_DISTILLED, up.models.student
    role = Role.STUDENT_SELF

    def train(up: Upstream):
        coords = [(r, "student", 0) for r in up.repeat_ids]
        with Meter(splits.x_train.device) as meter:
            objective = self_distillation(cfg, splits, up)
            stack = make_stack(name, student, coords, cfg.protocol.seed, objective=objective)
            res = engine_train(stack, splits, cfg.train, cfg, progress)
        train = costs.training_macs(student, splits, res.epochs)
        target = costs.one_teacher_target_macs(student, splits, viewed(cfg, up), res.epochs)
        shares = costs.apportion(meter.result, meter.result.seconds, train, target)
        roles = [role] * up.repeats
        seed = cfg.protocol.seed
        return res.params, record_stack(student, res, coords, roles, seed, splits, shares)

    keys = [(role, r, 0) for r in up.repeat_ids]
    return by_repeat(name, cache, keys, up, train)


def _smoothed(cfg, splits, up, cache, progress) -> list[Record]:
    """The label-smoothing controls, one stack."""
    name, student = StackName.CONTROLS, up.models.student
    chosen = [CONTROL_ROLES[c] for c in controls_of(cfg.distill) if c.startswith("smoothing")]
    if not chosen:
        return []

    def train(up: Upstream):
        roles, eps, spent = plan(cfg, splits, up)
        coords = [(r, "student", 0) for r in up.repeat_ids] * (len(roles) // up.repeats)
        stack = make_stack(name, student, coords, cfg.protocol.seed, objective=objective(eps))
        with Meter(splits.x_train.device) as meter:
            res = engine_train(stack, splits, cfg.train, cfg, progress)
        train = costs.training_macs(student, splits, res.epochs)
        target = [spent if role == Role.STUDENT_SMOOTH_MATCHED else None for role in roles]
        shares = costs.apportion(meter.result, res.seconds, train, target)
        seed = cfg.protocol.seed
        recs = record_stack(student, res, coords, roles, seed, splits, shares)
        return res.params, [
            dataclasses.replace(r, label_smoothing=e) for r, e in zip(recs, eps, strict=True)
        ]

    keys = [(role, r, 0) for role in chosen for r in up.repeat_ids]
    return by_repeat(name, cache, keys, up, train)
