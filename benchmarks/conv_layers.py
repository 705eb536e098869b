"""One conv layer of M members: the compiled kernels against the im2col path, per pass.

    python benchmarks/conv_layers.py --rounds 5 --threads 1

For each layer shape of the built-in conv nets (LeNet-5's two, cnn:4,8's two): forward, weight
gradient and input gradient of the compiled kernels (`engine/conv_direct.py`, activations
`[M, C, H, W, Bp]`), then the im2col path's forward + backward (`engine/conv_stack.py`: im2col,
`baddbmm`, autograd, col2im; activations `[M, C, B, H, W]`), same members, batch and process.
Milliseconds per call, median of `--rounds` rounds of 20 calls, and GFLOP/s of each kernel. Both
paths are first checked against `F.conv2d` on every member.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from kdbench.engine import native
from kdbench.engine.conv_direct import _Conv
from kdbench.engine.conv_stack import _Im2col

LAYERS = {  # name: (in channels, out channels, input side after padding, kernel)
    "lenet5 conv1": (1, 6, 32, 5),
    "lenet5 conv2": (6, 16, 14, 5),
    "cnn:4,8 conv1": (1, 4, 28, 3),
    "cnn:4,8 conv2": (4, 8, 13, 3),
}


def timed(fn, rounds: int, calls: int = 20) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times) * 1e3


def layer(lib, name: str, shape, M: int, B: int, rounds: int, gen) -> str:
    """One layer's table row: each compiled kernel, then the im2col path, after the oracle."""
    C, O, H, k = shape  # noqa: E741 (the usual names of a conv's sizes)
    n = native.threads()
    Ho = H - k + 1
    x = torch.randn(M, C, H, H, B, generator=gen)
    w = torch.randn(M, O, C, k, k, generator=gen) * 0.1
    b = torch.randn(M, O, generator=gen)
    g = torch.randn(M, O, Ho, Ho, B, generator=gen)
    out, dx, dw = torch.empty(M, O, Ho, Ho, B), torch.empty_like(x), torch.empty_like(w)
    # the oracle first: each member through F.conv2d
    xr = x.detach().clone().requires_grad_()
    wr = w.detach().clone().requires_grad_()
    ref = torch.stack([F.conv2d(xr[m].permute(3, 0, 1, 2), wr[m], b[m]) for m in range(M)])
    ref.backward(g.permute(0, 4, 1, 2, 3))
    xd, wd = x.clone().requires_grad_(), w.clone().requires_grad_()
    mine = _Conv.apply(xd, wd, b)
    mine.backward(g)
    torch.testing.assert_close(mine.permute(0, 4, 1, 2, 3), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(xd.grad, xr.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(wd.grad, wr.grad, atol=1e-3, rtol=1e-4)

    flop = 2 * M * B * O * C * k * k * Ho * Ho / 1e6  # MFLOP per pass

    def fwd():
        lib.conv_forward(x.data_ptr(), w.data_ptr(), b.data_ptr(), out.data_ptr(),
                         M, C, H, H, O, k, B, n)  # fmt: skip

    def wgrad():
        lib.conv_weight_grad(x.data_ptr(), g.data_ptr(), dw.data_ptr(),
                             M, C, H, H, O, k, B, n)  # fmt: skip

    def igrad():
        lib.conv_input_grad(g.data_ptr(), w.data_ptr(), dx.data_ptr(),
                            M, C, H, H, O, k, B, n)  # fmt: skip

    xc = x.permute(0, 1, 4, 2, 3).contiguous().requires_grad_(C > 1)  # first layers: no dx
    wc = w.reshape(M, O, -1).clone().requires_grad_()
    bc = b.clone().requires_grad_()
    gc = g.permute(0, 1, 4, 2, 3).reshape(M, O, -1).contiguous()

    def im2col():
        cols = _Im2col.apply(xc, k, 1, 1).reshape(M, C * k * k, -1)
        torch.baddbmm(bc.unsqueeze(-1), wc, cols).backward(gc)

    t = {f.__name__: timed(f, rounds) for f in (fwd, wgrad, igrad, im2col)}
    cells = [f"{t[f]:.2f} ({flop / t[f]:.0f} GFLOP/s)" for f in ("fwd", "wgrad", "igrad")]
    return (f"| {name} (C {C}->{O}, {k}x{k}, {H}x{H}) | {' | '.join(cells)} |"
            f" {t['im2col']:.2f}{'' if C > 1 else ' (no input gradient)'} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lib = native.kernels()
    if lib is None:
        raise SystemExit(f"no compiled kernels: {native.state()}")
    M, B = args.members, args.batch
    print(f"{M} members, batch {B}, {args.threads} thread(s), {native.state()}; ms per call")
    print("| Layer | forward | weight gradient | input gradient | im2col path: fwd + bwd |")
    print("| --- | ---: | ---: | ---: | ---: |")
    gen = torch.Generator().manual_seed(0)
    for name, shape in LAYERS.items():
        print(layer(lib, name, shape, M, B, args.rounds, gen))


if __name__ == "__main__":
    main()
