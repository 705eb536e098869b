"""Where a distilled stack's targets come from: teachers frozen (cached), or trained along.

`CachedTeachers`: the teachers are fixed, so their targets are computed once for the whole
training and validation sets and looked up per batch (the default, `teacher_updates = frozen`).

`FrozenCopies` in `TrainedTeachers`: frozen teachers run on each step's images as their students
see them, when the recipe augments the images (`--augment`): a student then matches its
teacher's view of the same crop and flip ("consistent" distillation, Beyer et al. 2022), which
cached targets of the clean image cannot give.

`TrainedTeachers`: what the paper's Keras code does (`teacher_updates = joint`). Its distiller
holds the teachers as attributes of one `keras.Model`, so the default `train_step`
differentiates the loss with respect to the teachers' weights too, and the same Adam moves
them. Each distilled student gets its own copies of its teacher (or of every member of its
ensemble); the copies run on the student's batch, their targets carry gradient, and after the
student's backward pass the copies take an Adam step of their own (fresh state, same lr, eps and
betas, one step count). When a student stops, its copies stop with it.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from kdbench.engine.optim import Adam
from kdbench.engine.stack_model import Params, StackModel, copy_rows

# teacher logits [K, M, ..., C] and a temperature per member -> targets [M, ..., C]
TargetFn = Callable[[torch.Tensor, float | torch.Tensor], torch.Tensor]


def shaped_for(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Rows `[N, features]` as a teacher module takes them: `[N, *module.input_shape]` where it
    names one (every model `kdbench.load` returns does), else as they are."""
    shape = getattr(module, "input_shape", None)
    return x if shape is None else x.reshape(len(x), *shape)


class Teachers(ABC):
    """The targets of each member of a distilled stack, for training batches and validation."""

    def begin_epoch(self, active: torch.Tensor) -> None:  # noqa: B027 (optional hook)
        """`active`: ids of the members training this epoch, in stack-row order."""

    @abstractmethod
    def train_targets(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Targets `[M, B, C]` for each member's batch (`x` `[M, B, in]`, rows `index`)."""

    @abstractmethod
    def val_targets(self, x_val: torch.Tensor) -> torch.Tensor:
        """Targets `[M, N_val, C]` on the validation images."""

    def after_step(self) -> None:  # noqa: B027 (optional hook)
        """Called after the students' backward pass of every step."""

    def retire(self, stop: torch.Tensor) -> None:  # noqa: B027 (optional hook)
        """The members at the rows where `stop` is true have finished."""


@dataclass
class CachedTeachers(Teachers):
    """Frozen teachers: targets computed once. Rows of targets, and which row each member uses
    (members with the same teacher and temperature share a row)."""

    train: torch.Tensor  # [G, N_train, C]
    val: torch.Tensor  # [G, N_val, C]
    group: torch.Tensor  # [M] long: the target row of each member
    _groups: torch.Tensor | None = field(default=None, init=False, repr=False)

    def begin_epoch(self, active: torch.Tensor) -> None:
        self._groups = self.group.to(active.device)[active]

    def train_targets(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.train[self._groups[:, None], index]

    def val_targets(self, x_val: torch.Tensor) -> torch.Tensor:
        return self.val[self._groups]


class CopyStack(ABC):
    """Copies of teachers trained along with their students: `per_owner` consecutive rows
    belong to each owner (one for a teacher, K for an ensemble). Rows shrink as students retire;
    slots (every copy ever made) do not."""

    owners: list[int]  # the student (member id) of each group of `per_owner` rows
    per_owner: int

    def _init_rows(self) -> None:
        self.slots = torch.arange(len(self.owners) * self.per_owner)  # row -> slot
        self.slot_owner = torch.tensor(self.owners).repeat_interleave(self.per_owner)
        self.row_owner = self.slot_owner  # shrinks as students retire
        self.rows_of_owner: torch.Tensor | None = None  # row -> its student's row this epoch

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits `[rows, B, C]` on each row's batch, carrying gradient to the copies."""

    @abstractmethod
    def val_logits(self, x_val: torch.Tensor) -> torch.Tensor:
        """Logits `[rows, N, C]` of the current copies, without gradient."""

    @abstractmethod
    def step(self) -> None:
        """One Adam step of every row, from the gradient of the last `forward`."""

    @abstractmethod
    def _drop(self, done: torch.Tensor) -> None:
        """Keep the weights of the rows where `done` is true, and stop training them."""

    @abstractmethod
    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits `[slots, N, C]` of every copy as its student left it."""

    def retire(self, done: torch.Tensor) -> None:
        self._drop(done)
        keep = (~done).nonzero().squeeze(1).cpu()
        self.slots, self.row_owner = self.slots[keep], self.row_owner[keep]


@dataclass
class StackedCopies(CopyStack):
    """Copies of kdbench's own teachers as one stack with one fused Adam. `params` are
    consumed: trained in place; a retired copy's weights go to `final`."""

    params: Params
    owners: list[int]
    per_owner: int
    lr: float
    eps: float
    final: Params = field(init=False)  # every copy's weights when its student stopped
    adam: Adam = field(init=False)

    def __post_init__(self) -> None:
        self.final = [p.clone() for p in self.params]
        self.adam = Adam(self.params, self.lr, self.eps)
        self._init_rows()

    def _drop(self, done: torch.Tensor) -> None:
        device = self.params[0].device
        rows = done.nonzero().squeeze(1)
        copy_rows(self.final, self.params, rows, self.slots.to(device)[rows])
        keep = (~done).nonzero().squeeze(1)
        self.params = [p.index_select(0, keep) for p in self.params]
        self.adam.keep(keep)


@dataclass
class FamilyCopies(StackedCopies):
    """Copies of teachers of any other family (a conv net, your own module), run by the
    family's own forward; autograd carries the students' loss to the copies' weights (the
    students' backward pass fills them)."""

    model: StackModel = field(kw_only=True)
    leaves: list[torch.Tensor] | None = field(default=None, init=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.model.trainable(self.params))  # buffers follow, and take no gradient
        self.leaves = [p.detach().requires_grad_() for p in self.params[:n]]
        return self.model.forward(self.leaves + self.params[n:], x)

    def val_logits(self, x_val: torch.Tensor) -> torch.Tensor:
        return self.model.logits(self.params, x_val)

    def step(self) -> None:
        grads = [
            torch.zeros_like(leaf) if leaf.grad is None else leaf.grad.contiguous()
            for leaf in self.leaves
        ]
        self.adam.count_step()
        self.adam.update_all(self.model.trainable(self.params), grads)
        self.leaves = None

    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(self.final, x)


def copies_of(
    model: StackModel, params: Params, owners: list[int], per_owner: int, lr: float, eps: float
) -> CopyStack:
    """Copies of `model`'s teachers (`params`, consumed): the family's own copies where it has
    them (the fully connected family differentiates its own by hand), else through autograd."""
    own = model.copies(params, owners, per_owner, lr, eps)
    return own if own is not None else FamilyCopies(params, owners, per_owner, lr, eps, model=model)


class ModuleCopies(CopyStack):
    """Copies of your own `nn.Module` teacher, one per student, each with its own
    `torch.optim.Adam` (same lr and eps). The copies run in eval mode (no dropout, batch-norm
    statistics fixed), as the Keras distiller calls its teacher, while gradients reach their
    weights through the distillation loss."""

    def __init__(self, module: nn.Module, owners: list[int], lr: float, eps: float, device):
        self.owners, self.per_owner = owners, 1
        self.final = [copy.deepcopy(module).to(device).eval().requires_grad_(True) for _ in owners]
        self.live = list(self.final)  # the copies still training, in row order
        self.optims = [torch.optim.Adam(m.parameters(), lr=lr, eps=eps) for m in self.live]
        self._init_rows()

    def _shaped(self, x: torch.Tensor) -> torch.Tensor:
        return shaped_for(self.final[0], x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(self._shaped(x[i])) for i, m in enumerate(self.live)])

    def val_logits(self, x_val: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([m(self._shaped(x_val)) for m in self.live])

    def step(self) -> None:
        for opt in self.optims:
            opt.step()
            opt.zero_grad(set_to_none=True)

    def _drop(self, done: torch.Tensor) -> None:
        keep = (~done).nonzero().squeeze(1).tolist()
        self.live = [self.live[i] for i in keep]
        self.optims = [self.optims[i] for i in keep]

    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([m(self._shaped(x)) for m in self.final])


@dataclass
class FrozenCopies(CopyStack):
    """Teachers that never train, run (eval mode, no gradient) on each row's batch: the
    consistent views of augmented training. `params`: `per_owner` rows per owner."""

    model: StackModel
    params: Params
    owners: list[int]
    per_owner: int

    def __post_init__(self) -> None:
        self._init_rows()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.forward(self.params, x)

    def val_logits(self, x_val: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.logits(self.params, x_val)

    def step(self) -> None:
        pass  # frozen

    def _drop(self, done: torch.Tensor) -> None:
        keep = (~done).nonzero().squeeze(1).to(self.params[0].device)
        self.params = [p.index_select(0, keep) for p in self.params]

    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("frozen teachers are the upstream models themselves")


@dataclass
class TrainedTeachers(Teachers):
    """Teachers trained along with their students (see the module docstring)."""

    copies: list[CopyStack]
    targets: TargetFn  # the distillation loss's `targets`
    temperature: float | torch.Tensor  # one, or one per member
    _position: torch.Tensor | None = field(default=None, init=False, repr=False)
    _temps: list = field(default_factory=list, init=False, repr=False)
    _live: list[CopyStack] = field(default_factory=list, init=False, repr=False)

    def begin_epoch(self, active: torch.Tensor) -> None:
        device = active.device
        row_of = {m: j for j, m in enumerate(active.tolist())}
        order: list[int] = []  # the member of each target row, in concatenation order
        self._temps = []
        self._live = [c for c in self.copies if len(c.row_owner)]  # some students still train
        for c in self._live:
            owners = c.row_owner[:: c.per_owner].tolist()
            order += owners
            c.rows_of_owner = torch.tensor([row_of[m] for m in c.row_owner.tolist()]).to(device)
            t = self.temperature
            self._temps.append(t[torch.tensor(owners)].to(device) if torch.is_tensor(t) else t)
        at = {m: i for i, m in enumerate(order)}
        self._position = torch.tensor([at[m] for m in active.tolist()], device=device)

    def _combine(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts).index_select(0, self._position)

    def _targets(self, c: CopyStack, logits: torch.Tensor, temp) -> torch.Tensor:
        per = logits.view(-1, c.per_owner, *logits.shape[1:]).transpose(0, 1)  # [K, owners, ..]
        return self.targets(per, temp)

    def train_targets(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        parts = []
        for c, temp in zip(self._live, self._temps, strict=True):
            logits = c.forward(x.index_select(0, c.rows_of_owner))
            parts.append(self._targets(c, logits, temp))
        return self._combine(parts)

    def val_targets(self, x_val: torch.Tensor) -> torch.Tensor:
        parts = [
            self._targets(c, c.val_logits(x_val), temp)
            for c, temp in zip(self._live, self._temps, strict=True)
        ]
        return self._combine(parts)

    def after_step(self) -> None:
        for c in self._live:
            c.step()

    def retire(self, stop: torch.Tensor) -> None:
        """Keep the finished students' copies and drop them from their stacks."""
        for c in self._live:
            done = stop.to(c.rows_of_owner.device)[c.rows_of_owner]
            if bool(done.any()):
                c.retire(done)
