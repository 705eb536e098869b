"""A stack of any nn.Module (`ModuleStack`: torch.func vmap) against a plain PyTorch loop.

    python benchmarks/modules.py --rounds 3 --threads 1 2

For each architecture: M members trained for one epoch on `--images` MNIST training images,
batch 32, (a) one at a time, each its own `nn.Module` and `torch.optim.Adam` (the baseline,
measured in the same process), and (b) as one kdbench stack through the engine. Prints each
round and the median ratio loop / stack (above 1: the stack is faster); a conv net on the
compiled path (`engine/conv_direct.py`) is also timed on the im2col path (`KDBENCH_NATIVE=0`'s),
in the same rounds. The MLP rows use the
hand-written fast path (`mlp.MLP`) for comparison; `own` is cnn:4,8 inside a module of your
own (its own forward), which the generic vmap path runs. `bncnn:4,8` (conv, BatchNorm, ReLU,
pool) is the BatchNorm net of the fast path; `resnet:8,4` a BatchNorm ResNet, which vmap runs.
The loop trains each member in train mode (BatchNorm on batch statistics), as the stack does.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.config import TrainConfig
from kdbench.data import datasets as data
from kdbench.engine import trainer as engine
from kdbench.engine.architectures import build, cnn
from kdbench.engine.modules import ModuleStack

ARCHS = ("cnn:4,8", "lenet5", "bncnn:4,8", "resnet:8,4", "own", "mlp:100")


class Own(nn.Module):
    """A user's module: cnn:4,8's layers behind its own forward, so it runs through vmap."""

    def __init__(self):
        super().__init__()
        self.net = cnn((4, 8), (1, 28, 28), 10)

    def forward(self, x):
        return self.net(x)


def loop(model, seeds, splits, epochs: int = 1, batch: int = 32) -> float:
    """Each member alone: its module, torch.optim.Adam, its own shuffling."""
    start = time.perf_counter()
    for seed in seeds:
        net = model.member(model.init([seed]), 0).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            perm = torch.randperm(len(splits.x_train), generator=gen)
            for s in range(0, len(perm), batch):
                idx = perm[s : s + batch]
                x = splits.x_train[idx].view(-1, *model.input_shape)
                loss = F.cross_entropy(net(x), splits.y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return time.perf_counter() - start


def stacked(model, seeds, splits, epochs: int = 1) -> float:
    cfg = dataclasses.replace(TrainConfig(), epochs=epochs)
    start = time.perf_counter()
    engine.train(engine.Stack("b", model, seeds, [s + 1000 for s in seeds]), splits, cfg)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    args = ap.parse_args()
    splits = data.load("mnist", validation_split=0.1, train_limit=args.images)
    seeds = list(range(args.members))
    print(f"{args.members} members, one epoch of {len(splits.x_train)} images, batch 32")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for arch in args.archs:
            image = data.IMAGES["mnist"]

            def make(compiled, arch=arch, image=image):
                if arch == "own":
                    return ModuleStack(Own, image, splits.n_classes, compiled)
                return build(arch, splits.n_features, splits.n_classes, image, compiled)

            model = make(True)
            paths = {"hand-written": model}
            if isinstance(model, ModuleStack):
                paths = {"compiled": model} if model.direct else {}
                # the path without the compiled kernels, same process
                paths["im2col + bmm" if model.plan else "vmap"] = make(False)
            ratios = {kind: [] for kind in paths}
            for r in range(args.rounds):
                a = loop(model, seeds, splits)
                for kind, stack in paths.items():
                    b = stacked(stack, seeds, splits)
                    ratios[kind].append(a / b)
                    print(f"  {threads} thread(s) {arch:<8} round {r + 1}: loop {a:6.2f} s,"
                          f" {kind} stack {b:6.2f} s, loop / stack {a / b:.2f}")  # fmt: skip
            for kind, rs in ratios.items():
                print(f"{threads} thread(s) {arch:<8} ({kind}): median loop / stack"
                      f" {statistics.median(rs):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
