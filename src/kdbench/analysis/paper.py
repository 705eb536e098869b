"""The paper's own numbers (its Table 1) and the runs they are a fair reference for."""

from __future__ import annotations

from kdbench.config import Config

# Table 1 of the paper: mean test error of 10 runs, in percent.
PAPER_TABLE1 = {
    "teacher": 2.01,
    "student_from_teacher": 2.89,
    "ensemble": 1.81,
    "student_from_ensemble": 2.68,
    "student_hard": 2.26,
}


TEACHER_SETTINGS = ("teacher_hidden", "teacher_arch", "teacher_dropout", "teacher_input_dropout",
                    "teacher_jitter", "teacher_max_norm", "teacher_epochs")  # fmt: skip

# what the paper's study fixes: its Table 1 describes these values and no others
PAPER_FIXES = {
    "model": ("teacher_hidden", "student_hidden", "teacher_arch", "student_arch",
              "teacher_dropout", "teacher_input_dropout", "teacher_jitter", "teacher_max_norm"),
    "distill": ("temperature", "alpha", "loss"),
    "protocol": ("members",),
    "train": ("learning_rate", "batch_size", "teacher_epochs"),
}  # fmt: skip


def comparable_to_paper(cfg: dict, varied: tuple[str, ...] = ()) -> bool:
    """The paper's Table 1 is a fair reference only for its own study: full MNIST trained
    until early stopping, with its architectures, temperature, alpha, ensemble size and
    optimiser (`PAPER_FIXES`). Not on another dataset, a `--train-limit` subset, a fixed
    number of `--epochs`, your own teacher, a sweep point at another temperature or the
    Hinton presets' networks. The presets that vary only what the paper leaves unstated
    (head, early stopping, teacher updates) keep it: they are readings of the same study.
    `varied`: settings a figure puts on its own axis (a teacher-strength curve's teachers),
    where the paper's point is a reference on that axis."""
    d, t = cfg["data"], cfg["train"]
    own = cfg["model"].get("own_teacher")
    if d["dataset"] != "mnist" or d["train_limit"] is not None or t["epochs"] is not None or own:
        return False
    paper, cfg = Config().to_dict(), Config.from_dict(cfg).to_dict()  # older folders: defaults
    return all(
        _same(cfg[section][key], paper[section][key])
        for section, keys in PAPER_FIXES.items()
        for key in keys
        if key not in varied
    )


def _same(a, b) -> bool:
    return (list(a) if isinstance(a, tuple | list) else a) == (
        list(b) if isinstance(b, tuple | list) else b
    )
