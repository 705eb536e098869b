"""kdbench: should a small network learn from hard labels, a teacher, or an ensemble?

Public API::

    from kdbench import Config, reproduce
    folder, summary = reproduce(Config().with_overrides(repeats=2, train_limit=5000), "runs/try")
    folder, summary = study(x_train, y_train, x_test, y_test, Config(), "runs/mine")  # your data
    student = load(folder, "student_from_ensemble", repeat=0)  # an nn.Module, eval mode
    mnist = dataset("mnist")  # the data as the models see it: .x_train, .y_train, .x_test ...
    result = sweep(Config(), {"temperature": [2, 5]}, "runs/grid")  # kdbench sweep
    table = explain("runs/why", repeats=2)  # kdbench explain; both take arrays=(x_train, ...)
"""

from kdbench.config import Config
from kdbench.errors import ConfigError, DataError, KdbenchError, RunFolderError
from kdbench.protocol.presets import resolve as preset
from kdbench.version import __version__


def __getattr__(name: str):
    """`reproduce`, `study`, `sweep`, `explain` and `load` import torch, SciPy and matplotlib
    on first use, not on import: a command that needs none of them (`kdbench presets`,
    `--help`, a bad flag) answers at once."""
    if name in ("reproduce", "study"):
        from kdbench.protocol import run

        return getattr(run, name)
    if name in ("sweep", "explain"):
        from kdbench.sweeps import api

        return getattr(api, name)
    if name == "load":
        from kdbench.runs.loading import load

        return load
    if name == "dataset":
        from kdbench.data.datasets import load as dataset

        return dataset
    if name == "DistillationLoss":  # the base class of your own loss (--loss module:Class)
        from kdbench.engine.losses import DistillationLoss

        return DistillationLoss
    raise AttributeError(f"module 'kdbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The entry points among the module's names (they load on first use, see above)."""
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Config",
    "ConfigError",
    "DataError",
    "DistillationLoss",
    "KdbenchError",
    "RunFolderError",
    "__version__",
    "dataset",
    "explain",
    "load",
    "preset",
    "reproduce",
    "study",
    "sweep",
]
