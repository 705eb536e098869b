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
        experiment_names=[f"kdbench {folder.resolve()}"], output_format="list"
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
    assert {"report.md", "table.csv", "figure.png", "config.json"} <= artifacts
    hard = next(r for r in children if r.info.run_name == "student_hard-r1")
    rec = next(x for x in records if x["role"] == "student_hard" and x["repeat"] == 1)
    assert hard.data.metrics["test_error_pct"] == pytest.approx(100 * rec["test_error"])
    assert hard.data.metrics["train_macs"] == rec["train_macs"]
    history = client.get_metric_history(hard.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([h["val_loss"] for h in rec["history"]])


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
