"""`kdbench.sweep` and `kdbench.explain`: what `kdbench sweep` and `kdbench explain` do, from
Python, on the built-in datasets or on your own arrays.

Your arrays are checked once, named in every configuration by their fingerprint, and kept in
each run folder before anything trains (`data.safetensors`), so every part of the work (a Ray
worker too) reads them from its folder, and every folder stays complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdbench.config import MAX_STACK, Config
from kdbench.progress import with_progress
from kdbench.protocol.arrays import data_file, keep_arrays, with_arrays
from kdbench.protocol.presets import VARIANTS, resolve
from kdbench.runs import guard
from kdbench.sweeps import explain as ex
from kdbench.sweeps import sweep as sw

Arrays = tuple[Any, Any, Any, Any]  # x_train, y_train, x_test, y_test


def sweep(
    config: Config | None,
    grid: dict[str, list],
    out: str | Path,
    *,
    arrays: Arrays | None = None,
    executor: str = "local",
    address: str | None = None,
    progress: bool = True,
    reuse: str | Path | None = None,
    max_stack: int = MAX_STACK,
    points: list[dict[str, Any]] | None = None,
) -> dict:
    """The study over `grid` ({"temperature": [2, 5], "alpha": [0.1, 0.5]}) and the extra
    `points` ([{"teacher_arch": "lenet5", "teacher_epochs": 10}]) from `config`, into `out`
    (resumable; a finished sweep grows by new points); `arrays`: your (x_train, y_train,
    x_test, y_test) instead of the configured dataset (or `data=` a file, in `config`).
    Returns sweep.json's content; sweep.md and the figures are in `out`."""
    cfg, out = config or Config(), Path(out)
    grid = {k: list(v) for k, v in grid.items()}
    extra = [dict(p) for p in points or []]
    kept = None
    if arrays is not None:
        cfg, kept = with_arrays(cfg, *arrays)
    elif cfg.data.data is not None:  # --data: read once, kept in every point's folder
        cfg, kept = data_file(cfg)
    if kept is not None:
        plan = sw.points(cfg, grid, out, extra)  # every point validates before anything is written
        with guard.claim(out):
            keep_arrays([p.folder for p in plan], kept, cfg.data.fingerprint)
    reuse_run = Path(reuse) if reuse else None
    return with_progress(not progress, lambda bar: sw.run(
        cfg, grid, out, executor, address, bar, reuse_run, max_stack, extra))  # fmt: skip


def with_data_file(configs: dict[str, Config], out: Path) -> dict[str, Config]:
    """Variants on `--data PATH`: the file read once, its arrays kept in every variant's folder
    before anything trains, each configuration naming them by their fingerprint."""
    first = next(iter(configs.values()), None)
    if first is None or first.data.data is None:
        return configs
    named, kept = data_file(first)
    d = named.data
    same = {"dataset": d.dataset, "data_dir": None, "fingerprint": d.fingerprint,
            "arrays_image": d.arrays_image}  # fmt: skip
    with guard.claim(Path(out)):
        keep_arrays([Path(out) / name for name in configs], kept, d.fingerprint)
    return {name: cfg.with_overrides(**same) for name, cfg in configs.items()}


def explain(
    out: str | Path,
    variants: list[str] | None = None,
    *,
    runs: list[str | Path] | None = None,
    arrays: Arrays | None = None,
    executor: str = "local",
    address: str | None = None,
    progress: bool = True,
    reuse: str | Path | None = None,
    **settings: Any,
) -> Path:
    """The paper's study under each preset in `variants` (default: paper and its variants), at
    the same `settings` (flat, as `Config.with_overrides` takes them: repeats=2, ...;
    data="mine.npz" for a file), and the finished run folders in `runs`, compared in `out`.
    Returns the path of explain.md."""
    out = Path(out)
    folders = [Path(r) for r in runs or []]
    names = list(variants or ([] if folders else VARIANTS))
    kept = None
    if arrays is not None:
        named, kept = with_arrays(Config(), *arrays)  # checked and fingerprinted once
        settings |= {"dataset": named.data.dataset, "data_dir": None,
                     "fingerprint": named.data.fingerprint}  # fmt: skip
    configs = ex.without_twins({name: resolve(name, **settings) for name in names})
    if configs:
        if kept is not None:
            with guard.claim(out):
                keep_arrays([out / name for name in configs], kept, settings["fingerprint"])
        else:
            configs = with_data_file(configs, out)
        reuse_run = Path(reuse) if reuse else None
        done = with_progress(not progress, lambda bar: ex.run_variants(
            configs, out, executor, address, bar, reuse_run))  # fmt: skip
        folders += [v.folder for v in done]
    return ex.write(out, ex.collect(folders))
