"""Named presets: the paper's study and the variants that test what it leaves unstated.

Each preset is a documented set of overrides on the default configuration. Explicit flags are
applied after the preset, so `--preset hinton --temperature 4` is Hinton's setup at T = 4. The
preset's name is recorded in `config.json` beside the settings it resolved to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdbench.config import Config
from kdbench.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str  # one line: what it changes and which question it answers
    overrides: dict[str, Any]


_HINTON = {  # Hinton et al. 2015's MNIST setup
    "teacher_hidden": (1200, 1200),
    "student_hidden": (800, 800),
    "temperature": 20.0,
    "teacher_dropout": 0.5,
    "teacher_input_dropout": 0.2,
    "teacher_jitter": 2,
}

# the conv study's small CNN (`benchmarks/small_cnn.py` chose it: microcontroller-sized, and on
# hard labels at least as accurate as the paper's 100-unit MLP)
SMALL_CNN = "cnn:4,8"
_CONTROLS = "smoothing,smoothing-matched,self"

# the study with nets people deploy and a modern recipe, sized so one run of 10 repeats fits
# two CPU cores in well under 90 minutes (docs/results/deploy-*: the measured times)
DEPLOY_TEACHER, DEPLOY_STUDENT = "resnet:8,8", "mbv2:8,16,32"
_DEPLOY = {
    "teacher_arch": DEPLOY_TEACHER,
    "student_arch": DEPLOY_STUDENT,
    "optimizer": "sgd",
    "learning_rate": 0.05,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "lr_schedule": "cosine",
    "epochs": 15,
    "augment": "crop,flip",
    "crop_padding": 3,
    "temperature": 4.0,
    "members": 5,
    "train_limit": 10000,
    "controls": "smoothing,self",
}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "paper",
            "The study as docs/protocol.md describes it: logits head, T = 10, alpha = 0.1, early"
            " stopping on validation loss with patience 2, last weights kept.",
            {},
        ),
        Preset(
            "paper-softmax-head",
            "Models end in softmax and the temperature divides those probabilities, as the"
            " paper's code does if its output layer is a softmax: nearly uniform soft targets.",
            {"head": "softmax"},
        ),
        Preset(
            "restore-best",
            "Early stopping restores the best weights instead of keeping the last ones.",
            {"restore_best": True},
        ),
        Preset(
            "watch-error",
            "Early stopping watches validation error instead of validation loss.",
            {"monitor": "val_error"},
        ),
        Preset(
            "hard-monitor",
            "Distilled students stop on the hard-label validation loss, not the combined loss.",
            {"kd_monitor": "hard"},
        ),
        Preset(
            "paper-keras",
            "The paper's code as written: its Keras distiller also trains the teachers (every"
            " ensemble member) through the distillation loss; each student gets its own copies.",
            {"teacher_updates": "joint"},
        ),
        Preset(
            "paper-keras-train-loss",
            "paper-keras with early stopping on the training loss: the paper's text ('until the"
            " loss stops improving for 2 epochs') read literally, as it never says validation.",
            {"teacher_updates": "joint", "monitor": "train_loss"},
        ),
        Preset(
            "hinton",
            "Hinton et al. 2015: teacher 1200-1200 with dropout (0.2 input, 0.5 hidden) and"
            " inputs jittered by up to 2 pixels, student 800-800, T = 20.",
            _HINTON,
        ),
        Preset(
            "hinton-strong",
            "Hinton et al. 2015's regime with a strong teacher: the hinton preset's teacher also"
            " max-norm constrained (3) and trained 100 fixed epochs with its learning rate"
            " x0.98 per epoch; 3 ensemble members (the question is the single teacher).",
            {
                **_HINTON,
                "teacher_max_norm": 3.0,
                "teacher_epochs": 100,
                "teacher_lr_decay": 0.98,
                "members": 3,
            },
        ),
        Preset(
            "controls",
            "The paper's study plus its controls: label smoothing (fixed epsilon 0.1, and"
            " matched to the ensemble's KD targets) and self-distillation (from the hard-label"
            " student): is the distilled students' gain knowledge, or only softer targets?",
            {"controls": _CONTROLS},
        ),
        Preset(
            "conv",
            f"The paper's protocol with conv nets: a LeNet-5 teacher, an ensemble of 10 small"
            f" CNNs ({SMALL_CNN}) and small-CNN students, with the controls: does the paper's"
            " answer hold beyond fully connected nets?",
            {"teacher_arch": "lenet5", "student_arch": SMALL_CNN, "controls": _CONTROLS},
        ),
        Preset(
            "deploy",
            f"BatchNorm nets people deploy, trained the modern way: a ResNet-8 teacher"
            f" ({DEPLOY_TEACHER}), MobileNetV2-style students and an ensemble of 5"
            f" ({DEPLOY_STUDENT}); SGD (Nesterov, weight decay 5e-4) with a cosine schedule over"
            " 15 epochs, random crops and flips, T = 4, on 10,000 training images, with the"
            " label-smoothing and self-distillation controls.",
            _DEPLOY,
        ),
        Preset(
            "conv-teacher",
            "The paper's MLP students and ensemble, a LeNet-5 teacher, with the controls: does a"
            " strong conv teacher help the paper's own student?",
            {"teacher_arch": "lenet5", "controls": _CONTROLS},
        ),
        Preset(
            "methods",
            "The base of the methods study (`--grid loss=kd,dkd,dist,mse`): the paper's study"
            " with the label-smoothing control to beat, and DKD's warm-up over 2 epochs, its"
            " paper's share (20 of 240) of the ~20 epochs these students train.",
            {"controls": "smoothing", "dkd_warmup": 2},
        ),
    )
}

# the variants `kdbench explain` compares with the paper by default (hinton is much larger:
# ask for it by name)
VARIANTS = (
    "paper",
    "paper-keras",
    "paper-keras-train-loss",
    "paper-softmax-head",
    "restore-best",
    "watch-error",
    "hard-monitor",
)


def get(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(
            f"unknown preset '{name}'{did_you_mean(name, PRESETS)}; choose one of"
            f" {', '.join(PRESETS)} (see `kdbench presets`)"
        )
    return PRESETS[name]


def resolve(name: str = "paper", **flags: Any) -> Config:
    """The configuration of preset `name` with explicit `flags` (None = not given) on top."""
    preset = get(name)
    return Config().with_overrides(**preset.overrides).with_overrides(**flags, preset=name)
