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

from kdbench.config import Config, teacher_schedule
from kdbench.data.datasets import Splits
from kdbench.engine import trainer as engine
from kdbench.engine.architectures import of_config
from kdbench.engine.losses import ensemble_probs, error_rate, loss_class
from kdbench.engine.meter import Meter
from kdbench.engine.objectives import Distillation
from kdbench.protocol import costs
from kdbench.protocol.assistant import assisted
from kdbench.protocol.controls import train_controls
from kdbench.protocol.own_teacher import OwnTeacher, TeacherLogits
from kdbench.protocol.stacks import (
    HardLabelStack,
    Held,
    RecordSink,
    StackCache,
    engine_train,
    make_stack,
    record_stack,
    saved,
    trained_or_loaded,
)
from kdbench.protocol.targets import (
    Plan,
    Upstream,
    cached_teachers,
    copies_test_error,
    one_or_each,
    trained_teachers,
    viewed,
    viewed_teachers,
)
from kdbench.records import ENSEMBLE, MODEL, Record
from kdbench.roles import Role, StackName


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
    models = of_config(cfg, n_in, n_out, compiled=True)

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
        teachers, recs = trained_or_loaded(spec, cfg, splits, cache, progress)
    for rec in recs:
        emit(rec)

    # 2. ensemble members and hard-label students: all small networks on hard labels
    coords = [(r, "ensemble", m) for r in repeats for m in range(members)]
    coords += [(r, "student", 0) for r in repeats]
    roles = [Role.ENSEMBLE] * (p.repeats * members) + [Role.STUDENT_HARD] * p.repeats
    spec = HardLabelStack(StackName.SMALL_NETWORKS, coords, roles, models.student)
    params, recs = trained_or_loaded(spec, cfg, splits, cache, progress)
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
            repeat=up.repeat_ids[r],
            role=Role.ENSEMBLE,
            member=None,
            members=members,
            diverged_epoch=diverged(up.repeat_ids[r]),
            val_error=float(ens_val_err[r]),
            test_error=float(ens_test_err[r]),
        )
        for r in range(up.repeats)
    ]


def _check_shared(cfgs: list[Config]) -> None:
    """Configurations distilled as one stack differ only in what the students' loss weighs."""
    first = cfgs[0]
    shared = ("loss", "kd_monitor", "teacher_updates", "assistant_arch")
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
    plan = Plan.of(cfgs, up.repeats)
    if first.distill.teacher_updates == "joint":
        teachers = trained_teachers(first, up, plan, loss)
    elif viewed(first, up):
        teachers = viewed_teachers(up, plan, loss)
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

    The stack is all-or-nothing: if any configuration lacks some repeats, all are trained again
    for those repeats (what is already saved is kept), so a resumed sweep reproduces the same
    floats; a grown run (more repeats than its folder held) trains the added repeats only.
    """
    first = cfgs[0]
    _check_shared(cfgs)
    assistants: list[Record] = []
    if first.distill.assistant_arch is not None:  # the students from the teacher learn via it
        if len(cfgs) != 1:
            raise ValueError("a teacher assistant is each configuration's own: one per stack")
        up, assistants = assisted(first, splits, up, caches[0], progress)
    name = StackName.DISTILLED
    both = [Role.STUDENT_FROM_TEACHER, Role.STUDENT_FROM_ENSEMBLE]
    keys = [(role, r, 0) for role in both for r in up.repeat_ids]
    held = [Held.of(c, name) for c in caches]
    got = [h.rows(keys) for h in held]
    if all(g is not None for g in got):
        return [assistants + g[1] for g in got]
    # the repeats some configuration lacks (all in a new run; the added ones in a grown run)
    missing = sorted({r for h, g in zip(held, got, strict=True) if g is None
                      for r in h.missing_repeats(keys)})  # fmt: skip
    sub = up.only(missing)

    coords = [(r, "student", 0) for r in missing] * 2
    roles = [role for role in both for _ in missing]
    student = sub.models.student
    with Meter(splits.x_train.device) as meter:  # the soft targets belong to what it cost
        objective = _distillation(cfgs, splits, sub)
        teachers = objective.teachers
        stack = make_stack(name, student, coords * len(cfgs), first.protocol.seed,
                           objective=objective)  # fmt: skip
        res = engine_train(stack, splits, first.train, first, progress)
    train = costs.training_macs(student, splits, res.epochs)
    target = _target_macs(first, splits, sub, roles * len(cfgs), res.epochs)
    shares = costs.apportion(meter.result, meter.result.seconds, train, target)
    copies = (
        copies_test_error(teachers, splits, objective.members)
        if first.distill.teacher_updates == "joint"
        else None
    )
    n_rows = len(coords)
    out: list[list[Record]] = []
    for i, cache in enumerate(caches):
        if got[i] is not None:
            out.append(got[i][1])
            continue
        rows = slice(i * n_rows, (i + 1) * n_rows)
        part = _members(res, rows)
        mine = copies[rows] if copies is not None else None
        recs = record_stack(student, part, coords, roles, first.protocol.seed, splits,
                            shares[rows], mine)  # fmt: skip
        out.append(saved(cache, name, held[i], part.params, recs, keys)[1])
    return [assistants + o for o in out]


def _target_macs(cfg: Config, splits: Splits, up, roles: list[Role], epochs) -> list[int | None]:
    """Per distilled member, the MACs its teachers ran for it (`protocol.costs`); None for
    your own teacher, whose passes kdbench cannot count."""
    joint = cfg.distill.teacher_updates == "joint"
    views = viewed(cfg, up)
    source = {False: (up.models.student, up.per_ensemble)}  # one count per shape, not per member
    if up.own is None:
        source[True] = (up.models.teacher, 1)
    cost = {t: (costs.pass_cost(m, splits.n_features), n) for t, (m, n) in source.items()}
    out: list[int | None] = []
    for role, e in zip(roles, epochs, strict=True):
        from_teacher = role == Role.STUDENT_FROM_TEACHER
        if from_teacher not in cost:  # your own teacher
            out.append(None)
            continue
        c, n = cost[from_teacher]
        if joint:
            out.append(costs.joint_target_macs(c, splits, n, e))
        elif views:
            out.append(costs.viewed_target_macs(c, splits, n, e))
        else:
            out.append(costs.frozen_target_macs(c, splits, n))
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
