"""How a file of a run folder is written: whole or not at all (a temporary name, fsynced,
renamed), readable by the rest of a team, never through a planted symlink; and the files derived
from a source the configuration names by hash. `store` names every file and calls these."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would make results unreadable to the rest of a team
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def write_derived(path: Path, tensors: dict[str, torch.Tensor], source_sha256: str) -> None:
    """A file derived from something the configuration names by hash (your teacher's logits,
    your arrays), with that hash in its metadata so it is never used for another source."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, save(tensors, metadata={"source_sha256": source_sha256}))


def read_derived(
    path: Path, source_sha256: str, device: str = "cpu", legacy_ok: bool = False
) -> dict | None:
    """The tensors of a derived file made from `source_sha256`; None when the file is missing,
    damaged or made from another source (the caller recomputes and rewrites it). A file from
    before sources were recorded (no hash in it) counts only with `legacy_ok`: where the run's
    config.json already names this same source."""
    if not path.is_file() or path.is_symlink():
        return None
    try:
        with safe_open(str(path), framework="pt", device=device) as fh:
            recorded = (fh.metadata() or {}).get("source_sha256")
            if recorded != source_sha256 and not (recorded is None and legacy_ok):
                return None
            return {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except (OSError, SafetensorError):
        return None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """A safetensors file written whole or not at all: a temporary name, fsynced, renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover, or a symlink planted there: never written through
    try:
        save_file(tensors, str(tmp), metadata=metadata)
    except SafetensorError as exc:  # safetensors reports a full disk as its own error
        tmp.unlink(missing_ok=True)
        code = errno.ENOSPC if "No space" in str(exc) else errno.EIO
        raise OSError(code, f"cannot write the checkpoint ({exc})", str(path)) from None
    os.chmod(tmp, 0o644)  # safetensors creates 0600; a run folder is read by a team
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def link(src: Path, dst: Path) -> None:
    """dst becomes the same file as src: a hard link (no extra disk), else an atomic copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
