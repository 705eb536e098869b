"""What the engine trains: a family of same-shape models, built and stepped as one stack.

The engine (`trainer.train`) owns everything that is the same for every architecture: each
member's shuffling, its Adam state, its early stopping, its random streams, dropping a finished
member out of the stack. A `StackModel` owns what depends on the architecture: how M members are
built from their seeds, how they run (on their own batches, or all on shared inputs), one training
step, how member m comes back as an ordinary `nn.Module`, and what one member costs. Every caller
(trainer, checkpoints, verification, load, export, latency, costs, diagnose) goes through this
interface and none asks which family it holds. The fully connected family (`mlp.MLP`) and any
`nn.Module` (`modules.ModuleStack`) are the two; another family is one subclass.

A stack's tensors (`Params`) are its trainable tensors followed by its buffers (BatchNorm's
running statistics, say), each with the members on its first axis: `tensor_names()` names them
all, in that order, and `buffer_names()` the trailing buffers, which Adam never sees.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

Params = list[torch.Tensor]  # a stack's tensors, each with the members on its first axis


@dataclass(frozen=True)
class Size:
    """What one member is made of, for the resources table: its parameters, multiply-accumulates
    per input, and, for int8 storage, its weight tensors (matrices and filters, int8) against
    the rest (biases, normalisation scales: float32)."""

    params: int
    macs: int
    weights: int  # parameters in weight tensors (2-D or more)
    layers: int  # weight tensors (each gets a scale and a zero point in int8)

    @property
    def other(self) -> int:
        return self.params - self.weights


class StackModel(ABC):
    """One architecture, as a stack of members (the leading axis of every tensor in `Params`).
    `input_shape` is one input's shape as a member module takes it: `(features,)` for a fully
    connected net, `(channels, height, width)` for images."""

    input_shape: tuple[int, ...]

    @abstractmethod
    def init(self, seeds: Sequence[int], device: str | torch.device = "cpu") -> Params:
        """One member per seed; a member's weights depend only on its seed, never on the stack,
        and building them leaves the caller's random state as it was."""

    @abstractmethod
    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Evaluation-mode logits `[M, B, classes]` from own batches `[M, B, features]` or
        shared inputs `[N, features]` (the dataset's flat rows; the family shapes them)."""

    @abstractmethod
    def step(
        self,
        params: Params,
        opt,
        x: torch.Tensor,
        loss_of: Callable[[torch.Tensor], torch.Tensor],
        dropout=None,
        noise=None,
    ) -> torch.Tensor:
        """One training step of every member on its own batch `x`; updates the trainable
        tensors through `opt` (an `optim.StackOptimizer`) and the buffers in place (each member
        its own), and returns the per-member loss `[M]`. `dropout`: the engine's dropout
        (`streams.Dropout`); `noise`: each member's own random stream for randomness inside the
        model (`streams.Noise`)."""

    @abstractmethod
    def member(self, params: Params, m: int) -> nn.Module:
        """Member `m` as an ordinary module with the same weights and buffers, in eval mode."""

    @abstractmethod
    def tensor_names(self) -> list[str]:
        """The checkpoint name of each tensor of `Params`, in order (safetensors keys)."""

    def buffer_names(self) -> list[str]:
        """The trailing tensors of `Params` that are buffers, not trained by Adam."""
        return []

    def trainable(self, params: Params) -> Params:
        """The tensors Adam updates: all but the trailing buffers."""
        return params[: len(params) - len(self.buffer_names())]

    def prepare(self) -> None:  # noqa: B027 (optional hook)
        """Before training: build what the family trains with (the conv path's compiled
        kernels), so the run can record which path it took."""

    @property
    def droppable(self) -> bool:
        """Whether the engine's dropout (`streams.Dropout`: a teacher's input and hidden rates)
        can run on this family."""
        return True

    @property
    def random(self) -> bool:
        """Whether a training step draws from each member's `noise` stream (dropout layers
        inside the model)."""
        return False

    def size(self) -> Size:
        """One member's parameters, MACs and weight tensors, counted on its module."""
        module = self.member(self.init([0]), 0)
        ps = list(module.parameters())
        weights = [p for p in ps if p.dim() >= 2]
        return Size(
            params=sum(p.numel() for p in ps),
            macs=self.macs_per_image(),
            weights=sum(p.numel() for p in weights),
            layers=len(weights),
        )

    def parameters_per_member(self) -> int:
        """Trainable parameters of one member."""
        return self.size().params

    @abstractmethod
    def macs_per_image(self) -> int:
        """Multiply-accumulates of one member's forward pass on one input."""

    def counted_by_hand(self) -> tuple[int, int] | None:
        """MACs per input of (a forward pass, a training step) where the family counts them
        itself; None: `work.counted` counts them with torch on a member module."""
        return None

    def onnx(self, members: list[Params], opset: int):
        """The family's own ONNX graph of `members` (each its tensors; more than one: an
        ensemble averaging softmax), or None: `runs.export` exports the member modules."""
        return None

    def copies(self, params: Params, owners: list[int], per_owner: int, lr: float, eps: float):
        """The family's own `teachers.CopyStack` of teachers trained along, or None: the
        generic copies (autograd through `forward`)."""
        return None

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
        """`[M, N, classes]` evaluation-mode logits on shared inputs, in chunks to bound
        memory."""
        parts = [self.forward(params, x[i : i + chunk]) for i in range(0, len(x), chunk)]
        return torch.cat(parts, 1)


def stack_size(params: Params) -> int:
    return params[0].shape[0]


def select(params: Params, index: torch.Tensor) -> Params:
    """The members at `index`, as a smaller stack."""
    return [p.index_select(0, index) for p in params]


def copy_rows(dest: Params, src: Params, rows: torch.Tensor, slots: torch.Tensor) -> None:
    """`dest[slots] = src[rows]` for every tensor: the members at stack rows `rows` into their
    own slots of a full-size stack (finished members, restore-best snapshots)."""
    for d, s in zip(dest, src, strict=True):
        d.index_copy_(0, slots, s.index_select(0, rows))
