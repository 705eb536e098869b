"""Shared fixtures: real MNIST slices (all ten classes), small enough for a 2-core machine."""

from __future__ import annotations

import pytest
import torch

from kdbench import data


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
