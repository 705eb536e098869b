"""The decision table (docs/guide.md): for each kind of model, data and teacher that kdbench
has run, what each way of training the student did against hard labels and what it cost.

Built only from finished folders (run folders, and sweep folders: one row per point), so it is
redone, never retyped, when a run changes: `kdbench decide FOLDER…` prints it, `kdbench decide
--readme docs/guide.md` rewrites the guide's block from the folders its marker names. A row's
differences are paired by repeat and Holm-adjusted in their own run's family (a sweep point's
teacher and ensemble columns over the whole sweep, as `sweep.md` adjusts them).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from kdbench.analysis import answer
from kdbench.analysis.configuration import named, recipe_short, student_name, teacher_name
from kdbench.config import Config
from kdbench.errors import RunFolderError
from kdbench.roles import Role
from kdbench.runs.store import atomic_write, read_config, read_summary
from kdbench.summary import Summary

# (column, the student's row, its training strategy in the cost table)
COLUMNS = (
    ("From the teacher", Role.STUDENT_FROM_TEACHER, "from_teacher"),
    ("From the ensemble", Role.STUDENT_FROM_ENSEMBLE, "from_ensemble"),
    ("Label smoothing", Role.STUDENT_SMOOTH, "smoothing"),
    ("Self-distillation", Role.STUDENT_SELF, "self_distillation"),
)
BEGIN = re.compile(r"<!-- kdbench decide (?P<folders>[^>]*?) -->")
END = "<!-- /kdbench decide -->"


@dataclass(frozen=True)
class Effect:
    """One strategy against hard labels: the paired difference (pp), its Holm-adjusted 95% CI,
    whether it is Holm-significant, and its training compute relative to hard labels (with the
    teacher or ensemble trained for it, and amortised where that already exists)."""

    diff_pp: float
    ci95_pp: tuple[float, float] | None
    significant: bool
    cost_vs_hard: float | None = None
    amortised_vs_hard: float | None = None
    method: str | None = None  # a methods sweep's row: the point whose student this is
    needed: int | None = None  # repeats that would resolve a difference of this size


@dataclass(frozen=True)
class Situation:
    """One row: a run (or sweep point) and what each strategy did there."""

    source: str  # the folder as given, and the sweep point's label
    link: str  # its report
    data: str
    student: str
    teacher: str
    hard_pct: float | None
    teacher_pct: float | None
    teacher_vs_hard: Effect | None
    repeats: int
    effects: tuple[Effect | None, ...]  # one per COLUMNS entry


def _effect(summary: Summary, role: str, strategy: str | None = None) -> Effect | None:
    o = answer.versus_hard(summary, role, strategy)
    if o is None:
        return None
    return Effect(o.diff_pp, o.ci95_pp, o.significant, o.cost_vs_hard, o.amortised_vs_hard,
                  needed=o.needed)  # fmt: skip


def _over_grid(effect: Effect | None, tested: dict) -> Effect | None:
    """A sweep point's difference as its sweep adjusts it (Holm over the whole grid)."""
    if effect is None or tested.get("mean_diff_pp") is None:
        return effect
    ci = tested.get("ci95_holm_grid_pp") or tested["ci95_pp"]
    return dataclasses.replace(effect, ci95_pp=tuple(ci) if ci else None,
                               significant=bool(tested["significant"]))  # fmt: skip


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def _teacher(cfg: Config) -> str:
    """The teacher's architecture and what made it strong or weak: its schedule and its
    regularisation."""
    m, t = cfg.model, cfg.train
    if m.own_teacher:
        return "your own"
    parts = [named(teacher_name(cfg.to_dict()["model"]))]
    if t.teacher_epochs is not None:
        parts.append(_epochs(t.teacher_epochs))
    elif t.epochs is not None:
        parts.append(_epochs(t.epochs))
    else:
        parts.append(f"early-stopped on {t.teacher_monitor or t.monitor}")
    if m.teacher_dropout or m.teacher_input_dropout:
        parts.append("dropout")
    if m.teacher_jitter:
        parts.append(f"jitter {m.teacher_jitter}")
    if m.teacher_max_norm is not None:
        parts.append("max-norm")
    if cfg.distill.teacher_updates == "joint":
        parts.append("trained along with the student")
    return ", ".join(parts)


def _situation(folder: Path, root: Path, shown: str, grid: dict | None = None) -> Situation:
    summary, cfg = read_summary(root / folder), read_config(root / folder)
    effects = [_effect(summary, role, strategy) for _, role, strategy in COLUMNS]
    if grid is not None:
        effects[:2] = [_over_grid(effects[i], grid[COLUMNS[i][1]]) for i in range(2)]
    rows = summary.rows
    data = cfg.data.dataset + (f", first {cfg.data.train_limit}" if cfg.data.train_limit else "")
    return Situation(
        source=shown,
        link=f"{folder}/report.md",
        data=data,
        student=named(student_name(cfg.to_dict()["model"]))
        + (f" ({recipe_short(cfg.train)})" if recipe_short(cfg.train) else ""),
        teacher=_teacher(cfg),
        hard_pct=rows[Role.STUDENT_HARD].mean_pct,
        teacher_pct=rows[Role.TEACHER].mean_pct,
        teacher_vs_hard=_effect(summary, Role.TEACHER),
        repeats=summary.min_repeats,
        effects=tuple(effects),
    )


# the settings of a methods sweep: its points share teachers, ensembles and hard-label students
METHOD_SETTINGS = frozenset({"loss", "logit_standardization", "assistant_arch", "dkd_alpha",
                             "dkd_beta", "dkd_warmup", "dist_beta", "dist_gamma"})  # fmt: skip


def _is_methods_sweep(raw: dict) -> bool:
    varied = set(raw["grid"]) | {k for p in raw["points"] for k in p["point"]}
    return len(raw["points"]) > 1 and bool(varied) and varied <= METHOD_SETTINGS


def _best_method(folder: Path, root: Path, raw: dict) -> Situation:
    """A methods sweep as one row: the situation its points share, each distilled column its
    best method (the lowest difference to hard labels, Holm-adjusted over the whole sweep)."""
    rows = [_situation(folder / p["folder"], root, p["label"], p["kd_vs_hard"])
            for p in raw["points"]]  # fmt: skip
    effects = list(rows[0].effects)
    for i in range(2):  # from the teacher, from the ensemble
        found = [(s.effects[i], s.source) for s in rows if s.effects[i] is not None]
        if found:
            best, label = min(found, key=lambda f: f[0].diff_pp)
            effects[i] = dataclasses.replace(best, method=label)
    n = len(rows)
    return dataclasses.replace(rows[0], source=f"{folder.name}: best of {n} methods",
                               link=f"{folder}/sweep.md", effects=tuple(effects))  # fmt: skip


def situations(folders: list[Path], root: Path = Path()) -> list[Situation]:
    """A row per run folder, and per point of a sweep folder (a methods sweep: one row, its
    best method per column), in the order given; `folders` relative to `root` (and linked
    so)."""
    out = []
    for folder in map(Path, folders):
        sweep = root / folder / "sweep.json"
        if sweep.is_file():
            raw = json.loads(sweep.read_text())
            if _is_methods_sweep(raw):
                out.append(_best_method(folder, root, raw))
                continue
            for p in raw["points"]:
                out.append(_situation(folder / p["folder"], root,
                                      f"{folder.name}: {p['label']}", p["kd_vs_hard"]))  # fmt: skip
        elif (root / folder / "summary.json").is_file():
            out.append(_situation(folder, root, folder.name))
        else:
            raise RunFolderError(
                f"{folder} is neither a finished run nor a finished sweep; finish it first"
            )
    return out


def _diff(e: Effect) -> str:
    return f"{e.diff_pp:+.2f}{'*' if e.significant else ''}"


def _cell(e: Effect | None) -> str:
    if e is None:
        return "–"
    method = e.method.removeprefix("loss=") if e.method else None
    text = _diff(e) + (f" by {method}" if method else "")
    if e.ci95_pp:
        text += f" ({e.ci95_pp[0]:+.2f} to {e.ci95_pp[1]:+.2f})"
    if (e.cost_vs_hard, e.amortised_vs_hard) != (None, None):
        text += f", {e.cost_vs_hard:.2g}×" if e.cost_vs_hard is not None else ", –"
        if e.amortised_vs_hard is not None:
            text += f" ({e.amortised_vs_hard:.2g}×)"
    return text


def decision(s: Situation) -> str:
    """One row's bottom line: the strategy to use (the largest significant gain), by how much
    and at what training cost; or hard labels, the closest strategy, and how many repeats
    would resolve a difference of its size."""
    found = [(e, c) for e, c in zip(s.effects, COLUMNS, strict=True) if e is not None]
    if not found:
        return "nothing to weigh against hard labels."
    better = sorted((f for f in found if f[0].significant and f[0].diff_pp < 0),
                    key=lambda f: f[0].diff_pp)  # fmt: skip
    if better:
        e, (_, _, strategy) = better[0]
        method = f" ({e.method.removeprefix('loss=')})" if e.method else ""
        how = answer.ADVICE[strategy] + method
        cost = f", at {e.cost_vs_hard:.2g}× the training compute" if e.cost_vs_hard else ""
        text = f"{how}: {e.diff_pp:+.2f} pp against hard labels{cost}."
        cheaper = [f for f in better[1:] if f[0].cost_vs_hard and e.cost_vs_hard
                   and f[0].cost_vs_hard < e.cost_vs_hard]  # fmt: skip
        if cheaper:  # as good within the noise, for less: in sight
            o, (name, _, _) = min(cheaper, key=lambda f: f[0].cost_vs_hard)
            text += f" Also better: {name.lower()}, {o.diff_pp:+.2f} pp at {o.cost_vs_hard:.2g}×."
        return text
    e, (name, _, _) = min(found, key=lambda f: f[0].diff_pp)
    text = f"hard labels; the closest, {name.lower()}, differs by {e.diff_pp:+.2f} pp"
    if s.repeats < answer.MIN_PAIRS:
        return text + f", over {s.repeats} repeats: run at least 5."
    if e.needed is None:
        return text + ": more repeats would not resolve a difference this small."
    if e.needed <= s.repeats:
        return text + ", within noise at this many repeats."
    return text + f": about {e.needed} repeats would resolve a difference of this size."


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}%"


def table(folders: list[Path], root: Path = Path()) -> str:
    """The decision table as markdown, with the note that says how to read it."""
    head = ["Data", "Student", "Teacher", "Teacher error (vs hard)", "Hard labels",
            *(c[0] for c in COLUMNS), "Repeats", "Run"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * 3 + " ---: |" * (len(head) - 3)]
    rows = situations(folders, root)
    for s in rows:
        teacher = _pct(s.teacher_pct)
        if s.teacher_vs_hard is not None:
            teacher += f" ({_diff(s.teacher_vs_hard)})"
        cells = [s.data, s.student, s.teacher, teacher, _pct(s.hard_pct),
                 *map(_cell, s.effects), str(s.repeats), f"[{s.source}]({s.link})"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "What to do, row by row:", ""]
    lines += [f"- [{s.source}]({s.link}): {decision(s)}" for s in rows]
    return "\n".join(lines) + (
        "\n\nTest error (mean over repeats); the teacher's in brackets: minus the hard-label"
        " student's, pp. Each strategy: the student's error minus the"
        " hard-label student's, pp, paired by repeat (negative = better than hard labels),"
        " Holm-adjusted 95% CI in its run's family (a sweep point's over the whole sweep), * ="
        " Holm-significant at 0.05 with at least 3 repeats; then its training compute per"
        " deployable student relative to hard labels (counted MACs; in brackets when the teacher"
        " or ensemble already exists). A methods sweep (points that differ only in the"
        " distillation method) is one row: each distilled column its best method (by …), its"
        " interval Holm-adjusted over the whole sweep. – = not run, or not recorded by that"
        " run. What to do: the strategy with the largest Holm-significant gain; or hard labels,"
        " with the repeats that would resolve the closest strategy's difference (80% power,"
        " paired t-test at Holm's strictest level, from the row's own paired spread).\n"
    )


def update_readme(readme: Path) -> int:
    """Rewrite every decision-table block in `readme` from the folders its marker names
    (relative to the README's folder). Returns how many blocks were rewritten."""
    readme = Path(readme)
    text = readme.read_text()
    out, count, at = [], 0, 0
    begins = list(BEGIN.finditer(text))
    for i, m in enumerate(begins):  # every block closed before the next begins
        end = text.find(END, m.end())
        following = begins[i + 1].start() if i + 1 < len(begins) else len(text)
        if end < 0 or end > following:
            line = text.count("\n", 0, m.start()) + 1
            raise RunFolderError(
                f"{readme} line {line}: this decision-table marker has no {END!r} before the"
                " next one; close it, nothing was changed"
            )
    if text.count(END) != len(begins):
        raise RunFolderError(
            f"{readme} has {len(begins)} '<!-- kdbench decide …-->' marker(s) but"
            f" {text.count(END)} {END!r}; pair each marker with its end, nothing was changed"
        )
    for m in begins:
        end = text.find(END, m.end())
        body = table([Path(f) for f in m.group("folders").split()], readme.parent)
        out += [text[at : m.end()], "\n", body, "\n"]
        at, count = end, count + 1
    if not count:
        raise RunFolderError(
            f"{readme} has no '<!-- kdbench decide FOLDER… -->' marker; add one where the"
            " table goes"
        )
    atomic_write(readme, "".join([*out, text[at:]]).encode())
    return count
