"""Your training recipe: SGD (momentum, Nesterov, weight decay), Adam with weight decay, the
cosine and step learning-rate schedules and crop/flip augmentation, each member against the same
net trained alone with `torch.optim.SGD`/`Adam`, `torch.optim.lr_scheduler` and crops and flips
written out here image by image (same seeds and batch order); snapshots resume to the same
floats; bad settings are one line."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
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
    "sgd-cosine-crop-flip": dict(optimizer="sgd", lr_schedule="cosine", learning_rate=0.05,
                                 augment="crop,flip", crop_padding=3),
    "adam-crop": dict(augment="crop", crop_padding=2),
    "adam-flip": dict(augment="flip"),
}  # fmt: skip


def _augmented(x, u, pad: int, flip: bool, side: int = 28):
    """Image by image: zero-pad, crop at (row u0, column u1) of the 2 * pad + 1 places, mirror
    if u2 < 1/2. `u`: the member's three uniforms per image."""
    out = []
    for img, (a, b, c) in zip(x.view(-1, 1, side, side), u.tolist(), strict=True):
        padded = F.pad(img, (pad, pad, pad, pad))
        dy, dx = min(int(a * (2 * pad + 1)), 2 * pad), min(int(b * (2 * pad + 1)), 2 * pad)
        crop = padded[:, dy : dy + side, dx : dx + side]
        out.append(torch.flip(crop, dims=[2]) if flip and c < 0.5 else crop)
    return torch.stack(out).reshape(x.shape)


def _alone(model, seed, shuffle, splits, cfg: TrainConfig):
    """The plain way: the member as a module, torch's optimiser and scheduler, stepped per
    epoch; train mode for steps; augmentation from its own generator (stream 4 of its shuffle
    seed)."""
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
    stream = int(np.random.SeedSequence([shuffle, 4]).generate_state(1)[0])
    aug = torch.Generator().manual_seed(stream)
    kinds = (cfg.augment or "").split(",")
    n = len(splits.x_train)
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            x = splits.x_train[idx]
            if cfg.augment:
                # drawn step by step: the engine draws an epoch at once, the same floats
                u = torch.rand((len(idx), 3), generator=aug, dtype=torch.float32)
                pad = cfg.crop_padding if "crop" in kinds else 0
                x = _augmented(x, u, pad, "flip" in kinds)
            loss = F.cross_entropy(net(x.view(-1, *shape)), splits.y_train[idx])
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
    small_splits = dataclasses.replace(small_splits, image=(1, 28, 28))
    seeds, shuffles = [3, 5], [13, 21]
    result = engine.train(engine.Stack("r", model, seeds, shuffles), small_splits, cfg)
    for m in range(2):
        alone = _alone(model, seeds[m], shuffles[m], small_splits, cfg)
        stacked = model.member(result.params, m)
        for a, b in zip(stacked.state_dict().values(), alone.state_dict().values(),
                        strict=True):  # fmt: skip
            torch.testing.assert_close(a, b, atol=2e-5 if arch == "mlp:32" else 1e-12, rtol=1e-4)


def test_a_recipe_resumes_from_a_snapshot_to_the_same_floats(small_splits, monkeypatch):
    cfg = dataclasses.replace(TrainConfig(), epochs=3, **RECIPES["sgd-nesterov-wd-cosine"],
                              augment="crop,flip")  # fmt: skip
    small_splits = dataclasses.replace(small_splits, image=(1, 28, 28))
    model = build("mlp:32", 784, 10, None)
    whole = engine.train(engine.Stack("r", model, [1, 2], [3, 4]), small_splits, cfg)
    snaps = []
    monkeypatch.setattr(engine, "SNAPSHOT_SECONDS", 0.0)
    engine.train(engine.Stack("r", model, [1, 2], [3, 4]), small_splits, cfg,
                 snapshot=lambda s: snaps.append(copy.deepcopy(s)))  # fmt: skip
    assert any(k.startswith("sgd.momentum.") for k in snaps[0].tensors)
    assert any(k.startswith("rng.augment.") for k in snaps[0].tensors)
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
        (dict(augment="rotate"), "augmentation must be one of crop, flip"),
        (dict(teacher_updates="joint", optimizer="sgd"), "trains the teachers' copies with Adam"),
        (dict(teacher_updates="joint", lr_schedule="cosine"), "--teacher-updates frozen"),
        (dict(augment=","), "--augment needs crop, flip or crop,flip"),
        (dict(augment="crop", crop_padding=0), "crop padding must be a whole number"),
    ],
)
def test_bad_recipes_are_one_line(over, says):
    with pytest.raises(ConfigError) as exc:
        Config().with_overrides(**over)  # every Config is validated when made
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_augmentation_changes_training_and_each_member_keeps_its_own_stream(small_splits):
    """Crops and flips change what a member learns (not a no-op), and a member's augmentation
    does not depend on the stack it shares: alone or beside two others, the same weights."""
    splits = dataclasses.replace(small_splits, image=(1, 28, 28))
    cfg = dataclasses.replace(TrainConfig(), epochs=2, augment="crop,flip")
    model = build("mlp:32", 784, 10, None)
    plain = engine.train(engine.Stack("r", model, [3], [13]), splits,
                         dataclasses.replace(cfg, augment=None))  # fmt: skip
    alone = engine.train(engine.Stack("r", model, [3], [13]), splits, cfg)
    shared = engine.train(engine.Stack("r", model, [7, 3, 9], [1, 13, 2]), splits, cfg)
    assert not torch.allclose(plain.params[0], alone.params[0], atol=1e-3)
    for a, b in zip(alone.params, shared.params, strict=True):
        torch.testing.assert_close(a[0], b[1], atol=2e-5, rtol=1e-4)


def test_augmenting_rows_that_are_not_images_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from kdbench.cli.app import app

    rng = np.random.default_rng(0)
    path = tmp_path / "rows.npz"
    np.savez(path, x_train=rng.random((300, 12), dtype=np.float32),
             y_train=np.arange(300) % 3, x_test=rng.random((60, 12), dtype=np.float32),
             y_test=np.arange(60) % 3)  # fmt: skip
    out = tmp_path / "run"
    got = CliRunner().invoke(
        app, ["reproduce", "--data", str(path), "--augment", "flip", "--out", str(out),
              "--repeats", "2", "--members", "2", "--epochs", "1", "--quiet"],
    )  # fmt: skip
    assert got.exit_code == 2, got.output
    lines = [ln for ln in got.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--augment crops and flips images" in lines[0], got.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("image", "pad", "flip"),
    [((1, 28, 28), 3, True), ((3, 32, 32), 4, True), ((1, 8, 8), 2, False), ((2, 5, 7), 6, True)],
)
def test_the_compiled_crops_equal_torchs_gathers(image, pad, flip):
    """The CPU kernel (`direct_conv.cpp: crop_flip`) and the torch path other devices take move
    the same pixels: equal floats, padding wider than the image included."""
    from kdbench.engine import native
    from kdbench.engine.streams import Augment, Augmentation

    if native.kernels() is None:
        pytest.skip("no C++ compiler here: only the torch path runs")
    spec = Augmentation(image, pad, flip)
    kernel, torch_path = Augment(spec, [1, 2, 3]), Augment(spec, [1, 2, 3])
    x = torch.rand(3, 40, int(np.prod(image)), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        kernel.begin_epoch(120), torch_path.begin_epoch(120)
        for at in range(0, 120, 40):
            u = torch_path.u[:, at : at + 40]
            assert torch.equal(kernel(x, at), torch_path.gathered(x, u))


def test_frozen_teachers_see_each_students_own_augmented_images(small_splits):
    """With --augment, a student's soft targets are its teachers' outputs on the very crops and
    flips it trains on (consistent views): `FrozenCopies` in `TrainedTeachers` against each
    member module in eval mode on that student's batch, the ensemble's targets the mean of the
    members' softened probabilities (written out); students retiring drop their rows."""
    from kdbench.engine.losses import PaperKD
    from kdbench.engine.streams import Augment, Augmentation
    from kdbench.engine.teachers import FrozenCopies, TrainedTeachers

    image, temperature, k = (1, 28, 28), 4.0, 2
    model = ModuleStack(lambda: bncnn((4,), image, 10), image, 10)
    params = model.init([1, 2, 3, 4])  # two students' ensembles of two
    for p in params:  # running statistics away from their start, so eval mode matters
        p.add_(0.1 * torch.randn_like(p)) if p.is_floating_point() else None
    teachers = TrainedTeachers([FrozenCopies(model, params, [0, 1], k)],
                               PaperKD(head="logits", ensemble="probs").targets,
                               temperature)  # fmt: skip
    teachers.begin_epoch(torch.arange(2))
    batch = small_splits.x_train[:32].expand(2, -1, -1)
    augment = Augment(Augmentation(image, 3, True), [5, 6])
    augment.begin_epoch(32)
    x = augment(batch, 0)  # each student its own crops
    assert not torch.equal(x[0], x[1])
    got = teachers.train_targets(x, torch.zeros(2, 32, dtype=torch.long))
    for s in range(2):
        with torch.no_grad():
            probs = [F.softmax(model.member(params, s * k + j).eval()(x[s].view(-1, *image))
                               / temperature, dim=1) for j in range(k)]  # fmt: skip
        torch.testing.assert_close(got[s], sum(probs) / k)
    teachers.retire(torch.tensor([True, False]))
    teachers.begin_epoch(torch.tensor([1]))
    again = teachers.train_targets(x[1:], torch.zeros(1, 32, dtype=torch.long))
    torch.testing.assert_close(again[0], got[1])


def test_an_epochs_uniforms_are_the_floats_drawn_step_by_step():
    """`Augment.begin_epoch` draws an epoch's uniforms at once; a member's stream gives the
    same floats, and ends in the same state, as a draw per step (runs made with per-step draws
    reproduce, and a snapshot taken at an epoch's end resumes either way)."""
    from kdbench.engine.streams import Augment, Augmentation

    augment = Augment(Augmentation((1, 28, 28), 4, True), [7, 8])
    augment.begin_epoch(100)
    for m, seed in enumerate([7, 8]):
        gen = torch.Generator().manual_seed(seed)
        steps = torch.cat([torch.rand((min(32, 100 - at), 3), generator=gen)
                           for at in range(0, 100, 32)])  # fmt: skip
        assert torch.equal(augment.u[m], steps)
        assert torch.equal(augment.generators[m].get_state(), gen.get_state())
