"""Sweep benchmark: a grid's distilled students as one stack vs one stack per grid point.

    python benchmarks/sweep.py                        # 3 x 2 grid, 10 repeats, 3 rounds, medians
    python benchmarks/sweep.py --train-limit 20000 --repeats 10 --epochs 2 --rounds 3

The teachers and ensembles are trained once (not timed), as a sweep shares them. Then, each round,
the same distillation work is timed two ways on the same data and seeds:
  * per point: `distil([cfg])` for every grid point in turn (2 x repeats students a stack), what
    `kdbench sweep --max-stack <2 x repeats>` does;
  * joint: `distil(all points)`, one stack with a temperature and alpha per member, what
    `kdbench sweep` does by default;
and prints both wall times, their ratio, and the largest test-error difference between the two
(float-level noise from the different stack sizes).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdbench.data import datasets as data
from kdbench.protocol.presets import resolve
from kdbench.protocol.study import distil, upstream


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-limit", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--temperatures", default="2,5,10")
    ap.add_argument("--alphas", default="0.1,0.5")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    base = resolve(
        "paper",
        train_limit=args.train_limit,
        repeats=args.repeats,
        members=args.members,
        epochs=args.epochs,
    )
    cfgs = [
        base.with_overrides(temperature=float(t), alpha=float(a))
        for t in args.temperatures.split(",")
        for a in args.alphas.split(",")
    ]
    splits = data.load("mnist", None, base.data.validation_split, base.data.train_limit)
    print(
        f"{len(cfgs)} grid points x {2 * args.repeats} distilled students, {args.epochs} epochs on"
        f" {len(splits.x_train)} images; torch threads {torch.get_num_threads()}"
    )
    t0 = time.perf_counter()
    up = upstream(base, splits, lambda rec: None)
    print(f"teachers and small networks (shared, not timed): {time.perf_counter() - t0:.1f} s")

    rows = []
    for r in range(1, args.rounds + 1):
        t = time.perf_counter()
        alone = [distil([c], splits, up, [None])[0] for c in cfgs]
        per_point = time.perf_counter() - t
        t = time.perf_counter()
        joint = distil(cfgs, splits, up, [None] * len(cfgs))
        together = time.perf_counter() - t
        diff = max(
            abs(x.test_error - y.test_error)
            for a, j in zip(alone, joint, strict=True)
            for x, y in zip(a, j, strict=True)
        )
        rows.append((per_point, together, per_point / together, diff))
        print(
            f"round {r}: per point {per_point:.1f} s, joint {together:.1f} s,"
            f" per point / joint {per_point / together:.2f}x, max |test error diff| {diff:.4%}"
        )
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    print(
        f"median: per point {med[0]:.1f} s, joint {med[1]:.1f} s,"
        f" per point / joint {med[2]:.2f}x, max |test error diff| {med[3]:.4%}"
    )


if __name__ == "__main__":
    main()
