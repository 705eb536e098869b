"""kdbench sweep: teachers shared between grid points, Holm over the grid, resume after a kill,
(the same numbers from the Ray executor: `test_sweep_ray.py`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from safetensors import safe_open

from kdbench.errors import ConfigError
from kdbench.protocol.presets import resolve
from kdbench.sweeps import plan as sweep_plan
from kdbench.sweeps import sweep
from tests.conftest import SWEEP_ARGS
from tests.sweep_numbers import sweep_numbers


def _sweep(out):
    cmd = [sys.executable, "-m", "kdbench", "sweep", *SWEEP_ARGS, "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_grid_parsing_types_and_errors():
    grid = sweep.parse_grid(["temperature=1,2.5", "student-hidden=100,50-50", "restore_best=true"])
    assert grid == {
        "temperature": [1.0, 2.5],
        "student_hidden": [(100,), (50, 50)],
        "restore_best": [True],
    }
    recipe = sweep.parse_grid(["optimizer=adam,sgd", "augment=none,crop,crop+flip"])
    assert recipe == {"optimizer": ["adam", "sgd"], "augment": [None, "crop", "crop+flip"]}
    for bad, msg in [
        (["colour=1"], "not a setting"),
        (["temperature=hot"], "cannot read"),
        (["alpha=0.1", "alpha=0.2"], "twice"),
        (["alpha"], "name=v1"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            sweep.parse_grid(bad)
    with pytest.raises(ConfigError, match="alpha must be in"):
        sweep.points(resolve("paper"), sweep.parse_grid(["alpha=0.5,1.5"]))


def test_teachers_and_small_networks_are_trained_once(local_sweep):
    result = json.loads((local_sweep / "sweep.json").read_text())
    trained = [p["trained_stacks"] for p in result["points"]]
    assert trained[0] == ["teachers", "small networks", "distilled students"]
    assert trained[1:] == [["distilled students"]] * 3
    # the four points' distilled students were one stack: one time per counted MAC for all
    rates = []
    for p in result["points"]:
        recs = [
            json.loads(x)
            for x in (local_sweep / p["folder"] / "records.jsonl").read_text().splitlines()
        ]
        rates += [r["seconds"] / (r["train_macs"] + r["target_macs"])
                  for r in recs if r["role"].startswith("student_from")]  # fmt: skip
    assert len(rates) == 4 * 2 * 2 and max(rates) == pytest.approx(min(rates), rel=1e-9)
    shared = [f for f in (local_sweep / "shared").iterdir() if not f.name.startswith("small-")]
    assert len(shared) == 1, "a temperature x alpha grid has one upstream"
    counts = {}
    for name in ("teachers", "small_networks"):
        with safe_open(str(shared[0] / "checkpoints" / f"{name}.safetensors"), "pt") as fh:
            counts[name] = len(json.loads(fh.metadata()["records"]))
    assert counts == {"teachers": 2, "small_networks": 2 * (2 + 1)}  # not 4x that
    # every point is a complete run: same teachers, its own distilled students
    teacher_errors = set()
    for p in result["points"]:
        lines = (local_sweep / p["folder"] / "records.jsonl").read_text().splitlines()
        recs = [json.loads(x) for x in lines]
        teacher_errors.add(tuple(r["test_error"] for r in recs if r["role"] == "teacher"))
        assert (local_sweep / p["folder"] / "report.md").is_file()  # relative to the sweep folder
    assert len(teacher_errors) == 1
    assert result["tests_in_family"] == 8
    assert set(result["best"]) == {"student_from_teacher", "student_from_ensemble"}
    text = (local_sweep / "sweep.md").read_text()
    assert (local_sweep / "sweep.png").is_file() and "Holm" in text
    # 2 repeats: flagged, and no star however small p is
    assert (
        "n < 5: intervals and tests are not conclusive" in text
        and "*" not in text.split("| Δ ensemble-KD (pp) |")[1].split("Test error")[0]
    )


def test_killed_sweep_resumes_to_the_samesweep_numbers(tmp_path, local_sweep):
    out = tmp_path / "killed"
    proc = _sweep(out)
    deadline = time.time() + 200
    # the small networks are saved just before the grid's distilled students start training
    upstream_done = out / "shared"
    while time.time() < deadline and not list(upstream_done.glob("*/checkpoints/small_networks*")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not (out / "sweep.json").exists(), "the kill should land mid-sweep"
    proc = _sweep(out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert sweep_numbers(out) == sweep_numbers(local_sweep)


def test_a_different_sweep_in_the_same_folder_is_refused(local_sweep, tmp_path):
    from typer.testing import CliRunner

    from kdbench.cli.app import app

    local = shutil.copytree(local_sweep, tmp_path / "local")  # this test writes into it

    result = CliRunner().invoke(
        app, ["sweep", *SWEEP_ARGS, "--grid", "seed=1", "--out", str(local)]
    )
    assert result.exit_code == 2 and "different sweep" in result.stderr
    # one sweep call began and finished every point: no point reads as a resumed run
    reports = [p.read_text() for p in (local / "points").glob("*/report.md")]
    assert len(reports) == 4 and not any("resumed run" in r for r in reports)
    # another thread count, or a setting added since at its default: the same sweep
    spec = json.loads((local / "sweep-config.json").read_text())
    assert sweep._same_sweep(spec, {**spec, "base": {**spec["base"], "threads": 2}})
    older = {**spec, "base": {k: v for k, v in spec["base"].items() if k != "preset"}}
    assert sweep._same_sweep(older, spec)
    assert not sweep._same_sweep(spec, {**spec, "max_stack": 7})
    before = sweep_numbers(local)
    # `kdbench report` on the sweep folder re-renders every point and the sweep, training nothing
    (local / "sweep.md").unlink()
    result = CliRunner().invoke(app, ["report", str(local)])
    assert result.exit_code == 0, result.stderr
    assert sweep_numbers(local) == before and (local / "sweep.md").is_file()


def test_reuse_takes_teachers_from_a_finished_run(tmp_path, local_sweep):
    run = local_sweep / "points" / "temperature=2_alpha=0.1"
    base = resolve("paper", train_limit=1000, repeats=2, members=2, epochs=1, threads=1)
    result = sweep.run(base, sweep.parse_grid(["temperature=4"]), tmp_path / "re", reuse_run=run)
    assert result["points"][0]["trained_stacks"] == ["distilled students"]
    # other teachers: the finished run's small networks still serve
    other = sweep.run(base, sweep.parse_grid(["teacher_epochs=2"]), tmp_path / "t", reuse_run=run)
    assert other["points"][0]["trained_stacks"] == ["teachers", "distilled students"]
    # a run of more repeats serves a sweep of fewer: its first repeats' models are read
    fewer = sweep.run(base.with_overrides(repeats=1), sweep.parse_grid(["temperature=4"]),
                      tmp_path / "fewer", reuse_run=run)  # fmt: skip
    assert fewer["points"][0]["trained_stacks"] == ["distilled students"]
    assert fewer["points"][0]["rows"]["teacher"]["n"] == 1
    with pytest.raises(ConfigError, match="does not match"):
        sweep.run(
            base.with_overrides(seed=5),
            sweep.parse_grid(["temperature=4"]),
            tmp_path / "other",
            reuse_run=run,
        )


def test_points_are_stacked_by_shared_teachers_and_monitor(tmp_path):
    base = resolve("paper", repeats=3)
    grid = sweep.parse_grid(["temperature=2,4", "kd_monitor=combined,hard", "teacher_hidden=50,60"])
    plan = sweep_plan.points(base, grid)
    stacks = sweep_plan.distil_work(plan)
    assert sorted(len(w.points) for w in stacks) == [2, 2, 2, 2]  # 2 teacher shapes x 2 monitors
    for work in stacks:
        cfgs = [p.config for p in work.points]
        assert len({c.model.teacher_hidden for c in cfgs}) == 1
        assert len({c.distill.kd_monitor for c in cfgs}) == 1
    assert [len(w.points) for w in sweep_plan.distil_work(plan, max_stack=6)] == [1] * 8
    for bad, msg in [({"max_stack": 0}, "max-stack"), ({"executor": "spark"}, "unknown executor")]:
        with pytest.raises(ConfigError, match=msg):
            sweep.run(base, grid, tmp_path / "refused", **bad)
    assert not (tmp_path / "refused").exists(), "a refused sweep must leave nothing behind"


def test_grid_points_in_one_stack_equal_each_point_distilled_alone(mnist_arrays):
    """The joint stack (a temperature and alpha per member) against each point on its own."""
    from kdbench.data import datasets as data
    from kdbench.protocol.study import distil, upstream

    a = mnist_arrays
    splits = data.split(
        a["train_images"], a["train_labels"], a["test_images"][:1000], a["test_labels"][:1000],
        validation_split=0.2, train_limit=800,
    )  # fmt: skip
    base = resolve("paper", repeats=2, members=2, student_hidden=(32,), teacher_hidden=(64,))
    base = base.with_overrides(patience=1, max_epochs=4)
    cfgs = [
        base.with_overrides(temperature=t, alpha=al) for t, al in [(2, 0.5), (8, 0.1), (8, 0.9)]
    ]

    def ups():
        return upstream(base, splits, lambda rec: None)

    joint = distil(cfgs, splits, ups(), [None] * 3)
    for cfg, together in zip(cfgs, joint, strict=True):
        (alone,) = distil([cfg], splits, ups(), [None])
        for x, y in zip(together, alone, strict=True):
            assert (x.role, x.repeat, x.epochs) == (y.role, y.repeat, y.epochs)
            assert abs(x.test_error - y.test_error) <= 2e-3  # float noise: <= 2 images
            assert x.history[-1]["val_loss"] == pytest.approx(y.history[-1]["val_loss"], rel=1e-4)
    errors = {tuple(r.test_error for r in recs) for recs in joint}
    assert len(errors) == 3, "each point should get its own students"


def test_a_finished_sweep_grows_by_more_repeats_to_the_numbers_of_one_made_at_that_count(
    tmp_path, local_sweep, monkeypatch
):
    """`--repeats 2` on a finished 1-repeat sweep trains repeat 1 only (one teacher, one
    ensemble and hard-label student, every point's two distilled students in one stack) and
    ends with the numbers of the 2-repeat sweep made from scratch; fewer is refused."""
    from kdbench.engine import trainer
    from kdbench.errors import RunFolderError

    grid = sweep.parse_grid(["temperature=2,8", "alpha=0.1,0.9"])
    base = resolve("paper", train_limit=1000, members=2, epochs=1, threads=1)
    sweep.run(base.with_overrides(repeats=1), grid, tmp_path / "grown")
    sizes, train = [], trainer.train
    monkeypatch.setattr(trainer, "train", lambda stack, *a, **k: sizes.append(stack.size)
                        or train(stack, *a, **k))  # fmt: skip
    sweep.run(base.with_overrides(repeats=2), grid, tmp_path / "grown")
    assert sorted(sizes) == [1, 3, 8]
    assert sweep_numbers(tmp_path / "grown") == sweep_numbers(local_sweep)
    with pytest.raises(RunFolderError, match=r"holds a sweep of 2 repeats.*--repeats 2"):
        sweep.run(base.with_overrides(repeats=1), grid, tmp_path / "grown")
