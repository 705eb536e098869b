"""Which settings a trained model depends on (the hash every record and checkpoint carries) and
how two configurations differ: what a run folder checks before it uses or resumes a model.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from kdbench.config import Config, flat


def _teachers_only(key: str) -> bool:
    """A flat setting only the teachers depend on (their architecture, regularisation and
    schedule, or your own teacher)."""
    section, _, name = key.partition(".")
    return section in ("model", "train") and name.startswith(("teacher_", "own_teacher"))


def _raw(cfg: Config, upstream: bool, teachers: bool) -> dict[str, Any]:
    default = flat(Config().to_dict())
    return {
        k: v
        for k, v in flat(cfg.to_dict()).items()
        if k not in _NOT_HASHED
        and not (upstream and (k.startswith("distill.") or k == "model.head"))
        and not (not teachers and _teachers_only(k))
        and v != default.get(k)
    }


def _sha256(raw: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()


# the preset's name and the thread count change no model; nor does the repeat count (a model's
# seeds derive from its repeat index alone), so a finished run can grow by more repeats
_NOT_HASHED = ("preset", "threads", "protocol.repeats")
LEGACY_MAX_REPEATS = 1000  # stamps from before the repeat count left the hash: checked up to it


def settings_sha256(cfg: Config, upstream: bool = False, teachers: bool = True) -> str:
    """SHA-256 of the settings a trained model depends on: all but the preset's name, the
    thread count and the repeat count (which change none); with `upstream`, what the teachers
    and small networks depend on (not the distillation settings, nor the head: hard-label
    training is the same either way); with `teachers=False` too, what the small networks alone
    depend on, so runs that differ only in their teachers share them. Settings at their default
    are left out, so a setting added to kdbench changes no existing hash. Records and
    checkpoints carry it: a model is never used under a configuration it was not trained
    with."""
    return _sha256(_raw(cfg, upstream, teachers))


def legacy_sha256s(cfg: Config, upstream: bool = False, teachers: bool = True) -> frozenset[str]:
    """The stamps the same settings had when the repeat count was part of the hash (kdbench
    before runs could grow), for every repeat count up to `LEGACY_MAX_REPEATS`: a model from
    such a folder is still this configuration's, whatever repeat count its run had."""
    raw = _raw(cfg, upstream, teachers)
    return _legacy(json.dumps(raw, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _legacy(raw_json: str) -> frozenset[str]:
    raw = json.loads(raw_json)
    default = Config().protocol.repeats  # at its default it was left out: the hash of today
    return frozenset(
        _sha256({**raw, "protocol.repeats": r})
        for r in range(1, LEGACY_MAX_REPEATS + 1)
        if r != default
    )


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two `to_dict` results."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out
