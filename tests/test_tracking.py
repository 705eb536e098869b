"""`--track mlflow`: a study and a sweep logged to MLflow's local store, read back with
`mlflow.search_runs`, against the run folder's own records."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from kdbench.cli.app import app
from kdbench.errors import ConfigError
from kdbench.runs import tracking

mlflow = pytest.importorskip("mlflow")

SMALL = ["--dataset", "digits", "--repeats", "2", "--members", "2", "--epochs", "2",
         "--threads", "1", "--quiet"]  # fmt: skip


def _runs(folder):
    return mlflow.search_runs(
        experiment_names=[tracking.experiment_name(folder)], output_format="list"
    )


def test_a_study_is_one_parent_run_with_a_child_per_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(
        app, ["reproduce", *SMALL, "--no-latency", "--out", "run", "--track", "mlflow"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mlruns").is_dir()  # the default: the file store under the working dir
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    runs = _runs(tmp_path / "run")
    records = [
        json.loads(x) for x in (tmp_path / "run" / "records.jsonl").read_text().split("\n") if x
    ]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == len(records)
    parent = parents[0]
    assert parent.data.params["distill.temperature"] == "10.0"
    assert parent.data.params["protocol.repeats"] == "2"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    mean = summary["rows"]["student_hard"]["mean_pct"]
    assert parent.data.metrics["student_hard.test_error_pct"] == pytest.approx(mean)
    ensemble = next(s for s in summary["costs"]["strategies"] if s["strategy"] == "from_ensemble")
    assert parent.data.metrics["cost.from_ensemble.macs"] == pytest.approx(ensemble["macs"])
    assert parent.data.metrics["cost.from_ensemble.macs_vs_hard"] == pytest.approx(
        ensemble["macs_vs_hard"]
    )
    client = mlflow.tracking.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "table.csv", "figure.png", "costs.png", "config.json"} <= artifacts
    # the students' weights (safetensors: no pickle), not the teachers'; named relative to here
    model = {a.path for a in client.list_artifacts(parent.info.run_id, "model/checkpoints")}
    assert model == {"model/checkpoints/distilled_students.safetensors",
                     "model/checkpoints/small_networks.safetensors"}  # fmt: skip
    assert tracking.experiment_name(tmp_path / "run") == "kdbench run"
    hard = next(r for r in children if r.info.run_name == "student_hard-r1")
    rec = next(x for x in records if x["role"] == "student_hard" and x["repeat"] == 1)
    assert hard.data.metrics["test_error_pct"] == pytest.approx(100 * rec["test_error"], rel=1e-5)
    assert hard.data.metrics["train_macs"] == rec["train_macs"]
    history = client.get_metric_history(hard.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    want = [h["val_loss"] for h in rec["history"]]
    assert [m.value for m in history] == pytest.approx(want, rel=1e-5)  # rounded to 6 digits


def test_a_sweep_is_a_parent_run_with_a_child_per_point(tmp_path, monkeypatch):
    store = tmp_path / "elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())  # the user's choice is used
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    args = ["sweep", *SMALL, "--grid", "temperature=2,4", "--out", str(tmp_path / "sw")]
    result = CliRunner().invoke(app, [*args, "--track", "mlflow"])
    assert result.exit_code == 0, result.output
    mlflow.set_tracking_uri(store.as_uri())
    runs = _runs(tmp_path / "sw")
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and parent[0].data.params["grid.temperature"] == "2.0,4.0"
    points = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert sorted(p.data.params["distill.temperature"] for p in points) == ["2.0", "4.0"]


def test_without_mlflow_the_flag_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'kdbench\[mlflow\]'"):
        tracking.check("mlflow")
    with pytest.raises(ConfigError, match="unknown tracker 'wandb'"):
        tracking.check("wandb")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished small study, not yet tracked."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    result = CliRunner().invoke(app, ["reproduce", *SMALL, "--no-latency", "--out", str(folder)])
    assert result.exit_code == 0, result.output
    return folder


def test_a_folder_uri_works_and_tracking_again_updates_the_same_run(
    tmp_path, monkeypatch, finished
):
    store = tmp_path / "some" / "folder"  # a plain path: MLflow 3's file store, opted into
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(store))
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    for _ in range(2):  # the second time (a resumed run, or `track` again) updates the first
        result = CliRunner().invoke(app, ["track", str(finished), "--experiment", "my study"])
        assert result.exit_code == 0, result.output
    mlflow.set_tracking_uri(store.resolve().as_uri())
    runs = mlflow.search_runs(experiment_names=["my study"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    records = (finished / "records.jsonl").read_text().strip().splitlines()
    assert len(parents) == 1 and len(runs) == 1 + len(records)
    metrics = parents[0].data.metrics
    summary = json.loads((finished / "summary.json").read_text())
    c = next(c for c in summary["comparisons"] if c["a"] == "student_from_ensemble"
             and c["b"] == "student_hard")  # fmt: skip
    key = "diff.student_from_ensemble-student_hard"
    assert metrics[f"{key}.mean_pp"] == pytest.approx(c["mean_diff_pp"])
    assert metrics[f"{key}.p_holm"] == pytest.approx(c["p_holm"], rel=1e-5)
    assert metrics[f"{key}.ci95_holm_low_pp"] == pytest.approx(c["ci95_holm_pp"][0])
    fractions = [v for v in metrics.values() if not float(v).is_integer()]
    assert fractions and all(v == float(f"{v:.6g}") for v in fractions)  # rounded, no noise


def test_a_database_uri_without_sqlalchemy_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)  # as with mlflow-skinny alone
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = tmp_path / "run"
    args = ["reproduce", *SMALL, "--no-latency", "--out", str(out), "--track", "mlflow"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "needs SQLAlchemy" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_the_mlflow_extra_logs_to_a_sqlite_store(tmp_path, monkeypatch, finished):
    """The `[mlflow]` extra could not use `sqlite:` (no SQLAlchemy or Alembic)."""
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = CliRunner().invoke(app, ["track", str(finished), "--experiment", "in a database"])
    assert result.exit_code == 0, result.output
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["in a database"], output_format="list")
    records = (finished / "records.jsonl").read_text().strip().splitlines()
    assert len(runs) == 1 + len(records)


def test_a_tracker_failing_after_the_run_is_one_line_and_track_sends_it_later(
    tmp_path, monkeypatch, finished
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())

    def down():
        raise ConnectionError("tracking server unreachable\nwith a long trace")

    monkeypatch.setattr(tracking, "_client", down)
    result = CliRunner().invoke(app, ["track", str(finished)])
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "ConnectionError" in line
    assert "is complete" in line and f"kdbench track {finished}" in line
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    result = CliRunner().invoke(app, ["track", str(finished)])
    assert result.exit_code == 0, result.output
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    assert _runs(finished)


def test_a_quote_in_the_folder_path_and_a_folder_being_written(tmp_path, monkeypatch, finished):
    """A path holding a quote used to break MLflow's search filter (each `track` then made a
    new run); a folder another process is writing is refused, not sent half-done."""
    import shutil
    import subprocess

    folder = tmp_path / "it's here" / "run"
    shutil.copytree(finished, folder)
    store = tmp_path / "store"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(store))
    for _ in range(2):
        result = CliRunner().invoke(app, ["track", str(folder), "--experiment", "quoted"])
        assert result.exit_code == 0, result.output
    mlflow.set_tracking_uri(store.resolve().as_uri())
    runs = mlflow.search_runs(experiment_names=["quoted"], output_format="list")
    assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 1
    hold = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY);"
        " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(folder)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(app, ["track", str(folder), "--experiment", "quoted"])
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert result.exit_code == 2 and "is being written" in result.output, result.output


def test_a_server_that_never_answers_is_one_line_within_the_timeout(monkeypatch, finished):
    """A tracking server that accepts the connection and then says nothing: MLflow's own
    defaults would wait 120 s a request, seven times; kdbench's (`tracking.TIMEOUTS`) bound it,
    and a user's own setting wins. Here the user's 1 s and no retry: one line, in seconds."""
    import socket
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # connections queue in the kernel; nothing ever reads or answers them
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        start = time.perf_counter()
        result = CliRunner().invoke(app, ["track", str(finished)])
        took = time.perf_counter() - start
    finally:
        server.close()
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "refused the run" in line and "is complete" in line
    assert took < 15, took
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    monkeypatch.setattr(tracking, "where", lambda: "http://127.0.0.1:9")  # not contacted
    tracking._client()  # unset: kdbench's bounds, not MLflow's minutes
    assert {k: __import__("os").environ[k] for k in tracking.TIMEOUTS} == tracking.TIMEOUTS


def test_live_tracking_logs_each_epoch_while_training_into_the_same_run(tmp_path, monkeypatch):
    """`--track-live`: each stack's epoch means reach MLflow as the study trains (the history
    of the teachers is there before the students train), in the parent run the finished
    folder then completes: one parent, not two."""
    from kdbench.runs import tracking as tr

    seen_while_training = []
    original = tr.Live.__call__

    def spy(self, stack, epoch, active, metrics):
        original(self, stack, epoch, active, metrics)
        if stack == "distilled students" and epoch == 1:  # the teachers' history is sent by now
            history = self.client.get_metric_history(self.run_id, "live.teachers.val_loss")
            seen_while_training.append([m.step for m in history])

    monkeypatch.setattr(tr.Live, "__call__", spy)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ["reproduce", *SMALL, "--no-latency", "--out", "run", "--track", "mlflow",
            "--track-live"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen_while_training == [[1, 2]]
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    parents = [r for r in _runs(tmp_path / "run") if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    client = mlflow.tracking.MlflowClient()
    lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    teachers = [r for r in records if r["role"] == "teacher"]
    history = client.get_metric_history(parents[0].info.run_id, "live.teachers.val_loss")
    want = [sum(r["history"][e]["val_loss"] for r in teachers) / len(teachers) for e in (0, 1)]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(want, 1e-5)
    assert "student_hard.test_error_pct" in parents[0].data.metrics  # then completed
    bad = CliRunner().invoke(app, ["reproduce", *SMALL, "--out", "x", "--track-live"])
    assert bad.exit_code == 2 and "add --track mlflow" in bad.stderr
