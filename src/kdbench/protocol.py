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
from typing import Any

import numpy as np
import torch

from kdbench import engine
from kdbench.config import Config
from kdbench.data import Splits
from kdbench.distill import ensemble_targets, error_rate, soften
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


def _job(name, sizes, coords, base, targets=None) -> engine.Job:
    seeds = [derive_seeds(base, r, role, m) for r, role, m in coords]
    return engine.Job(name, sizes, [s[0] for s in seeds], [s[1] for s in seeds], targets)


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


def run_study(
    cfg: Config,
    splits: Splits,
    sink: RecordSink,
    progress: engine.Progress | None = None,
    checkpoint: Callable[[str, list[Record], list[torch.Tensor]], None] | None = None,
) -> list[Record]:
    """Train and evaluate everything; each finished model goes to `sink` as one record."""
    p, t, k = cfg.protocol, cfg.train, cfg.distill
    base, repeats, members = p.seed, range(p.repeats), p.members
    n_in, n_out = splits.n_features, splits.n_classes
    teacher_sizes = layer_sizes(n_in, cfg.model.teacher_hidden, n_out)
    student_sizes = layer_sizes(n_in, cfg.model.student_hidden, n_out)
    records: list[Record] = []

    def finish(name, result, coords, roles, logits_val, logits_test) -> list[Record]:
        val_err = error_rate(logits_val, splits.y_val.expand(len(coords), -1)).cpu()
        test_err = error_rate(logits_test, splits.y_test.expand(len(coords), -1)).cpu()
        recs = _records(result, coords, roles, base, val_err, test_err)
        for rec in recs:
            sink(rec)
        if checkpoint is not None:
            checkpoint(name, recs, result.params)
        records.extend(recs)
        return recs

    # 1. teachers
    coords = [(r, "teacher", 0) for r in repeats]
    res = engine.train(_job("teachers", teacher_sizes, coords, base), splits, t, progress)
    teacher_train = stack_logits(res.params, splits.x_train)
    teacher_val = stack_logits(res.params, splits.x_val)
    teacher_test = stack_logits(res.params, splits.x_test)
    finish("teachers", res, coords, ["teacher"] * len(coords), teacher_val, teacher_test)

    # 2. ensemble members and hard-label students: all small networks on hard labels
    coords = [(r, "ensemble", m) for r in repeats for m in range(members)]
    coords += [(r, "student", 0) for r in repeats]
    roles = ["ensemble"] * (p.repeats * members) + ["student_hard"] * p.repeats
    res = engine.train(_job("small networks", student_sizes, coords, base), splits, t, progress)
    n_ens = p.repeats * members
    small_val = stack_logits(res.params, splits.x_val)
    small_test = stack_logits(res.params, splits.x_test)
    finish("hard_label_small", res, coords, roles, small_val, small_test)
    member_params = [q[:n_ens] for q in res.params]
    ens_train = stack_logits(member_params, splits.x_train).view(p.repeats, members, -1, n_out)
    ens_val = small_val[:n_ens].view(p.repeats, members, -1, n_out)
    ens_test = small_test[:n_ens].view(p.repeats, members, -1, n_out)
    # the ensemble predicts by averaging its members' probabilities (T = 1)
    ens_test_err = error_rate(torch.softmax(ens_test, -1).mean(1), splits.y_test).cpu()
    ens_val_err = error_rate(torch.softmax(ens_val, -1).mean(1), splits.y_val).cpu()
    for r in repeats:
        rec = {
            "kind": "ensemble",
            "repeat": r,
            "role": "ensemble",
            "member": None,
            "members": members,
            "val_error": float(ens_val_err[r]),
            "test_error": float(ens_test_err[r]),
        }
        sink(rec)
        records.append(rec)

    # 3. distilled students on cached soft targets: rows 0..R-1 teacher, R..2R-1 ensemble
    def targets_of(teacher_logits, ensemble_logits):
        from_teacher = soften(teacher_logits, k.temperature)
        from_ensemble = torch.stack(
            [ensemble_targets(e, k.temperature, k.ensemble_targets) for e in ensemble_logits]
        )
        return torch.cat([from_teacher, from_ensemble])

    soft = engine.SoftTargets(
        train=targets_of(teacher_train, ens_train),
        val=targets_of(teacher_val, ens_val),
        group=torch.arange(2 * p.repeats),
        temperature=k.temperature,
        alpha=k.alpha,
        monitor=k.kd_monitor,
    )
    del teacher_train, ens_train
    coords = [(r, "student", 0) for r in repeats] * 2
    roles = ["student_from_teacher"] * p.repeats + ["student_from_ensemble"] * p.repeats
    res = engine.train(
        _job("distilled students", student_sizes, coords, base, soft), splits, t, progress
    )
    val, test = stack_logits(res.params, splits.x_val), stack_logits(res.params, splits.x_test)
    finish("distilled_students", res, coords, roles, val, test)
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
