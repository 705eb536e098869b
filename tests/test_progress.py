"""Progress moves at least once a second, and the Python API shows it unless told not to."""

from __future__ import annotations

import dataclasses
import itertools
import time

from kdbench.config import TrainConfig
from kdbench.engine import trainer as engine
from kdbench.engine.objectives import HardLabels


class _Slow(HardLabels):
    def loss(self, logits, batch):
        time.sleep(0.05)  # 20 steps a second: 64 steps would be 3 s without a word
        return super().loss(logits, batch)


def test_progress_moves_at_least_every_second(small_splits):
    calls = []
    cfg = dataclasses.replace(TrainConfig(), epochs=1, batch_size=8)  # 60 steps, about 3 s
    stack = engine.Stack("t", [784, 8, 10], [1], [2], _Slow())
    engine.train(stack, small_splits, cfg,
                 lambda *a, **k: calls.append((time.perf_counter(), a, k)))  # fmt: skip
    times = [t for t, _, _ in calls]
    assert times[-1] - times[0] > 2
    assert max(b - a for a, b in itertools.pairwise(times)) < 1.0
    assert calls[-1][1][3] == calls[-1][1][4]  # the epoch's last call: all steps done
    # ... and it carries the epoch's means (what live tracking sends); the others do not
    assert set(calls[-1][2]["metrics"]) == {"train_loss", "val_loss", "val_error"}
    assert all(not k for _, _, k in calls[:-1])


def test_python_api_shows_progress_unless_told_not_to(tmp_path, capsys):
    from kdbench import reproduce
    from kdbench.protocol.presets import resolve

    cfg = resolve("paper", train_limit=600, repeats=1, members=1, epochs=1, threads=1)
    reproduce(cfg, tmp_path / "a", measure_latency=False)
    assert "distilled students" in capsys.readouterr().err
    reproduce(cfg, tmp_path / "b", progress=False, measure_latency=False)
    assert capsys.readouterr().err == ""


def test_threads_fit_the_cores_other_processes_leave_free():
    """One of two cores busy: kdbench started two threads and every parallel region waited on
    the one sharing a core (a study's first epochs took 582 s against 38 s). Threads are the
    free cores, a core others use less than a quarter of counting as free."""
    from kdbench.protocol.threads import choose

    assert choose(2, 0.0, 2) == 2 and choose(2, 0.2, 2) == 2  # idle, or nearly
    assert choose(2, 0.3, 2) == 1 and choose(2, 1.0, 2) == 1  # one core taken
    assert choose(4, 1.1, 4) == 3 and choose(4, 1.3, 4) == 2
    assert choose(2, 5.0, 2) == 1  # at least one
    assert choose(8, 0.0, 2) == 2  # never beyond torch's own count (OMP_NUM_THREADS)


def _two_cores_under(monkeypatch, load) -> None:
    """`protocol.threads` on a fresh 2-core machine (torch's own count 2) whose other
    processes use `load()` cores at each reading."""
    from kdbench.protocol import busy, threads

    monkeypatch.setattr(threads, "_cap", 2)
    monkeypatch.setattr(threads, "_last", (None, None))
    monkeypatch.setattr(threads, "_cores", lambda: 2)
    monkeypatch.setattr(busy, "busy_cores", lambda cores: load())
    monkeypatch.setattr(busy, "others_busy_cores", lambda a, b, cores: load())


def test_threads_are_chosen_again_at_each_stack_and_said_when_they_change(monkeypatch):
    import torch

    from kdbench.protocol import threads

    load = iter([1.0, 0.0, 0.1])  # other processes' cores: before the first stack, then between
    _two_cores_under(monkeypatch, lambda: next(load))
    try:
        first = threads.fit(None, "cpu")
        assert torch.get_num_threads() == 1
        assert first.why() == "1 of 2 threads: other processes use 1.0 core; --threads N fixes it"
        assert threads.fit(None, "cpu").threads == 2 and torch.get_num_threads() == 2  # freed
        assert threads.fit(None, "cpu") is None and torch.get_num_threads() == 2  # not said again
        assert threads.fit(3, "cpu").why() == "3 threads (--threads)"  # --threads always wins
        assert threads.fit(None, "cuda") is None and torch.get_num_threads() == 3  # GPU: as is
    finally:
        torch.set_num_threads(1)


def test_a_study_on_a_busy_machine_says_its_threads_and_records_them(tmp_path, monkeypatch,
                                                                     capsys):  # fmt: skip
    import json

    import torch

    from kdbench import reproduce
    from kdbench.protocol import threads
    from kdbench.protocol.presets import resolve

    _two_cores_under(monkeypatch, lambda: 1.0)
    try:
        cfg = resolve("paper", train_limit=600, repeats=1, members=1, epochs=1)
        folder, _ = reproduce(cfg, tmp_path / "a", measure_latency=False)
    finally:
        torch.set_num_threads(1)
    err = capsys.readouterr().err
    assert "teachers: 1 of 2 threads: other processes use 1.0 core" in err
    assert err.count("of 2 threads") == 1  # said once: the later stacks chose the same
    records = [json.loads(x) for x in (folder / "records.jsonl").read_text().splitlines()]
    assert {r.get("threads") for r in records if r["kind"] == "model"} == {1}
    env = json.loads((folder / "config.json").read_text())["environment"]
    assert env["torch threads"] == threads.RULE


def _fake_proc(root, busy, idle, own):
    (root / "self").mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\n")
    fields = ["S"] + ["0"] * 10 + [str(own), "0"] + ["0"] * 30  # utime 14th, stime 15th
    (root / "self" / "stat").write_text("4242 (python (kdbench)) " + " ".join(fields))


def test_busy_counts_other_processes_now_not_this_ones_or_a_lagging_average(tmp_path, monkeypatch):
    """Right after a heavy command the load average still says 'busy' (1.7 on 2 cores, measured
    here after the test suite); the CPU counters over the window say idle: all cores."""
    import os

    from kdbench.protocol import busy

    monkeypatch.setattr(os, "getloadavg", lambda: (1.7, 1.7, 1.7))
    # 150 busy ticks of 200, all of them this process's own
    before = busy.sample(_write(tmp_path, 1000, 9000, 400))
    after = busy.sample(_write(tmp_path, 1150, 9050, 550))
    assert (before.busy, before.total, before.own) == (1000, 10000, 400)
    assert busy.others_busy_cores(before, after, cores=2) == 0.0  # idle: our own work only
    # two other processes each spinning a core: 200 busy ticks of 200, none ours
    shared = busy.sample(_write(tmp_path, 1350, 9050, 550))
    assert busy.others_busy_cores(after, shared, cores=2) == 2.0
    # through the public reading, on the fake /proc: idle now, despite the load average
    _write(tmp_path, 1000, 9000, 400)
    assert busy.busy_cores(2, proc=tmp_path, window=0.0) == 0.0
    # no /proc: the load average is all there is
    assert busy.busy_cores(2, proc=tmp_path / "absent", window=0.0) == 1.7


def _write(root, busy, idle, own):
    _fake_proc(root, busy, idle, own)
    return root


def test_study_eta_is_the_work_left_at_the_rate_so_far(monkeypatch):
    """Stack a (2 members, 100 MACs) then b (4 members, 50 MACs), 2 epochs of 10 steps: after
    a's first epoch in 10 s (2,000 units), a's second epoch and b's two are 6,000 units: 30 s."""
    from kdbench import progress

    clock = iter([0.0, 10.0, 10.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    bar = progress.Bar()
    bar.plan([progress.StackPlan("a", 2, 100), progress.StackPlan("b", 4, 50)], epochs=2)
    bar._advance("a", 1, 10, 2)
    assert bar.eta("a", 1, 10, 10, 2) == "study ETA ~30 s"
    bar.plan(bar.stacks.values(), epochs=None)
    assert bar.eta("a", 1, 10, 10, 2) == "ETA: early stopping decides"


def test_early_stopping_eta_is_an_estimate_beside_its_bound(monkeypatch):
    """A default run (early stopping) had no ETA. Same stacks and rate as above (200 units a
    second), a cap of 10 epochs and patience 2: in a's epoch 1, a is guessed to run 1 + 2 = 3
    epochs and b as many: (2 x 10 x 2 x 100) + (3 x 10 x 4 x 50) = 10,000 units, 50 s; at the cap
    (9 x 10 x 2 x 100) + (10 x 10 x 4 x 50) = 38,000 units, 190 s = 3 min. Once a stopped after
    4 epochs, b is expected to run 4."""
    from kdbench import progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    bar = progress.Bar()
    bar.plan([progress.StackPlan("a", 2, 100), progress.StackPlan("b", 4, 50)], None, 10, 2)
    now[0] = 10.0
    bar._advance("a", 1, 10, 2)
    assert bar.eta("a", 1, 10, 10, 2) == "study ETA ~50 s (≤ 3 min)"
    for epoch in (2, 3, 4):
        bar._advance("a", epoch, 10, 2)
    bar._advance("b", 1, 10, 4)  # a ran 4 epochs; 4,000 + 8 x 1,000... units at 200 a second
    now[0] = bar.done / 200
    # b: 3 epochs more of 4 x 10 x 50 = 6,000 units, 30 s; at the cap 9 epochs: 90 s = 2 min
    assert bar.eta("b", 1, 10, 10, 4) == "study ETA ~30 s (≤ 2 min)"


def test_fixed_epoch_runs_log_a_study_eta(tmp_path, capsys):
    from kdbench import reproduce
    from kdbench.protocol.presets import resolve

    cfg = resolve("paper", train_limit=600, repeats=1, members=1, epochs=2, threads=1)
    reproduce(cfg, tmp_path / "a", measure_latency=False)
    err = capsys.readouterr().err.splitlines()
    lines = [x for x in err if "epoch" in x]
    assert len(lines) == 6 and all("study ETA" in x for x in lines)  # 3 stacks x 2 epochs
    assert lines[-1].endswith("study ETA ~0 s")
    seconds = [int(x.split(" s elapsed")[0].rsplit("· ", 1)[1]) for x in lines]
    assert seconds == sorted(seconds)  # elapsed since the study began: it never resets
    assert err[-1].startswith("trained; diagnosing and writing the report")  # no silent tail
    # grown by a repeat: the resume says what it reuses and what it trains
    reproduce(cfg.with_overrides(repeats=2), tmp_path / "a", measure_latency=False)
    resumed = capsys.readouterr().err.splitlines()[0]
    assert resumed.startswith(
        f"{tmp_path / 'a'}: reusing teachers (1 of 2), small networks (2 of 4),"
        " distilled students (2 of 4); training teachers (1 model left), small networks"
        " (2 models left), distilled students (2 models left)"
    ), resumed
