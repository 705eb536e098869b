"""A sweep's plan: the grid, its points, and the work items executors run.

Fixed by the grid alone, so a resumed sweep retrains exactly the same stacks. Points whose
settings agree on everything upstream of distillation share one folder of teacher and
small-network stacks; points that also share what a distilled stack must share (the loss, the
early-stopping quantity, whether teachers train along) train their students as one stack.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.config import MAX_STACK, Config, flat_index, parse_sizes
from kdbench.data.datasets import CLASSES, FEATURES
from kdbench.engine.architectures import of_config
from kdbench.engine.losses import loss_class
from kdbench.engine.own_code import code_settings, trust
from kdbench.errors import ConfigError, did_you_mean
from kdbench.roles import UPSTREAM, StackName
from kdbench.runs import guard
from kdbench.runs.shared import small_networks_key
from kdbench.runs.store import RunStore, link, read_config
from kdbench.settings import settings_sha256

ARCHITECTURES = ("teacher_arch", "student_arch")  # names, not numbers: cnn:4,8 keeps its commas


def _split(name: str, values: str) -> list[str]:
    """A grid's values; an architecture's own sizes (`mlp:100,cnn:4,8`) stay with it."""
    parts = [v.strip() for v in values.split(",")]
    if name not in ARCHITECTURES:
        return parts
    out: list[str] = []
    for part in parts:
        if part.isdigit() and out and ":" in out[-1]:
            out[-1] += f",{part}"
        else:
            out.append(part)
    return out


def _parse_value(name: str, text: str, kind: str) -> Any:
    """`text` as a value of the setting `name`, whose declared type is `kind` ("float | None")."""
    if name in ARCHITECTURES:
        return text
    base = kind.split("|")[0].strip()
    if "None" in kind and text.lower() == "none":  # an optional setting left unset
        return None
    try:
        if base == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if base.startswith("tuple"):
            return parse_sizes(text, f"--grid {name}")
        if base == "float":
            return float(text)
        if base == "int":
            return int(text)
        return text
    except ValueError:
        raise ConfigError(f"--grid {name}: cannot read {text!r} as a value of {name}") from None


def _types() -> dict[str, str]:
    """Each setting's declared type, as written in `config.py` (so `teacher_max_norm=3` is the
    float 3.0 a flag would give, not an int with another settings hash)."""
    return {
        f.name: str(f.type)
        for sec in {*flat_index().values()}
        for f in dataclasses.fields(getattr(Config(), sec))
    }


def _setting(raw: str, flag: str) -> str:
    """The setting a `--grid`/`--point` name means: its flag's name (learning-rate) or its
    config key (learning_rate), one word either way; the former `lr` with a note."""
    name = raw.strip().replace("-", "_")
    if name == "lr":
        name = "learning_rate"
        print(f"kdbench: note: {flag} lr is now learning-rate (the old name still works)",
              file=sys.stderr)  # fmt: skip
    index = flat_index()
    if name not in index or name in _NOT_SWEPT:
        valid = [n for n in index if n not in _NOT_SWEPT]
        raise ConfigError(
            f"{flag}: '{name}' is not a setting a sweep can vary{did_you_mean(name, valid)}"
        )
    return name


def parse_grid(items: list[str]) -> dict[str, list]:
    """`name=v1,v2,...` strings -> {name: [values]}; sizes as 100-50 (e.g. student_hidden)."""
    types = _types()
    grid: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise ConfigError(f"--grid takes name=v1,v2,... (got {item!r})")
        name = _setting(name, "--grid")
        if name in grid:
            raise ConfigError(f"--grid {name} is given twice; list all its values once")
        parsed = [_parse_value(name, v, types[name]) for v in _split(name, values)]
        twice = sorted({str(v) for v in parsed if parsed.count(v) > 1})
        if twice:  # the point would be trained twice and counted twice in the Holm family
            raise ConfigError(f"--grid {name} lists {', '.join(twice)} more than once")
        grid[name] = parsed
    if not grid:
        raise ConfigError("a sweep needs at least one --grid name=v1,v2,...")
    return grid


def parse_points(items: list[str]) -> list[dict[str, Any]]:
    """`--point "name=value name=value"` strings -> one point each, trained besides the grid's
    product (e.g. a conv teacher beside a grid over the MLP teacher's epochs): the curve a
    product cannot draw without training every combination."""
    types = _types()
    out: list[dict[str, Any]] = []
    for item in items:
        point: dict[str, Any] = {}
        for pair in item.split():
            name, sep, value = pair.partition("=")
            if not sep or not value:
                raise ConfigError(f'--point takes "name=value name=value ..." (got {item!r})')
            name = _setting(name, "--point")
            if name in point:
                raise ConfigError(f"--point {item!r} sets {name} twice")
            point[name] = _parse_value(name, value, types[name])
        if not point:
            raise ConfigError(f'--point takes "name=value name=value ..." (got {item!r})')
        if point in out:
            raise ConfigError(f"--point {item!r} is given twice")
        out.append(point)
    return out


# the data and your own teacher are fixed for a whole sweep
_NOT_SWEPT = ("dataset", "data_dir", "fingerprint", "validation_rows", "own_teacher",
              "own_teacher_sha256", "data", "image_size")  # fmt: skip


def _label(point: dict[str, Any]) -> str:
    def text(v):
        return (
            "-".join(map(str, v))
            if isinstance(v, tuple)
            else f"{v:g}"
            if isinstance(v, float)
            else str(v)
        )

    return "_".join(f"{k}={text(v)}" for k, v in point.items())


@dataclass(frozen=True)
class Point:
    """One grid point: its settings and its run folder."""

    label: str
    overrides: dict[str, Any]
    config: Config
    folder: Path  # points/<label>/: an ordinary run folder
    shared: Path  # shared/<upstream key>/: the teachers and small networks it shares


@dataclass(frozen=True)
class DistilWork:
    """The distilled students of several points, trained as one stack. The shared teachers and
    small networks are trained first if `shared` lacks them."""

    points: tuple[Point, ...]

    @property
    def shared(self) -> Path:
        return self.points[0].shared


def points(
    base: Config, grid: dict[str, list], out: Path = Path("."), extra: list[dict] = ()
) -> list[Point]:
    """Every grid point, then every extra point, its configuration resolved and validated."""
    found: dict[str, Point] = {}
    product = [dict(zip(grid, v, strict=True)) for v in itertools.product(*grid.values())]
    for overrides in [*product, *extra]:
        cfg = base.with_overrides(**overrides)  # an impossible setting fails here, before any
        loss_class(cfg.distill.loss)  # point trains, as an unknown loss does
        trust(*code_settings(cfg))  # named by the user, to train
        d = cfg.data.dataset
        if d in FEATURES:  # and an architecture that does not parse or fit the images
            of_config(cfg, FEATURES[d], CLASSES[d])
        name = _label(overrides)
        if name in found:
            raise ConfigError(
                f"grid points {found[name].overrides} and {overrides} would share the folder"
                f" points/{name}; give each point once, with values that differ in their first"
                " 6 significant digits"
            )
        found[name] = Point(
            name, overrides, cfg, out / "points" / name, out / "shared" / upstream_key(cfg)
        )
    return list(found.values())


def upstream_key(cfg: Config) -> str:
    """The shared folder of the points whose teachers and small networks are the same: what
    those depend on (`settings.settings_sha256(upstream=True)`), shortened."""
    return settings_sha256(cfg, upstream=True)[:12]


def distil_work(plan: list[Point], max_stack: int = MAX_STACK) -> list[DistilWork]:
    """Which points train their distilled students as one stack: those sharing teachers and
    what one distilled stack must share (the loss with all its settings but T and alpha,
    which may differ per member), in plan order, at most `max_stack` students (2 per
    repeat) a stack."""
    groups: dict[tuple, list[Point]] = {}
    per: dict[tuple, int] = {}
    for p in plan:
        k = p.config.distill
        loss = repr(loss_class(k.loss).from_config(p.config))  # its name and its settings
        key = (p.shared, p.config.model.head, k.kd_monitor, k.loss, loss, k.teacher_updates)
        if k.assistant_arch is not None:  # its own assistants: a stack of its own
            key += (p.label,)
        groups.setdefault(key, []).append(p)
        per[key] = max(1, max_stack // (2 * p.config.protocol.repeats))
    return [
        DistilWork(tuple(members[j : j + per[key]]))
        for key, members in groups.items()
        for j in range(0, len(members), per[key])
    ]


def trained_by_point(stacks: list[DistilWork], trained: list[list[list[str]]]) -> dict:
    """Point label -> the stacks trained for it, from an executor's per-stack answer."""
    return {
        p.label: t
        for work, got in zip(stacks, trained, strict=True)
        for p, t in zip(work.points, got, strict=True)
    }


def reuse(run_dir: Path, plan: list[Point]) -> int:
    """Seed the shared folders from a finished run (hard links): its teachers and small
    networks serve every point whose upstream settings match, its small networks alone every
    point that differs from it only in its teachers. Returns how many shared folders were
    seeded."""
    guard.unclaimed(Path(run_dir))  # its checkpoints must be final
    cfg = read_config(run_dir)
    key, small = upstream_key(cfg), small_networks_key(cfg)
    homes = {(p.shared, UPSTREAM) for p in plan if p.shared.name == key}
    homes |= {
        (p.shared.parent / small, (StackName.SMALL_NETWORKS,))
        for p in plan
        if small_networks_key(p.config) == small
    }
    for home, names in homes:
        for name in names:
            src = RunStore.checkpoint_path(run_dir, name)
            dst = RunStore.checkpoint_path(home, name)
            if src.is_file() and not dst.is_file():
                RunStore.read_stack(Path(run_dir), name)  # refuses old-format checkpoints
                link(src, dst)
    if not homes:
        raise ConfigError(
            f"{run_dir} does not match any grid point's teachers and small networks"
            " (data, architectures, training and seed must agree); drop --reuse"
        )
    return len(homes)
