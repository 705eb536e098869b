"""Progress of a study, for the command line and the Python API alike.

A Rich bar on a terminal (the current stack and epoch, its steps, the time since the study
began and, when it can be known, the study's ETA); one plain line per epoch when stderr is a log
file. The engine calls it at least once a second.

The study's ETA: the work left (member-steps of each stack still to train, weighted by the
multiply-adds of one member) over the rate measured so far. It exists only when the number of
epochs is known, i.e. with `--epochs`; under early stopping each member decides when it stops,
so the bar says so instead of guessing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

err = Console(stderr=True)


@dataclass(frozen=True)
class StackPlan:
    """One stack a study will train: its name, members, multiply-adds per member per image
    (the forward pass; backward and Adam scale with it) and trainable parameters per member
    (what it holds in memory; 0: not counted)."""

    name: str
    members: int
    macs: int
    params: int = 0


class Bar:
    """Rich progress bar on a terminal (one bar per epoch of the current stack, models still
    training, study ETA); one plain line per epoch when stderr is a log file."""

    def __init__(self) -> None:
        self.live = err.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps · elapsed"),
            TimeElapsedColumn(),
            TextColumn("· {task.fields[eta]}"),
            console=err,
            disable=not self.live,
        )
        self.task = None
        self.key = None
        self.start = time.perf_counter()
        self.stacks: dict[str, StackPlan] = {}
        self.epochs: int | None = None
        self.done = 0.0  # work done: member-steps x MACs
        self.at: tuple | None = None  # (stack, epoch, step) of the last call

    def plan(self, stacks: list[StackPlan], epochs: int | None) -> None:
        """The stacks the study will train, in order, and its fixed epochs (None: early
        stopping)."""
        self.stacks = {s.name: s for s in stacks}  # in training order
        self.epochs = epochs

    def _advance(self, stack, epoch, step, active) -> None:
        macs = self.stacks[stack].macs if stack in self.stacks else 0
        prev = self.at
        same = prev is not None and prev[:2] == (stack, epoch)
        self.done += (step - (prev[2] if same else 0)) * active * macs
        self.at = (stack, epoch, step)

    def eta(self, stack, epoch, step, steps, active) -> str:
        """The study's remaining time, or why there is none ("" where nothing was planned)."""
        if not self.stacks or stack not in self.stacks:
            return ""
        if self.epochs is None:
            return "ETA: early stopping decides"
        elapsed = time.perf_counter() - self.start
        if self.done <= 0 or elapsed <= 0:
            return "ETA …"
        names = list(self.stacks)
        current = self.stacks[stack]
        left = ((steps - step) + (self.epochs - epoch) * steps) * active * current.macs
        for later in names[names.index(stack) + 1 :]:
            s = self.stacks[later]
            left += self.epochs * steps * s.members * s.macs
        seconds = left / (self.done / elapsed)
        return (
            f"study ETA ~{seconds / 60:.0f} min" if seconds >= 90 else f"study ETA ~{seconds:.0f} s"
        )

    def __call__(self, stack, epoch, last, step, steps, active) -> None:
        self._advance(stack, epoch, step, active)
        desc = f"{stack:<18} epoch {epoch:>2}/{last} · {active} training"
        eta = self.eta(stack, epoch, step, steps, active)
        if not self.live:
            if step == steps:
                elapsed = time.perf_counter() - self.start
                tail = f" · {eta}" if eta and self.epochs is not None else ""
                print(f"{desc} · {elapsed:.0f} s elapsed{tail}", file=sys.stderr, flush=True)
            return
        if self.key != (stack, epoch):
            self.key = (stack, epoch)
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(desc, total=steps, eta=eta)
        self.progress.update(self.task, completed=step, description=desc, eta=eta)


def with_progress(quiet: bool, fn):
    """fn(progress) under a progress bar, or fn(None) when quiet."""
    if quiet:
        return fn(None)
    bar = Bar()
    with bar.progress:
        return fn(bar)
