"""Each member's own random streams for what a stack draws while training: dropout masks,
image jitter and any randomness inside a member's module. One `torch.Generator` per member,
seeded from that member's seed, so a member's draws never depend on the stack it shares (nor on
which members have already left it: `active` lists the member ids of the stack's rows)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Streams:
    """One generator per member; `active`: the member ids of the stack's rows, in order."""

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.active = list(range(len(seeds)))

    def rand(self, shape: Sequence[int]) -> torch.Tensor:
        """`[rows, *shape]` uniform draws, row j from member `active[j]`'s own generator."""
        return torch.stack([torch.rand(tuple(shape), generator=self.generators[m])
                            for m in self.active])  # fmt: skip


class Noise(Streams):
    """Randomness inside a member's own module (its `nn.Dropout` layers): each member draws
    from its own stream, so a rerun and a resume draw the same masks."""


class Dropout(Streams):
    """Training-time dropout for a stack, one generator per member: a member's masks, like its
    shuffling, depend only on its own seed, never on the stack it shares. Inverted dropout
    (kept units scaled by 1 / (1 - rate)), so evaluation needs no change. The masks of the last
    forward pass are kept for `backward`."""

    def __init__(self, input_rate: float, hidden_rate: float, seeds: Sequence[int]):
        super().__init__(seeds)
        self.rates = (float(input_rate), float(hidden_rate))
        self.kept: dict[int, torch.Tensor] = {}  # layer -> keep mask of the last forward pass

    def rate(self, layer: int) -> float:
        return self.rates[0] if layer == 0 else self.rates[1]

    def __call__(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        rate = self.rate(layer)
        if rate == 0:
            return h
        shape = h.shape[1:]
        keep = self.rand(shape).to(h.device) >= rate
        self.kept[layer] = keep
        return h * keep / (1 - rate)

    def backward(self, grad: torch.Tensor, layer: int) -> torch.Tensor:
        """The gradient through layer `layer`'s dropout (autograd's order of operations)."""
        rate = self.rate(layer)
        return grad if rate == 0 else grad / (1 - rate) * self.kept[layer]


class Jitter(Streams):
    """Training images shifted by up to `pixels` in each direction (zeros shifted in), one
    shift per member and step, drawn from the member's own generator: a member's shifts, like
    its shuffling, never depend on the stack it shares. Inputs are flattened `side` x `side`
    images."""

    def __init__(self, pixels: int, seeds: Sequence[int], side: int = 28):
        super().__init__(seeds)
        self.pixels, self.side = int(pixels), side

    def shifts(self) -> list[tuple[int, int]]:
        j = self.pixels
        return [
            tuple(int(v) for v in torch.randint(-j, j + 1, (2,), generator=self.generators[m]))
            for m in self.active
        ]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """`x` `[M, B, side * side]` -> the same images shifted, member m by its (dy, dx)."""
        j, n = self.pixels, self.side
        padded = torch.nn.functional.pad(x.view(*x.shape[:2], n, n), (j, j, j, j))
        out = [
            padded[m, :, j - dy : j - dy + n, j - dx : j - dx + n]
            for m, (dy, dx) in enumerate(self.shifts())
        ]
        return torch.stack(out).reshape(x.shape)
