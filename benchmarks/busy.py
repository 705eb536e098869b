"""Threads on a machine as it is: kdbench's default thread choice against fixed counts, with one
core taken by another process and on an idle machine.

    python benchmarks/busy.py --rounds 3

Each round runs `kdbench reproduce` (the README's smoke size: 2000 images, 2 repeats, 3
members, 2 epochs) as a subprocess with no flag (kdbench's default: each stack the cores other
processes leave free, `protocol/threads.py`), with `--threads 1` and with `--threads <all
cores>`, first beside one busy-loop process pinned to core 0 (a laptop's browser, a shared
server's other job), then alone. The idle runs start right after the busy ones (no settling).
Prints wall times, the thread counts the default chose (from its records' `threads`), medians,
each condition's best fixed count and the default's ratio to it (target: within 1.10x), and
whether every variant gave identical records (all fields but the measured ones).
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


def _spin(stop, core: int) -> None:
    os.sched_setaffinity(0, {core})
    x = 0
    while not stop.is_set():
        x += 1


def run(threads: int | None, out: Path) -> float:
    cmd = [sys.executable, "-m", "kdbench", "reproduce", *SMOKE, "--quiet", "--no-latency"]
    cmd += ["--out", str(out)] + (["--threads", str(threads)] if threads else [])
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def records(folder: Path) -> list[dict]:
    lines = (folder / "records.jsonl").read_text().splitlines()
    # measured, not computed: time, peak memory, energy, threads (`records.MEASURED`)
    return [{k: v for k, v in json.loads(x).items() if k not in MEASURED} for x in lines]


def chosen(folder: Path) -> str:
    """The thread counts the stacks trained on, in training order."""
    lines = (folder / "records.jsonl").read_text().splitlines()
    counts = [c for c in (json.loads(x).get("threads") for x in lines) if c]  # models only
    return "/".join(str(c) for i, c in enumerate(counts) if i == 0 or counts[i - 1] != c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; load average now {os.getloadavg()[0]:.2f}")
    variants = (("kdbench default", None), ("--threads 1", 1), (f"--threads {cores}", cores))
    results: dict[tuple[str, str], list[float]] = {}
    choices: dict[str, list[str]] = {"one core busy": [], "idle": []}
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for machine in ("one core busy", "idle"):
                stop = mp.Event()
                spinner = mp.Process(target=_spin, args=(stop, 0))
                if machine != "idle":
                    spinner.start()
                    time.sleep(2)  # up to speed
                try:
                    outs = {}
                    for label, threads in variants:
                        outs[label] = Path(tmp) / f"{machine}-{label}-{r}".replace(" ", "_")
                        results.setdefault((machine, label), []).append(run(threads, outs[label]))
                    first = records(outs["kdbench default"])
                    same &= all(records(o) == first for o in outs.values())
                    choices[machine].append(chosen(outs["kdbench default"]))
                finally:
                    stop.set()
                    if spinner.is_alive():
                        spinner.join()
                print(f"round {r + 1} {machine}: " + ", ".join(
                    f"{lab} {v[-1]:.1f} s" for (m, lab), v in results.items() if m == machine
                ) + f"; the default chose {choices[machine][-1]} threads", flush=True)  # fmt: skip
    print("\n| machine | kdbench default | --threads 1 | --threads"
          f" {cores} | default / best | default chose |\n|---|---|---|---|---|---|")  # fmt: skip
    for machine in ("one core busy", "idle"):
        med = {lab: statistics.median(results[(machine, lab)]) for lab, _ in variants}
        best = min(v for lab, v in med.items() if lab != "kdbench default")
        auto = med["kdbench default"]
        print(f"| {machine} | {auto:.1f} s | {med['--threads 1']:.1f} s |"
              f" {med[f'--threads {cores}']:.1f} s | {auto / best:.2f}x |"
              f" {', '.join(choices[machine])} |")  # fmt: skip
    print(f"\nrecords identical across the thread counts: {same}")


if __name__ == "__main__":
    main()
