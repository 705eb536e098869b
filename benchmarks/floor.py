"""The machine's floor for a finished run: how long its work must take here at any efficiency.

    python benchmarks/floor.py docs/results/paper-mnist

Reads the run's configuration and records (how many epochs each model trained; early stopping
makes that differ per model), counts the work, measures this machine's fp32 matmul peak and
memory bandwidth, and prints the floor next to the run's own wall time:
  * matmul work of training (forward and backward) and of evaluation (validation after every
    epoch, test set, the teachers' and ensemble members' pass over the training set for the
    soft targets), at the measured peak;
  * Adam's memory traffic (7 fp32 values per parameter per batch-32 step), at the measured
    bandwidth.
A run far above its floor has overhead to remove; a run near it needs a wider machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from engine import matmul_peak, memory_bandwidth, model_work
from kdbench.data import datasets as data
from kdbench.engine.mlp import layer_sizes
from kdbench.runs.store import read_config, read_records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cfg = read_config(args.run_dir)
    models = [r for r in read_records(args.run_dir) if r.is_model]
    d = cfg.data
    splits = data.load(d.dataset, d.data_dir, d.validation_split, d.train_limit)
    n_in, n_out = splits.n_features, splits.n_classes
    teacher = layer_sizes(n_in, cfg.model.teacher_hidden, n_out)
    student = layer_sizes(n_in, cfg.model.student_hidden, n_out)
    sets = len(splits.x_train), len(splits.x_val), len(splits.x_test), cfg.train.batch_size
    work = [
        model_work(
            teacher if r.role == "teacher" else student,
            r.epochs,
            *sets,
            source=r.role in ("teacher", "ensemble"),
        )
        for r in models
    ]
    train, evaluation, traffic = (sum(col) for col in zip(*work, strict=True))

    machine = [(matmul_peak(), memory_bandwidth()) for _ in range(args.rounds)]
    wall = json.loads((args.run_dir / "summary.json").read_text())["timing"]["total_seconds"]
    print(f"run: {args.run_dir} ({len(models)} models, {sum(r['epochs'] for r in models)} epochs)")
    print(
        f"work: {train / 1e12:.1f} TFLOP training + {evaluation / 1e12:.1f} TFLOP evaluation;"
        f" Adam traffic {traffic / 1e12:.2f} TB"
    )
    # the host is shared: the best round is the machine at its fastest, the lowest floor
    for label, pick in (("best", max), ("median", statistics.median)):
        peak, bandwidth = pick(m[0] for m in machine), pick(m[1] for m in machine)
        compute, memory = (train + evaluation) / peak / 1e9, traffic / bandwidth / 1e9
        print(
            f"{label} of {args.rounds}: matmul peak {peak:.1f} GFLOP/s, bandwidth"
            f" {bandwidth:.1f} GB/s -> floor {compute / 60:.1f} min matmul + {memory / 60:.1f} min"
            f" Adam = {(compute + memory) / 60:.1f} min | the run: {wall / 60:.1f} min ="
            f" {wall / (compute + memory):.2f}x the floor"
        )


if __name__ == "__main__":
    main()
