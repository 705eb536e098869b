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

from kdbench.config import Config
from kdbench.data.datasets import Splits
from kdbench.engine import trainer as engine
from kdbench.engine.architectures import of_config
from kdbench.engine.meter import Meter
from kdbench.protocol import costs
from kdbench.protocol.stacks import (
    Held,
    StackCache,
    engine_train,
    make_stack,
    record_stack,
    saved,
)
from kdbench.protocol.targets import Upstream, from_one_each, viewed
from kdbench.records import Record
from kdbench.roles import Role, StackName


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
            objective = from_one_each(cfg, splits, sub, sub.models.teacher, sub.teachers)
            stack = make_stack(name, model, coords, cfg.protocol.seed, objective=objective)
            res = engine_train(stack, splits, cfg.train, cfg, progress)
        train = costs.training_macs(model, splits, res.epochs)
        views = viewed(cfg, sub)
        target = costs.one_teacher_target_macs(sub.models.teacher, splits, views, res.epochs)
        shares = costs.apportion(meter.result, meter.result.seconds, train, target)
        recs = record_stack(model, res, coords, [role] * sub.repeats, cfg.protocol.seed,
                            splits, shares)  # fmt: skip
        got = saved(cache, name, held, res.params, recs, keys)
    params, recs = got
    models = dataclasses.replace(up.models, teacher=model)
    return dataclasses.replace(up, models=models, teachers=params, own=None, own_logits=None), recs
