"""Plain-language verdicts: one sentence per paired comparison that a non-statistician can act on.

The call is made on the Holm-adjusted paired t-test p against SIGNIFICANCE; the sentence always
carries the effect size in percentage points and the interval that agrees with that call (the
Holm-adjusted 95% CI, `stats.adjusted_interval`: it excludes 0 exactly when the call is a
difference), so "no detectable difference" is never mistaken for "no difference" and never sits
beside an interval that says otherwise. The Wilcoxon caveat of few repeats is said once for the
run (`wilcoxon_note`), not in every sentence.
"""

from __future__ import annotations

from kdbench.analysis.stats import SIGNIFICANCE, min_wilcoxon_p
from kdbench.summary import Comparison

# (a, b) -> (subject, verb, what it is compared with or None, the pair named neutrally);
# {teacher} / {Teacher} name the teacher row: kdbench's large network, or your own teacher
TEACHER_NAMES = {False: ("the large network", "The large network (teacher)"),
                 True: ("your teacher", "Your teacher")}  # fmt: skip
PHRASES = {
    ("student_from_teacher", "student_hard"): (
        "Distilling from {teacher}",
        "made the student",
        "training on hard labels",
        "the student distilled from {teacher} and the hard-label student",
    ),
    ("student_from_ensemble", "student_hard"): (
        "Distilling from the ensemble",
        "made the student",
        "training on hard labels",
        "the student distilled from the ensemble and the hard-label student",
    ),
    ("student_from_ensemble", "student_from_teacher"): (
        "Distilling from the ensemble instead of {teacher}",
        "made the student",
        None,
        "students distilled from the ensemble and from {teacher}",
    ),
    ("teacher", "student_hard"): (
        "{Teacher}",
        "was",
        "the small hard-label network",
        "{teacher} and the small hard-label network",
    ),
    ("ensemble", "student_hard"): (
        "The ensemble",
        "was",
        "a single small hard-label network",
        "the ensemble and a single small hard-label network",
    ),
}
CONTROL_NAMES = {  # a control as the subject, and as what a distilled student is compared with
    "student_smooth": ("Label smoothing", "the label-smoothing control"),
    "student_smooth_matched": ("Label smoothing as soft as KD's targets",
                               "the matched label-smoothing control"),
    "student_self": ("Distilling from the hard-label student itself",
                     "the self-distillation control"),
    "student_teacher_reg": ("The teacher's dropout and jitter",
                            "the teacher's-regularisation control"),
}  # fmt: skip
for _row, (_subject, _name) in CONTROL_NAMES.items():
    PHRASES[(_row, "student_hard")] = (
        _subject, "made the student", "training on hard labels",
        f"{_name} and the hard-label student",
    )  # fmt: skip
    for _source, _who in (("student_from_teacher", "{teacher}"),
                          ("student_from_ensemble", "the ensemble")):  # fmt: skip
        PHRASES[(_source, _row)] = (
            f"Distilling from {_who}", "made the student", _name,
            f"the student distilled from {_who} and {_name}",
        )  # fmt: skip


def sentence(
    c: Comparison,
    threshold: float = SIGNIFICANCE,
    own_teacher: bool = False,
    cost: str | None = None,
) -> str:
    """`own_teacher`: the teacher is the user's, so it is "your teacher", not "the large
    network"; `cost`: what the comparison's strategy cost to train, said after the evidence
    ("at 12× the hard-label student's training compute …", `analysis.costs.clause`)."""
    default = (c.a, "was", c.b, f"{c.a} and {c.b}")
    teacher, capital = TEACHER_NAMES[own_teacher]
    phrases = tuple(
        p.format(teacher=teacher, Teacher=capital) if p else p
        for p in PHRASES.get((c.a, c.b), default)
    )
    subject, verb, reference, pair = phrases
    versus = f" compared with {reference}" if reference else ""
    n = c.n
    if n < 2 or c.p_holm is None:
        return f"Not enough paired runs ({n}) to compare {pair}."
    # summaries written before the adjusted interval: the plain one, named as such
    adjusted = c.ci95_holm_pp is not None
    lo, hi = c.ci95_holm_pp if adjusted else c.ci95_pp
    name = "Holm-adjusted 95% CI" if adjusted else "95% CI (unadjusted)"
    diff, p = c.mean_diff_pp, c.p_holm
    tail = f"p = {p:.3g} Holm-adjusted, {n} paired runs"
    if p < threshold and diff != 0:
        word = "worse" if diff > 0 else "better"
        if diff < 0:  # "better by 0.40 (CI 0.26 to 0.54)": the interval in the sentence's sign
            lo, hi = -hi, -lo
        evidence = f"{name} {lo:.2f} to {hi:.2f}, {tail}"
        text = f"{subject} {verb} {word} by {abs(diff):.2f} percentage points{versus} ({evidence})"
    else:
        evidence = f"{name} {lo:+.2f} to {hi:+.2f}, {tail}"
        text = (
            f"No detectable difference between {pair} at p < {threshold}"
            f" (mean difference {diff:+.2f} percentage points, {evidence})"
        )
    return text + (f", {cost}." if cost else ".")


def wilcoxon_note(pairs: int, threshold: float = SIGNIFICANCE) -> str | None:
    """The one caveat of few repeats, for the run: with n pairs the exact Wilcoxon test cannot
    reach the threshold at all. None when it can."""
    floor = min_wilcoxon_p(pairs)
    if pairs < 1 or floor < threshold:
        return None
    return (
        f"With {pairs} pairs the Wilcoxon signed-rank test (the table's p (Wilcoxon)) cannot get"
        f" below p = {floor:.3g}, so it can never call a difference significant: run more"
        " repeats. The verdicts use the paired t-test."
    )
