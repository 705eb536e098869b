"""The paper's study: per repeat a teacher, an ensemble, two distilled students, a hard student.

Repeats are independent but share shapes, so each role is trained for all repeats at once, in
three stacks (`roles.StackName`):

1. the teachers (one per repeat);
2. every small network trained on hard labels: ensemble members and hard-label students;
3. the distilled students, from the teacher and from the ensemble: on cached soft targets when
   the teachers are frozen (evaluated once, not inside every training step), or with their own
   copies of their teachers trained along with them (`teacher_updates = joint`).

Seeds come from (base seed, repeat, role, member) alone, so a model's result does not depend on
which stack it was trained in. The three students of a repeat share one seed: same
initialisation, same shuffling (common random numbers), so their paired difference measures the
training signal, not luck of the draw.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np

from kdbench.config import Config, TrainConfig, controls_of, teacher_schedule
from kdbench.data.datasets import Splits
from kdbench.engine import trainer as engine
from kdbench.engine.architectures import of_config
from kdbench.engine.losses import ensemble_probs, error_rate, loss_class
from kdbench.engine.meter import Meter
from kdbench.engine.mlp import Params
from kdbench.engine.objectives import Distillation
from kdbench.engine.stack_model import StackModel
from kdbench.engine.teachers import TrainedTeachers
from kdbench.protocol import controls, costs
from kdbench.protocol.own_teacher import OwnTeacher, TeacherLogits
from kdbench.protocol.targets import (
    Plan,
    Upstream,
    cached_teachers,
    copies_test_error,
    one_or_each,
    trained_teachers,
)
from kdbench.records import ENSEMBLE, MODEL, Record
from kdbench.roles import Role, StackName

_SEED_ROLE = {"teacher": 1, "ensemble": 2, "student": 3}  # the three students share seeds

RecordSink = Callable[[Record], None]
Coord = tuple[int, str, int]  # (repeat, seed role, member)


def derive_seeds(base: int, repeat: int, seed_role: str, member: int = 0) -> tuple[int, int]:
    """(init seed, shuffle seed) for one model, from its coordinates alone."""
    seq = np.random.SeedSequence([base, repeat, _SEED_ROLE[seed_role], member])
    init, shuffle = seq.generate_state(2, dtype=np.uint32)
    return int(init), int(shuffle)


def _stack(name, model, coords: list[Coord], base, **regularisation) -> engine.Stack:
    """One stack of models at `coords`, each with the seeds of its coordinates; the keywords
    (objective, dropout, jitter, max_norm, lr_decay) go to `engine.Stack` as they are."""
    seeds = [derive_seeds(base, r, role, m) for r, role, m in coords]
    return engine.Stack(name, model, [s[0] for s in seeds], [s[1] for s in seeds],
                        **regularisation)  # fmt: skip


def _records(result, coords, roles, base, val_err, test_err, copies, shares) -> list[Record]:
    out = []
    for i, ((r, seed_role, m), role) in enumerate(zip(coords, roles, strict=True)):
        init_seed, shuffle_seed = derive_seeds(base, r, seed_role, m)
        cost = shares[i]
        out.append(
            Record(
                kind=MODEL,
                repeat=r,
                role=role,
                member=m,
                seed=init_seed,
                shuffle_seed=shuffle_seed,
                epochs=result.epochs[i],
                best_epoch=result.best_epoch[i],
                diverged_epoch=result.diverged_epoch[i],
                val_error=float(val_err[i]),
                test_error=float(test_err[i]),
                seconds=cost.seconds,
                history=result.history[i],
                copies_test_error=None if copies is None else copies[i],
                train_macs=cost.train_macs,
                target_macs=cost.target_macs,
                peak_memory_bytes=cost.peak_memory_bytes,
                memory_kind=cost.memory_kind,
                energy_joules=cost.energy_joules,
            )
        )
    return out


class StackCache(Protocol):
    """Where finished stacks are kept, so a resumed run does not retrain them."""

    def load_stack(self, name: StackName) -> tuple[Params, list[Record]] | None: ...

    def save_stack(self, name: StackName, params: Params, records: list[Record]) -> None: ...

    def load_snapshot(self, name: StackName) -> engine.Snapshot | None: ...

    def save_snapshot(self, name: StackName, snap: engine.Snapshot) -> None: ...


@dataclass(frozen=True)
class HardLabelStack:
    """One stack trained on hard labels: which models (coordinates, roles), their architecture
    and their regularisation."""

    name: StackName
    coords: list[Coord]
    roles: list[Role]
    model: StackModel
    dropout: tuple[float, float] = (0.0, 0.0)  # (input, hidden)
    jitter: int = 0
    max_norm: float | None = None
    lr_decay: float | None = None
    schedule: TrainConfig | None = None  # its own (the teachers'); None: the configuration's


def _trained_or_loaded(spec: HardLabelStack, cfg, splits, cache, progress):
    """(params, records) of one hard-label stack, trained (and saved) or loaded."""
    base = cfg.protocol.seed
    cached = cache.load_stack(spec.name) if cache is not None else None
    if cached is not None:
        return [q.to(splits.x_train.device) for q in cached[0]], cached[1]
    stack = _stack(spec.name, spec.model, spec.coords, base, dropout=spec.dropout,
                   jitter=spec.jitter, max_norm=spec.max_norm, lr_decay=spec.lr_decay)  # fmt: skip
    resume, keep = None, None
    if cache is not None:  # a long hard-label stack cut short continues from its snapshot
        resume = cache.load_snapshot(spec.name)
        keep = partial(cache.save_snapshot, spec.name)
    with Meter(splits.x_train.device) as meter:
        res = engine.train(stack, splits, spec.schedule or cfg.train, progress, resume, keep)
    train = costs.training_macs(spec.model, splits, res.epochs)
    # the engine's seconds include the parts of a stack before it was cut short and resumed
    shares = costs.apportion(meter.result, res.seconds, train, [None] * len(train))
    recs = _record_stack(
        spec.name, spec.model, res, spec.coords, spec.roles, base, splits, cache, shares
    )
    return res.params, recs


def _record_stack(name, model, res, coords, roles, base, splits, cache, shares, copies=None):
    """Evaluate a trained stack, make its records, and save weights and records together."""
    val, test = model.logits(res.params, splits.x_val), model.logits(res.params, splits.x_test)
    val_err = error_rate(val, splits.y_val.expand(len(val), -1)).cpu()
    test_err = error_rate(test, splits.y_test.expand(len(test), -1)).cpu()
    recs = _records(res, coords, roles, base, val_err, test_err, copies, shares)
    if cache is not None:
        cache.save_stack(name, res.params, recs)
    return recs


def _own_teacher_records(logits: TeacherLogits, splits: Splits, repeats: int) -> list[Record]:
    """Your teacher's row: the same model in every repeat, so every repeat records it."""
    val_err = float(error_rate(logits.val, splits.y_val))
    test_err = float(error_rate(logits.test, splits.y_test))
    return [
        Record(MODEL, r, Role.TEACHER, 0, None, val_error=val_err, test_error=test_err)
        for r in range(repeats)
    ]


def upstream(
    cfg: Config,
    splits: Splits,
    emit: RecordSink,
    progress: engine.Progress | None = None,
    cache: StackCache | None = None,
    own: tuple[OwnTeacher, TeacherLogits] | None = None,
) -> Upstream:
    """Stacks 1 and 2 (teachers; ensemble members and hard-label students), trained or loaded;
    their records and each ensemble's go to `emit`. With `own` (your teacher and its logits on
    the run's data), no teacher is trained: every repeat's teacher is yours."""
    p = cfg.protocol
    repeats, members = range(p.repeats), p.members
    n_in, n_out = splits.n_features, splits.n_classes
    models = of_config(cfg, n_in, n_out)

    # 1. teachers (none to train when you bring your own)
    if own is not None:
        teachers, recs = None, _own_teacher_records(own[1], splits, p.repeats)
    else:
        m = cfg.model
        spec = HardLabelStack(
            StackName.TEACHERS, [(r, "teacher", 0) for r in repeats], [Role.TEACHER] * p.repeats,
            models.teacher, (m.teacher_input_dropout, m.teacher_dropout), m.teacher_jitter,
            m.teacher_max_norm, cfg.train.teacher_lr_decay, teacher_schedule(cfg.train),
        )  # fmt: skip
        teachers, recs = _trained_or_loaded(spec, cfg, splits, cache, progress)
    for rec in recs:
        emit(rec)

    # 2. ensemble members and hard-label students: all small networks on hard labels
    coords = [(r, "ensemble", m) for r in repeats for m in range(members)]
    coords += [(r, "student", 0) for r in repeats]
    roles = [Role.ENSEMBLE] * (p.repeats * members) + [Role.STUDENT_HARD] * p.repeats
    spec = HardLabelStack(StackName.SMALL_NETWORKS, coords, roles, models.student)
    params, recs = _trained_or_loaded(spec, cfg, splits, cache, progress)
    for rec in recs:
        emit(rec)
    ensemble = [q[: p.repeats * members] for q in params]
    hard = [q[p.repeats * members :] for q in params]
    up = Upstream(models, teachers, ensemble, p.repeats, *(own or (None, None)), hard=hard)
    for rec in _ensemble_records(up, [r for r in recs if r.role == Role.ENSEMBLE], splits, members):
        emit(rec)
    return up


def _ensemble_records(
    up: Upstream, member_recs: list[Record], splits: Splits, members: int
) -> list[Record]:
    """Each repeat's ensemble as one model: it predicts by averaging its members'
    probabilities (T = 1), computed the same way trained or loaded, so a resumed run gives the
    same floats; an ensemble with a diverged member is itself diverged."""
    ens_val, ens_test = up.member_logits(splits.x_val), up.member_logits(splits.x_test)
    ens_test_err = error_rate(ensemble_probs(ens_test, axis=1), splits.y_test).cpu()
    ens_val_err = error_rate(ensemble_probs(ens_val, axis=1), splits.y_val).cpu()

    def diverged(r):
        epochs = [x.diverged_epoch for x in member_recs if x.repeat == r]
        epochs = [e for e in epochs if e is not None]
        return min(epochs) if epochs else None

    return [
        Record(
            kind=ENSEMBLE,
            repeat=r,
            role=Role.ENSEMBLE,
            member=None,
            members=members,
            diverged_epoch=diverged(r),
            val_error=float(ens_val_err[r]),
            test_error=float(ens_test_err[r]),
        )
        for r in range(up.repeats)
    ]


def _check_shared(cfgs: list[Config]) -> None:
    """Configurations distilled as one stack differ only in what the students' loss weighs."""
    first = cfgs[0]
    shared = ("loss", "kd_monitor", "teacher_updates")
    for cfg in cfgs[1:]:
        if (cfg.data, cfg.model, cfg.train, cfg.protocol) != (
            first.data, first.model, first.train, first.protocol
        ) or any(getattr(cfg.distill, s) != getattr(first.distill, s) for s in shared):  # fmt: skip
            raise ValueError("configurations distilled as one stack must share their teachers")


def _distillation(cfgs: list[Config], splits: Splits, up: Upstream) -> Distillation:
    """The distilled students' objective: the configured loss, its teachers (frozen and cached,
    or trained along), and each member's temperature and alpha."""
    first = cfgs[0]
    loss = loss_class(first.distill.loss).from_config(first)
    plan = Plan.of(cfgs)
    if first.distill.teacher_updates == "joint":
        teachers = trained_teachers(first, up, plan, loss)
    else:
        teachers = cached_teachers(cfgs, splits, up, loss)
    return Distillation(
        loss,
        teachers,
        temperature=one_or_each(plan.temps),
        alpha=one_or_each(plan.alphas),
        monitor=first.distill.kd_monitor,
        members=len(plan.repeats),
    )


def distil(
    cfgs: list[Config],
    splits: Splits,
    up: Upstream,
    caches: list[StackCache | None],
    progress: engine.Progress | None = None,
) -> list[list[Record]]:
    """Stack 3, the distilled students, for one configuration or for several that share their
    teachers and ensembles (a sweep's grid points: each its own temperature, alpha, ensemble
    targets), trained as one stack. Returns each configuration's records.

    The stack is all-or-nothing: if any configuration lacks its checkpoint, all are trained
    again (those already saved are kept), so a resumed sweep reproduces the same floats.
    """
    first = cfgs[0]
    _check_shared(cfgs)
    name = StackName.DISTILLED
    cached = [c.load_stack(name) if c is not None else None for c in caches]
    if all(x is not None for x in cached):
        return [x[1] for x in cached]

    p = first.protocol
    coords = [(r, "student", 0) for r in range(p.repeats)] * 2
    roles = [Role.STUDENT_FROM_TEACHER] * p.repeats + [Role.STUDENT_FROM_ENSEMBLE] * p.repeats
    student = up.models.student
    with Meter(splits.x_train.device) as meter:  # the soft targets belong to what it cost
        objective = _distillation(cfgs, splits, up)
        teachers = objective.teachers
        stack = _stack(name, student, coords * len(cfgs), p.seed, objective=objective)
        res = engine.train(stack, splits, first.train, progress)
    train = costs.training_macs(student, splits, res.epochs)
    target = _target_macs(first, splits, up, roles * len(cfgs), res.epochs)
    shares = costs.apportion(meter.result, meter.result.seconds, train, target)
    copies = (
        copies_test_error(teachers, splits, objective.members)
        if isinstance(teachers, TrainedTeachers)
        else None
    )
    n_rows = 2 * p.repeats
    out = []
    for i, cache in enumerate(caches):
        if cached[i] is not None:
            out.append(cached[i][1])
            continue
        rows = slice(i * n_rows, (i + 1) * n_rows)
        part = _members(res, rows)
        mine = copies[rows] if copies is not None else None
        out.append(_record_stack(name, student, part, coords, roles, p.seed, splits, cache,
                                 shares[rows], mine))  # fmt: skip
    return out


def _target_macs(cfg: Config, splits: Splits, up, roles: list[Role], epochs) -> list[int | None]:
    """Per distilled member, the MACs its teachers ran for it (`protocol.costs`); None for
    your own teacher, whose passes kdbench cannot count."""
    k = up.per_ensemble
    joint = cfg.distill.teacher_updates == "joint"
    out: list[int | None] = []
    for role, e in zip(roles, epochs, strict=True):
        from_teacher = role == Role.STUDENT_FROM_TEACHER
        if from_teacher and up.own is not None:
            out.append(None)
            continue
        model, n = (up.models.teacher, 1) if from_teacher else (up.models.student, k)
        out.append(
            costs.joint_target_macs(model, splits, n, e)
            if joint
            else costs.frozen_target_macs(model, splits, n)
        )
    return out


def _members(res: engine.Result, rows: slice) -> engine.Result:
    """The part of a stack's result that belongs to the members at `rows`."""
    return engine.Result(
        params=[q[rows] for q in res.params],
        epochs=res.epochs[rows],
        best_epoch=res.best_epoch[rows],
        diverged_epoch=res.diverged_epoch[rows],
        history=res.history[rows],
    )


def run_study(
    cfg: Config,
    splits: Splits,
    sink: RecordSink,
    progress: engine.Progress | None = None,
    cache: StackCache | None = None,
    own: tuple[OwnTeacher, TeacherLogits] | None = None,
) -> list[Record]:
    """Train and evaluate everything; each finished model goes to `sink` as one record.

    With a `cache`, a stack that is already there is loaded instead of trained (resume), and
    every stack is saved there, weights and records together, before its records are emitted.
    """
    records: list[Record] = []

    def emit(rec: Record) -> None:
        sink(rec)
        records.append(rec)

    up = upstream(cfg, splits, emit, progress, cache, own)
    for rec in distil([cfg], splits, up, [cache], progress)[0]:
        emit(rec)
    for rec in train_controls(cfg, splits, up, cache, progress):
        emit(rec)
    return records


def train_controls(
    cfg: Config,
    splits: Splits,
    up: Upstream,
    cache: StackCache | None = None,
    progress: engine.Progress | None = None,
) -> list[Record]:
    """The controls (`protocol.controls`), each its own stack after the distilled students,
    trained or loaded; none without `--controls`."""
    chosen = controls_of(cfg.distill)
    out = _self_distilled(cfg, splits, up, cache, progress) if "self" in chosen else []
    if "teacher-reg" in chosen:
        m, p = cfg.model, cfg.protocol
        spec = HardLabelStack(
            StackName.REGULARISED, [(r, "student", 0) for r in range(p.repeats)],
            [Role.STUDENT_TEACHER_REG] * p.repeats, up.models.student,
            (m.teacher_input_dropout, m.teacher_dropout), m.teacher_jitter,
        )  # fmt: skip
        out += _trained_or_loaded(spec, cfg, splits, cache, progress)[1]
    return _smoothed(cfg, splits, up, cache, progress) + out


def _self_distilled(cfg, splits, up, cache, progress) -> list[Record]:
    """The self-distillation control: each repeat's student distilled, at the run's T and
    alpha, from that repeat's frozen hard-label student."""
    name = StackName.SELF_DISTILLED
    cached = cache.load_stack(name) if cache is not None else None
    if cached is not None:
        return cached[1]
    p, student = cfg.protocol, up.models.student
    coords = [(r, "student", 0) for r in range(p.repeats)]
    roles = [Role.STUDENT_SELF] * p.repeats
    with Meter(splits.x_train.device) as meter:
        objective = controls.self_distillation(cfg, splits, up)
        stack = _stack(name, student, coords, p.seed, objective=objective)
        res = engine.train(stack, splits, cfg.train, progress)
    train = costs.training_macs(student, splits, res.epochs)
    target = [costs.frozen_target_macs(student, splits, 1)] * p.repeats
    shares = costs.apportion(meter.result, meter.result.seconds, train, target)
    return _record_stack(name, student, res, coords, roles, p.seed, splits, cache, shares)


def _smoothed(cfg, splits, up, cache, progress) -> list[Record]:
    """The label-smoothing controls, one stack."""
    name = StackName.CONTROLS
    cached = cache.load_stack(name) if cache is not None else None
    if cached is not None:
        return cached[1]
    roles, eps, spent = controls.plan(cfg, splits, up)
    if not roles:
        return []
    p = cfg.protocol
    coords = [(r, "student", 0) for r in range(p.repeats)] * (len(roles) // p.repeats)
    student = up.models.student
    stack = _stack(name, student, coords, p.seed, objective=controls.objective(eps))
    with Meter(splits.x_train.device) as meter:
        res = engine.train(stack, splits, cfg.train, progress)
    train = costs.training_macs(student, splits, res.epochs)
    target = [spent if role == Role.STUDENT_SMOOTH_MATCHED else None for role in roles]
    shares = costs.apportion(meter.result, res.seconds, train, target)
    recs = _record_stack(name, student, res, coords, roles, p.seed, splits, None, shares)
    recs = [dataclasses.replace(r, label_smoothing=e) for r, e in zip(recs, eps, strict=True)]
    if cache is not None:
        cache.save_stack(name, res.params, recs)
    return recs
