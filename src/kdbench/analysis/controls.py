"""The controls beside the distilled students, for tables that list many runs (sweep points,
explain variants): does the teacher give more than plain regularisation does?

One row per run that trained controls, one column per control comparison
(`stats.control_comparisons`): the control against the hard-label student, and each distilled
student against the control. Stars use each run's own Holm family, as its report does.
"""

from __future__ import annotations

from kdbench.analysis.stats import SIGNIFICANCE, control_comparisons
from kdbench.roles import CONTROL_ROLES
from kdbench.summary import Comparison

SHORT = {"student_hard": "hard", "student_from_teacher": "teacher-KD",
         "student_from_ensemble": "ensemble-KD"}  # fmt: skip


ORDER = [str(r) for r in CONTROL_ROLES.values()]


def control_comparisons_of(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons of a run that involve one of its controls (what a sweep keeps)."""
    return [c for c in comparisons if c.a in ORDER or c.b in ORDER]


def _name(row: str) -> str:
    if row in SHORT:
        return SHORT[row]
    return next(name for name, r in CONTROL_ROLES.items() if str(r) == row)


def cell(c: Comparison | None) -> str:
    """Mean paired difference in pp, starred where Holm-significant within its run."""
    if c is None or c.mean_diff_pp is None:
        return "–"
    star = "*" if c.p_holm is not None and c.p_holm < SIGNIFICANCE else ""
    return f"{c.mean_diff_pp:+.2f}{star}"


def markdown(labelled: list[tuple[str, list[Comparison]]], label: str) -> str:
    """A table of the controls of every run that has them (each run's comparisons, labelled);
    empty when none has."""
    found = {row for _, cs in labelled for c in cs for row in (c.a, c.b) if row in ORDER}
    if not found:
        return ""
    pairs = [p for control in sorted(found, key=ORDER.index) for p in control_comparisons(control)]
    head = f"| {label} | " + " | ".join(f"{_name(a)} − {_name(b)}" for a, b in pairs) + " |"
    lines = [head, "|" + " --- |" * (len(pairs) + 1)]
    for name, comparisons in labelled:
        by_pair = {(c.a, c.b): c for c in comparisons}
        lines.append(f"| {name} | " + " | ".join(cell(by_pair.get(p)) for p in pairs) + " |")
    return (
        "## Controls: the teacher's knowledge or plain regularisation?\n\n"
        + "\n".join(lines)
        + "\n\nMean paired difference in test error (pp; negative: the first is better), paired"
        f" by repeat; * Holm-adjusted p < {SIGNIFICANCE} within that run's own family. A"
        " distilled student that is not better than a control got no more from its teacher"
        " than that control's regularisation gives.\n"
    )
