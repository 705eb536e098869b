"""One study from configuration to report: load data, train, record, render.

The entry point the CLI and the Python API share: `reproduce(Config(), "runs/x")`.
"""

from __future__ import annotations

import contextlib
import platform
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy
import torch
from torch import nn

from kdbench.analysis import costs, diagnose, report
from kdbench.config import Config
from kdbench.data import datasets as data
from kdbench.engine import native
from kdbench.engine.architectures import of_config
from kdbench.engine.modules import Factory
from kdbench.engine.own_code import code_settings, setting_of, trust
from kdbench.engine.trainer import Progress
from kdbench.errors import ConfigError
from kdbench.progress import Bar, with_progress
from kdbench.protocol import plans, threads
from kdbench.protocol.arrays import arrays_of, data_file, keep_in, with_arrays
from kdbench.protocol.model_checks import check, check_models
from kdbench.protocol.own_teacher import OwnTeacher, TeacherKind, TeacherLogits
from kdbench.protocol.study import distil, run_study, upstream
from kdbench.roles import StackName
from kdbench.runs import guard, latency
from kdbench.runs.shared import SharedCache
from kdbench.runs.store import (
    CONFIG,
    RESOURCES,
    TEACHER_LOGITS,
    RunStore,
    read_config,
    read_derived,
    write_derived,
    write_json,
)
from kdbench.summary import Summary, Timing
from kdbench.version import __version__

TeacherLike = nn.Module | str | Path | OwnTeacher  # what `teacher=` accepts


def default_out() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def environment(cfg: Config) -> dict[str, str]:
    env = {
        "kdbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "torch threads": str(cfg.threads) if cfg.threads is not None else threads.RULE,
        "device": cfg.device,
    }
    if cfg.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    if native.state() is not None:  # a conv net asked: which path trains it
        env["conv kernels"] = native.state()
    return env


def settle_device(cfg: Config) -> Config:
    """`device="auto"` as the device it means here: CUDA where torch sees a GPU, else the CPU.
    Settled before anything is written, so config.json (and a sweep's shared keys) record the
    device that trained, and a folder resumed on another machine is checked against it."""
    if cfg.device != "auto":
        return cfg
    return cfg.with_overrides(device="cuda" if torch.cuda.is_available() else "cpu")


def _prepare_device(cfg: Config) -> None:
    """Threads: fixed by --threads now; else chosen at each stack from the cores other
    processes leave free (`protocol.threads`)."""
    if cfg.threads is not None:
        threads.fit(cfg.threads, cfg.device)


def study(
    x_train,
    y_train,
    x_test,
    y_test,
    config: Config | None = None,
    out: str | Path | None = None,
    progress: Progress | bool = True,
    measure_latency: bool = True,
    teacher: TeacherLike | Factory | None = None,
    student: Factory | None = None,
    x_val=None,
    y_val=None,
) -> tuple[Path, Summary]:
    """The same study on your own data: NumPy arrays or torch tensors, any number of classes and
    features (flattened; scale them yourself). The validation set is yours (`x_val`, `y_val`)
    or, without one, the tail of the training arrays, as for the built-in datasets. `teacher`,
    `student`, `measure_latency` (on by default, as for `reproduce` and the CLI): as for
    `reproduce`. Returns (run folder, summary)."""
    cfg, arrays = with_arrays(config or Config(), x_train, y_train, x_test, y_test, x_val,
                              y_val)  # fmt: skip
    return reproduce(cfg, out, progress, measure_latency, arrays=arrays, teacher=teacher,
                     student=student)  # fmt: skip


def _splits(cfg: Config, arrays: dict) -> data.Splits:
    """The configuration's data (on the CPU), with the batch size checked against it."""
    d = cfg.data
    image = data.image_of(d.dataset, d.arrays_image)
    splits = data.split_arrays(arrays, d.validation_split, d.train_limit, image)
    if cfg.train.augment is not None and image is None:
        raise ConfigError(
            f"--augment crops and flips images, but {d.dataset}'s rows are not images"
            " (give images with --data, or drop --augment)"
        )
    if cfg.model.teacher_jitter and splits.n_features != 28 * 28:
        raise ConfigError(
            f"--teacher-jitter shifts 28x28 images, but {d.dataset} has {splits.n_features}"
            " features per example; use --teacher-jitter 0"
        )
    if cfg.train.batch_size > len(splits.x_train):
        raise ConfigError(
            f"batch size {cfg.train.batch_size} exceeds the {len(splits.x_train)} training images;"
            " lower --batch-size or raise --train-limit"
        )
    return splits


def _own_teacher(cfg: Config, teacher: TeacherLike | None) -> OwnTeacher | None:
    if teacher is not None:
        return OwnTeacher.of(teacher)
    if cfg.model.own_teacher is not None:
        return OwnTeacher.from_setting(cfg.model.own_teacher)
    return None


def _new_run_config(cfg: Config) -> dict:
    """What a new run's config.json holds: the resolved settings, the environment, when it
    started, and how every seed derives."""
    return {
        "config": cfg.to_dict(),
        "environment": environment(cfg),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seeds": "derived by numpy SeedSequence([seed, repeat, role(1 teacher, 2 ensemble,"
        " 3 student, 4 assistant), member]); see records.jsonl for each model's seeds",
    }


def reproduce(
    config: Config | None = None,
    out: str | Path | None = None,
    progress: Progress | bool | None = True,
    measure_latency: bool = True,
    arrays: dict | None = None,
    shared: Path | None = None,
    teacher: TeacherLike | Factory | None = None,
    student: Factory | None = None,
    *,
    cfg: Config | None = None,
) -> tuple[Path, Summary]:
    """Run the paper's study with `config` (None: the paper's); returns (run folder, summary).
    `config` is the argument's name in every entry point (`cfg=`, its old name here, still
    works, with a DeprecationWarning). With `shared`, the
    teachers and small networks are taken from (or left in) that folder (`kdbench sweep`).
    `progress`: True (a progress bar on stderr), False or None (silent), or your callback.
    `teacher`: your own trained teacher instead of one kdbench trains (an `nn.Module`
    instance, or the path of an ONNX model or of its logits: `kdbench.protocol.own_teacher`;
    `--own-teacher PATH` sets the same in `cfg`), or a factory (a class or function returning a
    fresh `nn.Module`) for the teachers kdbench trains. `student`: a factory for the ensemble
    members and students. kdbench seeds each member before calling a factory."""
    if cfg is not None:
        warnings.warn("reproduce(cfg=...) is now reproduce(config=...)", DeprecationWarning,
                      stacklevel=2)  # fmt: skip
        config = cfg if config is None else config
    cfg, teacher = _factories(settle_device(config or Config()), teacher, student)
    if progress is True:
        return with_progress(False, lambda bar: _reproduce(
            cfg, out, bar, measure_latency, arrays, shared, teacher))  # fmt: skip
    return _reproduce(cfg, out, progress or None, measure_latency, arrays, shared, teacher)


def _factories(cfg: Config, teacher, student) -> tuple[Config, TeacherLike | None]:
    """Architectures given from Python go into the configuration by name (`setting_of`); a
    trained teacher stays your own teacher."""
    trained = isinstance(teacher, (nn.Module, OwnTeacher))
    if teacher is not None and callable(teacher) and not trained:
        cfg, teacher = cfg.with_overrides(teacher_arch=setting_of(teacher)), None
    if student is not None:
        cfg = cfg.with_overrides(student_arch=setting_of(student))
    return cfg, teacher


def _shaped(cfg: Config, splits: data.Splits) -> Config:
    """On your arrays, their shape in the configuration: what rebuilds your architecture when
    the folder is read."""
    if cfg.data.dataset != data.ARRAYS:
        return cfg
    return cfg.with_overrides(arrays_features=splits.n_features, arrays_classes=splits.n_classes)


def _reproduce(cfg, out, progress, measure_latency, arrays, shared, teacher):
    """`reproduce` with its progress callback (or None) in place."""
    start = time.perf_counter()
    trust(*code_settings(cfg))  # the user's own, named to train
    own = _own_teacher(cfg, teacher)
    if own is not None:
        cfg = cfg.with_overrides(own_teacher=own.setting, own_teacher_sha256=own.sha256)
        if shared is not None:
            raise ConfigError("a sweep trains its own teachers; --own-teacher is for one study")
    if cfg.data.data is not None and arrays is None and cfg.data.fingerprint is None:
        cfg, arrays = data_file(cfg)  # (a sweep's point has them in its folder: fingerprinted)
    check(cfg)
    source = arrays_of(cfg, arrays, Path(out) if out is not None else None)
    splits = _splits(cfg, source)
    cfg = _shaped(cfg, splits)
    check_models(cfg, splits)
    _prepare_device(cfg)
    folder = guard.check(Path(out) if out is not None else default_out())
    on_device = splits.to(cfg.device)
    # your teacher is checked before the folder is touched: a bad one leaves nothing behind;
    # logits kept from this same teacher (a resume) are read back, any others recomputed
    own_logits = kept = None
    if own is not None:
        vouched = (folder / CONFIG).is_file() and (
            read_config(folder).model.own_teacher_sha256 == own.sha256
        )  # a run folder of this same teacher: its logits from before hashes were kept count
        device = str(on_device.x_train.device)
        kept = read_derived(folder / TEACHER_LOGITS, own.sha256, device, legacy_ok=vouched)
        if kept is not None:
            own_logits = TeacherLogits(**kept)
        else:
            d = cfg.data
            if d.validation_rows is not None and own.kind == TeacherKind.LOGITS:
                raise ConfigError(
                    f"your teacher's logits ({own.setting}) align with x_train and x_test, and"
                    " your data has its own x_val; give the teacher as .onnx, or drop x_val"
                )
            n_images = len(source["train_images"])
            own_logits = own.logits(on_device, n_images, d.validation_split, d.train_limit)
    kept_logits = kept is not None
    ready = _Ready(cfg, splits, on_device, arrays, own, own_logits, kept_logits, start)
    with guard.claim(folder):
        return _study_in(folder, ready, progress, measure_latency, shared)


@dataclass(frozen=True)
class _Ready:
    """What `reproduce` settles before it touches the folder: settings, data, your teacher."""

    cfg: Config
    splits: data.Splits  # on the CPU (the ETA and latency read them there)
    on_device: data.Splits
    arrays: dict | None  # your arrays (the Python API), kept in the folder
    own: OwnTeacher | None
    own_logits: TeacherLogits | None
    own_logits_kept: bool  # read back from the folder: already there, not written again
    start: float


def _study_in(folder: Path, ready: _Ready, progress, measure_latency: bool, shared):
    """The part of `reproduce` that writes: run with `folder` claimed (one writer)."""
    cfg, splits, on_device, own = ready.cfg, ready.splits, ready.on_device, ready.own
    start, arrays = ready.start, ready.arrays
    run_config = _new_run_config(cfg)
    store = RunStore(folder, run_config)
    if arrays is not None:
        keep_in(folder, arrays, cfg.data.fingerprint)
    cache = SharedCache(store, shared) if shared is not None else store
    given = None
    if own is not None:
        if not ready.own_logits_kept:
            write_derived(folder / TEACHER_LOGITS, ready.own_logits.as_dict(), own.sha256)
        given = (own, ready.own_logits)
    if isinstance(progress, Bar):
        every = plans.stacks(cfg, of_config(cfg, splits.n_features, splits.n_classes))
        todo = plans.left(every, folder)
        progress.plan(todo, cfg.train.epochs, cfg.train.max_epochs, cfg.train.patience)
        if todo != every:  # resumed, grown, or a sweep point whose stacks are trained
            progress.phase(f"{folder}: " + plans.reuse_text(every, todo))
    records = run_study(cfg, on_device, store.append_record, progress, cache, given)
    measured = None
    if isinstance(progress, Bar):
        progress.phase("trained; " + ("measuring latency, " if measure_latency else "")
                       + "diagnosing and writing the report")  # fmt: skip
    if measure_latency:
        measured = latency.measure_rows(folder, cfg.to_dict(), splits.x_test[:256])
        # beside what each model costs to run, what each strategy cost to train (#26)
        measured["training"] = costs.build(records, own is not None).to_json()
        write_json(folder / RESOURCES, measured)
    found = diagnose.write_diagnosis(folder, records, cfg, splits)
    this_part = time.perf_counter() - start
    timing = Timing(
        # a resumed run adds the training time of its earlier parts (from their records)
        total_seconds=this_part + store.earlier_seconds,
        this_part_seconds=this_part,
        resumed=store.resumed,
        trained_stacks=cache.trained if isinstance(cache, SharedCache) else None,
    )
    summary = report.render(folder, records, run_config, timing, measured, found)
    return folder, summary


def distil_points(
    cfgs: list[Config], folders: list[Path], shared: Path, progress: Progress | None = None
) -> list[list[str]]:
    """The distilled students of sweep points that share their teachers, trained as one stack
    and saved into each point's folder (teachers and small networks trained first if `shared`
    lacks them); `reproduce` on each point then only loads and reports. Returns, per point, the
    stacks this call trained."""
    whole = 2 * cfgs[0].protocol.repeats  # a grown sweep's points hold fewer
    if all(RunStore.stack_size(f, StackName.DISTILLED) >= whole for f in folders):
        return [[] for _ in folders]
    check(cfgs[0])
    splits = _splits(cfgs[0], arrays_of(cfgs[0], folder=folders[0])).to(cfgs[0].device)
    cfgs = [_shaped(c, splits) for c in cfgs]
    _prepare_device(cfgs[0])
    with contextlib.ExitStack() as held:
        for f in folders:
            held.enter_context(guard.claim(f))
        caches = [
            SharedCache(RunStore(f, _new_run_config(c)), shared)
            for c, f in zip(cfgs, folders, strict=True)
        ]
        up = upstream(cfgs[0], splits, lambda rec: None, progress, caches[0])
        distil(cfgs, splits, up, caches, progress)
    return [c.trained for c in caches]
