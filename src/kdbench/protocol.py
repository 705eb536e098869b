"""The paper's study: per repeat a teacher, an ensemble, two distilled students, a hard student.

Repeats are independent but share shapes, so each role is trained for all repeats at once, in
three stacks:

1. the teachers (one per repeat);
2. every small network trained on hard labels: ensemble members and hard-label students;
3. the distilled students, from the teacher and from the ensemble, on cached soft targets
   (teachers are evaluated once, not inside every training step).

Seeds come from (base seed, repeat, role, member) alone, so a model's result does not depend on
which stack it was trained in. The three students of a repeat share one seed: same
initialisation, same shuffling (common random numbers), so their paired difference measures the
training signal, not luck of the draw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from kdbench import engine
from kdbench.config import Config
from kdbench.data import Splits
from kdbench.distill import ensemble_targets, error_rate, head_outputs, soften
from kdbench.models import layer_sizes, stack_logits

ROWS = ("teacher", "student_from_teacher", "ensemble", "student_from_ensemble", "student_hard")
_SEED_ROLE = {"teacher": 1, "ensemble": 2, "student": 3}

Record = dict[str, Any]
RecordSink = Callable[[Record], None]


def derive_seeds(base: int, repeat: int, seed_role: str, member: int = 0) -> tuple[int, int]:
    """(init seed, shuffle seed) for one model, from its coordinates alone."""
    seq = np.random.SeedSequence([base, repeat, _SEED_ROLE[seed_role], member])
    init, shuffle = seq.generate_state(2, dtype=np.uint32)
    return int(init), int(shuffle)


def _job(name, sizes, coords, base, targets=None, dropout=(0.0, 0.0)) -> engine.Job:
    seeds = [derive_seeds(base, r, role, m) for r, role, m in coords]
    return engine.Job(name, sizes, [s[0] for s in seeds], [s[1] for s in seeds], targets, dropout)


def _records(result, coords, roles, base, val_err, test_err) -> list[Record]:
    out = []
    for i, ((r, seed_role, m), role) in enumerate(zip(coords, roles, strict=True)):
        init_seed, shuffle_seed = derive_seeds(base, r, seed_role, m)
        out.append(
            {
                "kind": "model",
                "repeat": r,
                "role": role,
                "member": m,
                "seed": init_seed,
                "shuffle_seed": shuffle_seed,
                "epochs": result.epochs[i],
                "best_epoch": result.best_epoch[i],
                "diverged_epoch": result.diverged_epoch[i],
                "val_error": float(val_err[i]),
                "test_error": float(test_err[i]),
                "seconds": result.seconds / len(coords),
                "history": result.history[i],
            }
        )
    return out


class PhaseCache(Protocol):
    """Where finished stacks are kept, so a resumed run does not retrain them."""

    def load_phase(self, name: str) -> tuple[list[torch.Tensor], list[Record]] | None: ...

    def save_phase(self, name: str, params: list[torch.Tensor], records: list[Record]) -> None: ...


def run_study(
    cfg: Config,
    splits: Splits,
    sink: RecordSink,
    progress: engine.Progress | None = None,
    cache: PhaseCache | None = None,
) -> list[Record]:
    """Train and evaluate everything; each finished model goes to `sink` as one record.

    With a `cache`, a stack that is already there is loaded instead of trained (resume), and
    every stack is saved there, weights and records together, before its records are emitted.
    """
    p, t, k = cfg.protocol, cfg.train, cfg.distill
    base, repeats, members = p.seed, range(p.repeats), p.members
    n_in, n_out = splits.n_features, splits.n_classes
    teacher_sizes = layer_sizes(n_in, cfg.model.teacher_hidden, n_out)
    student_sizes = layer_sizes(n_in, cfg.model.student_hidden, n_out)
    device = splits.x_train.device
    records: list[Record] = []

    def emit(recs: list[Record]) -> None:
        for rec in recs:
            sink(rec)
        records.extend(recs)

    def phase(name, sizes, coords, roles, targets=None, dropout=(0.0, 0.0)):
        """(params, validation logits, test logits) of one stack, trained or loaded."""
        cached = cache.load_phase(name) if cache is not None else None
        if cached is not None:
            params = [q.to(device) for q in cached[0]]
            recs = cached[1]
        else:
            job = _job(name, sizes, coords, base, targets, dropout)
            res = engine.train(job, splits, t, progress)
            params = res.params
        val, test = stack_logits(params, splits.x_val), stack_logits(params, splits.x_test)
        if cached is None:
            val_err = error_rate(val, splits.y_val.expand(len(coords), -1)).cpu()
            test_err = error_rate(test, splits.y_test.expand(len(coords), -1)).cpu()
            recs = _records(res, coords, roles, base, val_err, test_err)
            if cache is not None:
                cache.save_phase(name, params, recs)
        emit(recs)
        return params, val, test

    # 1. teachers
    coords = [(r, "teacher", 0) for r in repeats]
    dropout = (cfg.model.teacher_input_dropout, cfg.model.teacher_dropout)
    params, teacher_val, _ = phase(
        "teachers", teacher_sizes, coords, ["teacher"] * p.repeats, dropout=dropout
    )
    teacher_train = stack_logits(params, splits.x_train)

    # 2. ensemble members and hard-label students: all small networks on hard labels
    coords = [(r, "ensemble", m) for r in repeats for m in range(members)]
    coords += [(r, "student", 0) for r in repeats]
    roles = ["ensemble"] * (p.repeats * members) + ["student_hard"] * p.repeats
    params, small_val, small_test = phase("small networks", student_sizes, coords, roles)
    n_ens = p.repeats * members
    ens_train = stack_logits([q[:n_ens] for q in params], splits.x_train)
    ens_train = ens_train.view(p.repeats, members, -1, n_out)
    ens_val = small_val[:n_ens].view(p.repeats, members, -1, n_out)
    ens_test = small_test[:n_ens].view(p.repeats, members, -1, n_out)
    # the ensemble predicts by averaging its members' probabilities (T = 1)
    ens_test_err = error_rate(torch.softmax(ens_test, -1).mean(1), splits.y_test).cpu()
    ens_val_err = error_rate(torch.softmax(ens_val, -1).mean(1), splits.y_val).cpu()
    member_recs = [rec for rec in records if rec["role"] == "ensemble"]

    def diverged(r):  # an ensemble with a diverged member is itself diverged
        epochs = [x["diverged_epoch"] for x in member_recs if x["repeat"] == r]
        epochs = [e for e in epochs if e is not None]
        return min(epochs) if epochs else None

    emit(
        [
            {
                "kind": "ensemble",
                "repeat": r,
                "role": "ensemble",
                "member": None,
                "members": members,
                "diverged_epoch": diverged(r),
                "val_error": float(ens_val_err[r]),
                "test_error": float(ens_test_err[r]),
            }
            for r in repeats
        ]
    )

    # 3. distilled students on cached soft targets: rows 0..R-1 teacher, R..2R-1 ensemble
    head = cfg.model.head

    def targets_of(teacher_logits, ensemble_logits):
        from_teacher = soften(head_outputs(teacher_logits, head), k.temperature)
        from_ensemble = torch.stack(
            [
                ensemble_targets(head_outputs(e, head), k.temperature, k.ensemble_targets)
                for e in ensemble_logits
            ]
        )
        return torch.cat([from_teacher, from_ensemble])

    soft = engine.SoftTargets(
        train=targets_of(teacher_train, ens_train),
        val=targets_of(teacher_val, ens_val),
        group=torch.arange(2 * p.repeats),
        temperature=k.temperature,
        alpha=k.alpha,
        monitor=k.kd_monitor,
        head=head,
    )
    del teacher_train, ens_train
    coords = [(r, "student", 0) for r in repeats] * 2
    roles = ["student_from_teacher"] * p.repeats + ["student_from_ensemble"] * p.repeats
    phase("distilled students", student_sizes, coords, roles, soft)
    return records


def row_errors(records: list[Record]) -> dict[str, list[tuple[int, float]]]:
    """(repeat, test error) per table row; diverged models are left out (reported separately)."""
    rows: dict[str, list[tuple[int, float]]] = {name: [] for name in ROWS}
    for rec in records:
        role = rec["role"]
        if role == "ensemble" and rec.get("kind") != "ensemble":
            continue  # members are recorded, the row is the combined ensemble
        if rec.get("diverged_epoch") is not None:
            continue
        rows[role].append((rec["repeat"], rec["test_error"]))
    return {name: sorted(vals) for name, vals in rows.items()}
