"""The answer a run gives, in the report's first lines: for this student, which way of training
it to use, by how much it beats hard labels (with the Holm-adjusted interval the verdicts use),
and what it costs. Read from the summary alone, so a re-rendered report says the same.

The rule: among the strategies the run trained (distillation from the teacher or the ensemble,
and its controls), those significantly better than hard labels (Holm-adjusted paired t-test,
as the verdicts) are candidates; the one with the largest mean gain is the answer, and the other
candidates are named with their gain and cost, so a cheaper one that gets most of the gain is in
sight. With none, the answer is hard labels, and the closest strategy is named.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdbench.analysis.costs import STRATEGIES
from kdbench.roles import Role
from kdbench.sections import MAX_REPEATS
from kdbench.summary import Summary

MIN_PAIRS = 3  # fewer paired repeats cannot support an answer (the verdicts' rule)

ADVICE = {  # a strategy as the thing to do
    "from_teacher": "distil it from the teacher",
    "from_ensemble": "distil it from the ensemble",
    "smoothing": "train it on hard labels with label smoothing",
    "smoothing_matched": "train it on hard labels with label smoothing (matched to KD's targets)",
    "self_distillation": "distil it from its own hard-label twin (self-distillation)",
    "teacher_regularisation": "train it on hard labels with the teacher's regularisation",
}
SHORT = {"from_teacher": "from the teacher", "from_ensemble": "from the ensemble",
         "smoothing": "label smoothing", "smoothing_matched": "matched label smoothing",
         "self_distillation": "self-distillation",
         "teacher_regularisation": "the teacher's regularisation"}  # fmt: skip


@dataclass(frozen=True)
class Option:
    """One strategy against hard labels: mean paired difference (pp; negative = fewer errors),
    its Holm-adjusted 95% CI, whether it is significant, and its training compute against hard
    labels (and amortised, where its teacher or ensemble already exists)."""

    strategy: str
    error_pct: float
    diff_pp: float
    ci95_pp: tuple[float, float] | None
    significant: bool
    pairs: int
    cost_vs_hard: float | None
    amortised_vs_hard: float | None
    needed: int | None = None  # repeats that would resolve a difference of this size


POWER = 0.8  # the chance of calling a true difference of the measured size significant


def repeats_to_resolve(d_z: float | None, alpha: float) -> int | None:
    """The fewest paired repeats at which a paired t-test at level `alpha` (two-sided) has 80%
    power against a true difference of standardised size `d_z` (the run's own mean paired
    difference over its standard deviation): the noncentral t's power, solved by search.
    None: no spread to go by, or more than kdbench runs (`MAX_REPEATS`)."""
    if d_z is None or not d_z or d_z != d_z:
        return None
    from scipy import stats

    for n in range(3, MAX_REPEATS + 1):
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        nc = abs(d_z) * n**0.5
        power = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
        if power >= POWER:
            return n
    return None


@dataclass(frozen=True)
class Answer:
    """What to do (`best` None: hard labels), the other significantly better options, and the
    closest option when none is better."""

    student: str
    hard_pct: float
    best: Option | None
    others: tuple[Option, ...]
    closest: Option | None
    pairs: int
    worse: tuple[Option, ...] = ()  # significantly worse than hard labels


def versus_hard(summary: Summary, role: str, strategy: str | None = None) -> Option | None:
    """Row `role` against the hard-label student: its paired difference, the Holm-adjusted
    interval and whether it is significant (the verdicts' rule), and, for a `strategy` of the
    cost table, its training compute; None where the run has no such comparison."""
    if role not in summary.rows:
        return None
    try:
        c = summary.comparison(role, Role.STUDENT_HARD)
    except StopIteration:  # a row this run did not train (a control it had no flag for)
        return None
    if c.mean_diff_pp is None:
        return None
    ci = c.ci95_holm_pp or c.ci95_pp
    cost = summary.costs.strategy(strategy) if summary.costs and strategy else None
    family = max(1, len([x for x in summary.comparisons if x.p_ttest is not None]))
    return Option(
        strategy=strategy or str(role),
        error_pct=summary.rows[role].mean_pct,
        diff_pp=c.mean_diff_pp,
        ci95_pp=tuple(ci) if ci else None,
        significant=c.p_holm is not None and c.p_holm < summary.significance and c.n >= MIN_PAIRS,
        pairs=c.n,
        cost_vs_hard=cost.macs_vs_hard if cost else None,
        amortised_vs_hard=cost.amortised_vs_hard if cost else None,
        # Holm's strictest step (Bonferroni over the run's family): a resolution to count on
        needed=repeats_to_resolve(c.d_z, summary.significance / family),
    )


def options(summary: Summary) -> list[Option]:
    """Every strategy the run trained, against hard labels."""
    found = [versus_hard(summary, role, name) for name, role, _ in STRATEGIES
             if role != Role.STUDENT_HARD]  # fmt: skip
    return [o for o in found if o is not None]


def answer(summary: Summary, student: str) -> Answer | None:
    """The run's answer for `student` (its name), or None where the run has no hard-label row
    or no strategy to weigh against it."""
    hard = summary.rows.get(Role.STUDENT_HARD)
    opts = options(summary)
    if hard is None or not opts:
        return None
    better = sorted((o for o in opts if o.significant and o.diff_pp < 0), key=lambda o: o.diff_pp)
    closest = None if better else min(opts, key=lambda o: o.diff_pp)
    worse = tuple(o for o in opts if o.significant and o.diff_pp > 0)
    pairs = min(o.pairs for o in opts)
    return Answer(student, hard.mean_pct, better[0] if better else None, tuple(better[1:]),
                  closest, pairs, worse)  # fmt: skip


def _ci(o: Option) -> str:
    return "" if o.ci95_pp is None else f", 95% CI {o.ci95_pp[0]:+.2f} to {o.ci95_pp[1]:+.2f}"


def _cost(o: Option) -> str:
    if o.cost_vs_hard is None:
        return ""
    text = f"{o.cost_vs_hard:.2g}× the hard-label student's training compute"
    before = {"from_teacher": "teacher", "from_ensemble": "ensemble"}.get(o.strategy)
    if o.amortised_vs_hard is not None and before is not None:
        text += f" ({o.amortised_vs_hard:.2g}× once the {before} exists)"
    return text


def markdown(a: Answer) -> str:
    """The report's first lines."""
    head = f"**Answer for {a.student}:** "
    if a.pairs < MIN_PAIRS:
        return (
            head + f"not yet: {a.pairs} paired repeat{'s' if a.pairs != 1 else ''} cannot tell"
            f" a strategy from hard labels; run at least 5 (--repeats)."
        )
    if a.best is None:
        c = a.closest
        assert c is not None
        text = (
            head + f"train it on hard labels ({a.hard_pct:.2f}% test error). No way of"
            f" distilling or regularising it beat them at p < 0.05 (Holm) over {a.pairs} paired"
            f" repeats; the best of them, {SHORT[c.strategy]}, differs by {c.diff_pp:+.2f} pp"
            f"{_ci(c)}. {undecided(c)}"
        )
        if a.worse:
            parts = [f"{SHORT[o.strategy]} ({o.diff_pp:+.2f} pp)" for o in a.worse]
            text += " Significantly worse than hard labels: " + ", ".join(parts) + "."
        return text
    b = a.best
    cost = _cost(b)
    text = (
        head + f"{ADVICE[b.strategy]}: {b.error_pct:.2f}% test error against {a.hard_pct:.2f}%"
        f" on hard labels, {b.diff_pp:+.2f} pp ({b.pairs} paired repeats{_ci(b)}, Holm-adjusted)"
        + (f", at {cost}." if cost else ".")
    )
    if a.others:
        parts = [
            f"{SHORT[o.strategy]} ({o.diff_pp:+.2f} pp"
            + (f", {o.cost_vs_hard:.2g}×" if o.cost_vs_hard is not None else "")
            + ")"
            for o in a.others
        ]
        text += " Also better than hard labels: " + ", ".join(parts) + "."
    return text


def undecided(o: Option) -> str:
    """What would settle a difference the run could not call."""
    if o.needed is None:
        return "More repeats would not settle a difference this small against its spread."
    if o.needed <= o.pairs:
        return (
            "Its spread says this many repeats should have resolved a true difference of"
            " this size: it is likely noise."
        )
    return (
        f"About {o.needed} repeats would resolve a difference of this size (80% power,"
        " paired t-test at Holm's strictest level, from this run's own paired spread)."
    )
