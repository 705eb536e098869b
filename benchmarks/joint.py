"""What training the teachers along with their students costs (`teacher_updates = joint`).

    python benchmarks/joint.py                           # reduced protocol, 3 rounds, medians
    python benchmarks/joint.py --train-limit 20000 --repeats 2 --members 10 --epochs 2 --rounds 3

Two measurements, each repeated and reported as medians, the baseline measured in the same run:

1. Whole studies: the `paper` preset (frozen teachers, cached soft targets) and `paper-keras`
   (each distilled student trains its own copies of its teacher or ensemble), same settings,
   interleaved, wall time of `run_study` and of its distilled stack alone.
2. Per training step of the full study's distilled stack (10 repeats: 10 students from the
   teacher, 10 from the 10-member ensemble), ms per batch-32 step: frozen, with only the
   teacher copies, with only the ensemble copies, and with both; hence the cost of one copy of
   each kind.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdbench.config import Config
from kdbench.data import datasets as data
from kdbench.engine.losses import PaperKD
from kdbench.engine.mlp import MLP, init_stack, layer_sizes
from kdbench.engine.objectives import Batch, Distillation
from kdbench.engine.optim import Adam
from kdbench.engine.teachers import CachedTeachers, Copies, TrainedTeachers
from kdbench.protocol.presets import resolve
from kdbench.protocol.study import run_study


def study_seconds(cfg: Config, splits: data.Splits) -> tuple[float, float]:
    """(whole study, distilled stack) wall seconds."""
    start = time.perf_counter()
    records = run_study(cfg, splits, sink=lambda rec: None)
    total = time.perf_counter() - start
    distilled = sum(r.seconds or 0 for r in records if str(r.role).startswith("student_from"))
    return total, distilled


def step_ms(splits, n_teacher: int, n_ensemble: int, joint: bool, members: int, steps: int):
    """ms per step (median) of a stack of n_teacher students distilled from a teacher and
    n_ensemble from a `members`-member ensemble: teachers trained along (`joint`) or frozen."""
    n = n_teacher + n_ensemble
    sizes_t = layer_sizes(784, (500, 400, 300, 200, 100), 10)
    sizes_s = layer_sizes(784, (100,), 10)
    loss = PaperKD()
    if joint:
        copies = []
        if n_teacher:
            teachers = init_stack(sizes_t, range(n_teacher))
            copies.append(Copies(teachers, list(range(n_teacher)), 1, 1e-3, 1e-7))
        if n_ensemble:
            ensemble = init_stack(sizes_s, range(100, 100 + n_ensemble * members))
            copies.append(Copies(ensemble, list(range(n_teacher, n)), members, 1e-3, 1e-7))
        source = TrainedTeachers(copies, loss.targets, 10.0)
    else:
        soft = torch.softmax(torch.randn(2, len(splits.x_train), 10), -1)
        group = torch.tensor([0] * n_teacher + [1] * n_ensemble)
        source = CachedTeachers(soft, soft[:, :10], group)
    objective = Distillation(loss, source, 10.0, 0.1)
    params = init_stack(sizes_s, range(200, 200 + n))
    adam = Adam(params, 1e-3, 1e-7)
    objective.begin_epoch(torch.arange(n))
    gen = torch.Generator().manual_seed(0)
    times = []
    for s in range(steps):
        index = torch.randint(0, len(splits.x_train), (n, 32), generator=gen)
        b = Batch(splits.x_train[index], splits.y_train[index], index)
        t = time.perf_counter()
        MLP(sizes_s).step(params, adam, b.x, lambda z, b=b: objective.loss(z, b))
        objective.after_step()
        if s >= 5:  # warm-up steps are not timed
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-limit", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    flags = dict(train_limit=args.train_limit, repeats=args.repeats, members=args.members,
                 epochs=args.epochs)  # fmt: skip
    frozen, joint = resolve("paper", **flags), resolve("paper-keras", **flags)
    d = frozen.data
    splits = data.load(d.dataset, d.data_dir, d.validation_split, d.train_limit)
    print(
        f"protocol: {len(splits.x_train)} training images, {args.repeats} repeats,"
        f" {args.members} members, {args.epochs} epochs; torch {torch.__version__},"
        f" {torch.get_num_threads()} threads"
    )
    rows = []
    for r in range(1, args.rounds + 1):
        f_total, f_dist = study_seconds(frozen, splits)
        j_total, j_dist = study_seconds(joint, splits)
        rows.append((f_total, j_total, f_dist, j_dist))
        print(
            f"round {r}: study paper {f_total:6.1f} s, paper-keras {j_total:6.1f} s"
            f" ({j_total / f_total:.2f}x) | distilled stack {f_dist:6.1f} s vs {j_dist:6.1f} s"
            f" ({j_dist / f_dist:.2f}x)"
        )
    med = [statistics.median(c) for c in zip(*rows, strict=True)]
    print(
        f"median: study {med[0]:.1f} s vs {med[1]:.1f} s ({med[1] / med[0]:.2f}x);"
        f" distilled stack {med[2]:.1f} s vs {med[3]:.1f} s ({med[3] / med[2]:.2f}x)"
    )

    k = 10  # the full study: 10 repeats, 10-member ensembles
    cases = {  # (students from a teacher, from an ensemble)
        "teacher students": (10, 0),
        "ensemble students": (0, 10),
        "full distilled stack": (10, 10),
    }
    timings: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):  # interleaved: frozen and joint of a case back to back
        for name, (nt, ne) in cases.items():
            for joint_copies in (False, True):
                ms = step_ms(splits, nt, ne, joint_copies, k, args.steps)
                timings.setdefault((name, joint_copies), []).append(ms)
    ms = {key: statistics.median(v) for key, v in timings.items()}
    print(f"\nms per batch-32 step, medians of {args.rounds} rounds of {args.steps} steps:")
    for name in cases:
        f, j = ms[(name, False)], ms[(name, True)]
        print(f"  {name:<22} frozen {f:7.2f}   joint {j:7.2f}   ({j / f:.2f}x)")
    teacher = (ms[("teacher students", True)] - ms[("teacher students", False)]) / 10
    member = (ms[("ensemble students", True)] - ms[("ensemble students", False)]) / (10 * k)
    print(
        f"  one teacher copy (500-400-300-200-100): {teacher:.2f} ms a step;"
        f" one ensemble-member copy (100): {member:.3f} ms a step"
    )


if __name__ == "__main__":
    main()
