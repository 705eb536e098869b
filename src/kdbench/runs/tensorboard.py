"""Send finished runs to TensorBoard (`--track tensorboard`; `pip install 'kdbench[tensorboard]'`).

Written from the run folder after the run, as MLflow is (`tracking`): event files under
`KDBENCH_TENSORBOARD_DIR` (default `./tensorboard`), one folder per study named after its run
folder (or `--experiment`), for `tensorboard --logdir tensorboard`:

- `<name>/`: each row's mean test error and each paired difference to hard labels (with its
  Holm p) as scalars, the report as text, and the configuration as hyperparameters (the
  HPARAMS tab compares studies, or a sweep's points, by their settings);
- `<name>/models/<role>/r<repeat>[-m<member>]/`: each trained model's per-epoch training loss,
  validation loss and validation error, and its test error at its last epoch.

A sweep is `<name>/<point>/…` per grid point. Logging a folder again (a resumed run, or
`kdbench track --to tensorboard`) replaces its TensorBoard folder, so curves never double; a
folder kdbench did not write there is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from kdbench.config import flat
from kdbench.errors import ConfigError, TrackingError
from kdbench.records import Record
from kdbench.runs.store import read_records, read_run_config, read_summary

DEFAULT_DIR = "tensorboard"
ENV = "KDBENCH_TENSORBOARD_DIR"
MARK = ".kdbench-tensorboard"  # in every folder kdbench writes, so a re-log may replace it


def check() -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401 (needs tensorboard)
    except ImportError:
        raise ConfigError(
            "--track tensorboard needs TensorBoard: pip install 'kdbench[tensorboard]'"
            " (or tensorboard)"
        ) from None


def where() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT_DIR).resolve()


def _writer(folder: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(folder))


def _model_dir(rec: Record) -> str:
    member = f"-m{rec.member}" if rec.member is not None and rec.role == "ensemble" else ""
    return f"models/{rec.role}/r{rec.repeat}{member}"


def _hparam(value: Any) -> Any:
    """TensorBoard's hyperparameters are numbers, booleans or strings."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return "none" if value is None else json.dumps(value)


def _study(folder: Path, dest: Path, models: bool, hparams: dict[str, Any]) -> None:
    summary = read_summary(folder)
    with _writer(dest) as w:
        # each row's mean: written as scalars by add_hparams, which the HPARAMS tab reads
        metrics = {
            f"test_error_pct/{name}": row.mean_pct
            for name, row in summary.rows.items()
            if row.mean_pct is not None
        }
        for c in summary.comparisons:
            if c.mean_diff_pp is not None and c.b == "student_hard":
                w.add_scalar(f"vs_hard_pp/{c.a}", c.mean_diff_pp, 0)
                if c.p_holm is not None:
                    w.add_scalar(f"p_holm/{c.a}", c.p_holm, 0)
        report = folder / "report.md"
        if report.is_file():
            w.add_text("report", report.read_text(), 0)
        w.add_hparams({k: _hparam(v) for k, v in hparams.items()}, metrics, run_name=".")
    if models:
        for rec in read_records(folder):
            if rec.kind != "model" or not rec.history:
                continue
            with _writer(dest / _model_dir(rec)) as w:
                for entry in rec.history:
                    for key in ("train_loss", "val_loss", "val_error"):
                        if entry.get(key) is not None:
                            w.add_scalar(key, entry[key], entry["epoch"])
                if rec.test_error is not None:
                    w.add_scalar("test_error", rec.test_error, rec.history[-1]["epoch"])
    (dest / MARK).write_text("")


def _replace(name: str, write) -> Path:
    """Write into a fresh folder beside `<dir>/<name>`, then put it in that one's place: a
    re-log replaces what was there (if kdbench wrote it) instead of doubling its curves."""
    base = where()
    dest, tmp = base / name, base / f".{name}.tmp"
    if dest.exists() and not (dest / MARK).is_file():
        raise TrackingError(
            f"{dest} holds files kdbench did not write; pass --experiment NAME or set"
            f" {ENV} to another folder"
        )
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def log_study(folder: Path, experiment_name: str | None = None) -> str:
    """One finished study folder to TensorBoard; returns the folder it wrote."""
    folder = Path(folder)
    config = flat(read_run_config(folder)["config"])
    dest = _replace(experiment_name or folder.resolve().name,
                    lambda d: _study(folder, d, True, config))  # fmt: skip
    return str(dest)


def log_sweep(out: Path, experiment_name: str | None = None) -> str:
    """A finished sweep folder: each grid point's numbers, hyperparameters its point's
    settings (so the HPARAMS tab compares the points)."""
    out = Path(out)
    result = json.loads((out / "sweep.json").read_text())

    def write(dest: Path) -> None:
        for point in result["points"]:
            config = flat(read_run_config(out / point["folder"])["config"])
            settings = {k: _setting(config, k) for k in _axes(result)}
            _study(out / point["folder"], dest / point["label"], False, settings)
        (dest / MARK).write_text("")

    return str(_replace(experiment_name or out.resolve().name, write))


def _axes(result: dict) -> list[str]:
    names = list(result["grid"])
    for point in result.get("extra_points", []):
        names += [k for k in point if k not in names]
    return names


def _setting(config: dict[str, Any], name: str) -> Any:
    """A grid axis (`temperature`) read from a point's flat configuration (`distill.temperature`):
    every point has a value, so the HPARAMS tab's columns are not mixed with a placeholder."""
    return next((v for k, v in config.items() if k.rpartition(".")[2] == name), None)
