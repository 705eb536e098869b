"""Your own architecture (or distillation loss) as code: a factory given from Python (`give`,
`setting_of`), one imported from its import string (`imported`), and the consent that import
needs (`trust`). A run folder names code; reading it must not run any, so `imported` imports
only what this process was told to (a training command's own settings, or `--trust-code`), and
never a module lying inside a run folder."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from torch import nn

from kdbench.errors import ConfigError, UntrustedCode

PYTHON = "python:"  # a factory given from Python that no other process can import
_GIVEN: dict[str, Callable[[], nn.Module]] = {}  # those factories, in this process
# import strings this process may import: the architectures the user named to train, or a run
# folder's when the user said so (--trust-code, trust_code=True). A folder someone sends you
# names code; reading it (report, diagnose, decide) must not run it.
_TRUSTED: set[str] = set()


def trust(*specs: str | None) -> None:
    """Consent to import these architecture or loss settings (the built-ins need none)."""
    _TRUSTED.update(s for s in specs if s)


def code_settings(cfg) -> tuple[str | None, ...]:
    """The settings of a configuration that may name code: the architectures and the
    distillation loss (`package.module:Name`; a built-in name imports nothing)."""
    d = cfg.distill
    return (cfg.model.teacher_arch, cfg.model.student_arch, d.assistant_arch, d.loss)


def _run_folder_of(path: Path) -> Path | None:
    """The kdbench run folder `path` lies in (its marker or its records beside config.json)."""
    for parent in path.parents:
        if (parent / ".kdbench").exists() or (
            (parent / "config.json").is_file() and (parent / "records.jsonl").exists()
        ):
            return parent
    return None


def setting_of(factory: Callable[[], nn.Module]) -> str:
    """The architecture setting that names `factory` in config.json: its import string where
    another process can import it back (then every command reads the folder), else
    `python:<name>`, which needs the factory given again where the folder is read
    (`kdbench.load(..., module=Factory)`, `study(..., student=Factory)` to resume)."""
    if not callable(factory) or isinstance(factory, nn.Module):
        raise ConfigError(
            f"an architecture from Python must be a factory (a class or function returning a"
            f" fresh nn.Module), got {type(factory).__name__}; pass the class, not an instance"
        )
    module, name = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if module and module != "__main__" and name.isidentifier():
        try:
            if getattr(importlib.import_module(module), name, None) is factory:
                return f"{module}:{name}"
        except ImportError:
            pass
    setting = PYTHON + getattr(factory, "__name__", type(factory).__name__)
    give(setting, factory)
    return setting


def given(setting: str) -> Callable[[], nn.Module] | None:
    """The factory given for `setting` in this process (`give`), if any."""
    return _GIVEN.get(setting)


def give(setting: str, factory: Callable[[], nn.Module]) -> None:
    """Make `setting` (an import string or `python:<name>`) build with `factory` in this
    process."""
    _GIVEN[setting] = factory


def imported(spec: str, what: str = "architecture") -> Callable:
    """Your own architecture (or, `what` = "loss", distillation loss) from an import string,
    `package.module:Name` (uvicorn's and Hydra's convention): for an architecture a class or
    function that returns a fresh nn.Module taking the dataset's inputs. It is imported again
    wherever the run folder is read, so it must stay importable."""
    module_name, _, attr = spec.partition(":")
    if spec not in _TRUSTED:
        raise UntrustedCode(
            f"{what} '{spec}' is code ({module_name}), named by a run folder: kdbench"
            " imports it only when you say so; review it, then pass --trust-code"
            " (trust_code=True in Python)"
        )
    try:  # where it would come from, found without running it
        found = importlib.util.find_spec(module_name.split(".")[0])
    except (ImportError, ValueError):
        found = None
    origin = Path(found.origin).resolve() if found is not None and found.origin else None
    inside = _run_folder_of(origin) if origin is not None else None
    if inside is not None:
        raise ConfigError(
            f"{what} '{spec}': {origin} lies inside the run folder {inside}, and kdbench"
            " never imports code from a run folder; install the module or move it out"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{what} '{spec}': cannot import {module_name} ({exc}); put it on PYTHONPATH"
        ) from None
    except Exception as exc:  # a syntax error, a relative name, the module's own failure
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(
            f"{what} '{spec}': importing {module_name} raised {type(exc).__name__}:"
            f" {first[:200]}; fix the module (an absolute name: package.module:Factory)"
        ) from None
    factory = getattr(module, attr, None) if attr else None
    if not callable(factory):
        raise ConfigError(
            f"{what} '{spec}': {module_name} has no callable {attr or '(name after :)'};"
            " write package.module:Name"
        )
    return factory
