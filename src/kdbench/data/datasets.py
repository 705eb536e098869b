"""Datasets: which files, their checksums, the checks at the door, and the train / validation /
test split (the IDX format itself: `idx`).

MNIST ships inside the package so the study runs offline; its files are verified on every load
against the SHA-256 of their decompressed bytes, so a corrupted install cannot produce a table.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdbench.data import cifar, sources
from kdbench.data.idx import parse_idx, read_idx  # noqa: F401 (parse_idx: re-exported)
from kdbench.errors import ConfigError, DataError, UserDataError

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
    # from Debian's dataset-fashion-mnist package; downloads are also checked in `sources`
    "fashion-mnist": {
        "t10k-images-idx3-ubyte": (
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
        ),
        "t10k-labels-idx1-ubyte": (
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
        ),
        "train-images-idx3-ubyte": (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
        ),
        "train-labels-idx1-ubyte": (
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
        ),
    },
    "kmnist": None,  # only the downloaded .gz files have pinned hashes (see `sources`)
}
# digits: scikit-learn's bundled 8x8 digits (1797 images, offline); cifar10: downloaded
# (`cifar`); arrays: the Python API's
ARRAYS = "arrays"
CIFAR10 = "cifar10"
DATASETS = (*CHECKSUMS, "digits", CIFAR10)
FEATURES = {"mnist": 784, "fashion-mnist": 784, "kmnist": 784, "digits": 64, CIFAR10: 3072}
CLASSES = dict.fromkeys(FEATURES, 10)
# what a conv net sees: (channels, height, width) of each dataset's flattened inputs
IMAGES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "kmnist": (1, 28, 28),
          "digits": (1, 8, 8), CIFAR10: (3, 32, 32)}  # fmt: skip
# the input scaling: the one place it is done (`split`, `digits_arrays`) and described
PIXEL_SCALE = 255.0  # IDX images: uint8 pixels to [0, 1]
DIGITS_SCALE = 16.0  # scikit-learn's digits: 0-16 to [0, 1]


def image_of(dataset: str, arrays_image=None) -> tuple[int, int, int] | None:
    """The shape (channels, height, width) of one image of `dataset` (your arrays: the shape
    `--data` recorded), or None for rows that are not images."""
    if dataset in IMAGES:
        return IMAGES[dataset]
    return tuple(arrays_image) if dataset == ARRAYS and arrays_image else None  # type: ignore[return-value]


def preprocessing(dataset: str) -> str:
    """How inputs must be prepared for a model trained on `dataset`, in words."""
    if dataset == ARRAYS:
        return "your arrays as given to kdbench.study, flattened to one row per example (float32)"
    if dataset == "digits":
        return (
            "scikit-learn's 8x8 digits, flattened to 64 values, divided by"
            f" {DIGITS_SCALE:g} (float32 in [0, 1])"
        )
    if dataset == CIFAR10:
        return (
            "CIFAR-10 32x32 colour images, flattened as 3 colour planes (R, G, B) of 32 rows"
            f" to 3072 values, divided by {PIXEL_SCALE:g} (float32 in [0, 1])"
        )
    return (
        f"{dataset} 28x28 grey images, flattened row by row to 784 values, divided by"
        f" {PIXEL_SCALE:g} (float32 in [0, 1])"
    )


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder} lacks {stem}(.gz); put the four IDX files there")


def dataset_folder(name: str, data_dir: str | None) -> Path:
    """Where an IDX dataset's files are (see `sources` for the search order)."""
    if name not in CHECKSUMS:
        raise ConfigError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    return sources.locate(name, data_dir, list(FILES.values()))


def digits_arrays() -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits, pixels scaled from 0-16 to [0, 1]. No official test split:
    the last 20% (360 images) are the test set, the rest the training set, always the same."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / DIGITS_SCALE).astype(np.float32)
    cut = len(x) - 360
    return {
        "train_images": x[:cut],
        "train_labels": y[:cut],
        "test_images": x[cut:],
        "test_labels": y[cut:],
    }


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
    image: tuple[int, int, int] | None = None  # (channels, height, width) of a row, if images

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    def to(self, device: str | torch.device) -> Splits:
        moved = {k: getattr(self, k).to(device) for k in _TENSORS}
        return Splits(**moved, n_classes=self.n_classes, image=self.image)


_TENSORS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def load_arrays(name: str = "mnist", data_dir: str | None = None) -> dict[str, np.ndarray]:
    """The four arrays of a dataset, verified where a pinned hash is known."""
    if name == "digits":
        return digits_arrays()
    if name == CIFAR10:
        folder = Path(data_dir) if data_dir is not None else sources.cache_root() / CIFAR10
        if data_dir is not None and not folder.is_dir():
            raise DataError(f"--data-dir {data_dir} is not a folder; give the folder of .bin files")
        return cifar.load_arrays(folder)
    if name == ARRAYS:
        raise ConfigError(
            "dataset 'arrays' is only for the Python API (kdbench.study); a run folder of one"
            " keeps its data in data.safetensors"
        )
    folder = dataset_folder(name, data_dir)
    sums = CHECKSUMS[name] or {}
    arrays = {key: read_idx(_find(folder, stem), sums.get(stem)) for key, stem in FILES.items()}
    for part in ("train", "test"):
        n_img, n_lab = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if n_img != n_lab:
            raise DataError(
                f"{name} {part} set has {n_img} images but {n_lab} labels; the files do not match"
            )
        _check_idx(name, part, arrays[f"{part}_images"], arrays[f"{part}_labels"])
    return arrays


def _check_idx(name: str, part: str, images: np.ndarray, labels: np.ndarray) -> None:
    """What the study assumes of an IDX dataset (files from --data-dir need not be the
    pinned ones): its image size, finite pixels, labels 0..classes-1."""
    size = IMAGES[name][1:]
    if images.ndim != 3 or images.shape[1:] != size:
        raise UserDataError(
            f"{name} {part} images are {list(images.shape[1:])}, not {size[0]}x{size[1]}; give"
            f" {name}'s own IDX files"
        )
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise UserDataError(f"{name} {part} images hold NaN or infinite pixels; replace the file")
    n = CLASSES[name]
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UserDataError(
            f"{name} {part} labels are not whole numbers; give {name}'s labels file"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= n):
        raise UserDataError(
            f"{name} {part} labels run from {labels.min()} to {labels.max()}, outside its"
            f" {n} classes (0..{n - 1}); give {name}'s own labels file"
        )


def split_rows(n: int, validation_split: float, train_limit: int | None) -> tuple[slice, slice]:
    """(training rows, validation rows) of a training set of `n` rows: the first `train_limit`
    rows, of which the last `validation_split` are held out. Anything aligned with the training
    images (your teacher's logits) is split by the same rule."""
    if train_limit is not None:
        n = min(n, train_limit)
    cut = int(n * (1 - validation_split))
    if cut < 1 or cut >= n:
        raise ConfigError(
            f"{n} training images cannot give both a training and a validation set at split"
            f" {validation_split}; raise --train-limit"
        )
    return slice(0, cut), slice(cut, n)


def split(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    validation_split: float = 0.1,
    train_limit: int | None = None,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> Splits:
    """Hold out the last `validation_split` of the (limited) training set, as Keras does; or,
    given your own validation set (`x_val`, `y_val`), train on the whole (limited) training
    set and validate on yours."""
    if x_val is None:
        train_rows, val_rows = split_rows(len(x_train), validation_split, train_limit)
        x_val, y_val = x_train[val_rows], y_train[val_rows]
    else:
        train_rows = slice(0, len(x_train) if train_limit is None else train_limit)
    x_train, y_train = x_train[train_rows], y_train[train_rows]

    def feats(x: np.ndarray) -> torch.Tensor:
        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        if x.dtype == np.uint8:
            flat /= PIXEL_SCALE
        return torch.from_numpy(np.ascontiguousarray(flat))

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.int64).copy())

    n_classes = int(max(y_train.max(), y_val.max(), y_test.max())) + 1
    return Splits(
        x_train=feats(x_train),
        y_train=labels(y_train),
        x_val=feats(x_val),
        y_val=labels(y_val),
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
    """A dataset as a study splits it and its models see it (`kdbench.dataset`): float32
    features in [0, 1], one flattened row an image (`image`: its channels, height, width),
    int64 labels; validation rows the last `validation_split` of the (first `train_limit`)
    training rows."""
    return split_arrays(load_arrays(name, data_dir), validation_split, train_limit, image_of(name))


def _numpy(a, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except Exception:
        raise DataError(f"{what} is not an array; pass a NumPy array or a torch tensor") from None


def check_arrays(x_train, y_train, x_test, y_test, x_val=None, y_val=None) -> dict[str, np.ndarray]:
    """Your own data for the study (NumPy arrays or torch tensors): features `[N, ...]` (flattened,
    used as given: scale them yourself), integer labels 0..C-1, and optionally your own
    validation set (else the tail of the training set is held out). Returns the arrays, ready
    for `split`, or raises DataError naming what is wrong."""
    if (x_val is None) != (y_val is None):
        raise DataError("give both x_val and y_val (your validation set), or neither")
    out = {}
    parts = [("train", x_train, y_train), ("test", x_test, y_test)]
    if x_val is not None:
        parts.append(("val", x_val, y_val))
    for part, x, y in parts:
        xs, ys = _numpy(x, f"x_{part}"), _numpy(y, f"y_{part}")
        if xs.ndim < 2 or len(xs) == 0:
            raise DataError(f"x_{part} must have shape [examples, features...] (got {xs.shape})")
        if ys.ndim != 1 or len(ys) != len(xs):
            raise DataError(
                f"y_{part} must be one label per row of x_{part} (got {ys.shape} for"
                f" {len(xs)} examples)"
            )
        if not np.issubdtype(xs.dtype, np.number) or not np.isfinite(xs).all():
            raise DataError(f"x_{part} must be finite numbers (found NaN, inf or non-numbers)")
        if not np.issubdtype(ys.dtype, np.integer) and not (
            np.issubdtype(ys.dtype, np.floating) and np.all(ys == np.round(ys))
        ):
            raise DataError(f"y_{part} must hold integer class labels 0..C-1")
        if ys.min() < 0:
            raise DataError(f"y_{part} has negative labels; use class labels 0..C-1")
        with np.errstate(over="ignore"):
            as32 = xs.reshape(len(xs), -1).astype(np.float32)
        if not np.isfinite(as32).all():
            raise DataError(
                f"x_{part} has values beyond float32's range (about 3.4e38), which the models"
                " compute in; scale them"
            )
        out[f"{part}_images"] = as32
        out[f"{part}_labels"] = ys.astype(np.int64)
    for part in ("test", "val"):
        if (
            f"{part}_images" in out
            and out[f"{part}_images"].shape[1] != out["train_images"].shape[1]
        ):
            raise DataError(
                f"x_train has {out['train_images'].shape[1]} features but x_{part}"
                f" {out[f'{part}_images'].shape[1]}; they must match"
            )
    present = np.unique(out["train_labels"])
    if len(present) < 2:
        raise DataError("y_train has fewer than two classes; the study needs at least two")
    if len(present) != present[-1] + 1:  # one stray label would make a class per number
        absent = sorted(set(range(int(present[-1]) + 1)) - set(present.tolist()))
        raise DataError(
            f"y_train's labels run to {present[-1]} but class(es) {absent[:5]} have no training"
            f" example ({len(absent)} in all); number the classes 0..C-1"
        )
    for part in ("test", "val"):
        if f"{part}_labels" in out:
            outside = np.setdiff1d(np.unique(out[f"{part}_labels"]), present)
            if len(outside):
                raise DataError(
                    f"y_{part} label(s) {outside[:5].tolist()} are not among the training"
                    " classes; number the classes 0..C-1 alike in every set"
                )
    return out


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, shapes, dtypes and bytes: what a run was trained on."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def split_arrays(
    arrays: dict[str, np.ndarray], validation_split: float, train_limit, image=None
) -> Splits:
    """The arrays' splits: your own validation set where the arrays carry one (`val_images`),
    else the tail of the training set; `image`: a row's (channels, height, width), if images."""
    splits = split(
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        validation_split,
        train_limit,
        arrays.get("val_images"),
        arrays.get("val_labels"),
    )
    return dataclasses.replace(splits, image=image)
