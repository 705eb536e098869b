"""How many CPU threads a stack trains on, chosen from the machine as it is when it starts.

With no `--threads`, each stack (and each sweep point's and explain variant's stacks) takes the
cores other processes leave free: the cores this process may use, less the cores' worth of work
other processes did since the last choice (the previous stack's whole run: a long, recent
window at no cost; before the first stack, a `busy.WINDOW` sample), rounded down after a
quarter-core tolerance (a core others use less than a quarter of counts as free; more than
that and a thread would share it and every parallel region would wait on it), at least 1, and
never more than torch's own count when the first study began (so `OMP_NUM_THREADS`, or
`torch.set_num_threads` before it, caps it). `--threads N` fixes it. The count changes speed,
never numbers: a stack's members are summed in one order whatever the thread count
(`tests/test_modules.py`, `benchmarks/busy.py`).

What was chosen and why is said once per change on the progress line, kept in each record
(`threads`), and the rule is in config.json's environment.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from kdbench.protocol import busy

TOLERANCE = 0.25  # of a core: other work below this does not cost a thread
RULE = "per stack, the cores other processes leave free (records' `threads`); --threads fixes it"


@dataclass(frozen=True)
class Choice:
    """A stack's thread count and why."""

    threads: int
    cores: int  # the cores this process may run on
    others: float | None  # cores' worth of other processes' work (None: --threads)

    def why(self) -> str:
        if self.others is None:
            return f"{self.threads} thread{'s' if self.threads != 1 else ''} (--threads)"
        return (
            f"{self.threads} of {self.cores} threads: other processes use {self.others:.1f}"
            f" core{'s' if self.others != 1 else ''}; --threads N fixes it"
        )


_cap: int | None = None  # torch's own count before the first choice
_last: tuple[busy.CpuSample | None, Choice | None] = (None, None)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def choose(cores: int, others: float, cap: int) -> int:
    """Threads for `cores` with `others` cores' worth of other work: the free cores, a core
    used less than `TOLERANCE` by others counting as free, at least 1, at most `cap`."""
    return max(1, min(cap, cores, math.floor(cores - others + TOLERANCE)))


def fit(threads: int | None, device: str) -> Choice | None:
    """Set torch's thread count for the stack about to train; returns the choice when it
    differs from the last one (to say it), else None. On CUDA the CPU only feeds the GPU: left
    as it is."""
    global _last
    if threads is None and device != "cpu":
        return None
    choice = Choice(threads, _cores(), None) if threads is not None else _free(_last[0])
    torch.set_num_threads(choice.threads)
    said = _last[1]
    _last = (busy.sample(), choice)
    return choice if said is None or said.threads != choice.threads else None


def _free(since: busy.CpuSample | None) -> Choice:
    """The free cores now: other processes' work since `since` (the last choice), or over a
    short sample before the first."""
    global _cap
    if _cap is None:
        _cap = torch.get_num_threads()
    cores = _cores()
    counted = os.cpu_count() or cores  # /proc/stat counts every core, not only ours
    if since is None:  # the first stack: a short sample of the machine now
        others = busy.busy_cores(counted)
    else:
        now = busy.sample()
        others = busy.others_busy_cores(since, now, counted) if now else 0.0
    return Choice(choose(cores, others, _cap), cores, others)
