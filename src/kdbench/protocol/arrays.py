"""Your own arrays in a run: checked and fingerprinted once, kept in each run folder
(`data.safetensors`) before anything trains, and read back only if they match the fingerprint
in its configuration; and the data any run folder was trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from kdbench.config import Config
from kdbench.data import datasets as data
from kdbench.data import files
from kdbench.errors import ConfigError, RunFolderError
from kdbench.runs import guard
from kdbench.runs.store import write_derived

DATA_FILE = "data.safetensors"  # the arrays of a Python-API run, so its folder is complete


def splits_of(cfg: Config, folder: Path) -> data.Splits:
    """The data a run folder was trained on (re-read, or from the folder for your own arrays)."""
    d = cfg.data
    if d.dataset != data.ARRAYS:
        return data.load(d.dataset, d.data_dir, d.validation_split, d.train_limit)
    return data.split_arrays(arrays_in(cfg, folder), d.validation_split, d.train_limit)


def arrays_in(cfg: Config, folder: Path) -> dict:
    """Your arrays as the run folder keeps them (data.safetensors), checked against the
    fingerprint in the configuration."""
    path = Path(folder) / DATA_FILE
    if not path.is_file():
        raise RunFolderError(f"{folder} lacks {DATA_FILE}, the arrays this run was trained on")
    try:
        arrays = {k: v.numpy() for k, v in load_file(str(path)).items()}
    except (OSError, SafetensorError):
        raise RunFolderError(f"{path} is damaged; restore it or rerun the study") from None
    if data.fingerprint(arrays) != cfg.data.fingerprint:
        raise RunFolderError(
            f"{path} holds other arrays than the run was trained on (its SHA-256 differs from"
            " config.json's data.fingerprint); restore the run's own file"
        )
    return arrays


def with_arrays(
    cfg: Config, x_train, y_train, x_test, y_test, x_val=None, y_val=None
) -> tuple[Config, dict]:
    """Your arrays (and your own validation set, if any), checked, and the configuration that
    names them (dataset 'arrays', their fingerprint, the validation set's size)."""
    arrays = data.check_arrays(x_train, y_train, x_test, y_test, x_val, y_val)
    given = len(arrays["val_images"]) if "val_images" in arrays else None
    named = {"dataset": data.ARRAYS, "data_dir": None, "fingerprint": data.fingerprint(arrays)}
    return cfg.with_overrides(**named, validation_rows=given), arrays


def data_file(cfg: Config) -> tuple[Config, dict]:
    """`--data PATH` read (`data.files`), checked and fingerprinted as your arrays are; the
    images' shape goes into the configuration."""
    found, image = files.read(cfg.data.data, cfg.data.image_size)
    cfg, arrays = with_arrays(cfg, found["x_train"], found["y_train"], found["x_test"],
                              found["y_test"], found.get("x_val"), found.get("y_val"))  # fmt: skip
    return cfg.with_overrides(arrays_image=image), arrays


def keep_arrays(folders: list[Path], arrays: dict, fingerprint: str) -> None:
    """Your arrays into each run folder of a sweep or explanation before it trains, so every
    part of it (and every Ray worker) reads them from its folder."""
    for folder in folders:
        with guard.claim(Path(folder)):  # one writer, and the folder marked as kdbench's
            keep_in(Path(folder), arrays, fingerprint)


def arrays_of(cfg: Config, arrays: dict | None = None, folder: Path | None = None) -> dict:
    """The configuration's four arrays (yours, given or kept in `folder`; or a built-in
    dataset's, verified)."""
    d = cfg.data
    if d.dataset == data.ARRAYS:
        if arrays is None and folder is not None and (Path(folder) / DATA_FILE).is_file():
            return arrays_in(cfg, folder)
        if arrays is None:
            raise ConfigError("dataset 'arrays' needs the arrays: call kdbench.study(...)")
        return arrays
    return data.load_arrays(d.dataset, d.data_dir)


def keep_in(folder: Path, arrays: dict, fingerprint: str) -> None:
    """Your arrays in the run folder, so it is complete; a file of other arrays is replaced."""
    path = folder / DATA_FILE
    if path.is_file() and _fingerprint_of(path) == fingerprint:
        return
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    write_derived(path, tensors, fingerprint)


def _fingerprint_of(path: Path) -> str | None:
    try:
        return data.fingerprint({k: v.numpy() for k, v in load_file(str(path)).items()})
    except (OSError, SafetensorError):
        return None
