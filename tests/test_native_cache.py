"""The compiled-kernel cache loads only what it built: a library planted or truncated at the
cache name is rebuilt (its SHA-256 is recorded when kdbench builds it), a cache folder others
may write to is refused (the im2col path then, one line on stderr), and a compiler whose
`--version` prints nothing still builds. Each case in its own process (the kernels are loaded
once per process) with its own XDG_CACHE_HOME."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

STATE = "from kdbench.engine import native; native.kernels(); print(native.state())"

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")),
    reason="no C++ compiler here",
)


def _state(cache: Path, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "KDBENCH_NATIVE": "1", **env}
    return subprocess.run([sys.executable, "-c", STATE], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _libraries(cache: Path) -> list[Path]:
    return sorted((cache / "kdbench" / "native").glob("direct_conv-*.so"))


def test_a_planted_or_truncated_library_is_rebuilt_not_loaded(tmp_path):
    first = _state(tmp_path)
    assert first.stdout.startswith("compiled"), first.stderr
    (lib,) = _libraries(tmp_path)
    built = lib.read_bytes()
    for planted in (b"", b"\x7fELF not the library kdbench built"):
        lib.write_bytes(planted)
        again = _state(tmp_path)
        assert again.stdout.startswith("compiled"), again.stderr
        assert lib.read_bytes() == built  # rebuilt: the same bytes the compiler gives


def test_a_cache_others_may_write_to_is_refused_with_one_line(tmp_path):
    folder = tmp_path / "kdbench" / "native"
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    got = _state(tmp_path)
    assert got.stdout.startswith("im2col (compiled kernels unavailable:"), got.stdout
    assert "is not this user's alone" in got.stdout
    lines = [ln for ln in got.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "slower path" in lines[0], got.stderr
    assert not _libraries(tmp_path)


def test_a_compiler_that_prints_no_version_still_builds(tmp_path):
    real = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    quiet = tmp_path / "quiet-c++"
    quiet.write_text(f'#!/bin/sh\n[ "$1" = --version ] && exit 0\nexec {real} "$@"\n')
    quiet.chmod(quiet.stat().st_mode | stat.S_IEXEC)
    got = _state(tmp_path / "cache", CXX=str(quiet))
    assert got.stdout.strip() == "compiled (quiet-c++)", (got.stdout, got.stderr)
