"""How the study trains a stack of models and keeps it: each model's seeds from its coordinates,
its records (with its share of the stack's cost), and a hard-label stack trained or loaded from
the run folder's cache. `study` and `controls` build their stacks with these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np

from kdbench.config import TrainConfig
from kdbench.engine import trainer as engine
from kdbench.engine.losses import error_rate
from kdbench.engine.meter import Meter
from kdbench.engine.mlp import Params
from kdbench.engine.stack_model import StackModel
from kdbench.protocol import costs
from kdbench.records import MODEL, Record
from kdbench.roles import Role, StackName

_SEED_ROLE = {"teacher": 1, "ensemble": 2, "student": 3}  # the three students share seeds

RecordSink = Callable[[Record], None]
Coord = tuple[int, str, int]  # (repeat, seed role, member)


def derive_seeds(base: int, repeat: int, seed_role: str, member: int = 0) -> tuple[int, int]:
    """(init seed, shuffle seed) for one model, from its coordinates alone."""
    seq = np.random.SeedSequence([base, repeat, _SEED_ROLE[seed_role], member])
    init, shuffle = seq.generate_state(2, dtype=np.uint32)
    return int(init), int(shuffle)


def make_stack(name, model, coords: list[Coord], base, **regularisation) -> engine.Stack:
    """One stack of models at `coords`, each with the seeds of its coordinates; the keywords
    (objective, dropout, jitter, max_norm, lr_decay) go to `engine.Stack` as they are."""
    seeds = [derive_seeds(base, r, role, m) for r, role, m in coords]
    return engine.Stack(name, model, [s[0] for s in seeds], [s[1] for s in seeds],
                        **regularisation)  # fmt: skip


def _records(result, coords, roles, base, val_err, test_err, copies, shares) -> list[Record]:
    out = []
    for i, ((r, seed_role, m), role) in enumerate(zip(coords, roles, strict=True)):
        init_seed, shuffle_seed = derive_seeds(base, r, seed_role, m)
        cost = shares[i]
        out.append(
            Record(
                kind=MODEL,
                repeat=r,
                role=role,
                member=m,
                seed=init_seed,
                shuffle_seed=shuffle_seed,
                epochs=result.epochs[i],
                best_epoch=result.best_epoch[i],
                diverged_epoch=result.diverged_epoch[i],
                val_error=float(val_err[i]),
                test_error=float(test_err[i]),
                seconds=cost.seconds,
                history=result.history[i],
                copies_test_error=None if copies is None else copies[i],
                train_macs=cost.train_macs,
                target_macs=cost.target_macs,
                peak_memory_bytes=cost.peak_memory_bytes,
                memory_kind=cost.memory_kind,
                energy_joules=cost.energy_joules,
            )
        )
    return out


class StackCache(Protocol):
    """Where finished stacks are kept, so a resumed run does not retrain them."""

    def load_stack(self, name: StackName) -> tuple[Params, list[Record]] | None: ...

    def save_stack(self, name: StackName, params: Params, records: list[Record]) -> None: ...

    def load_snapshot(self, name: StackName) -> engine.Snapshot | None: ...

    def save_snapshot(self, name: StackName, snap: engine.Snapshot) -> None: ...


@dataclass(frozen=True)
class HardLabelStack:
    """One stack trained on hard labels: which models (coordinates, roles), their architecture
    and their regularisation."""

    name: StackName
    coords: list[Coord]
    roles: list[Role]
    model: StackModel
    dropout: tuple[float, float] = (0.0, 0.0)  # (input, hidden)
    jitter: int = 0
    max_norm: float | None = None
    lr_decay: float | None = None
    schedule: TrainConfig | None = None  # its own (the teachers'); None: the configuration's


def trained_or_loaded(spec: HardLabelStack, cfg, splits, cache, progress):
    """(params, records) of one hard-label stack, trained (and saved) or loaded."""
    base = cfg.protocol.seed
    cached = cache.load_stack(spec.name) if cache is not None else None
    if cached is not None:
        return [q.to(splits.x_train.device) for q in cached[0]], cached[1]
    stack = make_stack(spec.name, spec.model, spec.coords, base, dropout=spec.dropout,
                   jitter=spec.jitter, max_norm=spec.max_norm, lr_decay=spec.lr_decay)  # fmt: skip
    resume, keep = None, None
    if cache is not None:  # a long hard-label stack cut short continues from its snapshot
        resume = cache.load_snapshot(spec.name)
        keep = partial(cache.save_snapshot, spec.name)
    with Meter(splits.x_train.device) as meter:
        res = engine.train(stack, splits, spec.schedule or cfg.train, progress, resume, keep)
    train = costs.training_macs(spec.model, splits, res.epochs)
    # the engine's seconds include the parts of a stack before it was cut short and resumed
    shares = costs.apportion(meter.result, res.seconds, train, [None] * len(train))
    recs = record_stack(
        spec.name, spec.model, res, spec.coords, spec.roles, base, splits, cache, shares
    )
    return res.params, recs


def record_stack(name, model, res, coords, roles, base, splits, cache, shares, copies=None):
    """Evaluate a trained stack, make its records, and save weights and records together."""
    val, test = model.logits(res.params, splits.x_val), model.logits(res.params, splits.x_test)
    val_err = error_rate(val, splits.y_val.expand(len(val), -1)).cpu()
    test_err = error_rate(test, splits.y_test.expand(len(test), -1)).cpu()
    recs = _records(res, coords, roles, base, val_err, test_err, copies, shares)
    if cache is not None:
        cache.save_stack(name, res.params, recs)
    return recs
