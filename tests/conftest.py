"""Shared fixtures: real MNIST slices (all ten classes), small enough for a 2-core machine."""

from __future__ import annotations

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
    and export tests read it (training it once keeps the suite inside its time budget)."""
    out = tmp_path_factory.mktemp("run") / "quick"
    args = ["--train-limit", "2000", "--repeats", "2", "--members", "3", "--epochs", "2"]
    cmd = [sys.executable, "-m", "kdbench", "reproduce", *args, "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


# the longest files (measured with --durations): xdist hands files to its workers in collection
# order, so these go first and the short files fill the workers' last minutes instead of one
# long file running alone at the end
_LONGEST_FIRST = ("test_sweep_ray.py", "test_sweep.py", "test_resume.py", "test_cli.py",
                  "test_sweep_teacher.py", "test_diagnose.py", "test_api.py")  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order kept
