"""Early stopping on a scripted loss curve: Keras' rule, patience counted in epochs."""

from __future__ import annotations

import dataclasses

import torch

from kdbench.config import TrainConfig
from kdbench.engine import trainer as engine


def _run_with_curve(monkeypatch, small_splits, curves, **cfg):
    """Replace the validation step by scripted per-member losses, one value per epoch."""
    calls = {"n": 0}

    def scripted(model, params, splits, objective):
        epoch = calls["n"]
        calls["n"] += 1
        members = params[0].shape[0]
        active = [c for c in curves if len(c) > epoch][:members]
        vals = torch.tensor([c[epoch] for c in active], dtype=torch.float32)
        return vals, torch.zeros(members)

    monkeypatch.setattr(engine, "_validate", scripted)
    tc = dataclasses.replace(TrainConfig(), **cfg)
    n = len(curves)
    stack = engine.Stack("t", [784, 4, 10], list(range(n)), list(range(n)))
    return engine.train(stack, small_splits, tc)


def test_stops_after_patience_epochs_without_improvement(monkeypatch, small_splits):
    # best at epoch 3, then two epochs without improvement -> stop after epoch 5
    curve = [1.0, 0.8, 0.7, 0.75, 0.7, 0.6, 0.5]
    r = _run_with_curve(monkeypatch, small_splits, [curve], patience=2, max_epochs=7)
    assert r.epochs == [5] and r.best_epoch == [3]


def test_equal_value_is_not_an_improvement_and_cap_applies(monkeypatch, small_splits):
    curve = [1.0, 0.9, 0.8, 0.7, 0.6]
    r = _run_with_curve(monkeypatch, small_splits, [curve], patience=1, max_epochs=4)
    assert r.epochs == [4] and r.best_epoch == [4]
    flat = [1.0, 1.0, 1.0]
    r = _run_with_curve(monkeypatch, small_splits, [flat], patience=2, max_epochs=3)
    assert r.epochs == [3] and r.best_epoch == [1]
