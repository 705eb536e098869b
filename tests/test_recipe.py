"""Your training recipe: SGD (momentum, Nesterov, weight decay), Adam with weight decay, and the
cosine and step learning-rate schedules, each member against the same net trained alone with
`torch.optim.SGD`/`Adam` and `torch.optim.lr_scheduler` (written out here, same seeds and batch
order); snapshots resume to the same floats; bad settings are one line."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from kdbench.config import Config, TrainConfig
from kdbench.engine import trainer as engine
from kdbench.engine.architectures import bncnn, build
from kdbench.engine.modules import ModuleStack
from kdbench.errors import ConfigError

RECIPES = {
    "sgd-nesterov-wd-cosine": dict(optimizer="sgd", momentum=0.9, nesterov=True,
                                   weight_decay=5e-4, lr_schedule="cosine", learning_rate=0.05),
    "sgd-momentum-step": dict(optimizer="sgd", momentum=0.8, lr_schedule="step", lr_step=1,
                              lr_gamma=0.5, learning_rate=0.05),
    "sgd-plain": dict(optimizer="sgd", momentum=0.0, learning_rate=0.1),
    "adam-wd-cosine": dict(weight_decay=1e-3, lr_schedule="cosine", learning_rate=3e-3),
}  # fmt: skip


def _alone(model, seed, shuffle, splits, cfg: TrainConfig):
    """The plain way: the member as a module, torch's optimiser and scheduler, stepped per
    epoch; train mode for steps."""
    net = model.member(model.init([seed]), 0).train()
    shape = model.input_shape
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                              nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
                              foreach=False)  # fmt: skip
    else:
        opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps,
                               weight_decay=cfg.weight_decay, foreach=False)  # fmt: skip
    if cfg.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    elif cfg.lr_schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    else:
        sched = None
    gen = torch.Generator().manual_seed(shuffle)
    n = len(splits.x_train)
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            loss = F.cross_entropy(net(splits.x_train[idx].view(-1, *shape)), splits.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
    return net.eval()


@pytest.mark.parametrize("recipe", list(RECIPES), ids=list(RECIPES))
@pytest.mark.parametrize("arch", ["mlp:32", "bncnn:4"], ids=["mlp-hand-written", "bncnn"])
def test_each_member_equals_the_recipe_run_alone(small_splits, recipe, arch):
    """The BatchNorm net in float64: at SGD's learning rates float32's summation-order drift
    through BatchNorm reaches 3e-3 in three epochs (in float64 the stack equals the modules to
    1e-15; measured)."""
    cfg = dataclasses.replace(TrainConfig(), epochs=3, batch_size=64, **RECIPES[recipe])
    model = build(arch, 784, 10, (1, 28, 28))
    if arch == "bncnn:4":
        model = ModuleStack(lambda: bncnn((4,), (1, 28, 28), 10).double(), (1, 28, 28), 10)
        small_splits = dataclasses.replace(
            small_splits,
            **{k: getattr(small_splits, k).double() for k in ("x_train", "x_val", "x_test")},
        )
    seeds, shuffles = [3, 5], [13, 21]
    result = engine.train(engine.Stack("r", model, seeds, shuffles), small_splits, cfg)
    for m in range(2):
        alone = _alone(model, seeds[m], shuffles[m], small_splits, cfg)
        stacked = model.member(result.params, m)
        for a, b in zip(stacked.state_dict().values(), alone.state_dict().values(),
                        strict=True):  # fmt: skip
            torch.testing.assert_close(a, b, atol=2e-5 if arch == "mlp:32" else 1e-12, rtol=1e-4)


def test_a_recipe_resumes_from_a_snapshot_to_the_same_floats(small_splits, monkeypatch):
    cfg = dataclasses.replace(TrainConfig(), epochs=3, **RECIPES["sgd-nesterov-wd-cosine"])
    model = build("mlp:32", 784, 10, None)
    whole = engine.train(engine.Stack("r", model, [1, 2], [3, 4]), small_splits, cfg)
    snaps = []
    monkeypatch.setattr(engine, "SNAPSHOT_SECONDS", 0.0)
    engine.train(engine.Stack("r", model, [1, 2], [3, 4]), small_splits, cfg,
                 snapshot=lambda s: snaps.append(copy.deepcopy(s)))  # fmt: skip
    assert any(k.startswith("sgd.momentum.") for k in snaps[0].tensors)
    resumed = engine.train(engine.Stack("r", model, [1, 2], [3, 4]), small_splits, cfg,
                           resume=snaps[0])  # fmt: skip
    for a, b in zip(whole.params, resumed.params, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("over", "says"),
    [
        (dict(optimizer="rmsprop"), "optimizer must be one of adam, sgd"),
        (dict(lr_schedule="linear"), "lr schedule must be one of none, cosine, step"),
        (dict(optimizer="sgd", momentum=-0.1), "momentum must be a number >= 0"),
        (dict(nesterov=True), "--nesterov needs --optimizer sgd"),
        (dict(lr_gamma=0.0), "lr gamma must be in (0, 1]"),
        (dict(teacher_lr_decay=0.9, lr_schedule="cosine"), "keep one"),
    ],
)
def test_bad_recipes_are_one_line(over, says):
    with pytest.raises(ConfigError) as exc:
        Config().with_overrides(**over)  # every Config is validated when made
    assert says in str(exc.value) and "\n" not in str(exc.value)
