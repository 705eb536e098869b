"""The CPU's fixed cost: a trivial run against `python -c "import torch"`, side by side.

    python benchmarks/fixed_cost.py --rounds 5

Each round runs, as fresh subprocesses (what a user pays each time): `python -c "import torch"`
(the floor: any PyTorch program pays it), then `kdbench reproduce --train-limit 600 --repeats 2
--members 2 --epochs 1 --no-latency --quiet --threads 1` into a new folder. Prints each round's
wall times, their medians and kdbench's cost beyond the import (target: at most 2 s), then one
`-X importtime`-free breakdown of the trivial run by `cProfile`'s top entries (cumulative), so
the next change knows where the time is.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRIVIAL = ["--train-limit", "600", "--repeats", "2", "--members", "2", "--epochs", "1",
           "--no-latency", "--quiet", "--threads", "1"]  # fmt: skip


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def profile(out: Path) -> str:
    """The trivial run in this process under cProfile: the top entries by cumulative time."""
    from kdbench.cli.app import app

    prof = cProfile.Profile()
    prof.enable()
    try:
        app(["reproduce", *TRIVIAL, "--out", str(out)], standalone_mode=False)
    finally:
        prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="also print where the time goes")
    args = ap.parse_args()
    floor, run = [], []
    with tempfile.TemporaryDirectory() as tmp:
        timed([sys.executable, "-c", "import torch"])  # warm the disk cache for both
        for r in range(args.rounds):
            floor.append(timed([sys.executable, "-c", "import torch"]))
            out = Path(tmp) / f"r{r}"
            run.append(timed([sys.executable, "-m", "kdbench", "reproduce", *TRIVIAL,
                              "--out", str(out)]))  # fmt: skip
            print(f"round {r + 1}: import torch {floor[-1]:.2f} s, trivial run {run[-1]:.2f} s",
                  flush=True)  # fmt: skip
        f, k = statistics.median(floor), statistics.median(run)
        print(f"\nmedian of {args.rounds}: import torch {f:.2f} s, trivial run {k:.2f} s,"
              f" kdbench beyond the import {k - f:.2f} s (target: at most 2 s)")  # fmt: skip
        if args.profile:
            print(profile(Path(tmp) / "profiled"))


if __name__ == "__main__":
    main()
