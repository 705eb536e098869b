"""A run's settings in words: the report's configuration table, and the names of its models
and recipe that the report, the answer and the decision table use."""

from __future__ import annotations

from kdbench.analysis.paper import comparable_to_paper
from kdbench.config import Config, TrainConfig, augments_of, teacher_schedule
from kdbench.roles import CONTROL_ROLES, LABELS, label


def _stopping_rows(train: dict, distill: dict) -> list[tuple[str, str]]:
    """How training stopped, in the configuration table; nothing about stopping when nothing
    stops on anything (fixed epochs)."""
    if train["epochs"] is not None:
        return [("Early stopping", f"fixed {train['epochs']} epochs (early stopping off)")]
    kd_watch = (
        "combined distillation loss on validation (Keras' behaviour)"
        if distill["kd_monitor"] == "combined"
        else "hard-label validation loss"
    )
    if train["monitor"] != "val_loss" and distill["kd_monitor"] == "combined":
        kd_watch = f"{train['monitor']} (combined loss where a loss is watched)"
    return [
        (
            "Early stopping",
            f"patience {train['patience']} on {train['monitor']},"
            f" at most {train['max_epochs']} epochs",
        ),
        ("Best weights restored", "yes" if train["restore_best"] else "no (last epoch's weights)"),
        ("Distilled students stopped on", kd_watch),
    ]


def optimiser(t: TrainConfig) -> str:
    """The optimiser and its settings, in words (every model's)."""
    if t.optimizer == "sgd":
        kind = "SGD" + (f", momentum {t.momentum:g}" if t.momentum else "")
        kind += " (Nesterov)" if t.nesterov else ""
    else:
        kind = f"Adam (eps {t.adam_eps:g})"
    decay = f", weight decay {t.weight_decay:g}" if t.weight_decay else ""
    return f"{kind}, lr {t.learning_rate:g}{decay}, batch {t.batch_size}"


def recipe_short(t: TrainConfig) -> str:
    """The recipe in a few words where it is not the paper's (Adam, no schedule, no
    augmentation); '' where it is."""
    parts = ["SGD"] if t.optimizer == "sgd" else []
    if t.lr_schedule != "none":
        parts.append(t.lr_schedule)
    if augments_of(t):
        parts.append("+".join(augments_of(t)))
    return ", ".join(parts)


def _recipe_rows(t: TrainConfig) -> list[tuple[str, str]]:
    """Every model's recipe: optimiser, learning-rate schedule, augmentation."""
    rows = [("Optimiser", optimiser(t))]
    if t.lr_schedule == "cosine":
        rows.append(("Learning-rate schedule", "cosine, to 0 over the epoch cap"))
    elif t.lr_schedule == "step":
        rows.append(("Learning-rate schedule", f"x{t.lr_gamma:g} every {t.lr_step} epochs"))
    kinds = augments_of(t)
    if kinds:
        parts = [f"random crop (padding {t.crop_padding})" if k == "crop" else
                 "horizontal flip" for k in kinds]  # fmt: skip
        rows.append(("Augmentation (every model)", " and ".join(parts)))
    return rows


def _teacher_rows(m: dict, train: TrainConfig) -> list[tuple[str, str]]:
    """The teachers' own schedule and regularisation, where they differ from everyone's."""
    rows = []
    own = teacher_schedule(train)
    if train.teacher_epochs is not None:
        rows.append(("Teacher schedule", f"exactly {own.epochs} epochs"))
    elif any(v is not None for v in (train.teacher_patience, train.teacher_max_epochs,
                                      train.teacher_monitor)):  # fmt: skip
        rows.append((
            "Teacher schedule",
            f"patience {own.patience} on {own.monitor}, at most {own.max_epochs} epochs",
        ))  # fmt: skip
    if train.teacher_lr_decay is not None:
        rows.append(("Teacher learning rate", f"× {train.teacher_lr_decay} every epoch"))
    if m.get("teacher_dropout") or m.get("teacher_input_dropout"):
        rows.append((
            "Teacher dropout",
            f"{m.get('teacher_input_dropout', 0)} on inputs, {m.get('teacher_dropout', 0)} hidden",
        ))  # fmt: skip
    if m.get("teacher_max_norm") is not None:
        rows.append(("Teacher max-norm", f"each hidden unit's weights ≤ {m['teacher_max_norm']}"))
    return rows


def student_name(m: dict) -> str:
    """The students' (and ensemble members') architecture as the configuration names it."""
    return m.get("student_arch") or "-".join(map(str, m["student_hidden"]))


def named(arch: str) -> str:
    """An MLP's hidden sizes as the MLP they are (`100` -> `MLP 100`)."""
    return f"MLP {arch}" if arch[:1].isdigit() else arch


def teacher_name(m: dict) -> str:
    """Your own teacher by its file (and SHA-256), else the architecture kdbench trained."""
    if m.get("own_teacher"):
        sha = m.get("own_teacher_sha256")
        return f"yours: {m['own_teacher']}" + (f" (SHA-256 {sha[:12]}…)" if sha else "")
    return m.get("teacher_arch") or "-".join(map(str, m["teacher_hidden"]))


def row_names(cfg: dict, resources: dict | None = None) -> dict[str, str]:
    """How tables and figures name each row: the paper's words ("Large network", "Small
    network") on the paper's own study, else each model by its architecture and, where the run
    measured it, its size: a LeNet-5 teacher is not a "large network" beside a larger student."""
    m = cfg["model"]
    own = m.get("own_teacher")
    names = {row: label(row, own) for row in LABELS}  # controls: their training says it all
    if comparable_to_paper(cfg):
        return names
    sized = (resources or {}).get("rows", {})

    def size(row: str) -> str:
        n = (sized.get(row) or {}).get("params")
        return "" if n is None else f" ({n:,} params)"

    s = named(student_name(m))
    names.update({
        "teacher": f"Your teacher ({own})" if own else f"Teacher: {named(teacher_name(m))}",
        "student_from_teacher": f"{s} distilled from {'your' if own else 'the'} teacher",
        "ensemble": f"Ensemble of {cfg['protocol']['members']} × {s}",
        "student_from_ensemble": f"{s} distilled from the ensemble",
        "student_hard": f"{s} on hard labels",
        "assistant": f"Assistant: {named(cfg['distill'].get('assistant_arch') or '?')},"
                     " distilled from the teacher",
    })  # fmt: skip
    controls = set(CONTROL_ROLES.values())  # the student's size: said on its own row
    return {row: name if row in controls else name + size(row) for row, name in names.items()}


def config_table(cfg: dict) -> str:
    d, m, t, k, p = (cfg[s] for s in ("data", "model", "train", "distill", "protocol"))
    rows = [
        (
            "Dataset",
            f"{d['dataset']}"
            + (f", first {d['train_limit']} training images" if d["train_limit"] else ""),
        ),
        (
            ("Validation set", f"yours (x_val, y_val: {d['validation_rows']} examples)")
            if d.get("validation_rows")
            else ("Validation split", f"last {d['validation_split']:.0%} of the training images")
        ),
        ("Teacher", teacher_name(m)),
        ("Student / ensemble member", student_name(m)),
        ("Repeats × members", f"{p['repeats']} × {p['members']}"),
        *_recipe_rows(Config.from_dict(cfg).train),
        *_stopping_rows(t, k),
        ("Temperature T, alpha (hard-label weight)", f"{k['temperature']}, {k['alpha']}"),
        (
            "Teachers during distillation",
            "trained along with each student (its own copies; the paper's Keras code)"
            if k.get("teacher_updates") == "joint"
            else "frozen",
        ),
        *(
            [("Teacher input jitter", f"up to {m['teacher_jitter']} pixels")]
            if m.get("teacher_jitter")
            else []
        ),
        *_teacher_rows(m, Config.from_dict(cfg).train),
        (
            "Ensemble soft targets",
            "mean of softened probabilities"
            if k["ensemble_targets"] == "probs"
            else "softmax of mean logits",
        ),
        ("Seed", str(p["seed"])),
        ("Device", cfg["device"]),
    ]
    return "| Setting | Value |\n| --- | --- |\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
