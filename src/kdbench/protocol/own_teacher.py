"""Your own teacher: a pretrained `nn.Module`, an ONNX file, or precomputed logits.

Whatever its form, a teacher you bring reduces to its logits on the run's training, validation
and test images. They are computed once (as kdbench's own teachers' soft targets are) and kept in
the run folder (`teacher_logits.safetensors`), so the folder alone re-renders its report and a
resumed run reads the same floats. Nothing retrains your teacher: the teacher row of the table is
this one model, the same in every repeat. With `teacher_updates = joint` an `nn.Module` teacher
is copied for each student and trained along with it (`teachers.ModuleCopies`); an ONNX file or
logits have no weights to train, so `config.validate` refuses that combination.

Inputs are the dataset's rows, `[N, features]` float32, prepared as `kdbench.load` documents
(MNIST: 784 pixels divided by 255), shaped as one input of the teacher where it says so: a
module with an `input_shape` attribute (every model `kdbench.load` returns has one: `(1, 28,
28)` for a conv net) gets `[N, *input_shape]`; an ONNX file whose input has rank 4 and fixed
channels, height and width gets images `[N, C, H, W]`. Logits files hold one row per image, in the
dataset's order: `.safetensors` with tensors `train` (every training image, before kdbench holds
out its validation tail) and `test`; or one `.npy` array, the training rows followed by the test
rows. kdbench applies the run's `--train-limit` and validation split to them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdbench.data.datasets import Splits, split_rows
from kdbench.engine.teachers import shaped_for
from kdbench.errors import ConfigError, DataError

MODULE_PREFIX = "module:"  # the config value of an nn.Module teacher: module:<class name>
_BATCH = 1024


class TeacherKind(str, Enum):
    MODULE = "module"
    ONNX = "onnx"
    LOGITS = "logits"


@dataclass(frozen=True)
class TeacherLogits:
    """The teacher's logits on each part of the run's data, rows aligned with `Splits`."""

    train: torch.Tensor  # [N_train, C]
    val: torch.Tensor  # [N_val, C]
    test: torch.Tensor  # [N_test, C]

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def to(self, device: str | torch.device) -> TeacherLogits:
        return TeacherLogits(*(t.to(device) for t in (self.train, self.val, self.test)))


@dataclass
class OwnTeacher:
    """A teacher you bring. `setting` is what `config.json` records (`model.own_teacher`) and
    `sha256` what identifies it (the file's bytes, or the module's class and weights)."""

    kind: TeacherKind
    setting: str
    sha256: str
    module: nn.Module | None = None
    path: Path | None = None

    @classmethod
    def of(cls, teacher: nn.Module | str | Path | OwnTeacher) -> OwnTeacher:
        if isinstance(teacher, OwnTeacher):
            return teacher
        if isinstance(teacher, nn.Module):
            name = type(teacher).__qualname__
            return cls(TeacherKind.MODULE, MODULE_PREFIX + name, _module_sha256(teacher), teacher)
        if isinstance(teacher, (str, Path)):
            return cls.from_setting(str(teacher))
        raise ConfigError(
            f"a teacher must be an nn.Module, an ONNX file or a logits file (got"
            f" {type(teacher).__name__})"
        )

    @classmethod
    def from_setting(cls, setting: str) -> OwnTeacher:
        """The teacher a `--own-teacher PATH` (or a run's config) names."""
        if setting.startswith(MODULE_PREFIX):
            raise ConfigError(
                f"this run's teacher was an nn.Module ({setting[len(MODULE_PREFIX) :]}); pass it"
                " again: kdbench.study(..., teacher=module) or kdbench.reproduce(..., teacher=...)"
            )
        path = Path(setting)
        kinds = {".onnx": TeacherKind.ONNX, ".safetensors": TeacherKind.LOGITS}
        kind = kinds.get(path.suffix, TeacherKind.LOGITS if path.suffix == ".npy" else None)
        if kind is None:
            raise ConfigError(
                f"--own-teacher {setting}: give an .onnx model, or logits as .safetensors or .npy"
            )
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise DataError(f"cannot read --own-teacher {setting}: {exc.strerror}") from None
        return cls(kind, setting, digest, path=path)

    def logits(self, splits: Splits, n_train_images: int, validation_split: float,
               train_limit: int | None) -> TeacherLogits:  # fmt: skip
        """Its logits on the run's data (`n_train_images`: the dataset's whole training set,
        before the limit and the split), checked: rows, classes, finite values."""
        if self.kind == TeacherKind.LOGITS:
            train_all, test = self._read_logits(n_train_images, splits)
            rows, val_rows = split_rows(n_train_images, validation_split, train_limit)
            out = TeacherLogits(train_all[rows], train_all[val_rows], test)
        else:
            run = self._module_logits if self.kind == TeacherKind.MODULE else self._onnx_logits
            out = TeacherLogits(run(splits.x_train), run(splits.x_val), run(splits.x_test))
        for part, z in out.as_dict().items():
            self._check(z, part, splits.n_classes)
        return TeacherLogits(*(t.float().contiguous() for t in out.as_dict().values()))

    def _check(self, z: torch.Tensor, part: str, n_classes: int) -> None:
        if z.ndim != 2 or z.shape[1] != n_classes:
            raise DataError(
                f"your teacher ({self.setting}) gives {part} logits of shape {list(z.shape)};"
                f" the data has {n_classes} classes, so it must give [N, {n_classes}]"
            )
        if not torch.isfinite(z).all():
            raise DataError(
                f"your teacher ({self.setting}) gives NaN or infinite {part} logits; check it"
                " on the inputs kdbench gives it (see kdbench.protocol.own_teacher)"
            )

    def _read_logits(self, n_train: int, splits: Splits) -> tuple[torch.Tensor, torch.Tensor]:
        n_test = len(splits.x_test)
        assert self.path is not None
        if self.path.suffix == ".npy":
            try:
                array = np.load(self.path, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise DataError(f"cannot read {self.setting} as a .npy array: {exc}") from None
            if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_):
                raise DataError(
                    f"{self.setting} holds {array.dtype} values, not numbers; it must hold the"
                    " teacher's logits as floats"
                )
            if array.ndim != 2 or len(array) != n_train + n_test:
                raise DataError(
                    f"{self.setting} has shape {list(array.shape)}; it must hold one row per"
                    f" training image then per test image: [{n_train} + {n_test}, classes]"
                )
            z = torch.from_numpy(np.asarray(array, dtype=np.float32))
            return z[:n_train], z[n_train:]
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(self.path))
        except (SafetensorError, OSError) as exc:
            raise DataError(f"cannot read {self.setting} as safetensors: {exc}") from None
        missing = {"train", "test"} - set(tensors)
        if missing:
            raise DataError(
                f"{self.setting} lacks tensor(s) {sorted(missing)}; it must hold 'train' (every"
                " training image, in the dataset's order) and 'test'"
            )
        for part, want in (("train", n_train), ("test", n_test)):
            if tensors[part].ndim != 2 or len(tensors[part]) != want:
                raise DataError(
                    f"{self.setting}: '{part}' has shape {list(tensors[part].shape)}; the data"
                    f" has {want} {part} images, so it must be [{want}, classes]"
                )
        return tensors["train"].float(), tensors["test"].float()

    def _module_logits(self, x: torch.Tensor) -> torch.Tensor:
        module = self.module
        assert module is not None
        was_training = module.training
        module.eval()
        at = next(module.parameters(), torch.empty(0)).device  # yours stays where you put it
        try:
            with torch.no_grad():
                parts = [module(shaped_for(module, x[i : i + _BATCH].to(at)))
                         for i in range(0, len(x), _BATCH)]  # fmt: skip
                return torch.cat(parts).to(x.device)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise DataError(
                f"your teacher ({self.setting}) failed on inputs of shape [{_BATCH},"
                f" {x.shape[1]}]: {first}; it must take [N, {x.shape[1]}] float32"
            ) from None
        finally:
            module.train(was_training)

    def _onnx_logits(self, x: torch.Tensor) -> torch.Tensor:
        import onnxruntime as ort  # loads slowly: only for an ONNX teacher

        try:
            sess = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad files
            first = str(exc).splitlines()[0]
            raise DataError(f"cannot load {self.setting} as an ONNX model: {first}") from None
        inp = sess.get_inputs()[0]
        width = inp.shape[1] if len(inp.shape) == 2 else -1  # a name or None: any width
        image = inp.shape[1:] if len(inp.shape) == 4 else None
        if image is not None and all(isinstance(v, int) for v in image):
            width = int(np.prod(image))  # images [N, C, H, W]: fed the rows reshaped
        if isinstance(width, int) and width != x.shape[1]:
            raise DataError(
                f"{self.setting} takes input '{inp.name}' of shape {inp.shape}; kdbench gives"
                f" [N, {x.shape[1]}] float32 (see kdbench.protocol.own_teacher)"
            )
        dtype = _ONNX_INPUTS.get(inp.type)
        if dtype is None:
            raise DataError(
                f"{self.setting} takes input '{inp.name}' of type {inp.type}; kdbench gives"
                " floating-point pixels (float, double or float16)"
            )
        fixed = isinstance(inp.shape[0], int) and inp.shape[0] > 0
        batch = inp.shape[0] if fixed else _BATCH
        xs = x.cpu().numpy().astype(dtype)
        if image is not None and all(isinstance(v, int) for v in image):
            xs = xs.reshape(len(xs), *image)
        out = []
        for i in range(0, len(xs), batch):
            chunk = xs[i : i + batch]
            if fixed and len(chunk) < batch:  # a fixed batch: pad the last one, keep its rows
                chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]),
                                                        dtype)])  # fmt: skip
            try:
                z = sess.run(None, {inp.name: chunk})[0]
            except Exception as exc:  # ORT raises its own exception types for a wrong model
                first = str(exc).splitlines()[0]
                raise DataError(
                    f"your teacher ({self.setting}) failed on inputs of shape {list(chunk.shape)}"
                    f" {chunk.dtype}: {first}; it must take [N, {x.shape[1]}] pixels"
                ) from None
            out.append(np.asarray(z)[: len(xs[i : i + batch])])
        z = np.concatenate(out)
        if not np.issubdtype(z.dtype, np.floating):
            raise DataError(f"{self.setting} outputs {z.dtype} values, not logits")
        return torch.from_numpy(z.astype(np.float32)).to(x.device)


# the input types an ONNX teacher may take, and what kdbench feeds it
_ONNX_INPUTS = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                "tensor(float16)": np.float16}  # fmt: skip


def _module_sha256(module: nn.Module) -> str:
    """Its class and every tensor of its state: the same weights give the same hash."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
