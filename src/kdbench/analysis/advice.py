"""What diagnose tells a user to try: advice fitted to the run (the strong-teacher preset only
where the run is not it, temperatures below the one it used), and the same advice in the
Python API's terms for a run on your own arrays."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kdbench.config import Config


@dataclass(frozen=True)
class StrengthCurve:
    """What the committed teacher-strength curve found, for the paper's 100-unit student at
    T = 10, alpha = 0.1: how much better than the hard-label student (pp) the teacher was where
    distilling from it helped, and where it still hurt (Holm-significant over the sweep).
    `tests/test_advice.py` checks these against the folder's sweep.json."""

    folder: str
    helped_from_pp: float | None
    hurt_up_to_pp: float | None
    strongest: str  # the strongest teacher on the curve, its advantage and difference (pp)
    strongest_gap_pp: float
    strongest_diff_pp: float

    def sentence(self) -> str:
        parts = []
        if self.hurt_up_to_pp is not None:
            parts.append(f"still hurt with a teacher {self.hurt_up_to_pp:.2f} pp better than the"
                         " hard-label student")  # fmt: skip
        if self.helped_from_pp is None:
            diff = f"{self.strongest_diff_pp:+.2f}".replace("-", "−")
            gap = f"{self.strongest_gap_pp:.2f} pp better: {diff} pp"
            parts.append(f"never helped significantly ({self.strongest} {gap}, not significant)")
        else:
            parts.append(f"helped only from a teacher {self.helped_from_pp:.2f} pp better on")
        return (f"On MNIST (the paper's student, T = 10, alpha = 0.1), distilling from a single"
                f" teacher {' and '.join(parts)} ({self.folder})")  # fmt: skip


CURVE = StrengthCurve(
    "docs/results/teacher-strength-mnist", None, 0.58, "a LeNet-5 teacher", 1.34, -0.155
)


def stronger_teacher(cfg: Config, early_stopping: bool) -> str:
    """What to try for a weak teacher, fitted to the run: the strong-teacher preset where the
    run is not already it, the teacher's own longer schedule where it has none."""
    tries = []
    if cfg.preset != "hinton-strong":
        tries.append("--preset hinton-strong (a dropout-regularised 1200-1200 teacher trained"
                     " 100 epochs with max-norm; docs/results/hinton-strong-mnist)")  # fmt: skip
    if cfg.train.teacher_epochs is None:
        tries.append("a longer schedule for the teacher alone (--teacher-epochs 30)")
    if early_stopping:
        tries += ["--preset restore-best", "a larger --patience"]
    else:
        tries.append("more --epochs")
    return ", ".join(tries[:-1]) + ", or " + tries[-1]


def lower_temperature(t: float) -> str:
    """Temperatures to try below `t` (halving), never the one the run already used."""
    lower = [v for v in (t / 2, t / 4) if v >= 1] or [t / 2]
    values = ", ".join(f"{v:g}" for v in lower)
    grid = ",".join(f"{v:g}" for v in [*lower, t])
    return f"a lower --temperature ({values}), or `kdbench sweep --grid temperature={grid}`"


def in_python(advice: str) -> str:
    """Command-line advice as the Python API says it: `--preset P` as `kdbench.preset("P")`,
    `--flag V` as `flag=V` in `Config.with_overrides`, and a `kdbench sweep --grid name=a,b`
    as `kdbench.sweep(..., grid={"name": [a, b]})`."""

    def grid(m: re.Match) -> str:
        name, values = m.group(1), m.group(2).split(",")
        grid = f'{{"{name}": [{", ".join(values)}]}}'
        return f"`kdbench.sweep(cfg, {grid}, out, arrays=(x_train, y_train, x_test, y_test))`"

    advice = re.sub(r"`kdbench sweep --grid ([a-z_]+)=([^`\s]+)`", grid, advice)
    advice = re.sub(r"--preset ([a-z0-9-]+)", r'kdbench.preset("\1")', advice)

    def flag(m: re.Match) -> str:
        name = m.group(1).replace("-", "_")  # every flag is its setting's name
        return f"{name}={m.group(2)}" if m.group(2) else name

    return re.sub(r"--([a-z][a-z-]*)(?: ([0-9][0-9.e-]*))?", flag, advice)
