"""Shared fixtures: real MNIST slices (all ten classes), small enough for a 2-core machine."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys

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


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """One small finished study through the console script, latency measured: the CLI, report
    and export tests read it. Trained once for the whole suite: the first of xdist's workers to
    ask trains it under a lock and the others wait for it (each worker trained its own: 31 s).
    Read it only; a test that runs a command on it takes `quick_copy` (one writer per folder,
    and no reader meets it half-written)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this session's, shared by its workers
    out = root / "quick"
    args = ["--train-limit", "2000", "--repeats", "2", "--members", "3", "--epochs", "2", "--quiet"]
    with open(root / "quick.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (out / "summary.json").exists():
            cmd = [sys.executable, "-m", "kdbench", "reproduce", *args, "--out", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def quick_copy(quick_run, tmp_path):
    """`quick_run` copied, for a test that writes into it or claims it."""
    return shutil.copytree(quick_run, tmp_path / "quick")


# the longest files (measured with --durations): xdist hands files to its workers in collection
# order, so these go first and the short files fill the workers' last minutes instead of one
# long file running alone at the end
_LONGEST_FIRST = ("test_sweep_ray.py", "test_sweep.py", "test_resume.py", "test_cli.py",
                  "test_sweep_teacher.py", "test_diagnose.py", "test_api.py")  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order kept
