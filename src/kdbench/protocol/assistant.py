"""A teacher assistant (Mirzadeh et al., "Improved Knowledge Distillation via Teacher
Assistant", AAAI 2020): between a large teacher and a small student, a network of middle size
distilled from the teacher, from which the student then distils. `--assistant-arch ARCH`.

Per repeat, the assistant is distilled from that repeat's frozen teacher with the run's loss,
temperature and alpha (its own stack, saved like any other); the distilled students' stack then
takes the assistants as its teachers, so the student from the teacher learns through the chain
and the student from the ensemble is unchanged. The chain's cost is the teacher's, the
assistant's and the student's (`analysis.costs`)."""

from __future__ import annotations

import dataclasses

import torch

from kdbench.config import Config
from kdbench.data.datasets import Splits
from kdbench.engine import trainer as engine
from kdbench.engine.architectures import of_config
from kdbench.engine.losses import loss_class
from kdbench.engine.meter import Meter
from kdbench.engine.objectives import Distillation
from kdbench.engine.teachers import CachedTeachers, FrozenCopies, Teachers, TrainedTeachers
from kdbench.engine.work import pass_cost
from kdbench.protocol import costs
from kdbench.protocol.stacks import Held, StackCache, make_stack, record_stack, saved
from kdbench.protocol.targets import Upstream, viewed
from kdbench.records import Record
from kdbench.roles import Role, StackName


def _objective(cfg: Config, splits: Splits, up: Upstream) -> Distillation:
    """Each repeat's assistant distils from that repeat's frozen teacher (member r, row r), at
    the run's loss, temperature and alpha: cached targets, or with --augment the teacher run
    on each step's augmented images (as every frozen teacher is)."""
    loss = loss_class(cfg.distill.loss).from_config(cfg)
    t = cfg.distill.temperature

    def rows(part: str) -> torch.Tensor:
        return loss.targets(up.teacher_logits(splits, part).unsqueeze(0), t)  # [R, N, C]

    teachers: Teachers
    if viewed(cfg, up):
        copies = FrozenCopies(up.models.teacher, up.teachers, list(range(up.repeats)), 1)
        teachers = TrainedTeachers([copies], loss.targets, t)
    else:
        teachers = CachedTeachers(rows("train"), rows("val"), torch.arange(up.repeats))
    return Distillation(loss, teachers, temperature=t, alpha=cfg.distill.alpha,
                        monitor=cfg.distill.kd_monitor, members=up.repeats)  # fmt: skip


def assisted(
    cfg: Config,
    splits: Splits,
    up: Upstream,
    cache: StackCache | None,
    progress: engine.Progress | None = None,
) -> tuple[Upstream, list[Record]]:
    """(the upstream with each repeat's assistant in its teacher's place, the assistants'
    records): trained, or loaded from the folder; a grown run trains the added repeats only."""
    name, role = StackName.ASSISTANTS, Role.ASSISTANT
    model = of_config(cfg, splits.n_features, splits.n_classes, compiled=True).assistant
    keys = [(role, r, 0) for r in up.repeat_ids]
    held = Held.of(cache, name)
    got = held.rows(keys)
    if got is None:
        sub = up.only(held.missing_repeats(keys))
        coords = [(r, "assistant", 0) for r in sub.repeat_ids]
        with Meter(splits.x_train.device) as meter:
            objective = _objective(cfg, splits, sub)
            stack = make_stack(name, model, coords, cfg.protocol.seed, objective=objective)
            res = engine.train(stack, splits, cfg.train, progress)
        train = costs.training_macs(model, splits, res.epochs)
        cost = pass_cost(sub.models.teacher, splits.n_features)
        target = (
            [costs.viewed_target_macs(cost, splits, 1, e) for e in res.epochs]
            if viewed(cfg, sub)
            else [costs.frozen_target_macs(cost, splits, 1)] * sub.repeats
        )
        shares = costs.apportion(meter.result, meter.result.seconds, train, target)
        recs = record_stack(model, res, coords, [role] * sub.repeats, cfg.protocol.seed,
                            splits, shares)  # fmt: skip
        got = saved(cache, name, held, res.params, recs, keys)
    params, recs = got
    models = dataclasses.replace(up.models, teacher=model)
    return dataclasses.replace(up, models=models, teachers=params, own=None, own_logits=None), recs
