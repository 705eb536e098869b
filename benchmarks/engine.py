"""Engine benchmark: kdbench's stacked engine vs a plain PyTorch loop, same data, same process.

    python benchmarks/engine.py                       # reduced protocol, 3 rounds, medians
    python benchmarks/engine.py --train-limit 20000 --repeats 2 --members 10 --epochs 2 --rounds 5

Measures, in one process:
  * the machine's fp32 matmul peak (a large torch.mm, best of several);
  * a plain baseline as a typical PyTorch user writes it: nn.Sequential + torch.optim.Adam, one
    model at a time, batch 32, the teacher(s) evaluated on the fly in every distillation step;
  * kdbench's protocol (stacked engine, cached soft targets), with the same fixed-epoch settings;
and prints wall times, the ratio baseline / kdbench, and kdbench's training GFLOP/s (matmul FLOPs
of forward and backward, counted from the layer sizes) as a fraction of the same-run peak.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
import torch.nn.functional as F

from kdbench import data
from kdbench.config import Config
from kdbench.models import init_stack, layer_sizes, member_module
from kdbench.protocol import derive_seeds, run_study


def matmul_peak(n: int = 2048, tries: int = 7) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(tries))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def training_flops(cfg: Config, n_train: int) -> float:
    """Matmul FLOPs of training: forward 2·MACs, backward 4·MACs less the first layer's input
    gradient, per image per epoch, summed over every model the protocol trains."""

    def per_image(sizes):
        macs = sum(a * b for a, b in itertools.pairwise(sizes))
        return 2 * macs + 2 * (2 * macs - sizes[0] * sizes[1])

    p, epochs = cfg.protocol, cfg.train.epochs
    teacher = layer_sizes(784, cfg.model.teacher_hidden, 10)
    student = layer_sizes(784, cfg.model.student_hidden, 10)
    models_small = p.repeats * (p.members + 3)
    return epochs * n_train * (p.repeats * per_image(teacher) + models_small * per_image(student))


def plain_baseline(cfg: Config, splits: data.Splits) -> float:
    """One model at a time, the way the paper's Keras code (and most PyTorch code) does it."""
    p, t, k = cfg.protocol, cfg.train, cfg.distill
    n_in, n_out = splits.n_features, splits.n_classes
    temp, alpha = k.temperature, k.alpha

    def fit(sizes, seeds, teachers=()):
        net = member_module(init_stack(sizes, [seeds[0]]), 0)
        opt = torch.optim.Adam(net.parameters(), lr=t.learning_rate, eps=t.adam_eps)
        gen = torch.Generator().manual_seed(seeds[1])
        n = len(splits.x_train)
        for _ in range(t.epochs):
            perm = torch.randperm(n, generator=gen)
            for s in range(0, n, t.batch_size):
                idx = perm[s : s + t.batch_size]
                x, y = splits.x_train[idx], splits.y_train[idx]
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                if teachers:
                    with torch.no_grad():
                        soft = torch.stack([torch.softmax(m(x) / temp, 1) for m in teachers]).mean(
                            0
                        )
                    kl = F.kl_div(F.log_softmax(logits / temp, 1), soft, reduction="batchmean")
                    loss = alpha * loss + (1 - alpha) * temp**2 * kl
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        return net

    start = time.perf_counter()
    teacher_sizes = layer_sizes(n_in, cfg.model.teacher_hidden, n_out)
    student_sizes = layer_sizes(n_in, cfg.model.student_hidden, n_out)
    for r in range(p.repeats):
        teacher = fit(teacher_sizes, derive_seeds(p.seed, r, "teacher"))
        members = [
            fit(student_sizes, derive_seeds(p.seed, r, "ensemble", m)) for m in range(p.members)
        ]
        seeds = derive_seeds(p.seed, r, "student")
        fit(student_sizes, seeds, [teacher])
        fit(student_sizes, seeds, members)
        fit(student_sizes, seeds)
    return time.perf_counter() - start


def kdbench_engine(cfg: Config, splits: data.Splits) -> float:
    start = time.perf_counter()
    run_study(cfg, splits, sink=lambda rec: None)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-limit", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Config().with_overrides(
        train_limit=args.train_limit, repeats=args.repeats, members=args.members, epochs=args.epochs
    )
    d = cfg.data
    splits = data.load(d.dataset, d.data_dir, d.validation_split, d.train_limit)
    flops = training_flops(cfg, len(splits.x_train))
    print(
        f"protocol: {args.train_limit} images ({len(splits.x_train)} train),"
        f" {args.repeats} repeats,"
        f" {args.members} members, {args.epochs} epochs, batch 32; torch {torch.__version__},"
        f" {torch.get_num_threads()} threads; training matmul work {flops / 1e12:.3f} TFLOP"
    )
    rows = []
    for i in range(args.rounds):
        peak = matmul_peak()
        base = plain_baseline(cfg, splits)
        fast = kdbench_engine(cfg, splits)
        gflops = flops / fast / 1e9
        rows.append((peak, base, fast, base / fast, gflops, gflops / peak))
        print(
            f"round {i + 1}: peak {peak:6.1f} GFLOP/s | baseline {base:7.1f} s"
            f" | kdbench {fast:6.1f} s | ratio {base / fast:5.2f}x"
            f" | kdbench {gflops:5.1f} GFLOP/s = {gflops / peak:.0%} of peak",
            flush=True,
        )
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    print(
        f"median of {args.rounds}: peak {med[0]:.1f} GFLOP/s | baseline {med[1]:.1f} s |"
        f" kdbench {med[2]:.1f} s | ratio {med[3]:.2f}x | kdbench {med[4]:.1f} GFLOP/s ="
        f" {med[5]:.0%} of peak"
    )


if __name__ == "__main__":
    main()
