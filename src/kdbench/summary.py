"""The study's summary as types: the single schema of `summary.json`, as `records` is of
`records.jsonl`.

Built once (`analysis.report.build_summary`), read by attribute everywhere else; `to_json` writes
the keys in the order summary.json has always had, so a committed summary reads and writes back
byte for byte. A `Summary` is also a read-only mapping of that JSON (`summary["rows"]`), which is
what the Python API returned before it was typed, so scripts written against it keep working.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from kdbench.errors import RunFolderError


@dataclass
class Row:
    """One row of Table 1 over its repeats; errors in percent (None where no value exists)."""

    repeats: list[int]
    errors_pct: list[float]
    n: int
    mean_pct: float | None
    std_pct: float | None
    ci95_pct: list[float | None] | None
    paper_pct: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Comparison:
    """A paired comparison a − b over the repeats both rows have, in percentage points."""

    a: str
    b: str
    repeats: list[int]
    n: int
    mean_diff_pp: float | None
    ci95_pp: list[float] | None
    p_ttest: float | None
    p_wilcoxon: float | None
    d_z: float | None
    p_holm: float | None = None
    verdict: str | None = None  # the sentence a reader acts on (`analysis.verdict`)
    # the interval that agrees with the Holm decision (`stats.adjusted_interval`); summaries
    # written before it have none
    ci95_holm_pp: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("verdict", "ci95_holm_pp"):
            if out[key] is None:
                del out[key]
        return out


@dataclass
class Diverged:
    """A model whose loss became NaN or infinite: left out of the statistics, named here."""

    repeat: int
    role: str
    member: int | None
    diverged_epoch: int

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Timing:
    """Wall time of the whole run (all its parts, when resumed) and of this part."""

    total_seconds: float
    resumed: bool = False
    this_part_seconds: float | None = None
    trained_stacks: list[str] | None = None  # the stacks this process trained (sweeps)

    ORDER = ("total_seconds", "this_part_seconds", "resumed", "trained_stacks")

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.ORDER if getattr(self, k) is not None}


@dataclass
class StrategyCost:
    """One way to get a deployable student, mean over the repeats that have all its parts."""

    strategy: str  # "hard_labels", "from_teacher", "from_ensemble"
    student: str  # the row of its deployable student
    repeats: int
    macs: float | None
    seconds: float | None
    amortised_macs: float | None  # None for hard labels (nothing to amortise)
    amortised_seconds: float | None
    macs_vs_hard: float | None  # macs / the hard-label student's macs
    amortised_vs_hard: float | None
    energy_joules: float | None = None
    note: str | None = None  # why a part is missing (your own teacher)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Costs:
    """`summary.json`'s `costs`: named units (MACs, seconds, bytes, joules)."""

    strategies: list[StrategyCost] = field(default_factory=list)
    rows: dict[str, dict[str, float | None]] = field(default_factory=dict)  # mean per repeat
    peak_memory_bytes: dict[str, int] = field(default_factory=dict)  # per stack
    memory_kind: str | None = None  # how the peaks were measured (engine.meter.MEMORY_KINDS)
    energy: str | None = None  # the energy note: measured, or why not
    missing: str | None = None  # set when the records carry no costs (older runs)

    def strategy(self, name: str) -> StrategyCost | None:
        return next((s for s in self.strategies if s.strategy == name), None)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["strategies"] = [s.to_json() for s in self.strategies]
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Costs:
        raw = dict(raw)
        raw["strategies"] = [StrategyCost(**s) for s in raw.get("strategies", [])]
        return cls(**raw)


@dataclass
class Summary(Mapping):
    rows: dict[str, Row]
    comparisons: list[Comparison]
    significance: float
    planned_repeats: int
    completed_repeats: int
    partial: bool
    diverged: list[Diverged]
    timing: Timing
    resources: dict[str, Any] | None = None  # resources.json's measurement (its own schema)
    own_teacher: str | None = None  # where your own teacher came from, when it is yours
    diagnosis: dict[str, Any] | None = None  # diagnose.json's findings (its own schema)
    costs: Costs | None = None  # what each strategy cost to train (`analysis.costs`)

    @property
    def min_repeats(self) -> int:
        """The fewest repeats any row has (what the intervals rest on)."""
        return min(row.n for row in self.rows.values())

    def comparison(self, a: str, b: str) -> Comparison:
        return next(c for c in self.comparisons if (c.a, c.b) == (a, b))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rows": {name: row.to_json() for name, row in self.rows.items()},
            "comparisons": [c.to_json() for c in self.comparisons],
            "significance": self.significance,
            "planned_repeats": self.planned_repeats,
            "completed_repeats": self.completed_repeats,
            "partial": self.partial,
            "diverged": [d.to_json() for d in self.diverged],
            "timing": self.timing.to_json(),
        }
        for key in ("resources", "own_teacher", "diagnosis"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.costs is not None:
            out["costs"] = self.costs.to_json()
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any], where: str = "summary.json") -> Summary:
        try:
            if raw["rows"] and "mean_pct" not in next(iter(raw["rows"].values())):
                raise RunFolderError(
                    f"{where} was written by an older kdbench (error rates as fractions);"
                    " re-render it with `kdbench report RUN_DIR`"
                )
            return cls(
                rows={k: Row(**v) for k, v in raw["rows"].items()},
                comparisons=[Comparison(**c) for c in raw["comparisons"]],
                significance=raw["significance"],
                planned_repeats=raw["planned_repeats"],
                completed_repeats=raw["completed_repeats"],
                partial=raw["partial"],
                diverged=[Diverged(**d) for d in raw["diverged"]],
                timing=Timing(**raw["timing"]),
                resources=raw.get("resources"),
                own_teacher=raw.get("own_teacher"),
                diagnosis=raw.get("diagnosis"),
                costs=Costs.from_json(raw["costs"]) if "costs" in raw else None,
            )
        except (KeyError, TypeError, AttributeError, StopIteration) as exc:
            raise RunFolderError(
                f"{where} is not a kdbench summary ({type(exc).__name__}: {exc});"
                " re-render it with `kdbench report RUN_DIR`"
            ) from None

    # read-only mapping of the JSON, for scripts written before the summary was typed
    def _mapping(self) -> dict[str, Any]:
        return self.to_json()

    def __getitem__(self, key: str) -> Any:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())
