"""Any nn.Module as a stack (`engine.modules.ModuleStack`) against the plain way: the same module
trained alone with `torch.optim.Adam` in `tests/oracle.py`'s written-out loop, same seeds, members
stopping at different epochs; and the modules a stack cannot run correctly, refused."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbench.config import TrainConfig
from kdbench.engine import native
from kdbench.engine import trainer as engine
from kdbench.engine.architectures import cnn, dscnn, lenet5
from kdbench.engine.modules import ModuleStack
from kdbench.errors import ConfigError
from tests.oracle import _fit


class TinyCNN(nn.Module):
    """A microcontroller-sized conv net on flat 28x28 inputs (it reshapes them itself)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(200, 10),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


def _builtin_cnn() -> nn.Module:
    """The built-in cnn:4,8, a plain nn.Sequential: it trains through the im2col fast path."""
    return cnn((4, 8), (1, 28, 28), 10)


def _depthwise() -> nn.Module:
    """Strided, padded, depthwise and bias-free layers: what the fast path also plans."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.Conv2d(8, 16, 1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 7 * 7, 10, bias=False),
    )  # fmt: skip


def _need_kernels() -> None:
    """The compiled path's tests run where a C++ compiler is (this machine and CI's have g++)."""
    if native.kernels() is None:
        pytest.skip(f"no compiled kernels here: {native.state()}")


def _DSCNN() -> nn.Module:
    return dscnn((8, 16, 16), (1, 28, 28), 10)


def _alone(factory, seed, shuffle, splits, cfg):
    torch.manual_seed(seed)
    net = factory()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps, foreach=False)

    def batch_loss(idx):
        return F.cross_entropy(net(splits.x_train[idx]), splits.y_train[idx])

    def val_loss():
        return F.cross_entropy(net(splits.x_val), splits.y_val)

    epochs = cfg.epochs or cfg.max_epochs
    patience = None if cfg.epochs is not None else cfg.patience
    trained = _fit(opt, batch_loss, val_loss, shuffle, len(splits.x_train), batch=cfg.batch_size,
                   epochs=epochs, patience=patience)  # fmt: skip
    return net, trained


@pytest.mark.parametrize(
    ("factory", "planned", "lr", "compiled"),
    [(TinyCNN, False, 1e-2, False), (_builtin_cnn, True, 3e-3, False),
     (_builtin_cnn, True, 3e-3, True)],  # lr: members stop at different epochs
    ids=["vmap", "fast-path-im2col", "fast-path-compiled"],
)  # fmt: skip
@pytest.mark.parametrize(
    "cfg",
    [dict(epochs=2), dict(epochs=None, patience=1, max_epochs=12)],
    ids=["fixed-epochs", "stopping-at-different-epochs"],
)
def test_module_stack_equals_modules_trained_alone(small_splits, cfg, factory, planned, lr,
                                                   compiled):  # fmt: skip
    cfg = dataclasses.replace(TrainConfig(), **cfg)
    if cfg.epochs is None:
        cfg = dataclasses.replace(cfg, learning_rate=lr)
    seeds, shuffles = [3, 5, 8], [13, 21, 34]
    model = ModuleStack(factory, small_splits.n_features, small_splits.n_classes)
    assert (model.plan is not None) == planned
    if compiled:
        _need_kernels()
        assert model.direct is not None
    else:
        model.direct = None  # what runs where the kernels cannot be built, and on a GPU
    result = engine.train(engine.Stack("cnn", model, seeds, shuffles), small_splits, cfg)
    epochs = []
    for m in range(3):
        alone, trained = _alone(factory, seeds[m], shuffles[m], small_splits, cfg)
        epochs.append(trained)
        stacked = model.member(result.params, m)
        # a stack's convolutions sum in another order than a lone Conv2d: float drift, growing with
        # the steps taken (6 epochs at lr 1e-2 or 3e-3 in the stopping case; measured up to 4e-3
        # on one weight of 288 on the compiled path)
        atol = 1e-4 if cfg.epochs is not None else 5e-3
        for a, b in zip(stacked.parameters(), alone.parameters(), strict=True):
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-2)
        with torch.no_grad():
            differ = stacked(small_splits.x_test).argmax(1) != alone(small_splits.x_test).argmax(1)
        assert int(differ.sum()) <= 2  # of 1000 test images
    assert result.epochs == epochs
    if cfg.epochs is None:
        assert len(set(epochs)) > 1, "scenario: the members must stop at different epochs"


@pytest.mark.parametrize(
    "factory",
    [
        _builtin_cnn,
        lambda: lenet5((1, 28, 28), 10),
        _depthwise,
        _DSCNN,
    ],
    ids=["cnn", "lenet5", "depthwise", "dscnn"],
)
@pytest.mark.parametrize("lowering", ["im2col", "compiled"])
@pytest.mark.parametrize("batch", [16, 13])  # 13: the compiled path's padded batch lanes
def test_the_fast_path_is_the_modules_function_and_gradient(factory, lowering, batch):
    model = ModuleStack(factory, 784, 10)
    assert model.plan is not None
    if lowering == "compiled":
        _need_kernels()
    plan = model.plan if lowering == "im2col" else model.direct
    if lowering == "compiled" and factory in (_depthwise, _DSCNN):
        assert plan is None  # strided and grouped convolutions: the im2col path runs them
        return
    params = model.init([1, 2, 3])
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, batch, 784, generator=gen)
    y = torch.randint(0, 10, (3, batch), generator=gen)
    members = [model.member(params, m) for m in range(3)]
    leaves = [p.detach().requires_grad_() for p in params]
    logits = plan.run(leaves, x)
    F.cross_entropy(logits.reshape(-1, 10), y.reshape(-1), reduction="sum").backward()
    for m, net in enumerate(members):  # the oracle: each member's own module, autograd
        ref = net(x[m])
        F.cross_entropy(ref, y[m], reduction="sum").backward()
        torch.testing.assert_close(logits[m], ref, atol=1e-5, rtol=1e-5)
        for leaf, p in zip(leaves, net.parameters(), strict=True):
            torch.testing.assert_close(leaf.grad[m], p.grad, atol=1e-5, rtol=1e-4)


def test_the_compiled_path_on_shared_inputs_and_any_thread_count():
    """Evaluation (every member on the same images) runs the compiled path too, and its floats
    do not depend on the number of threads (members are spread over threads, each summed in one
    order)."""
    _need_kernels()
    model = ModuleStack(lambda: lenet5((1, 28, 28), 10), 784, 10)
    params = model.init([4, 5, 6])
    x = torch.rand(300, 784, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = model.logits(params, x)
        torch.set_num_threads(2)
        two = model.logits(params, x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    for m in range(3):
        with torch.no_grad():
            torch.testing.assert_close(one[m], model.member(params, m)(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("env", "says"),
    [({native.SWITCH: "0"}, "im2col (KDBENCH_NATIVE=0)"),
     ({"CXX": "/nonexistent/c++"}, "im2col (compiled kernels unavailable")],
    ids=["switched-off", "no-compiler"],
)  # fmt: skip
def test_without_the_kernels_conv_nets_train_on_the_im2col_path(tmp_path, env, says):
    """In a fresh process: no compiled path, said once on stderr where it was wanted; a conv
    stack still trains (the im2col plan) and `native.state()` says why."""
    import os
    import subprocess
    import sys

    code = (
        "from kdbench.engine import native; from kdbench.engine.modules import ModuleStack;"
        "from kdbench.engine.architectures import cnn;"
        "m = ModuleStack(lambda: cnn((4,), (1, 28, 28), 10), 784, 10);"
        "assert m.direct is None and m.plan is not None; print(native.state())"
    )
    cache = {"XDG_CACHE_HOME": str(tmp_path)}  # nothing cached: the compiler is asked
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, **cache, **env},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(says)
    if "CXX" in env:
        assert proc.stderr.count("\n") == 1 and "install a C++ compiler" in proc.stderr
    else:
        assert proc.stderr == ""


def test_a_dropout_bearing_conv_net_keeps_each_member_to_its_own_seeds(small_splits):
    """Dropout on a built-in conv net (the engine's per-member masks: input rate on the pixels,
    hidden rate before its dense layers): a member trained alone equals the same member in a
    stack, and the masks did act."""
    cfg = dataclasses.replace(TrainConfig(), epochs=1)
    model = ModuleStack(lambda: lenet5((1, 28, 28), 10), 784, 10)

    def train(seeds, shuffles, dropout):
        stack = engine.Stack("t", model, seeds, shuffles, dropout=dropout)
        return engine.train(stack, small_splits, cfg).params

    three = train([1, 2, 3], [4, 5, 6], (0.2, 0.5))
    one = train([2], [5], (0.2, 0.5))
    plain = train([2], [5], (0.0, 0.0))
    for a, b in zip(three, one, strict=True):
        torch.testing.assert_close(a[1], b[0], atol=1e-5, rtol=1e-4)
    assert any(not torch.allclose(b, c, atol=1e-3) for b, c in zip(one, plain, strict=True))


def test_a_member_depends_only_on_its_own_seeds(small_splits):
    cfg = dataclasses.replace(TrainConfig(), epochs=1)
    model = ModuleStack(TinyCNN, small_splits.n_features, small_splits.n_classes)
    three = engine.train(engine.Stack("s", model, [1, 2, 3], [4, 5, 6]), small_splits, cfg)
    one = engine.train(engine.Stack("s", model, [2], [5]), small_splits, cfg)
    for a, b in zip(three.params, one.params, strict=True):
        torch.testing.assert_close(a[1], b[0], atol=1e-5, rtol=1e-4)


def test_counts_of_a_module():
    model = ModuleStack(TinyCNN, 784, 10)
    assert model.parameters_per_member() == sum(p.numel() for p in TinyCNN().parameters())
    # conv1 26x26x4 outputs x 9 taps, conv2 11x11x8 x 36, the head 200 x 10
    assert model.macs_per_image() == 26 * 26 * 4 * 9 + 11 * 11 * 8 * 36 + 200 * 10


class _WithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn, self.head = nn.BatchNorm1d(784), nn.Linear(784, 10)

    def forward(self, x):
        return self.head(self.bn(x))


@pytest.mark.parametrize(
    ("factory", "says"),
    [
        (_WithBatchNorm, "has buffers"),
        (lambda: nn.Sequential(nn.Dropout(0.5), nn.Linear(784, 10)), "own random layers"),
        (lambda: nn.Linear(784, 7), "must give [N, 10] logits"),
        (lambda: nn.Linear(100, 10), "fails on inputs [N, 784]"),
        (lambda: "not a module", "not an nn.Module"),
    ],
    ids=["batchnorm", "dropout", "width", "forward-fails", "not-a-module"],
)
def test_modules_a_stack_cannot_run_are_one_clear_error(factory, says):
    with pytest.raises(ConfigError, match=None) as exc:
        ModuleStack(factory, 784, 10)
    assert says in str(exc.value) and "\n" not in str(exc.value)
