"""Any nn.Module as a stack (`engine.modules.ModuleStack`) against the plain way: the same module
trained alone with `torch.optim.Adam` in `tests/oracle.py`'s written-out loop, same seeds, members
stopping at different epochs; and the modules a stack cannot run correctly, refused."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbench.config import TrainConfig
from kdbench.engine import native
from kdbench.engine import trainer as engine
from kdbench.engine.architectures import bncnn, cnn, dscnn, lenet5, mbv2, resnet
from kdbench.engine.modules import ModuleStack
from kdbench.errors import ConfigError
from tests.oracle import _fit

IMAGE = (1, 28, 28)


class TinyCNN(nn.Module):
    """A microcontroller-sized conv net on 28x28 images `[N, 1, 28, 28]`."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(200, 10),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


def _builtin_cnn() -> nn.Module:
    """The built-in cnn:4,8, a plain nn.Sequential: it trains through the im2col fast path."""
    return cnn((4, 8), (1, 28, 28), 10)


def _depthwise() -> nn.Module:
    """Strided, padded, depthwise and bias-free layers on flat inputs it unflattens itself:
    what the fast path also plans."""
    return nn.Sequential(
        nn.Unflatten(1, IMAGE), nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.Conv2d(8, 16, 1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 7 * 7, 10, bias=False),
    )  # fmt: skip


def _need_kernels() -> None:
    """The compiled path's tests run where a C++ compiler is (this machine and CI's have g++)."""
    if native.kernels() is None:
        pytest.skip(f"no compiled kernels here: {native.state()}")


def _DSCNN() -> nn.Module:
    return dscnn((8, 16, 16), (1, 28, 28), 10)


def _alone(factory, seed, shuffle, splits, cfg, shape=IMAGE):
    """The plain way: the module alone after `torch.manual_seed`, `torch.optim.Adam`, train mode
    for its steps and eval mode for validation (BatchNorm's batch, then running statistics)."""
    torch.manual_seed(seed)
    net = factory()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps, foreach=False)

    def batch_loss(idx):
        net.train()
        return F.cross_entropy(net(splits.x_train[idx].view(-1, *shape)), splits.y_train[idx])

    def val_loss():
        net.eval()
        return F.cross_entropy(net(splits.x_val.view(-1, *shape)), splits.y_val)

    epochs = cfg.epochs or cfg.max_epochs
    patience = None if cfg.epochs is not None else cfg.patience
    trained = _fit(opt, batch_loss, val_loss, shuffle, len(splits.x_train), batch=cfg.batch_size,
                   epochs=epochs, patience=patience)  # fmt: skip
    return net.eval(), trained


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
    # compiled=False: what runs where the kernels cannot be built, and on a GPU
    model = ModuleStack(factory, IMAGE, small_splits.n_classes, compiled=compiled)
    assert (model.plan is not None) == planned
    if compiled:
        _need_kernels()
        assert model.direct is not None
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
            x = small_splits.x_test.view(-1, *IMAGE)
            differ = stacked(x).argmax(1) != alone(x).argmax(1)
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
    shape = (784,) if factory is _depthwise else IMAGE  # flat inputs the net unflattens itself
    model = ModuleStack(factory, shape, 10, compiled=lowering == "compiled")
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
        ref = net(x[m].view(-1, *shape))
        F.cross_entropy(ref, y[m], reduction="sum").backward()
        torch.testing.assert_close(logits[m], ref, atol=1e-5, rtol=1e-5)
        for leaf, p in zip(leaves, net.parameters(), strict=True):
            torch.testing.assert_close(leaf.grad[m], p.grad, atol=1e-5, rtol=1e-4)


def test_the_compiled_path_on_shared_inputs_and_any_thread_count():
    """Evaluation (every member on the same images) runs the compiled path too, and its floats
    do not depend on the number of threads (members are spread over threads, each summed in one
    order)."""
    _need_kernels()
    model = ModuleStack(lambda: lenet5(IMAGE, 10), IMAGE, 10, compiled=True)
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
            ref = model.member(params, m)(x.view(-1, *IMAGE))
            torch.testing.assert_close(one[m], ref, atol=1e-5, rtol=1e-5)


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
        "m = ModuleStack(lambda: cnn((4,), (1, 28, 28), 10), (1, 28, 28), 10, compiled=True);"
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
    model = ModuleStack(lambda: lenet5(IMAGE, 10), IMAGE, 10)

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
    model = ModuleStack(TinyCNN, IMAGE, small_splits.n_classes)
    three = engine.train(engine.Stack("s", model, [1, 2, 3], [4, 5, 6]), small_splits, cfg)
    one = engine.train(engine.Stack("s", model, [2], [5]), small_splits, cfg)
    for a, b in zip(three.params, one.params, strict=True):
        torch.testing.assert_close(a[1], b[0], atol=1e-5, rtol=1e-4)


def test_counts_of_a_module():
    model = ModuleStack(TinyCNN, IMAGE, 10)
    assert model.parameters_per_member() == sum(p.numel() for p in TinyCNN().parameters())
    # conv1 26x26x4 outputs x 9 taps, conv2 11x11x8 x 36, the head 200 x 10
    assert model.macs_per_image() == 26 * 26 * 4 * 9 + 11 * 11 * 8 * 36 + 200 * 10


@pytest.mark.parametrize(
    ("factory", "says"),
    [
        (lambda: nn.Sequential(nn.AlphaDropout(0.5), nn.Linear(784, 10)), "cannot draw per member"),
        (lambda: nn.Linear(784, 7), "must give [N, 10] logits"),
        (lambda: nn.Linear(100, 10), "fails on inputs [N, 784]"),
        (lambda: "not a module", "not an nn.Module"),
    ],
    ids=["alpha-dropout", "width", "forward-fails", "not-a-module"],
)
def test_modules_a_stack_cannot_run_are_one_clear_error(factory, says):
    with pytest.raises(ConfigError, match=None) as exc:
        ModuleStack(factory, (784,), 10)
    assert says in str(exc.value) and "\n" not in str(exc.value)


# --- BatchNorm per member, dropout inside your module, image-shaped inputs -----------------


def _bn_cnn() -> nn.Module:
    """The built-in bncnn:4,8: conv-BN-ReLU-pool blocks, a sequential net on the fast path."""
    return bncnn((4, 8), IMAGE, 10)


def _bn_dense() -> nn.Module:
    """A dense net with BatchNorm1d, on images it flattens itself: the fast path's dense BN."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32, bias=False), nn.BatchNorm1d(32),
                         nn.ReLU(), nn.Linear(32, 10))  # fmt: skip


def _bn_resnet() -> nn.Module:
    """resnet:8 at width 2: residual blocks, so no plan: vmap over functional_call."""
    return resnet(8, 2, IMAGE, 10)


def _bn_mbv2() -> nn.Module:
    """mbv2:4,8,8: a strided and a residual inverted block (depthwise groups, ReLU6): vmap."""
    return mbv2((4, 8, 8), IMAGE, 10)


def _in_double(splits):
    return dataclasses.replace(
        splits, **{k: getattr(splits, k).double() for k in ("x_train", "x_val", "x_test")}
    )


def _double(factory):
    def build():
        return factory().double()

    return build


@pytest.mark.parametrize(
    ("factory", "path"),
    [(_bn_cnn, "im2col"), (_bn_cnn, "compiled"), (_bn_dense, "im2col"),
     (_double(_bn_resnet), "vmap"), (_double(_bn_mbv2), "vmap")],
    ids=["bncnn-im2col", "bncnn-compiled", "dense-bn", "resnet-vmap-float64",
         "mbv2-vmap-float64"],
)  # fmt: skip
def test_batchnorm_members_equal_modules_trained_alone(small_splits, factory, path):
    """The oracle for buffers: every member equals the same module trained alone (train mode
    for its steps, eval mode for validation, `torch.optim.Adam`, same seed and batch order), in
    weights, running statistics, batch count and test predictions, with members stopping at
    different epochs. The residual net runs in float64: in float32 vmap's grouped convolutions
    sum in another order than a lone Conv2d, and a BN ResNet amplifies that drift to 1e-2 in an
    epoch (in float64 the stack equals the modules to 1e-15 after 15 steps; measured)."""
    cfg = dataclasses.replace(TrainConfig(), epochs=None, patience=1, max_epochs=10,
                              learning_rate=1e-2)  # fmt: skip
    double = path == "vmap"
    if double:
        small_splits = _in_double(small_splits)
    model = ModuleStack(factory, IMAGE, 10, compiled=path == "compiled")
    assert (model.plan is None) == (path == "vmap")
    assert any("running_mean" in n for n in model.buffer_names())
    if path == "compiled":
        _need_kernels()
        assert model.direct is not None
    seeds, shuffles = [3, 5, 8], [13, 21, 34]
    result = engine.train(engine.Stack("bn", model, seeds, shuffles), small_splits, cfg)
    epochs = []
    x = small_splits.x_test.view(-1, *IMAGE)
    atol = 1e-9 if double else 5e-3
    for m in range(3):
        alone, trained = _alone(factory, seeds[m], shuffles[m], small_splits, cfg)
        epochs.append(trained)
        stacked = model.member(result.params, m)
        assert not stacked.training
        for (name, a), (_, b) in zip(stacked.named_parameters(), alone.named_parameters(),
                                     strict=True):  # fmt: skip
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-2, msg=name)
        buffers = dict(alone.named_buffers())
        for name, a in stacked.named_buffers():
            if name.endswith("num_batches_tracked"):
                steps = math.ceil(len(small_splits.x_train) / cfg.batch_size)
                assert int(a) == int(buffers[name]) == trained * steps
            else:
                torch.testing.assert_close(a, buffers[name], atol=atol, rtol=1e-2, msg=name)
        with torch.no_grad():
            differ = stacked(x).argmax(1) != alone(x).argmax(1)
        assert int(differ.sum()) <= (0 if double else 3)  # of 1000 test images
    assert result.epochs == epochs
    assert len(set(epochs)) > 1, "scenario: the members must stop at different epochs"


def test_batchnorm_evaluation_uses_each_members_own_running_statistics():
    """In evaluation a stack's logits are each member's module in eval mode: its own running
    statistics, on every path (fast path on shared inputs, vmap)."""
    for factory in (_bn_cnn, _bn_resnet):
        model = ModuleStack(factory, IMAGE, 10)
        params = model.init([1, 2])
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():  # different running statistics per member
            for name, t in zip(model.tensor_names(), params, strict=True):
                if name.endswith("running_mean"):
                    t.uniform_(-0.2, 0.2, generator=gen)
                elif name.endswith("running_var"):
                    t.uniform_(0.5, 2.0, generator=gen)
        x = torch.rand(20, 784, generator=torch.Generator().manual_seed(0))
        logits = model.logits(params, x)
        for m in range(2):
            with torch.no_grad():
                ref = model.member(params, m)(x.view(-1, *IMAGE))
            torch.testing.assert_close(logits[m], ref, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(logits[0], logits[1])


class _Dropping(nn.Module):
    """Your own module with BatchNorm and dropout inside (elementwise and channel-wise)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.drop2d = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout2d(0.25)
        self.fc, self.drop = nn.Linear(4 * 13 * 13, 32), nn.Dropout(0.5)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        h = self.drop2d(F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)).flatten(1)
        return self.head(self.drop(torch.relu(self.fc(h))))


def test_dropout_inside_your_module_draws_from_each_members_own_stream(small_splits, monkeypatch):
    """Members draw different masks; a rerun draws the same (identical weights); a member's
    weights do not depend on its stack; a run resumed from a mid-training snapshot ends with
    the floats of an uninterrupted one, running statistics included; evaluation drops
    nothing."""
    from kdbench.engine.streams import Noise

    cfg = dataclasses.replace(TrainConfig(), epochs=2)
    # float64: a member alone against the same member in a stack of three is vmap over one
    # against over three (grouped convolutions), whose float32 drift BatchNorm amplifies
    small_splits = _in_double(small_splits)
    model = ModuleStack(_double(_Dropping), IMAGE, 10)
    assert model.random and model.plan is None
    masks = model._masks(Noise([1, 2]), 4)
    assert set(masks) == {"drop2d", "drop"}
    assert masks["drop2d"].shape == (2, 4, 4, 1, 1) and masks["drop"].shape == (2, 4, 32)
    assert not torch.equal(masks["drop"][0], masks["drop"][1])
    assert 0.3 < float(masks["drop"].mean()) < 0.7

    def train(seeds, shuffles, **kw):
        return engine.train(engine.Stack("d", model, seeds, shuffles), small_splits, cfg, **kw)

    first, again = train([1, 2, 3], [4, 5, 6]), train([1, 2, 3], [4, 5, 6])
    for a, b in zip(first.params, again.params, strict=True):
        assert torch.equal(a, b)
    alone = train([2], [5])
    for a, b in zip(first.params, alone.params, strict=True):
        torch.testing.assert_close(a[1], b[0], atol=1e-9, rtol=1e-9)
    plain = ModuleStack(lambda: _without_dropout(_Dropping()).double(), IMAGE, 10)
    kept = engine.train(engine.Stack("p", plain, [1], [4]), small_splits, cfg).params
    assert not torch.allclose(kept[0][0], first.params[0][0], atol=1e-3)  # the masks acted
    snaps = []
    monkeypatch.setattr(engine, "SNAPSHOT_SECONDS", 0.0)
    train([1, 2, 3], [4, 5, 6], snapshot=lambda snap: snaps.append(copy.deepcopy(snap)))
    resumed = train([1, 2, 3], [4, 5, 6], resume=snaps[0])  # cut after epoch 1
    assert snaps[0].state["epoch"] == 1
    for a, b in zip(first.params, resumed.params, strict=True):
        assert torch.equal(a, b)
    x = small_splits.x_test[:50]
    with torch.no_grad():
        ref = model.member(first.params, 0)(x.view(-1, *IMAGE))
    torch.testing.assert_close(model.logits(first.params, x)[0], ref)


def _without_dropout(module: nn.Module) -> nn.Module:
    module.drop2d, module.drop = nn.Identity(), nn.Identity()
    return module


def test_building_members_leaves_the_callers_random_state_alone():
    model = ModuleStack(TinyCNN, IMAGE, 10)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    params = model.init([1, 2])
    model.member(params, 0)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("lowering", ["im2col", "compiled"])
@pytest.mark.parametrize("batch", [16, 13])  # 13: the compiled path's padded batch lanes
@pytest.mark.parametrize("factory", [_bn_cnn, _bn_dense], ids=["bncnn", "dense-bn"])
def test_the_fast_paths_batchnorm_step_is_the_modules(factory, lowering, batch):
    """One training forward and backward on the fast path against each member's module in train
    mode: logits, gradients and the updated running statistics (the padded lanes of the compiled
    layout left out of the statistics)."""
    model = ModuleStack(factory, IMAGE, 10, compiled=lowering == "compiled")
    if lowering == "compiled":
        _need_kernels()
        if model.direct is None:  # a dense net has no convolution to compile
            assert factory is _bn_dense
            return
    plan = model.plan if lowering == "im2col" else model.direct
    params = model.init([1, 2, 3])
    n = len(model.trainable(params))
    members = [model.member(params, m).train() for m in range(3)]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, batch, 784, generator=gen)
    y = torch.randint(0, 10, (3, batch), generator=gen)
    leaves = [p.detach().requires_grad_() for p in params[:n]]
    logits = plan.run(leaves + params[n:], x, None, True)
    F.cross_entropy(logits.reshape(-1, 10), y.reshape(-1), reduction="sum").backward()
    for m, net in enumerate(members):
        ref = net(x[m].view(-1, *IMAGE))
        F.cross_entropy(ref, y[m], reduction="sum").backward()
        torch.testing.assert_close(logits[m], ref, atol=1e-5, rtol=1e-5)
        for leaf, p in zip(leaves, net.parameters(), strict=True):
            torch.testing.assert_close(leaf.grad[m], p.grad, atol=1e-4, rtol=1e-4)
        for stacked, own in zip(params[n:], net.buffers(), strict=True):
            torch.testing.assert_close(stacked[m], own, atol=1e-6, rtol=1e-5)
