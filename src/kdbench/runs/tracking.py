"""Send finished runs to an experiment tracker (`--track mlflow`; `pip install 'kdbench[mlflow]'`).

Logged after the run, from its folder: the folder already holds everything a dashboard shows
(configuration, per-epoch histories, report, figures), so tracking never touches training, a
tracker that is down cannot cost a run, and a finished folder can be logged again later.

Layout: one MLflow experiment per study, named after its folder as you typed it (`kdbench
runs/base`: relative to the working directory where the folder is under it; or `--experiment`);
in it a parent run for the study (the configuration as params; each row's mean and CI, each
paired comparison's difference, intervals and p-values, and the training costs as metrics;
report, tables, every figure as artifacts, and the students' weights under `model/`: their
safetensors checkpoints, any ONNX exports, and config.json, which `kdbench.load` rebuilds them
from) and a child run per trained model (role, repeat, member and seeds as params; test and
validation error, and the per-epoch history as step metrics). A sweep is one parent run with a
child run per grid point. Logging a folder again (a resumed run, or `kdbench track`) updates its
parent run and adds only the models not logged yet. Where: `MLFLOW_TRACKING_URI` if set (a
folder, `file:`, `sqlite:` and the other database stores with the `[mlflow]` extra, or a
server), else the file store `./mlruns` (no server needed).

A tracker that fails never fails the run: the folder is complete before anything is sent, the
failure is one line naming the fix, and `kdbench track RUN_DIR` sends it later.

Live (`--track-live`, MLflow): while the study trains, each stack's epoch means (train loss,
validation loss and error over the members still training, and how many) go to the study's
parent run as step metrics `live.<stack>.<metric>`; the run is then completed from the folder
as above. A tracker failing mid-run stops the live logging with one line, never the training.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

from kdbench.errors import ConfigError, KdbenchError, TrackingError
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
from kdbench.summary import Comparison, Costs, Row

TRACKERS = ("mlflow", "tensorboard")  # tensorboard: `runs.tensorboard`
DEFAULT_STORE = "mlruns"  # under the working directory, as MLflow's own file store default was


def _figures(*stems: str) -> tuple[str, ...]:
    """Every figure is written as .png and .svg."""
    return tuple(f"{stem}.{ext}" for stem in stems for ext in ("png", "svg"))


ARTIFACTS = ("report.md", "table.md", "table.csv", SUMMARY, CONFIG, DIAGNOSIS, RESOURCES,
             *_figures("figure", "tradeoff", "costs"))  # fmt: skip
SWEEP_ARTIFACTS = ("sweep.md", "sweep.json", "sweep-config.json",
                   *_figures("sweep", "teacher_strength"))  # fmt: skip
MODEL = "model"  # the students' weights, under this artifact folder
_BATCH = 900  # MLflow takes at most 1000 metrics per log_batch call


def check(tracker: str | None) -> None:
    """Refuse an unknown tracker, a missing MLflow, or a tracking URI this MLflow cannot
    use, before anything trains."""
    if tracker is None:
        return
    if tracker not in TRACKERS:
        raise ConfigError(f"unknown tracker '{tracker}'; use --track {' or '.join(TRACKERS)}")
    if tracker == "tensorboard":
        from kdbench.runs import tensorboard

        tensorboard.check()
        return
    try:
        import mlflow  # noqa: F401 (only checks that it is installed)
    except ImportError:
        raise ConfigError(
            "--track mlflow needs MLflow: pip install 'kdbench[mlflow]' (or mlflow)"
        ) from None
    uri = where()
    scheme = uri.partition(":")[0].partition("+")[0]
    if scheme in ("sqlite", "postgresql", "mysql", "mssql"):
        try:
            import sqlalchemy  # noqa: F401 (MLflow's database stores need it)
        except ImportError:
            raise ConfigError(
                f"MLFLOW_TRACKING_URI={uri} is a database store, which needs SQLAlchemy"
                " (mlflow-skinny has none): pip install mlflow, or use a folder"
                " (MLFLOW_TRACKING_URI=/path/to/mlruns) or a tracking server (http://...)"
            ) from None


def _is_file_store(uri: str) -> bool:
    """A folder: a file: URI or a plain path (not a scheme such as http:, sqlite: or
    databricks)."""
    if uri.startswith("file:"):
        return True
    return not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", uri) and not uri.startswith("databricks")


def where() -> str:
    """The tracking URI runs go to: MLFLOW_TRACKING_URI, or the file store ./mlruns. A folder
    (a path or file: URI) is MLflow's file store, which MLflow 3 keeps behind
    MLFLOW_ALLOW_FILE_STORE: a folder the user names, or kdbench's default, means that store,
    so kdbench opts in for it."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or Path(DEFAULT_STORE).resolve().as_uri()
    if _is_file_store(uri):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if not uri.startswith("file:"):
            uri = Path(uri).resolve().as_uri()
    return uri


def log(tracker: str, folder: Path, experiment: str | None = None) -> str:
    """A finished run or sweep folder to `tracker` (checked by `check`), any failure of the
    tracker one line (`send`); returns what it made: an MLflow run id, or a TensorBoard
    folder."""
    from kdbench.runs import guard, tensorboard

    guard.unclaimed(Path(folder))  # a run being written (or grown) is not final: not sent
    sweep = (Path(folder) / "sweep-config.json").is_file()
    if tracker == "tensorboard":
        fn = tensorboard.log_sweep if sweep else tensorboard.log_study
    else:
        fn = log_sweep if sweep else log_study
    return send(lambda: fn(folder, experiment_name=experiment), folder, tracker)


def describe(tracker: str, made: str) -> str:
    """The line that says where a run went."""
    if tracker == "tensorboard":
        return f"tensorboard: {made} (tensorboard --logdir {Path(made).parent})"
    return f"mlflow: run {made} at {where()}"


def _first_line(exc: Exception) -> str:
    """A tracker's error in one line: its message's first line, or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def send(log, folder: Path, tracker: str = "mlflow") -> str:
    """Run `log()` (a `log_study` or `log_sweep` of a finished folder); any failure of the
    tracker becomes one line that says the folder is complete and how to send it later."""
    try:
        return log()
    except KdbenchError:
        raise
    except Exception as exc:  # the tracker's, not kdbench's: a server down, a store refused
        first = _first_line(exc)
        from kdbench.runs import tensorboard

        board = tracker == "tensorboard"
        at = f"TensorBoard at {tensorboard.where()}" if board else f"MLflow at {where()}"
        again = f"kdbench track {folder}" + (" --to tensorboard" if board else "")
        raise TrackingError(
            f"{at} refused the run ({type(exc).__name__}: {first[:200]});"
            f" {folder} is complete: fix the tracker, then `{again}`"
        ) from None


# a tracking server that does not answer: MLflow's defaults wait 120 s a request and retry 7
# times with backoff (minutes of silence); yours, where set, win
TIMEOUTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "15", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}


def _client():
    from mlflow.tracking import MlflowClient  # optional extra: imported only when tracking

    for name, value in TIMEOUTS.items():
        os.environ.setdefault(name, value)
    return MlflowClient(tracking_uri=where())


def _folder_id(folder: Path) -> str:
    """A tag value naming the folder that needs no quoting in a search filter (a path may hold
    quotes: "it's" broke the filter string)."""
    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:32]


def experiment_name(folder: Path) -> str:
    """`kdbench runs/base`: the folder relative to the working directory where it is under it
    (an absolute path named the experiment after the machine's layout), else its full path."""
    folder, here = Path(folder).resolve(), Path.cwd().resolve()
    return f"kdbench {folder.relative_to(here) if folder.is_relative_to(here) else folder}"


def _experiment(client, folder: Path, name: str | None = None) -> str:
    name = name or experiment_name(folder)
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _existing(client, experiment: str, folder: Path, parent: str | None):
    """The run this folder was logged to before (as a study, or as a sweep's point), if any."""
    runs = client.search_runs(
        [experiment], filter_string=f"tags.`kdbench.folder_id` = '{_folder_id(folder)}'"
    )
    for run in runs:
        if run.data.tags.get("mlflow.parentRunId") == parent:
            return run
    return None


def _open_run(client, experiment: str, folder: Path, parent: str | None = None):
    """(run id, params already logged, child runs by name) of the folder's run: the one logged
    before, or a new one."""
    tags = {"kdbench.folder": str(folder.resolve()), "kdbench.folder_id": _folder_id(folder)}
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    run = _existing(client, experiment, folder, parent)
    if run is None:
        run = client.create_run(experiment, run_name=folder.name, tags=tags)
        return run.info.run_id, {}, set()
    run_id = run.info.run_id
    children = client.search_runs(
        [experiment], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'"
    )
    return run_id, dict(run.data.params), {c.info.run_name for c in children}


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
    rows = [Metric(k, _rounded(v), stamp, step) for k, v, step in metrics]
    for i in range(0, len(rows), _BATCH):
        client.log_batch(run_id, metrics=rows[i : i + _BATCH])


def _artifacts(client, run_id: str, folder: Path, names: tuple[str, ...]) -> None:
    for name in names:
        if (folder / name).is_file():
            client.log_artifact(run_id, str(folder / name))


def _model(client, run_id: str, folder: Path) -> None:
    """The students under `model/`: every checkpoint but the teachers' (not deployed, and the
    largest), the ONNX exports `kdbench export` made, and config.json to rebuild them
    (`kdbench.load` on a folder holding these). Safetensors and ONNX: no pickle to load."""
    from kdbench.roles import StackName

    teachers = f"{StackName.TEACHERS.file}.safetensors"
    files = [p for p in sorted((folder / "checkpoints").glob("*.safetensors"))
             if p.name != teachers]  # fmt: skip
    for path in files:
        client.log_artifact(run_id, str(path), f"{MODEL}/checkpoints")
    for path in sorted((folder / "exports").glob("*/*.onnx")):
        client.log_artifact(run_id, str(path), f"{MODEL}/exports/{path.parent.name}")
    if files:
        client.log_artifact(run_id, str(folder / CONFIG), MODEL)


def _rounded(value: float) -> float:
    """Metrics without float noise: 6 significant digits; counts (MACs, epochs) exact."""
    value = float(value)
    return value if value.is_integer() else float(f"{value:.6g}")


def _comparison_metrics(comparisons: list[Comparison]) -> list[tuple[str, float, int]]:
    """Each paired comparison a − b: mean difference, both intervals, the p-values."""
    out = []
    for c in comparisons:
        key = f"diff.{c.a}-{c.b}"
        for name, value in (("mean_pp", c.mean_diff_pp), ("p_ttest", c.p_ttest),
                            ("p_wilcoxon", c.p_wilcoxon), ("p_holm", c.p_holm),
                            ("d_z", c.d_z)):  # fmt: skip
            if value is not None:
                out.append((f"{key}.{name}", value, 0))
        for name, ci in (("ci95", c.ci95_pp), ("ci95_holm", c.ci95_holm_pp)):
            if ci is not None:
                out += [(f"{key}.{name}_low_pp", ci[0], 0), (f"{key}.{name}_high_pp", ci[1], 0)]
    return out


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


def _model_name(rec: Record) -> str:
    name = f"{rec.role}-r{rec.repeat}" + ("" if rec.member in (0, None) else f"-m{rec.member}")
    return name + ("-combined" if rec.member is None else "")


def _model_run(client, experiment: str, parent: str, rec: Record) -> None:
    name = _model_name(rec)
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


def log_study(
    folder: Path,
    parent: str | None = None,
    experiment: str | None = None,
    experiment_name: str | None = None,
) -> str:
    """One finished study folder to MLflow; returns the study's run id. Inside a sweep,
    `parent` and `experiment` place it as a child of the sweep's run; `experiment_name` names
    the experiment (default: after the folder). A folder logged before updates its run."""
    folder = Path(folder)
    client = _client()
    experiment = experiment or _experiment(client, folder, experiment_name)
    run_config = read_run_config(folder)
    summary = read_summary(folder)
    run_id, logged, children = _open_run(client, experiment, folder, parent)
    params = {k: v for k, v in _flat(run_config["config"]).items() if k not in logged}
    metrics = _row_metrics(summary.rows) + _comparison_metrics(summary.comparisons)
    _log(client, run_id, params, metrics + _cost_metrics(summary.costs))
    _artifacts(client, run_id, folder, ARTIFACTS)
    if parent is None:  # a sweep's points log their numbers, not every model again
        _model(client, run_id, folder)
        for rec in read_records(folder):
            if _model_name(rec) not in children:
                _model_run(client, experiment, run_id, rec)
    client.set_terminated(run_id)
    return run_id


def log_sweep(out: Path, experiment_name: str | None = None) -> str:
    """A finished sweep folder: one parent run, a child run per grid point."""
    out = Path(out)
    client = _client()
    experiment = _experiment(client, out, experiment_name)
    result = json.loads((out / "sweep.json").read_text())
    run_id, logged, _ = _open_run(client, experiment, out)
    grid = {f"grid.{k}": ",".join(map(str, v)) for k, v in result["grid"].items()}
    _log(client, run_id, {k: v for k, v in grid.items() if k not in logged}, [])
    _artifacts(client, run_id, out, SWEEP_ARTIFACTS)
    for point in result["points"]:
        log_study(out / point["folder"], parent=run_id, experiment=experiment)
    client.set_terminated(run_id)
    return run_id


class Live:
    """Per-epoch logging while the study trains: an observer of the progress bar
    (`progress.Bar.observers`) that sends each epoch's stack means to the folder's parent run
    (the one `log_study` completes after the run)."""

    def __init__(self, folder: Path, experiment: str | None = None):
        self.folder, self.experiment = Path(folder), experiment
        self.client = self.run_id = None
        self.failed = False

    def _open(self) -> None:
        client = _client()
        experiment = _experiment(client, self.folder, self.experiment)
        self.run_id = _open_run(client, experiment, self.folder)[0]
        self.client = client

    def __call__(self, stack: str, epoch: int, active: int, metrics: dict[str, float]) -> None:
        if self.failed:
            return
        from mlflow.entities import Metric

        name = str(stack).replace(" ", "_")
        try:
            if self.client is None:
                self._open()
            values = {**metrics, "active": active}
            rows = [Metric(f"live.{name}.{k}", _rounded(v), 0, epoch) for k, v in values.items()]
            self.client.log_batch(self.run_id, metrics=rows)
        except Exception as exc:  # the tracker's failure: training goes on, said once
            self.failed = True
            print(f"kdbench: note: live tracking stopped ({type(exc).__name__}:"
                  f" {_first_line(exc)[:150]});"
                  " the run goes on and is sent when it ends", file=sys.stderr)  # fmt: skip
