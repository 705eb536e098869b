"""The conv fast path's compiled kernels (`direct_conv.cpp`), and the crops and flips of
`--augment`: built once per machine with the system's C++ compiler, cached, and loaded with
ctypes.

Why compiled: a convolution of a few channels is memory-bound as im2col + batched matmul (the
columns are copied out and read back); a direct kernel with the batch innermost reads each input
once and runs near the CPU's matmul peak (benchmarks/README.md). Why ctypes and not a torch C++
extension: no torch headers (it builds in about 2 s, not a minute) and nothing to build at
install time. Where there is no compiler, or `KDBENCH_NATIVE=0`, the im2col path runs instead
(the same functions up to float rounding); `state()` says which, and a run records it.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("direct_conv.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
SWITCH = "KDBENCH_NATIVE"  # "0": never build or load the kernels

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_state: str | None = None  # None until a conv net first asked for the kernels


def _cpu() -> str:
    """What the binary was tuned for (-march=native): the CPU's model and flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(keep)))


def _cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "kdbench" / "native"


def _private(folder: Path) -> Path:
    """`folder`, made if missing (mode 0700), refused unless this user owns it and nobody else
    may write to it or to the folders above it up to the cache root: a library another user
    could plant there would run as this user."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for part in (folder, folder.parent):
        st = part.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise RuntimeError(
                f"{part} is not this user's alone (owner {st.st_uid}, mode"
                f" {oct(st.st_mode & 0o777)}); set XDG_CACHE_HOME to a private folder"
            )
    return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(target: Path) -> bool:
    """Whether `target` is the library this process's kdbench built: its SHA-256 as recorded
    beside it when it was built (a planted, truncated or foreign file is rebuilt)."""
    record = target.with_suffix(".sha256")
    try:
        return target.is_file() and record.read_text().strip() == _sha256(target)
    except OSError:
        return False


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _build(compiler: str) -> tuple[Path, str]:
    """The cached library for this source, compiler and CPU: built if missing or not the one
    recorded (atomically, under a lock, in a folder only this user can write), verified
    before it is loaded."""
    lines = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.splitlines()
    version = lines[0].strip() if lines and lines[0].strip() else Path(compiler).name
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), *FLAGS, version, _cpu()]).encode()
    ).hexdigest()[:16]
    folder = _private(_cache())
    target = folder / f"direct_conv-{key}.so"
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then find it
        if not _verified(target):
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
            os.close(fd)
            try:
                done = subprocess.run(
                    [compiler, *FLAGS, str(SOURCE), "-o", tmp],
                    capture_output=True, text=True, timeout=300,
                )  # fmt: skip
                if done.returncode != 0:
                    last = done.stderr.strip().splitlines()[-1:] or ["no message"]
                    raise RuntimeError(f"{compiler} failed: {last[0]}")
                digest = _sha256(Path(tmp))
                os.replace(tmp, target)
                record = target.with_suffix(".sha256")
                fd, tmp_record = tempfile.mkstemp(dir=folder)
                with os.fdopen(fd, "w") as fh:
                    fh.write(digest)
                os.replace(tmp_record, record)
            finally:
                Path(tmp).unlink(missing_ok=True)
        if not _verified(target):  # changed between build and load: never load it
            raise RuntimeError(f"{target} does not match the library kdbench built")
    return target, version


def _declare(lib: ctypes.CDLL) -> None:
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.conv_forward.argtypes = [p, p, p, p] + [i] * 8
    lib.conv_input_grad.argtypes = [p, p, p] + [i] * 8
    lib.conv_weight_grad.argtypes = [p, p, p] + [i] * 8
    lib.pool_forward.argtypes = [p, p, p] + [i] * 7
    lib.pool_backward.argtypes = [p, p, p] + [i] * 7
    lib.crop_flip.argtypes = [p, p, p, p] + [i] * 7
    for f in (lib.conv_forward, lib.conv_input_grad, lib.conv_weight_grad, lib.pool_forward,
              lib.pool_backward, lib.crop_flip):  # fmt: skip
        f.restype = None


def kernels() -> ctypes.CDLL | None:
    """The loaded kernels, or None where they cannot be had (the reason in `state()`); built on
    the first call in a process, said once on stderr when unavailable."""
    global _lib, _state
    if _state is not None:  # decided: every later call (each layer of each step) returns here
        return _lib
    with _lock:
        if _state is not None:
            return _lib
        if os.environ.get(SWITCH, "1") == "0":
            _state = f"im2col ({SWITCH}=0)"
            return None
        compiler = _compiler()
        try:
            if compiler is None:
                raise RuntimeError("no C++ compiler (c++, g++ or $CXX) found")
            path, version = _build(compiler)
            lib = ctypes.CDLL(str(path))
            _declare(lib)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _state = f"im2col (compiled kernels unavailable: {exc})"
            print(
                f"kdbench: conv nets (and --augment) take the slower path: {exc}; install a"
                " C++ compiler (e.g. apt-get install g++) for the compiled kernels",
                file=sys.stderr,
            )
            return None
        _lib, _state = lib, f"compiled ({version})"
        return _lib


def state() -> str | None:
    """Which conv path this process ran ('compiled (compiler)' or 'im2col (why)'); None if no
    conv net asked."""
    return _state


def threads() -> int:
    """The kernels use as many threads as torch (`--threads`)."""
    return torch.get_num_threads()
