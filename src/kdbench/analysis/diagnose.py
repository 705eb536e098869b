"""Why did distillation help or hurt? Known pitfalls, checked against a run's own evidence.

Each finding names what was seen (with numbers) and the preset or flag that tests the
alternative. Checks that need only `records.jsonl` always run; the soft-target entropy and the
students' fidelity to their teachers need the run's checkpoints and test set, and are skipped
(with a note) when those are missing.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from statistics import fmean

import torch

from kdbench.analysis import advice
from kdbench.analysis.control_findings import control_findings
from kdbench.analysis.finding import Finding
from kdbench.analysis.teacher_findings import role_epochs as _role_epochs
from kdbench.analysis.teacher_findings import weak_teacher
from kdbench.config import Config, teacher_schedule
from kdbench.data.datasets import ARRAYS, Splits
from kdbench.engine.losses import ensemble_probs, kl_soft, loss_class
from kdbench.errors import KdbenchError, RunFolderError, UntrustedCode
from kdbench.records import Record
from kdbench.roles import DISTILLED_ROLES, Role, StackName
from kdbench.runs.checks import stack_model
from kdbench.runs.store import (
    DIAGNOSIS,
    TEACHER_LOGITS,
    RunStore,
    read_derived,
    write_json,
)

UNIFORM = 0.95  # soft targets whose mean entropy exceeds this share of log(classes)
EARLY = 2  # a model whose best epoch is <= this stopped "in the first epochs"


def from_records(records: list[Record], cfg: Config) -> list[Finding]:
    """The checks that need only the records, one function each."""
    found = weak_teacher(records, cfg)
    if cfg.train.epochs is None:  # early stopping: what it watched, and what it stopped early
        found += _combined_monitor(records, cfg) + _stopped_early(records, cfg)
    found += _capped(records, cfg)
    if cfg.distill.teacher_updates == "joint":
        found += _joint_teachers(records)
    return found + control_findings(records, cfg) + _diverged(records, cfg)


def _combined_monitor(records: list[Record], cfg: Config) -> list[Finding]:
    distilled = [e for role in DISTILLED_ROLES for e in _role_epochs(records, role)]
    hard = _role_epochs(records, Role.STUDENT_HARD)
    if cfg.distill.kd_monitor != "combined" or not distilled or not hard:
        return []
    if abs(fmean(distilled) - fmean(hard)) < 1:  # they stopped alike: the monitor is no suspect
        return []
    return [
        Finding(
            "combined-monitor",
            "Distilled students stopped on the combined distillation loss",
            f"early stopping watched alpha·CE + (1 − alpha)·T²·KL (T = "
            f"{cfg.distill.temperature:g}); distilled students trained"
            f" {fmean(distilled):.1f} epochs on average, the hard-label student"
            f" {fmean(hard):.1f}. The T²-weighted term dominates that loss, so the students"
            " stop when they match the soft targets, not when their error stops falling.",
            "--preset hard-monitor (stop on the hard-label validation loss)",
        )
    ]


def _capped(records: list[Record], cfg: Config) -> list[Finding]:
    """Roles whose models mostly ran to their epoch cap still improving (best epoch = last):
    under-trained, and the cap, not the data, decided where they stopped."""
    caps = {Role.TEACHER: teacher_schedule(cfg.train), Role.ENSEMBLE: cfg.train}
    flagged = []
    for role in sorted({r.role for r in records if r.is_model}, key=str):
        train = caps.get(role, cfg.train)
        if train.epochs is not None:
            continue  # fixed epochs: no cap, the user chose the length
        models = [r for r in records if r.is_model and r.role == role and r.epochs is not None
                  and r.diverged_epoch is None]  # fmt: skip
        capped = [r for r in models if r.epochs >= train.max_epochs and r.best_epoch == r.epochs]
        if models and len(capped) > len(models) / 2:
            flagged.append((role, len(capped), len(models), train.max_epochs))
    if not flagged:
        return []
    parts = [f"{role}: {n} of {total} at the cap of {cap} epochs" for role, n, total, cap
             in flagged]  # fmt: skip
    teacher = any(role == Role.TEACHER for role, *_ in flagged)
    others = any(role != Role.TEACHER for role, *_ in flagged)
    fixes = ([f"a larger --max-epochs (now {cfg.train.max_epochs})"] if others else []) + (
        [f"a larger --teacher-max-epochs (now {caps[Role.TEACHER].max_epochs})"] if teacher else []
    )
    return [
        Finding(
            "epoch-cap",
            "Most models of a role stopped at the epoch cap, still improving",
            "; ".join(parts) + ", with their best epoch their last: the cap, not early stopping,"
            " ended their training, so they may be under-trained and the comparison with them"
            " is a comparison at the cap.",
            " or ".join(fixes),
        )
    ]


def _stopped_early(records: list[Record], cfg: Config) -> list[Finding]:
    early = [
        r
        for r in records
        if r.is_model
        and r.diverged_epoch is None
        and r.best_epoch is not None  # not your own teacher: kdbench did not train it
        and r.best_epoch <= EARLY
    ]
    if not early:
        return []
    roles = sorted({str(r.role) for r in early})
    return [
        Finding(
            "early-stop",
            f"{len(early)} model(s) were best in their first {EARLY} epochs",
            f"best epoch ≤ {EARLY} with patience {cfg.train.patience}"
            f" (monitor {cfg.train.monitor}) for: {', '.join(roles)}. Validation loss"
            " often rises while error still falls; such models stop undertrained.",
            "--preset watch-error, --preset restore-best, or a larger --patience",
        )
    ]


def _diverged(records: list[Record], cfg: Config) -> list[Finding]:
    diverged = [r for r in records if r.diverged_epoch is not None]
    if not diverged:
        return []
    items = ", ".join(f"{r.role} r{r.repeat} (epoch {r.diverged_epoch})" for r in diverged[:6])
    return [
        Finding(
            "diverged",
            f"{len(diverged)} model(s) diverged and are excluded from the statistics",
            f"loss became NaN or infinite: {items}",
            f"a lower --learning-rate (now {cfg.train.learning_rate:g})",
        )
    ]


def _joint_teachers(records: list[Record]) -> list[Finding]:
    """How far the teachers' copies drifted while they trained along with their students."""
    before = {
        Role.STUDENT_FROM_TEACHER: [
            r.test_error for r in records if r.is_model and r.role == Role.TEACHER
        ],
        Role.STUDENT_FROM_ENSEMBLE: [
            r.test_error for r in records if r.is_model and r.role == Role.ENSEMBLE
        ],
    }
    parts = []
    for role, label in ((Role.STUDENT_FROM_TEACHER, "large networks"),
                        (Role.STUDENT_FROM_ENSEMBLE, "ensemble members")):  # fmt: skip
        after = [e for r in records if r.role == role for e in (r.copies_test_error or [])]
        if after and before[role]:
            parts.append(
                f"{label} {100 * fmean(before[role]):.2f}% before distillation,"
                f" {100 * fmean(after):.2f}% after (worst {100 * max(after):.2f}%)"
            )
    if not parts:
        return []
    return [
        Finding(
            "joint-teachers",
            "Teachers trained along with the student",
            "teacher_updates = joint: every distillation step also moved each student's copies"
            " of its teachers through the distillation loss, as the paper's Keras distiller does"
            " when its teachers stay trainable. Mean test error of the teachers: "
            + "; ".join(parts)
            + ". The teacher and ensemble rows of Table 1 are the models before distillation.",
            "--teacher-updates frozen (the teachers stay as trained)",
        )
    ]


def _teacher_test_logits(run_dir: Path, cfg: Config, x: torch.Tensor, repeats: list[int]):
    """(each repeat's teacher logits on `x` [R, N, C], repeat -> row), or None when missing.
    Your own teacher: the logits kept in the run folder, the same in every repeat."""
    if cfg.model.own_teacher is not None:
        path = run_dir / TEACHER_LOGITS
        if not path.is_file():
            return None
        kept = read_derived(path, cfg.model.own_teacher_sha256, legacy_ok=True)  # cfg vouches
        if kept is None:
            raise RunFolderError(f"{path} is damaged or not this run's teacher's logits")
        z = kept["test"]
        return z.unsqueeze(0).expand(len(repeats), *z.shape), {r: i for i, r in enumerate(repeats)}
    stack = RunStore.read_stack(run_dir, StackName.TEACHERS)
    if stack is None:
        return None
    params, recs = stack
    model = stack_model(cfg, StackName.TEACHERS)
    return model.logits(params, x), {r.repeat: i for i, r in enumerate(recs)}


def soft_targets_and_fidelity(run_dir: Path, cfg: Config, splits: Splits) -> dict | None:
    """Entropy of the soft targets and each student's agreement with its teacher, on the test
    set; None when the run's checkpoints are not all there."""
    small = RunStore.read_stack(run_dir, StackName.SMALL_NETWORKS)
    distilled = RunStore.read_stack(run_dir, StackName.DISTILLED)
    if small is None or distilled is None:
        return None
    (s_params, s_recs), (d_params, d_recs) = small, distilled
    x, temp, head = splits.x_test, cfg.distill.temperature, cfg.model.head
    n_classes = splits.n_classes
    teachers = _teacher_test_logits(run_dir, cfg, x, sorted({r.repeat for r in d_recs}))
    if teachers is None:
        return None
    t_logits, teacher = teachers
    s_logits = stack_model(cfg, StackName.SMALL_NETWORKS).logits(s_params, x)
    d_logits = stack_model(cfg, StackName.DISTILLED).logits(d_params, x)
    members = [i for i, r in enumerate(s_recs) if r.role == Role.ENSEMBLE]
    hard = {r.repeat: i for i, r in enumerate(s_recs) if r.role == Role.STUDENT_HARD}
    by_repeat = {
        rep: s_logits[[i for i in members if s_recs[i].repeat == rep]]
        for rep in sorted({s_recs[i].repeat for i in members})
    }
    ensemble = {rep: ensemble_probs(z) for rep, z in by_repeat.items()}

    def entropy(p: torch.Tensor) -> float:
        return float(-(torch.xlogy(p, p)).sum(-1).mean())

    # the targets the students were trained on: the configured loss's own, not a formula here
    loss = loss_class(cfg.distill.loss).from_config(cfg)
    soft_teacher = loss.probabilities(t_logits.unsqueeze(0), temp)  # one teacher per repeat
    soft_ensemble = torch.stack([loss.probabilities(z, temp) for z in by_repeat.values()])
    references = {  # what each distilled student learnt from, per repeat
        Role.STUDENT_FROM_TEACHER: {r: torch.softmax(t_logits[i], -1) for r, i in teacher.items()},
        Role.STUDENT_FROM_ENSEMBLE: ensemble,
    }
    hard_logits = {r: s_logits[i] for r, i in hard.items()}
    return {
        "max_entropy": math.log(n_classes),
        "entropy": {"teacher": entropy(soft_teacher), "ensemble": entropy(soft_ensemble)},
        "temperature": temp,
        "head": head,
        "fidelity": _fidelity(d_recs, d_logits, hard_logits, references),
    }


def _fidelity(distilled: list[Record], d_logits, hard_logits, references) -> dict:
    """Each distilled student's agreement with, and KL from, the model it learnt from; and the
    hard-label student's against the same reference: what agreement comes for free."""

    def fidelity(student: torch.Tensor, teacher_probs: torch.Tensor) -> tuple[float, float]:
        agree = float((student.argmax(-1) == teacher_probs.argmax(-1)).float().mean())
        return agree, float(kl_soft(teacher_probs, student, 1.0))

    pairs: dict[str, list[tuple[float, float]]] = {}
    for i, r in enumerate(distilled):
        ref = references[r.role][r.repeat]
        pairs.setdefault(str(r.role), []).append(fidelity(d_logits[i], ref))
        base = f"student_hard vs {'teacher' if r.role == Role.STUDENT_FROM_TEACHER else 'ensemble'}"
        pairs.setdefault(base, []).append(fidelity(hard_logits[r.repeat], ref))
    return {
        name: {"agreement": fmean([a for a, _ in v]), "kl": fmean([k for _, k in v]), "n": len(v)}
        for name, v in pairs.items()
    }


def from_soft_targets(stats: dict) -> list[Finding]:
    found = []
    for source, value in stats["entropy"].items():
        share = value / stats["max_entropy"]
        if share < UNIFORM:
            continue
        cause = (
            " The temperature divides softmax probabilities (head = softmax): values in [0, 1]"
            " divided by T are nearly equal, so every class gets about the same target."
            if stats["head"] == "softmax"
            else f" T = {stats['temperature']:g} flattens this {source}'s outputs almost"
            " completely."
        )
        fix = (
            "--preset paper (temperature on the logits)"
            if stats["head"] == "softmax"
            else advice.lower_temperature(stats["temperature"])
        )
        found.append(
            Finding(
                f"uniform-targets-{source}",
                f"The {source}'s soft targets are nearly uniform",
                f"mean entropy {value:.3f} nats of a possible {stats['max_entropy']:.3f}"
                f" ({share:.1%}) on the test set.{cause} Nearly uniform targets carry almost no"
                " information about the classes.",
                fix,
            )
        )
    return found


def _measured_before(run_dir: Path) -> dict | None:
    """The soft-target and fidelity figures of an earlier diagnosis of this run, if any."""
    path = run_dir / DIAGNOSIS
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("soft_targets")
    except (json.JSONDecodeError, AttributeError):
        return None


def diagnose(run_dir: Path, records: list[Record], cfg: Config, splits: Splits | None) -> dict:
    """Findings and (where checkpoints allow) soft-target entropy and fidelity, as one dict."""
    found = from_records(records, cfg)
    stats = None
    note = None
    if splits is None:
        note = "test set not available: soft-target and fidelity checks skipped"
    else:
        try:
            stats = soft_targets_and_fidelity(Path(run_dir), cfg, splits)
        except UntrustedCode as exc:  # the models are code the user has not let us import
            note = f"soft-target and fidelity checks skipped: {exc}"
        except (KdbenchError, OSError) as exc:  # old-format or unreadable: say so, keep the rest
            note = f"checkpoints unreadable ({exc}): soft-target and fidelity checks skipped"
        if stats is None and note is None:
            note = "checkpoints incomplete: soft-target and fidelity checks skipped"
    if stats is None:  # checkpoints gone (a committed run): keep what was measured with them
        stats = _measured_before(Path(run_dir))
        if stats is not None:
            note = "soft-target and fidelity figures measured when the checkpoints were there"
    if stats is not None:
        found += from_soft_targets(stats)
    if cfg.data.dataset == ARRAYS:  # a Python study() on your arrays: advice in its terms
        found = [replace(f, try_next=advice.in_python(f.try_next)) for f in found]
    return {"findings": [asdict(f) for f in found], "soft_targets": stats, "note": note}


def write_diagnosis(
    run_dir: Path, records: list[Record], cfg: Config, splits: Splits | None
) -> dict:
    """`diagnose`, kept in the run folder (diagnose.json) for the report and a later re-render
    (which may no longer have the checkpoints): every caller diagnoses through here."""
    found = diagnose(run_dir, records, cfg, splits)
    write_json(Path(run_dir) / DIAGNOSIS, found)
    return found


def markdown(diagnosis: dict) -> str:
    lines = []
    if not diagnosis["findings"]:
        lines.append("No known pitfall found in this run.")
    for f in diagnosis["findings"]:
        lines.append(f"- **{f['title']}.** {f['evidence']} *Try:* {f['try_next']}.")
    st = diagnosis.get("soft_targets")
    if st:
        lines += [
            "",
            f"Soft-target entropy on the test set (T = {st['temperature']:g}, head {st['head']};"
            f" uniform = {st['max_entropy']:.3f} nats): teacher {st['entropy']['teacher']:.3f},"
            f" ensemble {st['entropy']['ensemble']:.3f}.",
            "",
            "Fidelity to the teacher on the test set (mean over repeats): top-1 agreement and"
            " KL(teacher ‖ student) at T = 1.",
            "",
            "| student vs reference | top-1 agreement | KL (nats) |",
            "| --- | --- | --- |",
        ]
        for name, v in st["fidelity"].items():
            label = {
                "student_from_teacher": "student from teacher vs teacher",
                "student_from_ensemble": "student from ensemble vs ensemble",
            }.get(name, name.replace("_", " ") + " (reference)")
            lines.append(f"| {label} | {v['agreement']:.2%} | {v['kl']:.4f} |")
    if diagnosis.get("note"):
        lines += ["", f"*{diagnosis['note']}.*"]
    return "\n".join(lines) + "\n"
