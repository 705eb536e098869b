"""The teachers' own schedule: fixed teacher epochs beside early-stopping students, a max-norm
constraint and a learning-rate decay checked against a written-out loop, and the settings that
cannot hold refused in one line."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from kdbench.config import Config, TrainConfig, teacher_schedule
from kdbench.engine import trainer as engine
from kdbench.engine.mlp import MLP, init_stack, member_module
from kdbench.errors import ConfigError
from kdbench.protocol.study import run_study
from kdbench.roles import Role
from tests.oracle import _fit

SIZES = [784, 48, 32, 10]


class _Constrained:
    """torch.optim.Adam, then Hinton's constraint written out (each hidden unit's incoming
    weight row rescaled to norm `limit` where it exceeds it), and the lr decayed per epoch."""

    def __init__(self, net, limit, decay, steps_per_epoch, **adam):
        self.opt, self.net, self.limit = torch.optim.Adam(net.parameters(), **adam), net, limit
        self.decay, self.per_epoch, self.steps = decay, steps_per_epoch, 0

    def zero_grad(self):
        self.opt.zero_grad()

    def step(self):
        self.opt.step()
        with torch.no_grad():
            hidden = [m for m in self.net if isinstance(m, torch.nn.Linear)][:-1]
            for layer in hidden:  # nn.Linear weight: [out, in], one row per unit
                for row in layer.weight:
                    norm = float(row.norm())
                    if norm > self.limit:
                        row.mul_(self.limit / norm)
        self.steps += 1
        if self.steps % self.per_epoch == 0:
            for group in self.opt.param_groups:
                group["lr"] *= self.decay


def test_max_norm_and_lr_decay_equal_the_written_out_loop(small_splits):
    cfg = dataclasses.replace(TrainConfig(), epochs=3, learning_rate=1e-2)
    limit, decay = 0.6, 0.5
    seeds, shuffles = [1, 2], [3, 4]
    stack = engine.Stack("t", SIZES, seeds, shuffles, max_norm=limit, lr_decay=decay)
    result = engine.train(stack, small_splits, cfg)
    init = init_stack(SIZES, seeds)
    steps = math.ceil(len(small_splits.x_train) / cfg.batch_size)
    for m in range(2):
        net = member_module(init, m)
        opt = _Constrained(net, limit, decay, steps, lr=cfg.learning_rate, eps=cfg.adam_eps,
                           foreach=False)  # fmt: skip

        def batch_loss(i, net=net):
            return F.cross_entropy(net(small_splits.x_train[i]), small_splits.y_train[i])

        _fit(opt, batch_loss, None, shuffles[m], len(small_splits.x_train),
             batch=cfg.batch_size, epochs=3, patience=None)  # fmt: skip
        ours = member_module(result.params, m)
        for a, b in zip(ours.parameters(), net.parameters(), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # the constraint holds after training, and it bound: some unit sits at the limit
    for w in MLP(SIZES).hidden_weights(result.params):
        norms = w.norm(dim=2)
        assert float(norms.max()) <= limit * (1 + 1e-5)
        assert float(norms.max()) > limit * 0.999


def test_a_conv_teacher_takes_the_constraint_per_filter():
    from kdbench.engine.architectures import build

    model = build("cnn:4,8", 784, 10, (1, 28, 28))
    params = [p * 50 for p in model.init([0, 1])]
    model.max_norm_(params, 0.5)
    conv1, conv2, head = params[0], params[2], params[4]
    assert float(conv1.flatten(2).norm(dim=2).max()) <= 0.5 + 1e-6
    assert float(conv2.flatten(2).norm(dim=2).max()) <= 0.5 + 1e-6
    assert float(head.flatten(2).norm(dim=2).max()) > 0.5  # the output layer is not bounded


def test_teachers_train_fixed_epochs_while_the_others_early_stop(small_splits):
    cfg = Config().with_overrides(
        repeats=2, members=2, patience=1, max_epochs=8, teacher_epochs=3, learning_rate=1e-2,
        teacher_hidden=(32,), student_hidden=(8,), threads=1,
    )  # fmt: skip
    assert teacher_schedule(cfg.train).epochs == 3 and cfg.train.epochs is None
    records = run_study(cfg, small_splits, lambda r: None)
    teachers = [r.epochs for r in records if r.kind == "model" and r.role == Role.TEACHER]
    others = [r.epochs for r in records if r.kind == "model" and r.role != Role.TEACHER]
    assert teachers == [3, 3]
    assert len(set(others)) > 1 and all(e <= 8 for e in others), "the others early-stop"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (dict(teacher_epochs=0), "--teacher-epochs"),
        (dict(teacher_patience=0), "--teacher-patience"),
        (dict(teacher_max_norm=0.0), "--teacher-max-norm"),
        (dict(teacher_max_norm=-1.0), "--teacher-max-norm"),
        (dict(teacher_lr_decay=1.5), "--teacher-lr-decay"),
        (dict(teacher_monitor="accuracy"), "--teacher-monitor"),
        (dict(own_teacher="t.onnx", teacher_epochs=5), "does not train your own teacher"),
    ],
)
def test_impossible_teacher_schedules_are_one_line(flags, says):
    with pytest.raises(ConfigError) as exc:
        Config().with_overrides(**flags)
    assert says in str(exc.value) and "\n" not in str(exc.value)
