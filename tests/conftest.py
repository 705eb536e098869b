"""Shared fixtures: real MNIST slices (all ten classes), small enough for a 2-core machine."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdbench.data import datasets as data


@pytest.fixture(scope="session")
def mnist_arrays():
    return data.load_arrays("mnist")


@pytest.fixture(scope="session")
def small_splits(mnist_arrays):
    a = mnist_arrays
    return data.split(
        a["train_images"],
        a["train_labels"],
        a["test_images"][:1000],
        a["test_labels"][:1000],
        validation_split=0.2,
        train_limit=600,
    )


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield


def _once(tmp_path_factory, name: str, args: list[str], done: str) -> Path:
    """`python -m kdbench ARGS --out <folder>` run once for the whole suite: the first of
    xdist's workers to ask runs it under a lock, the others wait for it and read the folder.
    Read it only; a test that writes into it or claims it works on a copy (one writer per
    folder, and no reader meets it half-written)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this session's, shared by its workers
    out = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (out / done).exists():
            cmd = [sys.executable, "-m", "kdbench", *args, "--out", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """One small finished study through the console script, latency measured: the CLI, report
    and export tests read it (once per suite: each worker trained its own, 31 s)."""
    args = ["--train-limit", "2000", "--repeats", "2", "--members", "3", "--epochs", "2"]
    return _once(tmp_path_factory, "quick", ["reproduce", *args, "--quiet"], "summary.json")


@pytest.fixture
def quick_copy(quick_run, tmp_path):
    """`quick_run` copied, for a test that writes into it or claims it."""
    return shutil.copytree(quick_run, tmp_path / "quick")


# a 2 x 2 grid over temperature and alpha, small: the sweep and Ray tests' reference
SWEEP_ARGS = ["--grid", "temperature=2,8", "--grid", "alpha=0.1,0.9", "--train-limit", "1000"]
SWEEP_ARGS += ["--repeats", "2", "--members", "2", "--epochs", "1", "--threads", "1", "--quiet"]


@pytest.fixture(scope="session")
def local_sweep(tmp_path_factory):
    """`SWEEP_ARGS` swept by the console script on the local executor, once per suite."""
    return _once(tmp_path_factory, "sweep", ["sweep", *SWEEP_ARGS], "sweep.json")


# the longest files (measured with --durations): xdist hands files to its workers in collection
# order, so these go first and the short files fill the workers' last minutes instead of one
# long file running alone at the end
_LONGEST_FIRST = ("test_sweep_ray.py", "test_sweep.py", "test_resume.py", "test_cli.py",
                  "test_sweep_teacher.py", "test_diagnose.py", "test_api.py")  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order kept
