"""Threads on a busy machine: the README's smoke run with torch's default thread count and with
one thread, while other processes hold every core, and on an idle machine.

    python benchmarks/busy.py --rounds 3

Each round runs `kdbench reproduce` (the smoke run: 2000 images, 2 repeats, 3 members, 2
epochs) as a subprocess with `--threads 1`, with `--threads <all cores>` (torch's own default)
and with no flag (kdbench's default: one thread when other processes use the cores now), first
with one busy-loop process per core running beside it, then without. The idle phase does not
wait for the load average to settle: its default run starts right after the all-cores run, the
case where a lagging load average (still about cores - 0.5) would misread the machine as busy.
Prints wall times, the thread count the default chose, the load average it started under,
medians, the ratios, and whether the thread counts gave identical records (all fields but the
measured ones: time, peak memory, energy).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kdbench.records import MEASURED

SMOKE = ["--train-limit", "2000", "--repeats", "2", "--members", "3", "--epochs", "2"]


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        x += 1


CHOICES: list[str] = []  # per default run: what it chose, and the load average it started under


def run(threads: int | None, out: Path) -> float:
    cmd = [sys.executable, "-m", "kdbench", "reproduce", *SMOKE, "--quiet", "--no-latency"]
    cmd += ["--out", str(out)] + (["--threads", str(threads)] if threads else [])
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if threads is None:
        chose = "1 thread" if "machine is busy" in proc.stderr else "all cores"
        CHOICES.append(f"{out.name}: chose {chose} (load average {load:.2f} at its start)")
    return seconds


def records(folder: Path) -> list[dict]:
    lines = (folder / "records.jsonl").read_text().splitlines()
    # measured, not computed: time, peak memory, energy (`records.MEASURED`)
    return [{k: v for k, v in json.loads(x).items() if k not in MEASURED} for x in lines]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; load average now {os.getloadavg()[0]:.2f}")
    results: dict[tuple[str, str], list[float]] = {}
    variants = (("1 thread", 1), ("all cores", cores), ("kdbench default", None))
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for machine in ("busy", "idle"):
                stop = mp.Event()
                spinners = [mp.Process(target=_spin, args=(stop,)) for _ in range(cores)]
                if machine == "busy":
                    for p in spinners:
                        p.start()
                try:
                    if machine == "busy":
                        time.sleep(2)  # the spinners up to speed
                    outs = {}
                    for label, threads in variants:
                        outs[label] = Path(tmp) / f"{machine}-{label}-{r}".replace(" ", "_")
                        results.setdefault((machine, label), []).append(run(threads, outs[label]))
                    same &= records(outs["1 thread"]) == records(outs["all cores"])
                finally:
                    stop.set()
                    for p in spinners:
                        if p.is_alive():
                            p.join()
                print(
                    f"round {r + 1} {machine}: "
                    + ", ".join(
                        f"{lab} {v[-1]:.1f} s" for (m, lab), v in results.items() if m == machine
                    )
                )
    for machine in ("busy", "idle"):
        one = statistics.median(results[(machine, "1 thread")])
        every = statistics.median(results[(machine, "all cores")])
        auto = statistics.median(results[(machine, "kdbench default")])
        print(
            f"median {machine}: 1 thread {one:.1f} s, all {cores} cores {every:.1f} s"
            f" ({every / one:.2f}x), kdbench default {auto:.1f} s ({auto / one:.2f}x)"
        )
    print(f"records identical between 1 and {cores} threads: {same}")
    print("\n".join(CHOICES))


if __name__ == "__main__":
    main()
