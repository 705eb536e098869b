"""Teachers trained along with their students (`teacher_updates = joint`) against the paper's
Keras semantics written out: one `torch.optim.Adam` over the student and its teachers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from kdbench.config import TrainConfig
from kdbench.engine import trainer as engine
from kdbench.engine.losses import PaperKD, error_rate
from kdbench.engine.mlp import Copies, init_stack, member_module, stack_logits
from kdbench.engine.objectives import Distillation
from kdbench.engine.stack_model import select
from kdbench.engine.teachers import TrainedTeachers
from tests.oracle import train_joint_alone

SIZES = [784, 32, 10]
T, ALPHA = 4.0, 0.9


def _close(a, b, atol=1e-4):
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y, atol=atol, rtol=1e-3)


def test_joint_stack_equals_one_adam_over_student_and_teachers(small_splits):
    cfg = dataclasses.replace(
        TrainConfig(), patience=1, max_epochs=10, batch_size=64, learning_rate=1e-2
    )
    # a trained teacher and a trained 3-member ensemble, as upstream hands them over
    teacher = engine.train(engine.Stack("t", [784, 48, 10], [99], [98]), small_splits, cfg).params
    members = engine.train(engine.Stack("e", SIZES, [1, 2, 3], [4, 5, 6]), small_splits, cfg).params
    # members 0, 1 distil from the teacher; 2, 3 from the ensemble (each its own copies)
    adam = (cfg.learning_rate, cfg.adam_eps)
    trained = TrainedTeachers(
        copies=[
            Copies(select(teacher, torch.tensor([0, 0])), [0, 1], 1, *adam),
            Copies(select(members, torch.tensor([0, 1, 2, 0, 1, 2])), [2, 3], 3, *adam),
        ],
        targets=PaperKD().targets,
        temperature=T,
    )
    objective = Distillation(PaperKD(), trained, T, ALPHA, members=4)
    seeds, shuffles = [31, 32, 33, 34], [41, 42, 43, 44]
    result = engine.train(engine.Stack("kd", SIZES, seeds, shuffles, objective), small_splits, cfg)

    init = init_stack(SIZES, seeds)
    finals = [trained.copies[0].final, trained.copies[1].final]
    for m in range(4):
        if m < 2:
            mine = [member_module(teacher, 0)]
            copies = [member_module(finals[0], m)]
        else:
            mine = [member_module(members, k) for k in range(3)]
            copies = [member_module(finals[1], 3 * (m - 2) + k) for k in range(3)]
        student, epochs = train_joint_alone(
            init, m, shuffles[m], mine, small_splits, lr=cfg.learning_rate, eps=cfg.adam_eps,
            batch=64, epochs=10, patience=1, temperature=T, alpha=ALPHA,
        )  # fmt: skip
        assert result.epochs[m] == epochs
        _close(member_module(result.params, m), student)
        for ours, theirs in zip(copies, mine, strict=True):
            _close(ours, theirs)
    assert len(set(result.epochs)) > 1, "the scenario should stop members at different epochs"
    # the copies moved; the teachers handed over did not
    moved = stack_logits(trained.copies[0].final, small_splits.x_test)
    kept = stack_logits(teacher, small_splits.x_test)
    assert not torch.equal(moved[0], kept[0])
    err = error_rate(kept, small_splits.y_test.expand(1, -1))
    assert float(err[0]) < 0.5


def test_joint_conv_copies_equal_one_adam_over_student_and_teachers(small_splits):
    """The same with conv teachers and a conv ensemble (`FamilyCopies`: any family, through
    autograd), distilled into a fully connected student."""
    from kdbench.engine.architectures import build
    from kdbench.engine.teachers import copies_of

    cfg = dataclasses.replace(
        TrainConfig(), patience=1, max_epochs=6, batch_size=64, learning_rate=1e-2
    )
    conv_t, conv_e = (build(a, 784, 10, (1, 28, 28)) for a in ("cnn:4", "cnn:2"))
    short = dataclasses.replace(cfg, epochs=1)
    teacher = engine.train(engine.Stack("t", conv_t, [99], [98]), small_splits, short).params
    members = engine.train(engine.Stack("e", conv_e, [1, 2], [4, 5]), small_splits, short).params
    adam = (cfg.learning_rate, cfg.adam_eps)
    trained = TrainedTeachers(
        copies=[
            copies_of(conv_t, select(teacher, torch.tensor([0])), [0], 1, *adam),
            copies_of(conv_e, select(members, torch.tensor([0, 1])), [1], 2, *adam),
        ],
        targets=PaperKD().targets,
        temperature=T,
    )
    objective = Distillation(PaperKD(), trained, T, ALPHA, members=2)
    seeds, shuffles = [31, 32], [41, 42]
    result = engine.train(engine.Stack("kd", SIZES, seeds, shuffles, objective), small_splits, cfg)
    init = init_stack(SIZES, seeds)
    finals = [trained.copies[0].final, trained.copies[1].final]
    for m, (family, upstream, final, k) in enumerate(
        [(conv_t, teacher, finals[0], 1), (conv_e, members, finals[1], 2)]
    ):
        # the members take images; the oracle feeds its teachers the dataset's flat rows
        mine = [nn.Sequential(nn.Unflatten(1, (1, 28, 28)), family.member(upstream, j))
                for j in range(k)]  # fmt: skip
        student, epochs = train_joint_alone(
            init, m, shuffles[m], mine, small_splits, lr=cfg.learning_rate, eps=cfg.adam_eps,
            batch=64, epochs=6, patience=1, temperature=T, alpha=ALPHA,
        )  # fmt: skip
        assert result.epochs[m] == epochs
        _close(member_module(result.params, m), student, atol=1e-3)
        for j, theirs in enumerate(mine):
            _close(family.member(final, j), theirs[1], atol=1e-3)


def test_joint_study_keeps_upstream_rows_and_pairs_students(small_splits):
    """Under joint only the distilled students change: teachers, ensembles and hard-label
    students are the same models; each distilled student records its copies' test errors."""
    from kdbench.protocol.presets import resolve
    from kdbench.protocol.study import run_study
    from kdbench.roles import DISTILLED_ROLES, Role

    def study(preset):
        cfg = resolve(preset, repeats=2, members=3, epochs=2, teacher_hidden=(48,))
        return run_study(cfg, small_splits, lambda rec: None)

    frozen, joint = study("paper"), study("paper-keras")
    for a, b in zip(frozen, joint, strict=True):
        assert (a.role, a.repeat, a.member, a.seed) == (b.role, b.repeat, b.member, b.seed)
        if a.role in DISTILLED_ROLES:
            assert a.copies_test_error is None
            assert len(b.copies_test_error) == (1 if a.role == Role.STUDENT_FROM_TEACHER else 3)
        else:
            assert a.test_error == b.test_error and b.copies_test_error is None
    distilled = [(a.test_error, b.test_error) for a, b in zip(frozen, joint, strict=True)
                 if a.role in DISTILLED_ROLES]  # fmt: skip
    assert any(x != y for x, y in distilled), "training the teachers along should matter"
    teacher_errors = [r.test_error for r in joint if r.role == Role.TEACHER]
    copies = [r.copies_test_error[0] for r in joint if r.role == Role.STUDENT_FROM_TEACHER]
    assert copies != teacher_errors, "the copies moved, the teachers' rows did not"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dataset", "digits", "--teacher-jitter", "2"], "28x28"),
        (["--teacher-jitter", "-1"], "--teacher-jitter"),
        (["--loss", "kdd"], "did you mean kd"),
        (["--teacher-updates", "both"], "--teacher-updates"),
    ],
)
def test_bad_jitter_loss_or_teacher_updates_is_one_line_and_writes_nothing(
    tmp_path, flags, message
):
    from typer.testing import CliRunner

    from kdbench.cli.app import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["reproduce", *flags, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert not out.exists()
