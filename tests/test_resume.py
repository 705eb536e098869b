"""Crash safety: a run killed with SIGKILL resumes to the same summary; runs are deterministic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors import safe_open

from kdbench.records import MEASURED
from tests.in_process import kdbench

ARGS = [
    "--train-limit",
    "1500",
    "--repeats",
    "2",
    "--members",
    "4",
    "--epochs",
    "3",
    "--quiet",
    "--no-latency",
    # one thread in both processes: the kill-and-resume must compare like with like (the
    # joint copies' floats depend on the thread count, see the README)
    "--threads",
    "1",
    # teachers trained along with their students: the costliest distillation to resume
    "--teacher-updates",
    "joint",
    "--teacher-jitter",
    "1",
]


def _start(out):
    cmd = [sys.executable, "-m", "kdbench", "reproduce", *ARGS, "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(out):
    proc = _start(out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads((out / "summary.json").read_text())


def _complete_lines(path):
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _model_lines(out):
    return [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    return out, _finish(out)


def test_killed_run_resumes_to_the_same_summary_and_weights(tmp_path, uninterrupted):
    """Also the determinism check: the killed process trained the teachers from scratch and
    the resumed one everything else, yet every record and checkpoint equals, bit for bit, those
    of a separate uninterrupted process with the same settings."""
    full_out, full = uninterrupted
    out = tmp_path / "run"
    proc = _start(out)
    records = out / "records.jsonl"
    deadline = time.time() + 120
    # wait for both teachers' lines: they are appended one at a time, so the first
    # line alone can be seen a moment before the second
    while time.time() < deadline and _complete_lines(records) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not (out / "summary.json").exists(), "the kill should land mid-run"
    done_before = len(_model_lines(out))
    assert done_before >= 2  # the teachers were recorded
    # simulate a torn write at the moment of the kill
    with open(records, "a") as fh:
        fh.write('{"kind": "model", "rol')
    resumed = _finish(out)
    timing = resumed["timing"]  # the wall time adds the killed part's training
    assert timing["resumed"] and timing["total_seconds"] > timing["this_part_seconds"]
    assert "recorded in earlier parts of a resumed run" in (out / "report.md").read_text()
    assert resumed["rows"] == full["rows"]
    assert resumed["comparisons"] == full["comparisons"]
    lines = _model_lines(out)
    keys = [(r["kind"], r["role"], r["repeat"], r["member"]) for r in lines]
    assert len(keys) == len(set(keys)) == len(_model_lines(full_out)), "no record twice"
    a = {(r["role"], r["repeat"], r["member"]): r["test_error"] for r in _model_lines(full_out)}
    b = {(r["role"], r["repeat"], r["member"]): r["test_error"] for r in lines}
    assert a == b
    for name in ("teachers", "small_networks", "distilled_students"):
        with (
            safe_open(str(full_out / "checkpoints" / f"{name}.safetensors"), "pt") as f1,
            safe_open(str(out / "checkpoints" / f"{name}.safetensors"), "pt") as f2,
        ):
            assert sorted(f1.keys()) == sorted(f2.keys())
            for key in f1.keys():  # noqa: SIM118
                assert f1.get_tensor(key).equal(f2.get_tensor(key)), (name, key)


def test_other_seed_gives_other_results(tmp_path, uninterrupted):
    """`--seed` reaches every model: each gets other init and shuffle seeds, hence other weights
    (a smaller run than `uninterrupted`, to keep the suite fast; seeds do not depend on size)."""
    full_out, _ = uninterrupted
    out = tmp_path / "seed1"
    small = [*ARGS, "--train-limit", "600", "--epochs", "1"]  # later flags override ARGS
    proc = kdbench("reproduce", *small, "--seed", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "config.json").read_text())["config"]["data"]["train_limit"] == 600

    def seeds(folder):
        return {
            (r["role"], r["repeat"], r["member"]): (r["seed"], r["shuffle_seed"])
            for r in _model_lines(folder)
            if r["kind"] == "model"
        }

    ours, theirs = seeds(full_out), seeds(out)
    assert ours.keys() == theirs.keys()
    assert all(ours[k][0] != theirs[k][0] and ours[k][1] != theirs[k][1] for k in ours)
    with (
        safe_open(str(full_out / "checkpoints" / "teachers.safetensors"), "pt") as f0,
        safe_open(str(out / "checkpoints" / "teachers.safetensors"), "pt") as f1,
    ):
        key = sorted(f0.keys())[0]
        assert not f0.get_tensor(key).equal(f1.get_tensor(key))


def test_run_folder_files_are_readable_by_the_team(uninterrupted):
    """Temporary-then-rename writes must not leave the 0600 of mkstemp or safetensors."""
    folder, _ = uninterrupted
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    for p in files:
        assert p.stat().st_mode & 0o044 == 0o044, p


def test_resume_with_another_thread_count_is_accepted(tmp_path):
    """Threads change speed, not numbers: a run started on 2 threads resumes on 1."""
    from kdbench.protocol.presets import resolve
    from kdbench.runs.store import RunStore

    first = resolve("paper", repeats=2, threads=2)
    RunStore(tmp_path / "run", {"config": first.to_dict()})
    again = RunStore(tmp_path / "run", {"config": resolve("paper", repeats=2).to_dict()})
    assert again.config.threads is None  # accepted: the folder reopened under 1 thread
    with pytest.raises(Exception, match="different configuration"):
        RunStore(tmp_path / "run", {"config": resolve("paper", repeats=2, alpha=0.5).to_dict()})


def test_a_stack_cut_short_continues_from_its_snapshot(tmp_path, monkeypatch):
    """A run stopped mid-way through its teachers' stack (here: interrupted right after that
    stack's second snapshot) continues from the snapshot, not from epoch 1, and ends with the
    records of an uninterrupted run; the snapshot is gone once the stack is finished."""
    from kdbench.config import Config
    from kdbench.engine import trainer
    from kdbench.protocol.run import reproduce
    from kdbench.roles import StackName
    from kdbench.runs.store import RunStore

    monkeypatch.setattr(trainer, "SNAPSHOT_SECONDS", 0.0)
    cfg = Config().with_overrides(train_limit=600, repeats=2, members=2, teacher_epochs=4,
                                  teacher_hidden=(32,), student_hidden=(8,), threads=1)  # fmt: skip
    reproduce(cfg, tmp_path / "whole", progress=False, measure_latency=False)

    save, count = RunStore.save_snapshot, []

    def interrupted(self, name, snap):
        save(self, name, snap)
        count.append(snap.state["epoch"])
        if name == StackName.TEACHERS and len(count) == 2:
            raise KeyboardInterrupt  # the session ends here

    monkeypatch.setattr(RunStore, "save_snapshot", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reproduce(cfg, tmp_path / "cut", progress=False, measure_latency=False)
    snap = RunStore.snapshot_path(tmp_path / "cut", StackName.TEACHERS)
    records = tmp_path / "cut" / "records.jsonl"
    assert snap.is_file() and (not records.exists() or not records.read_text())
    monkeypatch.setattr(RunStore, "save_snapshot", save)
    resumed_from = []
    load = RunStore.load_snapshot

    def spy(self, name):
        got = load(self, name)
        resumed_from.append((name, got.state["epoch"] if got else None))
        return got

    monkeypatch.setattr(RunStore, "load_snapshot", spy)
    reproduce(cfg, tmp_path / "cut", progress=False, measure_latency=False)
    assert (StackName.TEACHERS, 2) in resumed_from
    assert not snap.exists()

    def numbers(folder):
        lines = (folder / "records.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k not in MEASURED} for x in lines]

    assert numbers(tmp_path / "cut") == numbers(tmp_path / "whole")
