"""The study's vocabulary: the roles a model plays and the stacks that train them.

A *stack* is a set of same-shape models trained together in lockstep (see `engine`); every
other module names roles and stacks through these enums, and checkpoint file names derive from
`StackName.file`, so the words and the files cannot drift apart.
"""

from __future__ import annotations

from enum import Enum


class _Name(str, Enum):
    """A str (it is written to JSON as is) that prints as its value."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Role(_Name):
    """A row of Table 1. Ensemble members are recorded with role `ensemble` too (kind model);
    the ensemble itself is the record of kind ensemble."""

    TEACHER = "teacher"
    STUDENT_FROM_TEACHER = "student_from_teacher"
    ENSEMBLE = "ensemble"
    STUDENT_FROM_ENSEMBLE = "student_from_ensemble"
    STUDENT_HARD = "student_hard"
    # controls (`--controls`): rows only in runs that train them
    STUDENT_SMOOTH = "student_smooth"
    STUDENT_SMOOTH_MATCHED = "student_smooth_matched"
    STUDENT_SELF = "student_self"
    STUDENT_TEACHER_REG = "student_teacher_reg"
    # a teacher assistant (`--assistant-arch`): distilled from the teacher; the student from
    # the teacher then distils from it
    ASSISTANT = "assistant"


ROWS = tuple(Role)[:5]  # Table 1's rows, in its order
CONTROL_ROLES = {"smoothing": Role.STUDENT_SMOOTH,
                 "smoothing-matched": Role.STUDENT_SMOOTH_MATCHED,
                 "self": Role.STUDENT_SELF,
                 "teacher-reg": Role.STUDENT_TEACHER_REG}  # fmt: skip
LABELS = {  # how tables and figures name the rows
    "teacher": "Large network (teacher)",
    "student_from_teacher": "Student distilled from the large network",
    "ensemble": "Ensemble of small networks",
    "student_from_ensemble": "Student distilled from the ensemble",
    "student_hard": "Small network on hard labels",
    "student_smooth": "Control: hard labels, smoothed",
    "student_smooth_matched": "Control: hard labels, smoothed as soft as KD's targets",
    "student_self": "Control: distilled from the hard-label student",
    "student_teacher_reg": "Control: hard labels with the teacher's dropout and jitter",
    "assistant": (
        "Teacher assistant (distilled from the large network; the student from the large"
        " network distils from it)"
    ),
}


def label(row: str, own_teacher: str | None = None) -> str:
    """A row's name in tables and figures; the teacher row says when the teacher is yours."""
    if own_teacher is not None and row == Role.TEACHER:
        return f"Your teacher ({own_teacher})"
    if own_teacher is not None and row == Role.STUDENT_FROM_TEACHER:
        return "Student distilled from your teacher"
    return LABELS[row]


DISTILLED_ROLES = (Role.STUDENT_FROM_TEACHER, Role.STUDENT_FROM_ENSEMBLE)


class StackName(_Name):
    """The three stacks of a study, in training order."""

    TEACHERS = "teachers"
    SMALL_NETWORKS = "small networks"  # ensemble members and hard-label students
    DISTILLED = "distilled students"
    CONTROLS = "controls"  # the label-smoothing controls (`--controls`)
    SELF_DISTILLED = "self-distilled students"  # the self-distillation control
    REGULARISED = "regularised students"  # the teacher's-regularisation control
    ASSISTANTS = "teacher assistants"  # `--assistant-arch`: between the teachers and students

    @property
    def file(self) -> str:
        """Checkpoint file stem: `checkpoints/<file>.safetensors`."""
        return _FILES[self]


_FILES = {
    StackName.TEACHERS: "teachers",
    StackName.SMALL_NETWORKS: "small_networks",
    StackName.DISTILLED: "distilled_students",
    StackName.CONTROLS: "controls",
    StackName.SELF_DISTILLED: "self_distilled",
    StackName.REGULARISED: "regularised",
    StackName.ASSISTANTS: "assistants",
}


STACK_OF_ROLE = {
    Role.TEACHER: StackName.TEACHERS,
    Role.ENSEMBLE: StackName.SMALL_NETWORKS,
    Role.STUDENT_HARD: StackName.SMALL_NETWORKS,
    Role.STUDENT_FROM_TEACHER: StackName.DISTILLED,
    Role.STUDENT_FROM_ENSEMBLE: StackName.DISTILLED,
    Role.STUDENT_SMOOTH: StackName.CONTROLS,
    Role.STUDENT_SMOOTH_MATCHED: StackName.CONTROLS,
    Role.STUDENT_SELF: StackName.SELF_DISTILLED,
    Role.STUDENT_TEACHER_REG: StackName.REGULARISED,
    Role.ASSISTANT: StackName.ASSISTANTS,
}
UPSTREAM = (StackName.TEACHERS, StackName.SMALL_NETWORKS)  # what distillation depends on
