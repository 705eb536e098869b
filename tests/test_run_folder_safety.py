"""A run folder nobody can corrupt: the catalogue of bad situations, each built on a small run.

Each case is one row: what is done to a copy of a finished run (or to a fresh folder), the
command, the exit code and a fragment of the one line it must print. In-process cases run the
CLI through Typer's runner, which re-raises anything but a clean exit, so a traceback fails the
test. Then the cases that need real processes (two writers) or a real filesystem (a full disk, a
read-only folder: tmpfs, where the machine lets the tests mount one).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.in_process import kdbench

TINY = ["--dataset", "digits", "--repeats", "2", "--members", "2", "--epochs", "1",
        "--teacher-hidden", "16", "--student-hidden", "8", "--threads", "1", "--quiet"]  # fmt: skip
RUN = ["reproduce", *TINY, "--no-latency"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "run"
    proc = kdbench(*RUN, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def _copy(run: Path, tmp: Path) -> Path:
    dst = tmp / "copy"
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns(".kdbench.lock"))
    return dst


def _edit_config(folder: Path, section: str, key: str, value) -> None:
    raw = json.loads((folder / "config.json").read_text())
    raw["config"][section][key] = value
    (folder / "config.json").write_text(json.dumps(raw))


def _edit_checkpoint(folder: Path, stack: str, change: Callable[[dict], dict]) -> None:
    from safetensors import safe_open

    path = folder / "checkpoints" / f"{stack}.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tensors = change(load_file(str(path)))
    save_file(tensors, str(path), metadata=meta)


def _nan(tensors):
    tensors["layer0.weight"][0, 0, 0] = float("nan")
    return tensors


def _drop_last_layer(tensors):
    last = max(int(k[5:].split(".")[0]) for k in tensors)
    return {k: v for k, v in tensors.items() if not k.startswith(f"layer{last}.")}


def _duplicated_line(folder: Path) -> None:
    """The first record twice (its stamp intact): counted twice if read as it stands."""
    path = folder / "records.jsonl"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], lines[0], *lines[1:]]))


def _foreign_with_config(run, tmp):
    """Another tool's folder that happens to hold a config.json, and its own temporary file."""
    other = tmp / "model"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "bert", "hidden_size": 768}')
    (other / ".build.tmp").write_text("theirs")
    return [*RUN, "--out", other]


def _symlinked_exports(run, tmp):
    (tmp / "elsewhere").mkdir()
    (run / "exports").symlink_to(tmp / "elsewhere")
    return ["export", run, "--role", "student_hard"]


def _foreign_repeat(folder: Path) -> None:
    """A record of a repeat the run does not have (repeat 7 of 2), its stamp intact."""
    path = folder / "records.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    path.write_text(path.read_text() + json.dumps({**first, "repeat": 7}) + "\n")


def _records_line(text: bytes) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / "records.jsonl"
        lines = path.read_bytes().split(b"\n")
        path.write_bytes(b"\n".join([lines[0], text, *lines[1:]]))

    return damage


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path, Path], list]  # (copy of the run, tmp) -> the command's arguments
    code: int
    says: str


def _foreign(run, tmp):
    other = tmp / "theirs"
    other.mkdir()
    for name in ("report.md", "summary.json", "figure.png"):
        (other / name).write_text("not kdbench's")
    return [*RUN, "--out", other]


def _symlinked(name):
    def setup(run, tmp):
        target = tmp / "outside.txt"
        target.write_text("keep me")
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(target)
        return [*RUN, "--out", run]

    return setup


def _tampered(change):
    def setup(run, tmp):
        change(run)
        return ["report", run]

    return setup


CASES = [
    # silent wrong results before: now refused
    Case(
        "config-json-edited",
        lambda run, tmp: (
            _edit_config(run, "distill", "alpha", 0.5),
            [*RUN, "--alpha", "0.5", "--out", run],
        )[1],
        2,
        "does not belong to this run",
    ),
    Case(
        "nan-in-checkpoint",
        lambda run, tmp: (_edit_checkpoint(run, "small_networks", _nan), [*RUN, "--out", run])[1],
        2,
        "NaN or infinite weights",
    ),
    Case(
        "export-teacher-missing-layer",
        lambda run, tmp: (
            _edit_checkpoint(run, "teachers", _drop_last_layer),
            ["export", run, "--role", "teacher", "--out", tmp / "t.onnx"],
        )[1],
        2,
        "does not belong to this run",
    ),
    Case("foreign-folder", _foreign, 2, "holds files kdbench did not write"),
    Case("foreign-config-json", _foreign_with_config, 2, "holds files kdbench did not write"),
    Case("symlinked-exports", _symlinked_exports, 2, "exports is a symlink"),
    Case("empty-out", lambda run, tmp: [*RUN, "--out", ""], 2, "--out is empty"),
    Case("root-out", lambda run, tmp: [*RUN, "--out", "/"], 2, "filesystem root"),
    Case("symlinked-records", _symlinked("records.jsonl"), 2, "is a symlink"),
    Case("symlinked-probe", _symlinked(".kdbench-write-test"), 2, "is a symlink"),
    Case(
        "sweep-out-is-a-file",
        lambda run, tmp: (
            (tmp / "f").write_text("x"),
            ["sweep", *TINY, "--grid", "temperature=2,4", "--out", tmp / "f"],
        )[1],
        2,
        "is a file",
    ),
    # grids: every point checked before anything trains
    Case(
        "grid-duplicate",
        lambda run, tmp: ["sweep", *TINY, "--grid", "temperature=2,2", "--out", tmp / "sw"],
        2,
        "more than once",
    ),
    Case(
        "grid-same-label",
        lambda run, tmp: [
            "sweep",
            *TINY,
            "--grid",
            "temperature=1.0000001,1.0000002",
            "--out",
            tmp / "sw",
        ],
        2,
        "would share the folder",
    ),
    Case(
        "grid-bad-loss",
        lambda run, tmp: ["sweep", *TINY, "--grid", "loss=kd,nope", "--out", tmp / "sw"],
        2,
        "unknown distillation loss 'nope'",
    ),
    # settings that used to be accepted
    Case(
        "hidden-negative",
        lambda run, tmp: [*RUN, "--teacher-hidden", "-5", "--out", tmp / "x"],
        2,
        "takes sizes like",
    ),
    Case(
        "hidden-double-dash",
        lambda run, tmp: [*RUN, "--student-hidden", "100--50", "--out", tmp / "x"],
        2,
        "takes sizes like",
    ),
    Case(  # 6 models of 7.5e9 parameters: refused by the memory rule before the folder is made
        "hidden-beyond-memory",
        lambda run, tmp: [*RUN, "--student-hidden", "100000000", "--out", tmp / "x"],
        2,
        "of memory and the machine has",
    ),
    Case(
        "temperature-huge",
        lambda run, tmp: [*RUN, "--temperature", "1e300", "--out", tmp / "x"],
        2,
        "temperature must be at most",
    ),
    Case(
        "adam-eps-inf",
        lambda run, tmp: [*RUN, "--adam-eps", "inf", "--out", tmp / "x"],
        2,
        "Adam epsilon must be a finite number",
    ),
    # damaged files: one line naming the file
    Case(
        "truncated-checkpoint",
        lambda run, tmp: (
            (run / "checkpoints" / "teachers.safetensors").write_bytes(
                (run / "checkpoints" / "teachers.safetensors").read_bytes()[:200]
            ),
            ["export", run, "--role", "teacher", "--out", tmp / "t.onnx"],
        )[1],
        2,
        "is damaged",
    ),
    Case(
        "random-checkpoint",
        lambda run, tmp: (
            (run / "checkpoints" / "distilled_students.safetensors").write_bytes(os.urandom(4096)),
            [*RUN, "--out", run],
        )[1],
        2,
        "is damaged",
    ),
    *(
        Case(f"records-line-{label}", _tampered(_records_line(text)), 2, "line 2 is damaged")
        for label, text in (
            ("null", b"null"),
            ("number", b"42"),
            ("empty-object", b"{}"),
            ("kind-only", b'{"kind":"model"}'),
            ("not-utf8", b"\xff\xfe{"),
            (
                "repeat-text",
                b'{"kind":"model","repeat":"x","role":"teacher","member":0,'
                b'"diverged_epoch":null,"val_error":0.1,"test_error":0.1}',
            ),
        )
    ),
    Case("records-line-twice", _tampered(_duplicated_line), 2, "repeats the record of line 1"),
    Case("records-foreign-repeat", _tampered(_foreign_repeat), 2, "repeat 7, member 0, which"),
    Case(
        "config-dataset-edited",
        _tampered(lambda run: _edit_config(run, "data", "dataset", "mnist")),
        2,
        "does not belong to this run",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_catalogue(case, tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    proc = kdbench(*case.setup(run, tmp_path))
    assert proc.returncode == case.code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdbench: error:"), proc.stderr
    assert case.says in lines[0], lines[0]
    if case.name == "foreign-folder":  # refused: nothing of kdbench's was written there
        assert sorted(p.name for p in (tmp_path / "theirs").iterdir()) == [
            "figure.png", "report.md", "summary.json"
        ]  # fmt: skip
    if case.name == "foreign-config-json":  # refused, and nothing of theirs touched
        assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
            ".build.tmp", "config.json"
        ]  # fmt: skip
    if case.name == "symlinked-exports":
        assert not list((tmp_path / "elsewhere").iterdir())
    elif case.name.startswith("symlinked"):
        assert (tmp_path / "outside.txt").read_text() == "keep me"
    if case.name.startswith(("grid", "hidden", "temperature", "adam")):
        assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_two_writers_one_folder(tmp_path):
    """Two real processes on one --out: while the first holds the folder (paused, so no race
    with the clock), the second exits 2 naming it and a reader is refused; the first, killed,
    leaves no stale lock, and no model was recorded twice."""
    out = tmp_path / "cc"
    cmd = [sys.executable, "-m", "kdbench", "reproduce", *TINY, "--no-latency",
           "--repeats", "3", "--epochs", "40", "--out", str(out)]  # fmt: skip
    first = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (out / "records.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.02)  # its teachers are recorded: it is mid-run, holding the folder
    os.kill(first.pid, signal.SIGSTOP)
    try:
        reader = kdbench("report", out)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        (out / ".kdbench.lock").unlink()  # the lock is the folder's, not this file's
        third = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        still_running = first.poll() is None
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert still_running
    assert second.returncode == 2, second.stderr
    assert f"being written by process {first.pid} (kdbench reproduce)" in second.stderr
    assert reader.returncode == 2 and "being written" in reader.stderr
    assert third.returncode == 2 and "is being written by" in third.stderr, third.stderr
    lines = (out / "records.jsonl").read_text().splitlines()
    keys = [(r["kind"], r["role"], r["repeat"], r["member"]) for r in map(json.loads, lines)]
    assert len(keys) == len(set(keys))  # one writer: no model twice
    from kdbench.runs import guard

    with guard.claim(out):  # no stale lock: the kernel dropped it with the killed process
        pass


def test_stale_teacher_logits_are_not_used(tmp_path):
    """Logits of another teacher left in the folder are recomputed from the teacher you pass."""
    import kdbench as api
    from kdbench.data import datasets
    from kdbench.runs.store import write_derived

    a = datasets.digits_arrays()
    n_train, n_test = len(a["train_images"]), len(a["test_images"])
    rng = np.random.default_rng(0)
    good = np.eye(10, dtype=np.float32)[np.concatenate([a["train_labels"], a["test_labels"]])]
    np.save(tmp_path / "good.npy", 5 * good)  # a perfect teacher
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".kdbench").touch()
    noise = rng.normal(size=(n_train + n_test, 10)).astype(np.float32)
    split = int(n_train * 0.9)
    parts = {"train": noise[:split], "val": noise[split:n_train], "test": noise[n_train:]}
    stale = {k: torch.from_numpy(v) for k, v in parts.items()}
    write_derived(folder / "teacher_logits.safetensors", stale, "another teacher's sha256")
    cfg = api.Config().with_overrides(dataset="digits", repeats=1, members=2, epochs=1,
                                      teacher_hidden=(16,), student_hidden=(8,))  # fmt: skip
    _, summary = api.reproduce(cfg, folder, progress=False, teacher=tmp_path / "good.npy",
                               measure_latency=False)  # fmt: skip
    assert summary.rows["teacher"].mean_pct == 0.0  # the good teacher's, not the noise's


def test_stale_data_file_is_replaced(tmp_path):
    """A data.safetensors of other arrays in the folder is rewritten with yours."""
    import kdbench as api
    from kdbench.data import datasets
    from kdbench.protocol.arrays import splits_of
    from kdbench.runs.store import read_config

    a = datasets.digits_arrays()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".kdbench").touch()
    save_file({"train_images": torch.zeros(4, 64)}, str(folder / "data.safetensors"))
    cfg = api.Config().with_overrides(repeats=1, members=2, epochs=1, teacher_hidden=(16,),
                                      student_hidden=(8,))  # fmt: skip
    args = (a["train_images"], a["train_labels"], a["test_images"], a["test_labels"])
    api.study(*args, cfg, folder, progress=False)
    splits = splits_of(read_config(folder), folder)  # verified against config.json's hash
    assert len(splits.x_test) == len(a["test_images"])


def test_leftover_temporary_files_are_removed_on_resume(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    (run / ".summary.json.abc.tmp").write_text("half")
    (run / "checkpoints" / ".teachers.safetensors.tmp").write_text("half")
    assert kdbench(*RUN, "--out", run).returncode == 0
    assert not list(run.rglob(".*.tmp"))


def test_onnx_teachers_of_other_shapes(tmp_path):
    """A fixed batch of 7 and a double input work; a dynamic width that needs 100 is one line."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def model(path, width, batch, elem, weights_in):
        w = numpy_helper.from_array(
            np.ones((weights_in, 10), dtype=onnx.helper.tensor_dtype_to_np_dtype(elem)), "w"
        )
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["z"])], "t",
            [helper.make_tensor_value_info("x", elem, [batch, width])],
            [helper.make_tensor_value_info("z", elem, [batch, 10])], [w],
        )  # fmt: skip
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 9
        onnx.save(m, str(path))
        return path

    fixed = model(tmp_path / "fixed7.onnx", 64, 7, TensorProto.FLOAT, 64)
    double = model(tmp_path / "double.onnx", 64, "n", TensorProto.DOUBLE, 64)
    wrong = model(tmp_path / "needs100.onnx", "w", "n", TensorProto.FLOAT, 100)
    for ok in (fixed, double):
        proc = kdbench(*RUN, "--repeats", "1", "--own-teacher", ok, "--out", tmp_path / ok.stem)
        assert proc.returncode == 0, proc.stderr
    proc = kdbench(*RUN, "--own-teacher", wrong, "--out", tmp_path / "wrong")
    assert (
        proc.returncode == 1
        and "needs100.onnx" in proc.stderr
        and "failed on inputs" in proc.stderr
    )
    assert not (tmp_path / "wrong").exists()


def test_npy_teacher_of_strings(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a"] * 10] * 5))
    proc = kdbench(*RUN, "--own-teacher", tmp_path / "s.npy", "--out", tmp_path / "r")
    assert proc.returncode == 1 and "not numbers" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs, where the machine lets the tests mount one (root on Linux)."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(where)],
                          capture_output=True)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_full_disk_is_one_line_and_resumes(tmpfs, tmp_path):
    """A run on a disk too small for it fails with one line, exit 1; nothing half-written
    (every file there parses); the same command on a bigger disk completes."""
    out = tmpfs / "run"
    proc = kdbench(*RUN, "--out", out)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0], proc.stderr
    for f in out.glob("*.json"):
        json.loads(f.read_text())
    assert not list(out.rglob(".*.tmp"))  # the killed write's temporary file is gone


def test_read_only_folder_is_one_line(tiny_run, tmpfs):
    run = tmpfs / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", ".kdbench.lock",
                                                                 "*.png", "*.svg"))  # fmt: skip
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    for cmd in (["report", run], ["diagnose", run]):
        proc = kdbench(*cmd)
        assert proc.returncode == 2, proc.stderr
        assert "cannot write to run folder" in proc.stderr and "Read-only" in proc.stderr


def test_own_teacher_logits_from_before_hashes_still_count(tmp_path):
    """A run folder of your teacher written before derived files carried their source's hash:
    its config.json names the teacher, so diagnose (and a resume) still use its logits."""
    from safetensors import safe_open

    from kdbench.data import datasets

    a = datasets.digits_arrays()
    labels = np.concatenate([a["train_labels"], a["test_labels"]])
    np.save(tmp_path / "good.npy", 5 * np.eye(10, dtype=np.float32)[labels])
    run = tmp_path / "run"
    args = [*RUN, "--repeats", "1", "--own-teacher", tmp_path / "good.npy", "--out", run]
    assert kdbench(*args).returncode == 0
    path = run / "teacher_logits.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata().get("source_sha256")  # written with its source
    save_file(load_file(str(path)), str(path))  # as an older kdbench wrote it: no metadata
    (run / "diagnose.json").unlink()  # measured afresh, not carried over from the first run
    assert kdbench("diagnose", run).returncode == 0
    found = json.loads((run / "diagnose.json").read_text())
    assert "fidelity" in found["soft_targets"] and "unreadable" not in json.dumps(found)
    assert kdbench(*args).returncode == 0  # the resume reads them back
