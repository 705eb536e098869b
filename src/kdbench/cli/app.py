"""Command line: parses options, calls the library, prints. No logic of its own.

kdbench reproduce                       # the paper's study on bundled MNIST
kdbench reproduce --train-limit 2000 --repeats 2 --members 3 --epochs 2   # a quick look
kdbench report runs/<name>              # re-render the outputs from records.jsonl
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown

from kdbench.cli.options import (
    ConfigFile,
    Experiment,
    Json,
    PresetName,
    Quiet,
    Track,
    result,
    settings_options,
    tracked,
    with_progress,
)
from kdbench.cli.options import friendly as _friendly
from kdbench.errors import ConfigError, KdbenchError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    # plain help, as git, pip and ruff print it: flags read as flags (Typer's Rich panels label
    # every boolean option, --help included, with a `<bool>` value it does not take)
    rich_markup_mode=None,
    help="kdbench: should a small network be trained on hard labels, or distilled from a larger"
    " teacher or an ensemble? The paper's MNIST study reproduced, with intervals, tests, sizes,"
    " latencies and the settings that change the answer.",
)


def _version(value: bool) -> None:
    if value:
        from kdbench.version import __version__

        print(f"kdbench {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """kdbench: hard labels vs knowledge distillation, measured."""


@app.command()
@_friendly
@settings_options()
def reproduce(
    overrides: dict,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<timestamp>).")] = None,
    preset: PresetName = None,
    config: ConfigFile = None,
    quiet: Quiet = False,
    latency: Annotated[
        bool, typer.Option(help="Measure size and latency of each model kind at the end.")
    ] = True,
    track: Track = None,
    experiment: Experiment = None,
    track_live: Annotated[
        bool,
        typer.Option(
            "--track-live",
            help="With --track mlflow: also log each stack's epoch means while it trains.",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Run the paper's study: teacher, ensemble, distilled students, hard-label student. The
    table, the folder and the answer go to stdout (--json: summary.json), progress to
    stderr."""
    from kdbench.cli.config_file import resolve_with
    from kdbench.runs import tracking

    if config is None and preset is None and out is not None and _is_run(out):
        config = out / "config.json"  # resume or grow: the folder's settings, then the flags
    cfg = resolve_with(config, preset, overrides)
    tracking.check(track)
    if track_live and track != "mlflow":
        raise ConfigError("--track-live logs to MLflow while the study trains: add --track mlflow")
    # after the settings are checked: torch loads slowly
    from kdbench.protocol.run import default_out
    from kdbench.protocol.run import reproduce as run

    start = time.perf_counter()
    out = out or default_out()
    observers = (tracking.Live(out, experiment),) if track_live else ()
    folder, summary = with_progress(
        quiet, lambda bar: run(cfg, out, bar, measure_latency=latency), observers
    )
    tracked(track, folder, experiment)
    from kdbench.analysis.report import answer_line

    where = f"{folder}  ({time.perf_counter() - start:.0f} s) → {folder / 'report.md'}"
    answer = answer_line(summary, cfg.to_dict()).replace("**", "").strip()
    result(folder / "summary.json", (folder / "table.md").read_text(), as_json, (where, answer))


def _is_run(folder: Path) -> bool:
    """A kdbench run folder (its marker and its settings): `reproduce --out` it again with only
    the flags that change (`--repeats N` grows it)."""
    return (folder / ".kdbench").exists() and (folder / "config.json").is_file()


config_app = typer.Typer(help="Settings as a file: print them, to edit and pass to --config.")
app.add_typer(config_app, name="config")


@config_app.command("show")
@_friendly
@settings_options()
def config_show(overrides: dict, preset: PresetName = None, config: ConfigFile = None) -> None:
    """Print the resolved configuration as TOML (preset, then --config, then flags)."""
    from kdbench.cli.config_file import resolve_with, to_toml

    sys.stdout.write(to_toml(resolve_with(config, preset, overrides)))


@app.command()
@_friendly
def track(
    run_dir: Annotated[Path, typer.Argument(help="A finished run or sweep folder.")],
    experiment: Experiment = None,
    to: Annotated[
        str, typer.Option(help="mlflow (MLFLOW_TRACKING_URI or ./mlruns) or tensorboard.")
    ] = "mlflow",
) -> None:
    """Send a finished run (or sweep) to MLflow or TensorBoard; a folder sent before updates
    its run (MLflow) or replaces its folder (TensorBoard)."""
    from kdbench.runs import tracking
    from kdbench.sweeps.sweep import SWEEP_CONFIG

    tracking.check(to)
    if not (run_dir / SWEEP_CONFIG).is_file():
        _read_run_config(run_dir)  # a clear line for a folder that is not a run
    tracked(to, run_dir, experiment)


@app.command()
@_friendly
def decide(
    folders: Annotated[
        list[Path] | None, typer.Argument(help="Finished run or sweep folders, one row each.")
    ] = None,
    readme: Annotated[
        Path | None,
        typer.Option(help="Rewrite this file's decision-table blocks from the folders they name."),
    ] = None,
) -> None:
    """The decision table: for each run (and sweep point), every strategy against hard labels,
    its Holm-adjusted CI and its training cost."""
    from kdbench.analysis import decision

    if readme is not None:
        n = decision.update_readme(readme)
        print(f"{readme}: {n} decision table{'s' if n > 1 else ''} rewritten")
    elif folders:
        print(decision.table(folders))
    else:
        raise typer.BadParameter("give run or sweep folders, or --readme docs/guide.md")


@app.command()
def presets() -> None:
    """List the named presets and what each changes."""
    from kdbench.protocol.presets import PRESETS

    for p in PRESETS.values():
        changes = ", ".join(f"{k}={v}" for k, v in p.overrides.items()) or "(defaults)"
        print(f"{p.name:<20} {p.summary}\n{'':<20} {changes}")


TrustCode = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="Import the architecture the run folder names as package.module:Factory (code:"
        " review it first). Without it, what needs that code is skipped or refused.",
    ),
]


def _trusted(run_dir: Path, trust_code: bool) -> None:
    """With --trust-code, consent to the code the folder names (and a sweep's or explain's)."""
    if not trust_code:
        return
    from kdbench.engine.own_code import code_settings, trust
    from kdbench.runs.store import read_config

    configs = [p.parent for p in Path(run_dir).glob("**/config.json")]
    for folder in configs:
        try:
            found = read_config(folder)
        except KdbenchError:
            continue
        trust(*code_settings(found))


def _read_run_config(run_dir: Path) -> dict:
    """A study folder's config.json; a sweep folder is refused, saying where to look."""
    from kdbench.errors import RunFolderError
    from kdbench.runs.store import read_run_config  # torch loads slowly: import only when needed

    if (run_dir / "sweep-config.json").is_file():
        raise RunFolderError(
            f"{run_dir} is a sweep folder: read {run_dir / 'sweep.md'}, or give one of its"
            f" points, e.g. {run_dir / 'points' / '<label>'}"
        )
    return read_run_config(run_dir)


def _family(run_config: dict, role: str):
    """The architecture of `role`'s models, built for reading."""
    from kdbench.config import Config
    from kdbench.roles import STACK_OF_ROLE, Role
    from kdbench.runs.checks import stack_model

    return stack_model(Config.from_dict(run_config["config"]), STACK_OF_ROLE[Role(role)])


def _test_set(run_config: dict, run_dir: Path):
    from kdbench.config import Config
    from kdbench.protocol.arrays import splits_of

    return splits_of(Config.from_dict(run_config["config"]), run_dir)


def _diagnosis(run_dir: Path, run_config: dict, records: list) -> dict:
    from kdbench.analysis import diagnose
    from kdbench.config import Config
    from kdbench.errors import DataError

    cfg = Config.from_dict(run_config["config"])
    try:
        splits = _test_set(run_config, run_dir)
    except DataError:
        splits = None  # the record checks still run
    return diagnose.write_diagnosis(run_dir, records, cfg, splits)


@app.command()
@_friendly
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder, or a sweep or explain folder (all its runs).")
    ],
    measure: Annotated[
        bool, typer.Option("--measure", help="(Re)measure size and latency from checkpoints.")
    ] = False,
    trust_code: TrustCode = False,
) -> None:
    """Re-render summary, table, figure and report from records.jsonl, without training; on a
    sweep or explain folder, every run in it and then its table and figures."""
    from kdbench.sweeps import explain as ex
    from kdbench.sweeps import sweep

    _trusted(run_dir, trust_code)
    if (run_dir / sweep.SWEEP_CONFIG).is_file():
        for folder in sweep.point_folders(run_dir):
            _report_run(folder, measure)
        sweep.rerender(run_dir)
        print(run_dir / "sweep.md")
    elif (run_dir / ex.EXPLAIN).is_file():
        folders = ex.variant_folders(run_dir)
        for folder in folders:
            _report_run(folder, measure)
        print(ex.write(run_dir, ex.collect(folders)))
    else:
        print(_report_run(run_dir, measure))


def _report_run(run_dir: Path, measure: bool) -> Path:
    from kdbench.analysis import report as rep
    from kdbench.errors import RunFolderError
    from kdbench.runs import guard, latency
    from kdbench.runs.store import RESOURCES, read_records, read_timing, write_json
    from kdbench.summary import Timing

    run_config = _read_run_config(run_dir)
    with guard.claim(run_dir):  # it rewrites the folder's outputs: one writer
        records = read_records(run_dir)
        if not records:
            raise RunFolderError(f"{run_dir} has no records yet: nothing to report")
        timing = read_timing(run_dir) or Timing(total_seconds=sum(r.seconds or 0 for r in records))
        resources_path = run_dir / RESOURCES
        if measure:
            from kdbench.analysis import costs

            x = _test_set(run_config, run_dir).x_test[:256]
            measured = latency.measure_rows(run_dir, run_config["config"], x)
            own = run_config["config"]["model"].get("own_teacher") is not None
            measured["training"] = costs.build(records, own).to_json()  # what training cost
            write_json(resources_path, measured)
        resources = json.loads(resources_path.read_text()) if resources_path.is_file() else None
        found = _diagnosis(run_dir, run_config, records)
        rep.render(run_dir, records, run_config, timing, resources, found)
    return run_dir / "report.md"


@app.command()
@_friendly
def diagnose(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")], trust_code: TrustCode = False
) -> None:
    """Check a run for the known pitfalls of distillation, each with the flag that tests it."""
    from kdbench.analysis import diagnose as diag
    from kdbench.errors import RunFolderError
    from kdbench.runs import guard
    from kdbench.runs.store import read_records

    run_config = _read_run_config(run_dir)
    _trusted(run_dir, trust_code)
    with guard.claim(run_dir):  # it writes diagnose.json: one writer
        records = read_records(run_dir)
        if not records:
            raise RunFolderError(f"{run_dir} has no records yet: nothing to diagnose")
        found = _diagnosis(run_dir, run_config, records)
    text = diag.markdown(found)
    console = Console()
    if console.is_terminal:  # rendered for the terminal; plain Markdown into files and pipes
        console.print(Markdown(text))
    else:
        print(text, end="")


@app.command("export")
@_friendly
def export_model(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    role: Annotated[str, typer.Option(help="teacher, ensemble, student_from_teacher, ...")] = (
        "student_from_ensemble"
    ),
    repeat: Annotated[int, typer.Option(help="Which repeat's model.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="Also write a dynamic int8 model.")] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output file (default RUN_DIR/exports/ROLE-rREPEAT/; MODEL_CARD.md beside it)."
        ),
    ] = None,
    trust_code: TrustCode = False,
) -> None:
    """Export one model to ONNX (metadata, MODEL_CARD.md beside it), checked against PyTorch."""
    from kdbench.runs import export, guard
    from kdbench.runs.store import load_members, write_json

    if fmt != "onnx":
        raise ConfigError(f"unknown export format '{fmt}'; only onnx is supported")
    run_config = _read_run_config(run_dir)
    _trusted(run_dir, trust_code)
    path = out or run_dir / "exports" / f"{role}-r{repeat}" / f"{role}-r{repeat}.onnx"
    inside = path.absolute().is_relative_to(run_dir.absolute())
    if inside:
        guard.no_links_inside(run_dir.absolute(), path.absolute())
    # into the run folder: as its one writer; elsewhere: only if nobody is writing the run
    with guard.claim(run_dir) if inside else contextlib.nullcontext(guard.unclaimed(run_dir)):
        members = load_members(run_dir, role, repeat)  # a wrong role or repeat fails first
        family = _family(run_config, role)
        splits = _test_set(run_config, run_dir)
        info = export.export(run_dir, role, repeat, members, path, splits, family, int8)
        write_json(path.with_suffix(".json"), info)
    for key, value in info.items():  # error rates in percent, as every table shows them
        shown = f"{100 * value:.2f}%" if key.startswith("test_error") else value
        print(f"{key}: {shown}")


from kdbench.cli import many  # noqa: E402  (sweep and explain, on this app)

app.command()(many.explain)
app.command()(many.sweep)


def main() -> None:
    app()
