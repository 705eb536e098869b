"""Progress of a study, for the command line and the Python API alike.

A Rich bar on a terminal (the current stack and epoch, its steps, the time since the study
began and, when it can be known, the study's ETA); one plain line per epoch when stderr is a log
file. The engine calls it at least once a second.

The study's ETA: the work left (member-steps of each stack still to train, weighted by the
multiply-adds of one member) over the rate measured so far. With `--epochs` the work left is
known. Under early stopping it is estimated (`~`): the stack in training runs to the most epochs
a finished stack took (or `patience` more epochs before one has finished), later stacks as many,
its members still training all the way; beside it the bound at the epoch cap (`≤`), which holds.

Elapsed time counts from the study's start and never resets. Between stacks and after training
the bar says what the study is doing (`phase`): which sweep point or variant trains, what a
resumed run reuses, the latency measurement and the report.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

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

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent  # nothing printed (--quiet): the bar only feeds `observers`
        self.live = err.is_terminal and not silent
        # called at each epoch's end as fn(stack, epoch, active, metrics): live tracking
        self.observers: list = []
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps · {task.fields[elapsed]} elapsed · {task.fields[eta]}"),
            console=err,
            disable=not self.live,
        )
        self.task = None
        self.key = None
        self.start = time.perf_counter()
        self.stacks: dict[str, StackPlan] = {}
        self.epochs: int | None = None
        self.cap, self.patience = 0, 0  # under early stopping: the epoch cap, the patience
        self.stopped: dict[str, int] = {}  # finished stacks: the epochs they ran
        self.done = 0.0  # work done: member-steps x MACs
        self.at: tuple | None = None  # (stack, epoch, step) of the last call

    def plan(self, stacks, epochs: int | None, cap: int = 0, patience: int = 0) -> None:
        """The stacks the study will train, in order, and its fixed epochs (None: early
        stopping, at most `cap` epochs with `patience`)."""
        self.stacks = {s.name: s for s in stacks}  # in training order
        self.epochs, self.cap, self.patience = epochs, cap, patience

    def phase(self, text: str) -> None:
        """A line saying what the study does now (a point, a reuse, the report)."""
        if self.silent:
            return
        elapsed = _duration(time.perf_counter() - self.start)
        line = f"{text} · {elapsed} elapsed"
        if self.live:
            self.progress.console.print(line, highlight=False, markup=False)
        else:
            print(line, file=sys.stderr, flush=True)

    def _advance(self, stack, epoch, step, active) -> None:
        macs = self.stacks[stack].macs if stack in self.stacks else 0
        prev = self.at
        if prev is not None and prev[0] != stack:
            self.stopped[prev[0]] = prev[1]  # the stack before ran this many epochs
        same = prev is not None and prev[:2] == (stack, epoch)
        self.done += (step - (prev[2] if same else 0)) * active * macs
        self.at = (stack, epoch, step)

    def eta(self, stack, epoch, step, steps, active) -> str:
        """The study's remaining time, or why there is none ("" where nothing was planned)."""
        if not self.stacks or stack not in self.stacks:
            return ""
        if self.epochs is None and not self.cap:
            return "ETA: early stopping decides"
        elapsed = time.perf_counter() - self.start
        if self.done <= 0 or elapsed <= 0:
            return "ETA …"
        rate = self.done / elapsed
        if self.epochs is not None:
            left = self._left(stack, epoch, step, steps, active, self.epochs)
            return f"study ETA ~{_duration(left / rate)}"
        typical = max(self.stopped.values(), default=epoch + self.patience)
        guess = min(self.cap, max(typical, epoch))
        likely = self._left(stack, epoch, step, steps, active, guess) / rate
        bound = self._left(stack, epoch, step, steps, active, self.cap) / rate
        likely, bound = _duration(likely), _duration(bound)
        return f"study ETA ~{likely}" + ("" if likely == bound else f" (≤ {bound})")

    def _left(self, stack, epoch, step, steps, active, epochs) -> float:
        """Work left if the stack in training and every later one run `epochs` epochs."""
        names = list(self.stacks)
        current = self.stacks[stack]
        left = ((steps - step) + max(0, epochs - epoch) * steps) * active * current.macs
        for later in names[names.index(stack) + 1 :]:
            s = self.stacks[later]
            left += epochs * steps * s.members * s.macs
        return left

    def __call__(self, stack, epoch, last, step, steps, active, metrics=None) -> None:
        self._advance(stack, epoch, step, active)
        if metrics is not None:
            for observe in self.observers:
                observe(stack, epoch, active, metrics)
        if self.silent:
            return
        desc = f"{stack:<18} epoch {epoch:>2}/{last} · {active} training"
        eta = self.eta(stack, epoch, step, steps, active)
        elapsed = _duration(time.perf_counter() - self.start)
        if not self.live:
            if step == steps:
                tail = f" · {eta}" if eta.startswith("study") else ""
                print(f"{desc} · {elapsed} elapsed{tail}", file=sys.stderr, flush=True)
            return
        if self.key != (stack, epoch):
            self.key = (stack, epoch)
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(desc, total=steps, eta=eta, elapsed=elapsed)
        self.progress.update(self.task, completed=step, description=desc, eta=eta,
                             elapsed=elapsed)  # fmt: skip


def _duration(seconds: float) -> str:
    """12 s, 3 min, 1 h 05 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def with_progress(quiet: bool, fn, observers: tuple = ()):
    """fn(progress) under a progress bar, or fn(None) when quiet; `observers` see each epoch's
    end (a quiet bar prints nothing and still feeds them)."""
    if quiet and not observers:
        return fn(None)
    bar = Bar(silent=quiet)
    bar.observers.extend(observers)
    with bar.progress:
        return fn(bar)
