"""A sweep's outputs: `sweep.md` (table, best points) and the heatmap `sweep.png`/`.svg`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kdbench.analysis import controls
from kdbench.analysis.figures import repeats_text, save_figure
from kdbench.analysis.palette import colour
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


def axes(result: dict) -> list[str]:
    """The settings a sweep varies: its grid's, then those only its extra points set."""
    keys = list(result["grid"])
    for point in result.get("extra_points", []):
        keys += [k for k in point if k not in keys]
    return keys


def grid_only(result: dict) -> dict:
    """The sweep without its extra points: what its heatmap or line plot draws."""
    extra = result.get("extra_points", [])
    return {**result, "points": [p for p in result["points"] if p["point"] not in extra]}


def markdown(result: dict) -> str:
    keys = axes(result)
    head = "| " + " | ".join(keys) + " | Student ← teacher | Student ← ensemble | Hard labels |"
    head += " Δ teacher-KD (pp) | Δ ensemble-KD (pp) |"
    lines = [head, "|" + " --- |" * (len(keys) + 5)]
    for p in result["points"]:
        vals = [str(p["point"].get(k, "base")).replace("None", "none") for k in keys]
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
        tied, of = b.get("tied", 1), b.get("of")
        where = b["label"] if tied == 1 else (
            f"every point ties (e.g. {b['label']})" if tied == of
            else f"{b['label']} and {tied - 1} other point{'s' if tied > 2 else ''}, tied"
        )  # fmt: skip
        best.append(
            f"- Best {kind.replace('_', ' ')}: {where} — {_cell(b)} test error;"
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
        + _extra_note(result)
        + "\n\n![Sweep heatmap](sweep.png)\n"
        + _controls(result)
    )


def _extra_note(result: dict) -> str:
    n = len(result.get("extra_points", []))
    if not n:
        return ""
    what = f"The {n} extra points (`--point`) are" if n > 1 else "The extra point (`--point`) is"
    return (f"\n\n\"base\" = the sweep's base setting. {what} in this table and the Holm"
            " family; the figure below draws the grid's points only.")  # fmt: skip


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


def _panel(fig, ax, grid, sig, what: str, lim: tuple[float, float]) -> None:
    """One heatmap with its values written in (white on strong colours, black on pale), on
    the colour scale `lim` its quantity shares across panels."""
    if what == "delta":
        im = ax.imshow(grid, cmap="RdBu_r", vmin=lim[0], vmax=lim[1], aspect="auto")

        def ink(v):
            return "white" if abs(v) > 0.6 * lim[1] else "black"
    else:
        im = ax.imshow(grid, cmap="viridis", vmin=lim[0], vmax=lim[1], aspect="auto")

        def ink(v):
            return "white" if v < lim[0] + 0.6 * (lim[1] - lim[0]) else "black"

    for j, i in zip(*np.nonzero(np.isfinite(grid)), strict=True):
        text = f"{grid[j, i]:.2f}{'*' if sig[j, i] else ''}"
        ax.text(i, j, text, ha="center", va="center", fontsize=8, color=ink(grid[j, i]))
    fig.colorbar(im, ax=ax)


def _shared_limits(cells: dict) -> dict[str, tuple[float, float]]:
    """One colour scale per quantity over both teacher kinds: errors from their smallest to
    their largest, differences symmetric about 0."""
    out = {}
    for what in ("error", "delta"):
        values = np.concatenate([g.ravel() for (k, w), (g, _) in cells.items() if w == what])
        values = values[np.isfinite(values)]
        if what == "delta":
            lim = float(np.abs(values).max()) if values.size else 1.0
            out[what] = (-(lim or 1.0), lim or 1.0)
        else:
            lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
            out[what] = (lo, hi if hi > lo else lo + 1e-3)
    return out


TITLES = {"error": "{kind}: test error (%)",
          "delta": "{kind} − hard labels (pp); * Holm-significant"}  # fmt: skip


def heatmap(result: dict, folder: Path) -> None:
    """sweep.png/.svg. Over two or more axes: mean error and difference to hard labels over
    the first two, per teacher kind, significant cells marked, one colour scale per quantity
    (other axes averaged over). Over one axis: `line_plot` instead."""
    import matplotlib  # loads slowly: imported when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = grid_only(result)
    keys = list(result["grid"])
    if len(keys) == 1:
        return line_plot(result, folder)
    xk, yk = keys[0], keys[1]
    xs, ys = result["grid"][xk], result["grid"][yk]
    cells = {(kind, what): _cells(result, kind, what, xs, ys, xk, yk)
             for kind in KD for what in ("error", "delta")}  # fmt: skip
    limits = _shared_limits(cells)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=110, squeeze=False)
    for col, kind in enumerate(KD):
        for row, what in enumerate(("error", "delta")):
            ax = axes[row][col]
            _panel(fig, ax, *cells[(kind, what)], what, limits[what])
            ax.set_xticks(range(len(xs)), [str(v) for v in xs])
            ax.set_yticks(range(len(ys)), [str(v) for v in ys])
            ax.set_xlabel(xk)
            ax.set_ylabel(yk)
            ax.set_title(TITLES[what].format(kind=kind.replace("_", " ")), fontsize=9)
    fig.suptitle(point_repeats(result), fontsize=9)
    fig.tight_layout()
    save_figure(fig, folder, "sweep")


def point_repeats(result: dict) -> str:
    """The repeats the points' intervals rest on, for a figure's title."""
    return repeats_text(row["n"] for p in result["points"] for row in p["rows"].values()
                        if row.get("n"))  # fmt: skip


def _x_positions(values: list) -> tuple[list[float], bool]:
    """Numbers on a numeric axis (log-spaced where they span a factor of 8 or more), else
    evenly spaced categories."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values], True
    return list(range(len(values))), False


def line_plot(result: dict, folder: Path) -> None:
    """sweep.png/.svg of a one-axis sweep: test error of each student against the axis (mean,
    95% CI band), and each distilled student − hard labels (mean, grid-Holm-adjusted 95% CI;
    filled where significant)."""
    import matplotlib  # loads slowly: imported when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ((key, values),) = result["grid"].items()
    xs, numeric = _x_positions(values)
    log = numeric and min(xs) > 0 and max(xs) / min(xs) >= 8
    by_value = {json.dumps(p["point"][key]): p for p in result["points"]}
    pts = [by_value.get(json.dumps(v)) for v in values]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 7), dpi=110, sharex=True)
    for row in ("student_from_teacher", "student_from_ensemble", "student_hard"):
        ink = colour(row)
        keep = [(x, p["rows"][row]) for x, p in zip(xs, pts, strict=True)
                if p and p["rows"][row]["mean_pct"] is not None]  # fmt: skip
        if not keep:
            continue
        top.plot([x for x, _ in keep], [r["mean_pct"] for _, r in keep], "o-", color=ink,
                 label=row.replace("_", " "))  # fmt: skip
        band = [(x, r["ci95_pct"]) for x, r in keep if r["ci95_pct"]]
        if band:
            top.fill_between([x for x, _ in band], [c[0] for _, c in band],
                             [c[1] for _, c in band], color=ink, alpha=0.18, lw=0)  # fmt: skip
    top.set_ylabel("test error (%), mean and 95% CI")
    top.legend(fontsize=8, frameon=False)
    bottom.axhline(0, color="0.6", lw=0.8)
    for kind in KD:
        ink = colour(kind)
        for x, p in zip(xs, pts, strict=True):
            t = p["kd_vs_hard"][kind] if p else None
            if t is None or t["mean_diff_pp"] is None:
                continue
            ci = t.get("ci95_holm_grid_pp") or t["ci95_pp"]
            if ci:
                bottom.plot([x, x], ci, color=ink, lw=1.5)
            bottom.plot(x, t["mean_diff_pp"], "o", color=ink, ms=7,
                        mfc=ink if t["significant"] else "white")  # fmt: skip
        bottom.plot([], [], "o", color=ink, label=kind.replace("_", " ") + " − hard labels")
    bottom.set_ylabel("difference (pp), Holm-adjusted 95% CI\nfilled: significant over the grid")
    bottom.legend(fontsize=8, frameon=False)
    bottom.set_xlabel(key)
    if log:
        bottom.set_xscale("log")
    bottom.set_xticks(xs, [str(v) for v in values])
    bottom.minorticks_off()
    top.set_title(f"Students across {key} · {point_repeats(result)}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, folder, "sweep")
