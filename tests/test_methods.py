"""The distillation methods beyond vanilla KD (#42), each against its formula written out here
in float64, not against the implementation: DKD's decomposition of KD, logit standardization's
invariance, DIST's Pearson correlations, logit matching; and every loss per member in a stack
(a member's loss moves only its own logits) with finite gradients at extreme confidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdbench.engine.losses import DIST, DKD, LOSSES, LogitMSE, PaperKD, dkd_parts, loss_class

M, B, C = 3, 16, 10


def _data(seed=0, k=1, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    teacher = scale * torch.randn(k, M, B, C, generator=g, dtype=torch.float64)
    student = scale * torch.randn(M, B, C, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (M, B), generator=g)
    return teacher, student, labels


def _softmax(z, t):
    e = np.exp(z / t - (z / t).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("k", [1, 4], ids=["one-teacher", "ensemble-of-4"])
@pytest.mark.parametrize("t", [1.0, 4.0])
def test_dkd_decomposes_kd_tckd_plus_one_minus_p_target_nckd(k, t):
    """KL(p_t || p_s) = TCKD + (1 - p_t,target) * NCKD for every example (Zhao et al., eq. 3),
    TCKD and NCKD written out: the binary [target, rest] KL, and the KL among the non-target
    classes renormalised; an ensemble's p_t is the mean of its members' softened
    probabilities."""
    teacher, student, labels = _data(1, k)
    targets = DKD().targets(teacher, t)
    tckd, nckd = dkd_parts(targets, student, labels, t)
    p_t = np.mean([_softmax(teacher[j].numpy(), t) for j in range(k)], axis=0)  # [M, B, C]
    p_s = _softmax(student.numpy(), t)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1)
    gt = np.eye(C, dtype=bool)[labels.numpy()]
    pt_gt, ps_gt = p_t[gt].reshape(M, B), p_s[gt].reshape(M, B)
    b_t, b_s = np.stack([pt_gt, 1 - pt_gt], -1), np.stack([ps_gt, 1 - ps_gt], -1)
    tckd_hand = (b_t * (np.log(b_t) - np.log(b_s))).sum(-1)
    q_t = np.where(gt, 0, p_t) / (1 - pt_gt)[..., None]
    q_s = np.where(gt, 0, p_s) / (1 - ps_gt)[..., None]
    nckd_hand = np.where(gt, 0, q_t * (np.log(np.where(gt, 1, q_t)) - np.log(np.where(gt, 1, q_s))))
    nckd_hand = nckd_hand.sum(-1)
    np.testing.assert_allclose(tckd.numpy(), tckd_hand, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(nckd.numpy(), nckd_hand, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tckd_hand + (1 - pt_gt) * nckd_hand, kl, rtol=1e-9, atol=1e-12)


def test_dkd_weights_its_terms_and_ramps_up_over_its_warmup():
    teacher, student, labels = _data(2)
    t, a, b = 4.0, 0.5, 8.0
    loss = DKD(alpha=a, beta=b, warmup=20)
    targets = loss.targets(teacher, t)
    tckd, nckd = dkd_parts(targets, student, labels, t)
    full = t**2 * (a * tckd.mean(-1) + b * nckd.mean(-1))
    torch.testing.assert_close(loss.soft(student, labels, targets, t, None), full)  # validation
    torch.testing.assert_close(loss.soft(student, labels, targets, t, 5), full * 5 / 20)
    torch.testing.assert_close(loss.soft(student, labels, targets, t, 40), full)
    alpha = 0.1  # the hard-label weight every loss shares
    ce = torch.nn.functional.cross_entropy(student.reshape(-1, C), labels.reshape(-1),
                                           reduction="none").view(M, B).mean(-1)  # fmt: skip
    torch.testing.assert_close(loss(student, labels, targets, t, alpha, epoch=10),
                               alpha * ce + (1 - alpha) * full * 10 / 20)  # fmt: skip
    assert DKD() == DKD(1.0, 8.0, 20)  # the paper's CIFAR defaults


@pytest.mark.parametrize("cls", [PaperKD, DKD], ids=["kd", "dkd"])
def test_logit_standardization_is_invariant_to_an_affine_map_of_either_side(cls):
    """(z - mean) / std: a positive scale and a shift of each example's logits change nothing,
    for the teacher's side and the student's (Sun et al.); without it, they do."""
    teacher, student, labels = _data(3)
    g = torch.Generator().manual_seed(9)
    scale_t = 0.2 + 3 * torch.rand(1, M, B, 1, generator=g, dtype=torch.float64)
    shift_t = torch.randn(1, M, B, 1, generator=g, dtype=torch.float64)
    scale_s = 0.2 + 3 * torch.rand(M, B, 1, generator=g, dtype=torch.float64)
    shift_s = torch.randn(M, B, 1, generator=g, dtype=torch.float64)

    def value(loss, z_t, z_s):  # the soft term: the hard-label CE is the student's own logits'
        return loss.soft(z_s, labels, loss.targets(z_t, 2.0), 2.0, None)

    on = cls(standardize=True)
    base = value(on, teacher, student)
    moved = value(on, scale_t * teacher + shift_t, scale_s * student + shift_s)
    torch.testing.assert_close(moved, base, rtol=1e-6, atol=1e-6)
    off = cls()
    assert not torch.allclose(value(off, scale_t * teacher, student), value(off, teacher, student))
    z = teacher[0].numpy()  # the z-score written out: Bessel's std, as the authors' code
    want = (z - z.mean(-1, keepdims=True)) / (z.std(-1, ddof=1, keepdims=True) + 1e-7)
    np.testing.assert_allclose(on.targets(teacher, 2.0).numpy(), _softmax(want, 2.0), rtol=1e-9)


def test_dist_is_one_minus_the_pearson_correlations_computed_by_hand():
    teacher, student, labels = _data(4, k=3)
    t, beta, gamma = 4.0, 1.5, 0.5
    loss = DIST(beta=beta, gamma=gamma)
    targets = loss.targets(teacher, t)
    got = loss.soft(student, labels, targets, t, None)
    y_t = np.mean([_softmax(teacher[j].numpy(), t) for j in range(3)], axis=0)
    y_s = _softmax(student.numpy(), t)
    for m in range(M):
        inter = 1 - np.mean([np.corrcoef(y_s[m, i], y_t[m, i])[0, 1] for i in range(B)])
        intra = 1 - np.mean([np.corrcoef(y_s[m, :, c], y_t[m, :, c])[0, 1] for c in range(C)])
        assert float(got[m]) == pytest.approx(t**2 * (beta * inter + gamma * intra), rel=1e-6)


def test_logit_matching_is_the_squared_distance_to_the_mean_logits():
    teacher, student, labels = _data(5, k=4)
    loss = LogitMSE()
    targets = loss.targets(teacher, 10.0)
    want = ((student.numpy() - teacher.numpy().mean(0)) ** 2).sum(-1).mean(-1)
    np.testing.assert_allclose(loss.soft(student, labels, targets, 10.0, 3).numpy(), want)
    probs = loss.probabilities(teacher, 10.0)  # what diagnose and smoothing-matched read
    np.testing.assert_allclose(probs.numpy(), _softmax(teacher.numpy().mean(0), 1.0), rtol=1e-9)


LOSS_OBJECTS = {
    "kd": PaperKD(),
    "kd-standardized": PaperKD(standardize=True),
    "dkd": DKD(),
    "dkd-standardized": DKD(standardize=True),
    "dist": DIST(),
    "mse": LogitMSE(),
}


@pytest.mark.parametrize("name", list(LOSS_OBJECTS))
def test_each_loss_is_per_member_with_finite_gradients(name):
    """The Jacobian of the M losses in the M members' logits is block diagonal (a member's
    loss does not move another's weights), and finite where a teacher is certain (p_target ~ 1,
    the rest underflowing): float32, as the engine trains."""
    loss = LOSS_OBJECTS[name]
    teacher, student, labels = _data(6, k=2)
    teacher, student = teacher.float(), student.float()
    teacher[..., 0] += 80.0  # near-certain teachers: the non-target mass underflows
    t = torch.tensor([1.0, 4.0, 10.0])  # one temperature per member, as a sweep's stack
    targets = loss.targets(teacher, t)
    student.requires_grad_(True)
    values = loss(student, labels, targets, t, torch.tensor([0.1, 0.5, 0.9]), epoch=3)
    assert values.shape == (M,) and torch.isfinite(values).all()
    for m in range(M):
        (grad,) = torch.autograd.grad(values[m], student, retain_graph=True)
        assert torch.isfinite(grad).all()
        assert grad[m].abs().sum() > 0
        others = [j for j in range(M) if j != m]
        assert torch.count_nonzero(grad[others]) == 0
        alone = loss(student[m : m + 1].detach(), labels[m : m + 1], targets[m : m + 1],
                     t[m : m + 1], torch.tensor([[0.1, 0.5, 0.9][m]]), epoch=3)  # fmt: skip
        torch.testing.assert_close(alone[0], values[m].detach())


def test_every_registered_name_builds_from_the_config():
    from kdbench.config import Config

    for name in LOSSES:
        cfg = Config().with_overrides(loss=name)
        assert isinstance(loss_class(name).from_config(cfg), LOSSES[name])
    cfg = Config().with_overrides(loss="dkd", dkd_beta=2.0, dkd_warmup=0,
                                  logit_standardization=True)  # fmt: skip
    assert loss_class("dkd").from_config(cfg) == DKD(1.0, 2.0, 0, "probs", True)


TINY = ["--dataset", "digits", "--repeats", "2", "--members", "2", "--epochs", "2",
        "--teacher-hidden", "32", "--student-hidden", "8", "--threads", "1", "--quiet"]  # fmt: skip


def test_a_sweep_over_the_methods_shares_its_teachers_and_trains_each(tmp_path):
    """`--grid loss=kd,dkd,dist,mse` and standardization: one teachers' and small networks'
    stack for all points, each point's students trained with its own loss (their errors
    differ), every point's records complete."""
    import json

    from tests.in_process import kdbench

    out = tmp_path / "methods"
    proc = kdbench("sweep", *TINY, "--grid", "loss=kd,dkd,dist,mse", "--out", out)
    assert proc.returncode == 0, proc.stderr
    shared = [p for p in (out / "shared").iterdir() if not p.name.startswith("small-")]
    assert len(shared) == 1  # one teachers' (and small networks') folder for the four points
    errors = {}
    for point in sorted((out / "points").iterdir()):
        recs = [json.loads(line) for line in (point / "records.jsonl").read_text().splitlines()]
        students = [r for r in recs if r.get("role", "").startswith("student_from")]
        assert len(students) == 4, point.name  # two repeats, from the teacher and the ensemble
        errors[point.name] = tuple(r["test_error"] for r in students)
    assert len(errors) == 4 and len(set(errors.values())) == 4, errors
    from kdbench.analysis import decision

    (row,) = decision.situations([out])  # a methods sweep is one row: its best per column
    points = json.loads((out / "sweep.json").read_text())["points"]
    for i, role in enumerate(("student_from_teacher", "student_from_ensemble")):
        best = min(points, key=lambda p: p["kd_vs_hard"][role]["mean_diff_pp"])
        assert row.effects[i].method == best["label"]
        assert row.effects[i].diff_pp == pytest.approx(best["kd_vs_hard"][role]["mean_diff_pp"])
        want = best["kd_vs_hard"][role]["ci95_holm_grid_pp"]
        assert list(row.effects[i].ci95_pp) == pytest.approx(want)
    assert "best of 4 methods" in decision.table([out])


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--loss", "dist", "--logit-standardization"], "is for kd and dkd"),
        (["--loss", "dkd", "--dkd-beta", "-1"], "dkd beta must be a number >= 0"),
        (["--loss", "dkd", "--dkd-warmup", "-2"], "dkd warmup must be a whole number"),
        (["--loss", "mse", "--head", "softmax"], "reads logits: drop --head"),
        (["--loss", "dkdd"], "did you mean dkd"),
        (["--loss", "nosuchmodule:Loss"], "cannot import nosuchmodule"),
    ],
)
def test_bad_method_settings_are_one_line_before_anything(tmp_path, flags, says):
    from tests.in_process import kdbench

    out = tmp_path / "run"
    proc = kdbench("reproduce", *TINY, *flags, "--out", out)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


OWN_LOSS = '''
import torch
from dataclasses import dataclass
from kdbench import DistillationLoss


@dataclass(frozen=True)
class Cosine(DistillationLoss):
    """1 - cosine similarity between the student's and the teachers' mean logits."""

    def targets(self, teacher_logits, temperature):
        return teacher_logits.mean(0)

    def soft(self, student_logits, labels, targets, temperature, epoch):
        cos = torch.nn.functional.cosine_similarity(student_logits, targets, dim=-1)
        return (1 - cos).mean(-1)


class NotALoss:
    pass
'''


def test_your_own_loss_from_outside_the_package(tmp_path, monkeypatch):
    """`--loss package.module:Class` trains with a class kdbench never saw; reading the run
    (report, diagnose) imports none of it; a class that is not a DistillationLoss is one
    line."""
    import json
    import sys

    from kdbench.engine import own_code
    from tests.in_process import kdbench

    code = tmp_path / "code"
    code.mkdir()
    (code / "my_losses.py").write_text(OWN_LOSS)
    monkeypatch.syspath_prepend(str(code))
    sys.modules.pop("my_losses", None)
    out = tmp_path / "run"
    proc = kdbench("reproduce", *TINY, "--loss", "my_losses:Cosine", "--no-latency", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "my_losses:Cosine" in (out / "config.json").read_text()
    sys.modules.pop("my_losses", None)
    monkeypatch.setattr(own_code, "_TRUSTED", set())  # another process: consented to nothing
    assert kdbench("report", out).returncode == 0
    (out / "diagnose.json").unlink()  # what the training run measured, trusting its own loss
    proc = kdbench("diagnose", out)
    assert proc.returncode == 0 and "my_losses" not in sys.modules
    note = json.loads((out / "diagnose.json").read_text())["note"]
    assert "soft-target and fidelity checks skipped" in note and "my_losses" in note
    proc = kdbench("reproduce", *TINY, "--loss", "my_losses:NotALoss", "--out", tmp_path / "x")
    assert proc.returncode == 2 and "is not a subclass of kdbench.DistillationLoss" in proc.stderr
    assert not (tmp_path / "x").exists()
