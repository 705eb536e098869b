"""Keras-style early stopping for every member of a stack at once.

Per member: the best monitored value, the epochs since it improved (patience), the best epoch,
and divergence (a non-finite loss stops a member at once and is recorded, never hidden).
With fixed epochs (`patience=None`) members stop only at the last epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class EpochLog:
    """One epoch's per-member figures, rows in the order of the active members."""

    train_loss: torch.Tensor
    val_loss: torch.Tensor
    val_error: torch.Tensor

    def monitored(self, monitor: str) -> torch.Tensor:
        return {"val_loss": self.val_loss, "val_error": self.val_error,
                "train_loss": self.train_loss}[monitor]  # fmt: skip


@dataclass
class Decision:
    improved: torch.Tensor  # [active] bool: a new best (restore-best keeps these weights)
    stop: torch.Tensor  # [active] bool: finished (patience, divergence or last epoch)


@dataclass
class EarlyStopping:
    members: int
    monitor: str
    patience: int | None  # None: fixed epochs
    last_epoch: int
    best_value: torch.Tensor = field(init=False)
    wait: torch.Tensor = field(init=False)
    best_epoch: list[int] = field(init=False)
    epochs: list[int] = field(init=False)
    diverged: list[int | None] = field(init=False)
    history: list[list[dict[str, float]]] = field(init=False)

    def __post_init__(self) -> None:
        self.best_value = torch.full((self.members,), math.inf)
        self.wait = torch.zeros(self.members, dtype=torch.long)
        self.best_epoch = [0] * self.members
        self.epochs = [0] * self.members
        self.diverged = [None] * self.members
        self.history = [[] for _ in range(self.members)]

    def update(self, epoch: int, active: torch.Tensor, log: EpochLog) -> Decision:
        """Record epoch `epoch` of the members `active` (ids, CPU) and decide who stops."""
        monitored = log.monitored(self.monitor)
        bad = ~(torch.isfinite(log.train_loss) & torch.isfinite(log.val_loss))
        improved = (monitored < self.best_value[active]) & ~bad
        for j, m in enumerate(active.tolist()):
            self.epochs[m] = epoch
            self.history[m].append(
                {
                    "epoch": epoch,
                    "train_loss": float(log.train_loss[j]),
                    "val_loss": float(log.val_loss[j]),
                    "val_error": float(log.val_error[j]),
                }
            )
            if bool(bad[j]):
                self.diverged[m] = epoch
            elif bool(improved[j]):
                self.best_value[m], self.best_epoch[m], self.wait[m] = monitored[j], epoch, 0
            else:
                self.wait[m] += 1
        stop = bad | (epoch == self.last_epoch)
        if self.patience is not None:
            stop |= self.wait[active] >= self.patience
        return Decision(improved, stop)

    def restorable(self) -> torch.Tensor:
        """Ids of the members whose best weights restore-best puts back (not diverged)."""
        ok = [self.best_epoch[m] > 0 and self.diverged[m] is None for m in range(self.members)]
        return torch.tensor(ok).nonzero().squeeze(1)
