"""The `kdbench` command run in the test process (Typer's CliRunner): the same command, exit
code and stderr as the console script, without a new interpreter importing torch for every call.
The console script itself runs as a subprocess where that matters (`quick_run`, the kill-and-resume
tests, `test_console_script_exit_codes`)."""

from __future__ import annotations

import contextlib
import types


def kdbench(*args: str, cwd=None) -> types.SimpleNamespace:
    """`kdbench ARGS` -> (returncode, stdout, stderr), as `subprocess.run` would give them."""
    from typer.testing import CliRunner

    from kdbench.cli.app import app

    with contextlib.chdir(cwd or "."):
        result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an unexpected error: show its traceback, not an exit code
    return types.SimpleNamespace(
        returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr
    )
