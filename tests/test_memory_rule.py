"""Settings bounded against memory before anything is written (#41, class 5): the rule of
`protocol/memory.py` against its arithmetic written out here, and the one line it gives."""

from __future__ import annotations

import itertools

import pytest

from kdbench.config import Config
from kdbench.engine.architectures import of_config
from kdbench.errors import ConfigError
from kdbench.protocol import memory, plans


def _mlp_params(sizes):
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


@pytest.mark.parametrize(
    ("over", "copies"),
    [
        (dict(), 5),  # Adam: weights, gradients, two states, final
        (dict(restore_best=True), 6),
        (dict(optimizer="sgd", learning_rate=0.05), 4),  # momentum 0.9: one buffer
        (dict(optimizer="sgd", learning_rate=0.05, momentum=0.0), 3),
    ],
)
def test_the_need_is_the_largest_stack_plus_what_students_distil_from(over, copies):
    cfg = Config().with_overrides(teacher_hidden=(300, 300), student_hidden=(40,), repeats=3,
                                  members=4, controls="smoothing", **over)  # fmt: skip
    models = of_config(cfg, 784, 10)
    teacher, student = _mlp_params([784, 300, 300, 10]), _mlp_params([784, 40, 10])
    assert memory.copies(cfg) == copies
    stacks = {s.name: s for s in plans.stacks(cfg, models)}
    assert (stacks["teachers"].members, stacks["teachers"].params) == (3, teacher)
    assert (stacks["small networks"].members, stacks["small networks"].params) == (15, student)
    kept = 4 * (3 * teacher + 15 * student)  # one copy of every teacher and ensemble member
    written = max(
        4 * copies * 3 * teacher,  # the teachers' stack
        4 * copies * 15 * student,  # the ensembles' members and the hard-label students
        4 * copies * 6 * student + kept,  # the distilled students beside what they distil from
        4 * copies * 3 * student + kept,  # the smoothing control
    )
    peak, largest = memory.need(cfg, list(stacks.values()))
    assert peak == written
    assert largest.name == ("teachers" if 3 * teacher > 15 * student else "small networks")


def test_a_study_beyond_the_memory_available_is_one_line(monkeypatch):
    cfg = Config().with_overrides(student_hidden=(1000,), repeats=2, members=2)
    stacks = plans.stacks(cfg, of_config(cfg, 784, 10))
    peak, _ = memory.need(cfg, stacks)
    monkeypatch.setattr(memory, "available", lambda device: peak)
    memory.check(cfg, stacks)  # exactly enough: accepted
    monkeypatch.setattr(memory, "available", lambda device: peak - 1)
    with pytest.raises(ConfigError) as err:
        memory.check(cfg, stacks)
    line = str(err.value)
    assert "\n" not in line and "small networks stack holds 6 models of 795,010" in line
    assert "5 float32 copies each (weights, gradients, Adam's two states, final weights)" in line
    monkeypatch.setattr(memory, "available", lambda device: None)  # the platform does not say
    memory.check(cfg, stacks)


def test_the_machine_says_what_it_has():
    have = memory.available("cpu")
    assert have is None or have > 0
