"""`kdbench sweep`: the study over a grid of settings, reusing every teacher it can.

Each grid point is an ordinary run folder (`points/<label>/`: report, diagnose and export work on
it). Points whose settings agree on everything upstream of distillation (data, architectures,
training, repeats, seed) share one folder of teacher and small-network stacks (`shared/<key>/`),
so a temperature x alpha grid trains the teachers, ensembles and hard-label students once per
repeat, not once per point. Interrupted sweeps resume: finished points and stacks are reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

from kdbench.config import MAX_STACK, Config, DistillConfig, flat_index
from kdbench.errors import ConfigError, RunFolderError
from kdbench.stats import SIGNIFICANCE, holm
from kdbench.store import atomic_write, write_json

KD = ("student_from_teacher", "student_from_ensemble")
SWEEP_CONFIG = "sweep-config.json"


def _parse_value(name: str, text: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if isinstance(default, tuple):
            return tuple(int(p) for p in text.split("-"))
        if isinstance(default, float):
            return float(text)
        if isinstance(default, int) or default is None:
            return int(text)
        return text
    except ValueError:
        raise ConfigError(f"--grid {name}: cannot read {text!r} as a value of {name}") from None


def parse_grid(items: list[str]) -> dict[str, list]:
    """`name=v1,v2,...` strings -> {name: [values]}; sizes as 100-50 (e.g. student_hidden)."""
    index = flat_index()
    defaults = {
        f.name: getattr(getattr(Config(), sec), f.name)
        for sec in {*index.values()}
        for f in dataclasses.fields(getattr(Config(), sec))
    }
    grid: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ConfigError(f"--grid takes name=v1,v2,... (got {item!r})")
        if name == "lr":
            name = "learning_rate"
        if name not in index or name in ("dataset", "data_dir", "fingerprint"):
            raise ConfigError(f"--grid: '{name}' is not a setting a sweep can vary")
        if name in grid:
            raise ConfigError(f"--grid {name} is given twice; list all its values once")
        grid[name] = [_parse_value(name, v.strip(), defaults[name]) for v in values.split(",")]
    if not grid:
        raise ConfigError("a sweep needs at least one --grid name=v1,v2,...")
    return grid


def _label(point: dict[str, Any]) -> str:
    def text(v):
        return (
            "-".join(map(str, v))
            if isinstance(v, tuple)
            else f"{v:g}"
            if isinstance(v, float)
            else str(v)
        )

    return "_".join(f"{k}={text(v)}" for k, v in point.items())


def points(base: Config, grid: dict[str, list]) -> list[tuple[str, dict, Config]]:
    """Every grid point: (label, its overrides, its resolved and validated configuration)."""
    out = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        out.append((_label(point), point, base.with_overrides(**point)))
    return out


def upstream_key(cfg: Config) -> str:
    """What the teachers and small networks depend on: everything but the distillation
    settings (and the preset's name, which only labels them)."""
    up = dataclasses.replace(cfg, distill=DistillConfig(), preset="paper", threads=None)
    raw = json.dumps(up.to_dict(), sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _check_folder(out: Path, spec: dict) -> None:
    path = out / SWEEP_CONFIG
    if path.is_file():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(spec)):
            raise RunFolderError(
                f"{out} holds a different sweep (grid or base settings differ); use a new --out"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, spec)


def reuse(run_dir: Path, jobs: list) -> int:
    """Seed the shared folders from a finished run whose upstream settings match (hard links):
    its teachers and small networks then serve every point of that group. Returns how many
    shared folders were seeded."""
    from kdbench.roles import UPSTREAM
    from kdbench.store import RunStore, link

    cfg = Config.from_dict(json.loads((Path(run_dir) / "config.json").read_text())["config"])
    key = upstream_key(cfg)
    seeded = 0
    for shared in {job[4] for job in jobs if Path(job[4]).name == key}:
        for name in UPSTREAM:
            src = RunStore.checkpoint_path(run_dir, name)
            dst = RunStore.checkpoint_path(Path(shared), name)
            if src.is_file() and not dst.is_file():
                RunStore.read_stack(Path(run_dir), name)  # refuses old-format checkpoints
                link(src, dst)
        seeded += 1
    if not seeded:
        raise ConfigError(
            f"{run_dir} does not match any grid point's teachers and small networks"
            " (data, architectures, training, repeats and seed must agree); drop --reuse"
        )
    return seeded


def chunks(jobs: list, max_stack: int = MAX_STACK) -> list[list[int]]:
    """Which points train their distilled students as one stack: those sharing teachers and
    the early-stopping quantity, in plan order, at most `max_stack` students (2 per repeat) a
    stack. Fixed by the plan alone, so a resumed sweep retrains exactly the same stacks."""
    groups: dict[tuple, list[int]] = {}
    per: dict[tuple, int] = {}
    for i, (_, _, cfg_dict, _, shared) in enumerate(jobs):
        cfg = Config.from_dict(cfg_dict)
        key = (shared, cfg.distill.kd_monitor)
        groups.setdefault(key, []).append(i)
        per[key] = max(1, max_stack // (2 * cfg.protocol.repeats))
    return [
        members[j : j + per[key]]
        for key, members in groups.items()
        for j in range(0, len(members), per[key])
    ]


def _run_chunk(cfg_dicts: list[dict], folders: list[str], shared: str, progress=None) -> list:
    """One stack of distilled students (and the shared teachers if missing): a Ray task."""
    from kdbench.run import distil_points

    cfgs = [Config.from_dict(c) for c in cfg_dicts]
    return distil_points(cfgs, [Path(f) for f in folders], Path(shared), progress)


def _run_point(cfg_dict: dict, folder: str, shared: str, progress=None) -> dict:
    """One grid point's run folder, its stacks already trained: load, diagnose, report."""
    from kdbench.run import reproduce

    _, summary = reproduce(
        Config.from_dict(cfg_dict), Path(folder), progress, False, shared=Path(shared)
    )
    return summary


def run(
    base: Config,
    grid: dict[str, list],
    out: Path,
    executor: str = "local",
    address: str | None = None,
    progress=None,
    reuse_run: Path | None = None,
    max_stack: int = MAX_STACK,
) -> dict:
    """Train every grid point (resuming what is done), then analyse and write the report."""
    if max_stack < 1:
        raise ConfigError(f"--max-stack must be at least 1 (got {max_stack})")
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor '{executor}'; use local or ray")
    out = Path(out)
    plan = points(base, grid)
    _check_folder(out, {"grid": grid, "base": base.to_dict(), "max_stack": max_stack})
    jobs = [
        (
            label,
            point,
            cfg.to_dict(),
            str(out / "points" / label),
            str(out / "shared" / upstream_key(cfg)),
        )
        for label, point, cfg in plan
    ]
    if reuse_run is not None:
        reuse(reuse_run, jobs)
    stacks = chunks(jobs, max_stack)
    if executor == "local":
        trained = [_run_chunk(*_chunk_args(jobs, chunk), progress) for chunk in stacks]
        summaries = [_run_point(*job[2:], progress) for job in jobs]
    else:
        trained, summaries = _run_ray(jobs, stacks, address)
    by_point = {
        i: t
        for chunk, got in zip(stacks, trained, strict=True)
        for i, t in zip(chunk, got, strict=True)
    }
    entries = [
        {
            "label": label,
            "point": point,
            "folder": folder,
            "summary": summary,
            "trained": by_point[i] + summary.get("timing", {}).get("trained_stacks", []),
        }
        for i, ((label, point, _, folder, _), summary) in enumerate(
            zip(jobs, summaries, strict=True)
        )
    ]
    result = analyse(grid, entries)
    write(out, grid, result)
    return result


def _chunk_args(jobs: list, chunk: list[int]) -> tuple[list, list, str]:
    return [jobs[i][2] for i in chunk], [jobs[i][3] for i in chunk], jobs[chunk[0]][4]


def _run_ray(jobs: list, stacks: list[list[int]], address: str | None) -> tuple[list, list]:
    """Stacks as Ray tasks, in two waves: the first stack of each shared folder (it trains the
    teachers and small networks), then every other stack in parallel (they only distil); then
    each point's report as a task of its own."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'kdbench[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    chunk_task, point_task = ray.remote(_run_chunk), ray.remote(_run_point)
    first: dict[str, int] = {}
    for n, chunk in enumerate(stacks):
        first.setdefault(jobs[chunk[0]][4], n)
    trained: dict[int, list] = {}
    for wave in (
        sorted(first.values()),
        [n for n in range(len(stacks)) if n not in first.values()],
    ):
        refs = {n: chunk_task.remote(*_chunk_args(jobs, stacks[n])) for n in wave}
        trained.update({n: ray.get(ref) for n, ref in refs.items()})
    summaries = ray.get([point_task.remote(*job[2:]) for job in jobs])
    return [trained[n] for n in range(len(stacks))], summaries


def analyse(grid: dict[str, list], entries: list[dict]) -> dict:
    """Each distilled student vs the hard-label student at every point, Holm-adjusted across the
    whole grid (2 tests per point); the best point per teacher kind, with its CI."""
    tests = []
    for e in entries:
        comps = {(c["a"], c["b"]): c for c in e["summary"]["comparisons"]}
        e["kd_vs_hard"] = {}
        for kind in KD:
            c = comps[(kind, "student_hard")]
            e["kd_vs_hard"][kind] = {
                k: c[k] for k in ("mean_diff", "ci95", "p_ttest", "p_wilcoxon", "d_z", "n")
            }
            if c["p_ttest"] is not None:
                tests.append(e["kd_vs_hard"][kind])
    for t, p in zip(tests, holm([t["p_ttest"] for t in tests]), strict=True):
        t["p_holm_grid"] = p
    for e in entries:
        for kind in KD:
            t = e["kd_vs_hard"][kind]
            t.setdefault("p_holm_grid", None)
            t["significant"] = t["p_holm_grid"] is not None and t["p_holm_grid"] < SIGNIFICANCE
    best = {}
    for kind in KD:
        done = [e for e in entries if e["summary"]["rows"][kind]["mean"] is not None]
        if done:
            top = min(done, key=lambda e: e["summary"]["rows"][kind]["mean"])
            row = top["summary"]["rows"][kind]
            best[kind] = {
                "label": top["label"],
                "point": top["point"],
                "mean": row["mean"],
                "ci95": row["ci95"],
                "vs_hard": top["kd_vs_hard"][kind],
            }
    slim = [
        {
            "label": e["label"],
            "point": e["point"],
            "folder": e["folder"],
            "rows": {
                k: {x: v[x] for x in ("mean", "ci95", "n")} for k, v in e["summary"]["rows"].items()
            },
            "kd_vs_hard": e["kd_vs_hard"],
            "trained_stacks": e.get("trained", []),
        }
        for e in entries
    ]
    return {
        "grid": grid,
        "points": slim,
        "best": best,
        "significance": SIGNIFICANCE,
        "tests_in_family": len(tests),
    }


def _cell(row: dict) -> str:
    if row["mean"] is None:
        return "–"
    ci = row["ci95"]
    return f"{100 * row['mean']:.2f}%" + (f" ({100 * ci[0]:.2f}–{100 * ci[1]:.2f})" if ci else "")


def _delta(t: dict) -> str:
    if t["mean_diff"] is None:
        return "–"
    p = t["p_holm_grid"]
    return f"{t['mean_diff']:+.2f}{'*' if t['significant'] else ''}" + (
        f" (p {p:.3g})" if p is not None else ""
    )


def markdown(result: dict) -> str:
    keys = list(result["grid"])
    head = "| " + " | ".join(keys) + " | Student ← teacher | Student ← ensemble | Hard labels |"
    head += " Δ teacher-KD (pp) | Δ ensemble-KD (pp) |"
    lines = [head, "|" + " --- |" * (len(keys) + 5)]
    for p in result["points"]:
        vals = [str(p["point"][k]) for k in keys]
        rows = p["rows"]
        cells = [
            _cell(rows["student_from_teacher"]),
            _cell(rows["student_from_ensemble"]),
            _cell(rows["student_hard"]),
        ]
        deltas = [_delta(p["kd_vs_hard"][k]) for k in KD]
        lines.append("| " + " | ".join([*vals, *cells, *deltas]) + " |")
    best = []
    for kind, b in result["best"].items():
        t = b["vs_hard"]
        ci = t["ci95"]
        spread = f", 95% CI {ci[0]:+.2f} to {ci[1]:+.2f}" if ci else ""
        sig = "significant" if t["significant"] else "not significant"
        best.append(
            f"- Best {kind.replace('_', ' ')}: {b['label']} — {_cell(b)} test error;"
            f" vs hard labels {t['mean_diff']:+.2f} pp{spread} ({sig} after Holm over the grid)."
        )
    return (
        "# kdbench sweep\n\n"
        + "\n".join(lines)
        + f"\n\nTest error, mean (95% CI). Δ = distilled − hard-label student in percentage points,"
        f" paired by repeat; * Holm-adjusted p < {result['significance']} across all"
        f" {result['tests_in_family']} tests of the grid.\n\n"
        + "\n".join(best)
        + "\n\n![Sweep heatmap](sweep.png)\n"
    )


def heatmap(result: dict, folder: Path) -> None:
    """Mean error and difference to hard labels over the first two grid axes, per teacher kind;
    significant cells marked. Other axes (if any) are averaged over."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from kdbench.report import save_figure

    keys = list(result["grid"])
    xk = keys[0]
    yk = keys[1] if len(keys) > 1 else None
    xs = result["grid"][xk]
    ys = result["grid"][yk] if yk else [None]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=110, squeeze=False)
    for col, kind in enumerate(KD):
        for row, what in enumerate(("error", "delta")):
            grid = np.full((len(ys), len(xs)), np.nan)
            sig = np.zeros_like(grid, dtype=bool)
            for j, yv in enumerate(ys):
                for i, xv in enumerate(xs):
                    pts = [
                        p
                        for p in result["points"]
                        if p["point"][xk] == xv and (yk is None or p["point"][yk] == yv)
                    ]
                    if what == "error":
                        vals = [p["rows"][kind]["mean"] for p in pts if p["rows"][kind]["mean"]]
                        vals = [100 * v for v in vals]
                    else:
                        vals = [
                            p["kd_vs_hard"][kind]["mean_diff"]
                            for p in pts
                            if p["kd_vs_hard"][kind]["mean_diff"] is not None
                        ]
                        sig[j, i] = any(p["kd_vs_hard"][kind]["significant"] for p in pts)
                    if vals:
                        grid[j, i] = sum(vals) / len(vals)
            ax = axes[row][col]
            if what == "delta":
                lim = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
                im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")

                def ink(v, lim=lim):  # white on the strong colours, black on the pale ones
                    return "white" if abs(v) > 0.6 * lim else "black"
            else:
                im = ax.imshow(grid, cmap="viridis", aspect="auto")

                def ink(v):
                    return "white"

            for j in range(len(ys)):
                for i in range(len(xs)):
                    if np.isfinite(grid[j, i]):
                        mark = "*" if sig[j, i] else ""
                        ax.text(
                            i,
                            j,
                            f"{grid[j, i]:.2f}{mark}",
                            ha="center",
                            va="center",
                            fontsize=8,
                            color=ink(grid[j, i]),
                        )
            ax.set_xticks(range(len(xs)), [str(v) for v in xs])
            ax.set_yticks(range(len(ys)), [str(v) for v in ys] if yk else [""])
            ax.set_xlabel(xk)
            if yk:
                ax.set_ylabel(yk)
            title = kind.replace("_", " ")
            ax.set_title(
                f"{title}: test error (%)"
                if what == "error"
                else f"{title} − hard labels (pp), * significant"
            )
            fig.colorbar(im, ax=ax)
    fig.tight_layout()
    save_figure(fig, folder, "sweep")


def write(out: Path, grid: dict, result: dict) -> None:
    write_json(out / "sweep.json", result)
    heatmap(result, out)
    atomic_write(out / "sweep.md", markdown(result).encode())
