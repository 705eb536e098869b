"""Fully connected ReLU networks, one at a time or as a *stack* of same-shape members.

A stack holds M networks as batched weights (`W[M, in, out]`, `b[M, 1, out]`) so that one
`baddbmm` advances every member at once; each member keeps its own initialisation.
`member_module` turns one member back into a plain `nn.Sequential` (what `kdbench.load` returns).
Dropout and jitter for it live in `streams`; the stack helpers every family shares in
`stack_model`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from kdbench.engine.stack_model import Params, Size, StackModel  # Params: [W0, b0, W1, ...]
from kdbench.engine.streams import Dropout
from kdbench.engine.teachers import StackedCopies


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
        self.input_shape = (self.sizes[0],)

    def __repr__(self) -> str:
        return f"MLP({self.sizes})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MLP) and other.sizes == self.sizes

    __hash__ = None  # type: ignore[assignment]

    def init(self, seeds, device="cpu") -> Params:
        return init_stack(self.sizes, seeds, device)

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return stack_forward(params, x)

    def step(self, params, opt, x, loss_of, dropout=None, noise=None) -> torch.Tensor:
        """Autograd differentiates only the loss (any head, any soft targets); the layers are
        differentiated by `stack_backward` and each is updated as its gradient lands."""
        tape = Tape()
        logits = stack_forward(params, x, dropout, tape).requires_grad_()
        loss = loss_of(logits)
        loss.sum().backward()
        opt.count_step()
        for layer, grad_w, grad_b in stack_backward(params, tape, logits.grad, dropout):
            opt.update(params, layer, (grad_w, grad_b))
        return loss.detach()

    def member(self, params: Params, m: int) -> nn.Sequential:
        return member_module(params, m).eval()

    def hidden_weights(self, params: Params) -> list[torch.Tensor]:
        # weights are stored [M, in, out]: a unit's incoming weights are a column
        return [w.transpose(1, 2) for w in params[0:-2:2]]

    def tensor_names(self) -> list[str]:
        return [
            f"layer{i}.{kind}" for i in range(len(self.sizes) - 1) for kind in ("weight", "bias")
        ]

    def size(self) -> Size:
        weights = self.macs_per_image()
        return Size(weights + sum(self.sizes[1:]), weights, weights, len(self.sizes) - 1)

    def macs_per_image(self) -> int:
        return sum(a * b for a, b in itertools.pairwise(self.sizes))

    def counted_by_hand(self) -> tuple[int, int]:
        """Counted by hand, as torch counts them (`tests/test_costs.py` checks that they agree):
        `FlopCounterMode`'s first use imports torch._dynamo, 3 s per process, which a small study
        would spend on this alone. A step: the forward pass, the weights' gradients, and the
        inputs' gradients of every layer but the first."""
        forward = self.macs_per_image()
        return forward, 3 * forward - self.sizes[0] * self.sizes[1]

    def onnx(self, members, opset: int):
        """MatMul, Add and Relu written from the weights, which ONNX Runtime's dynamic
        quantisation turns to int8 (the exporter's Gemm it leaves float32)."""
        return _onnx(members, opset)

    def copies(self, params, owners, per_owner, lr, eps) -> Copies:
        return Copies(params, owners, per_owner, lr, eps)


def _onnx(members, opset: int):
    """The fully connected members' ONNX graph, written from the weights: input `images`
    `[N, features]` -> `logits` (one network, or an ensemble's log mean softmax); it maps
    one to one onto `stack_forward`."""
    import onnx  # loads slowly: only when a model is exported
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    outputs = []
    for k, params in enumerate(members):
        h = "images"
        n_layers = len(params) // 2
        for i in range(n_layers):
            w = params[2 * i].detach().cpu().numpy().astype(np.float32)
            b = params[2 * i + 1].detach().cpu().numpy().reshape(-1).astype(np.float32)
            wn, bn = f"m{k}.layer{i}.weight", f"m{k}.layer{i}.bias"
            inits += [numpy_helper.from_array(w, wn), numpy_helper.from_array(b, bn)]
            mm, out = f"m{k}.h{i}.mm", f"m{k}.h{i}"
            nodes += [
                helper.make_node("MatMul", [h, wn], [mm]),
                helper.make_node("Add", [mm, bn], [out]),
            ]
            h = out
            if i < n_layers - 1:
                nodes.append(helper.make_node("Relu", [h], [f"{h}.relu"]))
                h = f"{h}.relu"
        outputs.append(h)
    n_in, n_out = members[0][0].shape[0], members[0][-1].shape[-1]
    if len(members) == 1:
        nodes.append(helper.make_node("Identity", [outputs[0]], ["logits"]))
        out_name = "logits"
    else:
        probs = []
        for k, o in enumerate(outputs):
            nodes.append(helper.make_node("Softmax", [o], [f"m{k}.probs"], axis=1))
            probs.append(f"m{k}.probs")
        nodes.append(helper.make_node("Mean", probs, ["probs"]))
        nodes.append(helper.make_node("Log", ["probs"], ["logits"]))  # as `modules.Ensemble`
        out_name = "logits"
    graph = helper.make_graph(
        nodes,
        "kdbench",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


@torch.no_grad()
def stack_logits(params: Params, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """`[M, N, classes]` logits on shared inputs, in chunks to bound memory."""
    return torch.cat([stack_forward(params, x[i : i + chunk]) for i in range(0, len(x), chunk)], 1)


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
    with torch.random.fork_rng(devices=[]):  # nn.Linear's own init: the caller's state stays
        net = mlp(sizes)
    linears = [layer for layer in net if isinstance(layer, nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears):
            lin.weight.copy_(params[2 * i][m].T)
            lin.bias.copy_(params[2 * i + 1][m, 0])
    return net


@dataclass
class Copies(StackedCopies):
    """Fully connected copies: one `baddbmm` per layer for all of them, backward by hand."""

    tape: Tape | None = field(default=None, init=False)
    logits: torch.Tensor | None = field(default=None, init=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tape = Tape()
        self.logits = stack_forward(self.params, x, None, self.tape).requires_grad_()
        return self.logits

    def val_logits(self, x_val: torch.Tensor) -> torch.Tensor:
        return stack_logits(self.params, x_val)

    def step(self) -> None:
        self.adam.count_step()
        for layer, grad_w, grad_b in stack_backward(self.params, self.tape, self.logits.grad):
            self.adam.update(self.params, layer, (grad_w, grad_b))
        self.tape = self.logits = None

    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        return stack_logits(self.final, x)
