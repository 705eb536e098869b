"""What a configuration may be: one `ConfigError` line per impossible or inconsistent setting,
naming the flag that fixes it. `config.Config` calls `validate` whenever one is made."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kdbench.errors import ConfigError, did_you_mean
from kdbench.sections import (
    AUGMENTS,
    CONTROLS,
    DEVICES,
    ENSEMBLE_TARGETS,
    HEADS,
    KD_MONITORS,
    MAX_MEMBERS,
    MAX_REPEATS,
    MAX_TEMPERATURE,
    MONITORS,
    OPTIMIZERS,
    SCHEDULES,
    STANDARDIZABLE,
    TEACHER_SCHEDULE,
    TEACHER_UPDATES,
    DataConfig,
    DistillConfig,
    ModelConfig,
    TrainConfig,
    augment_names,
    controls_of,
)


def _positive_int(value: Any, name: str, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1 (got {value!r}); fix {flag}")


def _hidden(sizes: Any, name: str, flag: str) -> None:
    if not isinstance(sizes, tuple) or len(sizes) == 0:
        raise ConfigError(f"{name} must list at least one hidden layer size; fix {flag}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ConfigError(f"{name} sizes must be whole numbers >= 1 (got {s!r}); fix {flag}")


def validate(cfg: Any) -> None:  # a `config.Config` (which imports this module)
    """Reject impossible settings with a message naming the flag that fixes them."""
    _validate_data(cfg.data)
    _validate_model(cfg.model)
    _validate_train(cfg.train)
    _validate_distill(cfg.distill, cfg.model)
    if cfg.model.own_teacher is not None:
        given = [n for n in TEACHER_SCHEDULE if getattr(cfg.train, n) is not None]
        given += ["teacher_max_norm"] if cfg.model.teacher_max_norm is not None else []
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise ConfigError(
                f"{flags}: kdbench does not train your own teacher (--own-teacher); drop them"
            )
    t = cfg.train
    if cfg.distill.teacher_updates == "joint" and (
        t.optimizer != "adam" or t.lr_schedule != "none" or t.weight_decay
    ):
        raise ConfigError(
            "--teacher-updates joint trains the teachers' copies with Adam at a fixed learning"
            " rate (the paper's Keras code); drop --optimizer sgd, --lr-schedule and"
            " --weight-decay, or use --teacher-updates frozen"
        )
    _positive_int(cfg.protocol.repeats, "repeats", "--repeats")
    _positive_int(cfg.protocol.members, "members", "--members")
    for value, what, most in ((cfg.protocol.repeats, "repeats", MAX_REPEATS),
                              (cfg.protocol.members, "members", MAX_MEMBERS)):  # fmt: skip
        if value > most:
            raise ConfigError(
                f"{what} must be at most {most} (got {value}): every model is held in memory;"
                f" fix --{what}"
            )
    seed = cfg.protocol.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0 (got {seed!r}); fix --seed")
    if cfg.device not in DEVICES:
        raise ConfigError(f"device must be cpu, cuda or auto (got {cfg.device!r}); fix --device")
    if cfg.threads is not None:
        _positive_int(cfg.threads, "threads", "--threads")
    if not isinstance(cfg.preset, str) or not cfg.preset:
        raise ConfigError(f"preset must be a name (got {cfg.preset!r}); see `kdbench presets`")


def _one_of(value: Any, choices: Sequence[str], what: str, fix: str = "") -> None:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)} (got {value!r}){fix}")


def _validate_data(data: DataConfig) -> None:
    if data.image_size is not None:
        _positive_int(data.image_size, "image size", "--image-size")
        if data.data is None:
            raise ConfigError("--image-size resizes the images of --data FOLDER; give --data")
    if data.data is not None and data.dataset not in ("mnist", "arrays"):
        raise ConfigError(
            f"--data {data.data} is the dataset; drop --dataset {data.dataset} (or --data)"
        )
    if data.train_limit is not None:
        _positive_int(data.train_limit, "train limit", "--train-limit")
    split = data.validation_split
    if not (isinstance(split, (int, float)) and 0 < split < 1):
        raise ConfigError(
            f"validation split must be between 0 and 1 exclusive (got {split!r});"
            " fix --validation-split"
        )


def _validate_model(model: ModelConfig) -> None:
    for arch, flag in (
        (model.teacher_arch, "--teacher-arch"),
        (model.student_arch, "--student-arch"),
    ):
        if arch is not None and (not isinstance(arch, str) or not arch.strip()):
            raise ConfigError(
                f"architecture must be a name like cnn:4,8 (got {arch!r}); fix {flag}"
            )
    norm = model.teacher_max_norm
    if norm is not None and not (
        isinstance(norm, (int, float)) and not isinstance(norm, bool) and math.isfinite(norm)
        and norm > 0
    ):  # fmt: skip
        raise ConfigError(
            f"teacher max-norm must be a finite number > 0 (got {norm!r}); fix --teacher-max-norm"
        )
    _hidden(model.teacher_hidden, "teacher hidden layers", "--teacher-hidden")
    _hidden(model.student_hidden, "student hidden layers", "--student-hidden")
    _one_of(model.head, HEADS, "head", "; fix --head")
    for rate, flag in (
        (model.teacher_dropout, "--teacher-dropout"),
        (model.teacher_input_dropout, "--teacher-input-dropout"),
    ):
        if not (isinstance(rate, (int, float)) and 0 <= rate < 1):
            raise ConfigError(f"dropout rate must be in [0, 1) (got {rate!r}); fix {flag}")
    jitter = model.teacher_jitter
    if isinstance(jitter, bool) or not isinstance(jitter, int) or not (0 <= jitter < 14):
        raise ConfigError(
            f"teacher jitter must be a whole number of pixels in [0, 13] (got"
            f" {jitter!r}); fix --teacher-jitter"
        )


def _validate_train(train: TrainConfig) -> None:
    lr, eps = train.learning_rate, train.adam_eps
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(
            f"learning rate must be a finite number > 0 (got {lr!r}); fix --learning-rate"
        )
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ConfigError(f"Adam epsilon must be a finite number > 0 (got {eps!r}); fix --adam-eps")
    _positive_int(train.batch_size, "batch size", "--batch-size")
    if train.epochs is not None:
        _positive_int(train.epochs, "epochs", "--epochs")
    _positive_int(train.patience, "patience", "--patience")
    _positive_int(train.max_epochs, "max epochs", "--max-epochs")
    _one_of(train.monitor, MONITORS, "monitor")
    for value, what in (
        (train.teacher_epochs, "teacher epochs"),
        (train.teacher_patience, "teacher patience"),
        (train.teacher_max_epochs, "teacher max epochs"),
    ):
        if value is not None:
            _positive_int(value, what, "--" + what.replace(" ", "-"))
    if train.teacher_monitor is not None:
        _one_of(train.teacher_monitor, MONITORS, "teacher monitor", "; fix --teacher-monitor")
    _one_of(train.optimizer, OPTIMIZERS, "optimizer", "; fix --optimizer")
    _one_of(train.lr_schedule, SCHEDULES, "lr schedule", "; fix --lr-schedule")
    for value, what, low in ((train.momentum, "momentum", 0.0),
                             (train.weight_decay, "weight decay", 0.0)):  # fmt: skip
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
            raise ConfigError(
                f"{what} must be a number >= 0 (got {value!r}); fix --{what.replace(' ', '-')}"
            )
    if not isinstance(train.nesterov, bool):
        raise ConfigError(f"nesterov must be true or false (got {train.nesterov!r})")
    if train.nesterov and (train.optimizer != "sgd" or train.momentum == 0):
        raise ConfigError("--nesterov needs --optimizer sgd with --momentum > 0")
    _positive_int(train.lr_step, "lr step", "--lr-step")
    gamma = train.lr_gamma
    if not (isinstance(gamma, (int, float)) and 0 < gamma <= 1):
        raise ConfigError(f"lr gamma must be in (0, 1] (got {gamma!r}); fix --lr-gamma")
    if train.augment is not None:
        if not isinstance(train.augment, str):
            raise ConfigError(f"augment must be a name like crop,flip (got {train.augment!r})")
        given = augment_names(train.augment)
        for name in given:
            _one_of(name, AUGMENTS, "augmentation", "; fix --augment")
        if not given:
            raise ConfigError("--augment needs crop, flip or crop,flip")
    pad = train.crop_padding
    if isinstance(pad, bool) or not isinstance(pad, int) or not (1 <= pad <= 64):
        raise ConfigError(
            f"crop padding must be a whole number of pixels in [1, 64] (got {pad!r});"
            " fix --crop-padding"
        )
    decay = train.teacher_lr_decay
    if decay is not None and train.lr_schedule != "none":
        raise ConfigError(
            "--teacher-lr-decay and --lr-schedule both set the teachers' learning rate; keep one"
        )
    if decay is not None and not (isinstance(decay, (int, float)) and 0 < decay <= 1):
        raise ConfigError(
            f"teacher lr decay must be in (0, 1] (got {decay!r}); fix --teacher-lr-decay"
        )


def _validate_distill(distill: DistillConfig, model: ModelConfig) -> None:
    temp = distill.temperature
    if not (isinstance(temp, (int, float)) and math.isfinite(temp) and temp > 0):
        raise ConfigError(f"temperature must be > 0 (got {temp!r}); fix --temperature")
    if temp > MAX_TEMPERATURE:  # T² weighs the soft term: beyond this it overflows float32
        raise ConfigError(
            f"temperature must be at most {MAX_TEMPERATURE:g} (got {temp!r}); fix --temperature"
        )
    if not (isinstance(distill.alpha, (int, float)) and 0 <= distill.alpha <= 1):
        raise ConfigError(f"alpha must be in [0, 1] (got {distill.alpha!r}); fix --alpha")
    _one_of(distill.ensemble_targets, ENSEMBLE_TARGETS, "ensemble targets")
    _one_of(distill.kd_monitor, KD_MONITORS, "kd monitor")
    _one_of(distill.teacher_updates, TEACHER_UPDATES, "teacher updates", "; fix --teacher-updates")
    own = model.own_teacher
    if own is not None:
        if not isinstance(own, str) or not own:
            raise ConfigError(f"own teacher must be a path (got {own!r}); fix --own-teacher")
        if distill.teacher_updates == "joint" and not own.startswith("module:"):
            raise ConfigError(
                "--teacher-updates joint trains the teacher's weights, which an ONNX file or"
                " logits do not expose; give an nn.Module (kdbench.study(..., teacher=module))"
                " or use --teacher-updates frozen"
            )
    if not isinstance(distill.loss, str) or not distill.loss:
        raise ConfigError(f"loss must be a name (got {distill.loss!r}); fix --loss")
    _methods(distill, model)
    _controls(distill)
    if "teacher-reg" in controls_of(distill):
        if model.own_teacher is not None:
            raise ConfigError(
                "--controls teacher-reg copies the teacher's dropout and jitter, and kdbench did"
                " not train your own teacher; drop teacher-reg"
            )
        if not (model.teacher_dropout or model.teacher_input_dropout or model.teacher_jitter):
            raise ConfigError(
                "--controls teacher-reg copies the teacher's dropout and jitter, and this"
                " teacher has neither; set --teacher-dropout/--teacher-jitter or drop teacher-reg"
            )


def _methods(distill: DistillConfig, model: ModelConfig) -> None:
    """The distillation methods' own settings (engine/losses.py): weights >= 0, a whole
    number of warm-up epochs, standardization for kd and dkd on logits only."""
    for name in ("dkd_alpha", "dkd_beta", "dist_beta", "dist_gamma"):
        value = getattr(distill, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (ok and math.isfinite(value) and value >= 0):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{name.replace('_', ' ')} must be a number >= 0 (got {value!r});"
                              f" fix {flag}")  # fmt: skip
    warmup = distill.dkd_warmup
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"dkd warmup must be a whole number of epochs >= 0 (got {warmup!r});"
                          " fix --dkd-warmup")  # fmt: skip
    if distill.logit_standardization and distill.loss not in STANDARDIZABLE:
        raise ConfigError(
            f"--logit-standardization is for kd and dkd (Sun et al.), not --loss {distill.loss};"
            " drop one"
        )
    if distill.assistant_arch is not None:
        if not isinstance(distill.assistant_arch, str) or not distill.assistant_arch:
            raise ConfigError(
                f"assistant arch must be an architecture (got {distill.assistant_arch!r}); fix"
                " --assistant-arch"
            )
        if model.own_teacher is not None or distill.teacher_updates == "joint":
            raise ConfigError(
                "--assistant-arch distils an assistant from a frozen teacher kdbench trained;"
                " drop it, or drop --own-teacher / --teacher-updates joint"
            )
    if model.head != "logits" and distill.loss != "kd":
        raise ConfigError(
            f"--head {model.head} is the paper's kd on a softmax output; --loss {distill.loss}"
            " reads logits: drop --head"
        )


def _controls(distill: DistillConfig) -> None:
    if distill.controls is not None:
        if not isinstance(distill.controls, str):
            raise ConfigError(f"controls must be names (got {distill.controls!r}); fix --controls")
        for name in (c.strip() for c in distill.controls.split(",")):
            if name not in CONTROLS:
                raise ConfigError(
                    f"unknown control {name!r}{did_you_mean(name, CONTROLS)}; --controls takes"
                    f" {', '.join(CONTROLS)}"
                )
    chosen = controls_of(distill)
    if "self" in chosen and distill.teacher_updates == "joint":
        raise ConfigError(
            "--controls self distils from the frozen hard-label student; drop it or use"
            " --teacher-updates frozen"
        )
    eps = distill.smoothing
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and 0 <= eps < 1):
        raise ConfigError(f"smoothing must be in [0, 1) (got {eps!r}); fix --smoothing")
