"""Train a stack of M independent same-shape networks in lockstep.

Why a stack: at batch 32 a small network spends most of its time in per-step overhead, not
arithmetic. Advancing M members with one `baddbmm` per layer amortises that overhead M-fold.

Each member keeps its own initialisation, its own shuffling (one generator per member), its
own Adam state and its own early stopping. A member that stops is copied out and removed from
the stack, so it is frozen and costs nothing more. Per-member results depend only on the member's
seeds, never on the stack it shared: M = 1 is the ordinary case, not a separate code path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from kdbench.config import TrainConfig
from kdbench.data import Splits
from kdbench.distill import cross_entropy, error_rate, kd_loss
from kdbench.models import (
    Dropout,
    Params,
    Tape,
    init_stack,
    stack_backward,
    stack_forward,
    stack_logits,
)

# progress(job name, epoch, last epoch, step, steps per epoch, active members)
Progress = Callable[[str, int, int, int, int, int], None]
PROGRESS_EVERY = 64  # steps between progress callbacks


@dataclass
class SoftTargets:
    """Cached teacher outputs for distillation: rows of targets, and which row each member uses."""

    train: torch.Tensor  # [G, N_train, C] softened teacher probabilities
    val: torch.Tensor  # [G, N_val, C]
    group: torch.Tensor  # [M] long: the target row of each member
    temperature: float | torch.Tensor  # one for all, or [M]: one per member (sweep points)
    alpha: float | torch.Tensor
    monitor: str = "combined"  # validation quantity for early stopping: combined loss or CE
    head: str = "logits"  # what the temperature divides (see `distill.head_outputs`)

    def settings(self, members: torch.Tensor) -> tuple[float | torch.Tensor, ...]:
        """(temperature, alpha) for the members at `members` (ids into the job)."""

        def pick(value):
            return value.to(members.device)[members] if isinstance(value, torch.Tensor) else value

        return pick(self.temperature), pick(self.alpha)


@dataclass
class Job:
    """One stack to train."""

    name: str
    sizes: Sequence[int]
    init_seeds: Sequence[int]
    shuffle_seeds: Sequence[int]
    targets: SoftTargets | None = None
    dropout: tuple[float, float] = (0.0, 0.0)  # (input, hidden) rates while training

    def __post_init__(self) -> None:
        if len(self.init_seeds) != len(self.shuffle_seeds) or not self.init_seeds:
            raise ValueError("a job needs one init seed and one shuffle seed per member")


@dataclass
class Result:
    """Per-member outcome; `params` hold every member's final (or restored best) weights."""

    params: Params
    epochs: list[int]
    best_epoch: list[int]
    diverged_epoch: list[int | None]
    history: list[list[dict[str, float]]] = field(default_factory=list)
    seconds: float = 0.0


class _Adam:
    """Adam over stacked tensors, one layer at a time, each update right after the layer's
    gradient (see `models.stack_backward`). It calls `torch._fused_adam_`, the kernel behind
    `torch.optim.Adam(fused=True)`, with the state that optimizer keeps: Adam is elementwise,
    so each member gets exactly its own Adam (the tests compare with `torch.optim.Adam`)."""

    def __init__(self, params: Params, lr: float, eps: float, betas=(0.9, 0.999)):
        self.lr, self.eps, self.betas = lr, eps, betas
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        # every tensor of the stack steps together: one step count serves them all
        self.steps = torch.zeros((), dtype=torch.float32, device=params[0].device)

    def count_step(self) -> None:
        """Call once per training step, before its layer updates."""
        self.steps += 1

    def update(self, params: Params, layer: int, grads: Sequence[torch.Tensor]) -> None:
        """One Adam step of layer `layer`'s weight and bias, in place."""
        at = slice(2 * layer, 2 * layer + 2)
        torch._fused_adam_(
            params[at],
            list(grads),
            self.exp_avg[at],
            self.exp_avg_sq[at],
            [],
            [self.steps, self.steps],
            lr=self.lr,
            beta1=self.betas[0],
            beta2=self.betas[1],
            weight_decay=0.0,
            eps=self.eps,
            amsgrad=False,
            maximize=False,
        )

    def keep(self, index: torch.Tensor) -> None:
        """Continue with the members at `index` only."""
        self.exp_avg = [t.index_select(0, index) for t in self.exp_avg]
        self.exp_avg_sq = [t.index_select(0, index) for t in self.exp_avg_sq]


def step(
    params: Params,
    adam: _Adam,
    x: torch.Tensor,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    dropout: Dropout | None = None,
) -> torch.Tensor:
    """One training step of every member on its own batch `x` `[M, B, in]`; returns the
    per-member loss. Autograd differentiates only the loss (any head, any soft targets); the
    layers are differentiated by `stack_backward` and each is updated as its gradient lands."""
    tape = Tape()
    logits = stack_forward(params, x, dropout, tape).requires_grad_()
    loss = loss_of(logits)
    loss.sum().backward()
    adam.count_step()
    for layer, grad_w, grad_b in stack_backward(params, tape, logits.grad, dropout):
        adam.update(params, layer, (grad_w, grad_b))
    return loss.detach()


def _gather(data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """`data[idx]` for an `[M, B]` index; `index_select` on the flat index is the faster gather."""
    return data.index_select(0, idx.reshape(-1)).view(*idx.shape, *data.shape[1:])


def _validation(
    params: Params, splits: Splits, targets: SoftTargets | None, active: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member (validation loss used for monitoring, validation error)."""
    logits = stack_logits(params, splits.x_val)
    labels = splits.y_val.expand(logits.shape[0], -1)
    err = error_rate(logits, labels)
    if targets is None or targets.monitor == "hard":
        return cross_entropy(logits, labels), err
    groups = targets.group.to(active.device)[active]
    loss = kd_loss(logits, labels, targets.val[groups], *targets.settings(active), targets.head)
    return loss, err


def train(
    job: Job,
    splits: Splits,
    cfg: TrainConfig,
    progress: Progress | None = None,
) -> Result:
    """Train every member of `job` on `splits` (already on the target device)."""
    start = time.perf_counter()
    device = splits.x_train.device
    n_members = len(job.init_seeds)
    params = init_stack(job.sizes, job.init_seeds, device)
    final = [p.clone() for p in params]
    best = [p.clone() for p in params] if cfg.restore_best else None
    adam = _Adam(params, cfg.learning_rate, cfg.adam_eps)
    generators = [torch.Generator().manual_seed(int(s)) for s in job.shuffle_seeds]
    dropout = None
    if any(job.dropout):
        # its own stream per member, derived from the shuffle seed
        seeds = [
            np.random.SeedSequence([int(s), 1]).generate_state(1)[0] for s in job.shuffle_seeds
        ]
        dropout = Dropout(*job.dropout, seeds)
    targets = job.targets
    if targets is not None and len(targets.group) != n_members:
        raise ValueError("soft targets need one target row (group) per member")

    n_train, batch = len(splits.x_train), cfg.batch_size
    steps = math.ceil(n_train / batch)
    fixed = cfg.epochs is not None
    last_epoch = cfg.epochs if fixed else cfg.max_epochs

    active = torch.arange(n_members)  # member ids still training (CPU)
    best_value = torch.full((n_members,), math.inf)
    wait = torch.zeros(n_members, dtype=torch.long)
    best_epoch = [0] * n_members
    epochs = [0] * n_members
    diverged: list[int | None] = [None] * n_members
    history: list[list[dict[str, float]]] = [[] for _ in range(n_members)]

    for epoch in range(1, last_epoch + 1):
        ids = active.tolist()
        if dropout is not None:
            dropout.active = ids
        perms = torch.stack([torch.randperm(n_train, generator=generators[i]) for i in ids])
        perms = perms.to(device)
        active_dev = active.to(device)
        if targets is not None:
            groups = targets.group.to(device)[active_dev]
            temperature, alpha = targets.settings(active_dev)
        loss_sum = torch.zeros(len(ids), device=device)
        for s in range(steps):
            idx = perms[:, s * batch : (s + 1) * batch]
            labels = _gather(splits.y_train, idx)
            if targets is None:
                loss_of = partial(cross_entropy, labels=labels)
            else:
                soft = targets.train[groups[:, None], idx]
                loss_of = partial(
                    kd_loss,
                    labels=labels,
                    targets=soft,
                    temperature=temperature,
                    alpha=alpha,
                    head=targets.head,
                )
            loss = step(params, adam, _gather(splits.x_train, idx), loss_of, dropout)
            loss_sum += loss * idx.shape[1]
            if progress is not None and s % PROGRESS_EVERY == 0:
                progress(job.name, epoch, last_epoch, s, steps, len(ids))

        train_loss = (loss_sum / n_train).cpu()
        val_loss, val_err = (t.cpu() for t in _validation(params, splits, targets, active_dev))
        monitored = {"val_loss": val_loss, "val_error": val_err, "train_loss": train_loss}[
            cfg.monitor
        ]
        bad = ~(torch.isfinite(train_loss) & torch.isfinite(val_loss))
        improved = (monitored < best_value[active]) & ~bad
        for j, m in enumerate(ids):
            epochs[m] = epoch
            history[m].append(
                {
                    "epoch": epoch,
                    "train_loss": float(train_loss[j]),
                    "val_loss": float(val_loss[j]),
                    "val_error": float(val_err[j]),
                }
            )
            if bool(bad[j]):
                diverged[m] = epoch
            elif bool(improved[j]):
                best_value[m], best_epoch[m], wait[m] = monitored[j], epoch, 0
            else:
                wait[m] += 1
        if best is not None and bool(improved.any()):
            rows = improved.nonzero().squeeze(1).to(device)
            dest = active[improved].to(device)
            for b, p in zip(best, params, strict=True):
                b.index_copy_(0, dest, p.index_select(0, rows))

        stop = bad | (epoch == last_epoch)
        if not fixed:
            stop |= wait[active] >= cfg.patience
        if progress is not None:
            progress(job.name, epoch, last_epoch, steps, steps, int((~stop).sum()))
        if bool(stop.any()):
            rows = stop.nonzero().squeeze(1).to(device)
            dest = active[stop].to(device)
            for f, p in zip(final, params, strict=True):
                f.index_copy_(0, dest, p.index_select(0, rows))
            keep = (~stop).nonzero().squeeze(1)
            active = active[keep]
            if len(active) == 0:
                break
            keep_dev = keep.to(device)
            params = [p.index_select(0, keep_dev) for p in params]
            adam.keep(keep_dev)

    if best is not None:
        restore = torch.tensor(
            [best_epoch[m] > 0 and diverged[m] is None for m in range(n_members)]
        )
        if bool(restore.any()):
            dest = restore.nonzero().squeeze(1).to(device)
            for f, b in zip(final, best, strict=True):
                f.index_copy_(0, dest, b.index_select(0, dest))

    return Result(
        params=final,
        epochs=epochs,
        best_epoch=best_epoch,
        diverged_epoch=diverged,
        history=history,
        seconds=time.perf_counter() - start,
    )
