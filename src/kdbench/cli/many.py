"""`kdbench explain` and `kdbench sweep`: the commands that run many studies (variants of the
paper's, or a grid of settings) and compare them. Registered on the app in `cli.app`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kdbench.cli.options import (
    ConfigFile,
    Experiment,
    Json,
    Quiet,
    Track,
    friendly,
    result,
    settings_options,
    tracked,
    with_progress,
)
from kdbench.config import MAX_STACK


@friendly
@settings_options()  # every setting reproduce takes, applied to every variant (as --config)
def explain(
    overrides: dict,
    out: Annotated[Path, typer.Option(help="Folder for the variants' runs and explain.md.")],
    variant: Annotated[
        list[str] | None,
        typer.Option(help="A preset to run (repeatable; default: paper and its variants)."),
    ] = None,
    runs: Annotated[
        list[Path] | None,
        typer.Option("--from", help="Read a finished run folder instead (repeatable)."),
    ] = None,
    reuse: Annotated[
        Path | None,
        typer.Option(help="A finished run whose teachers and small networks variants can reuse."),
    ] = None,
    executor: Annotated[str, typer.Option(help="local, or ray (pip install 'kdbench[ray]').")] = (
        "local"
    ),
    address: Annotated[
        str | None, typer.Option(help="Ray cluster: auto or ray://host:port (default: local).")
    ] = None,
    config: ConfigFile = None,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Run the paper's study under each preset (or read finished runs) and compare them.
    Variants that agree upstream of distillation train their teachers once. With --config,
    the file's changes from its preset apply to every variant."""
    from kdbench.cli.config_file import resolve_with
    from kdbench.protocol.presets import VARIANTS
    from kdbench.sweeps import explain as ex
    from kdbench.sweeps.api import with_data_file

    folders = list(runs or [])
    names = list(variant or ([] if folders else VARIANTS))
    # all checked first
    configs = ex.without_twins(
        {name: resolve_with(config, None, overrides, name) for name in names}
    )
    if configs:
        configs = with_data_file(configs, out)
        done = with_progress(
            quiet or executor != "local",
            lambda bar: ex.run_variants(configs, out, executor, address, bar, reuse),
        )
        folders += [v.folder for v in done]
    written = ex.write(out, ex.collect(folders))
    text = written.read_text().split("\n![", 1)[0]
    result(Path(out) / ex.EXPLAIN, text, as_json, (str(written),))


@friendly
@settings_options()  # every setting reproduce takes: the base every point starts from
def sweep(
    overrides: dict,
    out: Annotated[Path, typer.Option(help="Sweep folder (points/, shared/, sweep.md).")],
    grid: Annotated[
        list[str],
        typer.Option(
            help="name=v1,v2,... (repeatable), a setting as its flag is named (learning-rate;"
            " learning_rate works too), e.g. temperature=1,2,4; sizes 100-50 in a list."
        ),
    ],
    point: Annotated[
        list[str] | None,
        typer.Option(
            help='One more point besides the grid, "name=value name=value" (repeatable), e.g.'
            ' --point "teacher_arch=lenet5 teacher_epochs=10"; a finished sweep grows by it.'
        ),
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Settings every point starts from.  [default: paper]")
    ] = None,
    config: ConfigFile = None,
    executor: Annotated[str, typer.Option(help="local, or ray (pip install 'kdbench[ray]').")] = (
        "local"
    ),
    address: Annotated[
        str | None, typer.Option(help="Ray cluster: auto or ray://host:port (default: local).")
    ] = None,
    reuse: Annotated[
        Path | None,
        typer.Option(help="A finished run whose teachers and small networks the grid can reuse."),
    ] = None,
    max_stack: Annotated[
        int,
        typer.Option(
            help="Most distilled students (2 per repeat and point) trained as one stack;"
            " lower it to save memory."
        ),
    ] = MAX_STACK,
    quiet: Quiet = False,
    track: Track = None,
    experiment: Experiment = None,
    as_json: Json = False,
) -> None:
    """The study over a grid of settings; teachers and ensembles are shared between points.
    Its table goes to stdout (--json: sweep.json)."""
    from kdbench.cli.config_file import resolve_with
    from kdbench.runs import tracking
    from kdbench.sweeps import api
    from kdbench.sweeps import sweep as sw

    base = resolve_with(config, preset, overrides)
    parsed, extra = sw.parse_grid(grid), sw.parse_points(point or [])
    sw.points(base, parsed, extra=extra)  # every point validates before anything trains
    tracking.check(track)
    api.sweep(base, parsed, out, executor=executor, address=address,
              progress=not (quiet or executor != "local"), reuse=reuse, max_stack=max_stack,
              points=extra)  # fmt: skip
    tracked(track, out, experiment)
    table = (out / "sweep.md").read_text().split("\n![", 1)[0]  # the table and its findings
    result(out / "sweep.json", table, as_json, (str(out / "sweep.md"),))
