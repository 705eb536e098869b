"""Your data from the command line (`--data FILE.npz | FOLDER`): read, checked, kept in the run
folder, its image shape recorded so conv nets get `[N, C, H, W]`; a resume checks the
fingerprint; every bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.data import files
from kdbench.errors import UserDataError
from tests.in_process import kdbench

SMALL = ["--repeats", "1", "--members", "2", "--epochs", "1", "--threads", "1", "--quiet",
         "--no-latency"]  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * 16).clip(0, 255).astype(np.uint8), d.target


def _npz(path, x, y, **over):
    arrays = dict(x_train=x[:1400], y_train=y[:1400], x_test=x[1400:], y_test=y[1400:])
    np.savez(path, **{**arrays, **over})
    return path


def test_a_npz_of_grey_images_trains_a_conv_net_and_reads_back(digits, tmp_path):
    x, y = digits
    data = _npz(tmp_path / "digits.npz", x, y)
    run = tmp_path / "run"
    args = ["reproduce", "--data", data, "--student-arch", "bncnn:4", "--teacher-hidden", "16",
            *SMALL, "--out", run]  # fmt: skip
    proc = kdbench(*args)
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((run / "config.json").read_text())["config"]["data"]
    assert cfg["dataset"] == "arrays" and cfg["arrays_image"] == [1, 8, 8]
    assert (run / "data.safetensors").is_file()  # the folder is complete without the .npz
    records = (run / "records.jsonl").read_text()
    assert kdbench(*args).returncode == 0  # resumed: nothing retrained
    assert (run / "records.jsonl").read_text() == records
    import kdbench as api

    student = api.load(run, "student_hard")
    assert student.input_shape == (1, 8, 8)
    pixels = torch.from_numpy(x[1400:].astype(np.float32) / 255).view(-1, 1, 8, 8)
    with torch.no_grad():
        error = float((student(pixels).argmax(1).numpy() != y[1400:]).mean())
    rec = next(json.loads(r) for r in records.splitlines() if '"student_hard"' in r)
    assert error == pytest.approx(rec["test_error"], abs=1e-6)  # uint8 divided by 255
    changed = x.copy()
    changed[0, 0, 0] = 99
    _npz(data, changed, y)
    proc = kdbench(*args)
    assert proc.returncode == 2 and "data.fingerprint" in proc.stderr


def test_channels_last_arrays_become_channel_first_rows(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 5, 6, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    arrays, image = files.read(path)
    assert image == (3, 5, 6)
    want = np.moveaxis(x[:30], 3, 1).reshape(30, -1).astype(np.float32) / 255
    np.testing.assert_array_equal(arrays["x_train"], want)


def _folder(root, sizes=None, broken=None):
    rng = np.random.default_rng(1)
    for part, n in (("train", 12), ("test", 6)):
        for i in range(n):
            label = i % 3
            side = (sizes or {}).get((part, i), 7)
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            (root / part / f"class{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / part / f"class{label}" / f"{i}.png")
    if broken:
        (root / "train" / "class1" / "broken.png").write_bytes(b"not an image")
    return root


def test_an_image_folder_is_read_as_rgb_rows_with_its_classes(tmp_path):
    root = _folder(tmp_path / "imgs")
    arrays, image = files.read(root)
    assert image == (3, 7, 7) and arrays["x_train"].shape == (12, 147)
    assert sorted(np.unique(arrays["y_train"])) == [0, 1, 2]
    first = np.asarray(Image.open(root / "train" / "class0" / "0.png"))
    np.testing.assert_allclose(arrays["x_train"][0], np.moveaxis(first, 2, 0).ravel() / 255)
    mixed = _folder(tmp_path / "mixed", sizes={("train", 4): 9})
    with pytest.raises(UserDataError, match=r"images differ in size.*--image-size"):
        files.read(mixed)
    arrays, image = files.read(mixed, image_size=5)
    assert image == (3, 5, 5) and arrays["x_test"].shape == (6, 75)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p, x, y: _npz(p / "d.npz", x, y, y_train=np.zeros(1400, int)), "one class"),
        (lambda p, x, y: _npz(p / "d.npz", x, y, y_test=np.full(397, 12)), "not among the"),
        (lambda p, x, y: _npz(p / "d.npz", x, y, y_test=y[1400:] % 9), "no test example"),
        (lambda p, x, y: _npz(p / "d.npz", x, y, y_train=y[:1400] * 2), "have no training example"),
        (lambda p, x, y: _npz(p / "d.npz", np.full(x.shape, 1e300), y), "NaN or infinite"),
        (lambda p, x, y: _npz(p / "d.npz", x, y, y_train=y[:1400] + 0.5), "integer class labels"),
        (lambda p, x, y: _npz(p / "d.npz", x, y, x_train=np.array([[1], [1, 2]], dtype=object)),
         "never unpickles"),
        (lambda p, x, y: (p / "d.npz").write_bytes(b"garbage") and p / "d.npz", "is not a .npz"),
        (lambda p, x, y: _folder(p / "f", broken=True), "broken.png is not a readable image"),
        (lambda p, x, y: (p / "f" / "train" / "a").mkdir(parents=True) or p / "f", "no images"),
        (lambda p, x, y: p / "nowhere", "no such file or folder"),
    ],
    ids=["one-class", "test-label-outside", "class-missing-from-test", "gap-in-classes", "inf",
         "float-labels", "object-array", "not-a-zip", "corrupt-image", "empty-folder", "missing"],
)  # fmt: skip
def test_bad_data_is_one_line_exit_2_and_nothing_written(digits, tmp_path, make, says):
    x, y = digits
    data = make(tmp_path, x.copy(), y.copy())
    out = tmp_path / "out"
    proc = kdbench("reproduce", "--data", data, *SMALL, "--out", out)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and not out.exists()


def test_sweep_and_explain_read_data_once_and_keep_it_in_every_folder(digits, tmp_path):
    """`--data` for a sweep over your recipe (`--grid optimizer=adam,sgd`, augment none or
    crop+flip) and for explain: every point's and variant's folder holds the arrays and names
    them by one fingerprint, and reads back without the file."""
    x, y = digits
    data = _npz(tmp_path / "digits.npz", x, y)
    quick = ["--student-arch", "bncnn:4", "--teacher-arch", "mlp:16", "--repeats", "2",
             "--members", "2", "--epochs", "1", "--threads", "1", "--quiet"]  # fmt: skip
    out = tmp_path / "sweep"
    proc = kdbench("sweep", "--data", data, *quick, "--grid", "optimizer=adam,sgd",
                   "--grid", "augment=none,crop+flip", "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert sorted(p["label"] for p in points) == [
        "optimizer=adam_augment=None", "optimizer=adam_augment=crop+flip",
        "optimizer=sgd_augment=None", "optimizer=sgd_augment=crop+flip",
    ]  # fmt: skip
    prints = set()
    for p in points:
        cfg = json.loads((out / p["folder"] / "config.json").read_text())["config"]
        assert (out / p["folder"] / "data.safetensors").is_file()
        assert cfg["data"]["arrays_image"] == [1, 8, 8]
        assert (cfg["train"]["optimizer"], cfg["train"]["augment"]) == (
            p["point"]["optimizer"], p["point"]["augment"])  # fmt: skip
        prints.add(cfg["data"]["fingerprint"])
    assert len(prints) == 1
    data.unlink()  # the folders are complete without the file
    assert kdbench("report", out / points[0]["folder"]).returncode == 0
    _npz(data, x, y)
    ex = tmp_path / "explain"
    proc = kdbench("explain", "--data", data, *quick, "--variant", "paper",
                   "--variant", "restore-best", "--out", ex)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for name in ("paper", "restore-best"):
        cfg = json.loads((ex / name / "config.json").read_text())["config"]
        assert cfg["data"]["fingerprint"] in prints and (ex / name / "data.safetensors").is_file()


def test_your_own_validation_set_is_the_one_early_stopping_watches(digits, tmp_path):
    """x_val/y_val in the .npz: training on all of x_train, validating on yours (the records'
    validation errors are errors on x_val), and the report says so; one without the other, or
    a label outside the training classes, is one line and exit 2 with nothing written."""
    x, y = digits
    data = _npz(tmp_path / "val.npz", x, y, x_train=x[:1200], y_train=y[:1200],
                x_val=x[1200:1400], y_val=y[1200:1400])  # fmt: skip
    run = tmp_path / "run"
    proc = kdbench("reproduce", "--data", data, "--student-arch", "bncnn:4", "--teacher-hidden",
                   "16", *SMALL, "--out", run)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((run / "config.json").read_text())["config"]["data"]
    assert cfg["validation_rows"] == 200
    assert "yours (x_val, y_val: 200 examples)" in (run / "report.md").read_text()
    import kdbench as api

    student = api.load(run, "student_hard")
    pixels = torch.from_numpy(x[1200:1400].astype(np.float32) / 255).view(-1, 1, 8, 8)
    with torch.no_grad():
        error = float((student(pixels).argmax(1).numpy() != y[1200:1400]).mean())
    rec = next(json.loads(r) for r in (run / "records.jsonl").read_text().splitlines()
               if '"student_hard"' in r)  # fmt: skip
    assert error == pytest.approx(rec["val_error"], abs=1e-6)
    for over, says in [
        (dict(x_val=x[:10]), "has x_val but no y_val"),
        (dict(x_val=x[:10], y_val=np.full(10, 12)), "validation label(s) [12]"),
        (dict(x_test=x[:0], y_test=y[:0]), "x_test is empty"),
    ]:
        bad = _npz(tmp_path / "bad.npz", x, y, **over)
        out = tmp_path / "bad-run"
        proc = kdbench("reproduce", "--data", bad, *SMALL, "--out", out)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_the_python_api_takes_your_validation_set_too(digits, tmp_path):
    import kdbench as api

    x, y = digits
    x = x.reshape(len(x), -1).astype(np.float32) / 16
    cfg = api.Config().with_overrides(repeats=1, members=2, epochs=1, student_hidden=(8,),
                                      teacher_hidden=(16,), threads=1)  # fmt: skip
    folder, _ = api.study(x[:1200], y[:1200], x[1400:], y[1400:], cfg, out=tmp_path / "run",
                          progress=False, measure_latency=False, x_val=x[1200:1400],
                          y_val=y[1200:1400])  # fmt: skip
    data = json.loads((folder / "config.json").read_text())["config"]["data"]
    assert data["validation_rows"] == 200
    with pytest.raises(Exception, match="give both x_val and y_val"):
        api.study(x[:1200], y[:1200], x[1400:], y[1400:], cfg, out=tmp_path / "bad",
                  progress=False, x_val=x[1200:1400])  # fmt: skip
    assert not (tmp_path / "bad").exists()
