"""Built-in architectures by name: `mlp:H1,H2,…`, `lenet5`, `cnn:C1,C2,…`, `bncnn:C1,C2,…`,
`dscnn:C1,C2,…`, `resnet:DEPTH[,WIDTH]`, `mobilenetv2[:PERCENT]`; your own as an import string
(`package.module:Factory`) or, from Python, the factory itself.

A name becomes a `StackModel` for the data it will see (`build`): the fully connected family
keeps its hand-written fast path (`mlp.MLP`); every other net is a module stacked through
`modules.ModuleStack`, which hands it inputs shaped as images `[N, C, H, W]`. Every built-in
starts from Keras' defaults, as the paper's code did: Glorot-uniform weights, zero biases,
BatchNorm's scale 1 and shift 0. A conv net needs images: the dataset's shape (channels, height,
width) comes with it, and data without one is refused with the fix. A new family is one
function here, its name in `NAMES` and its branch in `_factory`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from kdbench.config import Config
from kdbench.data.datasets import image_of
from kdbench.engine.mlp import MLP
from kdbench.engine.modules import ModuleStack
from kdbench.engine.own_code import PYTHON, given, imported
from kdbench.engine.stack_model import StackModel
from kdbench.errors import ConfigError, did_you_mean

Image = tuple[int, int, int]  # (channels, height, width)


def _keras_init(module: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every conv and dense layer (Keras' default)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def lenet5(image: Image, n_classes: int) -> nn.Module:
    """LeNet-5 in its common modern form: 6 filters 5x5 padded to keep the size, 2x2 max-pool,
    16 filters 5x5, 2x2 max-pool, dense 120 and 84, ReLU throughout."""
    c, h, w = image
    side_h, side_w = (h // 2 - 4) // 2, (w // 2 - 4) // 2
    if side_h < 1 or side_w < 1:
        raise ConfigError(
            f"lenet5 needs images of at least 12x12 (got {h}x{w}); use cnn:… or mlp:…"
        )
    return _keras_init(nn.Sequential(
        nn.Identity(), nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * side_h * side_w, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, n_classes),
    ))  # fmt: skip


def cnn(
    channels: tuple[int, ...], image: Image, n_classes: int, batchnorm: bool = False
) -> nn.Module:
    """Blocks of an unpadded 3x3 conv with Ci filters, ReLU and 2x2 max-pool (Keras' defaults),
    then one dense head: the microcontroller-sized conv family. `batchnorm` (`bncnn`): each conv
    without bias, followed by BatchNorm (whose shift replaces the bias)."""
    c, h, w = image
    layers: list[nn.Module] = [nn.Identity()]  # where inputs were unflattened once
    for out in channels:
        conv = nn.Conv2d(c, out, 3, bias=not batchnorm)
        layers += [conv, nn.BatchNorm2d(out)] if batchnorm else [conv]
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        c, h, w = out, (h - 2) // 2, (w - 2) // 2
    if h < 1 or w < 1:
        raise ConfigError(
            f"{'bncnn' if batchnorm else 'cnn'}:{','.join(map(str, channels))} shrinks"
            f" {image[1]}x{image[2]} images to nothing (each block: 3x3 conv, then 2x2 pool);"
            " use fewer blocks"
        )
    return _keras_init(nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, n_classes)))


def bncnn(channels: tuple[int, ...], image: Image, n_classes: int) -> nn.Module:
    """`cnn` with BatchNorm: the sequential BN net of the conv fast path."""
    return cnn(channels, image, n_classes, batchnorm=True)


def dscnn(channels: tuple[int, ...], image: Image, n_classes: int) -> nn.Module:
    """A depthwise-separable conv net in the MLPerf Tiny (DS-CNN) style: a 3x3 conv with C1
    filters and stride 2, then per further Ci a depthwise 3x3 conv and a pointwise 1x1 conv with
    Ci filters (padded to keep the size, ReLU after each), then global average pooling and one
    dense head. Without the reference's BatchNorm (kept so, as its runs were trained)."""
    c, h, w = image
    if h < 3 or w < 3:
        raise ConfigError(f"dscnn needs images of at least 3x3 (got {h}x{w}); use mlp:…")
    first, *rest = channels
    layers: list[nn.Module] = [nn.Identity(), nn.Conv2d(c, first, 3, 2, 1), nn.ReLU()]
    c = first
    for out in rest:
        layers += [nn.Conv2d(c, c, 3, padding=1, groups=c), nn.ReLU(), nn.Conv2d(c, out, 1),
                   nn.ReLU()]  # fmt: skip
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes)]
    return _keras_init(nn.Sequential(*layers))


class _Basic(nn.Module):
    """A ResNet basic block: two 3x3 conv-BN pairs, ReLU between and after the sum; the
    shortcut a 1x1 conv-BN where the shape changes (He et al., option B)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def resnet(depth: int, width: int, image: Image, n_classes: int) -> nn.Module:
    """The CIFAR ResNet of He et al. (2016, section 4.2): depth 6n+2 (8, 14, 20, 32, ...), a
    3x3 stem of `width` filters, three stages of n basic blocks with width, 2x and 4x filters
    (stride 2 entering the second and third), global average pooling, one dense head."""
    if (depth - 2) % 6 or depth < 8:
        raise ConfigError(f"resnet:{depth} needs a depth of 6n+2 (8, 14, 20, 32, 44, 56)")
    n = (depth - 2) // 6
    layers: list[nn.Module] = [
        nn.Conv2d(image[0], width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
    ]
    c = width
    for stage, out in enumerate((width, 2 * width, 4 * width)):
        for block in range(n):
            layers.append(_Basic(c, out, 2 if stage and not block else 1))
            c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes)]
    return _keras_init(nn.Sequential(*layers))


class _Inverted(nn.Module):
    """A MobileNetV2 inverted residual: 1x1 expansion (t times), 3x3 depthwise, 1x1 linear
    projection, each with BatchNorm (ReLU6 after the first two); a residual sum where the
    shape is kept."""

    def __init__(self, c_in: int, c_out: int, stride: int, t: int):
        super().__init__()
        mid = c_in * t
        layers: list[nn.Module] = []
        if t != 1:
            layers += [nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6()]
        layers += [
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU6(), nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        ]  # fmt: skip
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


# (expansion t, channels c, blocks n, first stride s): Sandler et al. (2018), Table 2, with
# the stem's stride and the second stage's set to 1 for 28x28 and 32x32 inputs (as CIFAR ports do)
_MOBILENETV2 = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def _divisible(v: float, by: int = 8) -> int:
    """Channels rounded to a multiple of 8, never below 90% of `v` (the reference's rule)."""
    out = max(by, int(v + by / 2) // by * by)
    return out + by if out < 0.9 * v else out


def mobilenetv2(percent: int, image: Image, n_classes: int) -> nn.Module:
    """MobileNetV2 (Sandler et al., 2018) with width multiplier `percent`/100 (100: the
    paper's widths; 35, 50, 75 are the usual smaller ones): a 3x3 stem, the inverted residual
    stages, a 1x1 conv to 1280 channels (scaled only above 100%), global average pooling, one
    dense head."""
    alpha = percent / 100
    c = _divisible(32 * alpha)
    layers: list[nn.Module] = [
        nn.Conv2d(image[0], c, 3, 1, 1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU6(),
    ]
    for t, channels, n, stride in _MOBILENETV2:
        out = _divisible(channels * alpha)
        for i in range(n):
            layers.append(_Inverted(c, out, stride if i == 0 else 1, t))
            c = out
    last = _divisible(1280 * max(1.0, alpha))
    layers += [nn.Conv2d(c, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, n_classes)]  # fmt: skip
    return _keras_init(nn.Sequential(*layers))


def mbv2(channels: tuple[int, ...], image: Image, n_classes: int) -> nn.Module:
    """A MobileNetV2-style net for microcontrollers: a 3x3 conv-BN-ReLU6 stem with C1 filters
    and stride 2, then per further Ci one inverted residual block (expansion 6; the first 1, as
    in MobileNetV2) with stride 2 where the width grows, global average pooling and one dense
    head. MobileNetV2's blocks at a depth and width a 2-core study can afford."""
    first, *rest = channels
    layers: list[nn.Module] = [
        nn.Conv2d(image[0], first, 3, 2, 1, bias=False),
        nn.BatchNorm2d(first),
        nn.ReLU6(),
    ]
    c = first
    for i, out in enumerate(rest):
        layers.append(_Inverted(c, out, 2 if out > c else 1, 1 if i == 0 else 6))
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes)]
    return _keras_init(nn.Sequential(*layers))


def _numbers(name: str, text: str) -> tuple[int, ...]:
    if not re.fullmatch(r"\d+(,\d+)*", text) or any(int(v) < 1 for v in text.split(",")):
        raise ConfigError(
            f"architecture '{name}:{text}' needs whole numbers >= 1 after the colon, e.g."
            f" {name}:{'100,50' if name == 'mlp' else '4,8'}"
        )
    return tuple(int(v) for v in text.split(","))


NAMES = ("mlp", "lenet5", "cnn", "bncnn", "dscnn", "resnet", "mobilenetv2", "mbv2")


def build(
    spec: str, n_features: int, n_classes: int, image: Image | None, compiled: bool = False
) -> StackModel:
    """The stack of architecture `spec` for inputs of `n_features` values (`image`: their shape
    as images, or None) and `n_classes` classes; one ConfigError line for a bad name.
    `compiled`: a conv net may build the CPU's compiled kernels (training only: reading a run
    folder never builds native code)."""
    shape = image if image is not None else (n_features,)
    factory = given(spec)
    if factory is not None:
        return ModuleStack(factory, shape, n_classes, compiled)
    if spec.startswith(PYTHON):
        raise ConfigError(
            f"architecture '{spec}' was given from Python and cannot be imported here: pass the"
            f" factory again (kdbench.load(..., module={spec[len(PYTHON) :]}), or study(...,"
            " student=/teacher=) to resume), or make it importable as package.module:Factory"
        )
    name, sep, args = spec.partition(":")
    if name not in NAMES and ("." in name or (sep and args.isidentifier())):  # your own
        return ModuleStack(imported(spec), shape, n_classes, compiled)
    if name not in NAMES:
        raise ConfigError(
            f"unknown architecture '{spec}'{did_you_mean(name, NAMES)}; use mlp:H1,H2,…,"
            " lenet5, cnn:C1,C2,…, bncnn:C1,C2,…, dscnn:C1,C2,…, resnet:DEPTH[,WIDTH],"
            " mobilenetv2[:PERCENT], mbv2:C1,C2,… or your own as package.module:Factory"
        )
    if name == "mlp":
        return MLP([n_features, *_numbers(name, args), n_classes])
    if image is None:
        raise ConfigError(
            f"architecture '{spec}' is a conv net, and this data has no image shape; use an"
            " mlp:… architecture, or your own module that reshapes its inputs (a factory)"
        )
    return ModuleStack(_factory(name, sep, args, image, n_classes), image, n_classes, compiled)


def _factory(name: str, sep: str, args: str, image: Image, n_classes: int) -> _Factory:
    """A conv built-in's constructor, its sizes read from the name."""
    if name == "lenet5":
        if sep:
            raise ConfigError("architecture 'lenet5' takes no sizes; write lenet5")
        return _Factory(lenet5, image, n_classes)
    if name == "resnet":
        depth, *width = _numbers(name, args or "20")
        if len(width) > 1:
            raise ConfigError("architecture resnet takes DEPTH[,WIDTH], e.g. resnet:20,16")
        return _Factory(resnet, depth, width[0] if width else 16, image, n_classes)
    if name == "mobilenetv2":
        (percent, *more) = _numbers(name, args or "100")
        if more:
            raise ConfigError("architecture mobilenetv2 takes one width in percent, e.g. :50")
        return _Factory(mobilenetv2, percent, image, n_classes)
    fn = {"cnn": cnn, "bncnn": bncnn, "dscnn": dscnn, "mbv2": mbv2}[name]
    return _Factory(fn, _numbers(name, args), image, n_classes)


def for_role(
    arch: str | None,
    hidden,
    n_features: int,
    n_classes: int,
    image: Image | None,
    compiled: bool = False,
) -> StackModel:
    """A role's model: its architecture by name, or the fully connected net of its hidden sizes."""
    if arch is None:
        return MLP([n_features, *hidden, n_classes])
    return build(arch, n_features, n_classes, image, compiled)


@dataclass(frozen=True)
class RoleModels:
    """The stacks a study trains: its teachers, and its small networks (ensemble members and
    every student); `assistant`: the teacher assistant, where the run has one."""

    teacher: StackModel
    student: StackModel
    assistant: StackModel | None = None


def of_config(cfg: Config, n_features: int, n_classes: int, compiled: bool = False) -> RoleModels:
    """The models a configuration names, for data of `n_features` inputs and `n_classes`
    (`compiled`: for training, see `build`)."""
    image = image_of(cfg.data.dataset, cfg.data.arrays_image)
    m, a = cfg.model, cfg.distill.assistant_arch
    return RoleModels(
        for_role(m.teacher_arch, m.teacher_hidden, n_features, n_classes, image, compiled),
        for_role(m.student_arch, m.student_hidden, n_features, n_classes, image, compiled),
        None if a is None else build(a, n_features, n_classes, image, compiled),
    )


class _Factory:
    """A built-in's constructor with its arguments bound (named, so errors can say which)."""

    def __init__(self, fn: Callable[..., nn.Module], *args):
        self.fn, self.args = fn, args
        self.__qualname__ = fn.__name__

    def __call__(self) -> nn.Module:
        return self.fn(*self.args)
