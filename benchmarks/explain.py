"""`kdbench explain` with shared upstream stacks against six separate studies.

    python benchmarks/explain.py                      # reduced protocol, 2 rounds, medians
    python benchmarks/explain.py --train-limit 10000 --repeats 2 --members 5 --epochs 2 --rounds 2

Each round, in one process and in fresh folders: the six default variants (`paper`,
`paper-keras`, `paper-softmax-head`, `restore-best`, `watch-error`, `hard-monitor`) as one
`explain` (variants that agree upstream of distillation train their teachers and small networks
once: three upstream groups here), then the same six presets as six separate `reproduce` runs.
It prints both wall times, their ratio, and whether every variant's test errors are identical
between the two (they must be: sharing must not change a number).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kdbench.protocol.presets import VARIANTS, resolve
from kdbench.protocol.run import reproduce
from kdbench.runs.store import read_records
from kdbench.sweeps.explain import run_variants


def errors(folder: Path) -> list[tuple]:
    return [(str(r.role), r.repeat, r.member, r.kind, r.test_error) for r in read_records(folder)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    flags = dict(train_limit=args.train_limit, repeats=args.repeats, members=args.members,
                 epochs=args.epochs)  # fmt: skip
    configs = {name: resolve(name, **flags) for name in VARIANTS}
    print(
        f"{len(configs)} variants; {args.train_limit} images, {args.repeats} repeats,"
        f" {args.members} members, {args.epochs} epochs; torch {torch.__version__},"
        f" {torch.get_num_threads()} threads"
    )
    rows = []
    for r in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            shared = run_variants(configs, Path(tmp) / "explain")
            together = time.perf_counter() - t
            t = time.perf_counter()
            alone = [
                reproduce(cfg, Path(tmp) / "alone" / name, measure_latency=False)[0]
                for name, cfg in configs.items()
            ]
            separate = time.perf_counter() - t
            same = all(errors(v.folder) == errors(a) for v, a in zip(shared, alone, strict=True))
        rows.append((together, separate))
        print(
            f"round {r}: explain {together:6.1f} s | six studies {separate:6.1f} s"
            f" | {separate / together:.2f}x | test errors identical: {same}"
        )
    together, separate = (statistics.median(c) for c in zip(*rows, strict=True))
    print(f"median: explain {together:.1f} s, six studies {separate:.1f} s,"
          f" {separate / together:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
