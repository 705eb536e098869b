"""Does the paper's finding survive its unstated choices? The study under each preset, side by side.

`kdbench explain` runs the `paper` preset and its variants at the same settings (each into its own
resumable run folder) or reads finished run folders, then writes one table and one forest plot:
every variant's five rows with CIs, and whether it reproduces the paper's pattern (both distilled
students worse than the hard-label student), reverses it (both better) or neither.

Variants are planned like a sweep's points: those that agree on everything upstream of
distillation share one folder of teachers, ensemble members and hard-label students (trained
once), and they run on the same executors (local or Ray).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.analysis import controls
from kdbench.analysis.figures import repeats_text, save_figure
from kdbench.analysis.palette import colour
from kdbench.analysis.paper import PAPER_TABLE1, comparable_to_paper
from kdbench.analysis.stats import FEW_REPEATS, FEW_REPEATS_NOTE, SIGNIFICANCE
from kdbench.config import Config, flat_index
from kdbench.errors import RunFolderError
from kdbench.protocol.presets import PRESETS
from kdbench.protocol.run import settle_device
from kdbench.roles import DISTILLED_ROLES as KD
from kdbench.roles import ROWS, Role
from kdbench.runs import guard
from kdbench.runs.store import atomic_write, read_config, read_summary, write_json
from kdbench.settings import config_diff, settings_sha256
from kdbench.summary import Comparison, Row, Summary
from kdbench.sweeps.executors import get_executor
from kdbench.sweeps.plan import Point, distil_work, reuse, trained_by_point, upstream_key

EXPLAIN = "explain.json"
# the paper's own differences (distilled − hard-label student, pp), from its Table 1
PAPER_DIFFS = {k: PAPER_TABLE1[k] - PAPER_TABLE1[Role.STUDENT_HARD] for k in KD}


def distinct(configs: dict[str, Config]) -> tuple[dict[str, Config], dict[str, str]]:
    """The variants that differ in what they train (the first of equal ones kept), and for each
    one left out, the variant it equals: under --epochs, restore-best, watch-error and
    hard-monitor change only early stopping, which is off, so they would be `paper` again."""
    kept: dict[str, Config] = {}
    same: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name, cfg in configs.items():
        key = settings_sha256(_effective(cfg))
        if key in seen:
            same[name] = seen[key]
        else:
            seen[key] = name
            kept[name] = cfg
    return kept, same


def without_twins(configs: dict[str, Config]) -> dict[str, Config]:
    """`distinct`, saying on stderr which variants it leaves out and why."""
    kept, same = distinct(configs)
    for name, twin in same.items():
        print(f"kdbench explain: skipping {name}: with these settings it trains exactly what"
              f" {twin} trains (it changes only what they turn off)", file=sys.stderr)  # fmt: skip
    return kept


def _effective(cfg: Config) -> Config:
    """The settings with those that cannot act put back to their defaults: under fixed epochs
    nothing stops early (patience and the cap are inert), and without restore-best the
    monitors only label the best epoch, they choose no weights."""
    t = cfg.train
    if t.epochs is None:
        return cfg
    default = Config()
    reset = {"patience": default.train.patience, "max_epochs": default.train.max_epochs}
    if not t.restore_best:
        reset |= {"monitor": default.train.monitor, "kd_monitor": default.distill.kd_monitor}
    return cfg.with_overrides(**reset)


def plan(configs: dict[str, Config], out: Path) -> list[Point]:
    """One run folder per variant (`out/<name>`); shared upstream folders under `out/shared`."""
    return [
        Point(name, {"preset": cfg.preset}, cfg, out / name, out / "shared" / upstream_key(cfg))
        for name, cfg in configs.items()
    ]


@dataclass(frozen=True)
class VariantRun:
    folder: Path
    trained: list[str]  # the stacks this call trained for it (shared ones counted once)


def run_variants(
    configs: dict[str, Config],
    out: Path,
    executor: str = "local",
    address: str | None = None,
    progress=None,
    reuse_run: Path | None = None,
) -> list[VariantRun]:
    """Train (or resume) every variant, sharing what they share."""
    configs = {name: settle_device(cfg) for name, cfg in configs.items()}
    points = plan(configs, Path(out))
    with guard.claim(Path(out)):  # one writer: a second explain on this --out is refused
        if reuse_run is not None:
            reuse(reuse_run, points)
        stacks = distil_work(points)
        trained, _ = get_executor(executor, address, progress).run(stacks, points)
    by_name = trained_by_point(stacks, trained)
    return [VariantRun(p.folder, by_name[p.label]) for p in points]


def preset_and_summary(folder: Path) -> tuple[str, Summary]:
    """(preset name, summary) of a finished run folder."""
    guard.unclaimed(Path(folder))  # a run being written has no final summary yet
    summary = read_summary(folder)
    return read_config(folder).preset, summary


def pattern(comparisons: list[Comparison]) -> dict[str, Any]:
    """How each distilled student compares with the hard-label student, and the overall pattern."""
    found = {}
    for c in comparisons:
        if c.a in KD and c.b == "student_hard":
            significant = c.p_holm is not None and c.p_holm < SIGNIFICANCE
            found[c.a] = {
                "mean_diff_pp": c.mean_diff_pp,
                "ci95_pp": c.ci95_pp,
                "ci95_holm_pp": c.ci95_holm_pp,
                "p_holm": c.p_holm,
                "significant": significant,
            }
    diffs = [
        found[k]["mean_diff_pp"] for k in KD if found.get(k, {}).get("mean_diff_pp") is not None
    ]
    sure = len(diffs) == 2 and all(found[k]["significant"] for k in KD)
    if len(diffs) < 2:
        verdict = "incomplete"
    elif all(d > 0 for d in diffs):
        verdict = "reproduces" if sure else "same direction, not significant"
    elif all(d < 0 for d in diffs):
        verdict = "reverses" if sure else "reversed direction, not significant"
    else:
        verdict = "mixed"
    return {"pattern": verdict, "kd_vs_hard": found}


def _pct(row: Row) -> str:
    if row.mean_pct is None:
        return "–"
    ci = row.ci95_pct
    spread = f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else ""
    return f"{row.mean_pct:.2f}%{spread}"


def markdown(entries: list[dict], warnings: tuple[str, ...] = ()) -> str:
    few = any(e["summary"].min_repeats < FEW_REPEATS for e in entries)
    head = (
        "| Variant | Teacher | Student ← teacher | Ensemble | Student ← ensemble |"
        " Hard-label student | Δ teacher-KD (pp) | Δ ensemble-KD (pp) | Paper's pattern |"
    )
    lines = [head, "|" + " --- |" * 9]
    for e in entries:
        rows = e["summary"].rows
        deltas = []
        for k in KD:
            d = e["kd_vs_hard"].get(k, {})
            if d.get("mean_diff_pp") is None:
                deltas.append("–")
            else:
                star = "*" if d["significant"] else ""
                deltas.append(f"{d['mean_diff_pp']:+.2f}{star}")
        cells = [_pct(rows[name]) for name in ROWS]
        lines.append(f"| {e['variant']} | " + " | ".join([*cells, *deltas, e["pattern"]]) + " |")
    return (
        "# kdbench explain — the paper's study under its unstated choices\n\n"
        + "\n".join(lines)
        + "\n\n![Forest plot](explain.png)\n\nTest error, mean (95% CI)."
        " Δ = distilled student − hard-label student, paired by"
        f" repeat; * Holm-adjusted p < {SIGNIFICANCE} within that variant. *Reproduces*: both"
        " distilled students significantly worse than the hard-label student, as the paper"
        " found; *reverses*: both significantly better.\n"
        + (f"\n**{FEW_REPEATS_NOTE}**\n" if few else "")
        + "".join(
            f"\n**Warning: settings differ beyond the presets:** {w}. The rows do not isolate"
            " the presets' effect.\n"
            for w in warnings
        )
        + _controls(entries)
    )


def _controls(entries: list[dict]) -> str:
    """The variants' controls (runs trained with `--controls`), each variant's own Holm."""
    labelled = [(e["variant"], e["summary"].comparisons) for e in entries]
    section = controls.markdown(labelled, "Variant")
    return f"\n{section}" if section else ""


def _beyond_preset(cfg: Config) -> dict:
    """A run's settings with its preset's own overrides put back to their defaults: what must
    agree between runs for their comparison to isolate the presets."""
    default = Config()
    reset = {}
    for name in PRESETS[cfg.preset].overrides if cfg.preset in PRESETS else ():
        section = flat_index()[name]
        reset[name] = getattr(getattr(default, section), name)
    raw = cfg.with_overrides(**reset).to_dict()
    for label_only in ("preset", "threads", "device"):
        del raw[label_only]
    return raw


def differences(folders: list[Path]) -> list[str]:
    """For each run whose settings differ from the first run's beyond their presets, one line
    naming the folder and the settings."""
    neutral = [_beyond_preset(read_config(f)) for f in folders]
    out = []
    for folder, raw in zip(folders[1:], neutral[1:], strict=True):
        diff = config_diff(neutral[0], raw)
        if diff:
            out.append(f"{folder} differs from {folders[0]} in {', '.join(diff)}")
    return out


def collect(folders: list[Path]) -> list[dict]:
    """Each finished run, labelled by its preset, and by its folder too where that differs or
    two runs share a preset (so no two rows read the same)."""
    found = [(Path(folder), *preset_and_summary(folder)) for folder in folders]
    presets = [name for _, name, _ in found]
    entries = []
    for folder, name, summary in found:
        label = name
        if folder.name != name or presets.count(name) > 1:
            label = f"{name} ({folder.name})"
        entries.append({"variant": label, "preset": name, "folder": str(folder),
                        "summary": summary, **pattern(summary.comparisons)})  # fmt: skip
    return entries


def write(out: Path, entries: list[dict]) -> Path:
    """explain.json, explain.md and the forest plot; runs whose settings differ beyond their
    presets are named on stderr and in explain.md."""
    with guard.claim(Path(out)):
        return _write(Path(out), entries)


def variant_folders(out: Path) -> list[Path]:
    """The run folders an explain folder compared, in its order: inside `out` where they are
    there (explain.json names those relative to it), else as written."""
    try:
        variants = json.loads((out / EXPLAIN).read_text())["variants"]
    except (OSError, ValueError, KeyError) as exc:
        raise RunFolderError(
            f"{out / EXPLAIN} cannot be read ({exc}); rerun kdbench explain"
        ) from None
    inside = [out / v["folder"] for v in variants]
    return [f if f.is_dir() else Path(v["folder"]) for f, v in zip(inside, variants, strict=True)]


def _relative(folder: str, out: Path) -> str:
    """A variant's folder as explain.json names it: relative to the explain folder when inside
    it, so a committed explain folder reads the same wherever it is cloned."""
    try:
        return str(Path(folder).resolve().relative_to(out.resolve()))
    except ValueError:
        return folder


def _write(out: Path, entries: list[dict]) -> Path:
    warnings = tuple(differences([Path(e["folder"]) for e in entries]))
    for w in warnings:
        print(f"kdbench explain: warning: {w}", file=sys.stderr)
    slim = [
        {k: v for k, v in e.items() if k != "summary"}
        | {"folder": _relative(e["folder"], out)}
        | {"rows": {name: row.to_json() for name, row in e["summary"].rows.items()}}
        for e in entries
    ]
    write_json(out / EXPLAIN, {"variants": slim, "warnings": list(warnings)})
    # the paper's differences are a reference only where its Table 1 is (`comparable_to_paper`)
    paper = all(comparable_to_paper(read_config(Path(e["folder"])).to_dict()) for e in entries)
    forest(entries, out, paper, repeats_text(e["summary"].min_repeats for e in entries))
    atomic_write(out / "explain.md", markdown(entries, warnings).encode())
    return out / "explain.md"


def forest(entries: list[dict], folder: Path, paper: bool = True, repeats: str = "") -> None:
    """explain.png/.svg: per variant and comparison, the mean paired difference (distilled −
    hard-label student, pp) with its Holm-adjusted 95% CI; filled where Holm-significant; the
    paper's own differences as reference lines where `paper` (its Table 1 a fair reference)."""
    import matplotlib  # loads slowly: imported when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {
        "student_from_teacher": f"Student from the {'large network' if paper else 'teacher'}"
        " − hard-label student",
        "student_from_ensemble": "Student from the ensemble − hard-label student",
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.2 + 0.5 * len(entries)), sharey=True)
    ys = list(range(len(entries)))[::-1]
    for ax, kind in zip(axes, KD, strict=True):
        for y, e in zip(ys, entries, strict=True):
            d = e["kd_vs_hard"].get(kind, {})
            if d.get("mean_diff_pp") is None:
                continue
            ci = d.get("ci95_holm_pp") or d["ci95_pp"]  # agrees with the filled/hollow call
            if ci:
                ax.plot(ci, [y, y], color="0.3", lw=1.5)
            ax.plot(d["mean_diff_pp"], y, "o", color=colour(kind),
                    mfc=None if d["significant"] else "white", ms=7)  # fmt: skip
        ax.axvline(0, color="0.6", lw=0.8)
        if paper:
            ax.axvline(PAPER_DIFFS[kind], color="0.35", ls="--", lw=1.2,
                       label=f"paper: {PAPER_DIFFS[kind]:+.2f} pp")  # fmt: skip
        ax.set_title(titles[kind], fontsize=10)
        ax.set_xlabel("difference in test error (pp); right = distillation hurts")
        if paper:
            ax.legend(loc="lower right", fontsize=8, frameon=False)
    axes[0].set_yticks(ys, [e["variant"] for e in entries])
    axes[0].set_ylim(-0.7, len(entries) - 0.3)
    fig.suptitle(
        "Mean paired difference, Holm-adjusted 95% CI; filled: Holm-significant, hollow: not"
        + (f" · {repeats}" if repeats else ""),
        fontsize=9,
    )
    save_figure(fig, folder, "explain")
