"""Thread benchmark: milliseconds per training step of each stack the study trains, by thread count.

    python benchmarks/threads.py                  # default study shapes, threads 1 and 2
    python benchmarks/threads.py --threads 1,2,4 --steps 200 --rounds 5

The study's stacks (at the default 10 repeats, 10 members): the teachers (M = 10, five hidden
layers), the small networks (M = 110: ensemble members and hard-label students) and the distilled
students (M = 20, soft targets cached); plus one lone student (M = 1), the way a plain loop trains.
Each is timed over `--steps` batch-32 steps of kdbench's own training step (`MLP.step`); the
table shows the median over rounds, so the thread choice rests on a measurement.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdbench.config import Config
from kdbench.engine.losses import cross_entropy, kd_loss
from kdbench.engine.mlp import MLP, init_stack, layer_sizes
from kdbench.engine.optim import Adam


def stacks(cfg: Config):
    p, m = cfg.protocol, cfg.model
    teacher = layer_sizes(784, m.teacher_hidden, 10)
    student = layer_sizes(784, m.student_hidden, 10)
    return [
        ("lone student", student, 1, False),
        ("teachers", teacher, p.repeats, False),
        ("small networks", student, p.repeats * (p.members + 1), False),
        ("distilled students", student, 2 * p.repeats, True),
    ]


def ms_per_step(sizes, members: int, soft: bool, steps: int, n: int = 4096) -> float:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, sizes[0], generator=gen)
    y = torch.randint(0, sizes[-1], (n,), generator=gen)
    targets = torch.softmax(torch.randn(n, sizes[-1], generator=gen), 1)
    params = init_stack(sizes, list(range(members)))
    adam = Adam(params, 1e-3, 1e-7)
    idx = torch.stack([torch.randperm(n, generator=gen) for _ in range(members)])
    step = MLP(sizes).step

    def one(s: int) -> None:
        i = idx[:, (s * 32) % (n - 32) : (s * 32) % (n - 32) + 32]
        if soft:
            step(params, adam, x[i], lambda z: kd_loss(z, y[i], targets[i], 10.0, 0.1))
        else:
            step(params, adam, x[i], lambda z: cross_entropy(z, y[i]))

    for s in range(10):
        one(s)
    start = time.perf_counter()
    for s in range(steps):
        one(s)
    return 1e3 * (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    print(f"torch {torch.__version__}; ms per batch-32 step, median of {args.rounds} rounds")
    print("| stack | M | " + " | ".join(f"{t} thread(s)" for t in counts) + " | best |")
    print("|---|---|" + "---|" * (len(counts) + 1))
    for name, sizes, members, soft in stacks(Config()):
        times = []
        for t in counts:
            torch.set_num_threads(t)
            times.append(
                statistics.median(
                    ms_per_step(sizes, members, soft, args.steps) for _ in range(args.rounds)
                )
            )
        best = counts[min(range(len(counts)), key=times.__getitem__)]
        cells = " | ".join(f"{v:.2f}" for v in times)
        print(f"| {name} | {members} | {cells} | {best} |", flush=True)


if __name__ == "__main__":
    main()
