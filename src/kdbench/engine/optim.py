"""Adam for stacks: each member its own Adam, one fused kernel call per layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdbench.engine.stack_model import Params


class Adam:
    """Adam over stacked tensors, one layer at a time, each update right after the layer's
    gradient (see `mlp.stack_backward`). It calls `torch._fused_adam_`, the kernel behind
    `torch.optim.Adam(fused=True)`, with the state that optimizer keeps: Adam is elementwise,
    so each member gets exactly its own Adam (the tests compare with `torch.optim.Adam`)."""

    def __init__(self, params: Params, lr: float, eps: float, betas=(0.9, 0.999)):
        self.lr, self.eps, self.betas = lr, eps, betas
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        # every tensor of the stack steps together: one step count serves them all
        self.steps = torch.zeros((), dtype=torch.float32, device=params[0].device)

    def count_step(self) -> None:
        """Call once per training step, before its layer updates."""
        self.steps += 1

    def update(self, params: Params, layer: int, grads: Sequence[torch.Tensor]) -> None:
        """One Adam step of layer `layer`'s weight and bias, in place."""
        self._fused(slice(2 * layer, 2 * layer + 2), params, grads)

    def update_all(self, params: Params, grads: Sequence[torch.Tensor]) -> None:
        """One Adam step of every tensor of the stack, in place (a family differentiated by
        autograd, whose gradients all arrive at once)."""
        self._fused(slice(0, len(params)), params, grads)

    def _fused(self, at: slice, params: Params, grads: Sequence[torch.Tensor]) -> None:
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
            weight_decay=0.0,
            eps=self.eps,
            amsgrad=False,
            maximize=False,
        )

    def keep(self, index: torch.Tensor) -> None:
        """Continue with the members at `index` only."""
        self.exp_avg = [t.index_select(0, index) for t in self.exp_avg]
        self.exp_avg_sq = [t.index_select(0, index) for t in self.exp_avg_sq]
