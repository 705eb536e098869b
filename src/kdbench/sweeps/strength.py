"""The teacher-strength curve of a sweep that changes the teacher: does a stronger teacher make
distillation help? x = the teacher's test error (mean, 95% CI over repeats), y = student
distilled from it − hard-label student (pp, paired 95% CI adjusted as Holm over the grid adjusts
its p, so it excludes 0 exactly where the point is filled: Holm-significant), the paper's own
point marked; and where the curve crosses zero.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from kdbench.analysis.figures import save_figure
from kdbench.analysis.palette import colour
from kdbench.analysis.paper import PAPER_TABLE1, TEACHER_SETTINGS, comparable_to_paper
from kdbench.runs.store import read_config
from kdbench.sweeps.report import axes, point_repeats

KIND = "student_from_teacher"
PAPER = (PAPER_TABLE1["teacher"], PAPER_TABLE1[KIND] - PAPER_TABLE1["student_hard"])


def paper_reference(out: Path, result: dict) -> bool:
    """The paper's point belongs on the curve where every point is the paper's study but for
    its teacher (the curve's own axis): MNIST, its students, temperature and training."""
    return all(
        comparable_to_paper(read_config(out / p["folder"]).to_dict(), TEACHER_SETTINGS)
        for p in result["points"]
    )


def applies(result: dict) -> bool:
    """A sweep over the teacher: a setting it varies (on its grid or at an extra point) is a
    teacher setting, or its architecture."""
    return any(key.startswith("teacher_") for key in axes(result))


def _points(result: dict) -> list[dict]:
    """The points with a teacher error and a paired difference, by teacher error."""
    out = []
    for p in result["points"]:
        t, d = p["rows"]["teacher"], p["kd_vs_hard"][KIND]
        if t["mean_pct"] is not None and d["mean_diff_pp"] is not None:
            out.append({"label": p["label"], "x": t["mean_pct"], "x_ci": t["ci95_pct"],
                        "y": d["mean_diff_pp"], "y_ci": d.get("ci95_holm_grid_pp", d["ci95_pp"]),
                        "significant": d["significant"]})  # fmt: skip
    return sorted(out, key=lambda q: q["x"])


@dataclass(frozen=True)
class Gaps:
    """How much better than the hard-label student (its error − the teacher's, pp) the teacher
    was where distilling from it helped and where it hurt, Holm-significant over the sweep."""

    helped_from_pp: float | None  # the smallest advantage at which it helped
    hurt_up_to_pp: float | None  # the largest advantage at which it still hurt


def gaps(result: dict) -> Gaps:
    """`Gaps` of a teacher sweep (what `kdbench diagnose` tells a user about their teacher)."""
    helped, hurt = [], []
    for p in result["points"]:
        t, hard = p["rows"]["teacher"]["mean_pct"], p["rows"]["student_hard"]["mean_pct"]
        d = p["kd_vs_hard"][KIND]
        if t is None or hard is None or d["mean_diff_pp"] is None or not d["significant"]:
            continue
        (helped if d["mean_diff_pp"] < 0 else hurt).append(hard - t)
    return Gaps(min(helped) if helped else None, max(hurt) if hurt else None)


def _than(advantage: float) -> str:
    return f"{abs(advantage):.2f} pp {'better' if advantage >= 0 else 'worse'} than"


def gap_sentence(result: dict) -> str:
    """`gaps` as the sentence sweep.md prints under the curve."""
    g = gaps(result)
    parts = []
    if g.helped_from_pp is not None:
        parts.append(f"helped significantly from a teacher {_than(g.helped_from_pp)} the"
                     " hard-label student on (the weakest teacher that helped)")  # fmt: skip
    if g.hurt_up_to_pp is not None:
        parts.append(f"hurt significantly up to a teacher {_than(g.hurt_up_to_pp)} the"
                     " hard-label student"
                     " (the strongest teacher that hurt)")  # fmt: skip
    if not parts:
        return "No point differs from hard labels significantly (Holm over the grid)."
    return "Distilling " + ", and ".join(parts) + "; Holm over the grid."


def crossing(result: dict) -> str:
    """One sentence: at which teacher error the mean difference changes sign (linear between
    the two neighbouring points), or that it does not within the grid."""
    pts = _points(result)
    if len(pts) < 2:
        return "Too few points for a teacher-strength curve."
    for a, b in itertools.pairwise(pts):
        if (a["y"] < 0) != (b["y"] < 0):
            x0 = a["x"] + (b["x"] - a["x"]) * (0 - a["y"]) / (b["y"] - a["y"])
            side = "below" if a["y"] < 0 else "above"
            return (
                f"The mean difference crosses zero at a teacher error of about {x0:.2f}%"
                f" (between {a['label']} and {b['label']}): {side} it the student distilled from"
                " the teacher is better than the hard-label student on average (filled points:"
                " significantly)."
            )
    side = "helps" if pts[0]["y"] < 0 else "does not help"
    return (
        f"The mean difference does not cross zero between teacher errors {pts[0]['x']:.2f}% and"
        f" {pts[-1]['x']:.2f}%: distilling from the teacher {side} at every point of this grid."
    )


def figure(result: dict, folder: Path, paper: bool = True) -> None:
    """`teacher_strength.png`/`.svg` in `folder`; the paper's own point where its Table 1 is a
    fair reference for every point but their teachers (`paper`)."""
    import matplotlib  # loads slowly: imported when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = _points(result)
    fig, (ax, side) = plt.subplots(1, 2, figsize=(9.5, 4.5), dpi=110,
                                   gridspec_kw={"width_ratios": [3, 1.15]})  # fmt: skip
    ax.axhline(0, color="grey", lw=0.8)
    key = []
    for i, q in enumerate(sorted(pts, key=lambda q: -q["x"]), 1):  # weakest teacher first
        xerr = [[q["x"] - q["x_ci"][0]], [q["x_ci"][1] - q["x"]]] if q["x_ci"] else None
        yerr = [[q["y"] - q["y_ci"][0]], [q["y_ci"][1] - q["y"]]] if q["y_ci"] else None
        ax.errorbar(q["x"], q["y"], xerr=xerr, yerr=yerr, fmt="o", color=colour(KIND),
                    mfc=colour(KIND) if q["significant"] else "white", capsize=3)  # fmt: skip
        # a number beside the point and its settings in the key: long labels of points close
        # together would cover each other
        ax.annotate(str(i), (q["x"], q["y"]), textcoords="offset points", fontsize=8,
                    xytext=(4, 4) if i % 2 else (-10, -12))  # fmt: skip
        settings = re.findall(r"[a-z][a-z_]*=[^_]+", q["label"].replace("teacher_", ""))
        key.append(f"{i}  " + "\n   ".join(settings))  # one setting a line: the key stays narrow
    side.axis("off")
    side.text(0, 1, "teachers, weakest first\n\n" + "\n".join(key), transform=side.transAxes,
              fontsize=7.5, va="top", family="monospace")  # fmt: skip
    if paper:
        ax.plot(*PAPER, marker="*", ms=12, color="black", ls="none", label="the paper (Table 1)")
    ax.set_xlabel("teacher test error (%), mean and 95% CI")
    ax.set_ylabel("student from teacher − hard labels (pp),\nHolm-adjusted 95% CI")
    ax.set_title("Teacher strength: filled = Holm-significant over the grid\n"
                 + point_repeats(result), fontsize=10)  # fmt: skip
    if paper:
        ax.legend(loc="best", fontsize=8)
    save_figure(fig, folder, "teacher_strength")
