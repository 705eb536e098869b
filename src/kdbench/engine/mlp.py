"""Fully connected ReLU networks, one at a time or as a *stack* of same-shape members.

A stack holds M networks as batched weights (`W[M, in, out]`, `b[M, 1, out]`) so that one
`baddbmm` advances every member at once; each member keeps its own initialisation.
`member_module` turns one member back into a plain `nn.Sequential` (what `kdbench.load` returns).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from kdbench.engine.stack_model import Params, StackModel  # Params: [W0, b0, W1, b1, ...]


def layer_sizes(n_in: int, hidden: Sequence[int], n_out: int) -> list[int]:
    return [n_in, *hidden, n_out]


def init_stack(sizes: Sequence[int], seeds: Sequence[int], device: str | torch.device = "cpu"):
    """Glorot-uniform weights and zero biases (Keras' defaults), one generator per member.

    A member's weights depend only on its seed, never on which stack it sits in.
    """
    per_member = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        layers = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w = (torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * limit
            layers += [w, torch.zeros(1, fan_out)]
        per_member.append(layers)
    return [torch.stack(ts).to(device) for ts in zip(*per_member, strict=True)]


class Dropout:
    """Training-time dropout for a stack, one generator per member: a member's masks, like its
    shuffling, depend only on its own seed, never on the stack it shares. Inverted dropout
    (kept units scaled by 1 / (1 - rate)), so evaluation needs no change. The masks of the last
    forward pass are kept for `backward`."""

    def __init__(self, input_rate: float, hidden_rate: float, seeds: Sequence[int]):
        self.rates = (float(input_rate), float(hidden_rate))
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.active = list(range(len(seeds)))  # member ids of the stack's rows, in order
        self.kept: dict[int, torch.Tensor] = {}  # layer -> keep mask of the last forward pass

    def rate(self, layer: int) -> float:
        return self.rates[0] if layer == 0 else self.rates[1]

    def __call__(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        rate = self.rate(layer)
        if rate == 0:
            return h
        shape = h.shape[1:]
        noise = torch.stack([torch.rand(shape, generator=self.generators[m]) for m in self.active])
        keep = noise.to(h.device) >= rate
        self.kept[layer] = keep
        return h * keep / (1 - rate)

    def backward(self, grad: torch.Tensor, layer: int) -> torch.Tensor:
        """The gradient through layer `layer`'s dropout (autograd's order of operations)."""
        rate = self.rate(layer)
        return grad if rate == 0 else grad / (1 - rate) * self.kept[layer]


class Jitter:
    """Training images shifted by up to `pixels` in each direction (zeros shifted in), one
    shift per member and step, drawn from the member's own generator: a member's shifts, like
    its shuffling, never depend on the stack it shares. Inputs are flattened `side` x `side`
    images."""

    def __init__(self, pixels: int, seeds: Sequence[int], side: int = 28):
        self.pixels, self.side = int(pixels), side
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.active = list(range(len(seeds)))

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


@dataclass
class Tape:
    """What a training forward pass keeps for `stack_backward`."""

    inputs: list[torch.Tensor] = field(default_factory=list)  # each layer's input
    relu: list[torch.Tensor] = field(default_factory=list)  # each hidden ReLU's output


def stack_forward(
    params: Params, x: torch.Tensor, dropout: Dropout | None = None, tape: Tape | None = None
) -> torch.Tensor:
    """Logits of every member: x is `[M, B, in]` (own batches) or `[N, in]` (shared inputs).
    `dropout` (training only, own batches) drops inputs and hidden units per member; `tape`
    (training) keeps what `stack_backward` needs."""
    n_layers = len(params) // 2
    h = x if dropout is None else dropout(x, 0)
    for i in range(n_layers):
        w, b = params[2 * i], params[2 * i + 1]
        if tape is not None:
            tape.inputs.append(h)
        h = torch.baddbmm(b, h, w) if h.dim() == 3 else torch.matmul(h, w) + b
        if i < n_layers - 1:
            h = torch.relu(h)
            if tape is not None:
                tape.relu.append(h)
            if dropout is not None:
                h = dropout(h, i + 1)
    return h


def stack_backward(
    params: Params, tape: Tape, grad: torch.Tensor, dropout: Dropout | None = None
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(layer, weight gradient, bias gradient), last layer first, from the logits' gradient.

    Why by hand rather than autograd: each layer is yielded as soon as the gradient for the layer
    below has gone through its weights, so the caller can update it in place at once, while its
    gradient is still in cache, with no graph to build. The operations are autograd's own for
    `baddbmm`, ReLU and dropout, in its order, so the gradients are bit-equal to it (tested).
    """
    for i in reversed(range(len(params) // 2)):
        h = tape.inputs[i]
        grad_w = torch.bmm(h.transpose(1, 2), grad)
        grad_b = grad.sum(1, keepdim=True)
        if i > 0:
            grad = torch.bmm(grad, params[2 * i].transpose(1, 2))
            if dropout is not None:
                grad = dropout.backward(grad, i)
            grad = torch.ops.aten.threshold_backward(grad, tape.relu[i - 1], 0)
        yield i, grad_w, grad_b


class MLP(StackModel):
    """The fully connected family (layer sizes `[in, *hidden, classes]`): its forward pass is a
    `baddbmm` per layer and its backward pass is written out (`stack_backward`), so a step of M
    members costs about one step of one member when the members are small."""

    def __init__(self, sizes: Sequence[int]):
        self.sizes = list(sizes)

    def __repr__(self) -> str:
        return f"MLP({self.sizes})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MLP) and other.sizes == self.sizes

    __hash__ = None  # type: ignore[assignment]

    def init(self, seeds, device="cpu") -> Params:
        return init_stack(self.sizes, seeds, device)

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return stack_forward(params, x)

    def step(self, params, adam, x, loss_of, dropout=None) -> torch.Tensor:
        """Autograd differentiates only the loss (any head, any soft targets); the layers are
        differentiated by `stack_backward` and each is updated as its gradient lands."""
        tape = Tape()
        logits = stack_forward(params, x, dropout, tape).requires_grad_()
        loss = loss_of(logits)
        loss.sum().backward()
        adam.count_step()
        for layer, grad_w, grad_b in stack_backward(params, tape, logits.grad, dropout):
            adam.update(params, layer, (grad_w, grad_b))
        return loss.detach()

    def member(self, params: Params, m: int) -> nn.Sequential:
        return member_module(params, m)

    def hidden_weights(self, params: Params) -> list[torch.Tensor]:
        # weights are stored [M, in, out]: a unit's incoming weights are a column
        return [w.transpose(1, 2) for w in params[0:-2:2]]

    def tensor_names(self) -> list[str]:
        return [
            f"layer{i}.{kind}" for i in range(len(self.sizes) - 1) for kind in ("weight", "bias")
        ]

    def parameters_per_member(self) -> int:
        return sum(a * b + b for a, b in itertools.pairwise(self.sizes))

    def macs_per_image(self) -> int:
        return sum(a * b for a, b in itertools.pairwise(self.sizes))


@torch.no_grad()
def stack_logits(params: Params, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """`[M, N, classes]` logits on shared inputs, in chunks to bound memory."""
    return torch.cat([stack_forward(params, x[i : i + chunk]) for i in range(0, len(x), chunk)], 1)


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


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def member_module(params: Params, m: int) -> nn.Sequential:
    """Member m of a stack as an ordinary `nn.Sequential` with the same weights."""
    sizes = [params[0].shape[1]] + [params[i].shape[2] for i in range(0, len(params), 2)]
    net = mlp(sizes)
    linears = [layer for layer in net if isinstance(layer, nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears):
            lin.weight.copy_(params[2 * i][m].T)
            lin.bias.copy_(params[2 * i + 1][m, 0])
    return net
