"""Datasets beyond MNIST: digits offline, IDX datasets from the cache, a system folder or a
checksum-verified download; your own arrays through kdbench.study."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import struct
import threading

import numpy as np
import pytest
import torch

from kdbench import Config, study
from kdbench.data import datasets as data
from kdbench.data import sources
from kdbench.errors import DataError, RunFolderError
from tests.in_process import kdbench


def test_digits_loads_offline_with_a_fixed_split():
    s = data.load("digits")
    assert (len(s.x_train) + len(s.x_val), len(s.x_test)) == (1437, 360)
    assert s.n_features == 64 and s.n_classes == 10
    assert float(s.x_train.min()) == 0.0 and float(s.x_train.max()) == 1.0
    assert len(torch.unique(s.y_test)) == 10
    again = data.load("digits")
    assert torch.equal(s.x_test, again.x_test)


def _idx(path, array):
    """An IDX file: uint8 unless the array is int8 or float32 (IDX type codes 0x09, 0x0D)."""
    dims, kind = (
        array.shape,
        {np.dtype(np.int8): (0x09, ">i1"), np.dtype(np.float32): (0x0D, ">f4")},
    )
    code, dtype = kind.get(array.dtype, (0x08, np.uint8))
    header = struct.pack(">HBB", 0, code, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(dtype).tobytes())


@pytest.fixture
def http_folder(tmp_path):
    """A local HTTP server over tmp_path/server (pooch downloads over HTTP, as from the real
    servers); yields the folder and its base URL."""
    server = tmp_path / "server"
    server.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(server))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def fake_source(http_folder, tmp_path, monkeypatch):
    """A stand-in for a dataset's server: four real IDX files behind http:// URLs."""
    server, url = http_folder
    rng = np.random.default_rng(0)
    _idx(server / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (50, 28, 28)))
    _idx(server / "train-labels-idx1-ubyte.gz", np.arange(50) % 10)
    _idx(server / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
    _idx(server / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in server.iterdir()}
    source = sources.Source(url, sums, (str(tmp_path / "system"),))
    monkeypatch.setitem(sources.IDX_SOURCES, "kmnist", source)
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "cache"))
    return server, source


def test_download_is_verified_then_cached(fake_source, tmp_path):
    server, _ = fake_source
    splits = data.load("kmnist", validation_split=0.2)
    assert len(splits.x_train) == 40 and len(splits.x_test) == 20
    cached = tmp_path / "cache" / "kmnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(p.name for p in server.iterdir())
    for p in server.iterdir():  # the server is gone: the cache alone serves the next load
        p.unlink()
    assert torch.equal(data.load("kmnist", validation_split=0.2).x_test, splits.x_test)


def test_tampered_download_is_refused_and_nothing_kept(fake_source, tmp_path):
    server, _ = fake_source
    _idx(server / "t10k-labels-idx1-ubyte.gz", (np.arange(20) + 1) % 10)  # changed content
    with pytest.raises(DataError, match="SHA-256"):
        data.load("kmnist")
    assert not (tmp_path / "cache" / "kmnist").exists()
    assert list((tmp_path / "cache").iterdir()) == []  # no temporary folder left either


def test_system_package_folder_is_found(fake_source, tmp_path):
    server, _ = fake_source
    system = tmp_path / "system"
    system.mkdir()
    for p in server.iterdir():
        (system / p.name).write_bytes(p.read_bytes())
        p.unlink()  # a download would now fail: the system folder must be used
    assert len(data.load("kmnist", validation_split=0.2).x_test) == 20


def test_fashion_mnist_is_pinned_to_its_real_checksums():
    sums = data.CHECKSUMS["fashion-mnist"]
    assert set(sums) == set(data.FILES.values()) and sums != data.CHECKSUMS["mnist"]
    assert sources.IDX_SOURCES["fashion-mnist"].system == ("/usr/share/datasets/fashion-mnist",)


def _blobs(n, seed):
    """Three Gaussian classes in 20 dimensions: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 1.5, (3, 20))
    y = rng.integers(0, 3, n)
    return (centres[y] + rng.normal(0, 1, (n, 20))).astype(np.float32), y


def test_study_on_your_own_arrays(tmp_path):
    x_train, y_train = _blobs(600, 1)
    x_test, y_test = _blobs(300, 2)
    cfg = Config().with_overrides(
        repeats=2, members=2, epochs=3, teacher_hidden=(32, 16), student_hidden=(8,)
    )
    folder, summary = study(x_train, y_train, torch.from_numpy(x_test), y_test, cfg, tmp_path / "r",
                            measure_latency=False)  # fmt: skip
    assert summary["rows"]["student_hard"]["n"] == 2
    assert summary["rows"]["teacher"]["mean_pct"] < 30  # chance is 67%
    assert summary["rows"]["teacher"]["paper_pct"] is None  # the paper's numbers are MNIST's
    heading = (folder / "report.md").read_text().splitlines()[0]
    assert "your data" in heading and "reproduce" not in heading
    saved = json.loads((folder / "config.json").read_text())["config"]["data"]
    assert saved["dataset"] == "arrays" and len(saved["fingerprint"]) == 64
    # the folder is complete: report and diagnose re-read the arrays from it
    for cmd in ("report", "diagnose"):
        proc = kdbench(cmd, folder)
        assert proc.returncode == 0, proc.stderr
    assert json.loads((folder / "diagnose.json").read_text())["soft_targets"] is not None
    # other arrays into the same folder are refused, naming the difference
    with pytest.raises(RunFolderError, match="fingerprint"):
        study(x_train[:500], y_train[:500], x_test, y_test, cfg, folder, measure_latency=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "y_train": a["y_train"][:-1]}, "one label per row"),
        (lambda a: {**a, "x_test": a["x_test"][:, :5]}, "features"),
        (lambda a: {**a, "x_train": np.where(a["x_train"] > 2, np.nan, a["x_train"])}, "finite"),
        (lambda a: {**a, "y_train": np.zeros_like(a["y_train"])}, "two classes"),
        (lambda a: {**a, "y_test": a["y_test"] - 1}, "negative"),
        (lambda a: {**a, "y_train": a["y_train"] + 0.5}, "integer class labels"),
    ],
)
def test_bad_arrays_get_one_clear_error(change, message):
    x_train, y_train = _blobs(60, 1)
    x_test, y_test = _blobs(30, 2)
    a = change({"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test})
    with pytest.raises(DataError, match=message):
        data.check_arrays(a["x_train"], a["y_train"], a["x_test"], a["y_test"])


def _cifar_archive(server, rng, train=12, test=5):
    """A CIFAR-10 binary archive in the real layout, small: records of 1 label + 3072 pixels."""
    import io
    import tarfile

    batches = {}
    for name, n in [*((f"data_batch_{i}.bin", train) for i in range(1, 6)),
                    ("test_batch.bin", test)]:  # fmt: skip
        labels = rng.integers(0, 10, n).astype(np.uint8)
        pixels = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        batches[name] = (labels, pixels, np.concatenate([labels[:, None], pixels], 1).tobytes())
    path = server / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, (_, _, raw) in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path, batches


def test_cifar10_downloads_verified_all_files_or_none(http_folder, tmp_path, monkeypatch):
    from kdbench.data import cifar

    server, url = http_folder
    path, batches = _cifar_archive(server, np.random.default_rng(1))
    pinned = cifar.Archive(url + path.name, hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setattr(cifar, "CIFAR10", pinned)
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "cache"))
    # tampered first: refused, and nothing kept (not even the batches that would unpack)
    good = path.read_bytes()
    path.write_bytes(good[:-100] + bytes(100))
    with pytest.raises(DataError, match="SHA-256"):
        data.load("cifar10")
    assert list((tmp_path / "cache").iterdir()) == []
    path.write_bytes(good)
    s = data.load("cifar10", validation_split=0.2)
    assert s.n_features == 3072 and 2 <= s.n_classes <= 10
    assert len(s.x_train) == 48 and len(s.x_val) == 12 and len(s.x_test) == 5
    labels, pixels, _ = batches["test_batch.bin"]
    assert torch.equal(s.y_test, torch.from_numpy(labels.astype(np.int64)))
    assert torch.allclose(s.x_test, torch.from_numpy(pixels.astype(np.float32) / 255))
    assert data.IMAGES["cifar10"] == (3, 32, 32)
    path.unlink()  # the server is gone: the cache alone serves the next load
    again = data.load("cifar10", validation_split=0.2)
    assert torch.equal(again.x_test, s.x_test)
    cached = tmp_path / "cache" / "cifar10"
    assert sorted(p.name for p in cached.iterdir()) == sorted(batches)
    (cached / "test_batch.bin").write_bytes(b"\x00" * 100)  # a damaged batch: one clear line
    with pytest.raises(DataError, match="not a CIFAR-10 batch"):
        data.load("cifar10")


def _kmnist_folder(folder, train_labels=None, test_labels=None, side=28, nan_pixel=False):
    """kmnist's four IDX files (it has no pinned hash for unpacked files): what --data-dir gets;
    `nan_pixel`: the training images as float32, one pixel NaN."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    train = rng.integers(0, 256, (50, side, side))
    if nan_pixel:
        train = train.astype(np.float32)
        train[3, 4, 5] = np.nan
    _idx(folder / "train-images-idx3-ubyte.gz", train)
    _idx(folder / "train-labels-idx1-ubyte.gz",
         np.arange(50) % 10 if train_labels is None else train_labels)  # fmt: skip
    _idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (20, side, side)))
    _idx(folder / "t10k-labels-idx1-ubyte.gz",
         np.arange(20) % 10 if test_labels is None else test_labels)  # fmt: skip
    return folder


@pytest.mark.parametrize(
    ("over", "says"),
    [
        (dict(train_labels=np.r_[np.arange(49) % 10, 255]), "train labels run from 0 to 255"),
        (dict(test_labels=np.r_[np.arange(19) % 10, 42]), "test labels run from 0 to 42"),
        (dict(side=2), "train images are [2, 2], not 28x28"),
        (dict(train_labels=np.r_[np.arange(49) % 10, -1].astype(np.int8)), "run from -1 to 9"),
        (dict(train_labels=(np.arange(50) % 10).astype(np.float32)), "are not whole numbers"),
        (dict(nan_pixel=True), "train images hold NaN or infinite pixels"),
    ],
)
def test_idx_files_from_a_data_dir_are_checked_at_the_door(tmp_path, over, says):
    folder = _kmnist_folder(tmp_path / "idx", **over)
    out = tmp_path / "run"
    proc = kdbench("reproduce", "--dataset", "kmnist", "--data-dir", folder, "--repeats", "1",
                   "--members", "2", "--epochs", "1", "--quiet", "--out", out)  # fmt: skip
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_an_idx_header_whose_dimensions_overflow_is_refused():
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">III", 2**31, 2**31, 2**31)
    with pytest.raises(DataError, match="truncated or padded"):
        data.parse_idx(header + b"\0" * 16, "huge")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda a: a.update(y_train=np.r_[a["y_train"][:-1], 10**6]), "have no training example"),
        (lambda a: a.update(x_train=np.full((200, 4), 1e300)), "beyond float32's range"),
        (lambda a: a.update(y_test=np.r_[a["y_test"][:-1], 7]), "y_test label(s) [7]"),
    ],
)
def test_your_arrays_are_checked_at_the_door(tmp_path, change, says):
    rng = np.random.default_rng(1)
    arrays = dict(x_train=rng.random((200, 4)), y_train=np.arange(200) % 3,
                  x_test=rng.random((50, 4)), y_test=np.arange(50) % 3)  # fmt: skip
    change(arrays)
    with pytest.raises(DataError, match=None) as exc:
        study(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
              Config().with_overrides(repeats=1, members=2, epochs=1), out=tmp_path / "run",
              progress=False)  # fmt: skip
    assert says in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "run").exists()
