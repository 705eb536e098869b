"""Which small CNN for the conv study's students: microcontroller-sized, and on hard labels about
as accurate as the paper's 100-unit MLP or better?

    python benchmarks/small_cnn.py --repeats 3 --threads 2

Each architecture trains as a stack of `--repeats` hard-label students under the paper's protocol
(full MNIST, Adam 1e-3, batch 32, early stopping with patience 2 on the validation loss, the last
10% of the training images held out), the same seeds for every architecture. Prints per
architecture: test error (mean and 95% CI over the repeats), epochs, parameters, MACs per image,
float32 and int8 weight bytes (1 byte per weight, 4 per bias, as ONNX Runtime's dynamic
quantisation keeps biases in float32), batch-1 latency of one member in PyTorch (median, one
thread) and the training time.
"""

from __future__ import annotations

import argparse
import time

import torch

from kdbench.analysis.stats import summarize
from kdbench.config import TrainConfig
from kdbench.data import datasets as data
from kdbench.engine import trainer as engine
from kdbench.engine.architectures import build
from kdbench.runs.resources import time_per_image

ARCHS = ("mlp:100", "cnn:4,8", "cnn:8,16", "cnn:16,32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = data.load("mnist")
    seeds = list(range(args.repeats))
    print(f"{args.repeats} repeats, {len(splits.x_train)} training images, {args.threads} threads")
    print(
        "| architecture | test error % (95% CI) | epochs | params | MACs/image | fp32 B |"
        " int8 B | torch b1 µs | train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for arch in args.archs:
        model = build(arch, splits.n_features, splits.n_classes, data.IMAGES["mnist"])
        start = time.perf_counter()
        result = engine.train(engine.Stack(arch, model, seeds, [s + 1000 for s in seeds]),
                              splits, TrainConfig())  # fmt: skip
        seconds = time.perf_counter() - start
        with torch.no_grad():
            logits = model.logits(result.params, splits.x_test)
        errors = (logits.argmax(-1) != splits.y_test).float().mean(-1).tolist()
        s = summarize(errors)
        net = model.member(result.params, 0)
        weights = [p for p in net.parameters()]
        params = sum(p.numel() for p in weights)
        biases = sum(p.numel() for p in weights if p.dim() == 1)
        torch.set_num_threads(1)
        one = splits.x_test[:1]
        with torch.inference_mode():
            latency = time_per_image(lambda net=net, one=one: net(one), 1)["median_us"]
        torch.set_num_threads(args.threads)
        lo, hi = s["ci95_pct"]
        print(f"| `{arch}` | {s['mean_pct']:.2f} ({lo:.2f}–{hi:.2f}) |"
              f" {sum(result.epochs) / len(seeds):.1f} | {params:,} |"
              f" {model.macs_per_image():,} | {4 * params:,} | {params - biases + 4 * biases:,} |"
              f" {latency:.0f} | {seconds:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
