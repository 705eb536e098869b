"""IDX reading, checksum verification and the split, on real MNIST and on crafted bad files."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct

import numpy as np
import pytest

from kdbench.data import datasets as data
from kdbench.errors import ConfigError, DataError


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_bundled_mnist_matches_published_statistics(mnist_arrays):
    x, y = mnist_arrays["train_images"], mnist_arrays["train_labels"]
    assert x.shape == (60000, 28, 28) and mnist_arrays["test_images"].shape == (10000, 28, 28)
    scaled = x / 255.0
    assert scaled.mean() == pytest.approx(0.1307, abs=1e-4)
    assert scaled.std() == pytest.approx(0.3081, abs=1e-4)
    counts = np.bincount(y).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_idx_roundtrip_gzip_and_raw(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(7, 4, 3), dtype=np.uint8)
    (tmp_path / "a").write_bytes(_idx(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx(arr)))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a"), arr)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.gz"), arr)


def test_checksum_is_of_decompressed_bytes(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw = _idx(arr)
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    data.read_idx(tmp_path / "a.gz", hashlib.sha256(raw).hexdigest())
    with pytest.raises(DataError, match="SHA-256"):
        data.read_idx(tmp_path / "a.gz", "0" * 64)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda raw: gzip.compress(raw)[:-20], "gzip"),
        (lambda raw: raw[:-5], "truncated"),
        (lambda raw: b"\x01\x02" + raw[2:], "magic"),
        (lambda raw: raw[:6], "truncated"),
    ],
    ids=["corrupt-gzip", "truncated-data", "wrong-magic", "truncated-header"],
)
def test_bad_idx_files_are_rejected(tmp_path, mutate, message):
    raw = _idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    path = tmp_path / "bad"
    path.write_bytes(mutate(raw))
    with pytest.raises(DataError, match=message):
        data.read_idx(path)


def test_tampered_mnist_copy_fails_checksum(tmp_path):
    bundled = data.dataset_folder("mnist", None)
    for stem in data.FILES.values():
        shutil.copy(bundled / f"{stem}.gz", tmp_path / f"{stem}.gz")
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="SHA-256"):
        data.load_arrays("mnist", str(tmp_path))


def test_data_dir_problems(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="not a folder"):
        data.load_arrays("fashion-mnist", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="lacks"):
        data.load_arrays("fashion-mnist", str(tmp_path))
    with pytest.raises(ConfigError, match="unknown dataset"):
        data.load_arrays("cifar", None)
    # not in the cache, no system copy, the server unreachable: one line saying where to put it
    import dataclasses

    from kdbench.data import sources

    offline = dataclasses.replace(
        sources.IDX_SOURCES["kmnist"],
        base_url="http://127.0.0.1:9/",  # nothing listens there
    )
    monkeypatch.setitem(sources.IDX_SOURCES, "kmnist", offline)
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"cannot download kmnist.*--data-dir"):
        data.load_arrays("kmnist", None)
    assert not (tmp_path / "cache" / "kmnist").exists()


def test_image_label_count_mismatch(tmp_path):
    rng = np.random.default_rng(1)
    for part, n in (("train", 20), ("t10k", 10)):
        (tmp_path / f"{part}-images-idx3-ubyte").write_bytes(
            _idx(rng.integers(0, 256, (n, 28, 28)))
        )
        (tmp_path / f"{part}-labels-idx1-ubyte").write_bytes(_idx(rng.integers(0, 10, n - 1)))
    with pytest.raises(DataError, match="images but"):
        data.load_arrays("kmnist", str(tmp_path))  # kmnist: no pinned hash of the raw files


def test_split_is_keras_validation_split_of_the_limited_set(mnist_arrays):
    a = mnist_arrays
    s = data.split(
        a["train_images"],
        a["train_labels"],
        a["test_images"],
        a["test_labels"],
        validation_split=0.1,
        train_limit=1000,
    )
    assert len(s.x_train) == 900 and len(s.x_val) == 100 and len(s.x_test) == 10000
    np.testing.assert_allclose(s.x_val[0].numpy(), a["train_images"][900].reshape(-1) / 255.0)
    assert s.x_train.dtype.is_floating_point and float(s.x_train.max()) <= 1.0
    assert float(s.x_train.min()) >= 0.0 and s.n_classes == 10
    with pytest.raises(ConfigError, match="train-limit"):
        data.split(
            a["train_images"],
            a["train_labels"],
            a["test_images"],
            a["test_labels"],
            validation_split=0.1,
            train_limit=1,
        )
