"""What each strategy cost to produce one deployable student, from the records alone.

The paper calls hard labels "computationally optimal"; this is the measured version of that
claim. Per repeat, a strategy's cost is everything its student needed: hard labels the student
alone; from the teacher the teacher, the teacher's passes that made the targets and the student;
from the ensemble its members, their passes and the student. The *amortised* figure is the
student and its targets only: what one more student costs when the teacher (or ensemble) already
exists and serves many. Counted work (MACs, `engine.work`) and measured seconds (each model's
share of its stack, `protocol.costs`) are both given; energy only where it was measured.
"""

from __future__ import annotations

from statistics import fmean

from kdbench.engine.meter import MEMORY_KINDS
from kdbench.records import Record
from kdbench.roles import CONTROL_ROLES, STACK_OF_ROLE, Role
from kdbench.summary import Costs, StrategyCost

NOT_MEASURED = "not measured here (no readable RAPL energy counters on this machine)"
OLD_RUN = "not recorded: this run was made before kdbench counted training costs; rerun it"


STRATEGIES = (  # (name, deployable student, what it needs before the student, amortisable)
    ("hard_labels", Role.STUDENT_HARD, None),
    ("from_teacher", Role.STUDENT_FROM_TEACHER, Role.TEACHER),  # (+ its assistant, if any)
    ("from_ensemble", Role.STUDENT_FROM_ENSEMBLE, Role.ENSEMBLE),
    ("smoothing", Role.STUDENT_SMOOTH, None),  # controls, where the run has them
    ("smoothing_matched", Role.STUDENT_SMOOTH_MATCHED, None),
    ("self_distillation", Role.STUDENT_SELF, Role.STUDENT_HARD),
    ("teacher_regularisation", Role.STUDENT_TEACHER_REG, None),
)
LABELS = {"hard_labels": "Hard labels", "from_teacher": "From the teacher",
          "from_ensemble": "From the ensemble", "smoothing": "Control: label smoothing",
          "smoothing_matched": "Control: matched label smoothing",
          "self_distillation": "Control: self-distillation",
          "teacher_regularisation": "Control: the teacher's regularisation"}  # fmt: skip


LABELS_OF_ROW = {Role.TEACHER: "teacher", Role.ENSEMBLE: "ensemble",
                 Role.STUDENT_HARD: "hard-label student"}  # fmt: skip


def _per_repeat(records: list[Record], attr: str) -> dict[Role, dict[int, float]]:
    """Per row and repeat, the sum of `attr` over its models (an ensemble's members summed);
    a row whose models lack it is left out."""
    out: dict[Role, dict[int, float]] = {}
    for r in records:
        if not r.is_model:
            continue
        value = getattr(r, attr)
        if value is None:
            continue
        row = out.setdefault(r.role, {})
        row[r.repeat] = row.get(r.repeat, 0.0) + float(value)
    return out


def _mean(values: list[float]) -> float | None:
    return fmean(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def build(records: list[Record], own_teacher: bool = False) -> Costs:
    models = [r for r in records if r.is_model]
    if not models or all(r.train_macs is None for r in models):
        return Costs(missing=OLD_RUN)
    train = _per_repeat(models, "train_macs")
    target = _per_repeat(models, "target_macs")
    seconds = _per_repeat(models, "seconds")
    joules = _per_repeat(models, "energy_joules")
    measured_energy = all(r.energy_joules is not None for r in models if r.seconds is not None)

    def own(kind: dict, role: Role, rep: int) -> float | None:
        return kind.get(role, {}).get(rep)

    def student_total(role: Role, rep: int) -> float | None:
        """The student's own training and its targets."""
        mine = own(train, role, rep)
        return None if mine is None else mine + (own(target, role, rep) or 0.0)

    strategies = []
    repeats = sorted({r.repeat for r in models})
    for name, student, before in STRATEGIES:
        if student not in train and student in CONTROL_ROLES.values():
            continue
        full: list[tuple[float, float, float]] = []  # (MACs, seconds, joules) per repeat
        amortised: list[tuple[float, float]] = []
        note = None
        if before == Role.TEACHER and own_teacher:
            note = "your teacher's own training is not counted (kdbench did not train it)"
        for rep in repeats:
            macs, secs = student_total(student, rep), own(seconds, student, rep)
            if macs is None or secs is None:
                continue
            energy = own(joules, student, rep) or 0.0
            if before is not None:
                amortised.append((macs, secs))
                if note is not None:
                    continue
                up, up_s = own(train, before, rep), own(seconds, before, rep)
                if up is None or up_s is None:
                    continue
                macs, secs = macs + up, secs + up_s
                energy += own(joules, before, rep) or 0.0
                if before == Role.TEACHER and own(train, Role.ASSISTANT, rep) is not None:
                    macs += student_total(Role.ASSISTANT, rep)  # the chain: teacher, assistant
                    secs += own(seconds, Role.ASSISTANT, rep) or 0.0
                    energy += own(joules, Role.ASSISTANT, rep) or 0.0
            full.append((macs, secs, energy))
        if before is not None and amortised and not full and note is None:
            note = (f"the {LABELS_OF_ROW[before]}'s own training was not recorded (trained"
                    " before kdbench counted training costs)")  # fmt: skip
        strategies.append(StrategyCost(
            strategy=name, student=str(student), repeats=len(full or amortised),
            macs=_mean([m for m, _, _ in full]), seconds=_mean([s for _, s, _ in full]),
            amortised_macs=_mean([m for m, _ in amortised]) if before is not None else None,
            amortised_seconds=_mean([s for _, s in amortised]) if before is not None else None,
            macs_vs_hard=None, amortised_vs_hard=None,
            energy_joules=_mean([e for _, _, e in full]) if measured_energy and full else None,
            note=note,
        ))  # fmt: skip
    hard = strategies[0].macs
    for s in strategies:
        s.macs_vs_hard = _ratio(s.macs, hard)
        s.amortised_vs_hard = _ratio(s.amortised_macs, hard)
    rows = {
        str(role): {
            "train_macs": _mean(list(train.get(role, {}).values())),
            "target_macs": _mean(list(target.get(role, {}).values())),
            "seconds": _mean(list(seconds.get(role, {}).values())),
        }
        for role in Role
        if role in train
    }
    peaks: dict[str, int] = {}
    kinds = set()
    for r in models:
        if r.peak_memory_bytes is not None:
            stack = str(STACK_OF_ROLE[r.role])
            peaks[stack] = max(peaks.get(stack, 0), r.peak_memory_bytes)
            kinds.add(r.memory_kind)
    kind = kinds.pop() if len(kinds) == 1 else None
    return Costs(
        strategies=strategies,
        rows=rows,
        peak_memory_bytes=peaks,
        memory_kind=kind if kind in MEMORY_KINDS else None,
        energy="measured with Linux RAPL (CPU packages)" if measured_energy else NOT_MEASURED,
    )


def _times(x: float | None) -> str:
    return "–" if x is None else _ratio_text(x)


def _macs(x: float | None) -> str:
    """MACs with an SI prefix: 86.0 M, 4.69 G, 1.20 T."""
    if x is None:
        return "–"
    scale, prefix = next((s, p) for s, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1, ""))
                         if x >= s or s == 1)  # fmt: skip
    return f"{x / scale:.3g} {prefix}"


def _secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g} s" if x < 600 else f"{x / 60:.3g} min"


def markdown(costs: Costs | None) -> str:
    """The report's training-cost section."""
    head = "## What each strategy cost to train\n\n"
    if costs is None or costs.missing:
        return head + f"Training costs: {(costs.missing if costs else None) or OLD_RUN}.\n"
    lines = [
        head,
        "Per deployable student, mean over repeats: counted multiply-accumulates (forward and"
        " backward passes, validation passes, the teachers' passes that made the soft targets)"
        " and measured seconds (each model's share of its stack's time by counted work)."
        " *Amortised*: one more student when the teacher or ensemble already exists.\n",
        "| Strategy | Training MACs | × hard labels | Seconds | Amortised MACs | × hard labels"
        " | Amortised seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in costs.strategies:
        lines.append(
            f"| {LABELS[s.strategy]} | {_macs(s.macs)} | {_times(s.macs_vs_hard)}"
            f" | {_secs(s.seconds)} | {_macs(s.amortised_macs)} | {_times(s.amortised_vs_hard)}"
            f" | {_secs(s.amortised_seconds)} |"
        )
    notes = sorted({s.note for s in costs.strategies if s.note})
    text = "\n".join(lines) + "\n"
    for n in notes:
        text += f"\nNote: {n}.\n"
    if costs.peak_memory_bytes:
        kind = MEMORY_KINDS.get(costs.memory_kind or "", "peak memory")
        peaks = ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in costs.peak_memory_bytes.items())
        text += f"\nPeak memory per stack ({kind}): {peaks}.\n"
    text += (
        f"\nEnergy: {costs.energy}; CO2 not estimated (it needs your grid's carbon intensity).\n"
    )
    return text


def clause(costs: Costs | None, a: str, b: str) -> str | None:
    """The cost half of a verdict comparing a distilled student with the hard-label one, e.g.
    "at 12× the hard-label student's training compute (1.4× if the ensemble already exists)"."""
    if costs is None or costs.missing or b != Role.STUDENT_HARD:
        return None
    by_student = {s.student: s for s in costs.strategies}
    s = by_student.get(a)
    if s is None or s.strategy not in ("from_teacher", "from_ensemble"):
        return None
    if s.amortised_vs_hard is None:
        return None
    yours = (s.note or "").startswith("your teacher")
    source = (
        "the ensemble"
        if s.strategy == "from_ensemble"
        else "your teacher"
        if yours
        else "the teacher"
    )
    amortised = f"{_ratio_text(s.amortised_vs_hard)} if {source} already exists"
    if s.macs_vs_hard is None:  # your own teacher, or one trained before costs were counted
        return (
            f"at {_ratio_text(s.amortised_vs_hard)} the hard-label student's training compute,"
            f" not counting {source}'s own training"
        )
    return (
        f"at {_ratio_text(s.macs_vs_hard)} the hard-label student's training compute ({amortised})"
    )


def _ratio_text(x: float) -> str:
    """1.0×, 5.5×, 12×."""
    return f"{x:.1f}×" if x < 9.95 else f"{x:.0f}×"
