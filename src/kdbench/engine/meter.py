"""What one stack's training took on this machine: wall seconds, peak memory, and energy where
the machine can measure it (never guessed).

Memory: on a GPU, the most the stack allocated on it (torch's allocator statistics, reset per
stack); on a CPU, the process's peak resident memory during the stack (Linux lets a process
reset its own high-water mark through /proc/self/clear_refs), which includes the data and the
interpreter, not the stack alone. Energy: Linux RAPL package counters where readable; this
machine and most containers and VMs have none, so energy is `None`, reported as not measured.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

RAPL = Path("/sys/class/powercap")
MEMORY_KINDS = {  # how a peak was measured, as the report names it
    "cuda": "peak GPU memory allocated during the stack",
    "rss": "peak resident memory of the process during the stack",
    "rss-process": "peak resident memory of the process so far (its peak could not be reset)",
}


@dataclass(frozen=True)
class Measured:
    """One stack's measurement."""

    seconds: float
    peak_memory_bytes: int | None
    memory_kind: str | None  # a key of MEMORY_KINDS
    energy_joules: float | None  # None: the machine cannot measure it


def _rapl_files(root: Path) -> list[tuple[Path, int]]:
    """(energy counter, its wrap-around range) of every readable top-level RAPL package."""
    out = []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:  # sub-zones (core, dram) are inside their package's count
            continue
        try:
            (zone / "energy_uj").read_text()
            top = int((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue
        out.append((zone / "energy_uj", top))
    return out


def _read_uj(files: list[tuple[Path, int]]) -> list[int]:
    return [int(f.read_text()) for f, _ in files]


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _rss_peak() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak of the whole process


class Meter:
    """`with Meter(device) as m: ...` then `m.result`: the block's seconds, peak memory, energy."""

    def __init__(self, device: str | torch.device = "cpu", rapl: Path = RAPL):
        self.cuda = torch.device(device).type == "cuda"
        self.rapl = _rapl_files(rapl)
        self.result: Measured | None = None

    def __enter__(self) -> Meter:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.reset = _reset_rss_peak()
        self.energy = _read_uj(self.rapl) if self.rapl else None
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self.start
        joules = None
        if self.energy is not None:
            now = _read_uj(self.rapl)
            joules = sum(
                ((b - a) % top) / 1e6
                for a, b, (_, top) in zip(self.energy, now, self.rapl, strict=True)
            )
        if self.cuda:
            peak, kind = int(torch.cuda.max_memory_allocated()), "cuda"
        else:
            peak, kind = _rss_peak(), "rss" if self.reset else "rss-process"
        self.result = Measured(seconds, peak, kind, joules)
