"""Settings from a file (`--config study.toml`, or a finished run's `config.json`) and back
(`kdbench config show`): the same sections and keys as `config.json`.

A file is read as what it changes from its own preset, so one written by `config show --preset
hinton` (every key spelled out) and one that names two keys mean the same to a command: the
preset (the file's, or `--preset`), then the file's changes, then the flags given. Keys that
kdbench itself sets (the data fingerprint, your teacher's SHA-256) are left to kdbench.
Errors name the file and the key, as one line.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package (a dependency there)
    import tomli as tomllib

from kdbench.cli.options import NOT_FLAGS, _field_types
from kdbench.config import TOP_LEVEL, Config, flat, flat_index
from kdbench.errors import ConfigError, did_you_mean
from kdbench.protocol.presets import get, resolve

SECTIONS = ("data", "model", "train", "distill", "protocol")


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}; give a readable file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path} is not UTF-8 text; save it as UTF-8") from None
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
            raw = raw.get("config", raw) if isinstance(raw, dict) else raw  # a run's config.json
        else:
            raw = tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ConfigError(f"{path} is not valid {kind} ({exc}); fix the file") from None
    except RecursionError:
        raise ConfigError(f"{path} nests too deeply to be settings; fix the file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections ({', '.join(SECTIONS)})")
    return raw


def _fits(value: Any, hint: Any) -> bool:
    """Whether a value read from a file has the setting's type (ints where floats go, lists
    where sizes go)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint) if h is not type(None))
    if typing.get_origin(hint) is tuple:
        return isinstance(value, list | tuple) and all(_fits(v, int) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _settings(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """The file's keys as flat settings, each checked for its name and type."""
    hints = _field_types()
    index = flat_index()
    out: dict[str, Any] = {}
    for key, value in flat(raw).items():
        section, _, name = key.rpartition(".")
        if (section, name) in (("", t) for t in TOP_LEVEL):
            pass
        elif section not in SECTIONS or index.get(name) != section:
            known = [f"{index[n]}.{n}" for n in index] + list(TOP_LEVEL)
            raise ConfigError(
                f"{path}: unknown key '{key}'{did_you_mean(key, known)}; the keys are"
                " config.json's (see `kdbench config show`)"
            )
        if name in NOT_FLAGS and name != "preset":
            continue  # kdbench sets these itself
        if value is not None and not _fits(value, hints[name]):
            raise ConfigError(
                f"{path}: key '{key}' has the wrong type (got {value!r});"
                f" expected {_type_name(hints[name])}"
            )
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint) if h is not type(None))
    if typing.get_origin(hint) is tuple:
        return "a list of whole numbers"
    return {float: "a number", int: "a whole number", str: "a string", bool: "true or false"}.get(
        hint, str(hint)
    )


def changes(path: Path) -> tuple[str, dict[str, Any]]:
    """(the file's preset, the settings it changes from that preset)."""
    settings = _settings(_read(path), path)
    preset = settings.pop("preset", "paper")
    try:
        get(preset)  # an unknown preset is the same error as --preset gives
    except ConfigError as exc:
        raise ConfigError(f"{path}: key 'preset': {exc}") from None
    base = flat(resolve(preset).to_dict())
    index = flat_index()

    def dotted(name: str) -> str:
        return name if name in TOP_LEVEL else f"{index[name]}.{name}"

    def same(name: str, value: Any) -> bool:
        before = base[dotted(name)]
        return (list(value) if isinstance(value, tuple) else value) == (
            list(before) if isinstance(before, tuple) else before
        )

    return preset, {k: v for k, v in settings.items() if not same(k, v)}


def resolve_with(
    config: Path | None, preset: str | None, overrides: dict[str, Any], name: str | None = None
) -> Config:
    """The settings a command runs with: `name` (an explain variant) or `--preset` or the
    file's preset, then the file's changes, then the flags given."""
    file_preset, from_file = changes(Path(config)) if config is not None else ("paper", {})
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return resolve(name or preset or file_preset, **{**from_file, **given})
    except ConfigError as exc:
        if config is None or not (set(from_file) - set(given)):
            raise
        raise ConfigError(f"{exc} (with the settings of {config})") from None


def to_toml(cfg: Config) -> str:
    """The resolved configuration as TOML, config.json's sections and keys; settings that
    are none (their default: unset) are written as comments, since TOML has no null."""
    raw = cfg.to_dict()
    lines = [f"{k} = {_value(raw[k])}" for k in TOP_LEVEL if raw[k] is not None]
    lines += [f"# {k} = (none)" for k in TOP_LEVEL if raw[k] is None]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for key, value in raw[section].items():
            if key in NOT_FLAGS:
                continue
            lines.append(f"{key} = {_value(value)}" if value is not None else f"# {key} = (none)")
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    return repr(value)
