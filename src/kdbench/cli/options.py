"""The command line's settings: one flag per configuration field, declared once.

Each `Flag` names a field of `config.Config` and says what it means; its type and the default
shown in `--help` are read from the dataclass, so help text and defaults cannot drift from
`config.py` (a test checks that every field has a flag). `settings_options` turns a command
into one with these flags, handing it the flags that were given as `Config.with_overrides`
keywords. Also here: the one-line error wrapper the commands share.
No torch import: `kdbench --help` and bad flags answer at once.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from kdbench.config import TOP_LEVEL, Config, flat_index, parse_sizes
from kdbench.errors import ConfigError, KdbenchError
from kdbench.progress import with_progress

__all__ = [
    "FLAGS",
    "NOT_FLAGS",
    "SHARED",
    "ConfigFile",
    "Experiment",
    "PresetName",
    "Quiet",
    "Track",
    "friendly",
    "settings_options",
    "tracked",
    "with_progress",
]


@dataclass(frozen=True)
class Flag:
    setting: str  # the configuration field
    help: str  # what it means (the default is appended from config.py)
    off: str | None = None  # a boolean's opposite flag, e.g. --keep-last
    old: str | None = None  # the flag's former name: still accepted, with a deprecation note

    @property
    def name(self) -> str:
        """Every flag is its setting's name with dashes: `learning_rate` is --learning-rate,
        in config files, grids and the Python API alike (one word per setting)."""
        return "--" + self.setting.replace("_", "-")


FLAGS: dict[str, Flag] = {
    f.setting: f
    for f in (
        Flag("dataset", "mnist (bundled), fashion-mnist, kmnist, digits, cifar10 (downloaded)."),
        Flag("data_dir", "Folder with the four IDX files."),
        Flag(
            "data",
            "Your data: a .npz (x_train, y_train, x_test, y_test; images [N,H,W] or [N,H,W,C])"
            " or an image folder (train/<class>/*.png, test/<class>/*.png).",
        ),
        Flag("image_size", "Resize an image folder's images to S x S."),
        Flag("train_limit", "Use the first N training images."),
        Flag("validation_split", "Held-out tail of the training set."),
        Flag("teacher_hidden", "Teacher hidden sizes, as in mlp:H1,H2: 500,400,300."),
        Flag("student_hidden", "Student (and ensemble member) hidden sizes: 100 or 100,50."),
        Flag(
            "teacher_arch",
            "Teacher architecture: mlp:H1,H2 | lenet5 | cnn:C1,C2 | bncnn:C1,C2 | dscnn:C1,C2 |"
            " resnet:DEPTH[,WIDTH] | mobilenetv2[:PERCENT] | mbv2:C1,C2 |"
            " package.module:Factory (default: an MLP of --teacher-hidden).",
        ),
        Flag(
            "student_arch",
            "Student and ensemble-member architecture: mlp:H1,H2 | lenet5 | cnn:C1,C2 |"
            " bncnn:C1,C2 | dscnn:C1,C2 | resnet:DEPTH[,WIDTH] | mobilenetv2[:PERCENT] |"
            " mbv2:C1,C2 | package.module:Factory (default: an MLP of --student-hidden).",
        ),
        Flag("head", "What T divides: 'logits' or 'softmax' probabilities."),
        Flag("teacher_dropout", "Teacher hidden-layer dropout rate."),
        Flag("teacher_input_dropout", "Teacher input dropout rate."),
        Flag(
            "teacher_jitter",
            "Shift the teachers' training images by up to this many pixels each way"
            " (Hinton et al. 2015; 28x28 images only).",
        ),
        Flag(
            "teacher_max_norm",
            "Max L2 norm of each teacher hidden unit's incoming weights, after every step"
            " (Hinton et al., with dropout).",
        ),
        Flag(
            "own_teacher",
            "Your own teacher instead of training one: an .onnx model, or its logits as"
            " .safetensors (tensors 'train', 'test') or .npy (training rows, then test rows).",
            old="--teacher",
        ),
        Flag("learning_rate", "Learning rate (Adam's or SGD's).", old="--lr"),
        Flag("adam_eps", "Adam epsilon (Keras' default)."),
        Flag("optimizer", "adam or sgd (every model kdbench trains)."),
        Flag("momentum", "SGD momentum (0: none)."),
        Flag("nesterov", "SGD with Nesterov momentum.", off="--no-nesterov"),
        Flag("weight_decay", "L2 weight decay added to the gradient (Adam or SGD)."),
        Flag(
            "lr_schedule",
            "Learning rate per epoch: none, cosine (to 0 over the epoch cap) or step.",
        ),
        Flag("lr_step", "--lr-schedule step: multiply the lr by --lr-gamma every N epochs."),
        Flag("lr_gamma", "--lr-schedule step: the factor."),
        Flag(
            "augment",
            "Training images of every model augmented: crop (padded, cropped back at a random"
            " place), flip (mirrored left-right at random) or crop,flip; each member its own"
            " stream. Images only.",
        ),
        Flag("crop_padding", "--augment crop: zeros padded on each side before the crop."),
        Flag("batch_size", "Minibatch size."),
        Flag("epochs", "Train exactly E epochs, no early stopping."),
        Flag("patience", "Early-stopping patience in epochs."),
        Flag("max_epochs", "Epoch cap under early stopping."),
        Flag("monitor", "What early stopping watches: val_loss, val_error or train_loss."),
        Flag("restore_best", "Keep the best epoch's weights (or the last).", off="--keep-last"),
        Flag("teacher_epochs", "Train the teachers exactly E epochs (the others early-stop)."),
        Flag("teacher_patience", "The teachers' early-stopping patience (default: --patience)."),
        Flag("teacher_max_epochs", "The teachers' epoch cap (default: --max-epochs)."),
        Flag("teacher_monitor", "What the teachers' early stopping watches (default: --monitor)."),
        Flag("teacher_lr_decay", "Multiply the teachers' learning rate by this every epoch."),
        Flag("temperature", "Distillation temperature T."),
        Flag("alpha", "Weight of the hard-label loss, in [0, 1]."),
        Flag("ensemble_targets", "Ensemble soft targets: mean of 'probs' or of 'logits'."),
        Flag("kd_monitor", "Distilled students stop on the 'combined' loss or the 'hard' CE."),
        Flag(
            "loss",
            "Distillation loss: kd (Hinton; the paper's), dkd (decoupled KD), dist (relations),"
            " mse (logit matching), or your own class as package.module:Class.",
        ),
        Flag(
            "assistant_arch",
            "A teacher assistant (Mirzadeh et al. 2020), an architecture as --student-arch:"
            " distilled from the teacher; the student from the teacher then distils from it.",
        ),
        Flag("dkd_alpha", "DKD: weight of the target-class term (TCKD)."),
        Flag("dkd_beta", "DKD: weight of the non-target term (NCKD)."),
        Flag("dkd_warmup", "DKD: epochs over which its term ramps up (0: none)."),
        Flag("dist_beta", "DIST: weight of the inter-class relation."),
        Flag("dist_gamma", "DIST: weight of the intra-class relation."),
        Flag(
            "logit_standardization",
            "kd, dkd: z-score both sides' logits before the temperature (Sun et al. 2024).",
            off="--no-logit-standardization",
        ),
        Flag(
            "teacher_updates",
            "'frozen': teachers fixed while students distil. 'joint': each student trains its"
            " own copies of its teachers along with it, as the paper's Keras code does.",
        ),
        Flag(
            "controls",
            "Extra students that tell knowledge from regularisation, comma-separated:"
            " smoothing (hard labels smoothed by --smoothing), smoothing-matched (as soft as"
            " the ensemble's distillation targets), self (distilled from the hard-label"
            " student), teacher-reg (hard labels with the teacher's dropout and jitter).",
        ),
        Flag("smoothing", "Label-smoothing epsilon of the 'smoothing' control, in [0, 1)."),
        Flag("repeats", "Independent iterations of the study."),
        Flag("members", "Small networks in each ensemble."),
        Flag("seed", "Base seed; every model's seed derives from it."),
        Flag("device", "cpu, cuda, or auto (CUDA where a GPU is visible; config.json says which)."),
        Flag("threads", "Torch CPU threads; none = torch's own count."),
    )
}
# options more than one command takes (their settings come from `settings_options`)
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Json = Annotated[
    bool,
    typer.Option("--json", help="Print the result as JSON on stdout (its summary file), only."),
]


def result(folder_file: Path, markdown: str, as_json: bool, lines: tuple[str, ...] = ()) -> None:
    """A command's result on stdout: its JSON file as it is (`--json`), else its table in
    Markdown and the closing lines (where it is, what it says); progress and notes stay on
    stderr."""
    if as_json:
        sys.stdout.write(folder_file.read_text())
        return
    sys.stdout.write(markdown if markdown.endswith("\n") else markdown + "\n")
    for line in lines:
        print(line)


Track = Annotated[
    str | None,
    typer.Option(
        help="Send the finished run to a tracker: mlflow (pip install 'kdbench[mlflow]'),"
        " at MLFLOW_TRACKING_URI or ./mlruns; tensorboard (pip install"
        " 'kdbench[tensorboard]'), at KDBENCH_TENSORBOARD_DIR or ./tensorboard."
    ),
]
Experiment = Annotated[
    str | None,
    typer.Option(
        help="MLflow experiment, or TensorBoard folder, to log to (default: named after the"
        " run folder)."
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Settings from a TOML file (config.json's sections and keys; `kdbench config"
        " show` writes one) or a finished run's config.json; flags override it.",
    ),
]
PresetName = Annotated[
    str | None,
    typer.Option(help="Named settings to start from; see `kdbench presets`.  [default: paper]"),
]


# set by kdbench (from your arrays and your teacher) and by --preset
NOT_FLAGS = ("fingerprint", "arrays_features", "arrays_classes", "arrays_image",
             "validation_rows", "own_teacher_sha256", "preset")  # fmt: skip


def _field_types() -> dict[str, Any]:
    types: dict[str, Any] = {}
    for sec in dataclasses.fields(Config):
        if sec.name in TOP_LEVEL:
            types[sec.name] = typing.get_type_hints(Config)[sec.name]
            continue
        types |= typing.get_type_hints(sec.default_factory)  # type: ignore[arg-type]
    return types


def default_of(setting: str) -> Any:
    cfg = Config()
    section = flat_index().get(setting)
    return getattr(getattr(cfg, section), setting) if section else getattr(cfg, setting)


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _parameter(flag: Flag, kind: Any) -> inspect.Parameter:
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType)
    base = typing.get_args(kind)[0] if optional else kind
    if typing.get_origin(base) is tuple:
        base = str  # sizes: 500,400,300
    help_text = f"{flag.help}  [default: {_shown(default_of(flag.setting))}]"  # as Click shows it
    names = [f"{flag.name}/{flag.off}"] if flag.off else [flag.name]
    option = typer.Option(*names, help=help_text, show_default=False)
    annotation = Annotated[base | None, option]  # type: ignore[valid-type]
    return inspect.Parameter(
        flag.setting, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
    )


def _old_parameter(flag: Flag, base: inspect.Parameter) -> inspect.Parameter:
    """The flag under its former name (hidden from --help), read by `settings_options`."""
    kind = typing.get_args(base.annotation)[0]
    option = typer.Option(flag.old, hidden=True, show_default=False)
    return inspect.Parameter(
        f"{flag.setting}__old", inspect.Parameter.KEYWORD_ONLY, default=None,
        annotation=Annotated[kind, option],
    )  # fmt: skip


def _take_old(flag: Flag, new: Any, old: Any) -> Any:
    """The value of a flag given under its former name, with a note saying the new one."""
    if old is None:
        return new
    if new is not None:
        raise ConfigError(f"{flag.old} is {flag.name}: give it once")
    print(f"kdbench: note: {flag.old} is now {flag.name} (the old name still works)",
          file=sys.stderr)  # fmt: skip
    return old


def settings_options(only: tuple[str, ...] | None = None):
    """Decorator: the command gets a flag for each setting (or those in `only`) and receives
    the ones given as `overrides` (a dict for `Config.with_overrides`; sizes parsed)."""
    types = _field_types()
    chosen = [FLAGS[s] for s in (only or FLAGS)]

    def wrap(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != "overrides"]
        own_hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=own_hints.get(p.name, p.annotation)) for p in own]
        settings = [_parameter(f, types[f.setting]) for f in chosen]
        by_name = {p.name: p for p in settings}
        settings += [_old_parameter(f, by_name[f.setting]) for f in chosen if f.old]

        @functools.wraps(fn)
        def command(**kwargs):
            overrides = {f.setting: kwargs.pop(f.setting) for f in chosen}
            for f in (f for f in chosen if f.old):
                overrides[f.setting] = _take_old(f, overrides[f.setting],
                                                 kwargs.pop(f"{f.setting}__old"))  # fmt: skip
            for f in chosen:
                if isinstance(default_of(f.setting), tuple) and overrides[f.setting] is not None:
                    overrides[f.setting] = parse_sizes(overrides[f.setting], f.name)
            return fn(overrides=overrides, **kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + settings
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer must read the new signature, not fn's
        return command

    return wrap


def os_error(exc: OSError) -> str:
    """One line for a failure of the filesystem. Every run-folder file is written to a
    temporary name and renamed, so nothing is half-written: the run resumes where it stopped."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device{where}; free some and resume the same command"
    return f"{exc.strerror or exc}{where}; check the folder and resume the same command"


def friendly(fn):
    """Expected failures: one line on stderr and the error's exit code, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KdbenchError as exc:
            print(f"kdbench: error: {exc}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # the disk, not kdbench: a full disk, a read-only folder
            print(f"kdbench: error: {os_error(exc)}", file=sys.stderr)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print(
                "kdbench: interrupted; finished models are kept in records.jsonl", file=sys.stderr
            )
            raise typer.Exit(130) from None

    return wrapper


# the settings every command that runs studies takes
SHARED = ("dataset", "data_dir", "train_limit", "repeats", "members", "epochs", "seed", "device")


def tracked(track: str | None, folder: Path, experiment: str | None) -> None:
    """Log a finished run or sweep to the tracker (checked by `tracking.check` before it
    trained); a tracker's failure is one line, the folder being complete (`tracking.send`)."""
    if track is None:
        return
    from kdbench.runs import tracking

    print(tracking.describe(track, tracking.log(track, folder, experiment)), file=sys.stderr)
