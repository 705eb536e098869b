"""What two sweeps must agree on: each point's label, rows and differences to hard labels."""

from __future__ import annotations

import json


def sweep_numbers(out) -> list[tuple]:
    result = json.loads((out / "sweep.json").read_text())
    return [(p["label"], p["rows"], p["kd_vs_hard"]) for p in result["points"]]
