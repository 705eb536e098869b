"""What a run folder's models must be before kdbench uses them: made under the settings its
config.json states (the settings hash every record and checkpoint carries), and, for a
checkpoint, whole, float32, finite and shaped as the configured architecture makes it.

`store` reads the files and calls these on every read; nothing here touches the disk.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kdbench.config import Config
from kdbench.data.datasets import CLASSES, FEATURES, image_of
from kdbench.engine.architectures import for_role
from kdbench.engine.mlp import MLP
from kdbench.engine.stack_model import Params, StackModel
from kdbench.errors import RunFolderError
from kdbench.records import Record
from kdbench.roles import STACK_OF_ROLE, Role, StackName
from kdbench.settings import legacy_sha256s, settings_sha256

FIX = "delete it and resume the run to train that stack again"


@dataclass(frozen=True)
class Stamps:
    """The settings hash each model of a run carries (`settings.settings_sha256`): the teachers
    the upstream one (what they depend on, shared by sweep points), the small networks the
    upstream one without the teachers' settings (shared by points that differ only in their
    teachers), the distilled students the full one. Small networks stamped with the upstream
    hash (folders made before kdbench shared them across teachers) are accepted too, and so are
    stamps from before the repeat count left the hash (`settings.legacy_sha256s`)."""

    upstream: str
    small: str
    full: str
    cfg: Config | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, cfg: Config) -> Stamps:
        return cls(
            settings_sha256(cfg, upstream=True),
            settings_sha256(cfg, upstream=True, teachers=False),
            settings_sha256(cfg),
            cfg,
        )

    def for_stack(self, name: StackName) -> str:
        return {StackName.TEACHERS: self.upstream, StackName.SMALL_NETWORKS: self.small}.get(
            StackName(name), self.full
        )

    def expected(self, role: Role) -> str:
        return self.for_stack(STACK_OF_ROLE[Role(role)])

    def accepts(self, stamp: str | None, name: StackName) -> bool:
        """`stamp` (None: a record older than stamps) is one the stack `name` may carry."""
        small = StackName(name) == StackName.SMALL_NETWORKS
        older = (self.upstream,) if small else ()
        if stamp is None or stamp in (self.for_stack(name), *older):
            return True
        if self.cfg is None:
            return False
        teachers = StackName(name) == StackName.TEACHERS
        legacy = legacy_sha256s(self.cfg, upstream=teachers or small)
        if small:
            legacy |= legacy_sha256s(self.cfg, upstream=True, teachers=False)
        return stamp in legacy

    def stamp(self, record: Record) -> Record:
        return dataclasses.replace(record, config_sha256=self.expected(record.role))

    def check(self, record: Record, where: str) -> None:
        """A record stamped under other settings than the folder's config.json says."""
        if not self.accepts(record.config_sha256, STACK_OF_ROLE[Role(record.role)]):
            raise RunFolderError(
                f"{where} was made under other settings than config.json says: it does not"
                " belong to this run (was config.json edited?); restore config.json, or start a"
                " new --out"
            )


def tensor_names(n_tensors: int) -> list[str]:
    """Checkpoint keys of a fully connected stack of `n_tensors` tensors: how a folder without
    config.json (nothing names its architecture) is read."""
    return MLP([0] * (n_tensors // 2 + 1)).tensor_names()


def stack_model(cfg: Config, name: StackName) -> StackModel:
    """The model of stack `name` as the run's configuration names it, built for reading (no
    compiled kernels): what every reader of its checkpoints goes through."""
    m, d = cfg.model, cfg.data
    arch, hidden = (
        (m.teacher_arch, m.teacher_hidden)
        if name == StackName.TEACHERS
        else (cfg.distill.assistant_arch, ())
        if name == StackName.ASSISTANTS
        else (m.student_arch, m.student_hidden)
    )
    features = FEATURES.get(d.dataset, d.arrays_features)
    classes = CLASSES.get(d.dataset, d.arrays_classes)
    if features is None or classes is None:
        raise RunFolderError(
            f"this run's {name} was trained on your own arrays, and config.json lacks their"
            " width and class count (data.arrays_features, data.arrays_classes); rerun the study"
        )
    return for_role(arch, hidden, features, classes, image_of(d.dataset, d.arrays_image))


def verify_stack(
    params: Params,
    records: list[Record],
    name: StackName,
    cfg: Config | None,
    path: Path,
    model: StackModel | None = None,
) -> None:
    """A checkpoint is used only if it is whole and this run's: one member per record, each
    tensor shaped and typed as the configuration's architecture makes it, floats finite, and its
    records made under the settings config.json states. `model`: `stack_model(cfg, name)`,
    which the reader has already built to name the tensors (None: a folder without
    config.json, whose fully connected layers are only checked to chain)."""
    if model is None or cfg is None:
        _verify_chain(params, records, path)
        return
    want = model.init([0])
    for tensor, got, ref in zip(model.tensor_names(), params, want, strict=True):
        if got.shape[0] != len(records) or got.shape[1:] != ref.shape[1:]:
            raise RunFolderError(
                f"{path} tensor {tensor} has shape {list(got.shape)}, but config.json implies"
                f" [{len(records)}, {', '.join(map(str, ref.shape[1:]))}]: the checkpoint does"
                f" not belong to this run; {FIX}"
            )
        if got.dtype != ref.dtype:
            raise RunFolderError(f"{path} tensor {tensor} is {got.dtype}, not {ref.dtype}; {FIX}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise RunFolderError(f"{path} tensor {tensor} holds NaN or infinite weights; {FIX}")
    stamps = Stamps.of(cfg)
    for r in records:
        stamps.check(r, str(path))


def _verify_chain(params: Params, records: list[Record], path: Path) -> None:
    """What a fully connected checkpoint says of itself: float32, finite, layers chained."""
    if not params or len(params) % 2:
        raise RunFolderError(f"{path} holds no complete layers; {FIX}")
    members = len(records)
    for i in range(0, len(params), 2):
        w, b = params[i], params[i + 1]
        ok = w.dim() == 3 and b.dim() == 3 and w.shape[0] == b.shape[0] == members
        ok = ok and b.shape[1] == 1 and b.shape[2] == w.shape[2]
        ok = ok and (i == 0 or w.shape[1] == params[i - 2].shape[2])
        if not ok:
            raise RunFolderError(
                f"{path} layer {i // 2} has shapes {list(w.shape)} and {list(b.shape)}, which do"
                f" not chain for {members} members; {FIX}"
            )
        if w.dtype != torch.float32 or b.dtype != torch.float32:
            raise RunFolderError(f"{path} layer {i // 2} is {w.dtype}, not float32; {FIX}")
        if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
            raise RunFolderError(f"{path} layer {i // 2} holds NaN or infinite weights; {FIX}")
