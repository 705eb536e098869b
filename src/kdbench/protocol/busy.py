"""How many cores other processes are using now: what the thread choice of a run with no
--threads rests on.

The load average lags by a minute and counts this very process's work, so right after a heavy
command (the test suite, the previous `kdbench` run) an idle machine reads as busy. Instead,
two readings of the kernel's CPU counters (`/proc/stat`) a short window apart, less what this
process itself used in that window (`/proc/self/stat`), give the cores that other work holds
now. Where `/proc` is not readable (not Linux), the load average is the fallback.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

WINDOW = 0.25  # seconds between the two readings


@dataclass(frozen=True)
class CpuSample:
    """Clock ticks since boot: all cores' busy and total time, and this process's own."""

    busy: int
    total: int
    own: int


def sample(proc: Path = Path("/proc")) -> CpuSample | None:
    """One reading; None where the counters cannot be read."""
    try:
        cpu = (proc / "stat").read_text().splitlines()[0].split()
        # the comm field (2nd) may hold spaces: the fields after its closing ')' are fixed
        own = (proc / "self" / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if cpu[0] != "cpu" or len(cpu) < 8 or len(own) < 15:
        return None
    user, nice, system, idle, iowait, irq, softirq = (int(v) for v in cpu[1:8])
    steal = int(cpu[8]) if len(cpu) > 8 else 0
    busy = user + nice + system + irq + softirq + steal
    # utime, stime, cutime, cstime are the 14th to 17th fields of /proc/self/stat (12th to 15th
    # after comm): this process's threads and the children it waited for (a compiler it ran)
    return CpuSample(busy=busy, total=busy + idle + iowait, own=sum(int(v) for v in own[11:15]))


def others_busy_cores(before: CpuSample, after: CpuSample, cores: int) -> float:
    """Cores' worth of work that other processes did between two readings."""
    elapsed = after.total - before.total
    if elapsed <= 0:
        return 0.0
    others = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, cores * others / elapsed)


def busy_cores(cores: int, proc: Path = Path("/proc"), window: float = WINDOW) -> float:
    """Cores other processes use now: measured over `window` where /proc is readable, else the
    1-minute load average (which lags and counts this process too)."""
    before = sample(proc)
    if before is not None:
        time.sleep(window)
        after = sample(proc)
        if after is not None:
            return others_busy_cores(before, after, cores)
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
