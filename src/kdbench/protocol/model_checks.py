"""What a run checks of its settings and models before it touches a folder: the device and
the loss (`check`), then the architectures against the data, the memory they need, and your
own modules tried for what a stack needs (`check_models`, `probe`)."""

from __future__ import annotations

from functools import partial

import torch

from kdbench.config import Config
from kdbench.data import datasets as data
from kdbench.engine import optim
from kdbench.engine.architectures import of_config
from kdbench.engine.losses import loss_class
from kdbench.engine.modules import dropout_refused
from kdbench.engine.objectives import Batch, HardLabels
from kdbench.engine.streams import Noise
from kdbench.errors import ConfigError
from kdbench.protocol import memory, plans


def check(cfg: Config) -> None:
    """Settings that need torch to check: the device, and the distillation loss's name."""
    loss_class(cfg.distill.loss)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is visible; use --device cpu"
        )


def check_models(cfg: Config, splits: data.Splits) -> None:
    """The architectures against the data (a bad name or a conv net the images do not fit is
    one line), and the teacher's dropout against what its family can drop; then what they
    train with is built (the record of which conv path ran comes from it)."""
    models = of_config(cfg, splits.n_features, splits.n_classes, compiled=cfg.device == "cpu")
    memory.check(cfg, plans.stacks(cfg, models))
    dropout = cfg.model.teacher_dropout or cfg.model.teacher_input_dropout
    if dropout and not models.teacher.droppable:
        raise ConfigError(dropout_refused(models.teacher))
    for model in (models.teacher, models.student, models.assistant):
        if model is not None:
            model.prepare()
    for model, what, arch in ((models.teacher, "teacher", cfg.model.teacher_arch),
                              (models.student, "student", cfg.model.student_arch),
                              (models.assistant, "assistant", cfg.distill.assistant_arch),
                              ):  # fmt: skip
        if arch is not None:  # the built-in families are tested; yours are tried here
            probe(model, cfg, splits, f"{what} architecture {arch}")


def probe(model, cfg: Config, splits: data.Splits, what: str) -> None:
    """What a stack needs of a model, tried on two members and two images before anything is
    written, so it fails in one line here and not mid-run: float32 weights, and one training
    step of the members side by side (torch.func.vmap traces your forward)."""
    params = model.init([0, 1])
    for name, p in zip(model.tensor_names(), params, strict=True):
        if p.is_floating_point() and p.dtype != torch.float32:
            raise ConfigError(
                f"the {what} has {name} in {p.dtype}; kdbench trains float32 (as the data"
                " is): build the module in float32"
            )
    x = splits.x_train[:2].unsqueeze(0).expand(2, -1, -1).contiguous()
    y = splits.y_train[:2].unsqueeze(0).expand(2, -1).contiguous()
    batch = Batch(x, y, torch.zeros(2, 2, dtype=torch.long))
    opt = optim.make(cfg.train, model.trainable(params))
    noise = Noise([0, 1]) if model.random else None
    try:
        model.step(params, opt, x, partial(HardLabels().loss, batch=batch), None, noise)
    except ConfigError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(
            f"the {what} fails when kdbench trains members side by side ({type(exc).__name__}:"
            f" {first[:160]}); avoid .item(), Python branches on tensor values and in-place"
            " changes of its input in forward"
        ) from None
