"""Progress of a study, for the command line and the Python API alike.

A Rich bar on a terminal (the current stack and epoch, its steps, the epoch's ETA, the time
since the study began); one plain line per epoch when stderr is a log file. The engine calls
it at least once a second.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

err = Console(stderr=True)


class Bar:
    """Rich progress bar on a terminal (one bar per epoch of the current stack, ETA, models still
    training); one plain line per epoch when stderr is a log file."""

    def __init__(self) -> None:
        self.live = err.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps · epoch ETA"),
            TimeRemainingColumn(),
            TextColumn("· elapsed"),
            TimeElapsedColumn(),
            console=err,
            disable=not self.live,
        )
        self.task = None
        self.key = None
        self.start = time.perf_counter()

    def __call__(self, stack, epoch, last, step, steps, active) -> None:
        desc = f"{stack:<18} epoch {epoch:>2}/{last} · {active} training"
        if not self.live:
            if step == steps:
                elapsed = time.perf_counter() - self.start
                print(f"{desc} · {elapsed:.0f} s elapsed", file=sys.stderr, flush=True)
            return
        if self.key != (stack, epoch):
            self.key = (stack, epoch)
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(desc, total=steps)
        self.progress.update(self.task, completed=step, description=desc)


def with_progress(quiet: bool, fn):
    """fn(progress) under a progress bar, or fn(None) when quiet."""
    if quiet:
        return fn(None)
    bar = Bar()
    with bar.progress:
        return fn(bar)
