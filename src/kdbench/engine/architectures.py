"""Built-in architectures by name: `mlp:H1,H2,…`, `lenet5`, `cnn:C1,C2,…`, `dscnn:C1,C2,…`;
your own as an import string (`package.module:Factory`) or, from Python, the factory itself.

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


def dscnn(channels: tuple[int, ...], image: Image, n_classes: int) -> nn.Module:
    """A depthwise-separable conv net in the MLPerf Tiny (DS-CNN) style: a 3x3 conv with C1
    filters and stride 2, then per further Ci a depthwise 3x3 conv and a pointwise 1x1 conv with
    Ci filters (padded to keep the size, ReLU after each), then global average pooling and one
    dense head. Without the reference's BatchNorm, which a stack cannot keep per member."""
    c, h, w = image
    if h < 3 or w < 3:
        raise ConfigError(f"dscnn needs images of at least 3x3 (got {h}x{w}); use mlp:…")
    first, *rest = channels
    layers: list[nn.Module] = [nn.Unflatten(1, image), nn.Conv2d(c, first, 3, 2, 1), nn.ReLU()]
    c = first
    for out in rest:
        layers += [nn.Conv2d(c, c, 3, padding=1, groups=c), nn.ReLU(), nn.Conv2d(c, out, 1),
                   nn.ReLU()]  # fmt: skip
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


NAMES = ("mlp", "lenet5", "cnn", "dscnn")
PYTHON = "python:"  # a factory given from Python that no other process can import
_GIVEN: dict[str, Callable[[], nn.Module]] = {}  # those factories, in this process


def setting_of(factory: Callable[[], nn.Module]) -> str:
    """The architecture setting that names `factory` in config.json: its import string where
    another process can import it back (then every command reads the folder), else
    `python:<name>`, which needs the factory given again where the folder is read
    (`kdbench.load(..., module=Factory)`, `study(..., student=Factory)` to resume)."""
    if not callable(factory) or isinstance(factory, nn.Module):
        raise ConfigError(
            f"an architecture from Python must be a factory (a class or function returning a"
            f" fresh nn.Module), got {type(factory).__name__}; pass the class, not an instance"
        )
    module, name = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if module and module != "__main__" and name.isidentifier():
        try:
            if getattr(importlib.import_module(module), name, None) is factory:
                return f"{module}:{name}"
        except ImportError:
            pass
    setting = PYTHON + getattr(factory, "__name__", type(factory).__name__)
    give(setting, factory)
    return setting


def give(setting: str, factory: Callable[[], nn.Module]) -> None:
    """Make `setting` (an import string or `python:<name>`) build with `factory` in this
    process."""
    _GIVEN[setting] = factory


def build(spec: str, n_features: int, n_classes: int, image: Image | None) -> StackModel:
    """The stack of architecture `spec` for inputs of `n_features` values (`image`: their shape
    as images, or None) and `n_classes` classes; one ConfigError line for a bad name."""
    if spec in _GIVEN:
        return ModuleStack(_GIVEN[spec], n_features, n_classes)
    if spec.startswith(PYTHON):
        raise ConfigError(
            f"architecture '{spec}' was given from Python and cannot be imported here: pass the"
            f" factory again (kdbench.load(..., module={spec[len(PYTHON) :]}), or study(...,"
            " student=/teacher=) to resume), or make it importable as package.module:Factory"
        )
    name, sep, args = spec.partition(":")
    if name not in NAMES and ("." in name or (sep and args.isidentifier())):  # your own
        return ModuleStack(imported(spec), n_features, n_classes)
    if name not in NAMES:
        raise ConfigError(
            f"unknown architecture '{spec}'{did_you_mean(name, NAMES)}; use mlp:H1,H2,…,"
            " lenet5, cnn:C1,C2,…, dscnn:C1,C2,… or your own as package.module:Factory"
        )
    if name == "mlp":
        return MLP([n_features, *_numbers(name, args), n_classes])
    if image is None:
        raise ConfigError(
            f"architecture '{spec}' is a conv net, and this data has no image shape; use an"
            " mlp:… architecture, or your own module that reshapes its inputs (a factory)"
        )
    factory: Callable[[], nn.Module]
    if name == "lenet5":
        if sep:
            raise ConfigError("architecture 'lenet5' takes no sizes; write lenet5")
        factory = _Factory(lenet5, image, n_classes)
    elif name == "cnn":
        factory = _Factory(cnn, _numbers(name, args), image, n_classes)
    else:
        factory = _Factory(dscnn, _numbers(name, args), image, n_classes)
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
