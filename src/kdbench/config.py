"""Typed, validated configuration of a study (its named presets live in `protocol.presets`).

Every value a run uses lives here, so `config.json` in the run folder is enough to redo it.
Defaults are the paper's study (docs/protocol.md); values the paper leaves unstated follow the Keras
defaults its code used, and say so.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kdbench.errors import ConfigError, did_you_mean

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("none", "cosine", "step")
MONITORS = ("val_loss", "val_error", "train_loss")
KD_MONITORS = ("combined", "hard")
TEACHER_UPDATES = ("frozen", "joint")
# controls: extra students that tell a teacher's knowledge from plain regularisation
# (`--controls`); `smoothing`: hard labels smoothed by a fixed epsilon; `smoothing-matched`: by
# the epsilon that puts on wrong classes the mass the ensemble's distillation targets put there;
# `self`: distilled from the hard-label student (born-again); `teacher-reg`: hard labels with the
# teacher's dropout and jitter
CONTROLS = ("smoothing", "smoothing-matched", "self", "teacher-reg")
ENSEMBLE_TARGETS = ("probs", "logits")
DEVICES = ("cpu", "cuda")
HEADS = ("logits", "softmax")
TOP_LEVEL = ("device", "threads", "preset")
MAX_STACK = 240  # a sweep's distilled students trained as one stack (12 points of 10 repeats)

MAX_TEMPERATURE = 1e4  # far beyond any study (Hinton used up to 20), far below an overflow


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"
    data_dir: str | None = None  # folder with the four IDX files; None = bundled / registry
    train_limit: int | None = None  # use only the first N training images
    validation_split: float = 0.1  # the last fraction of the training images (Keras' rule)
    fingerprint: str | None = None  # SHA-256 of your arrays (dataset "arrays", Python API)
    # your arrays' width and class count: a conv net or your own module is rebuilt from them
    # when the folder is read back (the built-in datasets know theirs)
    arrays_features: int | None = None
    arrays_classes: int | None = None
    # your arrays' image shape (channels, height, width), when they are images (--data)
    arrays_image: tuple[int, ...] | None = None
    # your data as a .npz of arrays or an image folder (`data.files`); read once, kept in the
    # run folder like arrays from Python, and checked by their fingerprint on a resume
    data: str | None = None
    image_size: int | None = None  # an image folder's images resized to S x S


@dataclass(frozen=True)
class ModelConfig:
    teacher_hidden: tuple[int, ...] = (500, 400, 300, 200, 100)
    student_hidden: tuple[int, ...] = (100,)  # also each ensemble member
    # an architecture by name (`engine.architectures`: mlp:H1,H2, lenet5, cnn:C1,C2, dscnn:…,
    # package.module:Factory, python:Name) instead of the fully connected net of the hidden
    # sizes above; None = that net
    teacher_arch: str | None = None
    student_arch: str | None = None  # also each ensemble member
    # what the temperature divides: the logits (Hinton; default), or the probabilities of a
    # softmax output layer (what the paper's Keras code does if its last layer is a softmax)
    head: str = "logits"
    teacher_dropout: float = 0.0  # dropout rate on the teacher's hidden layers (Hinton: 0.5)
    teacher_input_dropout: float = 0.0  # dropout rate on the teacher's inputs (Hinton: 0.2)
    # training images shifted by up to this many pixels each way, teachers only (Hinton: 2);
    # 28x28 images only
    teacher_jitter: int = 0
    # max L2 norm of each hidden unit's incoming weights (each filter's, in a conv net), applied
    # after every teacher step (Hinton et al. 2012 and 2015, with dropout); None: no constraint
    teacher_max_norm: float | None = None
    # your own teacher instead of a trained one (`own_teacher`): an ONNX or logits file's path,
    # or module:<class> for an nn.Module given to the Python API; identified by its SHA-256
    own_teacher: str | None = None
    own_teacher_sha256: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 1e-3  # Adam, Keras default
    adam_eps: float = 1e-7  # Keras default (PyTorch's is 1e-8)
    batch_size: int = 32  # Keras default; the paper does not say
    epochs: int | None = None  # fixed epochs: early stopping off
    patience: int = 2  # "until convergence": no improvement for 2 epochs
    max_epochs: int = 50  # cap when early stopping
    monitor: str = "val_loss"  # what early stopping watches
    restore_best: bool = False  # Keras default: keep the last weights
    # the teachers' own schedule; None: the same as every other model's (the paper's protocol).
    # `teacher_schedule` resolves it
    teacher_epochs: int | None = None  # fixed teacher epochs (no early stopping for teachers)
    teacher_patience: int | None = None
    teacher_max_epochs: int | None = None
    teacher_monitor: str | None = None
    teacher_lr_decay: float | None = None  # the teachers' lr is multiplied by this every epoch
    # your recipe (every model): the optimiser, its settings, and the learning-rate schedule
    optimizer: str = "adam"  # or "sgd"
    momentum: float = 0.9  # SGD's momentum (0: none)
    nesterov: bool = False  # SGD: Nesterov momentum
    weight_decay: float = 0.0  # L2 weight decay added to the gradient (Adam or SGD)
    lr_schedule: str = "none"  # per epoch: "cosine" (to 0 over the epoch cap) or "step"
    lr_step: int = 30  # "step": the lr times lr_gamma every this many epochs
    lr_gamma: float = 0.1


@dataclass(frozen=True)
class DistillConfig:
    temperature: float = 10.0  # unstated in the paper; the Keras KD example uses 10
    alpha: float = 0.1  # weight of the hard-label loss
    ensemble_targets: str = "probs"  # mean of softened probabilities (paper) or of logits
    kd_monitor: str = "combined"  # distilled students stop on the combined loss (Keras) or on CE
    loss: str = "kd"  # the distillation loss, a name in `distill.LOSSES` (the paper's: kd)
    # frozen: teachers fixed during distillation. joint: each student trains its own copies of
    # its teachers along with it, as the paper's Keras code does (docs/protocol.md)
    teacher_updates: str = "frozen"
    controls: str | None = None  # comma-separated names in CONTROLS; None: none (the paper's)
    smoothing: float = 0.1  # the `smoothing` control's label-smoothing epsilon


def controls_of(distill: DistillConfig) -> tuple[str, ...]:
    """The run's controls, in CONTROLS order, each once."""
    given = {c.strip() for c in (distill.controls or "").split(",") if c.strip()}
    return tuple(c for c in CONTROLS if c in given)


@dataclass(frozen=True)
class ProtocolConfig:
    repeats: int = 10
    members: int = 10
    seed: int = 0


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None = torch's default
    preset: str = "paper"  # the named preset the settings started from (see `presets`)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        """Inverse of `to_dict`; unknown keys are an error, not silently dropped."""
        sections = {
            "data": DataConfig,
            "model": ModelConfig,
            "train": TrainConfig,
            "distill": DistillConfig,
            "protocol": ProtocolConfig,
        }
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in sections:
                kwargs[key] = _section(sections[key], value, key)
            elif key in TOP_LEVEL:
                kwargs[key] = value
            else:
                raise ConfigError(f"unknown configuration key '{key}'")
        return cls(**kwargs)

    def with_overrides(self, **flat: Any) -> Config:
        """A copy with flat overrides (temperature=4, repeats=2); None means "leave as is"."""
        index = flat_index()
        changes: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for name, value in flat.items():
            if value is None:
                continue
            if name in TOP_LEVEL:
                top[name] = value
                continue
            if name not in index:
                raise ConfigError(f"unknown setting '{name}'")
            changes.setdefault(index[name], {})[name] = value
        replaced = {
            sec: dataclasses.replace(getattr(self, sec), **vals) for sec, vals in changes.items()
        }
        return dataclasses.replace(self, **replaced, **top)


def parse_sizes(text: str, flag: str) -> tuple[int, ...]:
    """Hidden layer sizes as written on the command line, `500-400-300` (or commas): whole
    numbers >= 1 and nothing else, so `-5` or `100--50` is an error, not a guess."""
    if not re.fullmatch(r"\s*\d+(\s*[-,]\s*\d+)*\s*", text):
        raise ConfigError(f"{flag} takes sizes like 500-400-300 (got {text!r})")
    return tuple(int(p) for p in re.split(r"[-,]", text))


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested configuration dict as `section.key` -> value."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def flat_index() -> dict[str, str]:
    index = {}
    for sec in dataclasses.fields(Config):
        if sec.name in TOP_LEVEL:
            continue
        for f in dataclasses.fields(sec.default_factory()):  # type: ignore[misc]
            index[f.name] = sec.name
    return index


def _section(cls: type, value: Any, name: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"configuration section '{name}' must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(value) - known
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in configuration section '{name}'")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return cls(**fixed)


def _positive_int(value: Any, name: str, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1 (got {value!r}); fix {flag}")


def _hidden(sizes: Any, name: str, flag: str) -> None:
    if not isinstance(sizes, tuple) or len(sizes) == 0:
        raise ConfigError(f"{name} must list at least one hidden layer size; fix {flag}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ConfigError(f"{name} sizes must be whole numbers >= 1 (got {s!r}); fix {flag}")


TEACHER_SCHEDULE = ("teacher_epochs", "teacher_patience", "teacher_max_epochs",
                    "teacher_monitor", "teacher_lr_decay")  # fmt: skip


def teacher_schedule(train: TrainConfig) -> TrainConfig:
    """The training settings the teachers use: their own where set, else everyone's. A fixed
    `teacher_epochs` turns early stopping off for the teachers only."""
    return dataclasses.replace(
        train,
        epochs=train.teacher_epochs if train.teacher_epochs is not None else train.epochs,
        patience=train.teacher_patience or train.patience,
        max_epochs=train.teacher_max_epochs or train.max_epochs,
        monitor=train.teacher_monitor or train.monitor,
    )


def validate(cfg: Config) -> None:
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
                f"{flags}: kdbench does not train your own teacher (--teacher); drop them"
            )
    _positive_int(cfg.protocol.repeats, "repeats", "--repeats")
    _positive_int(cfg.protocol.members, "members", "--members")
    seed = cfg.protocol.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0 (got {seed!r}); fix --seed")
    if cfg.device not in DEVICES:
        raise ConfigError(f"device must be cpu or cuda (got {cfg.device!r}); fix --device")
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
        raise ConfigError(f"learning rate must be a finite number > 0 (got {lr!r}); fix --lr")
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
            raise ConfigError(f"own teacher must be a path (got {own!r}); fix --teacher")
        if distill.teacher_updates == "joint" and not own.startswith("module:"):
            raise ConfigError(
                "--teacher-updates joint trains the teacher's weights, which an ONNX file or"
                " logits do not expose; give an nn.Module (kdbench.study(..., teacher=module))"
                " or use --teacher-updates frozen"
            )
    if not isinstance(distill.loss, str) or not distill.loss:
        raise ConfigError(f"loss must be a name (got {distill.loss!r}); fix --loss")
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
