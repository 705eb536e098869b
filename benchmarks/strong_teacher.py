"""What it takes to train a strong teacher: one teacher's validation error, epoch by epoch.

    python benchmarks/strong_teacher.py --epochs 40 --max-norm 3 --lr-decay 0.97

Trains one teacher of `--hidden` sizes on full MNIST through kdbench's engine (the same stack,
dropout, jitter, max-norm and learning-rate decay the `hinton-strong` preset uses) for a fixed
number of epochs, then prints its validation error after every epoch and its test error at the
end, so the preset's `teacher_epochs` is chosen from a measured curve, not guessed.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from kdbench.config import TrainConfig
from kdbench.data import datasets as data
from kdbench.engine import trainer as engine
from kdbench.engine.losses import error_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", default="1200,1200")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--dropout", type=float, nargs=2, default=(0.2, 0.5), metavar=("IN", "HID"))
    ap.add_argument("--jitter", type=int, default=2)
    ap.add_argument("--max-norm", type=float, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-decay", type=float, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = data.load("mnist", validation_split=0.1)
    sizes = [splits.n_features, *map(int, args.hidden.split(",")), splits.n_classes]
    cfg = dataclasses.replace(TrainConfig(), epochs=args.epochs, learning_rate=args.lr)
    stack = engine.Stack(
        "teacher", sizes, [0], [1], dropout=tuple(args.dropout), jitter=args.jitter,
        max_norm=args.max_norm, lr_decay=args.lr_decay,
    )  # fmt: skip
    start = time.perf_counter()
    result = engine.train(stack, splits, cfg)
    seconds = time.perf_counter() - start
    for epoch, log in enumerate(result.history[0], start=1):
        print(f"epoch {epoch:3d}: validation error {100 * log['val_error']:.2f}%,"
              f" train loss {log['train_loss']:.4f}")  # fmt: skip
    test = stack.model.logits(result.params, splits.x_test)
    error = float(error_rate(test, splits.y_test.expand(1, -1))[0])
    print(
        f"{vars(args)}: test error {100 * error:.2f}% after {args.epochs} epochs,"
        f" {seconds / 60:.1f} min ({seconds / args.epochs:.1f} s per epoch)"
    )


if __name__ == "__main__":
    main()
