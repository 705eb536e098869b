"""Each member's own random streams for what a stack draws while training: dropout masks,
image jitter and any randomness inside a member's module. One `torch.Generator` per member,
seeded from that member's seed, so a member's draws never depend on the stack it shares (nor on
which members have already left it: `active` lists the member ids of the stack's rows)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kdbench.engine import native


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


@dataclass(frozen=True)
class Augmentation:
    """What `Augment` does to a training image of shape `image` (channels, height, width):
    `crop` zeros padded on each side, then a random crop back to size (0: no crop); `flip`:
    mirrored left to right with probability 1/2."""

    image: tuple[int, int, int]
    crop: int = 0
    flip: bool = False


class Augment(Streams):
    """Random crops and flips, one per image, drawn from each member's own generator (three
    uniforms per image: row offset, column offset, flip), so a member's augmentation, like its
    shuffling, never depends on the stack it shares. The uniforms of a whole epoch are drawn at
    its start (`begin_epoch`), one call per member: the k-th image a member sees in an epoch
    uses its draws k; steps read their slice (`at`: the step's first position in the epoch).
    Torch's CPU generator fills uniforms in order, so these are the floats that drawing step by
    step gives (the oracle in tests/test_recipe.py draws per step; runs made before are equal)."""

    def __init__(self, spec: Augmentation, seeds: Sequence[int]):
        super().__init__(seeds)
        self.spec = spec
        self.u = torch.empty(0, 0, 3)

    def begin_epoch(self, n: int) -> None:
        """Draws the uniforms of an epoch of `n` images for each active member: `[M, n, 3]`."""
        self.u = self.rand((n, 3))

    def __call__(self, x: torch.Tensor, at: int) -> torch.Tensor:
        """`x` `[M, B, *]` (rows of `spec.image` images, positions `at` to `at + B` of the
        epoch) -> the same images augmented: by the compiled kernel on the CPU (a copy per
        image row), else by torch's gathers (the same floats: both only move pixels)."""
        return self.take(x.reshape(-1, x.shape[-1]), None, at, x.shape[:2])

    def take(self, data: torch.Tensor, index: torch.Tensor | None, at: int,
             shape=None) -> torch.Tensor:  # fmt: skip
        """Rows `index` `[M, B]` of `data` `[N, *]` (positions `at` to `at + B` of the epoch),
        augmented, `[M, B, *]`: on the CPU one pass of the kernel gathers and augments (no
        gathered copy made first); `index` None: `data` is the batch itself, of `shape` (M, B)."""
        m, b = index.shape if index is not None else shape
        u = self.u[:, at : at + b].contiguous()  # [M, B, 3]: row offset, column offset, flip
        if u.shape[:2] != (m, b):
            raise RuntimeError(f"augmentation drew {tuple(u.shape[:2])} images, not {(m, b)}: "
                               "call begin_epoch with the epoch's length first")  # fmt: skip
        cpu = data.device.type == "cpu" and data.dtype == torch.float32
        lib = native.kernels() if cpu else None
        if lib is None:
            x = data.reshape(m, b, -1) if index is None else data[index]
            return self.gathered(x, u)
        (c, h, w), src = self.spec.image, data.contiguous()
        out = torch.empty(m, b, src.shape[-1], dtype=src.dtype)
        rows = None if index is None else index.reshape(-1).contiguous().to(torch.int64)
        lib.crop_flip(src.data_ptr(), None if rows is None else rows.data_ptr(), out.data_ptr(),
                      u.data_ptr(), m * b, c, h, w, self.spec.crop, int(self.spec.flip),
                      native.threads())  # fmt: skip
        return out

    def gathered(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The augmentation by torch (any device): pad, then one gather per axis."""
        (c, h, w), p = self.spec.image, self.spec.crop
        m, b = x.shape[:2]
        u = u.to(x.device)
        dy = (u[..., 0] * (2 * p + 1)).long().clamp_(max=2 * p)  # [M, B]
        dx = (u[..., 1] * (2 * p + 1)).long().clamp_(max=2 * p)
        img = x.reshape(m, b, c, h, w)
        if p:
            img = torch.nn.functional.pad(img, (p, p, p, p))
        ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        cols = dx[..., None] + xs  # [M, B, W]
        if self.spec.flip:
            cols = torch.where((u[..., 2] < 0.5)[..., None], dx[..., None] + (w - 1 - xs), cols)
        rows = (dy[..., None] + ys)[:, :, None, :, None].expand(m, b, c, h, img.shape[-1])
        out = img.gather(3, rows).gather(4, cols[:, :, None, None, :].expand(m, b, c, h, w))
        return out.reshape(x.shape)
