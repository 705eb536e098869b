"""A teacher assistant (`--assistant-arch`, Mirzadeh et al. 2020): the chain teacher ->
assistant -> student against the two distillations run by hand with the engine's public
pieces; its records, costs and growth."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kdbench.engine import trainer as engine
from kdbench.engine.architectures import build, of_config
from kdbench.engine.losses import PaperKD, error_rate
from kdbench.engine.objectives import Distillation
from kdbench.engine.teachers import CachedTeachers
from kdbench.protocol.presets import resolve
from kdbench.protocol.stacks import derive_seeds
from kdbench.protocol.study import run_study, upstream
from kdbench.roles import Role


def _distil(model, seeds, targets, splits, cfg):
    """Members `seeds` distilled at the run's T and alpha from `targets` (train, val) `[R, N,
    C]`, member r from row r: the paper's loss, written as the study would not be."""
    t, a = cfg.distill.temperature, cfg.distill.alpha
    teachers = CachedTeachers(targets[0], targets[1], torch.arange(len(seeds)))
    objective = Distillation(PaperKD(), teachers, temperature=t, alpha=a,
                             monitor=cfg.distill.kd_monitor, members=len(seeds))  # fmt: skip
    stack = engine.Stack("by hand", model, [s[0] for s in seeds], [s[1] for s in seeds],
                         objective=objective)  # fmt: skip
    return engine.train(stack, splits, cfg.train).params


def test_the_chain_is_the_two_distillations_run_by_hand(small_splits):
    cfg = resolve("paper", repeats=2, members=2, epochs=2, teacher_hidden=(64, 64),
                  student_hidden=(16,), assistant_arch="mlp:32")  # fmt: skip
    recs = run_study(cfg, small_splits, lambda r: None)
    up = upstream(cfg, small_splits, lambda r: None)  # the same teachers (seeded)
    loss, t = PaperKD(), cfg.distill.temperature
    seed = cfg.protocol.seed

    def soft(model, params):
        return [loss.targets(model.logits(params, getattr(small_splits, f"x_{part}"))
                             .unsqueeze(0), t) for part in ("train", "val")]  # fmt: skip

    assistant = build("mlp:32", small_splits.n_features, small_splits.n_classes, None)
    a_params = _distil(assistant, [derive_seeds(seed, r, "assistant") for r in range(2)],
                       soft(up.models.teacher, up.teachers), small_splits, cfg)  # fmt: skip
    student = of_config(cfg, small_splits.n_features, small_splits.n_classes).student
    s_params = _distil(student, [derive_seeds(seed, r, "student") for r in range(2)],
                       soft(assistant, a_params), small_splits, cfg)  # fmt: skip

    def errors(model, params):
        logits = model.logits(params, small_splits.x_test)
        return error_rate(logits, small_splits.y_test.expand(len(logits), -1)).tolist()

    got = {role: [r.test_error for r in sorted(recs, key=lambda r: r.repeat) if r.role == role]
           for role in (Role.ASSISTANT, Role.STUDENT_FROM_TEACHER)}  # fmt: skip
    assert got[Role.ASSISTANT] == pytest.approx(errors(assistant, a_params), abs=1e-9)
    # the study trains these students beside those from the ensemble: a stack of 4, not 2,
    # so their floats differ by rounding (README: grown runs); within two test images
    assert got[Role.STUDENT_FROM_TEACHER] == pytest.approx(errors(student, s_params), abs=2e-3)
    plain = run_study(dataclasses.replace(cfg, distill=dataclasses.replace(
        cfg.distill, assistant_arch=None)), small_splits, lambda r: None)  # fmt: skip
    direct = [r.test_error for r in plain if r.role == Role.STUDENT_FROM_TEACHER]
    assert direct != got[Role.STUDENT_FROM_TEACHER]  # the chain is not the direct path
    same = [r.test_error for r in plain if r.role == Role.STUDENT_FROM_ENSEMBLE]
    assert same == [r.test_error for r in recs if r.role == Role.STUDENT_FROM_ENSEMBLE]


def test_an_assisted_run_counts_the_chain_and_grows(tmp_path):
    """The from-teacher strategy's cost adds the assistant's training to the teacher's; a
    grown run trains only the added repeat's assistant; the assistant exports."""
    import json

    from tests.in_process import kdbench

    out = tmp_path / "run"
    flags = ["--dataset", "digits", "--members", "2", "--epochs", "1", "--teacher-hidden",
             "64", "--student-hidden", "8", "--assistant-arch", "mlp:32", "--threads", "1",
             "--quiet", "--no-latency", "--out", out]  # fmt: skip
    assert kdbench("reproduce", "--repeats", "2", *flags).returncode == 0
    assert kdbench("reproduce", "--repeats", "3", *flags).returncode == 0
    recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assistants = [r for r in recs if r["role"] == "assistant"]
    assert sorted(r["repeat"] for r in assistants) == [0, 1, 2]
    costs = json.loads((out / "summary.json").read_text())["costs"]
    rows = costs["rows"]
    chain = next(s for s in costs["strategies"] if s["strategy"] == "from_teacher")
    mine = rows["student_from_teacher"]["train_macs"] + rows["student_from_teacher"]["target_macs"]
    want = (mine + rows["teacher"]["train_macs"] + rows["assistant"]["train_macs"]
            + rows["assistant"]["target_macs"])  # fmt: skip
    assert chain["macs"] == pytest.approx(want, rel=1e-9)
    proc = kdbench("export", out, "--role", "assistant", "--out", tmp_path / "a.onnx")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--assistant-arch", "mlp:32", "--teacher-updates", "joint"], "from a frozen teacher"),
        (["--assistant-arch", "nosuch:1"], "nosuch"),
    ],
)
def test_an_assistant_that_cannot_be_is_one_line(tmp_path, flags, says):
    from tests.in_process import kdbench

    out = tmp_path / "run"
    proc = kdbench("reproduce", "--dataset", "digits", "--repeats", "1", "--members", "2",
                   "--epochs", "1", *flags, "--quiet", "--out", out)  # fmt: skip
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()
