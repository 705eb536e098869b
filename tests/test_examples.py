"""Every example in examples/ runs, in its short form (KDBENCH_EXAMPLE=short: the same steps on
less data and fewer repeats), from a fresh folder, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HELPERS = {"tiny_nets.py"}  # imported by the examples, not run
SCRIPTS = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh")
                 and p.name not in HELPERS)  # fmt: skip
# what each prints when it worked (beyond exiting 0)
SAYS = {
    "should_i_distil.sh": "**Answer for tiny_nets:TinyNet:**",
    "make_images.py": "training and",
    "own_data.py": "report:",
    "own_module.py": "back from",
    "own_teacher.py": "student test accuracy",
}


def test_every_example_is_run_and_checked():
    assert set(SCRIPTS) == set(SAYS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs(name, tmp_path):
    path = EXAMPLES / name
    cmd = ["bash", str(path)] if path.suffix == ".sh" else [sys.executable, str(path)]
    env = {**os.environ, "KDBENCH_EXAMPLE": "short"}
    got = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    assert SAYS[name] in got.stdout, got.stdout[-2000:]


def test_examples_use_only_the_public_api():
    """The examples imported `kdbench.data.datasets`: a user copying them depended on an
    internal module. Only `import kdbench` and names in `kdbench.__all__`."""
    import ast

    import kdbench

    for path in sorted(EXAMPLES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kdbench"):
                assert node.module == "kdbench", f"{path.name} imports {node.module}"
                assert {a.name for a in node.names} <= set(kdbench.__all__), path.name
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("kdbench")]
                assert all(n == "kdbench" for n in names), f"{path.name} imports {names}"
