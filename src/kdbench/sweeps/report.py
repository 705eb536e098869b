"""A sweep's outputs: `sweep.md` (table, best points) and the heatmap `sweep.png`/`.svg`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdbench.analysis import controls
from kdbench.analysis.figures import save_figure
from kdbench.analysis.stats import FEW_REPEATS_NOTE
from kdbench.roles import DISTILLED_ROLES as KD
from kdbench.summary import Comparison


def _cell(row: dict) -> str:
    if row["mean_pct"] is None:
        return "–"
    ci = row["ci95_pct"]
    return f"{row['mean_pct']:.2f}%" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")


def _delta(t: dict) -> str:
    if t["mean_diff_pp"] is None:
        return "–"
    p = t["p_holm_grid"]
    return f"{t['mean_diff_pp']:+.2f}{'*' if t['significant'] else ''}" + (
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
        ci = t.get("ci95_holm_grid_pp", t["ci95_pp"])
        name = "Holm-adjusted 95% CI" if "ci95_holm_grid_pp" in t else "95% CI"
        spread = f", {name} {ci[0]:+.2f} to {ci[1]:+.2f}" if ci else ""
        sig = "significant" if t["significant"] else "not significant"
        best.append(
            f"- Best {kind.replace('_', ' ')}: {b['label']} — {_cell(b)} test error;"
            f" vs hard labels {t['mean_diff_pp']:+.2f} pp{spread} ({sig} after Holm over the grid)."
        )
    return (
        "# kdbench sweep\n\n"
        + "\n".join(lines)
        + f"\n\nTest error, mean (95% CI). Δ = distilled − hard-label student in percentage points,"
        f" paired by repeat; * Holm-adjusted p < {result['significance']} across all"
        f" {result['tests_in_family']} tests of the grid.\n\n"
        + (
            f"**{FEW_REPEATS_NOTE}** Stars need at least 3 repeats.\n\n"
            if result.get("few_repeats")
            else ""
        )
        + "\n".join(best)
        + "\n\n![Sweep heatmap](sweep.png)\n"
        + _controls(result)
    )


def _controls(result: dict) -> str:
    """The points' controls (sweeps over a run with `--controls`), each point's own Holm."""
    labelled = [(p["label"], [Comparison(**c) for c in p.get("controls", [])])
                for p in result["points"]]  # fmt: skip
    section = controls.markdown(labelled, "Point")
    return f"\n{section}" if section else ""


def _cells(result: dict, kind: str, what: str, xs, ys, xk: str, yk: str | None):
    """(values, significant) on the y × x grid for one teacher kind: mean test error (`error`)
    or mean difference to hard labels (`delta`); points sharing a cell are averaged."""
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
                vals = [p["rows"][kind]["mean_pct"] for p in pts]
            else:
                vals = [p["kd_vs_hard"][kind]["mean_diff_pp"] for p in pts]
                sig[j, i] = any(p["kd_vs_hard"][kind]["significant"] for p in pts)
            vals = [v for v in vals if v is not None]
            if vals:
                grid[j, i] = sum(vals) / len(vals)
    return grid, sig


def _panel(fig, ax, grid, sig, what: str) -> None:
    """One heatmap with its values written in (white on strong colours, black on pale)."""
    if what == "delta":
        lim = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
        im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")

        def ink(v):
            return "white" if abs(v) > 0.6 * lim else "black"
    else:
        im = ax.imshow(grid, cmap="viridis", aspect="auto")

        def ink(v):
            return "white"

    for j, i in zip(*np.nonzero(np.isfinite(grid)), strict=True):
        text = f"{grid[j, i]:.2f}{'*' if sig[j, i] else ''}"
        ax.text(i, j, text, ha="center", va="center", fontsize=8, color=ink(grid[j, i]))
    fig.colorbar(im, ax=ax)


def heatmap(result: dict, folder: Path) -> None:
    """Mean error and difference to hard labels over the first two grid axes, per teacher kind;
    significant cells marked. Other axes (if any) are averaged over."""
    import matplotlib  # loads slowly: imported when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(result["grid"])
    xk = keys[0]
    yk = keys[1] if len(keys) > 1 else None
    xs = result["grid"][xk]
    ys = result["grid"][yk] if yk else [None]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=110, squeeze=False)
    for col, kind in enumerate(KD):
        for row, what in enumerate(("error", "delta")):
            ax = axes[row][col]
            _panel(fig, ax, *_cells(result, kind, what, xs, ys, xk, yk), what)
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
    fig.tight_layout()
    save_figure(fig, folder, "sweep")
