"""Engine benchmark: kdbench's stacked engine vs a plain PyTorch loop, same data, same process.

    python benchmarks/engine.py                       # reduced protocol, 3 rounds, medians
    python benchmarks/engine.py --train-limit 20000 --repeats 2 --members 10 --epochs 2 --rounds 5

Measures, in one process:
  * the machine's fp32 matmul peak (a large torch.mm, best of several) and its memory bandwidth
    (a large in-place add, Adam's access pattern);
  * a plain baseline as a typical PyTorch user writes it: nn.Sequential + torch.optim.Adam, one
    model at a time, batch 32, the teacher(s) evaluated on the fly in every distillation step,
    each model evaluated on the validation set every epoch and on the test set;
  * kdbench's protocol (stacked engine, cached soft targets), with the same fixed-epoch settings;
and prints wall times, the ratio baseline / kdbench, kdbench's training GFLOP/s (matmul FLOPs of
forward and backward, counted from the layer sizes) as a fraction of the same-run peak, and the
largest gap between the two sides' test errors (same seeds: the same models up to rounding).

It also prints the machine's *floor* for this protocol: all matmul work (training and
evaluation) at the measured peak plus Adam's memory traffic (7 fp32 values per parameter per
step) at the measured bandwidth. No engine can beat it at fp32 and batch 32, so baseline / floor
bounds the ratio any engine can reach here.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time

import torch
import torch.nn.functional as F

from kdbench.config import Config
from kdbench.data import datasets as data
from kdbench.engine.mlp import init_stack, layer_sizes, member_module
from kdbench.protocol.stacks import derive_seeds
from kdbench.protocol.study import run_study


def matmul_peak(n: int = 2048, tries: int = 7) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(tries))
    return 2 * n**3 / best / 1e9


def memory_bandwidth(n: int = 25_000_000, tries: int = 7) -> float:
    """GB/s of a large in-place elementwise update (read and write), the access pattern of Adam."""
    a = torch.rand(n)
    a.add_(1.0)
    best = min(_timed(lambda: a.add_(1.0)) for _ in range(tries))
    return 2 * 4 * n / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def macs(sizes) -> int:
    return sum(a * b for a, b in itertools.pairwise(sizes))


ADAM_BYTES_PER_PARAM = 7 * 4  # reads weight, gradient, both moments; writes weight and moments


def model_work(
    sizes, epochs: int, n_train: int, n_val: int, n_test: int, batch: int, source: bool
) -> tuple[float, float, float]:
    """(training matmul FLOPs, evaluation matmul FLOPs, Adam bytes) of one model trained for
    `epochs`. Training: forward 2·MACs, backward 4·MACs less the first layer's input gradient,
    per image. Evaluation: the validation set after every epoch and again with the test set when
    the model is recorded; a teacher or ensemble member (`source`) also passes once over the
    training and validation sets for the cached soft targets. Adam: every batch step."""
    m = macs(sizes)
    train = epochs * n_train * (2 * m + 2 * (2 * m - sizes[0] * sizes[1]))
    passes = (epochs + 1) * n_val + n_test + (n_train + n_val if source else 0)
    steps = epochs * math.ceil(n_train / batch)
    return train, 2 * m * passes, ADAM_BYTES_PER_PARAM * steps * (m + sum(sizes[1:]))


def protocol_work(cfg: Config, splits: data.Splits) -> tuple[float, float, float]:
    """`model_work` summed over every model the fixed-epoch protocol trains."""
    p, n_in, n_out = cfg.protocol, splits.n_features, splits.n_classes
    teacher = layer_sizes(n_in, cfg.model.teacher_hidden, n_out)
    student = layer_sizes(n_in, cfg.model.student_hidden, n_out)
    models = [(teacher, True)] * p.repeats + [(student, True)] * (p.repeats * p.members)
    models += [(student, False)] * (3 * p.repeats)  # the hard-label and the two distilled students
    sizes = len(splits.x_train), len(splits.x_val), len(splits.x_test), cfg.train.batch_size
    work = [model_work(m, cfg.train.epochs, *sizes, source) for m, source in models]
    return tuple(sum(col) for col in zip(*work, strict=True))


def plain_baseline(cfg: Config, splits: data.Splits) -> tuple[float, dict[tuple[int, str], float]]:
    """One model at a time, the way the paper's Keras code (and most PyTorch code) does it; each
    model evaluated on the validation set after every epoch and on the test set, as kdbench does."""
    p, t, k = cfg.protocol, cfg.train, cfg.distill
    n_in, n_out = splits.n_features, splits.n_classes
    temp, alpha = k.temperature, k.alpha
    device = splits.x_train.device  # the CPU here; `gpu.py` passes CUDA splits

    errors: dict[tuple[int, str], float] = {}

    def evaluate(net, x, y) -> float:
        with torch.no_grad():
            return (net(x).argmax(1) != y).float().mean().item()

    def fit(sizes, seeds, teachers=(), key=None):
        net = member_module(init_stack(sizes, [seeds[0]]), 0).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=t.learning_rate, eps=t.adam_eps)
        gen = torch.Generator().manual_seed(seeds[1])
        n = len(splits.x_train)
        for _ in range(t.epochs):
            perm = torch.randperm(n, generator=gen)
            for s in range(0, n, t.batch_size):
                idx = perm[s : s + t.batch_size].to(device)
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
            evaluate(net, splits.x_val, splits.y_val)  # the validation error of each epoch
        test_error = evaluate(net, splits.x_test, splits.y_test)
        if key is not None:
            errors[key] = test_error
        return net

    start = time.perf_counter()
    teacher_sizes = layer_sizes(n_in, cfg.model.teacher_hidden, n_out)
    student_sizes = layer_sizes(n_in, cfg.model.student_hidden, n_out)
    for r in range(p.repeats):
        teacher = fit(teacher_sizes, derive_seeds(p.seed, r, "teacher"), key=(r, "teacher"))
        members = [
            fit(student_sizes, derive_seeds(p.seed, r, "ensemble", m)) for m in range(p.members)
        ]
        with torch.no_grad():
            probs = torch.stack([torch.softmax(m(splits.x_test), 1) for m in members]).mean(0)
        errors[r, "ensemble"] = (probs.argmax(1) != splits.y_test).float().mean().item()
        seeds = derive_seeds(p.seed, r, "student")
        fit(student_sizes, seeds, [teacher], key=(r, "student_from_teacher"))
        fit(student_sizes, seeds, members, key=(r, "student_from_ensemble"))
        fit(student_sizes, seeds, key=(r, "student_hard"))
    _sync(device)
    return time.perf_counter() - start, errors


def _sync(device) -> None:
    """Wait for the GPU's queued work (a no-op on the CPU) before a clock is read."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def kdbench_engine(cfg: Config, splits: data.Splits) -> tuple[float, dict[tuple[int, str], float]]:
    start = time.perf_counter()
    records = run_study(cfg, splits, sink=lambda rec: None)
    _sync(splits.x_train.device)
    seconds = time.perf_counter() - start
    rows = [r for r in records if r.role != "ensemble" or r.kind == "ensemble"]
    return seconds, {(r.repeat, str(r.role)): r.test_error for r in rows}


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
    flops, evaluation, traffic = protocol_work(cfg, splits)
    work = flops + evaluation
    print(
        f"protocol: {args.train_limit} images ({len(splits.x_train)} train),"
        f" {args.repeats} repeats, {args.members} members, {args.epochs} epochs, batch 32;"
        f" torch {torch.__version__},"
        f" {torch.get_num_threads()} threads; matmul work {flops / 1e12:.3f} TFLOP training +"
        f" {evaluation / 1e12:.3f} TFLOP evaluation; Adam traffic {traffic / 1e9:.0f} GB"
    )
    rows = []
    for i in range(args.rounds):
        peak, bandwidth = matmul_peak(), memory_bandwidth()
        floor = work / peak / 1e9 + traffic / bandwidth / 1e9
        base, base_errors = plain_baseline(cfg, splits)
        fast, fast_errors = kdbench_engine(cfg, splits)
        gflops = flops / fast / 1e9
        gap = max(abs(base_errors[k] - fast_errors[k]) for k in base_errors)
        rows.append((peak, bandwidth, floor, base, fast, base / fast, gflops / peak, fast / floor))
        print(
            f"round {i + 1}: peak {peak:5.1f} GFLOP/s, {bandwidth:4.1f} GB/s, floor {floor:5.1f} s"
            f" | baseline {base:6.1f} s | kdbench {fast:5.1f} s | ratio {base / fast:4.2f}x"
            f" | kdbench {gflops:4.1f} GFLOP/s = {gflops / peak:.0%} of peak,"
            f" {fast / floor:.2f}x the floor | test errors differ by at most {gap:.2%}",
            flush=True,
        )
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    print(
        f"median of {args.rounds}: peak {med[0]:.1f} GFLOP/s | bandwidth {med[1]:.1f} GB/s |"
        f" floor {med[2]:.1f} s | baseline {med[3]:.1f} s | kdbench {med[4]:.1f} s |"
        f" ratio {med[5]:.2f}x | {med[6]:.0%} of peak | {med[7]:.2f}x the floor |"
        f" best ratio the floor allows {med[3] / med[2]:.2f}x"
    )


if __name__ == "__main__":
    main()
