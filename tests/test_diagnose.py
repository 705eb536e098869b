"""diagnose flags planted pitfalls with their evidence and stays quiet on a healthy run;
explain compares presets on tiny runs."""

from __future__ import annotations

import json

import pytest
import torch

from kdbench.protocol.presets import resolve
from kdbench.protocol.run import reproduce
from kdbench.records import MEASURED
from kdbench.sweeps import explain
from tests.in_process import kdbench

# fixed epochs: the early-stopping checks do not apply, so a healthy run has nothing to flag
TINY = dict(train_limit=2000, repeats=3, members=2, epochs=3, temperature=2.0)


def _codes(summary):
    return {f["code"] for f in summary["diagnosis"]["findings"]}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    cfg = resolve("paper", teacher_hidden=(128,), student_hidden=(16,), **TINY)
    return reproduce(cfg, tmp_path_factory.mktemp("healthy") / "run", measure_latency=False)


def test_healthy_run_has_no_findings(healthy):
    folder, summary = healthy
    teacher_gap = next(c for c in summary["comparisons"] if c["a"] == "teacher")
    assert teacher_gap["ci95_pp"][1] < 0, "scenario: the teacher must be clearly better"
    assert _codes(summary) == set()
    assert "No known pitfall found" in (folder / "report.md").read_text()
    fidelity = summary["diagnosis"]["soft_targets"]["fidelity"]
    for key in ("student_from_teacher", "student_from_ensemble"):
        assert 0.5 < fidelity[key]["agreement"] <= 1.0
        assert fidelity[key]["kl"] >= 0


def test_planted_softmax_on_probabilities_is_flagged(tmp_path):
    cfg = resolve("paper-softmax-head", teacher_hidden=(128,), student_hidden=(16,), **TINY)
    cfg = cfg.with_overrides(temperature=10.0)
    _, summary = reproduce(cfg, tmp_path / "run", measure_latency=False)
    assert {"uniform-targets-teacher", "uniform-targets-ensemble"} <= _codes(summary)
    finding = next(
        f for f in summary["diagnosis"]["findings"] if f["code"] == "uniform-targets-teacher"
    )
    assert "softmax" in finding["evidence"] and "--preset paper" in finding["try_next"]
    st = summary["diagnosis"]["soft_targets"]
    assert st["entropy"]["teacher"] > 0.99 * st["max_entropy"]


def test_planted_weak_teacher_is_flagged_and_cli_prints_it(tmp_path):
    cfg = resolve("paper", teacher_hidden=(2,), student_hidden=(64,), **TINY)
    folder, summary = reproduce(cfg, tmp_path / "run", measure_latency=False)
    assert "weak-teacher" in _codes(summary)
    proc = kdbench("diagnose", folder)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "not clearly better" in out and "--preset hinton-strong" in out
    assert "--teacher-epochs" in out
    assert json.loads((folder / "diagnose.json").read_text())["findings"]
    # advice fits the run: a hinton-strong run is not told to try its own preset, nor a
    # teacher schedule it already has
    from kdbench.analysis.diagnose import from_records
    from kdbench.runs.store import read_records

    strong = resolve("hinton-strong")
    weak = next(f for f in from_records(read_records(folder), strong) if f.code == "weak-teacher")
    assert "--preset hinton" not in weak.try_next and "--teacher-epochs" not in weak.try_next
    assert "--patience" in weak.try_next


def test_record_checks_flag_early_stops_combined_loss_and_divergence():
    from kdbench.analysis.diagnose import from_records
    from kdbench.records import Record

    def rec(role, repeat, err, epochs=6, best=4, diverged=None, kind="model"):
        return Record(
            kind=kind,
            role=role,
            repeat=repeat,
            member=0,
            val_error=err,
            test_error=err,
            epochs=epochs,
            best_epoch=best,
            diverged_epoch=diverged,
        )

    records = []
    for r in range(3):
        records += [
            rec("teacher", r, 0.02),
            rec("student_hard", r, 0.03, best=1, epochs=3),  # best in epoch 1
            rec("student_from_teacher", r, 0.03),
            rec("student_from_ensemble", r, 0.03, diverged=2 if r == 0 else None),
            rec("ensemble", r, 0.02, kind="ensemble"),
        ]
    codes = {f.code for f in from_records(records, resolve("paper"))}
    assert codes == {"combined-monitor", "early-stop", "diverged"}
    codes = {f.code for f in from_records(records, resolve("hard-monitor", epochs=5))}
    assert codes == {"diverged"}  # fixed epochs: nothing stopped early


def test_models_at_the_epoch_cap_are_named_and_equal_stops_clear_the_monitor():
    from kdbench.analysis.diagnose import from_records
    from kdbench.records import Record

    def rec(role, repeat, epochs, best):
        return Record(kind="model", role=role, repeat=repeat, member=0, val_error=0.03,
                      test_error=0.03 + 0.001 * repeat + (role == "teacher") * 0.01 * repeat,
                      epochs=epochs, best_epoch=best, diverged_epoch=None)  # fmt: skip

    records = []
    for r in range(3):
        records += [
            rec("teacher", r, 12, 10),
            rec("student_hard", r, 50, 50),  # ran to the cap, still improving
            rec("student_from_teacher", r, 50, 50),
            rec("student_from_ensemble", r, 50, 50 if r else 44),  # one stopped improving
        ]
    found = {f.code: f for f in from_records(records, resolve("paper", monitor="train_loss"))}
    assert "epoch-cap" in found and "combined-monitor" not in found  # all stopped alike
    cap = found["epoch-cap"]
    assert "student_hard: 3 of 3 at the cap of 50" in cap.evidence
    assert "student_from_ensemble: 2 of 3" in cap.evidence and not cap.evidence.startswith(
        "teacher"
    )
    assert "; teacher:" not in cap.evidence
    assert cap.try_next == "a larger --max-epochs (now 50)"
    teachers = [rec("teacher", r, 20, 20) for r in range(3)] + records[1:]
    found = {f.code: f for f in from_records(teachers, resolve("paper", teacher_max_epochs=20))}
    assert "--teacher-max-epochs (now 20)" in found["epoch-cap"].try_next
    assert not [f for f in from_records(records, resolve("paper", epochs=50))
                if f.code == "epoch-cap"]  # fmt: skip  # fixed epochs: the user's choice


def test_a_gain_no_larger_than_a_controls_is_named():
    from kdbench.analysis.diagnose import from_records
    from kdbench.records import Record

    def rec(role, repeat, err):
        return Record(kind="model", role=role, repeat=repeat, member=0, val_error=err,
                      test_error=err, epochs=6, best_epoch=4, diverged_epoch=None)  # fmt: skip

    def records(smooth_gap):
        out = []
        noise = torch.Generator().manual_seed(1)
        for r in range(4):
            a, b, c, d, e = (0.001 * torch.randn(5, generator=noise)).tolist()
            out += [
                rec("teacher", r, 0.02 + a),
                rec("student_hard", r, 0.030 + b),
                rec("student_from_teacher", r, 0.031 + c),
                rec("student_from_ensemble", r, 0.025 + d),  # clearly better than hard
                rec("student_smooth", r, 0.025 + smooth_gap + e),
            ]
        return out

    cfg = resolve("paper", epochs=5)
    found = [f for f in from_records(records(0.0), cfg) if f.code == "control-explains"]
    assert len(found) == 1 and "ensemble" in found[0].title
    assert "smoothing (hard labels, smoothed)" in found[0].evidence
    # a control clearly worse than the distilled student explains nothing
    assert not [f for f in from_records(records(0.008), cfg) if f.code == "control-explains"]


def test_explain_runs_variants_and_reads_folders(tmp_path, healthy):
    folder, _ = healthy
    cmd = ["explain", "--out", str(tmp_path / "ex")]
    cmd += ["--variant", "hard-monitor", "--from", str(folder), "--quiet"]
    cmd += ["--train-limit", "1000", "--repeats", "2", "--members", "2", "--epochs", "1"]
    proc = kdbench(*cmd)
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "ex" / "explain.md").read_text()
    assert "| paper (run) |" in table and "| hard-monitor |" in table  # labelled by folder too
    saved = json.loads((tmp_path / "ex" / "explain.json").read_text())["variants"]
    assert [v["variant"] for v in saved] == ["paper (run)", "hard-monitor"]
    assert (tmp_path / "ex" / "hard-monitor" / "summary.json").is_file()
    assert (tmp_path / "ex" / "explain.png").is_file() and "explain.png" in table
    assert "n < 5: intervals and tests are not conclusive" in table
    # the --from run was made with other settings: named, not silently compared
    assert "settings differ beyond the presets" in table and "protocol.repeats" in table
    assert "protocol.repeats" in proc.stderr
    assert saved[1]["folder"] == "hard-monitor"  # inside the explain folder: named relative to it
    # `kdbench report` on the explain folder re-renders its runs and the table from their records
    (tmp_path / "ex" / "explain.md").unlink()
    proc = kdbench("report", str(tmp_path / "ex"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ex" / "explain.md").read_text() == table


def test_shared_variants_train_upstream_once_and_equal_variants_run_alone(tmp_path):
    """paper and hard-monitor differ only in distillation: explain trains their teachers and
    small networks once, and each variant's records equal the same preset run alone."""
    from kdbench.runs.store import read_records

    flags = dict(train_limit=1000, repeats=2, members=2, epochs=1, threads=1)
    configs = {name: resolve(name, **flags) for name in ("paper", "hard-monitor")}
    runs = explain.run_variants(configs, tmp_path / "ex")
    shared = [f for f in (tmp_path / "ex" / "shared").iterdir() if not f.name.startswith("small-")]
    assert len(shared) == 1
    trained = sorted(map(len, (v.trained for v in runs)))
    assert trained == [1, 3], "one variant trained upstream, the other reused it"
    folders = [v.folder for v in runs]
    alone, _ = reproduce(configs["hard-monitor"], tmp_path / "alone", measure_latency=False)

    def numbers(folder):
        return [{k: v for k, v in r.to_json().items() if k not in MEASURED}
                for r in read_records(folder)]  # fmt: skip

    assert numbers(folders[1]) == numbers(alone)
    explain.write(tmp_path / "ex", explain.collect(folders))  # same settings but the presets
    assert "differ beyond the presets" not in (tmp_path / "ex" / "explain.md").read_text()


def test_explain_grows_by_more_repeats_training_only_the_added_ones(tmp_path, monkeypatch):
    """`--repeats 2` on a finished 1-repeat explain: repeat 1's models only (upstream once,
    each variant's two distilled students: their monitors differ, so two stacks), and each
    variant then reports 2 repeats. (That a grown folder equals one made at that count from
    scratch: `test_grow.py` for a run, `test_sweep.py` for points sharing their upstream, as
    explain's variants do.)"""
    from kdbench.engine import trainer
    from kdbench.runs.store import read_records, read_summary

    flags = dict(train_limit=1000, members=2, epochs=1, threads=1)

    def configs(repeats):
        return {n: resolve(n, repeats=repeats, **flags) for n in ("paper", "hard-monitor")}

    explain.run_variants(configs(1), tmp_path / "ex")
    sizes, train = [], trainer.train
    monkeypatch.setattr(trainer, "train", lambda stack, *a, **k: sizes.append(stack.size)
                        or train(stack, *a, **k))  # fmt: skip
    runs = explain.run_variants(configs(2), tmp_path / "ex")
    assert sorted(sizes) == [1, 2, 2, 3]
    for run in runs:
        assert {r.repeat for r in read_records(run.folder)} == {0, 1}
        assert read_summary(run.folder).min_repeats == 2


def test_pattern_needs_both_students_and_significance():
    def summary(d1, p1, d2, p2):
        from kdbench.summary import Comparison

        def versus_hard(a, d, p):
            return Comparison(a, "student_hard", [0, 1, 2], 3, d, None, p, None, None, p_holm=p)

        return [
            versus_hard("student_from_teacher", d1, p1),
            versus_hard("student_from_ensemble", d2, p2),
        ]

    assert explain.pattern(summary(1.0, 0.001, 0.4, 0.01))["pattern"] == "reproduces"
    assert explain.pattern(summary(1.0, 0.001, 0.4, 0.2))["pattern"].startswith("same direction")
    assert explain.pattern(summary(-1.0, 0.001, -0.4, 0.01))["pattern"] == "reverses"
    assert explain.pattern(summary(1.0, 0.001, -0.4, 0.01))["pattern"] == "mixed"


def test_advice_fits_the_run():
    """Fixed epochs: no talk of stopping or --patience. T = 4: never advise '2-4'."""
    from kdbench.analysis.advice import lower_temperature as _lower_temperature
    from kdbench.analysis.diagnose import from_records
    from kdbench.records import Record

    def rec(role, repeat, err):
        return Record(kind="model", role=role, repeat=repeat, member=0, val_error=err,
                      test_error=err, epochs=3, best_epoch=1, diverged_epoch=None)  # fmt: skip

    records = [rec(role, r, 0.03 + 0.001 * r) for r in range(3)
               for role in ("teacher", "student_hard", "student_from_teacher",
                            "student_from_ensemble")]  # fmt: skip
    found = from_records(records, resolve("paper", epochs=3))
    text = " ".join(f.title + f.evidence + f.try_next for f in found)
    assert found and "--patience" not in text and "stopped" not in text
    assert "--patience" in " ".join(f.try_next for f in from_records(records, resolve("paper")))
    assert "2-4" not in _lower_temperature(4.0) and "(2, 1)" in _lower_temperature(4.0)
    assert "(5, 2.5)" in _lower_temperature(10.0)


def test_soft_targets_are_the_configured_losses_own(healthy, monkeypatch):
    """diagnose measures the targets the students were trained on: a loss whose targets are
    the teachers' one-hot votes has soft targets of entropy 0, whatever the temperature (the
    paper's formula at T = 2 would give a clearly positive entropy)."""
    from kdbench.analysis.diagnose import soft_targets_and_fidelity
    from kdbench.engine import losses
    from kdbench.protocol.arrays import splits_of
    from kdbench.runs.store import read_config

    class Votes(losses.PaperKD):
        def targets(self, teacher_logits, temperature):
            votes = torch.nn.functional.one_hot(teacher_logits.argmax(-1), teacher_logits.shape[-1])
            return votes.float().mean(0).eq(1).float()  # the teachers' unanimous class, or none

    folder, _ = healthy
    cfg = read_config(folder)
    splits = splits_of(cfg, folder)
    kd = soft_targets_and_fidelity(folder, cfg, splits)
    assert kd["entropy"]["teacher"] > 0.1  # the scenario: KD's targets at T = 2 are soft
    monkeypatch.setitem(losses.LOSSES, "votes", Votes)
    voted = soft_targets_and_fidelity(folder, cfg.with_overrides(loss="votes"), splits)
    assert voted["entropy"]["teacher"] == 0.0
    assert voted["entropy"]["ensemble"] == 0.0
    assert voted["fidelity"] == kd["fidelity"]  # fidelity compares with the models, not targets


def test_explain_under_fixed_epochs_skips_the_variants_that_equal_paper():
    from kdbench.protocol.presets import VARIANTS

    fixed = {name: resolve(name, epochs=3) for name in VARIANTS}
    kept, same = explain.distinct(fixed)
    # restore-best still chooses the best epoch's weights: not the same as paper's last
    assert list(kept) == ["paper", "paper-keras", "paper-softmax-head", "restore-best"]
    assert same == {"watch-error": "paper", "hard-monitor": "paper",
                    "paper-keras-train-loss": "paper-keras"}  # fmt: skip
    kept, same = explain.distinct({name: resolve(name) for name in VARIANTS})
    assert list(kept) == list(VARIANTS) and not same  # early stopping: all differ
