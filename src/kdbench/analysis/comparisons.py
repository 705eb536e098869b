"""The report's verdicts and its table of paired comparisons, with the intervals that agree
with the Holm-adjusted calls."""

from __future__ import annotations

from kdbench.analysis.verdict import wilcoxon_note
from kdbench.summary import Summary


def verdicts_markdown(summary: Summary) -> str:
    """One bullet per comparison, then the run's one Wilcoxon caveat where it applies."""
    lines = ["- " + c.verdict for c in summary.comparisons]
    pairs = [c.n for c in summary.comparisons if c.p_holm is not None]
    note = wilcoxon_note(min(pairs)) if pairs else None
    return "\n".join(lines) + (f"\n\n{note}" if note else "")


def comparisons_markdown(summary: Summary) -> str:
    def f(x, spec=".2f"):
        return "–" if x is None else format(x, spec)

    lines = [
        "| a | b | Mean diff (pp) | 95% CI | p (t-test) | p (Wilcoxon) | p (Holm) |"
        " Holm-adjusted 95% CI | d_z | Pairs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def interval(ci):
        return "–" if ci is None else f"{ci[0]:.2f} – {ci[1]:.2f}"

    for c in summary.comparisons:
        lines.append(
            f"| {c.a} | {c.b} | {f(c.mean_diff_pp, '+.2f')} | {interval(c.ci95_pp)}"
            f" | {f(c.p_ttest, '.3g')} | {f(c.p_wilcoxon, '.3g')} | {f(c.p_holm, '.3g')}"
            f" | {interval(c.ci95_holm_pp)} | {f(c.d_z)} | {c.n} |"
        )
    lines.append("")
    lines.append(
        "Positive differences mean a had the higher error. The 95% CI and p (t-test) are each"
        " comparison's own; the verdicts use the Holm-adjusted paired t-test at"
        f" {summary.significance} over all {len(summary.comparisons)} comparisons, and the"
        " Holm-adjusted CI (the t-interval at the confidence Holm's factor implies) agrees with"
        " that call: it excludes 0 exactly when p (Holm) < "
        f"{summary.significance}. d_z is the mean difference over its standard deviation"
        " (Cohen's d for paired samples)."
    )
    return "\n".join(lines) + "\n"
