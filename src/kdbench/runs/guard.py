"""Who may write a folder: one kdbench process at a time, and only into a folder that is kdbench's.

A writer (`claim`) holds an advisory lock (`fcntl.flock`) on the folder itself for as long as it
works (a lock on a file in it would be lost with the file: deleting it let a second writer in);
`.kdbench.lock` only says who holds it. The kernel drops the lock when the process dies, however
it dies, so a killed run never leaves a stale lock. A second writer is refused, naming the
process that holds it; a reader (`unclaimed`) refuses a folder that is being written, instead of
reporting half a run as a result.

Before anything is written, `claim` refuses: an empty path or the filesystem root; a path that is
a file; a non-empty folder kdbench did not make (someone else's files are never overwritten); a
folder holding a symlink (a write through it would land outside the folder). Leftover `.*.tmp`
files of a write that was killed are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from kdbench.errors import RunFolderError

LOCK = ".kdbench.lock"
MARKER = ".kdbench"  # written into every folder kdbench claims: "this folder is kdbench's"
# files that mark a folder written by a kdbench from before the marker existed
OWN_FILES = ("config.json", "sweep-config.json", "explain.json", LOCK)

_held: dict[Path, tuple[int, int]] = {}  # folder -> (lock fd, depth): claims nest in a process


class FolderBusy(RunFolderError):
    """Another process is writing the folder."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "another process"
    return f"process {text}" if text else "another process"


def _program() -> str:
    """What the lock holder is, in words: `kdbench reproduce`, or your script's name."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if name in ("__main__.py", "kdbench", "-c"):
        return " ".join(["kdbench", *sys.argv[1:2]]) if name != "-c" else "python -c"
    return name


def check_path(folder: Path) -> Path:
    """The folder a writer may use, as given; an empty path, the root or a file is refused."""
    text = str(folder)
    if text.strip() in ("", "."):
        raise RunFolderError(
            "--out is empty: it would write the run into the current folder; give a folder name"
        )
    folder = Path(folder)
    if folder.resolve() == Path(folder.resolve().anchor):
        raise RunFolderError(f"--out {folder} is the filesystem root; give a folder of its own")
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--out {folder} is a file, not a folder; give a folder name")
    return folder


def check(folder: Path) -> Path:
    """What `claim` refuses, checked without writing anything: call it before long work."""
    folder = check_path(folder)
    _check_own(folder)
    return folder


def _kdbench_config(path: Path) -> bool:
    """Whether `path` is a config.json kdbench wrote (its settings under "config"), not another
    tool's file of that name (a model folder's config.json, say)."""
    import json

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(raw, dict)
        and isinstance(raw.get("config"), dict)
        and ("protocol" in raw["config"])
    )


def _check_own(folder: Path) -> None:
    """A non-empty folder must be one kdbench made; one holding a symlink is refused."""
    if not folder.is_dir():
        return
    entries = list(folder.iterdir())
    names = {e.name for e in entries}
    ours = (
        MARKER in names
        or bool(names & (set(OWN_FILES) - {"config.json"}))
        or ("config.json" in names and _kdbench_config(folder / "config.json"))
    )
    if entries and not ours:
        shown = ", ".join(sorted(names)[:4]) + (", …" if len(names) > 4 else "")
        raise RunFolderError(
            f"{folder} holds files kdbench did not write ({shown}); give an empty or new --out"
        )
    for sub in (folder, folder / "checkpoints"):
        if sub.is_symlink():
            raise RunFolderError(f"{sub} is a symlink; kdbench writes only into real folders")
        if sub.is_dir():
            for entry in sub.iterdir():
                if entry.is_symlink():
                    raise RunFolderError(
                        f"{entry} is a symlink: a write through it would land outside the run"
                        " folder; remove it and resume"
                    )


def no_links_inside(folder: Path, path: Path) -> None:
    """Refuse to write `path` inside `folder` through a symlink (a folder or the file itself):
    the write would land outside the run folder."""
    folder = Path(folder)
    for part in [Path(path), *Path(path).parents]:
        if part == folder or part in folder.parents:
            break
        if part.is_symlink():
            raise RunFolderError(
                f"{part} is a symlink: a write through it would land outside the run folder;"
                " remove it, or give --out outside the run folder"
            )


def _remove_leftovers(folder: Path) -> None:
    """Temporary files of an atomic write that a kill interrupted (never read, only in the way)."""
    for sub in (folder, folder / "checkpoints"):
        if sub.is_dir():
            for tmp in sub.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _unwritable(folder: Path, exc: OSError) -> RunFolderError:
    return RunFolderError(
        f"cannot write to run folder {folder} ({exc.strerror}); kdbench writes only where it"
        " may: choose another --out (or copy the run somewhere writable)"
    )


@contextlib.contextmanager
def claim(folder: Path) -> Iterator[Path]:
    """Hold `folder` for writing: checked, created, locked, its leftovers removed. Claims of the
    same folder nest within one process (a sweep's point, then its report)."""
    folder = check_path(folder)
    key = folder.resolve()
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield folder
        finally:
            _held[key] = (fd, _held[key][1] - 1)
        return
    _check_own(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise _unwritable(folder, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderBusy(
            f"{folder} is being written by {_holder(folder / LOCK)}; wait for it to finish,"
            " or use another --out"
        ) from None
    try:
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            who = os.open(folder / LOCK, flags, 0o644)
        except OSError as exc:
            raise _unwritable(folder, exc) from None
        try:
            os.write(who, f"{os.getpid()} ({_program()})".encode())
        finally:
            os.close(who)
        marker = folder / MARKER
        if not marker.exists():
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))
        _remove_leftovers(folder)
    except BaseException:
        os.close(fd)
        raise
    _held[key] = (fd, 1)
    try:
        yield folder
    finally:
        fd, depth = _held.pop(key)
        os.close(fd)  # releases the lock


def unclaimed(folder: Path) -> None:
    """For a reader: refuse a folder another process is writing right now."""
    folder = Path(folder)
    lock = folder / LOCK
    if folder.resolve() in _held or not folder.is_dir() or folder.is_symlink():
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FolderBusy(
            f"{folder} is being written by {_holder(lock)}: its results are not final; wait for"
            " it to finish"
        ) from None
    finally:
        os.close(fd)
