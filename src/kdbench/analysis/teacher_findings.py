"""Diagnose's checks of the teacher: not clearly better than the hard-label student, or better
but by less than distilling from a single teacher needed on the committed teacher-strength curve
(`advice.CURVE`)."""

from __future__ import annotations

from statistics import fmean

from kdbench.analysis import advice
from kdbench.analysis.finding import Finding
from kdbench.analysis.stats import compare_rows
from kdbench.config import Config
from kdbench.records import Record, row_errors
from kdbench.roles import Role


def role_epochs(records: list[Record], role: Role) -> list[int]:
    return [r.epochs for r in records if r.is_model and r.role == role]


def weak_teacher(records: list[Record], cfg: Config) -> list[Finding]:
    teacher_vs_hard = next(
        c for c in compare_rows(row_errors(records)) if c.a == "teacher"
    )  # a − b in pp: negative when the teacher is better
    diff, ci = teacher_vs_hard.mean_diff_pp, teacher_vs_hard.ci95_pp
    if diff is None:
        return []
    spread = f" (95% CI {ci[0]:+.2f} to {ci[1]:+.2f})" if ci else " (one repeat: no CI)"
    gap = f"teacher − hard-label student = {diff:+.2f} pp{spread} over {teacher_vs_hard.n}"
    if diff < 0 and ci is not None and ci[1] < 0:  # clearly better: but better enough?
        return _not_strong_enough(-diff, gap, teacher_vs_hard.n, cfg)
    own = cfg.model.own_teacher
    if own is not None:
        return [
            Finding(
                "weak-teacher",
                "Your teacher is not clearly better than the hard-label student",
                f"{gap} paired repeat(s); the teacher is your own ({own})."
                " A student can hardly learn more from a teacher than from the labels themselves.",
                "a stronger teacher (--teacher), or no --teacher: kdbench trains one",
            )
        ]
    return [
        Finding(
            "weak-teacher",
            "The teacher is not clearly better than the hard-label student",
            f"{gap} paired repeat(s); teachers trained"
            f" {fmean(role_epochs(records, Role.TEACHER)):.1f} epochs on average. A student"
            " can hardly learn more from a teacher than from the labels themselves.",
            advice.stronger_teacher(cfg, cfg.train.epochs is None),
        )
    ]


def _not_strong_enough(advantage: float, gap: str, n: int, cfg: Config) -> list[Finding]:
    """A teacher clearly better than the hard-label student, but by no more than teachers that
    still made distillation hurt on the committed teacher-strength curve (`advice.CURVE`)."""
    hurt = advice.CURVE.hurt_up_to_pp
    if hurt is None or advantage > hurt + 0.005:  # the curve's numbers are kept to 0.01 pp
        return []
    return [
        Finding(
            "weak-teacher",
            "The teacher is better than the hard-label student, but by less than a single"
            " teacher needed on MNIST",
            f"{gap} paired repeat(s). {advice.CURVE.sentence()}.",
            advice.stronger_teacher(cfg, cfg.train.epochs is None),
        )
    ]
