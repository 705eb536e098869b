"""Send finished runs to an experiment tracker (`--track mlflow`; `pip install 'kdbench[mlflow]'`).

Logged after the run, from its folder: the folder already holds everything a dashboard shows
(configuration, per-epoch histories, report, figures), so tracking never touches training, a
tracker that is down cannot cost a run, and a finished folder can be logged again later.

Layout: one MLflow experiment per study, named after its folder; in it a parent run for the study
(the configuration as params, each row's mean and CI as metrics, report, tables and figures as
artifacts) and a child run per trained model (role, repeat, member and seeds as params; test and
validation error, and the per-epoch history as step metrics). A sweep is one parent run with a
child run per grid point. Where: `MLFLOW_TRACKING_URI` if set, else the file store `./mlruns`
(no server needed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kdbench.errors import ConfigError
from kdbench.records import Record
from kdbench.runs.store import (
    CONFIG,
    DIAGNOSIS,
    RESOURCES,
    SUMMARY,
    read_records,
    read_run_config,
    read_summary,
)
from kdbench.summary import Costs, Row

TRACKERS = ("mlflow",)
DEFAULT_STORE = "mlruns"  # under the working directory, as MLflow's own file store default was
ARTIFACTS = (
    "report.md", "table.md", "table.csv", SUMMARY, CONFIG, DIAGNOSIS,
    RESOURCES, "figure.png", "figure.svg", "tradeoff.png", "tradeoff.svg",
)  # fmt: skip
SWEEP_ARTIFACTS = ("sweep.md", "sweep.json", "sweep-config.json", "sweep.png", "sweep.svg")
_BATCH = 900  # MLflow takes at most 1000 metrics per log_batch call


def check(tracker: str | None) -> None:
    """Refuse an unknown tracker, or a missing MLflow, before anything trains."""
    if tracker is None:
        return
    if tracker not in TRACKERS:
        raise ConfigError(f"unknown tracker '{tracker}'; use --track {' or '.join(TRACKERS)}")
    try:
        import mlflow  # noqa: F401 (only checks that it is installed)
    except ImportError:
        raise ConfigError(
            "--track mlflow needs MLflow: pip install 'kdbench[mlflow]' (or mlflow)"
        ) from None


def where() -> str:
    """The tracking URI runs go to: MLFLOW_TRACKING_URI, or the file store ./mlruns."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    # MLflow 3 keeps its file store in maintenance mode behind this switch; it is what a tracker
    # without a server means, so kdbench opts in only for its own default
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return Path(DEFAULT_STORE).resolve().as_uri()


def _client():
    from mlflow.tracking import MlflowClient  # optional extra: imported only when tracking

    return MlflowClient(tracking_uri=where())


def _experiment(client, folder: Path) -> str:
    name = f"kdbench {folder.resolve()}"
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _flat(obj: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            text = "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            out[f"{prefix}{key}"] = text
    return out


def _log(client, run_id: str, params: dict[str, str], metrics: list[tuple[str, float, int]]):
    from mlflow.entities import Metric, Param

    stamp = 0  # one fixed timestamp: the history is ordered by step, not by logging time
    params_list = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(params_list), 100):
        client.log_batch(run_id, params=params_list[i : i + 100])
    rows = [Metric(k, float(v), stamp, step) for k, v, step in metrics]
    for i in range(0, len(rows), _BATCH):
        client.log_batch(run_id, metrics=rows[i : i + _BATCH])


def _artifacts(client, run_id: str, folder: Path, names: tuple[str, ...]) -> None:
    for name in names:
        if (folder / name).is_file():
            client.log_artifact(run_id, str(folder / name))


def _row_metrics(rows: dict[str, Row]) -> list[tuple[str, float, int]]:
    out = []
    for role, row in rows.items():
        if row.mean_pct is None:
            continue
        out.append((f"{role}.test_error_pct", row.mean_pct, 0))
        if row.ci95_pct is not None:
            out += [(f"{role}.ci95_low_pct", row.ci95_pct[0], 0),
                    (f"{role}.ci95_high_pct", row.ci95_pct[1], 0)]  # fmt: skip
    return out


def _cost_metrics(costs: Costs | None) -> list[tuple[str, float, int]]:
    """Each strategy's training cost (MACs, seconds; the amortised figures; × hard labels)."""
    out = []
    if costs is None or costs.missing:
        return out
    keys = ("macs", "seconds", "amortised_macs", "amortised_seconds", "macs_vs_hard",
            "amortised_vs_hard", "energy_joules")  # fmt: skip
    for s in costs.strategies:
        out += [(f"cost.{s.strategy}.{k}", getattr(s, k), 0) for k in keys
                if getattr(s, k) is not None]  # fmt: skip
    out += [(f"cost.peak_memory_bytes.{k.replace(' ', '_')}", v, 0)
            for k, v in costs.peak_memory_bytes.items()]  # fmt: skip
    return out


def _model_run(client, experiment: str, parent: str, rec: Record) -> None:
    name = f"{rec.role}-r{rec.repeat}" + ("" if rec.member in (0, None) else f"-m{rec.member}")
    if rec.member is None:
        name += "-combined"
    run = client.create_run(experiment, run_name=name, tags={"mlflow.parentRunId": parent})
    params = {
        "role": str(rec.role), "repeat": str(rec.repeat), "member": str(rec.member),
        "kind": rec.kind, "seed": str(rec.seed), "shuffle_seed": str(rec.shuffle_seed),
    }  # fmt: skip
    metrics = [
        ("test_error_pct", 100 * rec.test_error, 0),
        ("val_error_pct", 100 * rec.val_error, 0),
    ]
    for key in ("epochs", "train_macs", "target_macs", "seconds"):
        if getattr(rec, key) is not None:
            metrics.append((key, getattr(rec, key), 0))
    for epoch, entry in enumerate(rec.history or [], start=1):
        metrics += [(key, value, epoch) for key, value in entry.items() if value is not None]
    _log(client, run.info.run_id, params, metrics)
    client.set_terminated(run.info.run_id)


def log_study(folder: Path, parent: str | None = None, experiment: str | None = None) -> str:
    """One finished study folder to MLflow; returns the study's run id. Inside a sweep,
    `parent` and `experiment` place it as a child of the sweep's run."""
    folder = Path(folder)
    client = _client()
    experiment = experiment or _experiment(client, folder)
    run_config = read_run_config(folder)
    summary = read_summary(folder)
    tags = {"kdbench.folder": str(folder.resolve())}
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment, run_name=folder.name, tags=tags)
    run_id = run.info.run_id
    params = _flat(run_config["config"])
    _log(client, run_id, params, _row_metrics(summary.rows) + _cost_metrics(summary.costs))
    _artifacts(client, run_id, folder, ARTIFACTS)
    if parent is None:  # a sweep's points log their numbers, not every model again
        for rec in read_records(folder):
            _model_run(client, experiment, run_id, rec)
    client.set_terminated(run_id)
    return run_id


def log_sweep(out: Path) -> str:
    """A finished sweep folder: one parent run, a child run per grid point."""
    out = Path(out)
    client = _client()
    experiment = _experiment(client, out)
    result = json.loads((out / "sweep.json").read_text())
    run = client.create_run(
        experiment, run_name=out.name, tags={"kdbench.folder": str(out.resolve())}
    )
    run_id = run.info.run_id
    _log(
        client, run_id, {f"grid.{k}": ",".join(map(str, v)) for k, v in result["grid"].items()}, []
    )
    _artifacts(client, run_id, out, SWEEP_ARTIFACTS)
    for point in result["points"]:
        log_study(out / point["folder"], parent=run_id, experiment=experiment)
    client.set_terminated(run_id)
    return run_id
