"""What the engine trains: a family of same-shape models, built and stepped as one stack.

The engine (`trainer.train`) owns everything that is the same for every architecture: each
member's shuffling, its Adam state, its early stopping, its random streams, dropping a finished
member out of the stack. A `StackModel` owns what depends on the architecture: how M members are
built from their seeds, how they run (on their own batches, or all on shared inputs), one training
step, and how member m comes back as an ordinary `nn.Module`. The fully connected family
(`mlp.MLP`) is the first; another family is one subclass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import nn

Params = list[torch.Tensor]  # a stack's tensors, each with the members on its first axis


class StackModel(ABC):
    """One architecture, as a stack of members (the leading axis of every tensor in `Params`)."""

    @abstractmethod
    def init(self, seeds: Sequence[int], device: str | torch.device = "cpu") -> Params:
        """One member per seed; a member's weights depend only on its seed, never on the stack."""

    @abstractmethod
    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Logits `[M, B, classes]` from own batches `[M, B, ...]` or shared inputs `[N, ...]`."""

    @abstractmethod
    def step(
        self,
        params: Params,
        adam,
        x: torch.Tensor,
        loss_of: Callable[[torch.Tensor], torch.Tensor],
        dropout=None,
    ) -> torch.Tensor:
        """One training step of every member on its own batch `x`; updates `params` through
        `adam` and returns the per-member loss `[M]`."""

    @abstractmethod
    def member(self, params: Params, m: int) -> nn.Module:
        """Member `m` as an ordinary module with the same weights."""

    @abstractmethod
    def tensor_names(self) -> list[str]:
        """The checkpoint name of each tensor of `Params`, in order (safetensors keys)."""

    @abstractmethod
    def parameters_per_member(self) -> int:
        """Trainable parameters of one member."""

    @abstractmethod
    def macs_per_image(self) -> int:
        """Multiply-accumulates of one member's forward pass on one input."""

    def hidden_weights(self, params: Params) -> list[torch.Tensor]:
        """The tensors a max-norm constraint bounds, each `[M, units, fan_in...]`: one row per
        hidden unit (or filter) holding its incoming weights; the output layer is not bounded."""
        raise NotImplementedError(f"{self!r} has no max-norm constraint")

    @torch.no_grad()
    def max_norm_(self, params: Params, limit: float) -> None:
        """Scale every hidden unit's incoming weights down to L2 norm `limit` where they exceed
        it, in place (Hinton et al.'s constraint)."""
        for w in self.hidden_weights(params):
            norms = w.flatten(2).norm(dim=2).view(*w.shape[:2], *[1] * (w.dim() - 2))
            w.mul_(torch.where(norms > limit, limit / norms, torch.ones_like(norms)))

    @torch.no_grad()
    def logits(self, params: Params, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """`[M, N, classes]` logits on shared inputs, in chunks to bound memory."""
        parts = [self.forward(params, x[i : i + chunk]) for i in range(0, len(x), chunk)]
        return torch.cat(parts, 1)
