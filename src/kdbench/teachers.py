"""Where a distilled stack's targets come from: teachers frozen (cached), or trained along.

`CachedTeachers`: the teachers are fixed, so their targets are computed once for the whole
training and validation sets and looked up per batch (the default, `teacher_updates = frozen`).

`TrainedTeachers`: what the paper's Keras code does (`teacher_updates = joint`). Its distiller
holds the teachers as attributes of one `keras.Model`, so the default `train_step`
differentiates the loss with respect to the teachers' weights too, and the same Adam moves
them. Each distilled student gets its own copies of its teacher (or of every member of its
ensemble); the copies run on the student's batch, their targets carry gradient, and after the
student's backward pass the copies take an Adam step of their own (fresh state, same lr, eps and
betas, one step count). When a student stops, its copies stop with it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from kdbench.models import Params, Tape, copy_rows, stack_backward, stack_forward, stack_logits
from kdbench.optim import Adam

# teacher logits [K, M, ..., C] and a temperature per member -> targets [M, ..., C]
TargetFn = Callable[[torch.Tensor, float | torch.Tensor], torch.Tensor]


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


@dataclass
class Copies:
    """One stack of teacher copies: `per_owner` consecutive rows belong to each owner (one for a
    teacher, K for an ensemble). `params` are consumed: trained in place."""

    params: Params
    owners: list[int]  # the student (member id) of each group of `per_owner` rows
    per_owner: int
    final: Params = field(init=False)  # every copy's weights when its student stopped
    slots: torch.Tensor = field(init=False)  # row -> slot in `final`
    adam: Adam | None = field(default=None, init=False)
    tape: Tape | None = field(default=None, init=False)
    logits: torch.Tensor | None = field(default=None, init=False)
    rows_of_owner: torch.Tensor | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.final = [p.clone() for p in self.params]
        self.slots = torch.arange(len(self.owners) * self.per_owner)
        self.slot_owner = torch.tensor(self.owners).repeat_interleave(self.per_owner)
        self.row_owner = self.slot_owner  # shrinks as students retire; slot_owner does not


@dataclass
class TrainedTeachers(Teachers):
    """Teachers trained along with their students (see the module docstring)."""

    copies: list[Copies]
    targets: TargetFn  # the distillation loss's `targets`
    temperature: float | torch.Tensor  # one, or one per member
    lr: float
    eps: float
    _position: torch.Tensor | None = field(default=None, init=False, repr=False)
    _temps: list = field(default_factory=list, init=False, repr=False)
    _live: list[Copies] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        for c in self.copies:
            c.adam = Adam(c.params, self.lr, self.eps)

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

    def _targets(self, c: Copies, logits: torch.Tensor, temp) -> torch.Tensor:
        per = logits.view(-1, c.per_owner, *logits.shape[1:]).transpose(0, 1)  # [K, owners, ..]
        return self.targets(per, temp)

    def train_targets(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        parts = []
        for c, temp in zip(self._live, self._temps, strict=True):
            c.tape = Tape()
            c.logits = stack_forward(c.params, x.index_select(0, c.rows_of_owner), None, c.tape)
            c.logits.requires_grad_()
            parts.append(self._targets(c, c.logits, temp))
        return self._combine(parts)

    def val_targets(self, x_val: torch.Tensor) -> torch.Tensor:
        parts = [
            self._targets(c, stack_logits(c.params, x_val), temp)
            for c, temp in zip(self._live, self._temps, strict=True)
        ]
        return self._combine(parts)

    def after_step(self) -> None:
        for c in self._live:
            c.adam.count_step()
            for layer, grad_w, grad_b in stack_backward(c.params, c.tape, c.logits.grad):
                c.adam.update(c.params, layer, (grad_w, grad_b))
            c.tape = c.logits = None

    def retire(self, stop: torch.Tensor) -> None:
        """Copy the finished students' copies out and drop them from their stacks."""
        for c in self._live:
            device = c.params[0].device
            done = stop.to(device)[c.rows_of_owner]
            if not bool(done.any()):
                continue
            rows = done.nonzero().squeeze(1)
            copy_rows(c.final, c.params, rows, c.slots.to(device)[rows])
            keep = (~done).nonzero().squeeze(1)
            c.params = [p.index_select(0, keep) for p in c.params]
            c.adam.keep(keep)
            keep_cpu = keep.cpu()
            c.slots, c.row_owner = c.slots[keep_cpu], c.row_owner[keep_cpu]
