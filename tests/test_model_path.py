"""One model path: every reader of a run folder goes through the run's `StackModel`, so sizes,
counts and names come from the model, never re-derived from the hidden-size setting; and reading
is pure: no native code built, the caller's random state untouched. Each defect below failed
before the fully connected family went through that path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from tests.in_process import kdbench

SMALL = ["--dataset", "digits", "--repeats", "2", "--members", "2", "--epochs", "2",
         "--threads", "1", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def mlp50_run(tmp_path_factory):
    """A run whose student is `--student-arch mlp:50` (not the default 100 hidden units), its
    latency and resources measured."""
    run = tmp_path_factory.mktemp("mlp50") / "run"
    proc = kdbench("reproduce", *SMALL, "--student-arch", "mlp:50", "--teacher-hidden", "32",
                   "--out", run)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return run


def test_load_gives_back_a_student_named_by_its_architecture(mlp50_run):
    """`kdbench.load` refused any `--student-arch mlp:H` run ("implies [64, 100, 10]")."""
    import kdbench as api

    net = api.load(mlp50_run, "student_hard", repeat=1)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 50), (50, 10)]
    assert net.input_shape == (64,)


def test_resources_and_report_count_the_model_that_was_trained(mlp50_run):
    """resources.json and the report gave the default 100-unit net's counts for a 50-unit
    student, while its ONNX file was the right size."""
    res = json.loads((mlp50_run / "resources.json").read_text())["rows"]
    student = 64 * 50 + 50 + 50 * 10 + 10  # 3,760 parameters
    assert res["student_hard"]["params"] == student
    assert res["student_hard"]["macs"] == 64 * 50 + 50 * 10
    assert res["ensemble"]["params"] == 2 * student
    assert res["teacher"]["params"] == 64 * 32 + 32 + 32 * 10 + 10
    assert f"| {student:,} |" in (mlp50_run / "report.md").read_text()


CONV = [*SMALL, "--teacher-arch", "bncnn:4", "--student-arch", "cnn:2"]


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("conv") / "run"
    proc = kdbench("reproduce", *CONV, "--no-latency", "--out", run)
    assert proc.returncode == 0, proc.stderr
    return run


def test_reading_a_conv_run_builds_no_native_code(conv_run, tmp_path):
    """`load`, `report`, `diagnose`, `export` and `decide` of a conv run compiled the C++
    kernels (and printed the install-a-compiler hint where there was none). Here every
    compiler call would leave a mark, and the kernel cache is empty."""
    mark = tmp_path / "compiler-called"
    fake = tmp_path / "c++"
    fake.write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "CXX": str(fake), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(conv_run), str(copy)], check=True)
    script = (  # one interpreter for every read path (torch imports once)
        "import sys, kdbench\n"
        "from kdbench.cli.app import app\n"
        f"run = {str(copy)!r}\n"
        "for args in (['report', run, '--measure'], ['diagnose', run],"
        " ['export', run, '--role', 'teacher'], ['decide', run]):\n"
        "    try:\n"
        "        app(args, standalone_mode=False)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), (args, exc.code)\n"
        "kdbench.load(run, 'student_hard')\n"
        "kdbench.load(run, 'teacher')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "compiler" not in proc.stderr, proc.stderr
    assert (copy / "exports").is_dir() and (copy / "resources.json").is_file()
    assert not mark.exists()


def test_reading_leaves_the_callers_random_state_alone(conv_run, mlp50_run, tmp_path):
    """`kdbench.load` reset the caller's global seed (`torch.manual_seed(0)` while building a
    member); no read path may move it."""
    import shutil

    import kdbench as api

    copy = shutil.copytree(conv_run, tmp_path / "run")
    torch.manual_seed(2024)
    before = torch.get_rng_state()
    for run in (copy, mlp50_run):
        api.load(run, "teacher")
        api.load(run, "ensemble")
    assert kdbench("report", copy).returncode == 0
    assert kdbench("diagnose", copy).returncode == 0
    assert kdbench("export", copy, "--role", "student_hard").returncode == 0
    assert kdbench("decide", copy).returncode == 0
    assert torch.equal(torch.get_rng_state(), before)
