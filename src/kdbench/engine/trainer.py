"""Train a stack of M independent same-shape networks in lockstep.

Why a stack: at batch 32 a small network spends most of its time in per-step overhead, not
arithmetic. Advancing M members with one `baddbmm` per layer amortises that overhead M-fold.

Each member keeps its own initialisation, its own shuffling (one generator per member), its
own Adam state and its own early stopping. A member that stops is copied out and removed from
the stack, so it is frozen and costs nothing more. Per-member results depend only on the member's
seeds, never on the stack it shared: M = 1 is the ordinary case, not a separate code path.
What the members minimise is the stack's `Objective`; the engine never asks which kind it is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from kdbench.config import TrainConfig, augments_of
from kdbench.data.datasets import Splits
from kdbench.engine import optim
from kdbench.engine.losses import error_rate
from kdbench.engine.mlp import MLP
from kdbench.engine.objectives import Batch, HardLabels, Objective
from kdbench.engine.stack_model import Params, StackModel, copy_rows
from kdbench.engine.stopping import EarlyStopping, EpochLog
from kdbench.engine.streams import Augment, Augmentation, Dropout, Jitter, Noise

# progress(stack name, epoch, last epoch, step, steps per epoch, active members); at an epoch's
# end also metrics=: the mean over the members trained that epoch of train_loss, val_loss and
# val_error (what live tracking plots while the study runs)
Progress = Callable[[str, int, int, int, int, int], None]
PROGRESS_SECONDS = 0.5  # the longest wait between progress callbacks within an epoch
EPOCH_METRICS = ("train_loss", "val_loss", "val_error")  # `metrics=` of an epoch's last call


@dataclass
class Stack:
    """One stack to train: its members' architecture and seeds, what they minimise, and their
    regularisation. `model` is a `StackModel`; layer sizes `[in, *hidden, classes]` are short
    for the fully connected one (`MLP(sizes)`)."""

    name: str
    model: StackModel | Sequence[int]
    init_seeds: Sequence[int]
    shuffle_seeds: Sequence[int]
    objective: Objective = field(default_factory=HardLabels)
    dropout: tuple[float, float] = (0.0, 0.0)  # (input, hidden) rates while training
    jitter: int = 0  # training images shifted by up to this many pixels (28x28 inputs)
    max_norm: float | None = None  # hidden units' incoming weights bounded after every step
    lr_decay: float | None = None  # the learning rate multiplied by this after every epoch

    def __post_init__(self) -> None:
        if not isinstance(self.model, StackModel):
            self.model = MLP(self.model)
        if len(self.init_seeds) != len(self.shuffle_seeds) or not self.init_seeds:
            raise ValueError("a stack needs one init seed and one shuffle seed per member")
        wanted = self.objective.members
        if wanted is not None and wanted != len(self.init_seeds):
            raise ValueError(f"the objective is built for {wanted} members, not {self.size}")

    @property
    def size(self) -> int:
        return len(self.init_seeds)


@dataclass
class Result:
    """Per-member outcome; `params` hold every member's final (or restored best) weights."""

    params: Params
    epochs: list[int]
    best_epoch: list[int]
    diverged_epoch: list[int | None]
    history: list[list[dict[str, float]]] = field(default_factory=list)
    seconds: float = 0.0


def _gather(data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """`data[idx]` for an `[M, B]` index; `index_select` on the flat index is the faster gather."""
    return data.index_select(0, idx.reshape(-1)).view(*idx.shape, *data.shape[1:])


def _stream_seeds(stack: Stack, stream: int) -> list[int]:
    """Each member's own seed for random stream `stream` (1 dropout, 2 jitter, 3 randomness
    inside the model, 4 augmentation), derived from its shuffle seed, so the stream never
    depends on the stack it shares."""
    return [
        int(np.random.SeedSequence([int(s), stream]).generate_state(1)[0])
        for s in stack.shuffle_seeds
    ]


def _dropout(stack: Stack) -> Dropout | None:
    return Dropout(*stack.dropout, _stream_seeds(stack, 1)) if any(stack.dropout) else None


def _jitter(stack: Stack) -> Jitter | None:
    return Jitter(stack.jitter, _stream_seeds(stack, 2)) if stack.jitter else None


def _noise(stack: Stack) -> Noise | None:
    return Noise(_stream_seeds(stack, 3)) if stack.model.random else None


def _augment(stack: Stack, cfg: TrainConfig, splits: Splits) -> Augment | None:
    """The recipe's crops and flips (`--augment`), for every stack whatever its role."""
    kinds = augments_of(cfg)
    if not kinds:
        return None
    if splits.image is None:
        raise ValueError("augmentation crops and flips images; these rows are not images")
    crop = cfg.crop_padding if "crop" in kinds else 0
    spec = Augmentation(splits.image, crop, "flip" in kinds)
    return Augment(spec, _stream_seeds(stack, 4))


def _validate(
    model: StackModel, params: Params, splits: Splits, objective: Objective
) -> tuple[torch.Tensor, ...]:
    """Per-member (validation loss, validation error), on the CPU."""
    logits = model.logits(params, splits.x_val)
    labels = splits.y_val.expand(logits.shape[0], -1)
    loss = objective.validation_loss(logits, labels, splits.x_val)
    return loss.cpu(), error_rate(logits, labels).cpu()


@dataclass
class Snapshot:
    """Where a stack stands after an epoch: everything its next epoch reads (weights, Adam
    state, every member's random streams, early stopping), so a run cut short continues it
    and ends with the floats an uninterrupted run gives. `tensors` are named for safetensors;
    `state` is plain JSON."""

    tensors: dict[str, torch.Tensor]
    state: dict


SNAPSHOT_SECONDS = 600.0  # the longest a long stack's training is at risk between snapshots


def _snapshot(epoch, params, final, best, opt, active, streams, stopping, seconds) -> Snapshot:
    # "adam.steps": the step count's name from before there were other optimisers
    tensors = {"active": active.clone(), "adam.steps": opt.steps.detach().cpu().reshape(1)}
    groups = [("params", params), ("final", final), ("best", best or []), *opt.state().items()]
    for group, values in groups:
        tensors.update({f"{group}.{i}": v.detach().cpu() for i, v in enumerate(values)})
    for name, gens in streams.items():
        tensors.update({f"rng.{name}.{m}": g.get_state() for m, g in enumerate(gens)})
    tensors["stopping.best_value"] = stopping.best_value.clone()
    tensors["stopping.wait"] = stopping.wait.clone()
    state = {"epoch": epoch, "lr": opt.lr, "best_epoch": stopping.best_epoch,
             "epochs": stopping.epochs, "diverged": stopping.diverged,
             "history": stopping.history, "seconds": seconds}  # fmt: skip
    return Snapshot(tensors, state)


def _group(t: dict[str, torch.Tensor], name: str, device) -> list[torch.Tensor]:
    n = sum(1 for k in t if k.startswith(name + ".") and k[len(name) + 1 :].isdigit())
    return [t[f"{name}.{i}"].to(device) for i in range(n)]


def train(
    stack: Stack,
    splits: Splits,
    cfg: TrainConfig,
    progress: Progress | None = None,
    resume: Snapshot | None = None,
    snapshot: Callable[[Snapshot], None] | None = None,
):
    """Train every member of `stack` on `splits` (already on the target device) -> `Result`.
    `snapshot`: called with the stack's `Snapshot` at the end of an epoch, at most every
    `SNAPSHOT_SECONDS`; `resume`: such a snapshot to continue from."""
    start = time.perf_counter()
    device = splits.x_train.device
    objective, model = stack.objective, stack.model
    if (resume or snapshot) is not None and not isinstance(objective, HardLabels):
        raise ValueError("snapshots are for hard-label stacks (their objective keeps no state)")
    params = model.init(stack.init_seeds, device)
    final = [p.clone() for p in params]  # each member's weights when it stopped
    best = [p.clone() for p in params] if cfg.restore_best else None
    opt = optim.make(cfg, model.trainable(params))
    shuffles = [torch.Generator().manual_seed(int(s)) for s in stack.shuffle_seeds]
    dropout, jitter, noise = _dropout(stack), _jitter(stack), _noise(stack)
    augment = _augment(stack, cfg, splits)
    streams = {"shuffle": shuffles}
    named = (("dropout", dropout), ("jitter", jitter), ("noise", noise), ("augment", augment))
    for name, stream in named:
        if stream is not None:
            streams[name] = stream.generators
    n_train, batch = len(splits.x_train), cfg.batch_size
    steps = math.ceil(n_train / batch)
    last_epoch = cfg.epochs if cfg.epochs is not None else cfg.max_epochs
    patience = None if cfg.epochs is not None else cfg.patience
    stopping = EarlyStopping(stack.size, cfg.monitor, patience, last_epoch)
    active = torch.arange(stack.size)  # member ids still training (CPU)
    last_call = -math.inf
    first_epoch, last_snapshot = 1, time.perf_counter()
    if resume is not None:
        t, st = resume.tensors, resume.state
        active = t["active"].clone()
        params, final = _group(t, "params", device), _group(t, "final", device)
        best = _group(t, "best", device) if best is not None else None
        opt.load_state({name: _group(t, name, device) for name in opt.state()})
        opt.set_steps(t["adam.steps"].reshape(()).to(device).clone())
        opt.lr = st["lr"]
        for name, gens in streams.items():
            for m, g in enumerate(gens):
                g.set_state(t[f"rng.{name}.{m}"])
        stopping.best_value, stopping.wait = t["stopping.best_value"], t["stopping.wait"]
        stopping.best_epoch, stopping.epochs = st["best_epoch"], st["epochs"]
        stopping.diverged, stopping.history = st["diverged"], st["history"]
        first_epoch = st["epoch"] + 1
        start -= st.get("seconds", 0.0)  # the stack's time before it was cut short counts too

    for epoch in range(first_epoch, last_epoch + 1):
        if cfg.lr_schedule != "none":  # the same for every member: all are at this epoch
            opt.lr = cfg.learning_rate * optim.schedule_factor(
                cfg.lr_schedule, epoch, last_epoch, cfg.lr_step, cfg.lr_gamma
            )
        ids = active.tolist()
        for _, stream in named:
            if stream is not None:
                stream.active = ids
        perms = torch.stack([torch.randperm(n_train, generator=shuffles[i]) for i in ids])
        perms = perms.to(device)
        if augment is not None:
            augment.begin_epoch(n_train)
        objective.begin_epoch(active.to(device), epoch)
        loss_sum = torch.zeros(len(ids), device=device)
        for s in range(steps):
            index = perms[:, s * batch : (s + 1) * batch]
            if augment is not None and jitter is None:  # gathered and augmented in one pass
                x = augment.take(splits.x_train, index, s * batch)
            else:
                x = _gather(splits.x_train, index)
                x = x if jitter is None else jitter(x)  # the teachers' jitter, then any crops
                x = x if augment is None else augment(x, s * batch)
            b = Batch(x, _gather(splits.y_train, index), index)
            loss = model.step(params, opt, b.x, partial(objective.loss, batch=b), dropout, noise)
            if stack.max_norm is not None:
                model.max_norm_(params, stack.max_norm)
            objective.after_step()
            loss_sum += loss * index.shape[1]
            if progress is not None and time.perf_counter() - last_call >= PROGRESS_SECONDS:
                progress(stack.name, epoch, last_epoch, s, steps, len(ids))
                last_call = time.perf_counter()

        if stack.lr_decay is not None:
            opt.lr *= stack.lr_decay
        log = EpochLog((loss_sum / n_train).cpu(), *_validate(model, params, splits, objective))
        decision = stopping.update(epoch, active, log)
        if best is not None and bool(decision.improved.any()):
            rows = decision.improved.nonzero().squeeze(1)
            copy_rows(best, params, rows.to(device), active[rows].to(device))
        if progress is not None:
            means = {k: float(getattr(log, k).float().mean()) for k in EPOCH_METRICS}
            progress(stack.name, epoch, last_epoch, steps, steps, int((~decision.stop).sum()),
                     metrics=means)  # fmt: skip
        if bool(decision.stop.any()):
            rows = decision.stop.nonzero().squeeze(1)
            copy_rows(final, params, rows.to(device), active[rows].to(device))
            objective.retire(decision.stop)
            keep = (~decision.stop).nonzero().squeeze(1)
            active = active[keep]
            if len(active) == 0:
                break
            params = [p.index_select(0, keep.to(device)) for p in params]
            opt.keep(keep.to(device))
        if snapshot is not None and time.perf_counter() - last_snapshot >= SNAPSHOT_SECONDS:
            spent = time.perf_counter() - start
            snapshot(_snapshot(epoch, params, final, best, opt, active, streams, stopping, spent))
            last_snapshot = time.perf_counter()

    if best is not None:
        slots = stopping.restorable().to(device)
        copy_rows(final, best, slots, slots)

    return Result(
        params=final,
        epochs=stopping.epochs,
        best_epoch=stopping.best_epoch,
        diverged_epoch=stopping.diverged,
        history=stopping.history,
        seconds=time.perf_counter() - start,
    )
