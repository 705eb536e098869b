"""The README is a landing page: small enough to read in a minute, its first lines the two
commands for a fresh machine and the test command, and every `kdbench` command it shows one
the command line accepts (its flags exist: parsed with `--help`, which exits before running)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.in_process import kdbench

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MOST = 12 * 1024  # bytes


def _commands(text: str) -> list[str]:
    """`kdbench …` in the code blocks (continued lines joined, comments dropped) and inline."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("kdbench "):
                found.append(line)
    found += [c for c in re.findall(r"`(kdbench [^`]+)`", text) if "…" not in c]
    return found


def test_the_readme_is_a_landing_page():
    assert len(README.encode()) <= MOST, f"README.md is {len(README.encode())} bytes"
    lines = README.splitlines()
    assert lines[3].startswith("pip install") and lines[4].startswith("kdbench reproduce")
    assert "Tests: `python -m pytest`" in README[:600]
    for heading in ("## Install", "## In 30 seconds", "## Your model, your teacher, your data",
                    "## The bottom line so far"):  # fmt: skip
        assert heading in README
    first_screen = README[: README.index("## The bottom line so far") + 1]
    assert "pip install ." in first_screen and "--student-arch" in first_screen


@pytest.mark.parametrize("command", _commands(README))
def test_every_command_it_shows_parses(command, tmp_path):
    args = [{"RUN": "runs/example", "RUN…": "runs/example"}.get(a, a)
            for a in shlex.split(command)[1:]]  # fmt: skip
    proc = kdbench(*args, "--help", cwd=tmp_path)  # a slip that ran would write only there
    assert proc.returncode == 0, f"{command}: {proc.stderr or proc.stdout}"
