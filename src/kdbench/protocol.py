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
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from kdbench import engine
from kdbench.config import Config
from kdbench.data import Splits
from kdbench.distill import ensemble_targets, error_rate, head_outputs, soften
from kdbench.models import Params, layer_sizes, stack_logits

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


@dataclass
class Upstream:
    """What distillation needs from the teachers and ensembles. Their logits on the training set
    cost as much as an epoch; they are computed only when a stack is actually distilled."""

    teachers: Params  # one teacher per repeat
    members: Params  # ensemble members, repeat-major: [R * K, ...]
    repeats: int

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Ensemble member logits on `x`: [R, K, N, C]."""
        ens = stack_logits(self.members, x)
        return ens.view(self.repeats, -1, *ens.shape[1:])

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(teacher logits [R, N, C], ensemble member logits [R, K, N, C]) on `x`."""
        return stack_logits(self.teachers, x), self.member_logits(x)


def _phase(name, cfg, splits, coords, roles, cache, progress, sizes, dropout=(0.0, 0.0)):
    """(params, records) of one stack, trained (and saved) or loaded."""
    base = cfg.protocol.seed
    cached = cache.load_phase(name) if cache is not None else None
    if cached is not None:
        return [q.to(splits.x_train.device) for q in cached[0]], cached[1]
    res = engine.train(_job(name, sizes, coords, base, None, dropout), splits, cfg.train, progress)
    return res.params, _record_stack(name, res, coords, roles, base, splits, cache)


def _record_stack(name, res, coords, roles, base, splits, cache) -> list[Record]:
    """Evaluate a trained stack, make its records, and save weights and records together."""
    val, test = stack_logits(res.params, splits.x_val), stack_logits(res.params, splits.x_test)
    val_err = error_rate(val, splits.y_val.expand(len(val), -1)).cpu()
    test_err = error_rate(test, splits.y_test.expand(len(test), -1)).cpu()
    recs = _records(res, coords, roles, base, val_err, test_err)
    if cache is not None:
        cache.save_phase(name, res.params, recs)
    return recs


def upstream(
    cfg: Config,
    splits: Splits,
    emit: RecordSink,
    progress: engine.Progress | None = None,
    cache: PhaseCache | None = None,
) -> Upstream:
    """Stacks 1 and 2 (teachers; ensemble members and hard-label students), trained or loaded;
    their records and each ensemble's go to `emit`."""
    p = cfg.protocol
    repeats, members = range(p.repeats), p.members
    n_in, n_out = splits.n_features, splits.n_classes
    teacher_sizes = layer_sizes(n_in, cfg.model.teacher_hidden, n_out)
    student_sizes = layer_sizes(n_in, cfg.model.student_hidden, n_out)

    # 1. teachers
    coords = [(r, "teacher", 0) for r in repeats]
    dropout = (cfg.model.teacher_input_dropout, cfg.model.teacher_dropout)
    teachers, recs = _phase(
        "teachers", cfg, splits, coords, ["teacher"] * p.repeats, cache, progress,
        teacher_sizes, dropout,
    )  # fmt: skip
    for rec in recs:
        emit(rec)

    # 2. ensemble members and hard-label students: all small networks on hard labels
    coords = [(r, "ensemble", m) for r in repeats for m in range(members)]
    coords += [(r, "student", 0) for r in repeats]
    roles = ["ensemble"] * (p.repeats * members) + ["student_hard"] * p.repeats
    params, recs = _phase(
        "small networks", cfg, splits, coords, roles, cache, progress, student_sizes
    )
    for rec in recs:
        emit(rec)
    ensemble = [q[: p.repeats * members] for q in params]
    up = Upstream(teachers, ensemble, p.repeats)
    # computed the same way trained or loaded, so a resumed run gives the same floats
    ens_val, ens_test = up.member_logits(splits.x_val), up.member_logits(splits.x_test)
    # the ensemble predicts by averaging its members' probabilities (T = 1)
    ens_test_err = error_rate(torch.softmax(ens_test, -1).mean(1), splits.y_test).cpu()
    ens_val_err = error_rate(torch.softmax(ens_val, -1).mean(1), splits.y_val).cpu()
    member_recs = [rec for rec in recs if rec["role"] == "ensemble"]

    def diverged(r):  # an ensemble with a diverged member is itself diverged
        epochs = [x["diverged_epoch"] for x in member_recs if x["repeat"] == r]
        epochs = [e for e in epochs if e is not None]
        return min(epochs) if epochs else None

    for r in repeats:
        emit(
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
        )
    return up


def _soft_targets(k, head: str, teacher_logits, ensemble_logits) -> torch.Tensor:
    """[2R, N, C]: rows 0..R-1 from each repeat's teacher, R..2R-1 from its ensemble."""
    from_teacher = soften(head_outputs(teacher_logits, head), k.temperature)
    from_ensemble = torch.stack(
        [
            ensemble_targets(head_outputs(e, head), k.temperature, k.ensemble_targets)
            for e in ensemble_logits
        ]
    )
    return torch.cat([from_teacher, from_ensemble])


def _one_or_each(values: list[float]) -> float | torch.Tensor:
    """One scalar when every member agrees (the ordinary study), else one value per member."""
    return values[0] if len(set(values)) == 1 else torch.tensor(values)


DISTILLED = "distilled students"


def distil(
    cfgs: list[Config],
    splits: Splits,
    up: Upstream,
    caches: list[PhaseCache | None],
    progress: engine.Progress | None = None,
) -> list[list[Record]]:
    """Stack 3, the distilled students, for one configuration or for several that share their
    teachers and ensembles (a sweep's grid points: each its own temperature, alpha, ensemble
    targets), trained as one stack on cached soft targets. Returns each configuration's records.

    The stack is all-or-nothing: if any configuration lacks its checkpoint, all are trained
    again (those already saved are kept), so a resumed sweep reproduces the same floats.
    """
    first = cfgs[0]
    for cfg in cfgs[1:]:
        if (cfg.data, cfg.model, cfg.train, cfg.protocol) != (
            first.data, first.model, first.train, first.protocol
        ) or cfg.distill.kd_monitor != first.distill.kd_monitor:  # fmt: skip
            raise ValueError("configurations distilled as one stack must share their teachers")
    cached = [c.load_phase(DISTILLED) if c is not None else None for c in caches]
    if all(x is not None for x in cached):
        return [x[1] for x in cached]

    p, head = first.protocol, first.model.head
    n_rows = 2 * p.repeats
    train_logits, val_logits = up.logits(splits.x_train), up.logits(splits.x_val)
    row_of: dict[tuple, int] = {}  # configurations with the same temperature share targets
    train_rows, val_rows, group, temps, alphas = [], [], [], [], []
    for cfg in cfgs:
        k = cfg.distill
        key = (k.temperature, k.ensemble_targets)
        if key not in row_of:
            row_of[key] = n_rows * len(row_of)
            train_rows.append(_soft_targets(k, head, *train_logits))
            val_rows.append(_soft_targets(k, head, *val_logits))
        group += range(row_of[key], row_of[key] + n_rows)
        temps += [k.temperature] * n_rows
        alphas += [k.alpha] * n_rows
    soft = engine.SoftTargets(
        train=torch.cat(train_rows),
        val=torch.cat(val_rows),
        group=torch.tensor(group),
        temperature=_one_or_each(temps),
        alpha=_one_or_each(alphas),
        monitor=first.distill.kd_monitor,
        head=head,
    )
    del train_rows, val_rows, train_logits, val_logits
    coords = [(r, "student", 0) for r in range(p.repeats)] * 2
    roles = ["student_from_teacher"] * p.repeats + ["student_from_ensemble"] * p.repeats
    sizes = layer_sizes(splits.n_features, first.model.student_hidden, splits.n_classes)
    job = _job(DISTILLED, sizes, coords * len(cfgs), p.seed, soft)
    res = engine.train(job, splits, first.train, progress)
    out = []
    for i, cache in enumerate(caches):
        if cached[i] is not None:
            out.append(cached[i][1])
            continue
        part = _members(res, slice(i * n_rows, (i + 1) * n_rows))
        out.append(_record_stack(DISTILLED, part, coords, roles, p.seed, splits, cache))
    return out


def _members(res: engine.Result, rows: slice) -> engine.Result:
    """The part of a stack's result that belongs to the members at `rows`."""
    share = len(res.epochs[rows]) / len(res.epochs)
    return engine.Result(
        params=[q[rows] for q in res.params],
        epochs=res.epochs[rows],
        best_epoch=res.best_epoch[rows],
        diverged_epoch=res.diverged_epoch[rows],
        history=res.history[rows],
        seconds=res.seconds * share,
    )


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
    records: list[Record] = []

    def emit(rec: Record) -> None:
        sink(rec)
        records.append(rec)

    up = upstream(cfg, splits, emit, progress, cache)
    for rec in distil([cfg], splits, up, [cache], progress)[0]:
        emit(rec)
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
