"""Turn records into the study's outputs: summary.json, Table 1, report.md (figures: `figures`).

Everything here reads records only, so a report can be re-rendered without training.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from kdbench.analysis import answer, costs
from kdbench.analysis.comparisons import comparisons_markdown, verdicts_markdown
from kdbench.analysis.configuration import (
    config_table,
    named,
    row_names,
    student_name,
    teacher_name,
)
from kdbench.analysis.diagnose import markdown as diagnose_markdown
from kdbench.analysis.figures import Look, cost_figure, figure, repeats_text, tradeoff_figure
from kdbench.analysis.paper import PAPER_TABLE1, comparable_to_paper
from kdbench.analysis.stats import (
    FEW_REPEATS,
    FEW_REPEATS_NOTE,
    INTERVAL_METHOD,
    SIGNIFICANCE,
    compare_rows,
    pct,
    summarize,
)
from kdbench.analysis.verdict import sentence
from kdbench.records import Record, row_errors
from kdbench.roles import CONTROL_ROLES, ROWS, Role, label
from kdbench.runs.store import atomic_write, write_summary
from kdbench.summary import Diverged, Row, Summary, Timing


def build_summary(
    records: list[Record],
    planned_repeats: int,
    timing: Timing,
    resources: dict | None = None,
    paper: bool = True,
    own_teacher: str | None = None,
) -> Summary:
    """The paper's numbers sit beside the measured ones only where the run has the paper's
    data and training (`comparable_to_paper`)."""
    per_row = row_errors(records)
    rows = {}
    for name, pairs in per_row.items():  # Table 1's rows, then the run's controls
        rows[str(name)] = Row(
            repeats=[r for r, _ in pairs],
            errors_pct=[pct(e) for _, e in pairs],
            **summarize([e for _, e in pairs]),
            paper_pct=PAPER_TABLE1.get(name) if paper else None,
        )
    completed = min(len(row.errors_pct) for row in rows.values())
    diverged = [
        Diverged(r.repeat, str(r.role), r.member, r.diverged_epoch)
        for r in records
        if r.diverged_epoch is not None
    ]
    comparisons = compare_rows(per_row)
    spent = costs.build(records, own_teacher is not None)
    for c in comparisons:
        cost = costs.clause(spent, c.a, c.b)
        c.verdict = sentence(c, own_teacher=own_teacher is not None, cost=cost)
    return Summary(
        rows=rows,
        comparisons=comparisons,
        significance=SIGNIFICANCE,
        planned_repeats=planned_repeats,
        completed_repeats=completed,
        partial=completed < planned_repeats,
        diverged=diverged,
        timing=timing,
        resources=resources or None,
        own_teacher=own_teacher or None,
        costs=spent,
    )


def _pct(x: float | None, digits: int = 2) -> str:
    """A value already in percent, for a table."""
    return "–" if x is None else f"{x:.{digits}f}%"


def _outside(row: Row) -> bool:
    ci = row.ci95_pct
    paper = row.paper_pct
    return ci is not None and paper is not None and not (ci[0] <= paper <= ci[1])


def table_markdown(summary: Summary, names: dict[str, str] | None = None) -> str:
    """Table 1; `names`: each row's name (`configuration.row_names`; the paper's words if
    None)."""
    paper = any(row.paper_pct is not None for row in summary.rows.values())
    lines = [
        "| Model |" + (" Paper |" if paper else "") + " Measured mean | 95% CI | Std | Runs |",
        "| --- |" + (" ---: |" if paper else "") + " ---: | ---: | ---: | ---: |",
    ]
    for name, row in summary.rows.items():
        ci = row.ci95_pct
        ci_txt = "–" if ci is None else f"{_pct(ci[0])} – {_pct(ci[1])}"
        mark = " †" if _outside(row) else ""
        cells = [(names or {}).get(name) or label(name, summary.own_teacher)]
        cells += [f"{_pct(row.paper_pct)}{mark}"] if paper else []
        cells += [_pct(row.mean_pct), ci_txt, _pct(row.std_pct), str(row.n)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    notes = [f"Error rate = 1 − test accuracy. 95% CI: {INTERVAL_METHOD}."]
    if paper:
        notes.append("† the paper's value lies outside the measured 95% CI.")
    else:
        notes.append(
            "The paper's column is left out: it applies to its own study (full MNIST trained"
            " until early stopping, its architectures, T = 10, alpha = 0.1, 10 members), not"
            " to --train-limit, --epochs, your own --own-teacher or other settings of those."
        )
    if summary.own_teacher is not None:
        notes.append(
            "The teacher is your own model, not retrained: the same in every repeat, so its row"
            " has no spread."
        )
    lines.append(" ".join(notes))
    if 0 < summary.completed_repeats < FEW_REPEATS:
        lines += ["", f"**{FEW_REPEATS_NOTE}**"]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("role", "repeat", "member", "kind", "test_error_pct", "val_error_pct", "epochs",
               "best_epoch", "diverged_epoch")  # fmt: skip


def table_csv(records: list[Record]) -> str:
    """Tidy: one row per trained model (and per combined ensemble) and repeat, plain columns,
    errors in percent rounded to the test set's resolution (0.01% of 10,000 images)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    order = {role: i for i, role in enumerate((*ROWS, *CONTROL_ROLES.values(), Role.ASSISTANT))}
    for r in sorted(records, key=lambda r: (order[r.role], r.repeat, r.kind, r.member or 0)):
        w.writerow([
            str(r.role), r.repeat, "" if r.member is None else r.member, r.kind,
            f"{100 * r.test_error:.2f}", f"{100 * r.val_error:.2f}",
            "" if r.epochs is None else r.epochs, "" if r.best_epoch is None else r.best_epoch,
            "" if r.diverged_epoch is None else r.diverged_epoch,
        ])  # fmt: skip
    return buf.getvalue()


def resources_markdown(summary: Summary, names: dict[str, str] | None = None) -> str:
    res = summary.resources
    lines = [
        "| Model | Test error | Params | MACs / image | float32 | int8 | Torch b1 | ONNX b1 |"
        " Torch b256 | ONNX b256 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in (n for n in ROWS if n in res["rows"]):  # not your own teacher: not measured
        r, lat = res["rows"][name], res["rows"][name]["latency"]

        def us(key, lat=lat):
            v = lat[key]
            return f"{v['median_us']:.1f} µs ({v['q1_us']:.1f}–{v['q3_us']:.1f})"

        lines.append(
            f"| {(names or {}).get(name) or label(name, summary.own_teacher)}"
            f" | {_pct(summary.rows[name].mean_pct)} | {r['params']:,} |"
            f" {r['macs']:,} | {r['bytes_float32'] / 1024:.0f} KiB"
            f" | {r['bytes_int8'] / 1024:.0f} KiB"
            f" | {us('torch_b1')} | {us('onnx_b1')} | {us('torch_b256')} | {us('onnx_b256')} |"
        )
    lines.append("")
    lines.append(
        "Latency per image, median (interquartile range) after warm-up,"
        f" {res['threads']} thread(s),"
        f" models of repeat {res['repeat']}; b1 = batch 1, b256 = batch 256. int8 = weights"
        " quantised to 8 bits (`kdbench export --int8`). The ensemble counts all its members."
    )
    return "\n".join(lines) + "\n"


def cost_figure_line(summary: Summary) -> str:
    if summary.costs is None or summary.costs.missing:
        return ""
    return "![Test error against training compute](costs.png)\n\n"


def resources_section(summary: Summary, names: dict[str, str] | None = None) -> str:
    if summary.resources is None:
        return ""
    return (
        "## What each model costs on a device\n\n"
        f"{resources_markdown(summary, names)}\n![Error vs latency](tradeoff.png)\n\n"
    )


def answer_line(summary: Summary, cfg: dict) -> str:
    """The report's first line: what to do with this student (`analysis.answer`), or ''."""
    a = answer.answer(summary, named(student_name(cfg["model"])))
    return "" if a is None else answer.markdown(a) + "\n\n"


def diagnosis_section(summary: Summary) -> str:
    if summary.diagnosis is None:
        return ""
    return (
        "## Diagnosis — known pitfalls, checked against this run\n\n"
        f"{diagnose_markdown(summary.diagnosis)}\n(`kdbench diagnose RUN_DIR` prints this.)\n\n"
    )


def report_markdown(summary: Summary, run_config: dict, names: dict[str, str]) -> str:
    """report.md; `names`: each row's name in its tables (`configuration.row_names`)."""
    cfg = run_config["config"]
    env = run_config.get("environment", {})
    status = (
        f"**Partial run**: {summary.completed_repeats} of {summary.planned_repeats}"
        " repeats completed."
        if summary.partial
        else f"{summary.completed_repeats} repeat{'s' if summary.completed_repeats != 1 else ''}."
    )
    diverged = ""
    if summary.diverged:
        items = "; ".join(
            f"{d.role} repeat {d.repeat} member {d.member} (epoch {d.diverged_epoch})"
            for d in summary.diverged
        )
        diverged = (
            f"\n> **Warning:** {len(summary.diverged)} model(s) diverged (loss became NaN or"
            f" infinite) and are excluded from the statistics: {items}.\n"
        )
    total = summary.timing.total_seconds
    dataset = cfg["data"]["dataset"]
    title = (
        "test error, paper vs measured"
        if comparable_to_paper(cfg)
        else f"test error on {'your data' if dataset == 'arrays' else dataset}"
    )
    heading = "kdbench study on your data" if dataset == "arrays" else "kdbench reproduce"
    devices = resources_section(summary, names)
    time_line = f"Wall time {total:.0f} s."
    if summary.timing.resumed:  # earlier parts are known only by their models' recorded time
        time_line = (
            f"Time {total:.0f} s: this part's wall time plus the training time its models"
            " recorded in earlier parts of a resumed run (a stack shared with other runs, as a"
            " sweep's teachers and small networks are, counts in full)."
        )
    return f"""# {heading} — hard labels vs knowledge distillation

{answer_line(summary, cfg)}{status} {time_line}
{diverged}
## Table 1 — {title}

{table_markdown(summary, names)}
![Figure 3](figure.png)

## Verdict

{verdicts_markdown(summary)}

## Paired comparisons (runs paired by repeat; a − b, percentage points)

{comparisons_markdown(summary)}

{costs.markdown(summary.costs)}
{cost_figure_line(summary)}{devices}{diagnosis_section(summary)}## Configuration

{config_table(cfg)}

## Environment

{chr(10).join(f"- {k}: {v}" for k, v in env.items())}

Files: `config.json` (resolved configuration, environment), `records.jsonl` (one line per
trained model, with per-epoch history), `summary.json`, `table.md`, `table.csv`, `figure.png`,
`figure.svg`, `checkpoints/` (safetensors).
"""


def figure_look(summary: Summary, cfg: dict) -> Look:
    """The rows' names and the line under every figure's title: data, models, repeats."""
    m = cfg["model"]
    dataset = cfg["data"]["dataset"]
    data = "your data" if dataset == "arrays" else dataset
    n, planned = summary.completed_repeats, summary.planned_repeats
    repeats = repeats_text([n]) + (f" of {planned}" if n < planned else "")
    models = f"teacher {named(teacher_name(m))}, student {named(student_name(m))}"
    return Look(names=row_names(cfg, summary.resources), about=f"{data} · {models} · {repeats}")


def render(
    folder: Path,
    records: list[Record],
    run_config: dict,
    timing: Timing,
    resources: dict | None = None,
    diagnosis: dict | None = None,
) -> Summary:
    """Write summary.json, table.md, table.csv, figure.png/svg and report.md; return the summary."""
    cfg = run_config["config"]
    planned = cfg["protocol"]["repeats"]
    own = cfg["model"].get("own_teacher")
    if resources:  # its training costs are the summary's `costs` already: not twice
        resources = {k: v for k, v in resources.items() if k != "training"}
    summary = build_summary(records, planned, timing, resources, comparable_to_paper(cfg), own)
    summary.diagnosis = diagnosis
    write_summary(folder, summary)
    names = row_names(cfg)  # the tables give the sizes in their own columns
    atomic_write(folder / "table.md", table_markdown(summary, names).encode())
    atomic_write(folder / "table.csv", table_csv(records).encode())
    look = figure_look(summary, cfg)
    figure(summary, folder, look)
    if summary.costs is not None and not summary.costs.missing:
        cost_figure(summary, folder, look)
    if resources:
        tradeoff_figure(summary, folder, look)
    atomic_write(folder / "report.md", report_markdown(summary, run_config, names).encode())
    return summary
