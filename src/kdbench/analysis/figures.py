"""The study's figures: error per row (the paper's Figure 3, beside its values on its own
study), the accuracy-latency trade-off and accuracy against training compute. Every row has one
colour in all of them (`palette`), every figure says its number of repeats, and the rows are
named by `Look.names` (by architecture, or the paper's words on the paper's study). PNG for
browsers, SVG for papers, both written atomically."""

from __future__ import annotations

import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from kdbench.analysis.palette import colour
from kdbench.roles import LABELS
from kdbench.runs.store import atomic_write
from kdbench.summary import Summary


@dataclass(frozen=True)
class Look:
    """What a run's figures say beside its numbers: each row's name
    (`configuration.row_names`) and the line under every title (models, data, repeats)."""

    names: dict[str, str] = field(default_factory=lambda: dict(LABELS))
    about: str = ""


def _title(ax, title: str, look: Look) -> None:
    ax.set_title(title + (f"\n{look.about}" if look.about else ""), fontsize=10)


def repeats_text(ns) -> str:
    """How many repeats a figure's intervals rest on: `n = 10 repeats`, `n = 3–10 repeats`."""
    ns = sorted(set(ns))
    if not ns:
        return ""
    span = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return f"n = {span} repeat{'' if span == '1' else 's'}"


def _legend_inches(look: Look, rows, fontsize: float = 8) -> float:
    """Room for a legend of these rows' names beside the axes (an own teacher's file name or
    an architecture can be long): about 0.6 em a character."""
    longest = max((len(look.names.get(n, n)) for n in rows), default=20) + 16  # "(not deployed)"
    return 0.6 + longest * fontsize * 0.6 / 72


def log_axis(axis, formatter) -> None:
    """Labelled ticks at 1-2-5 steps (enough to read a value off), plain numbers, no 10^x."""
    from matplotlib import ticker

    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=30))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: formatter(v)))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=tuple(range(1, 10)), numticks=30))
    axis.set_minor_formatter(ticker.NullFormatter())


def figure(summary: Summary, folder: Path, look: Look | None = None) -> None:
    """Figure 3: measured error per row (mean and 95% CI, each repeat a dot) beside the paper's,
    as dots and intervals on an axis fitted to the values: bars from 0 would squeeze the
    tenths of a point that separate the rows into the tops of tall bars."""
    import matplotlib  # loads slowly: imported when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    look = look or Look()
    wide = max(8.0, 1.25 * len(summary.rows)) + _legend_inches(look, summary.rows)
    fig, ax = plt.subplots(figsize=(wide, 4.5), dpi=120)
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
    names = list(summary.rows)  # Table 1's rows, then the run's controls
    for i, name in enumerate(names):
        row = summary.rows[name]
        if row.mean_pct is None:
            continue
        mean = row.mean_pct
        err = None
        if row.ci95_pct is not None:
            err = [[mean - row.ci95_pct[0]], [row.ci95_pct[1] - mean]]
        ax.errorbar(i, mean, yerr=err, fmt="o", ms=8, color=colour(name),
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
    _title(ax, "Original models vs distilled students" + (" (Figure 3)" if paper else ""), look)
    drawn = [n for n in names if summary.rows[n].mean_pct is not None]
    if drawn:  # every row diverged: nothing drawn, no legend
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", ls="none", ms=8, color=colour(n),
                          label=look.names.get(n, n)) for n in drawn]  # fmt: skip
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


def tradeoff_figure(summary: Summary, folder: Path, look: Look | None = None) -> None:
    """Error rate against batch-1 latency (ONNX Runtime), 95% CI bars. Models of one
    architecture (the same parameters and MACs: every student, whatever trained it) run the
    same code, so they share one latency: the median of their measurements, its bar their
    range. Three students measured at 232, 671 and 510 µs are one network, not three."""
    import matplotlib  # loads slowly: imported when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    look = look or Look()
    measured = {name: res for name, res in summary.resources["rows"].items()
                if name in summary.rows and summary.rows[name].mean_pct is not None}  # fmt: skip
    by_arch: dict[tuple, list[float]] = {}
    for res in measured.values():  # your own teacher is not measured: not in `measured`
        by_arch.setdefault((res["params"], res["macs"]), []).append(
            res["latency"]["onnx_b1"]["median_us"]
        )
    fig, ax = plt.subplots(figsize=(5.5 + _legend_inches(look, measured), 4.5), dpi=120)
    for name, res in measured.items():
        times = by_arch[(res["params"], res["macs"])]
        x = statistics.median(times)
        xerr = [[x - min(times)], [max(times) - x]] if len(times) > 1 else None
        row = summary.rows[name]
        y = row.mean_pct
        yerr = None if row.ci95_pct is None else [[y - row.ci95_pct[0]], [row.ci95_pct[1] - y]]
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o", capsize=4, color=colour(name),
                    label=look.names.get(name, name))  # fmt: skip
    ax.set_xscale("log")
    log_axis(ax.xaxis, lambda v: f"{v:g}")
    ax.set_xlabel("latency per image, batch 1, ONNX Runtime (µs, log scale)\n"
                  "one point per architecture: median of its models, bar: their range")  # fmt: skip
    ax.set_ylabel("test error rate (%), mean and 95% CI")
    _title(ax, "Accuracy vs latency: lower left is better", look)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    save_figure(fig, folder, "tradeoff")


def cost_figure(summary: Summary, folder: Path, look: Look | None = None) -> None:
    """Test error (mean, 95% CI) against training compute, log scale: each strategy's
    deployable student at what it took to make (filled; hollow: when its teacher or ensemble
    already exists), the teacher and the ensemble at their own training (grey)."""
    import matplotlib  # loads slowly: imported when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    look = look or Look()
    name_of = look.names.get
    costs = summary.costs
    fig, ax = plt.subplots(figsize=(6 + _legend_inches(look, summary.rows, 7), 4.5), dpi=120)

    def point(name, x, style, text):
        row = summary.rows[name]
        if row.mean_pct is None or x is None:
            return None
        y = row.mean_pct
        yerr = None if row.ci95_pct is None else [[y - row.ci95_pct[0]], [row.ci95_pct[1] - y]]
        return ax.errorbar([x], [y], yerr=yerr, capsize=4, label=text, **style)[0]

    for name, marker in (("teacher", "s"), ("ensemble", "D")):
        x = costs.rows.get(name, {}).get("train_macs")
        point(name, x, {"fmt": marker, "color": colour(name), "mfc": "white"},
              f"{name_of(name, name)} (not deployed)")  # fmt: skip
    for s in costs.strategies:
        color = colour(s.student)
        y = summary.rows[s.student].mean_pct
        made = point(s.student, s.macs, {"fmt": "o", "color": color, "ms": 8},
                     name_of(s.student, s.student))  # fmt: skip
        if s.amortised_macs is not None and y is not None:
            alone = (
                None
                if made is not None
                # its whole cost was not recorded
                else f"{name_of(s.student, s.student)} (teacher/ensemble not counted)"
            )
            ax.plot([s.amortised_macs], [y], "o", color=color, mfc="white", ms=8, label=alone)
            if made is not None:
                ax.plot([s.amortised_macs, s.macs], [y, y], ":", color=color, lw=1)
    ax.plot([], [], "o", color="0.3", mfc="white", label="same student, teacher/ensemble exists")
    ax.set_xscale("log")
    log_axis(ax.xaxis, _si)
    ax.set_xlabel("training compute (multiply-accumulates, log scale)")
    ax.set_ylabel("test error rate (%), mean and 95% CI")
    _title(ax, "Accuracy vs training compute: lower left is better", look)
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
