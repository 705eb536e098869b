"""Which settings a trained model depends on (the hash every record and checkpoint carries) and
how two configurations differ: what a run folder checks before it uses or resumes a model.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kdbench.config import Config, flat


def _teachers_only(key: str) -> bool:
    """A flat setting only the teachers depend on (their architecture, regularisation and
    schedule, or your own teacher)."""
    section, _, name = key.partition(".")
    return section in ("model", "train") and name.startswith(("teacher_", "own_teacher"))


def settings_sha256(cfg: Config, upstream: bool = False, teachers: bool = True) -> str:
    """SHA-256 of the settings a trained model depends on: all but the preset's name and the
    thread count (which change neither); with `upstream`, what the teachers and small networks
    depend on (not the distillation settings, nor the head: hard-label training is the same
    either way); with `teachers=False` too, what the small networks alone depend on, so runs
    that differ only in their teachers share them. Settings at their default are left out, so
    a setting added to kdbench changes no existing hash. Records and checkpoints carry it: a
    model is never used under a configuration it was not trained with."""
    default = flat(Config().to_dict())
    raw = {
        k: v
        for k, v in flat(cfg.to_dict()).items()
        if k not in ("preset", "threads")
        and not (upstream and (k.startswith("distill.") or k == "model.head"))
        and not (not teachers and _teachers_only(k))
        and v != default.get(k)
    }
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()


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
