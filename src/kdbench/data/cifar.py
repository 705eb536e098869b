"""CIFAR-10 for users with a network: the binary version (no pickle), downloaded with pooch,
accepted only if the archive matches its pinned SHA-256, and only then unpacked (all six batch
files or none) into the cache.

The archive is the Toronto binary release (`cifar-10-binary.tar.gz`, 170,052,171 bytes; MD5
c32a1d4ab5d03f1284b67883e8d87530 as its page gives it). Each batch file is a run of records
of 1 label byte and 3,072 pixel bytes (3 colour planes of 32x32, row by row): the (C, H, W)
layout a conv net reads, flattened.
"""

from __future__ import annotations

import os
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdbench.data import sources
from kdbench.errors import DataError

RECORD = 1 + 3 * 32 * 32
TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST = ("test_batch.bin",)
INNER = "cifar-10-batches-bin"  # the folder inside the archive


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str


CIFAR10 = Archive(
    "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
)


def read_batches(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3072], labels int64 [N]) of CIFAR binary batch files."""
    images, labels = [], []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % RECORD:
            raise DataError(
                f"{path} is not a CIFAR-10 batch ({raw.size} bytes, not whole records of"
                f" {RECORD}); delete it and let kdbench download the dataset again"
            )
        rows = raw.reshape(-1, RECORD)
        if rows[:, 0].max() > 9:
            raise DataError(f"{path} has labels above 9: not CIFAR-10; delete it")
        labels.append(rows[:, 0].astype(np.int64))
        images.append(rows[:, 1:])
    return np.concatenate(images), np.concatenate(labels)


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in TRAIN + TEST)


def load_arrays(folder: Path, archive: Archive | None = None) -> dict[str, np.ndarray]:
    """The four arrays, from `folder` (a --data-dir, or the cache, downloaded if needed)."""
    if not _complete(folder):
        download(folder, archive or CIFAR10)
    x_train, y_train = read_batches([folder / f for f in TRAIN])
    x_test, y_test = read_batches([folder / f for f in TEST])
    return {"train_images": x_train, "train_labels": y_train,
            "test_images": x_test, "test_labels": y_test}  # fmt: skip


def download(folder: Path, archive: Archive) -> Path:
    """Fetch the archive into a temporary folder (pooch checks its SHA-256 and keeps nothing
    that fails), unpack the six batch files there, and only then move them into `folder`: a
    failed, tampered or incomplete download leaves nothing behind."""
    import pooch  # only when a download is needed

    print(f"kdbench: downloading CIFAR-10 (170 MB) into {folder}", file=sys.stderr)
    pooch.get_logger().setLevel("WARNING")
    folder.parent.mkdir(parents=True, exist_ok=True)
    name = archive.url.rsplit("/", 1)[1]
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".cifar10-") as tmp:
        fix = f"put its six .bin batch files in {folder} or pass --data-dir (their folder)"
        path = sources.checked_fetch(
            lambda: pooch.retrieve(archive.url, f"sha256:{archive.sha256}", fname=name, path=tmp),
            "CIFAR-10",
            name,
            fix,
        )
        wanted = {f"{INNER}/{f}": f for f in TRAIN + TEST}
        try:
            with tarfile.open(path, "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]
                if len(members) != len(wanted):
                    raise DataError(f"{name} lacks CIFAR-10's batch files; nothing was kept")
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{name} cannot be unpacked ({exc}); nothing was kept") from None
        folder.mkdir(exist_ok=True)
        for inner, file in wanted.items():
            os.replace(Path(tmp) / inner, folder / file)
    return folder
