"""kdbench declares `requires-python >= 3.10`: the command line, imported and run under the
lowest Python it supports, where this machine has one (skipped, saying so, where it has not).
A fresh virtual environment of that Python gets the CLI's own dependencies (typer, rich, and
tomli below 3.11), and `kdbench presets` and `config show --config` (which parses TOML) run.
The training path needs torch, whose wheel for that Python is not on every machine: the floor
checked here is the language and the standard library."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FLOOR = "3.10"
ROOT = Path(__file__).resolve().parents[1]


def _floor_python() -> str | None:
    candidates = [shutil.which(f"python{FLOOR}")]
    candidates += sorted(
        glob.glob(os.path.expanduser(f"~/.pyenv/versions/{FLOOR}.*/bin/python{FLOOR}"))
    )
    for exe in filter(None, candidates):
        try:
            out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == f"({FLOOR.replace('.', ', ')})":
            return exe
    return None


def test_the_cli_runs_under_the_lowest_supported_python(tmp_path):
    exe = _floor_python()
    if exe is None:
        pytest.skip(f"no Python {FLOOR} on this machine: the floor is not checked here")
    assert sys.version_info >= (3, 10)
    venv = tmp_path / "venv"
    subprocess.run([exe, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    pip = subprocess.run([python, "-m", "pip", "install", "-q", "typer", "rich", "tomli"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    if pip.returncode != 0:
        pytest.skip(
            f"cannot install the CLI's dependencies for Python {FLOOR}: {pip.stderr[-200:]}"
        )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([python, "-m", "kdbench", "presets"], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "paper" in proc.stdout, proc.stderr
    toml = tmp_path / "t.toml"
    toml.write_text("[distill]\ntemperature = 3.0\n")
    proc = subprocess.run([python, "-m", "kdbench", "config", "show", "--config", str(toml)],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "temperature = 3.0" in proc.stdout, proc.stderr
