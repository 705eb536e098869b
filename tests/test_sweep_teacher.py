"""kdbench sweep over the teacher: the teacher-strength curve, where it crosses zero, and extra
points (`--point`) that grow a finished sweep."""

from __future__ import annotations

import json

import pytest

from kdbench.errors import ConfigError, RunFolderError
from kdbench.protocol.presets import resolve
from kdbench.sweeps import sweep


def _strength_result(pairs):
    """A sweep result of teacher points (teacher error %, difference pp)."""

    def diff(y):
        return {"mean_diff_pp": y, "ci95_pp": [y - 0.1, y + 0.1], "significant": abs(y) > 0.2}

    pts = [{"label": f"teacher_epochs={i}", "point": {"teacher_epochs": i},
            "rows": {"teacher": {"mean_pct": x, "ci95_pct": [x - 0.2, x + 0.2]},
                     "student_hard": {"mean_pct": 2.4, "ci95_pct": [2.2, 2.6]}},
            "kd_vs_hard": {"student_from_teacher": diff(y)}}
           for i, (x, y) in enumerate(pairs)]  # fmt: skip
    return {"grid": {"teacher_epochs": list(range(len(pairs)))}, "points": pts}


def test_the_teacher_strength_curve_says_where_it_crosses_zero():
    from kdbench.sweeps import strength

    # stronger teachers (lower error) help; the sign changes between 1.5% and 2.5%
    crossing = strength.crossing(_strength_result([(2.5, 0.4), (1.5, -0.2), (3.0, 0.6)]))
    assert (
        "about 1.83%" in crossing and "below it the student distilled" in crossing
    )  # 1.5 + 1.0 * 0.2 / 0.6
    # where it helped and hurt, as the teacher's advantage over the hard-label student (2.4%):
    # significant points only (|y| > 0.2 in this helper), so 1.9% (+0.5 pp, y = -0.1) is neither
    gaps = strength.gaps(_strength_result([(2.5, 0.4), (1.5, -0.3), (3.0, 0.6), (1.9, -0.1)]))
    assert gaps.helped_from_pp == pytest.approx(0.9) and gaps.hurt_up_to_pp == pytest.approx(-0.1)
    text = strength.gap_sentence(_strength_result([(2.5, 0.4), (1.5, -0.3)]))
    assert "from a teacher 0.90 pp better than" in text and "up to a teacher 0.10 pp worse" in text
    never = strength.crossing(_strength_result([(2.5, 0.4), (3.0, 0.6)]))
    assert "does not cross zero" in never and "does not help" in never


def test_a_sweep_over_the_teacher_draws_its_strength_curve(tmp_path):
    out = tmp_path / "strength"
    base = resolve("paper", dataset="digits", teacher_hidden=(16,), student_hidden=(8,),
                   repeats=2, members=2, patience=1, threads=1)  # fmt: skip
    sweep.run(base, sweep.parse_grid(["teacher_epochs=1,6"]), out)
    text = (out / "sweep.md").read_text()
    assert "## Teacher strength" in text and "teacher_strength.png" in text
    assert (out / "teacher_strength.png").stat().st_size > 0
    result = json.loads((out / "sweep.json").read_text())
    errors = [p["rows"]["teacher"]["mean_pct"] for p in result["points"]]
    assert errors[1] < errors[0], "six epochs make the stronger teacher"
    # the points differ only in their teachers: the small networks are trained once, shared
    trained = [p["trained_stacks"] for p in result["points"]]
    assert trained == [["teachers", "small networks", "distilled students"],
                       ["teachers", "distilled students"]]  # fmt: skip
    hard = {json.dumps(p["rows"]["student_hard"]) for p in result["points"]}
    assert len(hard) == 1
    # the ensemble (shared) gives its student about the same error everywhere: a tie is said
    means = {round(p["rows"]["student_from_ensemble"]["mean_pct"], 2) for p in result["points"]}
    best = result["best"]["student_from_ensemble"]
    assert best["of"] == 2 and best["tied"] == 3 - len(means)
    assert ("every point ties" in text) == (len(means) == 1)
    small = [f for f in (out / "shared").iterdir() if f.name.startswith("small-")]
    assert len(small) == 1 and len(list((out / "shared").iterdir())) == 3
    # a finished sweep grows by an extra point: only its teachers and students train, the
    # grid's points keep their records, and the Holm family counts the new point's tests
    before = {p["label"]: (out / p["folder"] / "records.jsonl").read_text()
              for p in result["points"]}  # fmt: skip
    extra = sweep.parse_points(["teacher_epochs=3 teacher_dropout=0.2"])
    grown = sweep.run(base, sweep.parse_grid(["teacher_epochs=1,6"]), out, extra=extra)
    assert [p["label"] for p in grown["points"]][-1] == "teacher_epochs=3_teacher_dropout=0.2"
    assert grown["tests_in_family"] == 6 and grown["extra_points"] == extra
    assert grown["points"][-1]["trained_stacks"][:1] == ["teachers"]
    assert "small networks" not in grown["points"][-1]["trained_stacks"]
    for p in grown["points"][:2]:
        assert (out / p["folder"] / "records.jsonl").read_text() == before[p["label"]]
    table = (out / "sweep.md").read_text()
    assert "| teacher_epochs | teacher_dropout |" in table and "| 1 | base |" in table
    # the grown folder now holds that point: a rerun without it is a different sweep
    with pytest.raises(RunFolderError, match="every --point"):
        sweep.run(base, sweep.parse_grid(["teacher_epochs=1,6"]), out)


def test_extra_points_parse_and_refuse_clearly():
    got = sweep.parse_points(["teacher_arch=cnn:8,16 teacher_epochs=4", "lr=0.01"])
    assert got == [{"teacher_arch": "cnn:8,16", "teacher_epochs": 4}, {"learning_rate": 0.01}]
    # values take the setting's declared type: the float a flag would give (same settings hash)
    (norm,) = sweep.parse_points(["teacher_max_norm=3 teacher_monitor=val_error"])
    assert norm == {"teacher_max_norm": 3.0, "teacher_monitor": "val_error"}
    assert isinstance(norm["teacher_max_norm"], float)
    for bad, msg in [
        (["colour=1"], "not a setting"),
        (["alpha=0.1 alpha=0.2"], "twice"),
        (["alpha"], "name=value"),
        (["alpha=0.2", "alpha=0.2"], "given twice"),
        (["dataset=digits"], "not a setting"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            sweep.parse_points(bad)
    with pytest.raises(ConfigError, match="share the folder"):  # a grid point given again
        sweep.points(resolve("paper"), {"alpha": [0.1, 0.5]}, extra=[{"alpha": 0.5}])
