"""End to end through the installed console script, and the CLI's handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from kdbench.data import datasets as data
from kdbench.roles import ROWS
from tests.in_process import kdbench

KDBENCH = [sys.executable, "-m", "kdbench"]


def _run(*args, cwd=None):
    """kdbench in this process (Typer's CliRunner): the same command, exit code and stderr as
    the console script, without importing torch again for every call (the console script itself
    runs as a subprocess in `quick_run` and `test_console_script_exit_codes`). Size and latency
    measurement is tested in test_export, not here."""
    extra = ["--no-latency"] if args and args[0] == "reproduce" else []
    return kdbench(*args, *extra, cwd=cwd)


def test_console_script_exit_codes(tmp_path):
    """The installed entry point: a usage error exits 2 with one line, --version answers."""
    proc = subprocess.run([*KDBENCH, "reproduce", "--alpha", "2", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "--alpha" in proc.stderr and not (tmp_path / "r").exists()


def test_summary_meets_the_contract(quick_run):
    summary = json.loads((quick_run / "summary.json").read_text())
    assert set(summary["rows"]) == set(ROWS)
    for name in ROWS:
        row = summary["rows"][name]
        assert len(row["errors_pct"]) == 2
        assert all(0 <= e <= 100 for e in row["errors_pct"])
        assert row["mean_pct"] == pytest.approx(sum(row["errors_pct"]) / 2, abs=1e-4)
        lo, hi = row["ci95_pct"]
        assert row["std_pct"] >= 0 and lo <= row["mean_pct"] <= hi
        assert row["mean_pct"] < 50, f"{name} did not learn: {row['mean_pct']}"
    assert summary["timing"]["total_seconds"] > 0
    for name in ("table.md", "table.csv", "figure.png", "figure.svg", "report.md", "config.json"):
        assert (quick_run / name).stat().st_size > 0, name
    assert (quick_run / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_records_one_line_per_trained_model(quick_run):
    lines = (quick_run / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    models = [r for r in records if r["kind"] == "model"]
    # per repeat: 1 teacher + 3 members + 3 students
    assert len(models) == 2 * 7
    for rec in models:
        for key in (
            "repeat",
            "role",
            "member",
            "seed",
            "epochs",
            "best_epoch",
            "val_error",
            "test_error",
            "seconds",
        ):
            assert key in rec, key
        assert rec["epochs"] == 2 and len(rec["history"]) == 2
    members = sorted((r["repeat"], r["member"]) for r in models if r["role"] == "ensemble")
    assert members == [(r, m) for r in range(2) for m in range(3)]
    # the three students of a repeat share their seed; different repeats do not
    for r in range(2):
        seeds = {x["seed"] for x in models if x["repeat"] == r and x["role"].startswith("student")}
        assert len(seeds) == 1
    teacher_seeds = {x["seed"] for x in models if x["role"] == "teacher"}
    assert len(teacher_seeds) == 2


def test_ensemble_row_is_the_averaged_ensemble_not_a_member(quick_run):
    records = [json.loads(x) for x in (quick_run / "records.jsonl").read_text().splitlines()]
    summary = json.loads((quick_run / "summary.json").read_text())
    combined = [r["test_error"] for r in records if r["kind"] == "ensemble"]
    assert summary["rows"]["ensemble"]["errors_pct"] == pytest.approx(
        [100 * e for e in combined], abs=1e-4
    )


def test_report_rerenders_from_records(quick_copy):
    before = json.loads((quick_copy / "summary.json").read_text())
    (quick_copy / "report.md").unlink()
    proc = _run("report", str(quick_copy))
    assert proc.returncode == 0, proc.stderr
    after = json.loads((quick_copy / "summary.json").read_text())
    assert after["rows"] == before["rows"]
    assert "Table 1" in (quick_copy / "report.md").read_text()


def test_same_folder_with_other_config_is_refused(quick_copy):
    proc = _run(
        "reproduce",
        "--train-limit",
        "2000",
        "--repeats",
        "2",
        "--members",
        "3",
        "--epochs",
        "2",
        "--alpha",
        "0.5",
        "--out",
        str(quick_copy),
        "--quiet",
    )
    assert proc.returncode == 2
    assert "distill.alpha" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--temperature", "0"], "temperature"),
        (["--alpha", "2"], "alpha"),
        (["--student-hidden", "abc"], "--student-hidden"),
        (["--repeats", "0"], "repeats"),
        (["--dataset", "cifar"], "unknown dataset"),
        (["--train-limit", "1"], "train-limit"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, needle):
    out = tmp_path / "run"
    proc = _run("reproduce", "--quiet", "--out", str(out), *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


def test_batch_larger_than_training_set(tmp_path):
    out = tmp_path / "run"
    proc = _run(
        "reproduce", "--quiet", "--out", str(out), "--train-limit", "100", "--batch-size", "500"
    )
    assert proc.returncode == 2 and "--batch-size" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = _run(
        "reproduce",
        "--quiet",
        "--out",
        str(blocker / "run"),
        "--train-limit",
        "500",
        "--epochs",
        "1",
        "--repeats",
        "1",
        "--members",
        "1",
    )
    assert proc.returncode == 2 and "cannot write to run folder" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_corrupt_data_is_a_runtime_error(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for stem in data.FILES.values():
        (data_dir / f"{stem}.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    out = tmp_path / "run"
    proc = _run(
        "reproduce",
        "--quiet",
        "--out",
        str(out),
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(data_dir),
    )
    assert proc.returncode == 1 and "not a valid gzip file" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_diverged_models_are_excluded_with_a_visible_warning(tmp_path):
    out = tmp_path / "run"
    proc = _run(
        "reproduce",
        "--quiet",
        "--out",
        str(out),
        "--train-limit",
        "500",
        "--repeats",
        "2",
        "--members",
        "2",
        "--epochs",
        "1",
        "--lr",
        "1e30",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diverged"], "an absurd learning rate must be recorded as diverged"
    assert all(row["n"] == 0 for row in summary["rows"].values())
    report = (out / "report.md").read_text()
    assert "diverged" in report and "excluded from the statistics" in report


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_one_clear_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    proc = _run("reproduce", "--device", "cuda", "--train-limit", "600", "--out", str(out))
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "no CUDA GPU" in proc.stderr and "--device cpu" in proc.stderr
    assert not out.exists()


def test_cli_behaves_like_its_peers(tmp_path):
    """--version, a top-level help that describes the tool, markup that keeps [ray], close
    names suggested, and report/diagnose on a sweep folder saying what to do instead."""
    from kdbench import __version__

    assert _run("--version").stdout.strip() == f"kdbench {__version__}"
    top = _run("--help").stdout
    assert "hard labels" in top and "parses options" not in top
    assert "kdbench[ray]" in _run("sweep", "--help").stdout.replace("\n", "").replace(" ", "")
    options = _run("reproduce", "--help").stdout  # boolean options read as flags
    assert "<bool>" not in options and "--restore-best / --keep-last" in options
    assert "-q, --quiet" in options and "--temperature <float>" in options
    bad = _run("reproduce", "--preset", "paper-kera")
    assert bad.returncode == 2 and "did you mean paper-keras" in bad.stderr
    bad = _run("sweep", "--out", str(tmp_path / "s"), "--grid", "temprature=2")
    assert bad.returncode == 2 and "did you mean temperature" in bad.stderr
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep-config.json").write_text("{}")
    proc = _run("diagnose", str(sweep))
    assert proc.returncode != 0 and "is a sweep folder" in proc.stderr
    assert "sweep.md" in proc.stderr
    proc = _run("report", str(sweep))  # report re-renders a finished sweep; this one is not
    assert proc.returncode == 2 and "not a finished sweep" in proc.stderr


def test_results_go_to_stdout_and_json_is_json_only(tmp_path):
    """`reproduce` prints its table, folder and answer on stdout (progress and notes on
    stderr); `--json` prints summary.json and nothing else; `sweep` prints its table, or
    sweep.json."""
    import json

    from tests.in_process import kdbench

    small = ["--dataset", "digits", "--repeats", "2", "--members", "2", "--epochs", "1",
             "--teacher-hidden", "32", "--student-hidden", "8", "--threads", "1",
             "--quiet"]  # fmt: skip
    out = tmp_path / "run"
    proc = kdbench("reproduce", *small, "--no-latency", "--out", out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("| Model | Measured mean")
    assert lines[-2].startswith(f"{out}  (") and lines[-1].startswith("Answer for")
    proc = kdbench("reproduce", "--repeats", "2", "--json", "--quiet", "--out", out)
    assert json.loads(proc.stdout) == json.loads((out / "summary.json").read_text())
    sweep = tmp_path / "sweep"
    proc = kdbench("sweep", *small[:-1], "--grid", "temperature=2,4", "--out", sweep)
    assert proc.returncode == 0, proc.stderr
    assert "| temperature |" in proc.stdout and proc.stdout.strip().endswith("sweep.md")
    # the progress lines say which points train and which point reports
    assert "stack 1/1: the distilled students of temperature=2, temperature=4" in proc.stderr
    assert "point 2/2 temperature=4: its report" in proc.stderr
    proc = kdbench("sweep", *small, "--grid", "temperature=2,4", "--json", "--out", sweep)
    assert json.loads(proc.stdout)["grid"] == {"temperature": [2.0, 4.0]}


def test_sweep_and_explain_take_every_setting_reproduce_takes():
    """One vocabulary: every setting flag of `reproduce` is a flag of `sweep` and `explain`."""
    import click
    import typer

    from kdbench.cli.app import app
    from kdbench.cli.options import FLAGS

    group = typer.main.get_command(app)
    ctx = click.Context(group)
    for name in ("reproduce", "sweep", "explain"):
        command = group.get_command(ctx, name)
        flags = {opt for p in command.params for opt in p.opts}
        missing = [f.name for f in FLAGS.values() if f.name not in flags]
        assert not missing, f"{name} lacks {missing}"


def test_flags_are_named_as_their_settings_and_old_names_still_work(tmp_path):
    """`--lr` set `learning_rate` and `--teacher` set `own_teacher`: every flag is now its
    setting's name with dashes; the old names work with a note; both at once is an error."""
    from kdbench.cli.options import FLAGS
    from tests.in_process import kdbench

    assert all(f.name == "--" + s.replace("_", "-") for s, f in FLAGS.items())
    proc = kdbench("config", "show", "--lr", "0.01")
    assert proc.returncode == 0 and "learning_rate = 0.01" in proc.stdout
    assert "--lr is now --learning-rate" in proc.stderr
    same = kdbench("config", "show", "--learning-rate", "0.01")
    assert same.stdout == proc.stdout and same.stderr == ""
    both = kdbench("config", "show", "--lr", "0.01", "--learning-rate", "0.1")
    assert both.returncode == 2 and "give it once" in both.stderr
    assert (
        "--teacher is now --own-teacher"
        in kdbench("config", "show", "--teacher", str(tmp_path / "t.onnx")).stderr
    )
    # sizes as in mlp:500,400,300 (dashes still read)
    commas = kdbench("config", "show", "--teacher-hidden", "64,32")
    assert commas.stdout == kdbench("config", "show", "--teacher-hidden", "64-32").stdout
    assert "teacher_hidden = [64, 32]" in commas.stdout
