"""The stacked fast path of a sequential conv net: M members' convolutions as batched matmuls.

`vmap` over a conv net lowers each convolution to one grouped convolution (a group per member),
which oneDNN runs poorly at these channel counts. Here a convolution is im2col (one strided
copy of the members' inputs) and one `baddbmm` per layer, with the members (and the groups of a
depthwise layer) on the matmul's batch axis, as the MLP's layers are; activations stay in the
layout `[M, C, B, H, W]` so that no layer transposes them. Autograd differentiates it; only
im2col has a hand-written backward (col2im: k*k strided adds), because autograd's backward of a
strided view is slow. The same weights give the same function as the members' modules (tested
against `vmap` in `tests/test_modules.py`); summation order differs, so floats drift slightly.

Only an `nn.Sequential` built of the layers below has a plan; anything else runs through vmap.
BatchNorm runs here too: in training each member normalises with the statistics of its own
minibatch (the real batch lanes only) and updates its own running statistics in place, as
`nn.BatchNorm1d/2d` does; in evaluation it uses them.
`plan` walks the net once and asks a `Lowering` for each layer: `IM2COL` here (any device), or
`conv_direct.DIRECT` (compiled kernels, batch innermost; on the CPU where they build).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# (params, x, batch, training) -> the layer's output
Layer = Callable[[list[torch.Tensor], torch.Tensor, int, bool], torch.Tensor]


class _Im2col(torch.autograd.Function):
    """`[M, C, B, H, W]` -> columns `[M, g, C/g * k*k, B * Ho * Wo]` for a k x k convolution
    with `g` groups, stride `s` (no padding: the caller pads)."""

    @staticmethod
    def forward(ctx, x, k: int, s: int, g: int):
        M, C, B, H, W = x.shape
        Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
        st = x.stride()
        view = x.as_strided(
            (M, C, k, k, B, Ho, Wo), (st[0], st[1], st[3], st[4], st[2], s * st[3], s * st[4])
        )
        ctx.shape, ctx.k, ctx.s = x.shape, k, s
        return view.reshape(M, g, C // g * k * k, B * Ho * Wo)

    @staticmethod
    def backward(ctx, grad):
        M, C, B, H, W = ctx.shape
        k, s = ctx.k, ctx.s
        Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
        grad = grad.reshape(M, C, k, k, B, Ho, Wo)
        dx = grad.new_zeros(M, C, B, H, W)
        for i in range(k):
            for j in range(k):
                dx[:, :, :, i : i + s * (Ho - 1) + 1 : s, j : j + s * (Wo - 1) + 1 : s] += grad[
                    :, :, i, j
                ]
        return dx, None, None, None


def _conv(layer: nn.Conv2d, at: int, bias: int | None) -> Layer:
    k, s, p, g = layer.kernel_size[0], layer.stride[0], layer.padding[0], layer.groups
    out = layer.out_channels

    def run(params, x, batch, training):
        if p:
            x = F.pad(x, (p, p, p, p))
        M, _, B, H, W = x.shape
        cols = _Im2col.apply(x, k, s, g)  # [M, g, Cin/g*k*k, B*Ho*Wo]
        weight = params[at].reshape(M * g, out // g, -1)
        cols = cols.reshape(M * g, cols.shape[2], cols.shape[3])
        if bias is not None:
            y = torch.baddbmm(params[bias].reshape(M * g, out // g, 1), weight, cols)
        else:
            y = torch.bmm(weight, cols)
        return y.view(M, out, B, (H - k) // s + 1, (W - k) // s + 1)

    return run


def linear(at: int, bias: int | None) -> Layer:
    """A dense layer on `[M, B, features]`: the same in every lowering."""

    def run(params, x, batch, training):
        weight = params[at].transpose(1, 2)
        if bias is not None:
            return torch.baddbmm(params[bias].unsqueeze(1), x, weight)
        return torch.bmm(x, weight)

    return run


def _pool(k: int) -> Layer:
    def run(params, x, batch, training):
        M, C, B, H, W = x.shape
        y = F.max_pool2d(x.reshape(M * C, B, H, W), k)
        return y.view(M, C, B, *y.shape[-2:])

    return run


def _global_mean(params, x, batch, training):
    return x.mean((3, 4), keepdim=True)


def _unflatten(shape: tuple[int, ...]) -> Layer:
    def run(params, x, batch, training):
        return x.reshape(x.shape[0], x.shape[1], *shape).transpose(1, 2)  # [M, C, B, H, W]

    return run


def _flatten(params, x, batch, training):
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)  # [M, B, C*H*W]


def relu(params, x, batch, training):
    return F.relu(x)


def relu_(params, x, batch, training):
    """ReLU in place, after a layer whose output nothing else reads (its backward keeps its
    inputs, not its output): one activation less to allocate and write."""
    return F.relu_(x)


def batchnorm(layer: nn.modules.batchnorm._BatchNorm, at: tuple[int, ...], real, image: bool):
    """BatchNorm of every member at once as one `F.batch_norm` over M x C channels: on images
    `[M, C, ...]` (channels on axis 1, whatever the layout) or dense `[M, B, F]`. `at`: the
    indices of weight, bias, running mean, running variance and batch count in the stack's
    tensors (the running statistics are updated in place through views of them); `real(x,
    batch)`: the lanes of `x` that hold real inputs (a layout may pad the batch; the padded
    lanes come back as zeros)."""
    w, b, mean, var, count = at
    eps, momentum = layer.eps, layer.momentum

    def run(params, x, batch, training):
        M = x.shape[0]
        used = real(x, batch) if image else x
        if image:  # [1, M*C, rest]: statistics per member and channel over the rest
            flat = used.reshape(1, M * x.shape[1], -1)
        else:  # [B, M*F]: per member and feature over the batch
            flat = used.transpose(0, 1).reshape(used.shape[1], -1)
        y = F.batch_norm(flat, params[mean].view(-1), params[var].view(-1),
                         params[w].reshape(-1), params[b].reshape(-1), training, momentum,
                         eps)  # fmt: skip
        if training:
            with torch.no_grad():
                params[count].add_(1)
        if not image:
            return y.view(used.shape[1], M, -1).transpose(0, 1)
        y = y.view(used.shape)
        return y if used.shape == x.shape else F.pad(y, (0, x.shape[-1] - used.shape[-1]))

    return run


_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _all_lanes(x, batch):
    return x


@dataclass(frozen=True)
class Lowering:
    """How a plan runs each kind of layer, activations in its own image layout between
    `unflatten` and `flatten`: layer builders (`conv` gives None for a convolution this lowering
    cannot run) and the layers that need no settings."""

    conv: Callable[[nn.Conv2d, int, int | None], Layer | None]
    pool: Callable[[int], Layer]
    unflatten: Callable[[tuple[int, ...]], Layer]
    global_mean: Layer
    flatten: Layer
    real: Callable[[torch.Tensor, int], torch.Tensor] = _all_lanes  # an image's real lanes


# layout `[M, C, B, H, W]`, convolutions as im2col + `baddbmm`: any device, any conv
IM2COL = Lowering(_conv, _pool, _unflatten, _global_mean, _flatten)


def _square(v) -> bool:
    return isinstance(v, int) or len(set(v)) == 1


@dataclass(frozen=True)
class Plan:
    """The layers of one sequential net, each as a function of the stacked parameters, and
    which are dense layers after the net's first weighted layer (where hidden dropout applies)."""

    layers: tuple[Layer, ...]
    dense: frozenset[int] = frozenset()

    def run(
        self, params: list[torch.Tensor], x: torch.Tensor, dropout=None, training: bool = False
    ) -> torch.Tensor:
        """Logits `[M, B, classes]` of the members on their own batches `[M, B, ...]`;
        `training`: BatchNorm on batch statistics (and updating its running ones).
        `dropout` (`mlp.Dropout`, each member's masks from its own generator): its input rate
        on the inputs, its hidden rate on the input of every dense layer after the first layer,
        as Hinton et al. drop a conv net's pixels and its fully connected units."""
        if dropout is not None:
            x = dropout(x, 0)
        batch = x.shape[1]
        for i, layer in enumerate(self.layers):
            if dropout is not None and i in self.dense:
                x = dropout(x, 1)
            x = layer(params, x, batch, training)
        return x


def plan(
    base: nn.Module, names: list[str], input_shape: tuple[int, ...], lowering: Lowering = IM2COL
) -> Plan | None:
    """The fast path of `base` (its tensors in the order of `names`; one input shaped
    `input_shape`) in `lowering`, or None where it has a layer this lowering does not run (vmap,
    or another lowering, then runs it)."""
    if not isinstance(base, nn.Sequential):
        return None
    index = {n: i for i, n in enumerate(names)}
    layers: list[Layer] = []
    dense: set[int] = set()
    image = len(input_shape) == 3  # whether activations are images [M, C, B, H, W] here
    first = None  # the layer that makes the inputs' layout: its output may be the caller's
    if image:
        first = lowering.unflatten(tuple(input_shape))
        layers.append(first)
    elif len(input_shape) != 1:
        return None
    weighted = False
    for name, layer in base.named_children():
        weight, bias = index.get(f"{name}.weight"), index.get(f"{name}.bias")
        norm = [index.get(f"{name}.{t}") for t in _NORM]
        if isinstance(layer, nn.Identity):
            continue
        if (
            isinstance(layer, nn.Unflatten)
            and not image
            and layer.dim == 1
            and len(layer.unflattened_size) == 3
        ):
            first = lowering.unflatten(tuple(layer.unflattened_size))
            layers.append(first)
            image = True
        elif (
            isinstance(layer, nn.Conv2d)
            and image
            and weight is not None
            and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str)
            and all(_square(v) for v in (layer.kernel_size, layer.stride, layer.padding))
            and layer.dilation in (1, (1, 1))
        ):
            conv = lowering.conv(layer, weight, bias)
            if conv is None:
                return None
            layers.append(conv)
            weighted = True
        elif isinstance(layer, nn.Linear) and not image and weight is not None:
            if weighted:
                dense.add(len(layers))
            layers.append(linear(weight, bias))
            weighted = True
        elif (
            isinstance(layer, nn.MaxPool2d)
            and image
            and _square(layer.kernel_size)
            and layer.stride in (layer.kernel_size, None)
            and layer.padding in (0, (0, 0))
            and layer.dilation in (1, (1, 1))
            and not layer.ceil_mode
            and not layer.return_indices
        ):
            k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
            layers.append(lowering.pool(k))
        elif isinstance(layer, nn.ReLU):
            owned = layers and layers[-1] not in (first, relu, relu_)
            layers.append(relu_ if owned else relu)
        elif (
            isinstance(layer, nn.BatchNorm2d if image else nn.BatchNorm1d)
            and None not in norm
            and layer.momentum is not None
        ):
            layers.append(batchnorm(layer, tuple(norm), lowering.real, image))
        elif isinstance(layer, nn.AdaptiveAvgPool2d) and image and layer.output_size in (1, (1, 1)):
            layers.append(lowering.global_mean)
        elif isinstance(layer, nn.Flatten) and image and layer.start_dim == 1 == -layer.end_dim:
            layers.append(lowering.flatten)
            image = False
        else:
            return None
    return Plan(tuple(layers), frozenset(dense)) if not image else None
