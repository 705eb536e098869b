"""Datasets: IDX reading, checksum verification, and the train / validation / test split.

MNIST ships inside the package so the study runs offline; its files are verified on every load
against the SHA-256 of their decompressed bytes, so a corrupted install cannot produce a table.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from kdbench.errors import ConfigError, DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# SHA-256 of the decompressed canonical files; None where no pinned hash is known.
CHECKSUMS: dict[str, dict[str, str] | None] = {
    "mnist": {
        "t10k-images-idx3-ubyte": (
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
        ),
        "t10k-labels-idx1-ubyte": (
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
        ),
        "train-images-idx3-ubyte": (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
        ),
        "train-labels-idx1-ubyte": (
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
        ),
    },
    "fashion-mnist": None,
    "kmnist": None,
}
DATASETS = tuple(CHECKSUMS)

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the file is gzip (by its magic bytes, not its name)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}; check the file exists") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise DataError(
                f"{path} is not a valid gzip file (corrupt or truncated); replace it"
            ) from None
    return raw


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode an IDX file (the MNIST format) into an array, checking its header and length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{name} has a wrong magic number: not an IDX file; replace it")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{name} has a truncated IDX header; replace the file")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{name} is truncated or padded: {len(data)} bytes, header says {expected}; replace it"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: str | Path, sha256: str | None = None) -> np.ndarray:
    """Read one IDX file (gzip or raw), verifying the decompressed bytes when a hash is given."""
    path = Path(path)
    data = read_bytes(path)
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise DataError(
                f"{path.name} fails its SHA-256 check ({digest[:12]}… != {sha256[:12]}…):"
                " the file is corrupt or not the expected dataset; reinstall or replace it"
            )
    return parse_idx(data, path.name)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder} lacks {stem}(.gz); put the four IDX files there")


def dataset_folder(name: str, data_dir: str | None) -> Path:
    """Where a dataset's files are: --data-dir if given, else the bundled copy (MNIST only)."""
    if name not in CHECKSUMS:
        raise ConfigError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DataError(f"--data-dir {data_dir} is not a folder; give the folder of IDX files")
        return folder
    if name == "mnist":
        return Path(str(resources.files("kdbench") / "datasets" / "mnist"))
    raise DataError(f"dataset '{name}' is not bundled; pass --data-dir with its four IDX files")


@dataclass(frozen=True)
class Splits:
    """Float32 pixels in [0, 1], flattened; int64 labels; on one device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    def to(self, device: str | torch.device) -> Splits:
        moved = {k: getattr(self, k).to(device) for k in _TENSORS}
        return Splits(**moved, n_classes=self.n_classes)


_TENSORS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def load_arrays(name: str = "mnist", data_dir: str | None = None) -> dict[str, np.ndarray]:
    """The four arrays of a dataset, verified where a pinned hash is known."""
    folder = dataset_folder(name, data_dir)
    sums = CHECKSUMS[name] or {}
    arrays = {key: read_idx(_find(folder, stem), sums.get(stem)) for key, stem in FILES.items()}
    for part in ("train", "test"):
        n_img, n_lab = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if n_img != n_lab:
            raise DataError(
                f"{name} {part} set has {n_img} images but {n_lab} labels; the files do not match"
            )
    return arrays


def split(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    validation_split: float = 0.1,
    train_limit: int | None = None,
) -> Splits:
    """Hold out the last `validation_split` of the (limited) training set, as Keras does."""
    if train_limit is not None:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    n = len(x_train)
    cut = int(n * (1 - validation_split))
    if cut < 1 or cut >= n:
        raise ConfigError(
            f"{n} training images cannot give both a training and a validation set at split"
            f" {validation_split}; raise --train-limit"
        )

    def feats(x: np.ndarray) -> torch.Tensor:
        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        if x.dtype == np.uint8:
            flat /= 255.0
        return torch.from_numpy(np.ascontiguousarray(flat))

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.int64).copy())

    n_classes = int(max(y_train.max(), y_test.max())) + 1
    return Splits(
        x_train=feats(x_train[:cut]),
        y_train=labels(y_train[:cut]),
        x_val=feats(x_train[cut:]),
        y_val=labels(y_train[cut:]),
        x_test=feats(x_test),
        y_test=labels(y_test),
        n_classes=n_classes,
    )


def load(
    name: str = "mnist",
    data_dir: str | None = None,
    validation_split: float = 0.1,
    train_limit: int | None = None,
) -> Splits:
    a = load_arrays(name, data_dir)
    return split(
        a["train_images"],
        a["train_labels"],
        a["test_images"],
        a["test_labels"],
        validation_split,
        train_limit,
    )
