"""One record per trained model (and per combined ensemble): the single schema of
`records.jsonl` and of the records kept in each checkpoint's metadata.

Version 1 (no `version` field) is what kdbench wrote before this type existed; it reads as is.
Version 2 adds `copies_test_error` (teachers trained along with their student) and `version`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from kdbench.errors import RunFolderError
from kdbench.roles import ROWS, Role

VERSION = 2
MODEL, ENSEMBLE = "model", "ensemble"  # the two kinds of record
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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise RunFolderError(
                f"a record has fields this kdbench does not know ({sorted(unknown)});"
                " upgrade kdbench to read this run"
            )
        return cls(**{"version": 1, **raw})


def dumps(records: list[Record]) -> str:
    return json.dumps([r.to_json() for r in records])


def loads(text: str) -> list[Record]:
    return [Record.from_json(r) for r in json.loads(text)]


def row_errors(records: list[Record]) -> dict[Role, list[tuple[int, float]]]:
    """(repeat, test error) per table row; diverged models are left out (reported separately)."""
    rows: dict[Role, list[tuple[int, float]]] = {name: [] for name in ROWS}
    for rec in records:
        if rec.role == Role.ENSEMBLE and rec.kind != ENSEMBLE:
            continue  # members are recorded, the row is the combined ensemble
        if rec.diverged_epoch is not None:
            continue
        rows[rec.role].append((rec.repeat, rec.test_error))
    return {name: sorted(vals) for name, vals in rows.items()}
