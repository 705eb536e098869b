"""Which settings each stack's stamp covers: runs that differ only in their teachers share the
small networks; nothing else crosses."""

from __future__ import annotations

import pytest

from kdbench.errors import RunFolderError
from kdbench.protocol.presets import resolve
from kdbench.records import Record
from kdbench.roles import Role, StackName
from kdbench.runs.checks import Stamps


def _record(role: Role, stamp: str) -> Record:
    return Record("model", 0, role, 0, None, 0.1, 0.1, config_sha256=stamp)


def test_teacher_settings_leave_the_small_networks_stamp_alone():
    paper = Stamps.of(resolve("paper"))
    longer = Stamps.of(resolve("paper", teacher_epochs=8, teacher_max_norm=3.0))
    assert paper.small == longer.small and paper.upstream != longer.upstream
    assert Stamps.of(resolve("paper", student_hidden=(50,))).small != paper.small
    # a small network made under the longer-teacher settings belongs to the paper's run
    paper.check(_record(Role.STUDENT_HARD, longer.small), "small networks")
    paper.check(_record(Role.ENSEMBLE, paper.upstream), "older folder")  # stamped before
    with pytest.raises(RunFolderError, match="other settings"):
        paper.check(_record(Role.TEACHER, longer.upstream), "teachers")
    with pytest.raises(RunFolderError, match="other settings"):
        longer.check(_record(Role.TEACHER, longer.small), "teachers")  # only small networks may
    assert paper.for_stack(StackName.DISTILLED) == paper.full
    assert paper.expected(Role.STUDENT_FROM_TEACHER) == paper.full
