"""GPU benchmark (#44): kdbench against a plain PyTorch loop on the same GPU, then the full paper
study and the conv preset, timed.

    PYTHONPATH=src python3 benchmarks/gpu.py --rounds 3          # on a machine with CUDA
    python benchmarks/gpu.py --device cpu --smoke                 # checks the script here

1. Side by side in one process on the same device, the reduced protocol (`--train-limit 20000
   --repeats 2 --members 10 --epochs 2`): the plain loop of `engine.py` (each model its own
   `nn.Module` + `torch.optim.Adam`, one at a time) against kdbench's `run_study`; wall times
   with the device synchronised before each clock read, medians of `--rounds`. Target on an
   H200-class GPU: at least 15x.
2. `kdbench reproduce --device cuda --no-latency` (the paper's study, 10 repeats), timed as a
   subprocess: target at most 20 s.
3. `kdbench reproduce --preset conv --device cuda --no-latency` (10 repeats): at most 120 s.
Prints the GPU's name, torch's version and one table (Markdown, for `benchmarks/README.md`).
`--smoke` shrinks every part to seconds (for checking the script, not for numbers).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from engine import kdbench_engine, plain_baseline
from kdbench.config import Config
from kdbench.data import datasets as data

REDUCED = {"train_limit": 20000, "repeats": 2, "members": 10, "epochs": 2}
SMOKE = {"train_limit": 600, "repeats": 2, "members": 2, "epochs": 1}
STUDIES = {  # name: (flags, target seconds on an H200-class GPU)
    "paper study, 10 repeats": ([], 20.0),
    "conv preset, 10 repeats": (["--preset", "conv"], 120.0),
}


def side_by_side(device: str, rounds: int, smoke: bool) -> tuple[float, float]:
    cfg = Config().with_overrides(**(SMOKE if smoke else REDUCED), device=device)
    d = cfg.data
    splits = data.load(d.dataset, d.data_dir, d.validation_split, d.train_limit).to(device)
    base, fast = [], []
    for r in range(rounds):
        b, _ = plain_baseline(cfg, splits)
        k, _ = kdbench_engine(cfg, splits)
        base.append(b)
        fast.append(k)
        print(f"round {r + 1}: plain loop {b:.1f} s, kdbench {k:.1f} s, {b / k:.1f}x", flush=True)
    return statistics.median(base), statistics.median(fast)


def study(flags: list[str], device: str, smoke: bool) -> float:
    extra = ["--train-limit", "600", "--repeats", "2", "--members", "2", "--epochs", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "kdbench", "reproduce", *flags, "--device", device,
               "--no-latency", "--quiet", "--out", str(Path(tmp) / "run"),
               *(extra if smoke else [])]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{name}; torch {torch.__version__}")
    base, fast = side_by_side(args.device, args.rounds, args.smoke)
    rows = [("reduced protocol: plain loop / kdbench", f"{base:.1f} s / {fast:.1f} s",
             f"{base / fast:.1f}x", "≥ 15x", base / fast >= 15)]  # fmt: skip
    for label, (flags, target) in STUDIES.items():
        seconds = study(flags, args.device, args.smoke)
        print(f"{label}: {seconds:.1f} s", flush=True)
        label += " (smoke size: 600 images, 2 repeats, 1 epoch)" if args.smoke else ""
        rows.append((label, f"{seconds:.1f} s", "", f"≤ {target:g} s", seconds <= target))
    print(f"\n{name}, torch {torch.__version__}, medians of {args.rounds} rounds\n")
    print("| measurement | time | ratio | target | met |\n|---|---|---|---|---|")
    for label, time_, ratio, target, met in rows:
        print(f"| {label} | {time_} | {ratio} | {target} | {'yes' if met else 'no'} |")


if __name__ == "__main__":
    main()
