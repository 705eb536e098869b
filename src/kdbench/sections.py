"""The settings of a study, section by section: what each may be (the choices) and its
default. `config.Config` gathers the sections; `validation` checks them.

Defaults are the paper's study (docs/protocol.md); values the paper leaves unstated follow the Keras
defaults its code used, and say so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("none", "cosine", "step")
AUGMENTS = ("crop", "flip")  # `--augment`: random crop with padding, horizontal flip
MONITORS = ("val_loss", "val_error", "train_loss")
KD_MONITORS = ("combined", "hard")
TEACHER_UPDATES = ("frozen", "joint")
# controls: extra students that tell a teacher's knowledge from plain regularisation
# (`--controls`); `smoothing`: hard labels smoothed by a fixed epsilon; `smoothing-matched`: by
# the epsilon that puts on wrong classes the mass the ensemble's distillation targets put there;
# `self`: distilled from the hard-label student (born-again); `teacher-reg`: hard labels with the
# teacher's dropout and jitter
CONTROLS = ("smoothing", "smoothing-matched", "self", "teacher-reg")
STANDARDIZABLE = ("kd", "dkd")  # the losses `--logit-standardization` applies to
ENSEMBLE_TARGETS = ("probs", "logits")
DEVICES = ("cpu", "cuda", "auto")  # auto: CUDA where torch sees a GPU (`run.settle_device`)
HEADS = ("logits", "softmax")
TOP_LEVEL = ("device", "threads", "preset")
MAX_STACK = 240  # a sweep's distilled students trained as one stack (12 points of 10 repeats)

# the most repeats and members a run may ask for: its records, and its stacks' weights, are held
# in memory (10 each is the paper's; a thousand is far beyond any study, far below exhausting it)
MAX_REPEATS = MAX_MEMBERS = 1000
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
    # your own validation set's size (x_val, y_val in your arrays); None: the last
    # validation_split of the training set is held out
    validation_rows: int | None = None


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
    # training images augmented, every model, each member its own stream: "crop" (padded by
    # crop_padding zeros, then cropped back to size at a random place), "flip" (mirrored left to
    # right with probability 1/2), or both ("crop,flip" or "crop+flip"); None: none (the paper's)
    augment: str | None = None
    crop_padding: int = 4  # the CIFAR convention


def augment_names(augment: str | None) -> list[str]:
    """The names in an `augment` setting: `crop,flip` or `crop+flip` (a sweep's grid splits its
    values at commas: `--grid augment=none,crop,crop+flip`)."""
    return [a.strip() for a in (augment or "").replace("+", ",").split(",") if a.strip()]


def augments_of(train: TrainConfig) -> tuple[str, ...]:
    """The run's augmentations, in AUGMENTS order, each once."""
    given = set(augment_names(train.augment))
    return tuple(a for a in AUGMENTS if a in given)


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
    # the methods' own settings, at their papers' defaults (engine/losses.py cites them)
    dkd_alpha: float = 1.0  # DKD: weight of the target-class term TCKD
    dkd_beta: float = 8.0  # DKD: weight of the non-target term NCKD
    dkd_warmup: int = 20  # DKD: epochs over which its term ramps up linearly (0: none)
    dist_beta: float = 1.0  # DIST: weight of the inter-class relation
    dist_gamma: float = 1.0  # DIST: weight of the intra-class relation
    logit_standardization: bool = False  # kd, dkd: z-score both sides' logits (Sun et al.)
    # a teacher assistant (Mirzadeh et al. 2020): an architecture distilled from the teacher,
    # from which the student-from-teacher then distils; None: the student distils directly
    assistant_arch: str | None = None


def controls_of(distill: DistillConfig) -> tuple[str, ...]:
    """The run's controls, in CONTROLS order, each once."""
    given = {c.strip() for c in (distill.controls or "").split(",") if c.strip()}
    return tuple(c for c in CONTROLS if c in given)


@dataclass(frozen=True)
class ProtocolConfig:
    repeats: int = 10
    members: int = 10
    seed: int = 0


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
