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
