"""One thing diagnose found: what it is, the run's own evidence, and what to try."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    code: str
    title: str
    evidence: str
    try_next: str
