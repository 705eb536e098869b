"""Does the paper's finding survive its unstated choices? The study under each preset, side by side.

`kdbench explain` runs the `paper` preset and its variants at the same settings (each into its own
resumable run folder) or reads finished run folders, then writes one table: every variant's five
rows with CIs, and whether it reproduces the paper's pattern (both distilled students worse than
the hard-label student), reverses it (both better) or neither.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdbench.errors import RunFolderError
from kdbench.roles import ROWS
from kdbench.stats import SIGNIFICANCE
from kdbench.store import atomic_write, read_config, write_json

KD = ("student_from_teacher", "student_from_ensemble")


def read_summary(folder: Path) -> tuple[str, dict]:
    """(preset name, summary) of a finished run folder."""
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise RunFolderError(f"{folder} has no summary.json; finish the run (or resume it) first")
    summary = json.loads(path.read_text())
    return read_config(folder).preset, summary


def pattern(summary: dict) -> dict[str, Any]:
    """How each distilled student compares with the hard-label student, and the overall pattern."""
    found = {}
    for c in summary["comparisons"]:
        if c["a"] in KD and c["b"] == "student_hard":
            significant = c["p_holm"] is not None and c["p_holm"] < SIGNIFICANCE
            found[c["a"]] = {
                "mean_diff": c["mean_diff"],
                "ci95": c["ci95"],
                "p_holm": c["p_holm"],
                "significant": significant,
            }
    diffs = [found[k]["mean_diff"] for k in KD if found.get(k, {}).get("mean_diff") is not None]
    sure = len(diffs) == 2 and all(found[k]["significant"] for k in KD)
    if len(diffs) < 2:
        verdict = "incomplete"
    elif all(d > 0 for d in diffs):
        verdict = "reproduces" if sure else "same direction, not significant"
    elif all(d < 0 for d in diffs):
        verdict = "reverses" if sure else "reversed direction, not significant"
    else:
        verdict = "mixed"
    return {"pattern": verdict, "kd_vs_hard": found}


def _pct(row: dict) -> str:
    if row["mean"] is None:
        return "–"
    ci = row["ci95"]
    spread = f" ({100 * ci[0]:.2f}–{100 * ci[1]:.2f})" if ci else ""
    return f"{100 * row['mean']:.2f}%{spread}"


def markdown(entries: list[dict]) -> str:
    head = (
        "| Variant | Teacher | Student ← teacher | Ensemble | Student ← ensemble |"
        " Hard-label student | Δ teacher-KD (pp) | Δ ensemble-KD (pp) | Paper's pattern |"
    )
    lines = [head, "|" + " --- |" * 9]
    for e in entries:
        rows = e["summary"]["rows"]
        deltas = []
        for k in KD:
            d = e["kd_vs_hard"].get(k, {})
            if d.get("mean_diff") is None:
                deltas.append("–")
            else:
                star = "*" if d["significant"] else ""
                deltas.append(f"{d['mean_diff']:+.2f}{star}")
        cells = [_pct(rows[name]) for name in ROWS]
        lines.append(f"| {e['variant']} | " + " | ".join([*cells, *deltas, e["pattern"]]) + " |")
    return (
        "# kdbench explain — the paper's study under its unstated choices\n\n"
        + "\n".join(lines)
        + "\n\nTest error, mean (95% CI). Δ = distilled student − hard-label student, paired by"
        f" repeat; * Holm-adjusted p < {SIGNIFICANCE} within that variant. *Reproduces*: both"
        " distilled students significantly worse than the hard-label student, as the paper"
        " found; *reverses*: both significantly better.\n"
    )


def collect(folders: list[Path]) -> list[dict]:
    entries = []
    for folder in folders:
        name, summary = read_summary(folder)
        entries.append(
            {"variant": name, "folder": str(folder), "summary": summary, **pattern(summary)}
        )
    return entries


def write(out: Path, entries: list[dict]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    slim = [
        {k: v for k, v in e.items() if k != "summary"} | {"rows": e["summary"]["rows"]}
        for e in entries
    ]
    write_json(out / "explain.json", {"variants": slim})
    atomic_write(out / "explain.md", markdown(entries).encode())
    return out / "explain.md"
