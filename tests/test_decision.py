"""The README's decision table is what the committed folders say (`kdbench decide`)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from kdbench.analysis import decision
from kdbench.errors import RunFolderError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path("docs/results")


def test_the_guides_table_is_generated_from_the_committed_folders(tmp_path):
    readme = tmp_path / "guide.md"
    shutil.copy(ROOT / "docs" / "guide.md", readme)
    (tmp_path / "results").symlink_to(ROOT / "docs" / "results")
    assert decision.update_readme(readme) >= 1
    assert readme.read_text() == (ROOT / "docs" / "guide.md").read_text(), (
        "the guide's decision table is stale: run `kdbench decide --readme docs/guide.md`"
    )


def test_each_cell_is_its_runs_holm_adjusted_comparison():
    (row,) = decision.situations([RESULTS / "controls-mnist"], ROOT)
    raw = json.loads((ROOT / RESULTS / "controls-mnist" / "summary.json").read_text())
    costs = {c["strategy"]: c for c in raw["costs"]["strategies"]}
    for (_, role, strategy), effect in zip(decision.COLUMNS, row.effects, strict=True):
        (c,) = [c for c in raw["comparisons"] if (c["a"], c["b"]) == (role, "student_hard")]
        assert effect.diff_pp == c["mean_diff_pp"]
        assert list(effect.ci95_pp) == c["ci95_holm_pp"]
        assert effect.significant == (c["p_holm"] < 0.05)
        assert effect.cost_vs_hard == costs[strategy]["macs_vs_hard"]
    # the CI agrees with the star: it excludes 0 exactly where the row is significant
    for e in row.effects:
        assert e.significant == (e.ci95_pp[0] > 0 or e.ci95_pp[1] < 0)
    assert row.teacher.startswith("MLP 500-400-300-200-100") and row.student == "MLP 100"


def test_a_sweep_gives_a_row_per_point_adjusted_over_the_sweep():
    rows = decision.situations([RESULTS / "sweep-mnist"], ROOT)
    result = json.loads((ROOT / RESULTS / "sweep-mnist" / "sweep.json").read_text())
    assert len(rows) == len(result["points"])
    for row, p in zip(rows, result["points"], strict=True):
        tested = p["kd_vs_hard"]["student_from_teacher"]
        assert list(row.effects[0].ci95_pp) == tested["ci95_holm_grid_pp"]
        assert row.effects[0].significant == tested["significant"]
        assert row.source.endswith(p["label"])


def test_bad_folders_and_readmes_are_one_clear_error(tmp_path):
    with pytest.raises(RunFolderError, match="neither a finished run nor a finished sweep"):
        decision.table([tmp_path])
    readme = tmp_path / "README.md"
    readme.write_text("# no marker\n")
    with pytest.raises(RunFolderError, match="no '<!-- kdbench decide"):
        decision.update_readme(readme)
    readme.write_text("<!-- kdbench decide docs/results/controls-mnist -->\nno end\n")
    with pytest.raises(RunFolderError, match="has no"):
        decision.update_readme(readme)
    assert readme.read_text().endswith("no end\n"), "nothing written on an error"


def test_an_unclosed_marker_before_a_closed_one_deletes_nothing(tmp_path):
    """An unclosed block followed by a closed one: its table would swallow the text between
    (and the second marker); refused, the README untouched. A stray end marker too."""
    readme = tmp_path / "README.md"
    text = (
        "intro\n<!-- kdbench decide a -->\nkeep this paragraph\n"
        "<!-- kdbench decide b -->\nold\n<!-- /kdbench decide -->\nend\n"
    )
    readme.write_text(text)
    with pytest.raises(RunFolderError, match="line 2: this decision-table marker has no"):
        decision.update_readme(readme)
    readme.write_text(text.replace("<!-- kdbench decide a -->\n", ""))
    stray = readme.read_text() + "<!-- /kdbench decide -->\n"
    readme.write_text(stray)
    with pytest.raises(RunFolderError, match="1 '<!-- kdbench decide …-->' marker"):
        decision.update_readme(readme)
    assert readme.read_text() == stray


def test_each_row_says_what_to_do():
    """The largest Holm-significant gain is the advice, with its cost; without one, hard
    labels, the closest strategy and the repeats its difference would need."""
    from kdbench.analysis.decision import Effect, Situation, decision

    def row(*effects, repeats=10):
        return Situation("r", "r/report.md", "mnist", "MLP 100", "MLP", 2.0, 1.5, None,
                         repeats, tuple(effects))  # fmt: skip

    gain = Effect(-0.40, (-0.6, -0.2), True, cost_vs_hard=3.5)
    small = Effect(-0.10, (-0.5, 0.3), False, needed=40)
    bigger = Effect(-0.55, (-0.9, -0.2), True, cost_vs_hard=1.5)
    assert decision(row(small, gain, None, None)) == (
        "distil it from the ensemble: -0.40 pp against hard labels, at 3.5× the training compute."
    )
    assert decision(row(small, gain, bigger, None)).startswith("train it on hard labels with label")
    cheap = Effect(-0.38, (-0.6, -0.1), True, cost_vs_hard=1.5)
    assert decision(row(small, gain, cheap, None)).endswith(
        "Also better: label smoothing, -0.38 pp at 1.5×."
    )
    said = decision(row(small, Effect(0.2, None, False, needed=None), None, None))
    assert said == ("hard labels; the closest, from the teacher, differs by -0.10 pp: about 40"
                    " repeats would resolve a difference of this size.")  # fmt: skip
    assert "run at least 5" in decision(row(small, None, None, None, repeats=2))
    assert "within noise" in decision(row(dataclasses.replace(small, needed=8), None, None, None))
