"""The run folder: resolved config, append-only records, checkpoints, atomic outputs.

Records are appended one line per finished model and fsynced before the run moves on; every
other file is written to a temporary name and renamed, so a crash never leaves a half file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from kdbench.config import config_diff
from kdbench.errors import RunFolderError

CONFIG = "config.json"
RECORDS = "records.jsonl"


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


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


def read_records(folder: Path) -> list[dict[str, Any]]:
    """Every complete line of records.jsonl; a torn last line (a crash mid-write) is ignored."""
    path = Path(folder) / RECORDS
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class RunStore:
    """One run folder. Refuses a folder that holds a different configuration."""

    def __init__(self, folder: str | Path, run_config: dict[str, Any]):
        self.folder = Path(folder)
        self.run_config = _normalise(run_config)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / ".kdbench-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunFolderError(
                f"cannot write to run folder {self.folder} ({exc.strerror}); choose another --out"
            ) from None
        existing = self.folder / CONFIG
        if existing.is_file():
            try:
                old = json.loads(existing.read_text()).get("config", {})
            except json.JSONDecodeError:
                old = None
            if old is None:
                raise RunFolderError(
                    f"{existing} is unreadable; choose a new --out or delete the folder"
                )
            diff = config_diff(old, self.run_config["config"])
            if diff:
                raise RunFolderError(
                    f"{self.folder} holds a run with a different configuration"
                    f" ({', '.join(diff)}); use a new --out to start fresh"
                )
        if read_records(self.folder):
            raise RunFolderError(
                f"{self.folder} already holds results of this configuration;"
                " use a new --out (resuming is not supported yet)"
            )
        write_json(existing, self.run_config)
        (self.folder / "checkpoints").mkdir(exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / name

    def append_record(self, record: dict[str, Any]) -> None:
        with open(self.folder / RECORDS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def save_checkpoint(self, name: str, records: list[dict], params: list[torch.Tensor]) -> None:
        """One safetensors file per stack; tensor names say repeat, role, member and layer."""
        tensors = {}
        for i, rec in enumerate(records):
            key = f"{rec['role']}/r{rec['repeat']}/m{rec['member']}"
            for j in range(0, len(params), 2):
                tensors[f"{key}/layer{j // 2}.weight"] = params[j][i].detach().cpu().contiguous()
                tensors[f"{key}/layer{j // 2}.bias"] = params[j + 1][i, 0].detach().cpu().clone()
        path = self.folder / "checkpoints" / f"{name.replace(' ', '_')}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
