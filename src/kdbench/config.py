"""Typed, validated configuration of a study (its named presets live in `protocol.presets`).

Every value a run uses lives here, so `config.json` in the run folder is enough to redo it: the
sections and their choices in `sections`, their checks in `validation`, gathered here as
`Config` (which every other module imports them from).
Defaults are the paper's study (docs/protocol.md); values the paper leaves unstated follow the Keras
defaults its code used, and say so.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from kdbench.errors import ConfigError
from kdbench.sections import (  # noqa: F401 (re-exported: the settings' vocabulary)
    AUGMENTS,
    CONTROLS,
    DEVICES,
    ENSEMBLE_TARGETS,
    HEADS,
    KD_MONITORS,
    MAX_STACK,
    MAX_TEMPERATURE,
    MONITORS,
    OPTIMIZERS,
    SCHEDULES,
    TEACHER_SCHEDULE,
    TEACHER_UPDATES,
    TOP_LEVEL,
    DataConfig,
    DistillConfig,
    ModelConfig,
    ProtocolConfig,
    TrainConfig,
    augments_of,
    controls_of,
    teacher_schedule,
)
from kdbench.validation import validate


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None = torch's default
    preset: str = "paper"  # the named preset the settings started from (see `presets`)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        """Inverse of `to_dict`; unknown keys are an error, not silently dropped."""
        sections = {
            "data": DataConfig,
            "model": ModelConfig,
            "train": TrainConfig,
            "distill": DistillConfig,
            "protocol": ProtocolConfig,
        }
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in sections:
                kwargs[key] = _section(sections[key], value, key)
            elif key in TOP_LEVEL:
                kwargs[key] = value
            else:
                raise ConfigError(f"unknown configuration key '{key}'")
        return cls(**kwargs)

    def with_overrides(self, **flat: Any) -> Config:
        """A copy with flat overrides (temperature=4, repeats=2); None means "leave as is"."""
        index = flat_index()
        changes: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for name, value in flat.items():
            if value is None:
                continue
            if name in TOP_LEVEL:
                top[name] = value
                continue
            if name not in index:
                raise ConfigError(f"unknown setting '{name}'")
            changes.setdefault(index[name], {})[name] = value
        replaced = {
            sec: dataclasses.replace(getattr(self, sec), **vals) for sec, vals in changes.items()
        }
        return dataclasses.replace(self, **replaced, **top)


def parse_sizes(text: str, flag: str) -> tuple[int, ...]:
    """Hidden layer sizes as written on the command line, `500,400,300` as in `mlp:500,400,300`
    (or `500-400-300`, the form a `--grid` list needs, its commas separating values): whole
    numbers >= 1 and nothing else, so `-5` or `100--50` is an error, not a guess."""
    if not re.fullmatch(r"\s*\d+(\s*[-,]\s*\d+)*\s*", text):
        raise ConfigError(f"{flag} takes sizes like 500,400,300 (got {text!r})")
    return tuple(int(p) for p in re.split(r"[-,]", text))


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested configuration dict as `section.key` -> value."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def flat_index() -> dict[str, str]:
    index = {}
    for sec in dataclasses.fields(Config):
        if sec.name in TOP_LEVEL:
            continue
        for f in dataclasses.fields(sec.default_factory()):  # type: ignore[misc]
            index[f.name] = sec.name
    return index


def _section(cls: type, value: Any, name: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"configuration section '{name}' must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(value) - known
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in configuration section '{name}'")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return cls(**fixed)
