"""The study's figures: Figure 3 (error per row beside the paper's) and the accuracy-latency
trade-off. PNG for browsers, SVG for papers, both written atomically."""

from __future__ import annotations

import io
from pathlib import Path

from kdbench.roles import ROWS, label
from kdbench.runs.store import atomic_write
from kdbench.summary import Summary


def figure(summary: Summary, folder: Path) -> None:
    """Figure 3: measured error per row (mean and 95% CI, each repeat a dot) beside the paper's,
    as dots and intervals on an axis fitted to the values: bars from 0 would squeeze the
    tenths of a point that separate the rows into the tops of tall bars."""
    import matplotlib  # loads slowly: imported when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(8.0, 1.25 * len(summary.rows)) + 2.5, 4.5), dpi=120)
    short = {
        "teacher": "Your\nteacher" if summary.own_teacher else "Teacher",
        "student_from_teacher": "Student\n← teacher",
        "ensemble": "Ensemble",
        "student_from_ensemble": "Student\n← ensemble",
        "student_hard": "Student\nhard labels",
        "student_smooth": "Control:\nsmoothed",
        "student_smooth_matched": "Control:\nmatched ε",
        "student_self": "Control:\nself-distilled",
        "student_teacher_reg": "Control:\nteacher's reg.",
        "assistant": "Teacher\nassistant",
    }
    colour = {"teacher": "#4c72b0", "ensemble": "#4c72b0", "assistant": "#4c72b0",
              "student_from_teacher": "#55a868", "student_from_ensemble": "#55a868",
              "student_hard": "#c44e52"}  # fmt: skip
    names = list(summary.rows)  # Table 1's rows, then the run's controls
    for i, name in enumerate(names):
        row = summary.rows[name]
        if row.mean_pct is None:
            continue
        mean = row.mean_pct
        err = None
        if row.ci95_pct is not None:
            err = [[mean - row.ci95_pct[0]], [row.ci95_pct[1] - mean]]
        ax.errorbar(i, mean, yerr=err, fmt="o", ms=8, color=colour.get(name, "#8c8c8c"),
                    capsize=5, lw=2, zorder=2)  # fmt: skip
        xs = [i - 0.22 + 0.1 * ((j % 5) - 2) / 2 for j in range(len(row.errors_pct))]
        ax.scatter(xs, row.errors_pct, s=10, color="black", alpha=0.6, zorder=3,
                   label="each repeat" if i == 0 else None)  # fmt: skip
        if row.paper_pct is None:
            continue
        ax.plot(i + 0.22, row.paper_pct, marker="D", ms=7, mfc="white", mec="black", ls="none",
                label="paper (Table 1)" if i == 0 else None)  # fmt: skip
    ax.set_xticks(range(len(names)), [short[n] for n in names])
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("test error rate (%): mean, 95% CI")
    paper = any(row.paper_pct is not None for row in summary.rows.values())
    ax.set_title("Original models vs distilled students" + (" (Figure 3)" if paper else ""))
    drawn = [n for n in names if summary.rows[n].mean_pct is not None]
    if drawn:  # every row diverged: nothing drawn, no legend
        from matplotlib.lines import Line2D

        teachers = "teacher, assistant, ensemble" if "assistant" in drawn else "teacher, ensemble"
        groups = {"#4c72b0": teachers, "#55a868": "distilled students",
                  "#c44e52": "hard-label student", "#8c8c8c": "controls"}  # fmt: skip
        shown = {colour.get(n, "#8c8c8c") for n in drawn}
        handles = [Line2D([], [], marker="o", ls="none", ms=8, color=c, label=text)
                   for c, text in groups.items() if c in shown]  # fmt: skip
        handles += ax.get_legend_handles_labels()[0]  # each repeat, the paper's values
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8,
                  frameon=False)  # fmt: skip  # beside the plot, never over a value
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, folder, "figure")


def save_figure(fig, folder: Path, stem: str) -> None:
    """PNG for GitHub and browsers, SVG for papers; both written atomically."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        # no date and fixed element ids in the SVG: the same figure re-rendered is the same
        # file; its text stays text (editable in a paper, and a third faster to write)
        with plt.rc_context({"svg.hashsalt": "kdbench", "svg.fonttype": "none"}):
            fig.savefig(buf, format=ext, metadata={"Date": None} if ext == "svg" else None)
        atomic_write(folder / f"{stem}.{ext}", buf.getvalue())
    plt.close(fig)


def tradeoff_figure(summary: Summary, folder: Path) -> None:
    """Error rate against batch-1 latency, one point per model kind, 95% CI bars."""
    import matplotlib  # loads slowly: imported when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name in ROWS:
        row, res = summary.rows[name], summary.resources["rows"].get(name)
        if row.mean_pct is None or res is None:  # your own teacher is not measured
            continue
        x = res["latency"]["onnx_b1"]["median_us"]
        y = row.mean_pct
        yerr = None
        if row.ci95_pct is not None:
            yerr = [[y - row.ci95_pct[0]], [row.ci95_pct[1] - y]]
        ax.errorbar([x], [y], yerr=yerr, fmt="o", capsize=4, label=label(name, summary.own_teacher))
    ax.set_xscale("log")
    # plain numbers at 1-2-5 steps, not 10^1.6-style labels on a range narrower than a decade
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("latency per image at batch 1, ONNX Runtime (µs, log scale)")
    ax.set_ylabel("test error rate (%)")
    ax.set_title("Accuracy vs latency: lower left is better")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    save_figure(fig, folder, "tradeoff")


def cost_figure(summary: Summary, folder: Path) -> None:
    """Test error (mean, 95% CI) against training compute, log scale: each strategy's
    deployable student at what it took to make (filled; hollow: when its teacher or ensemble
    already exists), the teacher and the ensemble at their own training (grey)."""
    import matplotlib  # loads slowly: imported when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    costs = summary.costs
    fig, ax = plt.subplots(figsize=(9.5, 4.5), dpi=120)

    def point(name, x, style, text):
        row = summary.rows[name]
        if row.mean_pct is None or x is None:
            return None
        y = row.mean_pct
        yerr = None if row.ci95_pct is None else [[y - row.ci95_pct[0]], [row.ci95_pct[1] - y]]
        return ax.errorbar([x], [y], yerr=yerr, capsize=4, label=text, **style)[0]

    for name, marker in (("teacher", "s"), ("ensemble", "D")):
        x = costs.rows.get(name, {}).get("train_macs")
        point(name, x, {"fmt": marker, "color": "0.55", "mfc": "white"},
              f"{label(name, summary.own_teacher)} (not deployed)")  # fmt: skip
    for i, s in enumerate(costs.strategies):
        color = f"C{i}"
        y = summary.rows[s.student].mean_pct
        made = point(s.student, s.macs, {"fmt": "o", "color": color, "ms": 8},
                     label(s.student, summary.own_teacher))  # fmt: skip
        if s.amortised_macs is not None and y is not None:
            alone = (
                None
                if made is not None
                # its whole cost was not recorded
                else (f"{label(s.student, summary.own_teacher)} (teacher/ensemble not counted)")
            )
            ax.plot([s.amortised_macs], [y], "o", color=color, mfc="white", ms=8, label=alone)
            if made is not None:
                ax.plot([s.amortised_macs, s.macs], [y, y], ":", color=color, lw=1)
    ax.plot([], [], "o", color="0.3", mfc="white", label="same student, teacher/ensemble exists")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _si(v)))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("training compute (multiply-accumulates, log scale)")
    ax.set_ylabel("test error rate (%)")
    ax.set_title("Accuracy vs training compute: lower left is better")
    ax.grid(alpha=0.3)
    # beside the axes, so it never covers a point ("best" also costs more than the figure)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    save_figure(fig, folder, "costs")


def _si(v: float) -> str:
    """A tick in MACs: 200M, 1G, 2T."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:g}{prefix}"
    return f"{v:g}"
