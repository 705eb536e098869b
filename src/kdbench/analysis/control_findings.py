"""Diagnose's check on runs with `--controls`: a distilled student whose gain over hard labels
is no larger than a control's got nothing from its teacher that the control's regularisation
does not give, at a fraction of the training cost."""

from __future__ import annotations

from kdbench.analysis import costs
from kdbench.analysis.finding import Finding
from kdbench.analysis.stats import compare_rows
from kdbench.config import Config
from kdbench.records import Record, row_errors
from kdbench.roles import CONTROL_ROLES, DISTILLED_ROLES
from kdbench.roles import label as row_label


def _recipes(cfg: Config) -> dict[str, str]:
    """What each control trains, as advice a user can follow for the deployable student."""
    return {"smoothing": f"label smoothing at ε = {cfg.distill.smoothing:g}",
            "smoothing-matched": "label smoothing at the matched ε (the report's records)",
            "self": "self-distillation from a hard-label student",
            "teacher-reg": "the teacher's dropout and jitter"}  # fmt: skip


def control_findings(records: list[Record], cfg: Config) -> list[Finding]:
    """A distilled student that beats the hard-label student but not a control (runs with
    `--controls`): its gain is what that regularisation gives, with no teacher to train."""
    by_pair = {(c.a, c.b): c for c in compare_rows(row_errors(records))}
    spent = costs.build(records, False)
    found = []
    for kind in DISTILLED_ROLES:
        gain = by_pair[(str(kind), "student_hard")]
        if gain.mean_diff_pp is None or gain.ci95_pp is None or gain.ci95_pp[1] >= 0:
            continue  # no gain over hard labels to explain
        matched, cheaper = [], []
        for control, role in CONTROL_ROLES.items():
            c = by_pair.get((str(kind), str(role)))
            if c is None or c.mean_diff_pp is None or c.ci95_pp is None or c.ci95_pp[1] < 0:
                continue  # not trained here, or the distilled student is clearly better
            matched.append(
                f"{control} ({row_label(role).removeprefix('Control: ')}):"
                f" {c.mean_diff_pp:+.2f} pp, 95% CI {c.ci95_pp[0]:+.2f} to {c.ci95_pp[1]:+.2f}"
            )
            cost = _cost_vs_hard(spent, role)
            cheaper.append(_recipes(cfg)[control] + (f" ({cost})" if cost else ""))
        if matched:
            mine = _cost_vs_hard(spent, kind)
            found.append(
                Finding(
                    "control-explains",
                    f"The {row_label(kind).lower()} is no better than a control",
                    f"it beats the hard-label student (difference {gain.mean_diff_pp:+.2f} pp,"
                    f" 95% CI {gain.ci95_pp[0]:+.2f} to {gain.ci95_pp[1]:+.2f}), but not "
                    + "; ".join(matched)
                    + " (distilled − control, paired by repeat). Its gain is what that"
                    " regularisation gives without a teacher.",
                    "hard labels with "
                    + " or ".join(cheaper)
                    + (f" instead of distilling ({mine})" if mine else " instead of distilling"),
                )
            )
    return found


def _cost_vs_hard(spent, role) -> str | None:
    """'1.5× the hard-label student's training compute' for a row's strategy, where counted."""
    strategy = next((s for s in spent.strategies if s.student == str(role)), None)
    if strategy is None or strategy.macs_vs_hard is None:
        return None
    return f"{strategy.macs_vs_hard:.2g}× the hard-label student's training compute"
