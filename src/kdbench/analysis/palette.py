"""How each role looks in every figure: one colour per role, the same in a run's figure,
trade-off and cost plots, a sweep's lines and an explain forest plot. Red and green are not
used: a role's colour says which model it is, never whether distillation helped."""

from __future__ import annotations

COLOUR = {
    "teacher": "#4c72b0",  # blue
    "assistant": "#64b5cd",  # light blue
    "ensemble": "#8172b3",  # purple
    "student_from_teacher": "#dd8452",  # orange
    "student_from_ensemble": "#2a9d8f",  # teal
    "student_hard": "#333333",  # near black: the baseline everything is compared with
    "student_smooth": "#937860",  # browns and olives: the controls
    "student_smooth_matched": "#c9a227",
    "student_self": "#8c8c8c",
    "student_teacher_reg": "#b07aa1",
}


def colour(row: str) -> str:
    """The colour of a row (a role) wherever it is drawn."""
    return COLOUR.get(str(row), "#8c8c8c")
