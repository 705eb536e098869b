"""What your recipe adds to an epoch: a cosine schedule, crops and flips, and SGD, against the
fixed recipe (Adam, no schedule, no augmentation), same stack, same process.

    python benchmarks/recipe.py --rounds 5 --threads 2

For each architecture, M members trained for one epoch on `--images` MNIST training images,
batch 32, as one kdbench stack: the fixed recipe (the baseline), then the same with a cosine
schedule, with --augment crop,flip, with both, and SGD (Nesterov, weight decay) in Adam's place.
All run interleaved in every round; prints each round and the median ratio to the baseline
(1.00: no cost; the issue's bound for schedules and augmentation is 1.10).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from kdbench.config import TrainConfig
from kdbench.data import datasets as data
from kdbench.engine import trainer as engine
from kdbench.engine.architectures import build

ARCHS = ("mlp:100", "cnn:4,8", "bncnn:4,8", "mbv2:8,16,32")
BASE = dataclasses.replace(TrainConfig(), epochs=1)
SGD = {"optimizer": "sgd", "learning_rate": 0.05, "nesterov": True, "weight_decay": 5e-4}
RECIPES = {  # the first is the baseline
    "fixed": BASE,
    "cosine": dataclasses.replace(BASE, lr_schedule="cosine"),
    "crop,flip": dataclasses.replace(BASE, augment="crop,flip"),
    "cosine+crop,flip": dataclasses.replace(BASE, lr_schedule="cosine", augment="crop,flip"),
    "sgd": dataclasses.replace(BASE, **SGD),
}


def epoch(model, seeds, splits, cfg) -> float:
    start = time.perf_counter()
    engine.train(engine.Stack("b", model, seeds, [s + 1000 for s in seeds]), splits, cfg)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = data.load("mnist", validation_split=0.1, train_limit=args.images)
    splits = dataclasses.replace(splits, image=data.IMAGES["mnist"])
    seeds = list(range(args.members))
    print(f"{args.members} members, one epoch of {len(splits.x_train)} images, batch 32,"
          f" {args.threads} thread(s)")  # fmt: skip
    for arch in args.archs:
        model = build(arch, splits.n_features, splits.n_classes, splits.image, True)
        epoch(model, seeds, splits, BASE)  # warm-up: compiled kernels, caches
        times: dict[str, list[float]] = {name: [] for name in RECIPES}
        for r in range(args.rounds):
            for name, cfg in RECIPES.items():
                times[name].append(epoch(model, seeds, splits, cfg))
            print(f"  {arch:<13} round {r + 1}: "
                  + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()))  # fmt: skip
        base = statistics.median(times["fixed"])
        for name in list(RECIPES)[1:]:
            ratio = statistics.median(
                a / b for a, b in zip(times[name], times["fixed"], strict=True)
            )
            print(f"{arch:<13} {name:<22} median {statistics.median(times[name]):.2f} s"
                  f" / fixed {base:.2f} s: {ratio:.3f}x")  # fmt: skip


if __name__ == "__main__":
    main()
