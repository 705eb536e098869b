"""Threads on a busy machine: the README's smoke run with torch's default thread count and with
one thread, while other processes hold every core, and on an idle machine.

    python benchmarks/busy.py --rounds 3

Each round runs `kdbench reproduce` (the smoke run: 2000 images, 2 repeats, 3 members, 2
epochs) as a subprocess: `--threads 1` and the default (all cores), first with one busy-loop
process per core running beside it, then without. Prints wall times, medians, the ratio, and
whether the two thread counts gave identical records (all fields but `seconds`).
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

SMOKE = ["--train-limit", "2000", "--repeats", "2", "--members", "3", "--epochs", "2"]


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        x += 1


def run(threads: int | None, out: Path) -> float:
    cmd = [sys.executable, "-m", "kdbench", "reproduce", *SMOKE, "--quiet", "--no-latency"]
    cmd += ["--out", str(out)] + (["--threads", str(threads)] if threads else [])
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def records(folder: Path) -> list[dict]:
    lines = (folder / "records.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; load average now {os.getloadavg()[0]:.2f}")
    results: dict[tuple[str, str], list[float]] = {}
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
                    outs = {}
                    for label, threads in (("1 thread", 1), ("default threads", None)):
                        outs[label] = Path(tmp) / f"{machine}-{label}-{r}".replace(" ", "_")
                        results.setdefault((machine, label), []).append(run(threads, outs[label]))
                    same &= records(outs["1 thread"]) == records(outs["default threads"])
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
        default = statistics.median(results[(machine, "default threads")])
        print(
            f"median {machine}: 1 thread {one:.1f} s, default ({cores}) {default:.1f} s,"
            f" default / 1 thread = {default / one:.2f}x"
        )
    print(f"records identical between 1 and {cores} threads: {same}")


if __name__ == "__main__":
    main()
