"""How the study trains a stack of models and keeps it: each model's seeds from its coordinates,
its records (with its share of the stack's cost), and a hard-label stack trained or loaded from
the run folder's cache. `study` and `controls` build their stacks with these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from kdbench.config import TrainConfig
from kdbench.engine import trainer as engine
from kdbench.engine.losses import error_rate
from kdbench.engine.meter import Meter
from kdbench.engine.stack_model import Params, StackModel, select
from kdbench.progress import Bar
from kdbench.protocol import costs, threads
from kdbench.records import MODEL, Record
from kdbench.roles import Role, StackName

if TYPE_CHECKING:
    from kdbench.protocol.targets import Upstream

_SEED_ROLE = {"teacher": 1, "ensemble": 2, "student": 3, "assistant": 4}  # students share seeds

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
                threads=torch.get_num_threads(),
            )
        )
    return out


def engine_train(stack: engine.Stack, splits, schedule, cfg, progress, *rest) -> engine.Result:
    """`engine.train` on the thread count `threads.fit` chooses for this stack now (said on
    the progress line when it changes)."""
    choice = threads.fit(cfg.threads, cfg.device)
    if choice is not None and isinstance(progress, Bar):
        progress.phase(f"{stack.name}: {choice.why()}")
    return engine.train(stack, splits, schedule, progress, *rest)


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


Key = tuple[Role, int, int]  # a model's place in a stack: (role, repeat, member)


def keys_of(coords: list[Coord], roles: list[Role]) -> list[Key]:
    return [(Role(role), r, m) for (r, _, m), role in zip(coords, roles, strict=True)]


def _key(rec: Record) -> Key:
    return (Role(rec.role), rec.repeat, rec.member)


@dataclass(frozen=True)
class Held:
    """What a cache holds of one stack: its weights and its records (which member is which),
    perhaps fewer repeats than a grown run asks for, or more than a shorter one reads."""

    params: Params | None
    records: list[Record]

    @classmethod
    def of(cls, cache: StackCache | None, name: StackName) -> Held:
        got = cache.load_stack(name) if cache is not None else None
        return cls(*got) if got is not None else cls(None, [])

    def rows(self, keys: list[Key]) -> tuple[Params, list[Record]] | None:
        """The held models at `keys`, in that order; None if any of them is not held."""
        index = {_key(r): i for i, r in enumerate(self.records)}
        if self.params is None or not all(k in index for k in keys):
            return None
        at = [index[k] for k in keys]
        if at == list(range(len(self.records))):
            return self.params, self.records
        rows = torch.tensor(at, device=self.params[0].device)
        return select(self.params, rows), [self.records[i] for i in at]

    def missing(self, keys: list[Key]) -> list[int]:
        """The positions in `keys` of the models not held."""
        held = {_key(r) for r in self.records}
        return [i for i, k in enumerate(keys) if k not in held]

    def missing_repeats(self, keys: list[Key]) -> list[int]:
        """The repeats with a model at `keys` not held (a stack whose objective is built per
        repeat trains whole repeats)."""
        return sorted({keys[i][1] for i in self.missing(keys)})

    def plus(self, params: Params, records: list[Record]) -> Held:
        """The held models and newly trained ones together, in the order a run from scratch
        keeps them: by role as they first appear, then repeat and member."""
        have = {_key(h) for h in self.records}
        fresh = [i for i, r in enumerate(records) if _key(r) not in have]
        if len(fresh) < len(records):  # held already (a partly grown sweep): the held ones stay
            rows = torch.tensor(fresh, device=params[0].device)
            params, records = select(params, rows), [records[i] for i in fresh]
        if self.params is None:
            return Held(params, records)
        rank: dict[Role, int] = {}
        for rec in [*records, *self.records]:
            rank.setdefault(Role(rec.role), len(rank))
        both = [*self.records, *records]
        order = sorted(range(len(both)), key=lambda i: (rank[Role(both[i].role)],
                                                        *_key(both[i])[1:]))  # fmt: skip
        cpu = [torch.cat([a.cpu(), b.cpu()]) for a, b in zip(self.params, params, strict=True)]
        rows = torch.tensor(order)
        return Held(select(cpu, rows), [both[i] for i in order])


def _snapshot_for(cache: StackCache, name: StackName, coords: list[Coord]):
    """The stack's snapshot if it was made for these very models (a grown run cut short and
    resumed with another repeat count made it for others: train from the start instead)."""
    snap = cache.load_snapshot(name)
    if snap is None:
        return None
    made_for = snap.state.get("coords")
    size = snap.tensors["stopping.best_value"].numel()
    if size != len(coords) or (made_for is not None and made_for != [list(c) for c in coords]):
        return None
    return snap


def _keep_for(cache: StackCache, name: StackName, coords: list[Coord]):
    def keep(snap: engine.Snapshot) -> None:
        state = {**snap.state, "coords": [list(c) for c in coords]}
        cache.save_snapshot(name, engine.Snapshot(snap.tensors, state))

    return keep


def trained_or_loaded(spec: HardLabelStack, cfg, splits, cache, progress):
    """(params, records) of one hard-label stack, loaded, trained (and saved), or, where the
    folder holds fewer repeats than asked (a grown run), the missing models trained alone and
    saved together with the held ones."""
    base = cfg.protocol.seed
    device = splits.x_train.device
    keys = keys_of(spec.coords, spec.roles)
    held = Held.of(cache, spec.name)
    got = held.rows(keys)
    if got is not None:
        return [q.to(device) for q in got[0]], got[1]
    todo = held.missing(keys)
    coords, roles = [spec.coords[i] for i in todo], [spec.roles[i] for i in todo]
    stack = make_stack(spec.name, spec.model, coords, base, dropout=spec.dropout,
                   jitter=spec.jitter, max_norm=spec.max_norm, lr_decay=spec.lr_decay)  # fmt: skip
    resume, keep = None, None
    if cache is not None:  # a long hard-label stack cut short continues from its snapshot
        resume = _snapshot_for(cache, spec.name, coords)
        keep = _keep_for(cache, spec.name, coords)
    with Meter(device) as meter:
        res = engine_train(stack, splits, spec.schedule or cfg.train, cfg, progress, resume, keep)
    train = costs.training_macs(spec.model, splits, res.epochs)
    # the engine's seconds include the parts of a stack before it was cut short and resumed
    shares = costs.apportion(meter.result, res.seconds, train, [None] * len(train))
    recs = record_stack(spec.model, res, coords, roles, base, splits, shares)
    params, recs = saved(cache, spec.name, held, res.params, recs, keys)
    return [q.to(device) for q in params], recs


def saved(cache, name, held: Held, params: Params, recs: list[Record], keys: list[Key]):
    """Newly trained models saved with the held ones (one checkpoint); the models at `keys`."""
    whole = held.plus(params, recs)
    if cache is not None:
        cache.save_stack(name, whole.params, whole.records)
    got = whole.rows(keys)
    assert got is not None, "a stack trained for its missing models holds them all"
    return got


def record_stack(model, res, coords, roles, base, splits, shares, copies=None):
    """Evaluate a trained stack and make its records (`saved` keeps them with its weights)."""
    val, test = model.logits(res.params, splits.x_val), model.logits(res.params, splits.x_test)
    val_err = error_rate(val, splits.y_val.expand(len(val), -1)).cpu()
    test_err = error_rate(test, splits.y_test.expand(len(test), -1)).cpu()
    return _records(res, coords, roles, base, val_err, test_err, copies, shares)


def by_repeat(name: StackName, cache, keys: list[Key], up: Upstream, train) -> list[Record]:
    """The records at `keys` of a stack whose objective is built per repeat from the upstream
    (the controls): loaded, or `train(up)` for the repeats the folder lacks (all of them in a
    new run; the missing ones in a grown run, with `up` cut to them), saved with the held
    ones. `train` returns the new models' (params, records)."""
    held = Held.of(cache, name)
    got = held.rows(keys)
    if got is not None:
        return got[1]
    params, recs = train(up.only(held.missing_repeats(keys)))
    return saved(cache, name, held, params, recs, keys)[1]
