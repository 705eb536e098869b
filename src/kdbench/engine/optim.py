"""Optimisers for stacks: each member its own optimiser state, every tensor updated in place.

The families call one interface (`StackOptimizer`): `count_step` once per training step, then
`update` (one layer's weight and bias, as the fully connected family's hand-written backward
hands them over) or `update_all` (every trainable tensor, from autograd). `state` names the
tensors a snapshot keeps. Both optimisers are elementwise, so a member's update depends only on
its own rows: each member gets exactly the optimiser it would get alone (the tests compare with
`torch.optim.Adam` and `torch.optim.SGD`).

- `Adam`: `torch._fused_adam_`, the kernel behind `torch.optim.Adam(fused=True)`, with the
  state that optimizer keeps (Keras' epsilon by default; L2 `weight_decay` as torch's Adam adds
  it to the gradient).
- `SGD`: momentum (the first step's buffer is the gradient, as torch's), Nesterov, L2 weight
  decay, written out in `torch.optim.SGD`'s order of operations.

`schedule_factor` is the learning-rate schedule the trainer applies at the start of each epoch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from kdbench.config import TrainConfig
from kdbench.engine.stack_model import Params


class StackOptimizer(ABC):
    """What the families and the trainer call; `lr` may change between epochs (a schedule)."""

    lr: float
    steps: torch.Tensor  # training steps taken (one count for the whole stack)

    def count_step(self) -> None:
        """Call once per training step, before its updates."""
        self.steps += 1
        self.count += 1

    def set_steps(self, steps: torch.Tensor) -> None:
        """The step count of a snapshot being resumed."""
        self.steps, self.count = steps, int(steps)

    def update(self, params: Params, layer: int, grads: Sequence[torch.Tensor]) -> None:
        """One step of layer `layer`'s weight and bias (tensors 2*layer, 2*layer + 1)."""
        self._step(slice(2 * layer, 2 * layer + 2), params, grads)

    def update_all(self, params: Params, grads: Sequence[torch.Tensor]) -> None:
        """One step of every tensor of the stack (a family differentiated by autograd)."""
        self._step(slice(0, len(params)), params, grads)

    @abstractmethod
    def _step(self, at: slice, params: Params, grads: Sequence[torch.Tensor]) -> None: ...

    @abstractmethod
    def state(self) -> dict[str, list[torch.Tensor]]:
        """The per-tensor state a snapshot keeps, by group name (each `[M, ...]`)."""

    @abstractmethod
    def load_state(self, state: dict[str, list[torch.Tensor]]) -> None: ...

    def keep(self, index: torch.Tensor) -> None:
        """Continue with the members at `index` only."""
        self.load_state(
            {k: [t.index_select(0, index) for t in ts] for k, ts in self.state().items()}
        )


class Adam(StackOptimizer):
    """Adam over stacked tensors (see the module docstring)."""

    def __init__(
        self, params: Params, lr: float, eps: float, betas=(0.9, 0.999), weight_decay: float = 0.0
    ):
        self.lr, self.eps, self.betas, self.weight_decay = lr, eps, betas, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        # every tensor of the stack steps together: one step count serves them all
        self.steps = torch.zeros((), dtype=torch.float32, device=params[0].device)
        self.count = 0  # the same, on the host

    def _step(self, at: slice, params: Params, grads: Sequence[torch.Tensor]) -> None:
        n = len(range(*at.indices(len(params))))
        torch._fused_adam_(
            params[at],
            list(grads),
            self.exp_avg[at],
            self.exp_avg_sq[at],
            [],
            [self.steps] * n,
            lr=self.lr,
            beta1=self.betas[0],
            beta2=self.betas[1],
            weight_decay=self.weight_decay,
            eps=self.eps,
            amsgrad=False,
            maximize=False,
        )

    def state(self) -> dict[str, list[torch.Tensor]]:
        return {"adam.avg": self.exp_avg, "adam.sq": self.exp_avg_sq}

    def load_state(self, state: dict[str, list[torch.Tensor]]) -> None:
        self.exp_avg, self.exp_avg_sq = state["adam.avg"], state["adam.sq"]


class SGD(StackOptimizer):
    """SGD with momentum, Nesterov and L2 weight decay over stacked tensors (see the module
    docstring)."""

    def __init__(
        self, params: Params, lr: float, momentum: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0,
    ):  # fmt: skip
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.weight_decay = weight_decay
        self.buffers = [torch.zeros_like(p) for p in params] if momentum else []
        self.steps = torch.zeros((), dtype=torch.float32, device=params[0].device)
        self.count = 0  # the same, on the host: the first step starts the momentum

    def _step(self, at: slice, params: Params, grads: Sequence[torch.Tensor]) -> None:
        first = self.count == 1
        indices = range(*at.indices(len(params)))
        with torch.no_grad():
            for i, g in zip(indices, grads, strict=True):
                p = params[i]
                d_p = g if self.weight_decay == 0 else g.add(p, alpha=self.weight_decay)
                if self.momentum:
                    buf = self.buffers[i]
                    if first:
                        buf.copy_(d_p)
                    else:
                        buf.mul_(self.momentum).add_(d_p)
                    d_p = d_p.add(buf, alpha=self.momentum) if self.nesterov else buf
                p.add_(d_p, alpha=-self.lr)

    def state(self) -> dict[str, list[torch.Tensor]]:
        return {"sgd.momentum": self.buffers} if self.momentum else {}

    def load_state(self, state: dict[str, list[torch.Tensor]]) -> None:
        if self.momentum:
            self.buffers = state["sgd.momentum"]


def make(train: TrainConfig, params: Params) -> StackOptimizer:
    """The optimiser the training settings name (`optimizer`, its settings) over `params`."""
    if train.optimizer == "sgd":
        return SGD(params, train.learning_rate, train.momentum, train.nesterov, train.weight_decay)
    return Adam(params, train.learning_rate, train.adam_eps, weight_decay=train.weight_decay)


def schedule_factor(schedule: str, epoch: int, last_epoch: int, step: int, gamma: float) -> float:
    """The learning rate of epoch `epoch` (1-based) as a fraction of the base rate: "none" 1;
    "cosine" `torch.optim.lr_scheduler.CosineAnnealingLR` stepped per epoch over `last_epoch`
    epochs (to 0); "step" `StepLR`: times `gamma` every `step` epochs."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (epoch - 1) / last_epoch))
    if schedule == "step":
        return gamma ** ((epoch - 1) // step)
    return 1.0
