"""The run folder: resolved config, append-only records, checkpoints, atomic outputs.

Records are appended one line per finished model and fsynced before the run moves on; every
other file is written to a temporary name and renamed, so a crash never leaves a half file.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from kdbench.config import Config
from kdbench.engine.stack_model import Params
from kdbench.engine.trainer import Snapshot
from kdbench.errors import ConfigError, RunFolderError
from kdbench.records import Record, dumps, loads
from kdbench.roles import STACK_OF_ROLE, Role, StackName
from kdbench.runs.atomic import (  # noqa: F401 (re-exported: what other modules write with)
    atomic_write,
    link,
    read_derived,
    save_tensors,
    write_derived,
    write_json,
)
from kdbench.runs.checks import FIX, Stamps, stack_model, tensor_names, verify_stack
from kdbench.settings import config_diff
from kdbench.summary import Summary, Timing

CONFIG = "config.json"
RECORDS = "records.jsonl"
SUMMARY = "summary.json"
DIAGNOSIS = "diagnose.json"
RESOURCES = "resources.json"
TEACHER_LOGITS = "teacher_logits.safetensors"  # your own teacher's train, val and test logits


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_summary(folder: Path, summary: Summary) -> None:
    write_json(Path(folder) / SUMMARY, summary.to_json())


def read_summary(folder: Path) -> Summary:
    """A finished run's summary.json, typed; one clear error if it is missing or not one."""
    path = Path(folder) / SUMMARY
    if not path.is_file():
        raise RunFolderError(f"{folder} has no {SUMMARY}; finish the run (or resume it) first")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunFolderError(
            f"{path} is not valid JSON; re-render it with `kdbench report {folder}`"
        ) from None
    return Summary.from_json(raw, str(path))


def read_timing(folder: Path) -> Timing | None:
    """The wall time an earlier summary recorded (kept when a report is re-rendered), if any;
    read on its own, so a summary of an older format still gives it."""
    try:
        return Timing(**json.loads((Path(folder) / SUMMARY).read_text())["timing"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_records(folder: Path) -> list[Record]:
    """Every record of records.jsonl, each checked (fields, and the settings it was made under
    against config.json); a torn last line (a crash mid-append: no newline) is ignored, any other
    damaged line is an error naming it."""
    path = Path(folder) / RECORDS
    if not path.is_file():
        return []
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise RunFolderError(f"cannot read {path} ({exc.strerror})") from None
    lines.pop()  # after the last newline: nothing, or a line a crash cut short
    cfg = read_config(folder) if (Path(folder) / CONFIG).is_file() else None
    stamps = Stamps.of(cfg) if cfg is not None else None
    out: list[Record] = []
    seen: dict[tuple, int] = {}  # each record's key -> its line
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = Record.from_json(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RunFolderError(
                f"{where} is damaged (not a JSON record); restore the file or start a new --out"
            ) from None
        except RunFolderError as exc:
            raise RunFolderError(
                f"{where} is damaged ({exc}); restore the file or start a new --out"
            ) from None
        if stamps is not None:
            stamps.check(record, where)
        if record.key in seen:  # the one writer never repeats a record: an edited file
            raise RunFolderError(
                f"{where} repeats the record of line {seen[record.key]} ({record.role}, repeat"
                f" {record.repeat}, member {record.member}); it would be counted twice: remove"
                " one, or restore the file"
            )
        seen[record.key] = number
        member = record.member or 0  # an ensemble's record has none
        if cfg is not None and not (
            0 <= record.repeat < cfg.protocol.repeats and 0 <= member < cfg.protocol.members
        ):
            raise RunFolderError(
                f"{where} is a record of repeat {record.repeat}, member {record.member}, which"
                f" this run ({cfg.protocol.repeats} repeats of {cfg.protocol.members} members)"
                " does not have; restore the file"
            )
        out.append(record)
    return out


def read_run_config(folder: Path) -> dict[str, Any]:
    """A run folder's `config.json` (configuration, environment, start time), its
    configuration checked: the one place that parses it."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise RunFolderError(f"{folder} has no {CONFIG}: not a kdbench run folder")
    try:
        run_config = json.loads(path.read_text())
        config = run_config["config"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RunFolderError(
            f"{path} is unreadable; choose a new --out or delete the folder"
        ) from None
    try:
        Config.from_dict(config)
    except ConfigError as exc:
        raise RunFolderError(
            f"{path} holds a configuration this version cannot read ({exc}); use a new --out"
        ) from None
    return run_config


def read_config(folder: Path) -> Config:
    """The resolved configuration of a run folder (settings added since read as defaults)."""
    return Config.from_dict(read_run_config(folder)["config"])


_BEGUN_HERE: set[Path] = set()  # run folders this process started (wrote their config.json)


class RunStore:
    """One run folder. The same configuration resumes it; a different one is refused."""

    def __init__(self, folder: str | Path, run_config: dict[str, Any]):
        self.folder = Path(folder)
        self.run_config = _normalise(run_config)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.folder, prefix=".kdbench-write-test.")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise RunFolderError(
                f"cannot write to run folder {self.folder} ({exc.strerror}); choose another --out"
            ) from None
        existing = self.folder / CONFIG
        if existing.is_file():
            # settings added since that run read as their defaults
            old = _normalise(read_config(self.folder).to_dict())
            # the thread count changes speed, not numbers (benchmarks/busy.py): resume with any
            diff = [d for d in config_diff(old, self.run_config["config"]) if d != "threads"]
            if diff == ["protocol.repeats"]:
                self._grow(old["protocol"]["repeats"], self.run_config["config"])
            elif diff:  # the repeat count may grow: only the others are the difference
                raise RunFolderError(
                    f"{self.folder} holds a run with a different configuration"
                    f" ({', '.join(d for d in diff if d != 'protocol.repeats')}); use a new"
                    " --out to start fresh"
                )
            # resumed: an earlier process began it (not this one, as a sweep's distillation
            # begins its points and their reports then read them)
            self.resumed = self.folder.resolve() not in _BEGUN_HERE
        else:
            write_json(existing, self.run_config)
            _BEGUN_HERE.add(self.folder.resolve())
            self.resumed = False
        self.config = Config.from_dict(self.run_config["config"])
        self.stamps = Stamps.of(self.config)
        (self.folder / "checkpoints").mkdir(exist_ok=True)
        self._drop_torn_line()
        earlier = read_records(self.folder)
        self._seen = {r.key for r in earlier}
        # training time spent by earlier parts of a resumed run (its records are already here)
        self.earlier_seconds = sum(r.seconds or 0.0 for r in earlier)

    def _grow(self, held: int, config: dict[str, Any]) -> None:
        """More repeats than the folder holds: config.json says the new count (its start time and
        environment kept, the growth noted) and the study trains only the missing repeats (a
        model's seeds derive from its repeat index, so the run equals one made at that count
        from scratch). Fewer is refused: a report on part of a run would look like all of it."""
        asked = config["protocol"]["repeats"]
        if asked < held:
            raise RunFolderError(
                f"{self.folder} holds {held} repeats, more than the {asked} asked for; resume"
                f" with --repeats {held}, or read it with `kdbench report {self.folder}`"
            )
        grown = read_run_config(self.folder)
        grown["config"] = config
        grown.setdefault("grown", []).append(
            {"from_repeats": held, "to_repeats": asked, "at": _now()}
        )
        write_json(self.folder / CONFIG, grown)
        self.run_config = _normalise(grown)

    def _drop_torn_line(self) -> None:
        """A kill mid-append can leave a partial last line; cut it so appends stay valid JSONL."""
        path = self.folder / RECORDS
        if not path.is_file():
            return
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                os.ftruncate(fd, raw.rfind(b"\n") + 1)
            finally:
                os.close(fd)

    def append_record(self, record: Record) -> None:
        """Append one record, fsynced; a record already in the file (resume) is not repeated."""
        if record.key in self._seen:
            return
        self._seen.add(record.key)
        record = self.stamps.stamp(record)
        line = json.dumps(record.to_json(), separators=(",", ":")) + "\n"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW  # never through a symlink
        fd = os.open(self.folder / RECORDS, flags, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def checkpoint_path(folder: Path, name: StackName) -> Path:
        return Path(folder) / "checkpoints" / f"{StackName(name).file}.safetensors"

    def save_stack(self, name: StackName, params: Params, records: list[Record]) -> None:
        """One safetensors file per stack: each tensor under its model's name (weights and
        buffers, members on the first axis), and the stack's records (which member is which) in
        the metadata. The stack's snapshot, if any, is removed: the finished stack supersedes
        it."""
        names = stack_model(self.config, name).tensor_names()
        tensors = {n: p.detach().cpu().contiguous() for n, p in zip(names, params, strict=True)}
        stamped = [self.stamps.stamp(r) for r in records]
        save_tensors(self.checkpoint_path(self.folder, name), tensors, {"records": dumps(stamped)})
        self.snapshot_path(self.folder, name).unlink(missing_ok=True)

    @staticmethod
    def stack_size(folder: Path, name: StackName) -> int:
        """How many models the stack's checkpoint holds, from its metadata alone (0 if there is
        none, or it cannot be read: reading it whole then says why)."""
        try:
            with safe_open(str(RunStore.checkpoint_path(folder, name)), framework="pt") as fh:
                return len(loads((fh.metadata() or {})["records"]))
        except (OSError, SafetensorError, KeyError, ValueError, RunFolderError):
            return 0

    @staticmethod
    def snapshot_path(folder: Path, name: StackName) -> Path:
        return Path(folder) / "checkpoints" / f"{StackName(name).file}.snapshot.safetensors"

    def save_snapshot(self, name: StackName, snap: Snapshot) -> None:
        """Where a hard-label stack stands mid-training (`trainer.Snapshot`), stamped with the
        settings it was made under; replaced atomically, so a kill leaves the last whole one."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in snap.tensors.items()}
        meta = {"state": json.dumps(snap.state), "config_sha256": self.stamps.for_stack(name)}
        save_tensors(self.snapshot_path(self.folder, name), tensors, meta)

    def load_snapshot(self, name: StackName) -> Snapshot | None:
        """The stack's last snapshot, or None; one from other settings or damaged is refused."""
        path = self.snapshot_path(self.folder, name)
        if not path.is_file():
            return None
        fix = f"delete {path} to train that stack from its start"
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
            state = json.loads(meta["state"])
        except (OSError, SafetensorError, KeyError, ValueError):
            raise RunFolderError(f"{path} is damaged; {fix}") from None
        if not self.stamps.accepts(meta.get("config_sha256", ""), name):
            raise RunFolderError(f"{path} was made under other settings than config.json; {fix}")
        return Snapshot(tensors, state)

    def load_stack(self, name: StackName) -> tuple[Params, list[Record]] | None:
        return self.read_stack(self.folder, name)

    @staticmethod
    def read_stack(folder: Path, name: StackName) -> tuple[Params, list[Record]] | None:
        """A finished stack's weights and records, or None if it is not there (no pickle),
        verified on every read (`verify_stack`)."""
        path = RunStore.checkpoint_path(folder, name)
        if not path.is_file():
            return None

        cfg = read_config(folder) if (Path(folder) / CONFIG).is_file() else None
        model = stack_model(cfg, name) if cfg is not None else None
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                if "records" not in meta:
                    raise RunFolderError(
                        f"{path} was written by an older kdbench without stack records;"
                        " rerun the study into a new --out to export or measure it"
                    )
                records = loads(meta["records"])
                if model is not None:
                    names = model.tensor_names()
                    missing = sorted(set(names) - set(fh.keys()))
                    if missing:
                        raise RunFolderError(
                            f"{path} lacks tensors {', '.join(missing[:3])} of the architecture"
                            f" config.json names: the checkpoint does not belong to this run;"
                            f" {FIX}"
                        )
                else:  # no config.json: fully connected layers, named by their count
                    n_layers = len([k for k in fh.keys() if k.endswith(".weight")])  # noqa: SIM118
                    names = tensor_names(2 * n_layers)
                params = [fh.get_tensor(n) for n in names]
        except (SafetensorError, OSError, ValueError) as exc:
            raise RunFolderError(f"{path} is damaged ({exc}); {FIX}") from None
        except RunFolderError as exc:
            if "older kdbench" in str(exc) or "does not belong" in str(exc):
                raise
            raise RunFolderError(f"{path} holds damaged records ({exc}); {FIX}") from None
        verify_stack(params, records, name, cfg, path, model)
        return params, records


def load_members(run_dir: Path, role: str, repeat: int) -> list[list[torch.Tensor]]:
    """The weights of one row's model in a run folder: one member, or all of an ensemble."""
    if role not in {r.value for r in Role}:
        raise ConfigError(f"unknown role '{role}'; choose one of {', '.join(Role)}")
    stack = RunStore.read_stack(Path(run_dir), STACK_OF_ROLE[Role(role)])
    own = read_config(Path(run_dir)).model.own_teacher if role == Role.TEACHER else None
    if own is not None:
        raise RunFolderError(
            f"the teacher of {run_dir} is your own ({own}); kdbench did not train it and keeps"
            f" only its logits ({TEACHER_LOGITS}): use it from where it came"
        )
    if stack is None:
        raise RunFolderError(
            f"{run_dir} has no checkpoint for {role}; finish (or resume) the run first"
        )
    params, records = stack
    picks = [i for i, r in enumerate(records) if r.role == role and r.repeat == repeat]
    if not picks:
        repeats = sorted({r.repeat for r in records if r.role == role})
        raise ConfigError(f"no {role} for repeat {repeat} in {run_dir}; repeats there: {repeats}")
    return [[p[i] for p in params] for i in picks]
