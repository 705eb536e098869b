"""Counted training work: the multiply-accumulates (MACs) each model's training actually ran.

The paper's conclusion is about compute ("computationally optimal"), so kdbench counts it rather
than estimating it from wall time: per architecture, once per model shape, torch's own
`FlopCounterMode` counts one forward pass and one training step (forward and backward) of an
ordinary member module, whatever its family; a model's work is then those counts times the
passes it ran. Matrix products and convolutions are counted; element-wise work (activations,
pooling, the optimiser) is not, as MAC counts conventionally leave it out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from kdbench.engine.stack_model import StackModel

_BATCH = 4  # counts scale with the batch; per input they do not depend on it


@dataclass(frozen=True)
class PassCost:
    """MACs per input of one model shape."""

    forward: int  # one forward pass (inference, validation, a teacher making targets)
    train_step: int  # one training step: forward and backward (weights' and inputs' gradients)

    def training(self, epochs: int, n_train: int, n_val: int) -> int:
        """A model trained `epochs` epochs on `n_train` inputs, validated every epoch on
        `n_val` (early stopping reads it)."""
        return epochs * (n_train * self.train_step + n_val * self.forward)


def _macs(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2  # a multiply-accumulate is two flops


def pass_cost(model: StackModel, n_features: int) -> PassCost:
    """The MACs per input of `model`'s forward pass and training step (count once per stack:
    every member has the same shape): the family's own count where it keeps one
    (`StackModel.counted_by_hand`), else `counted`."""
    own = model.counted_by_hand()
    return PassCost(*own) if own is not None else counted(model, n_features)


def counted(model: StackModel, n_features: int) -> PassCost:
    """`pass_cost` of any family, counted by torch on one member module."""
    member = model.member(model.init([0]), 0).float()
    x = torch.randn(_BATCH, *model.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        forward = _macs(lambda: member(x))

    def step():
        logits = member(x)
        torch.nn.functional.cross_entropy(logits, torch.zeros(_BATCH, dtype=torch.long)).backward()

    return PassCost(forward // _BATCH, _macs(step) // _BATCH)
