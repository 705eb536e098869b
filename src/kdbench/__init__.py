"""kdbench: should a small network learn from hard labels, a teacher, or an ensemble?

Public API::

    from kdbench import Config, reproduce
    folder, summary = reproduce(Config().with_overrides(repeats=2, train_limit=5000), "runs/try")
    folder, summary = study(x_train, y_train, x_test, y_test, Config(), "runs/mine")  # your data
"""

__version__ = "0.1.0"

from kdbench.config import Config
from kdbench.errors import ConfigError, DataError, KdbenchError, RunFolderError
from kdbench.presets import resolve as preset
from kdbench.run import reproduce, study

__all__ = [
    "Config",
    "ConfigError",
    "DataError",
    "KdbenchError",
    "RunFolderError",
    "__version__",
    "preset",
    "reproduce",
    "study",
]
