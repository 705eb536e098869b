"""kdbench: should a small network learn from hard labels, a teacher, or an ensemble?

Public API::

    from kdbench import Config, reproduce
    folder, summary = reproduce(Config().with_overrides(repeats=2, train_limit=5000), "runs/try")
    folder, summary = study(x_train, y_train, x_test, y_test, Config(), "runs/mine")  # your data
    student = load(folder, "student_from_ensemble", repeat=0)  # an nn.Module, eval mode
"""

from kdbench.config import Config
from kdbench.errors import ConfigError, DataError, KdbenchError, RunFolderError
from kdbench.protocol.presets import resolve as preset
from kdbench.version import __version__


def __getattr__(name: str):
    """`reproduce`, `study` and `load` import torch, SciPy and matplotlib on first use, not on
    import: a command that needs none of them (`kdbench presets`, `--help`, a bad flag)
    answers at once."""
    if name in ("reproduce", "study"):
        from kdbench.protocol import run

        return getattr(run, name)
    if name == "load":
        from kdbench.runs.loading import load

        return load
    raise AttributeError(f"module 'kdbench' has no attribute {name!r}")


__all__ = [
    "Config",
    "ConfigError",
    "DataError",
    "KdbenchError",
    "RunFolderError",
    "__version__",
    "load",
    "preset",
    "reproduce",
    "study",
]
