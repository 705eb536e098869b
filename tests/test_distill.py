"""The KD loss and soft targets against the formulas written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.engine.losses import cross_entropy, ensemble_targets, kd_loss, soften


def _by_hand(student, labels, teacher_probs, t, alpha):
    """alpha * CE + (1 - alpha) * T^2 * KL(p || q), loops and math.log only."""
    total = 0.0
    for s_row, y, p_row in zip(
        student.tolist(), labels.tolist(), teacher_probs.tolist(), strict=True
    ):
        z = sum(math.exp(v) for v in s_row)
        ce = -math.log(math.exp(s_row[y]) / z)
        zt = sum(math.exp(v / t) for v in s_row)
        q = [math.exp(v / t) / zt for v in s_row]
        kl = sum(p * (math.log(p) - math.log(qi)) for p, qi in zip(p_row, q, strict=True) if p > 0)
        total += alpha * ce + (1 - alpha) * t * t * kl
    return total / len(labels)


@pytest.mark.parametrize("t", [1.0, 2.5, 10.0, 20.0])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0])
def test_kd_loss_matches_formula(t, alpha):
    g = torch.Generator().manual_seed(int(t * 10 + alpha * 100))
    student = torch.randn(6, 10, generator=g, dtype=torch.float64) * 3
    teacher = torch.randn(6, 10, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 10, (6,), generator=g)
    p = soften(teacher, t)
    got = float(kd_loss(student, labels, p, t, alpha))
    assert got == pytest.approx(_by_hand(student, labels, p, t, alpha), rel=1e-10)


def test_kd_loss_is_per_member_on_a_stack():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(3, 5, 10, generator=g)
    labels = torch.randint(0, 10, (3, 5), generator=g)
    p = soften(torch.randn(3, 5, 10, generator=g), 4.0)
    stacked = kd_loss(student, labels, p, 4.0, 0.3)
    for m in range(3):
        assert float(stacked[m]) == pytest.approx(
            float(kd_loss(student[m], labels[m], p[m], 4.0, 0.3)), rel=1e-6
        )


def test_alpha_one_is_hard_label_training_and_kl_zero_at_identity():
    g = torch.Generator().manual_seed(1)
    s, y = torch.randn(8, 10, generator=g), torch.randint(0, 10, (8,), generator=g)
    assert float(
        kd_loss(s, y, soften(torch.randn(8, 10, generator=g), 3.0), 3.0, 1.0)
    ) == pytest.approx(float(cross_entropy(s, y)))
    assert float(kd_loss(s, y, soften(s, 3.0), 3.0, 0.0)) == pytest.approx(0.0, abs=1e-6)


def test_ensemble_targets_mean_of_softened_probabilities_and_of_logits():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 7, 10, generator=g, dtype=torch.float64)
    t = 5.0
    want = sum(torch.softmax(logits[k] / t, -1) for k in range(4)) / 4
    torch.testing.assert_close(ensemble_targets(logits, t, "probs"), want)
    want_logits = torch.softmax((sum(logits[k] for k in range(4)) / 4) / t, -1)
    torch.testing.assert_close(ensemble_targets(logits, t, "logits"), want_logits)
    assert not torch.allclose(want, want_logits)
    torch.testing.assert_close(want.sum(-1), torch.ones(7, dtype=torch.float64))


def test_softmax_head_applies_the_temperature_to_probabilities():
    """paper-softmax-head: the student's softened output is softmax(softmax(z) / T), written out."""
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, 5, 10, generator=gen) * 3
    labels = torch.randint(0, 10, (2, 5), generator=gen)
    targets = torch.softmax(torch.randn(2, 5, 10, generator=gen), -1)
    t, a = 10.0, 0.1
    p = torch.exp(z) / torch.exp(z).sum(-1, keepdim=True)
    q = torch.exp(p / t) / torch.exp(p / t).sum(-1, keepdim=True)
    kl = (targets * (torch.log(targets) - torch.log(q))).sum(-1).mean(-1)
    ce = -torch.log(p.gather(-1, labels[..., None])[..., 0]).mean(-1)
    want = a * ce + (1 - a) * t * t * kl
    torch.testing.assert_close(kd_loss(z, labels, targets, t, a, head="softmax"), want)
    # the signature diagnose looks for: softened probabilities are nearly uniform
    entropy = -(q * q.log()).sum(-1)
    assert float(entropy.min()) > 0.99 * math.log(10)


def test_a_registered_toy_loss_trains_through_the_whole_study(monkeypatch, small_splits):
    """A new distillation loss is one class, one registry entry and one config value."""
    from kdbench.engine import losses as distill
    from kdbench.engine.losses import DistillationLoss
    from kdbench.protocol.presets import resolve
    from kdbench.protocol.study import run_study

    calls = {"targets": 0, "loss": 0}

    class MeanLogits(DistillationLoss):  # match the teachers' mean logits (Ba & Caruana)
        def targets(self, teacher_logits, temperature):
            calls["targets"] += 1
            return teacher_logits.mean(0)

        def soft(self, student_logits, labels, targets, temperature, epoch):
            calls["loss"] += 1
            return ((student_logits - targets) ** 2).mean(-1).mean(-1)

    monkeypatch.setitem(distill.LOSSES, "mean-logits", MeanLogits)
    flags = dict(repeats=2, members=2, epochs=1, teacher_hidden=(32,), student_hidden=(16,))

    def students(loss):
        recs = run_study(resolve("paper", loss=loss, **flags), small_splits, lambda r: None)
        return [r.test_error for r in recs if str(r.role).startswith("student_from")]

    toy, kd = students("mean-logits"), students("kd")
    assert calls["targets"] > 0 and calls["loss"] > 0
    assert len(toy) == 4 and all(e < 0.9 for e in toy) and toy != kd
