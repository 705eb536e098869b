"""The IDX format (MNIST's files): gzip or raw, the header checked against the length, the
decompressed bytes verified against a pinned SHA-256 where one is known."""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

from kdbench.errors import DataError

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
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: no overflow
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
