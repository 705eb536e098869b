"""Do refactors move numbers? Run reduced studies here and at a git ref; compare their records.

    python benchmarks/same_records.py --ref <commit>     # e.g. the commit before a core change

Each study runs in a fresh subprocess (one thread, so the float order is fixed) once with this
checkout's `src/` and once with a `git worktree` of `--ref`, on the same reduced protocols:
early stopping (members stopping at different epochs), restore-best on validation error, the
softmax head with hard-label monitoring, Hinton's dropout teacher, a conv teacher and conv
students (the compiled conv path where it builds). Records must be equal in
every field both sides have but the measured ones (`records.MEASURED`: wall time, memory, energy)
and `version` (the record format's own number); fields added since `--ref` (the counted
training MACs) are not in its records to compare. It prints
each study's record count and the first difference, and exits 1 if any study differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORED = ("seconds", "peak_memory_bytes", "memory_kind", "energy_joules", "version")

STUDIES = {
    "early-stopping": dict(max_epochs=6),
    "restore-best": dict(max_epochs=5, restore_best=True, monitor="val_error"),
    "softmax-head": dict(max_epochs=5, head="softmax", kd_monitor="hard"),
    "dropout": dict(
        max_epochs=4, teacher_hidden=(64, 64), teacher_dropout=0.5, teacher_input_dropout=0.2
    ),
    # the conv nets' path (compiled kernels where they build) and a sized fully connected net
    "conv": dict(max_epochs=3, members=2, teacher_arch="cnn:4", student_arch="mlp:50"),
    "conv-students": dict(max_epochs=3, members=2, teacher_hidden=(64,), student_arch="cnn:2"),
}
BASE = dict(train_limit=2000, repeats=2, members=3, patience=1, learning_rate=3e-3)

SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from kdbench.config import Config
try:  # the layout since the subpackages; a --ref from before them has the flat one
    from kdbench.data import datasets as data
    from kdbench.protocol.study import run_study
except ImportError:
    from kdbench import data
    from kdbench.protocol import run_study
over = json.loads(sys.argv[1])
over = {k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}
cfg = Config().with_overrides(**over)
d = cfg.data
splits = data.load(d.dataset, d.data_dir, d.validation_split, d.train_limit)
out = []
run_study(cfg, splits, out.append)
print(json.dumps([r if isinstance(r, dict) else r.to_json() for r in out]))
"""


def run(src: Path, overrides: dict) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(overrides)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return json.loads(proc.stdout.splitlines()[-1])


def strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in IGNORED} for r in records]


def first_difference(a: list[dict], b: list[dict]) -> str | None:
    if len(a) != len(b):
        return f"{len(a)} records against {len(b)}"
    for x, y in zip(a, b, strict=True):
        both = set(x) & set(y)
        if {k: x[k] for k in both} != {k: y[k] for k in both} or set(x) - set(y):
            keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
            return f"{x.get('role')} repeat {x.get('repeat')} member {x.get('member')}: {keys}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="git commit to compare with")
    args = ap.parse_args()
    differ = 0
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "ref"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.ref],
            check=True,
            capture_output=True,
        )
        try:
            for name, extra in STUDIES.items():
                overrides = {**BASE, **extra}
                here = strip(run(ROOT / "src", overrides))
                there = strip(run(tree / "src", overrides))
                diff = first_difference(here, there)
                differ += diff is not None
                print(f"{name:<15} {len(here):>3} records  {'identical' if diff is None else diff}")
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
            )
    print("all identical" if not differ else f"{differ} studies differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
