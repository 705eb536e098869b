"""The stacked engine against separately trained nn.Modules with the same seeds."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch

from kdbench.config import TrainConfig
from kdbench.engine import trainer as engine
from kdbench.engine.losses import PaperKD, error_rate, soften
from kdbench.engine.mlp import init_stack, member_module, stack_logits
from kdbench.engine.objectives import Distillation
from kdbench.engine.teachers import CachedTeachers
from tests.oracle import train_alone

SIZES = [784, 32, 10]


def _cfg(**kw):
    return dataclasses.replace(TrainConfig(), **kw)


def _kd(teachers, temperature, alpha):
    return Distillation(PaperKD(), teachers, temperature, alpha)


def _assert_same(stack_params, m, module, atol=2e-5):
    alone = member_module(stack_params, m)
    for a, b in zip(alone.parameters(), module.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


# `--device cuda` runs this same engine with every tensor on the GPU (stacks, Adam state and step
# count, minibatch indices); the cuda case runs wherever a GPU is visible
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_stack_equals_members_trained_alone_fixed_epochs(small_splits, device):
    seeds, shuffles = [11, 12, 13], [21, 22, 23]
    result = engine.train(
        engine.Stack("t", SIZES, seeds, shuffles),
        small_splits.to(device),
        _cfg(epochs=2, batch_size=32),
    )
    assert all(p.device.type == device for p in result.params)
    init = init_stack(SIZES, seeds)
    for m in range(3):
        module, _ = train_alone(
            init, m, shuffles[m], small_splits, lr=1e-3, eps=1e-7, batch=32, epochs=2
        )
        _assert_same([p.cpu() for p in result.params], m, module)
    assert result.epochs == [2, 2, 2]


def test_stack_equals_alone_with_members_stopping_at_different_epochs(small_splits):
    seeds, shuffles = [1, 2, 3, 4], [5, 6, 7, 8]
    cfg = _cfg(patience=1, max_epochs=8, batch_size=64, learning_rate=1e-2)
    result = engine.train(engine.Stack("t", SIZES, seeds, shuffles), small_splits, cfg)
    init = init_stack(SIZES, seeds)
    for m in range(4):
        module, trained = train_alone(
            init, m, shuffles[m], small_splits, lr=1e-2, eps=1e-7, batch=64, epochs=8, patience=1
        )
        assert result.epochs[m] == trained
        _assert_same(result.params, m, module, atol=1e-4)
    assert len(set(result.epochs)) > 1, "the scenario should stop members at different epochs"


def test_kd_stack_equals_alone(small_splits):
    teacher = init_stack([784, 64, 10], [99])
    t_train = soften(stack_logits(teacher, small_splits.x_train), 4.0)
    t_val = soften(stack_logits(teacher, small_splits.x_val), 4.0)
    targets = _kd(CachedTeachers(t_train, t_val, torch.tensor([0, 0])), 4.0, 0.3)
    seeds, shuffles = [31, 32], [41, 42]
    result = engine.train(
        engine.Stack("kd", SIZES, seeds, shuffles, targets), small_splits, _cfg(epochs=2)
    )
    init = init_stack(SIZES, seeds)
    for m in range(2):
        module, _ = train_alone(
            init,
            m,
            shuffles[m],
            small_splits,
            lr=1e-3,
            eps=1e-7,
            batch=32,
            epochs=2,
            targets_train=t_train[0],
            targets_val=t_val[0],
            temperature=4.0,
            alpha=0.3,
        )
        _assert_same(result.params, m, module)


def test_kd_stack_with_a_temperature_and_alpha_per_member_equals_alone(small_splits):
    """A sweep trains several grid points as one stack: each member its own T, alpha and target
    row, early stopping on the combined loss; each must match its point trained alone."""
    teacher = init_stack([784, 64, 10], [7])
    logits_train = stack_logits(teacher, small_splits.x_train)[0]
    logits_val = stack_logits(teacher, small_splits.x_val)[0]
    temps, alphas = [2.0, 8.0, 8.0], [0.5, 0.1, 0.9]
    rows = {2.0: 0, 8.0: 1}  # points with the same temperature share one target row
    cached = CachedTeachers(
        train=torch.stack([soften(logits_train, t) for t in rows]),
        val=torch.stack([soften(logits_val, t) for t in rows]),
        group=torch.tensor([rows[t] for t in temps]),
    )
    targets = _kd(cached, torch.tensor(temps), torch.tensor(alphas))
    seeds, shuffles = [51, 52, 53], [61, 62, 63]
    cfg = _cfg(patience=1, max_epochs=6, batch_size=64, learning_rate=1e-2)
    result = engine.train(engine.Stack("kd", SIZES, seeds, shuffles, targets), small_splits, cfg)
    init = init_stack(SIZES, seeds)
    for m, (t, a) in enumerate(zip(temps, alphas, strict=True)):
        module, trained = train_alone(
            init,
            m,
            shuffles[m],
            small_splits,
            lr=1e-2,
            eps=1e-7,
            batch=64,
            epochs=6,
            patience=1,
            targets_train=soften(logits_train, t),
            targets_val=soften(logits_val, t),
            temperature=t,
            alpha=a,
        )
        assert result.epochs[m] == trained
        _assert_same(result.params, m, module, atol=1e-4)
    assert len(set(result.epochs)) > 1, "the scenario should stop members at different epochs"


def test_training_learns_and_test_error_matches_module(small_splits):
    result = engine.train(engine.Stack("t", SIZES, [3], [4]), small_splits, _cfg(epochs=3))
    logits = stack_logits(result.params, small_splits.x_test)
    err = float(error_rate(logits, small_splits.y_test)[0])
    module = member_module(result.params, 0)
    with torch.no_grad():
        err_module = float(error_rate(module(small_splits.x_test), small_splits.y_test))
    assert err == pytest.approx(err_module)
    assert err < 0.4  # 480 images, 3 epochs: far better than chance (0.9)


def test_restore_best_returns_weights_of_best_epoch(small_splits):
    cfg = _cfg(epochs=4, restore_best=True, monitor="val_error", learning_rate=3e-2)
    result = engine.train(engine.Stack("t", SIZES, [8], [9]), small_splits, cfg)
    hist = result.history[0]
    best = min(hist, key=lambda h: h["val_error"])
    assert result.best_epoch[0] == best["epoch"]
    val_err = float(error_rate(stack_logits(result.params, small_splits.x_val), small_splits.y_val))
    assert val_err == pytest.approx(best["val_error"])


def test_divergence_is_recorded_not_hidden(small_splits):
    cfg = _cfg(epochs=2, learning_rate=1e30)
    result = engine.train(engine.Stack("t", SIZES, [1, 2], [3, 4]), small_splits, cfg)
    assert result.diverged_epoch == [1, 1]


def test_dropout_member_does_not_depend_on_its_stack(small_splits):
    """Hinton's teachers train with dropout: each member's masks come from its own generator,
    so a member trained in a stack equals the same member trained alone, early stops included."""
    seeds, shuffles = [1, 2, 3], [5, 6, 7]
    cfg = _cfg(patience=1, max_epochs=6, batch_size=64, learning_rate=1e-2)
    stack = engine.Stack("t", SIZES, seeds, shuffles, dropout=(0.2, 0.5))
    stacked = engine.train(stack, small_splits, cfg)
    for m in range(3):
        alone = engine.train(
            engine.Stack("t", SIZES, [seeds[m]], [shuffles[m]], dropout=(0.2, 0.5)),
            small_splits,
            cfg,
        )
        assert alone.epochs[0] == stacked.epochs[m]
        for a, b in zip(alone.params, stacked.params, strict=True):
            torch.testing.assert_close(a[0], b[m], atol=1e-5, rtol=1e-4)
    plain = engine.train(engine.Stack("t", SIZES, seeds, shuffles), small_splits, cfg)
    assert not torch.equal(plain.params[0], stacked.params[0]), "dropout should change training"


def test_dropout_forward_matches_masks_written_out():
    from kdbench.engine.mlp import stack_forward
    from kdbench.engine.streams import Dropout

    sizes = [20, 16, 12, 3]
    params = init_stack(sizes, [4, 5])
    x = torch.rand(2, 8, 20)
    got = stack_forward(params, x, Dropout(0.2, 0.5, [10, 11]))
    for m, seed in enumerate([10, 11]):
        gen = torch.Generator().manual_seed(seed)
        h = x[m] * (torch.rand(8, 20, generator=gen) >= 0.2) / 0.8
        for i in range(3):
            h = h @ params[2 * i][m] + params[2 * i + 1][m]
            if i < 2:
                h = torch.relu(h) * (torch.rand(8, sizes[i + 1], generator=gen) >= 0.5) / 0.5
        torch.testing.assert_close(got[m], h)


@pytest.mark.parametrize("rates", [(0.0, 0.0), (0.2, 0.5)])
def test_backward_by_hand_is_bit_equal_to_autograd(rates):
    """`stack_backward` replaces autograd for the layers: same operations, same order, so the
    gradients must be equal bit for bit, dropout included (with the same masks)."""
    from kdbench.engine.losses import cross_entropy
    from kdbench.engine.mlp import Tape, stack_backward, stack_forward
    from kdbench.engine.streams import Dropout

    sizes = [20, 16, 12, 3]
    x = torch.rand(2, 8, 20)
    labels = torch.randint(0, 3, (2, 8))
    leaves = [p.requires_grad_() for p in init_stack(sizes, [4, 5])]
    cross_entropy(stack_forward(leaves, x, Dropout(*rates, [10, 11])), labels).sum().backward()

    params, tape, dropout = init_stack(sizes, [4, 5]), Tape(), Dropout(*rates, [10, 11])
    logits = stack_forward(params, x, dropout, tape).requires_grad_()
    cross_entropy(logits, labels).sum().backward()
    got = {i: (gw, gb) for i, gw, gb in stack_backward(params, tape, logits.grad, dropout)}
    assert sorted(got) == [0, 1, 2]
    for i, (gw, gb) in got.items():
        assert torch.equal(gw, leaves[2 * i].grad) and torch.equal(gb, leaves[2 * i + 1].grad)
    assert leaves[0].grad.abs().sum() > 0


def test_each_layer_is_yielded_after_its_weights_served_the_layer_below():
    """The engine updates a layer in place as soon as it is yielded; the gradient below must
    already have been taken through the old weights, or the update would leak into it."""
    from kdbench.engine.losses import cross_entropy
    from kdbench.engine.mlp import Tape, stack_backward, stack_forward

    sizes = [20, 16, 12, 3]
    x, labels = torch.rand(2, 8, 20), torch.randint(0, 3, (2, 8))

    def grads(update_in_place: bool):
        params, tape = init_stack(sizes, [4, 5]), Tape()
        logits = stack_forward(params, x, tape=tape).requires_grad_()
        cross_entropy(logits, labels).sum().backward()
        out = []
        for i, gw, _ in stack_backward(params, tape, logits.grad):
            out.append(gw.clone())
            if update_in_place:
                params[2 * i].add_(100.0)
        return out

    for a, b in zip(grads(False), grads(True), strict=True):
        assert torch.equal(a, b)


def test_jitter_shifts_each_members_images_by_its_own_draw():
    from kdbench.engine.streams import Jitter

    x = torch.rand(3, 4, 28 * 28)
    jitter = Jitter(2, [10, 11, 12])
    expect = Jitter(2, [10, 11, 12]).shifts()  # same seeds: the shifts the call will draw
    got = jitter(x).view(3, 4, 28, 28)
    for m, (dy, dx) in enumerate(expect):
        assert max(abs(dy), abs(dx)) <= 2
        img = x[m].view(4, 28, 28)
        want = torch.zeros_like(img)
        ys, xs = slice(max(dy, 0), 28 + min(dy, 0)), slice(max(dx, 0), 28 + min(dx, 0))
        src_y, src_x = slice(max(-dy, 0), 28 - max(dy, 0)), slice(max(-dx, 0), 28 - max(dx, 0))
        want[:, ys, xs] = img[:, src_y, src_x]  # written out: new[y, x] = old[y - dy, x - dx]
        assert torch.equal(got[m], want)
    assert len({tuple(s) for s in Jitter(2, range(20)).shifts()}) > 1


def test_jittered_member_does_not_depend_on_its_stack(small_splits):
    """Hinton's teachers see shifted images: a member's shifts come from its own generator, so
    stacked and alone give the same numbers, early stops included."""
    seeds, shuffles = [1, 2, 3], [5, 6, 7]
    cfg = _cfg(patience=1, max_epochs=5, batch_size=64, learning_rate=1e-2)
    stacked = engine.train(engine.Stack("t", SIZES, seeds, shuffles, jitter=2), small_splits, cfg)
    for m in range(3):
        alone = engine.train(
            engine.Stack("t", SIZES, [seeds[m]], [shuffles[m]], jitter=2), small_splits, cfg
        )
        assert alone.epochs[0] == stacked.epochs[m]
        for a, b in zip(alone.params, stacked.params, strict=True):
            torch.testing.assert_close(a[0], b[m], atol=1e-5, rtol=1e-4)
    plain = engine.train(engine.Stack("t", SIZES, seeds, shuffles), small_splits, cfg)
    assert not torch.equal(plain.params[0], stacked.params[0]), "jitter should change training"


def test_the_engine_trains_through_the_stack_model(small_splits):
    """The engine asks its `StackModel` for everything architecture-specific: a family that
    wraps the MLP and counts the calls trains the same members as the MLP itself."""
    from kdbench.engine.mlp import MLP

    class Counted(MLP):
        calls: ClassVar[dict[str, int]] = {"init": 0, "step": 0, "forward": 0}

        def init(self, seeds, device="cpu"):
            self.calls["init"] += 1
            return super().init(seeds, device)

        def step(self, *args, **kwargs):
            self.calls["step"] += 1
            return super().step(*args, **kwargs)

        def forward(self, params, x):
            self.calls["forward"] += 1
            return super().forward(params, x)

    cfg = _cfg(epochs=2)
    counted = engine.train(engine.Stack("c", Counted(SIZES), [1, 2], [3, 4]), small_splits, cfg)
    plain = engine.train(engine.Stack("p", SIZES, [1, 2], [3, 4]), small_splits, cfg)
    steps = 2 * -(-len(small_splits.x_train) // cfg.batch_size)
    assert Counted.calls["init"] == 1 and Counted.calls["step"] == steps
    assert Counted.calls["forward"] >= 2  # validation, every epoch
    for a, b in zip(counted.params, plain.params, strict=True):
        assert torch.equal(a, b)
    member = MLP(SIZES).member(plain.params, 1)  # an nn.Sequential: Linear's own kernel
    with torch.no_grad():
        eager = member(small_splits.x_test)
    stacked = MLP(SIZES).logits(plain.params, small_splits.x_test)[1]
    assert torch.allclose(eager, stacked, atol=1e-5)


def test_a_stack_continued_from_a_snapshot_ends_with_the_same_floats(small_splits, monkeypatch):
    """A long stack cut short resumes from its last end-of-epoch snapshot: weights, Adam state,
    every member's shuffling, dropout and jitter streams, early stopping and the learning-rate
    decay continue, and the result equals an uninterrupted run exactly."""
    monkeypatch.setattr(engine, "SNAPSHOT_SECONDS", 0.0)  # a snapshot after every epoch
    cfg = dataclasses.replace(TrainConfig(), patience=1, max_epochs=6, learning_rate=1e-2,
                              restore_best=True)  # fmt: skip

    def stack():
        return engine.Stack("t", [784, 24, 10], [1, 2, 3], [4, 5, 6], dropout=(0.2, 0.3),
                            jitter=1, max_norm=2.0, lr_decay=0.9)  # fmt: skip

    snaps = []
    whole = engine.train(stack(), small_splits, cfg, snapshot=snaps.append)
    assert len(set(whole.epochs)) > 1, "scenario: members stop at different epochs"
    assert len(snaps) >= 3
    resumed = engine.train(stack(), small_splits, cfg, resume=snaps[1])  # cut after epoch 2
    assert resumed.epochs == whole.epochs and resumed.best_epoch == whole.best_epoch
    assert resumed.history == whole.history
    for a, b in zip(resumed.params, whole.params, strict=True):
        assert torch.equal(a, b)
