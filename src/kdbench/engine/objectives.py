"""What a stack minimises and what its early stopping watches.

The engine trains every stack the same way and asks its `Objective` for the per-member loss of
each batch, for the validation loss early stopping may watch, and lets it run its own hooks
(teachers trained along with their students step after the students' backward pass). Hard-label
training and distillation are the two objectives; a new distillation *loss* is a
`distill.DistillationLoss`, a new source of targets a `teachers.Teachers`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from kdbench.engine.losses import DistillationLoss, cross_entropy, smoothed_cross_entropy
from kdbench.engine.teachers import Teachers


@dataclass
class Batch:
    """Each member's own minibatch."""

    x: torch.Tensor  # [M, B, in]
    labels: torch.Tensor  # [M, B]
    index: torch.Tensor  # [M, B]: rows of the training set


class Objective(ABC):
    """One stack's training objective. Instances hold per-training state: use one per stack."""

    members: int | None = None  # how many members it is built for (None: any)

    def begin_epoch(self, active: torch.Tensor, epoch: int = 1) -> None:  # noqa: B027
        """`active`: ids of the members training this epoch (on the device), in row order;
        `epoch`: which (from 1). An optional hook."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Per-member training loss `[M]`, differentiable in `logits` `[M, B, C]`."""

    @abstractmethod
    def validation_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        """Per-member validation loss `[M]` (what `monitor = val_loss` watches) of `logits`
        `[M, N, C]` on the validation images `x` `[N, in]`."""

    def after_step(self) -> None:  # noqa: B027 (optional hook)
        """After every step's backward pass and student update."""

    def retire(self, stop: torch.Tensor) -> None:  # noqa: B027 (optional hook)
        """The members at the rows where `stop` is true have finished."""


class HardLabels(Objective):
    """Cross-entropy on the hard labels, for training and validation."""

    def loss(self, logits, batch):
        return cross_entropy(logits, batch.labels)

    def validation_loss(self, logits, labels, x):
        return cross_entropy(logits, labels)


def _pick(value: float | torch.Tensor, active: torch.Tensor) -> float | torch.Tensor:
    return value.to(active.device)[active] if isinstance(value, torch.Tensor) else value


class SmoothedLabels(HardLabels):
    """Cross-entropy on label-smoothed hard labels, for training and validation: the
    label-smoothing control. `epsilon`: one value, or one per member."""

    def __init__(self, epsilon: float | torch.Tensor):
        self.epsilon = epsilon
        self._eps: float | torch.Tensor = epsilon

    def begin_epoch(self, active, epoch=1):
        self._eps = _pick(self.epsilon, active)

    def loss(self, logits, batch):
        return smoothed_cross_entropy(logits, batch.labels, self._eps)

    def validation_loss(self, logits, labels, x):
        return smoothed_cross_entropy(logits, labels, self._eps)


@dataclass
class Distillation(Objective):
    """A distillation loss against the targets of `teachers`. `temperature` and `alpha` are one
    value, or one per member (a sweep's grid points trained as one stack). Early stopping
    watches the combined loss (`monitor = combined`, Keras) or the hard-label CE (`hard`)."""

    loss_fn: DistillationLoss
    teachers: Teachers
    temperature: float | torch.Tensor
    alpha: float | torch.Tensor
    monitor: str = "combined"
    members: int | None = None
    _settings: tuple = field(default=(), init=False, repr=False)
    _epoch: int = field(default=1, init=False, repr=False)

    def begin_epoch(self, active, epoch=1):
        self.teachers.begin_epoch(active)
        self._settings = (_pick(self.temperature, active), _pick(self.alpha, active))
        self._epoch = epoch

    def loss(self, logits, batch):
        targets = self.teachers.train_targets(batch.x, batch.index)
        return self.loss_fn(logits, batch.labels, targets, *self._settings, epoch=self._epoch)

    def validation_loss(self, logits, labels, x):
        if self.monitor == "hard":
            return cross_entropy(logits, labels)
        return self.loss_fn(logits, labels, self.teachers.val_targets(x), *self._settings)

    def after_step(self):
        self.teachers.after_step()

    def retire(self, stop):
        self.teachers.retire(stop)
