"""Your data from a file or a folder, for `--data PATH`: a `.npz` of arrays, or an image folder.

    kdbench reproduce --data mine.npz --student-arch resnet:8
    kdbench reproduce --data images/ --image-size 32

- `.npz`: arrays `x_train`, `y_train`, `x_test`, `y_test`; images as `[N, H, W]` (grey) or
  `[N, H, W, C]`, or other rows as `[N, features]`. Read with `allow_pickle=False`: an array of
  Python objects is refused, never unpickled.
- A folder: `train/<class>/*.png|jpg|…` and `test/<class>/…`, decoded with Pillow; the classes
  are the subfolder names in sorted order; every image of one size, or `--image-size S` to resize
  them all to S x S. Grey images stay one channel, any colour image becomes RGB.

uint8 pixels are divided by 255, as the built-in datasets' are; float values are used as given.
Images are kept channel-first (`[C, H, W]` per row, flattened), and their shape goes into the
configuration (`data.arrays_image`), so conv nets and your own modules get `[N, C, H, W]`. Every
problem is one `UserDataError` line (exit 2) naming the file and the fix; nothing is written
before it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from kdbench.errors import UserDataError as DataError

Image = tuple[int, int, int]  # (channels, height, width)
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PARTS = ("train", "test")


def read(
    path: str | Path, image_size: int | None = None
) -> tuple[dict[str, np.ndarray], Image | None]:
    """`x_train`, `y_train`, `x_test`, `y_test` (rows flattened channel-first, float32; labels
    int64) and the images' shape, or None for rows that are not images."""
    path = Path(path)
    if path.is_dir():
        arrays, image = _folder(path, image_size)
    elif path.is_file():
        if image_size is not None:
            raise DataError("--image-size resizes the images of a folder; drop it for a .npz")
        arrays, image = _npz(path)
    else:
        raise DataError(f"--data {path}: no such file or folder")
    _check_labels(arrays, path)
    return arrays, image


def _npz(path: Path) -> tuple[dict[str, np.ndarray], Image | None]:
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a .npz (a zip of .npy arrays); save it with np.savez")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in names]
            if missing:
                raise DataError(
                    f"{path} lacks array(s) {', '.join(missing)}; a .npz needs x_train, y_train,"
                    " x_test and y_test"
                )
            if ("x_val" in names) != ("y_val" in names):
                given, lacking = ("x_val", "y_val") if "x_val" in names else ("y_val", "x_val")
                raise DataError(
                    f"{path} has {given} but no {lacking}; give both (your validation set) or"
                    " neither (the last --validation-split of x_train)"
                )
            wanted = [k for k in ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val")
                      if k in names]  # fmt: skip
            raw = {k: npz[k] for k in wanted}
    except DataError:
        raise
    except ValueError as exc:  # an object array: numpy refuses to unpickle it
        if "pickle" in str(exc):
            raise DataError(
                f"{path} holds arrays of Python objects, which kdbench never unpickles; save"
                " numeric arrays (np.savez with numbers, not lists of objects)"
            ) from None
        raise DataError(f"{path} is not a readable .npz ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz ({exc})") from None
    parts = [p for p in (*PARTS, "val") if f"x_{p}" in raw]
    for part in parts[1:]:
        if raw[f"x_{part}"].shape[1:] != raw["x_train"].shape[1:]:
            raise DataError(
                f"{path}: x_train rows are {raw['x_train'].shape[1:]} but x_{part} rows"
                f" {raw[f'x_{part}'].shape[1:]}; they must match"
            )
    row = raw["x_train"].shape[1:]
    image: Image | None = None
    if len(row) == 2:  # [N, H, W]
        image = (1, *row)
    elif len(row) == 3:  # [N, H, W, C]
        image = (row[2], row[0], row[1])
    out = {}
    for part in parts:
        x = raw[f"x_{part}"]
        if x.dtype.kind not in "uif" or x.ndim < 2:
            raise DataError(
                f"{path}: x_{part} must be numbers shaped [N, H, W], [N, H, W, C] or"
                f" [N, features] (got {x.dtype} {list(x.shape)})"
            )
        if len(x) == 0:
            raise DataError(f"{path}: x_{part} is empty; give at least one example")
        if x.ndim == 4:
            x = np.moveaxis(x, 3, 1)  # channel-first, as a conv net takes it
        out[f"x_{part}"] = _scaled(x, f"{path}: x_{part}").reshape(len(x), -1)
        out[f"y_{part}"] = _labels(raw[f"y_{part}"], f"{path}: y_{part}", len(x))
    return out, image


def _scaled(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    with np.errstate(over="ignore", invalid="ignore"):
        values = x.astype(np.float32)
    if not np.isfinite(values).all():
        raise DataError(f"{what} holds NaN or infinite values (as float32); clean or rescale them")
    return values


def _labels(y: np.ndarray, what: str, n: int) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{what} must be one label per row (got {list(y.shape)} for {n} rows)")
    if y.dtype.kind not in "ui":
        raise DataError(f"{what} must be integer class labels 0..C-1 (got {y.dtype})")
    return y.astype(np.int64)


def _check_labels(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Classes 0..C-1, each in the training set, at least two; the test set's among them."""
    train, test = arrays["y_train"], arrays["y_test"]
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"{path}: the training or the test set is empty")
    if train.min() < 0 or test.min() < 0:
        raise DataError(f"{path}: negative labels; use class labels 0..C-1")
    present = np.unique(train)
    if len(present) < 2:
        raise DataError(f"{path}: the training set has one class; the study needs at least two")
    if len(present) != present[-1] + 1:
        absent = sorted(set(range(int(present[-1]) + 1)) - set(present.tolist()))
        raise DataError(
            f"{path}: training labels run to {present[-1]} but class(es) {absent[:5]} have no"
            " training example; number the classes 0..C-1"
        )
    if "y_val" in arrays:
        if len(arrays["y_val"]) == 0:
            raise DataError(f"{path}: the validation set (x_val) is empty")
        outside = np.setdiff1d(np.unique(arrays["y_val"]), present)
        if len(outside):
            raise DataError(
                f"{path}: validation label(s) {outside[:5].tolist()} are not among the training"
                " classes; number the classes 0..C-1 alike in every set"
            )
    outside = np.setdiff1d(np.unique(test), present)
    if len(outside):
        raise DataError(
            f"{path}: test label(s) {outside[:5].tolist()} are not among the training classes"
            f" 0..{present[-1]}"
        )
    missing = np.setdiff1d(present, test)
    if len(missing):
        raise DataError(
            f"{path}: class(es) {missing[:5].tolist()} have no test example; every class needs"
            " some, or its error cannot be measured"
        )


def _folder(root: Path, size: int | None) -> tuple[dict[str, np.ndarray], Image]:
    from PIL import Image as PIL  # loads slowly: only for a folder
    from PIL import UnidentifiedImageError

    train = root / "train"
    classes = sorted(d.name for d in train.iterdir() if d.is_dir()) if train.is_dir() else []
    if not classes:
        raise DataError(
            f"{root} has no train/<class>/ folders; lay images out as train/<class>/*.png and"
            " test/<class>/*.png"
        )
    files: dict[str, list[tuple[Path, int]]] = {}
    for part in PARTS:
        folder = root / part
        found = [d.name for d in folder.iterdir() if d.is_dir()] if folder.is_dir() else []
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"{folder} has class folder(s) {unknown[:5]} that train/ lacks")
        files[part] = [
            (f, label)
            for label, name in enumerate(classes)
            if (folder / name).is_dir()
            for f in sorted((folder / name).iterdir())
            if f.suffix.lower() in SUFFIXES
        ]
        if not files[part]:
            raise DataError(f"{folder} holds no images ({', '.join(SUFFIXES)})")
    images: dict[str, list[np.ndarray]] = {p: [] for p in PARTS}
    modes, shapes = set(), {}
    opened = {}
    for part in PARTS:
        for f, _ in files[part]:
            try:
                with PIL.open(f) as im:
                    im.load()
                    opened[f] = im.copy()
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(
                    f"{f} is not a readable image ({exc}); remove or replace it"
                ) from None
            modes.add("L" if opened[f].mode in ("1", "L", "I;16", "I", "F") else "RGB")
            shapes.setdefault(opened[f].size, f)
    mode = "L" if modes == {"L"} else "RGB"
    if size is None and len(shapes) > 1:
        (a, fa), (b, fb) = list(shapes.items())[:2]
        raise DataError(
            f"images differ in size ({fa.name} is {a[0]}x{a[1]}, {fb.name} is {b[0]}x{b[1]});"
            " give --image-size S to resize them all to S x S"
        )
    for part in PARTS:
        for f, _ in files[part]:
            im = opened[f].convert(mode)
            if size is not None:
                im = im.resize((size, size), PIL.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
            images[part].append(a[None] if a.ndim == 2 else np.moveaxis(a, 2, 0))
    out = {}
    for part in PARTS:
        x = np.stack(images[part]).astype(np.float32) / 255.0
        out[f"x_{part}"] = x.reshape(len(x), -1)
        out[f"y_{part}"] = np.array([label for _, label in files[part]], dtype=np.int64)
    c, h, w = images["train"][0].shape
    return out, (c, h, w)
