"""Latency benchmark: the resources table (size, MACs, latency per image) for the paper's models.

    python benchmarks/latency.py                         # paper architectures, fresh weights
    python benchmarks/latency.py runs/paper-mnist        # a finished run's checkpoints, repeat 0
    python benchmarks/latency.py --threads 1,2 --rounds 3

Latency of a dense fp32 network does not depend on the values of its weights, so without a run
folder the models are initialised from the paper's layer sizes (Glorot, as kdbench trains them);
with one, the trained checkpoints are loaded. Each round measures every row in PyTorch eager and
ONNX Runtime at batch 1 and 256 (after warm-up, medians of timing blocks); the table reports the
median over rounds, and the spread (the median of each round's interquartile range) beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from kdbench.config import Config
from kdbench.data import datasets as data
from kdbench.engine.architectures import of_config
from kdbench.roles import ROWS
from kdbench.runs import store
from kdbench.runs.latency import BATCHES, measure
from kdbench.runs.resources import counts

KEYS = [f"{engine}_b{b}" for engine in ("torch", "onnx") for b in BATCHES]


def fresh_members(model, count, seed):
    stack = model.init([seed + m for m in range(count)])
    return [[t[m].detach() for t in stack] for m in range(count)]


def models(run_dir: Path | None, cfg: Config, n_in: int, n_out: int):
    """(row, model, members) for each table row."""
    out = []
    both = of_config(cfg, n_in, n_out)
    for row in ROWS:
        model = both.teacher if row == "teacher" else both.student
        count = cfg.protocol.members if row == "ensemble" else 1
        if run_dir is None:
            members = fresh_members(model, count, seed=len(out))
        else:
            members = store.load_members(run_dir, row, 0)
        out.append((row, model, members))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="?", type=Path, default=None)
    ap.add_argument("--threads", default="1", help="comma-separated thread counts")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cfg = Config()
    if args.run_dir is not None:
        cfg = Config.from_dict(json.loads((args.run_dir / "config.json").read_text()))
    splits = data.load("mnist", None, 0.1, None)
    x = splits.x_test[:256].contiguous()
    rows = models(args.run_dir, cfg, splits.n_features, splits.n_classes)
    print(
        f"torch {torch.__version__}; source: {args.run_dir or 'fresh weights'};"
        f" {args.rounds} rounds; microseconds per image, median (median IQR)"
    )
    for threads in (int(t) for t in args.threads.split(",")):
        samples = {row: [] for row, _, _ in rows}
        for _ in range(args.rounds):
            for row, model, members in rows:
                samples[row].append(measure(members, x, model, threads))
        print(f"\nthreads = {threads}")
        header = "| row | params | MACs/image | fp32 KB | int8 KB | " + " | ".join(KEYS) + " |"
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        for row, model, members in rows:
            fig = counts(model.size(), len(members))
            cells = []
            for key in KEYS:
                med = statistics.median(s[key]["median_us"] for s in samples[row])
                iqr = statistics.median(s[key]["q3_us"] - s[key]["q1_us"] for s in samples[row])
                cells.append(f"{med:.2f} ({iqr:.2f})")
            print(
                f"| {row} | {fig['params']:,} | {fig['macs']:,} |"
                f" {fig['bytes_float32'] / 1024:.0f} | {fig['bytes_int8'] / 1024:.0f} | "
                + " | ".join(cells)
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
