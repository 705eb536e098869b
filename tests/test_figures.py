"""Every figure's text (titles, labels, ticks, legends) lies inside the saved image: nothing
clipped, at the committed runs' sizes and with the longest labels a run can have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.text import Text

from kdbench.analysis import figures, report
from kdbench.runs.store import read_records, read_run_config
from kdbench.summary import Timing
from kdbench.sweeps import explain
from kdbench.sweeps import report as sweep_report

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


@pytest.fixture
def checked(monkeypatch):
    """save_figure, with every visible text's extent checked against the figure's box."""
    seen: list[str] = []
    original = figures.save_figure

    def save(fig, folder, stem):
        fig.tight_layout()
        fig.canvas.draw()
        drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # every drawn artist, in inches
        page = fig.bbox_inches
        tol = 1 / fig.dpi  # one pixel
        inside = drawn.x0 >= page.x0 - tol and drawn.x1 <= page.x1 + tol
        inside = inside and drawn.y0 >= page.y0 - tol and drawn.y1 <= page.y1 + tol
        texts = [t.get_text() for t in fig.findobj(Text) if t.get_text().strip()]
        assert inside, f"{stem}: drawn area {drawn} exceeds the figure {page}; texts {texts[:8]}"
        seen.append(stem)
        original(fig, folder, stem)

    for module in (figures, explain, sweep_report):
        monkeypatch.setattr(module, "save_figure", save)
    return seen


def test_no_figure_clips_its_text(checked, tmp_path, monkeypatch):
    run = RESULTS / "paper-mnist"
    run_config = read_run_config(run)
    run_config["config"]["model"]["own_teacher"] = "module:AVeryLongTeacherClassNameForTesting"
    resources = json.loads((run / "resources.json").read_text())
    summary = report.render(tmp_path, read_records(run), run_config, Timing(1.0),
                            resources)  # fmt: skip
    assert summary["own_teacher"].startswith("module:")
    grid = json.loads((RESULTS / "sweep-mnist" / "sweep.json").read_text())
    sweep_report.heatmap(grid, tmp_path)
    # a one-axis sweep: a line plot with CI bands (sweep.png again, checked the same way)
    line = {**grid, "grid": {"temperature": grid["grid"]["temperature"]},
            "points": [p for p in grid["points"] if p["point"]["alpha"] == 0.1]}  # fmt: skip
    drawn, draw = [], sweep_report.line_plot
    monkeypatch.setattr(sweep_report, "line_plot", lambda r, f: drawn.append(draw(r, f)))
    sweep_report.heatmap(line, tmp_path)
    assert len(drawn) == 1
    variants = json.loads((RESULTS / "explain-mnist" / "explain.json").read_text())["variants"]
    explain.forest(variants, tmp_path)
    assert sorted(checked) == ["explain", "figure", "sweep", "sweep", "tradeoff"]


def _texts_and_colours(fig) -> tuple[list[str], dict[str, str]]:
    """Every visible text of a figure, and each legend entry's colour (as hex)."""
    from matplotlib.colors import to_hex

    texts = [t.get_text() for t in fig.findobj(Text) if t.get_text().strip()]
    inks = {}
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            get = getattr(handle, "get_color", None) or handle.get_edgecolor
            inks[text.get_text()] = to_hex(get())
    return texts, inks


@pytest.mark.parametrize("run", ["conv-mnist", "paper-mnist"])
def test_one_colour_per_role_names_by_architecture_and_repeats_on_every_figure(
    run, tmp_path, monkeypatch
):
    """The hard-label student was red, purple and blue across one run's three figures; a LeNet-5
    teacher was the "Large network"; no figure said its repeats; three students of one network
    sat at three latencies."""
    from kdbench.analysis.configuration import row_names
    from kdbench.analysis.palette import COLOUR

    seen = {}

    def save(fig, folder, stem):
        fig.canvas.draw()
        seen[stem] = (*_texts_and_colours(fig), fig)

    monkeypatch.setattr(figures, "save_figure", save)
    folder = RESULTS / run
    run_config = read_run_config(folder)
    resources = json.loads((folder / "resources.json").read_text())
    summary = report.render(tmp_path, read_records(folder), run_config, Timing(1.0), resources)
    drawn = ["costs", "figure", "tradeoff"] if not summary.costs.missing else ["figure", "tradeoff"]
    assert sorted(seen) == drawn
    names = row_names(run_config["config"], summary.resources)
    paper = run == "paper-mnist"
    for stem, (texts, inks, _fig) in seen.items():
        assert any("n = 10 repeats" in t for t in texts), (stem, texts)
        assert any("Large network" in t for t in texts) == paper, (stem, texts)
        assert ("(Figure 3)" in " ".join(texts)) == (paper and stem == "figure")
        for row in resources["rows"] if stem == "tradeoff" else summary.rows:
            got = [ink for text, ink in inks.items()
                   if text == names[row] or text.startswith(names[row] + " (")]  # fmt: skip
            assert got and set(got) == {COLOUR[row]}, (stem, row, inks)
    if not paper:
        assert names["teacher"] == "Teacher: lenet5 (61,706 params)"
        assert names["student_hard"] == "cnn:4,8 on hard labels (2,346 params)"
    # the tradeoff's students: one network, one latency (their median), whatever trained them
    students = [r for r in ("student_from_teacher", "student_from_ensemble", "student_hard")]
    measured = [resources["rows"][r]["latency"]["onnx_b1"]["median_us"] for r in students]
    assert len(set(measured)) == 3  # measured apart ...
    ax = seen["tradeoff"][2].axes[0]
    xs = {}
    for container in ax.containers:  # one errorbar per row
        xs[container.get_label()] = float(container.lines[0].get_xdata()[0])
    assert {xs[names[r]] for r in students} == {sorted(measured)[1]}  # ... drawn at one x
    assert xs[names["teacher"]] != xs[names["student_hard"]]


def test_the_strength_curve_marks_the_papers_point_only_on_the_papers_study(tmp_path):
    """The paper's star sat on every teacher-strength curve, on any data and students."""
    from kdbench.sweeps import strength

    folder = RESULTS / "teacher-strength-mnist"
    result = json.loads((folder / "sweep.json").read_text())
    assert strength.paper_reference(folder, result)
    for paper in (True, False):
        strength.figure(result, tmp_path, paper)
        svg = (tmp_path / "teacher_strength.svg").read_text()
        assert ("the paper (Table 1)" in svg) == paper
        assert "n = 10 repeats" in svg
