"""The conv fast path on the CPU: direct convolutions and max-pools from `native`'s compiled
kernels, in the layout `[M, C, H, W, Bp]` (the batch innermost, padded to a multiple of 8).

No im2col copy, no col2im: each kernel reads a layer's input once and keeps a block of outputs in
registers, at about the CPU's matmul peak (benchmarks/README.md). It runs convolutions of stride 1
and one group (cnn:..., lenet5, most users' sequential nets); a net with a strided or grouped
convolution runs through `conv_stack.IM2COL` instead. The padded batch lanes start at zero and
get no gradient (the flatten drops them), so they never reach a weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.engine import native
from kdbench.engine.conv_stack import Layer, Lowering


class _Conv(torch.autograd.Function):
    """`[M, C, H, W, Bp]` x weights `[M, O, C, k, k]` (+ bias `[M, O]`) -> `[M, O, Ho, Wo, Bp]`."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        lib = native.kernels()
        x, weight = x.contiguous(), weight.contiguous()
        M, C, H, W, Bp = x.shape
        out_c, k = weight.shape[1], weight.shape[-1]
        out = x.new_empty(M, out_c, H - k + 1, W - k + 1, Bp)
        b = None if bias is None else bias.contiguous()  # held while the kernel reads it
        lib.conv_forward(x.data_ptr(), weight.data_ptr(), None if b is None else b.data_ptr(),
                         out.data_ptr(),
                         M, C, H, W, out_c, k, Bp, native.threads())  # fmt: skip
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    def backward(ctx, grad):
        lib = native.kernels()
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        M, C, H, W, Bp = x.shape
        out_c, k = weight.shape[1], weight.shape[-1]
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = x.new_empty(x.shape)
            lib.conv_input_grad(grad.data_ptr(), weight.data_ptr(), dx.data_ptr(),
                                M, C, H, W, out_c, k, Bp, native.threads())  # fmt: skip
        if ctx.needs_input_grad[1]:
            dw = weight.new_empty(weight.shape)
            lib.conv_weight_grad(x.data_ptr(), grad.data_ptr(), dw.data_ptr(),
                                 M, C, H, W, out_c, k, Bp, native.threads())  # fmt: skip
        if ctx.needs_input_grad[2]:
            db = grad.sum((2, 3, 4))
        return dx, dw, db


class _Pool(torch.autograd.Function):
    """k x k max-pool of stride k, the first maximum of each window (as nn.MaxPool2d)."""

    @staticmethod
    def forward(ctx, x, k: int):
        lib = native.kernels()
        x = x.contiguous()
        M, C, H, W, Bp = x.shape
        out = x.new_empty(M, C, H // k, W // k, Bp)
        at = torch.empty(out.shape, dtype=torch.uint8)
        lib.pool_forward(x.data_ptr(), out.data_ptr(), at.data_ptr(),
                         M, C, H, W, k, Bp, native.threads())  # fmt: skip
        ctx.save_for_backward(at)
        ctx.shape, ctx.k = x.shape, k
        return out

    @staticmethod
    def backward(ctx, grad):
        (at,) = ctx.saved_tensors
        M, C, H, W, Bp = ctx.shape
        grad = grad.contiguous()  # held: a pointer into a freed temporary would read garbage
        dx = grad.new_zeros(ctx.shape)
        native.kernels().pool_backward(grad.data_ptr(), at.data_ptr(), dx.data_ptr(),
                                       M, C, H, W, ctx.k, Bp, native.threads())  # fmt: skip
        return dx, None


def _conv(layer: nn.Conv2d, at: int, bias: int | None) -> Layer | None:
    if layer.stride[0] != 1 or layer.groups != 1:
        return None
    p = layer.padding[0]

    def run(params, x, batch, training):
        if p:
            x = F.pad(x, (0, 0, p, p, p, p))
        return _Conv.apply(x, params[at], None if bias is None else params[bias])

    return run


def _pool(k: int) -> Layer:
    return lambda params, x, batch, training: _Pool.apply(x, k)


def _unflatten(shape: tuple[int, ...]) -> Layer:
    def run(params, x, batch, training):
        lanes = -batch % 8
        images = x.reshape(x.shape[0], batch, *shape).permute(0, 2, 3, 4, 1)
        return F.pad(images, (0, lanes)).contiguous()  # [M, C, H, W, Bp]

    return run


def _global_mean(params, x, batch, training):
    return x.mean((2, 3), keepdim=True)


def _flatten(params, x, batch, training):  # [M, C, H, W, Bp] -> [M, B, C*H*W], nn.Flatten's order
    return x[..., :batch].permute(0, 4, 1, 2, 3).reshape(x.shape[0], batch, -1)


def _real(x, batch):  # the padded lanes hold no input: BatchNorm's statistics leave them out
    return x[..., :batch]


DIRECT = Lowering(_conv, _pool, _unflatten, _global_mean, _flatten, _real)
