"""Built-in architectures by name: `mlp:H1,H2,…`, `lenet5`, `cnn:C1,C2,…`.

A name becomes a `StackModel` for the data it will see (`build`): the fully connected family
keeps its hand-written fast path (`mlp.MLP`); the conv nets are modules stacked through
`modules.ModuleStack`. Every built-in starts from Keras' defaults, as the paper's code did:
Glorot-uniform weights, zero biases. A conv net needs images: the dataset's shape (channels,
height, width) comes with it, and data without one is refused with the fix.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from kdbench.config import Config
from kdbench.data.datasets import IMAGES
from kdbench.engine.mlp import MLP
from kdbench.engine.modules import ModuleStack
from kdbench.engine.stack_model import StackModel
from kdbench.errors import ConfigError, did_you_mean

Image = tuple[int, int, int]  # (channels, height, width)


def _keras_init(module: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every conv and dense layer (Keras' default)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
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
        nn.Unflatten(1, image), nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * side_h * side_w, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, n_classes),
    ))  # fmt: skip


def cnn(channels: tuple[int, ...], image: Image, n_classes: int) -> nn.Module:
    """Blocks of an unpadded 3x3 conv with Ci filters, ReLU and 2x2 max-pool (Keras' defaults),
    then one dense head: the microcontroller-sized conv family."""
    c, h, w = image
    layers: list[nn.Module] = [nn.Unflatten(1, image)]
    for out in channels:
        layers += [nn.Conv2d(c, out, 3), nn.ReLU(), nn.MaxPool2d(2)]
        c, h, w = out, (h - 2) // 2, (w - 2) // 2
    if h < 1 or w < 1:
        raise ConfigError(
            f"cnn:{','.join(map(str, channels))} shrinks {image[1]}x{image[2]} images to nothing"
            " (each block: 3x3 conv, then 2x2 pool); use fewer blocks"
        )
    return _keras_init(nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, n_classes)))


def _numbers(name: str, text: str) -> tuple[int, ...]:
    if not re.fullmatch(r"\d+(,\d+)*", text) or any(int(v) < 1 for v in text.split(",")):
        raise ConfigError(
            f"architecture '{name}:{text}' needs whole numbers >= 1 after the colon, e.g."
            f" {name}:{'100,50' if name == 'mlp' else '4,8'}"
        )
    return tuple(int(v) for v in text.split(","))


NAMES = ("mlp", "lenet5", "cnn")


def build(spec: str, n_features: int, n_classes: int, image: Image | None) -> StackModel:
    """The stack of architecture `spec` for inputs of `n_features` values (`image`: their shape
    as images, or None) and `n_classes` classes; one ConfigError line for a bad name."""
    name, sep, args = spec.partition(":")
    if name not in NAMES and ("." in name or (sep and args.isidentifier())):  # your own
        return ModuleStack(imported(spec), n_features, n_classes)
    if name not in NAMES:
        raise ConfigError(
            f"unknown architecture '{spec}'{did_you_mean(name, NAMES)}; use mlp:H1,H2,…,"
            " lenet5, cnn:C1,C2,… or your own as package.module:Factory"
        )
    if name == "mlp":
        return MLP([n_features, *_numbers(name, args), n_classes])
    if image is None:
        raise ConfigError(
            f"architecture '{spec}' is a conv net, and this data has no image shape; use an"
            " mlp:… architecture, or give the image shape of your arrays"
        )
    factory: Callable[[], nn.Module]
    if name == "lenet5":
        if sep:
            raise ConfigError("architecture 'lenet5' takes no sizes; write lenet5")
        factory = _Factory(lenet5, image, n_classes)
    else:
        factory = _Factory(cnn, _numbers(name, args), image, n_classes)
    return ModuleStack(factory, n_features, n_classes)


def imported(spec: str) -> Callable[[], nn.Module]:
    """Your own architecture from an import string, `package.module:Factory` (uvicorn's and
    Hydra's convention): a class or function that returns a fresh nn.Module taking the dataset's
    inputs. It is imported again wherever the run folder is read, so it must stay importable."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"architecture '{spec}': cannot import {module_name} ({exc}); put it on PYTHONPATH"
        ) from None
    factory = getattr(module, attr, None) if attr else None
    if not callable(factory):
        raise ConfigError(
            f"architecture '{spec}': {module_name} has no callable {attr or '(name after :)'};"
            " write package.module:Factory"
        )
    return factory


def for_role(
    arch: str | None, hidden, n_features: int, n_classes: int, image: Image | None
) -> StackModel:
    """A role's model: its architecture by name, or the fully connected net of its hidden sizes."""
    if arch is None:
        return MLP([n_features, *hidden, n_classes])
    return build(arch, n_features, n_classes, image)


@dataclass(frozen=True)
class RoleModels:
    """The stacks a study trains: its teachers, and its small networks (ensemble members and
    every student)."""

    teacher: StackModel
    student: StackModel


def of_config(cfg: Config, n_features: int, n_classes: int) -> RoleModels:
    """The models a configuration names, for data of `n_features` inputs and `n_classes`."""
    image = IMAGES.get(cfg.data.dataset)
    m = cfg.model
    return RoleModels(
        for_role(m.teacher_arch, m.teacher_hidden, n_features, n_classes, image),
        for_role(m.student_arch, m.student_hidden, n_features, n_classes, image),
    )


class _Factory:
    """A built-in's constructor with its arguments bound (named, so errors can say which)."""

    def __init__(self, fn: Callable[..., nn.Module], *args):
        self.fn, self.args = fn, args
        self.__qualname__ = fn.__name__

    def __call__(self) -> nn.Module:
        return self.fn(*self.args)
