"""One record per trained model (and per combined ensemble): the single schema of
`records.jsonl` and of the records kept in each checkpoint's metadata.

Version 1 (no `version` field) is what kdbench wrote before this type existed; it reads as is.
Version 2 adds `copies_test_error` (teachers trained along with their student) and `version`.
Version 3 adds `config_sha256`: the settings the model was trained under
(`settings.settings_sha256`), so a run folder whose config.json was changed afterwards is refused.
Version 4 adds what training cost (`engine.work`, `engine.meter`): `train_macs`, `target_macs`,
the stack's `peak_memory_bytes` and `memory_kind`, and `energy_joules` where measured; `seconds`
is now the model's share of its stack's time by counted work (before: an equal share);
`label_smoothing` is a smoothing control's epsilon, and the control roles are new.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from kdbench.errors import RunFolderError
from kdbench.roles import CONTROL_ROLES, ROWS, Role

VERSION = 4
MODEL, ENSEMBLE = "model", "ensemble"  # the two kinds of record
# what the machine measured while training, not what training computed: a rerun on the same
# machine gives the same records but for these
MEASURED = ("seconds", "peak_memory_bytes", "memory_kind", "energy_joules", "threads")
_KEPT_WHEN_NONE = ("member", "diverged_epoch")  # written as null; other None fields are left out


@dataclass
class Record:
    kind: str  # MODEL (one network) or ENSEMBLE (the members of one repeat, combined)
    repeat: int
    role: Role
    member: int | None  # ensemble member index (0 for single models); None for an ensemble
    diverged_epoch: int | None
    val_error: float  # fraction
    test_error: float  # fraction
    seed: int | None = None  # init seed (models)
    shuffle_seed: int | None = None
    epochs: int | None = None
    best_epoch: int | None = None
    seconds: float | None = None  # this model's share of its stack's wall time
    history: list[dict[str, float]] | None = None  # per epoch: train/val loss, val error
    members: int | None = None  # how many members an ENSEMBLE record combines
    # teacher_updates = joint: test error of the student's teacher copies when it stopped
    copies_test_error: list[float] | None = None
    config_sha256: str | None = None  # set by the run folder's store when it is written
    # what training it cost: MACs of its own training (forward and backward passes, validation)
    train_macs: int | None = None
    # MACs its teachers ran for it: frozen, their passes that made its soft targets; trained
    # along (joint), their copies' training
    target_macs: int | None = None
    peak_memory_bytes: int | None = None  # its stack's peak, measured as `memory_kind` says
    memory_kind: str | None = None  # a key of engine.meter.MEMORY_KINDS
    energy_joules: float | None = None  # its share of its stack's energy, where measured
    label_smoothing: float | None = None  # a smoothing control's epsilon (`protocol.controls`)
    threads: int | None = None  # CPU threads its stack trained on (`protocol.threads`)
    version: int = field(default=VERSION)

    def __post_init__(self) -> None:
        self.role = Role(self.role)

    @property
    def key(self) -> tuple:
        """What identifies a record within a run (a resumed run writes each key once)."""
        return (self.kind, self.role, self.repeat, self.member)

    @property
    def is_model(self) -> bool:
        return self.kind == MODEL

    def to_json(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        raw["role"] = self.role.value
        return {k: v for k, v in raw.items() if v is not None or k in _KEPT_WHEN_NONE}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Record:
        """A record read back, its fields checked: a damaged one is a RunFolderError saying
        what is wrong (the caller names the file and line)."""
        if not isinstance(raw, dict):
            raise RunFolderError(f"a record must be a JSON object, not {type(raw).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise RunFolderError(
                f"a record has fields this kdbench does not know ({sorted(unknown)});"
                " upgrade kdbench to read this run"
            )
        missing = sorted(set(_REQUIRED) - set(raw))
        if missing:
            raise RunFolderError(f"a record lacks {', '.join(missing)}")
        for name, kinds in _TYPES.items():
            value = raw.get(name)
            if value is None and name in _OPTIONAL:
                continue
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise RunFolderError(f"a record's {name} is {value!r}, not a valid value")
        if raw["kind"] not in (MODEL, ENSEMBLE):
            raise RunFolderError(f"a record's kind is {raw['kind']!r}, not {MODEL} or {ENSEMBLE}")
        if raw["role"] not in {r.value for r in Role}:
            raise RunFolderError(f"a record's role is {raw['role']!r}, not a row of Table 1")
        return cls(**{"version": 1, **raw})


_REQUIRED = ("kind", "repeat", "role", "member", "diverged_epoch", "val_error", "test_error")
_TYPES: dict[str, tuple] = {
    "kind": (str,), "repeat": (int,), "role": (str,), "member": (int,), "diverged_epoch": (int,),
    "val_error": (int, float), "test_error": (int, float), "epochs": (int,),
    "best_epoch": (int,), "seconds": (int, float), "config_sha256": (str,),
    "train_macs": (int,), "target_macs": (int,), "peak_memory_bytes": (int,),
    "memory_kind": (str,), "energy_joules": (int, float), "label_smoothing": (int, float),
    "threads": (int,),
}  # fmt: skip
_OPTIONAL = {"member", "diverged_epoch", "epochs", "best_epoch", "seconds", "config_sha256",
             "train_macs", "target_macs", "peak_memory_bytes", "memory_kind",
             "energy_joules", "label_smoothing", "threads"}  # fmt: skip


def dumps(records: list[Record]) -> str:
    return json.dumps([r.to_json() for r in records])


def loads(text: str) -> list[Record]:
    return [Record.from_json(r) for r in json.loads(text)]


def row_errors(records: list[Record]) -> dict[Role, list[tuple[int, float]]]:
    """(repeat, test error) per table row; diverged models are left out (reported separately)."""
    rows: dict[Role, list[tuple[int, float]]] = {name: [] for name in ROWS}
    extra = (*CONTROL_ROLES.values(), Role.ASSISTANT)  # rows only in runs that train them
    rows |= {role: [] for role in extra if any(r.role == role for r in records)}
    for rec in records:
        if rec.role == Role.ENSEMBLE and rec.kind != ENSEMBLE:
            continue  # members are recorded, the row is the combined ensemble
        if rec.diverged_epoch is not None:
            continue
        rows[rec.role].append((rec.repeat, rec.test_error))
    return {name: sorted(vals) for name, vals in rows.items()}
