"""Is this checkout's engine as fast as at another commit? Interleaved A/B of the same study.

    python benchmarks/ab.py --ref <commit> --rounds 3

Each round times `run_study` at `benchmarks/engine.py`'s reduced protocol (20,000 images,
2 repeats, 10 members, 2 fixed epochs; no baseline loop) in a fresh subprocess, once with a
`git worktree` of `--ref` and once with this checkout, alternating which goes first. Both sides
see the same machine load, so their ratio is meaningful on a shared machine; prints each round,
the medians and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = """
import time, torch
from kdbench.config import Config
try:  # the layout since the subpackages; a --ref from before them has the flat one
    from kdbench.data import datasets as data
    from kdbench.protocol.study import run_study
except ImportError:
    from kdbench import data
    from kdbench.protocol import run_study
cfg = Config().with_overrides(train_limit=20000, repeats=2, members=10, epochs=2)
d = cfg.data
splits = data.load(d.dataset, d.data_dir, d.validation_split, d.train_limit)
t = time.perf_counter()
run_study(cfg, splits, lambda rec: None)
print(time.perf_counter() - t)
"""


def timed(src: Path) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return float(proc.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "ref"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                        args.ref], check=True, capture_output=True)  # fmt: skip
        try:
            before, after = [], []
            for r in range(args.rounds):
                order = [("before", tree / "src"), ("after", ROOT / "src")]
                for name, src in order if r % 2 == 0 else order[::-1]:
                    (before if name == "before" else after).append(timed(src))
                print(f"round {r + 1}: {args.ref[:10]} {before[-1]:.1f} s | here {after[-1]:.1f} s")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False)  # fmt: skip
    b, a = statistics.median(before), statistics.median(after)
    print(f"median: {args.ref[:10]} {b:.1f} s, here {a:.1f} s, here / there = {a / b:.3f}")


if __name__ == "__main__":
    main()
