"""`kdbench sweep`: the study over a grid of settings, reusing every teacher it can.

Each grid point is an ordinary run folder (`points/<label>/`: report, diagnose and export work on
it). Points whose settings agree on everything upstream of distillation (data, architectures,
training, repeats, seed) share one folder of teacher and small-network stacks (`shared/<key>/`),
so a temperature x alpha grid trains the teachers, ensembles and hard-label students once per
repeat, not once per point; points that differ only in their teachers still share the small
networks (`shared/small-<key>/`). Interrupted sweeps resume: finished points and stacks are reused.
The plan is `sweep_plan`, where it runs `executors`, its outputs `sweep_report`.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdbench.analysis.controls import control_comparisons_of
from kdbench.analysis.stats import FEW_REPEATS, SIGNIFICANCE, adjusted_interval, holm
from kdbench.config import MAX_STACK, Config
from kdbench.errors import ConfigError, RunFolderError
from kdbench.protocol.run import settle_device
from kdbench.roles import DISTILLED_ROLES as KD
from kdbench.runs import guard
from kdbench.runs.store import atomic_write, read_summary, write_json
from kdbench.settings import settings_sha256
from kdbench.sweeps import strength
from kdbench.sweeps.executors import EXECUTORS, get_executor
from kdbench.sweeps.plan import (
    distil_work,
    parse_grid,
    parse_points,
    points,
    reuse,
    trained_by_point,
)
from kdbench.sweeps.report import heatmap, markdown

SWEEP_CONFIG = "sweep-config.json"
MIN_STAR_REPEATS = 3
__all__ = ["analyse", "parse_grid", "parse_points", "points", "run"]


def _same_sweep(old: dict, spec: dict) -> bool:
    """The grid and stack limit as written; the base settings by what the models depend on, so
    another --threads, or a setting kdbench added since at its default, resumes the sweep; the
    extra points as a superset of those written: a finished sweep grows by new points (and by
    more repeats: the repeat count is not among what a model depends on)."""
    new = json.loads(json.dumps(spec))
    if (old.get("grid"), old.get("max_stack")) != (new["grid"], new["max_stack"]):
        return False
    if any(point not in new["points"] for point in old.get("points", [])):
        return False
    try:
        before = Config.from_dict(old["base"])
    except (ConfigError, KeyError, TypeError):
        return False
    return settings_sha256(before) == settings_sha256(Config.from_dict(new["base"]))


def _check_folder(out: Path, spec: dict) -> None:
    path = out / SWEEP_CONFIG
    if path.is_file():
        old = json.loads(path.read_text())
        if not _same_sweep(old, spec):
            raise RunFolderError(
                f"{out} holds a different sweep (grid, extra points or base settings differ);"
                " give its grid and every --point it has again, or use a new --out"
            )
        held = Config.from_dict(old["base"]).protocol.repeats
        asked = Config.from_dict(spec["base"]).protocol.repeats
        if asked < held:
            raise RunFolderError(
                f"{out} holds a sweep of {held} repeats, more than the {asked} asked for; give"
                f" --repeats {held}, or read it with `kdbench report {out}`"
            )
        if asked == held and json.dumps(old.get("points", [])) == json.dumps(spec["points"]):
            return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, spec)  # a new sweep, or one grown by extra points or more repeats


def run(
    base: Config,
    grid: dict[str, list],
    out: Path,
    executor: str = "local",
    address: str | None = None,
    progress=None,
    reuse_run: Path | None = None,
    max_stack: int = MAX_STACK,
    extra: list[dict] = (),
) -> dict:
    """Train every grid point and every `extra` point (resuming what is done), then analyse and
    write the report."""
    if max_stack < 1:
        raise ConfigError(f"--max-stack must be at least 1 (got {max_stack})")
    if executor not in EXECUTORS:  # refused before the folder is written
        raise ConfigError(f"unknown executor '{executor}'; use {' or '.join(EXECUTORS)}")
    out = Path(out)
    extra = list(extra)
    base = settle_device(base)
    plan = points(base, grid, out, extra)
    with guard.claim(out):  # one writer: a second sweep on this --out is refused
        spec = {"grid": grid, "points": extra, "base": base.to_dict(), "max_stack": max_stack}
        _check_folder(out, spec)
        if reuse_run is not None:
            reuse(reuse_run, plan)
        stacks = distil_work(plan, max_stack)
        trained, summaries = get_executor(executor, address, progress).run(stacks, plan)
        by_label = trained_by_point(stacks, trained)
        entries = [
            {
                "label": p.label,
                "point": p.overrides,
                "folder": str(p.folder.relative_to(out)),
                "summary": summary,
                "trained": by_label[p.label] + (summary.timing.trained_stacks or []),
            }
            for p, summary in zip(plan, summaries, strict=True)
        ]
        result = analyse(grid, entries, extra)
        write(out, result)
    return result


def analyse(grid: dict[str, list], entries: list[dict], extra: list[dict] = ()) -> dict:
    """Each distilled student vs the hard-label student at every point, Holm-adjusted across the
    whole grid and its extra points (2 tests per point); the best point per teacher kind, with
    its CI."""
    tests = []
    for e in entries:
        e["kd_vs_hard"] = {}
        for kind in KD:
            c = e["summary"].comparison(kind, "student_hard")
            e["kd_vs_hard"][kind] = {
                k: getattr(c, k)
                for k in ("mean_diff_pp", "ci95_pp", "p_ttest", "p_wilcoxon", "d_z", "n")
            }
            if c.p_ttest is not None:
                tests.append(e["kd_vs_hard"][kind])
    for t, p in zip(tests, holm([t["p_ttest"] for t in tests]), strict=True):
        t["p_holm_grid"] = p
    for e in entries:
        for kind in KD:
            t = e["kd_vs_hard"][kind]
            t.setdefault("p_holm_grid", None)
            # the interval that agrees with the grid-wide Holm call (`adjusted_interval`)
            t["ci95_holm_grid_pp"] = adjusted_interval(
                t["ci95_pp"], t["n"], t["p_ttest"], t["p_holm_grid"]
            )
            t["significant"] = (  # a star needs at least MIN_STAR_REPEATS pairs
                t["p_holm_grid"] is not None
                and t["p_holm_grid"] < SIGNIFICANCE
                and t["n"] >= MIN_STAR_REPEATS
            )
    best = {}
    for kind in KD:
        done = [e for e in entries if e["summary"].rows[kind].mean_pct is not None]
        if done:
            top = min(done, key=lambda e: e["summary"].rows[kind].mean_pct)
            row = top["summary"].rows[kind]
            # points as good to the precision the table shows (the ensemble's student is the
            # same at every point of a grid over the teacher): the first is not "the best"
            tied = sum(round(e["summary"].rows[kind].mean_pct, 2) == round(row.mean_pct, 2)
                       for e in done)  # fmt: skip
            best[kind] = {
                "label": top["label"],
                "point": top["point"],
                "mean_pct": row.mean_pct,
                "ci95_pct": row.ci95_pct,
                "vs_hard": top["kd_vs_hard"][kind],
                "tied": tied,
                "of": len(done),
            }
    slim = [
        {
            "label": e["label"],
            "point": e["point"],
            "folder": e["folder"],
            "rows": {
                k: {"mean_pct": v.mean_pct, "ci95_pct": v.ci95_pct, "n": v.n}
                for k, v in e["summary"].rows.items()
            },
            "kd_vs_hard": e["kd_vs_hard"],
            "controls": [c.to_json() for c in control_comparisons_of(e["summary"].comparisons)],
            "trained_stacks": e.get("trained", []),
        }
        for e in entries
    ]
    return {
        "few_repeats": any(e["summary"].min_repeats < FEW_REPEATS for e in entries),
        "grid": grid,
        "extra_points": list(extra),
        "points": slim,
        "best": best,
        "significance": SIGNIFICANCE,
        "tests_in_family": len(tests),
    }


def _written(out: Path) -> tuple[dict, dict]:
    """(sweep-config.json, sweep.json) of a finished sweep folder."""
    try:
        spec = json.loads((out / SWEEP_CONFIG).read_text())
        return spec, json.loads((out / "sweep.json").read_text())
    except (OSError, ValueError) as exc:
        raise RunFolderError(
            f"{out} is not a finished sweep ({exc}); run `kdbench sweep` on it to finish it"
        ) from None


def point_folders(out: Path) -> list[Path]:
    """The run folder of every point of a finished sweep, in its order."""
    return [out / p["folder"] for p in _written(out)[1]["points"]]


def rerender(out: Path) -> dict:
    """sweep.json, sweep.md and the figures again from the points' summaries, without training
    (after `kdbench report` re-rendered the points)."""
    spec, before = _written(out)
    entries = [
        {"label": p["label"], "point": p["point"], "folder": p["folder"],
         "summary": read_summary(out / p["folder"]), "trained": p.get("trained_stacks", [])}
        for p in before["points"]
    ]  # fmt: skip
    with guard.claim(out):
        result = analyse(spec["grid"], entries, spec.get("points", []))
        write(out, result)
    return result


def write(out: Path, result: dict) -> None:
    write_json(out / "sweep.json", result)
    heatmap(result, out)
    text = markdown(result)
    if strength.applies(result):  # a sweep over the teacher: its strength curve
        strength.figure(result, out, strength.paper_reference(out, result))
        text += (f"\n## Teacher strength\n\n{strength.crossing(result)}"
                 f" {strength.gap_sentence(result)}\n\n"
                 "![Teacher strength](teacher_strength.png)\n")  # fmt: skip
    atomic_write(out / "sweep.md", text.encode())
