"""Losses and soft targets: hard-label cross-entropy and the paper's distillation loss.

    loss = alpha * CE(y, student) + (1 - alpha) * T^2 * KL(teacher_T || student_T)

alpha weights the *hard-label* term (the paper's convention; alpha = 1 is plain training).
Every loss is reduced over the batch only, so a stack of M students gets M independent losses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from kdbench.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from kdbench.config import Config


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE over the last batch axis: logits `[..., B, C]`, labels `[..., B]` -> `[...]`."""
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none"
    )
    return flat.view(labels.shape).mean(-1)


def smoothed_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, epsilon: float | torch.Tensor
) -> torch.Tensor:
    """CE against label-smoothed targets, (1 − ε)·one-hot + ε/C (Szegedy et al.; PyTorch's
    and Keras' convention): logits `[M, B, C]`, labels `[M, B]`, ε a scalar or one per member
    `[M]` -> `[M]`."""
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # [M, B]
    uniform = -logp.mean(-1)  # [M, B]
    eps = epsilon.view(-1, 1) if isinstance(epsilon, torch.Tensor) else epsilon
    return ((1 - eps) * nll + eps * uniform).mean(-1)


def soften(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits / temperature, dim=-1)


def head_outputs(logits: torch.Tensor, head: str = "logits") -> torch.Tensor:
    """What the temperature divides. `logits`: the logits (Hinton). `softmax`: the output of a
    softmax layer, as in a Keras model that ends in softmax and is then divided by T; those
    probabilities lie in [0, 1], so their softened version is nearly uniform."""
    if head == "logits":
        return logits
    if head == "softmax":
        return torch.softmax(logits, dim=-1)
    raise ValueError(f"unknown head {head!r}")


def _per_member(value: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """A scalar, or one value per member (leading axis) shaped to divide `like` `[M, ..., C]`."""
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        return value.view(-1, *[1] * (like.dim() - 1))
    return value


def kl_soft(
    targets: torch.Tensor, student_logits: torch.Tensor, temperature: float | torch.Tensor
) -> torch.Tensor:
    """Mean over the batch of KL(targets || softmax(student / T)), summed over classes."""
    log_student = torch.log_softmax(student_logits / _per_member(temperature, student_logits), -1)
    return (torch.xlogy(targets, targets) - targets * log_student).sum(-1).mean(-1)


def kd_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    temperature: float | torch.Tensor,
    alpha: float | torch.Tensor,
    head: str = "logits",
) -> torch.Tensor:
    """The paper's combined loss; `targets` are the teacher's softened probabilities. The
    hard-label term is the same for either head (CE of the softmax output). `temperature` and
    `alpha` are scalars or one value per member of a stack (`[M]`, a sweep's grid points)."""
    hard = cross_entropy(student_logits, labels)
    soft = kl_soft(targets, head_outputs(student_logits, head), temperature)
    return alpha * hard + (1 - alpha) * temperature**2 * soft


def ensemble_probs(member_logits: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """An ensemble's output as the paper defines it: the mean of its members' probabilities
    (members along `axis`). Every ensemble kdbench evaluates, diagnoses, loads, times or exports
    is this; the ONNX graph (`runs.export.onnx_model`) writes the same as Softmax and Mean."""
    return torch.softmax(member_logits, -1).mean(axis)


def ensemble_targets(
    member_logits: torch.Tensor, temperature: float | torch.Tensor, mode: str
) -> torch.Tensor:
    """Soft targets of an ensemble from `[K, ..., N, C]` member logits (K = 1: one teacher).

    `probs` (the paper): mean over members of softmax(logits / T).
    `logits`: softmax of the members' mean logit / T.
    """
    if mode == "probs":
        return ensemble_probs(member_logits / temperature)
    if mode == "logits":
        return soften(member_logits.mean(0), temperature)
    raise ValueError(f"unknown ensemble target mode {mode!r}")


def error_rate(logits_or_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction misclassified along the last batch axis: `[..., N, C]` -> `[...]`."""
    return (logits_or_probs.argmax(-1) != labels).float().mean(-1)


class DistillationLoss(ABC):
    """What a distilled student minimises, given its teachers' outputs.

    A new loss is one subclass, one entry in `LOSSES` and one config value (`distill.loss`,
    flag `--loss`). The engine never looks inside: it asks for targets once (frozen teachers,
    cached) or at every step (teachers trained along), and for the per-member loss.
    """

    @classmethod
    def from_config(cls, cfg: Config) -> DistillationLoss:
        return cls()

    @abstractmethod
    def targets(self, teacher_logits: torch.Tensor, temperature: float | torch.Tensor):
        """What the student is compared with, `[M, ..., C]`, from the logits of its K teachers
        `[K, M, ..., C]` (K = 1 for one teacher, the members of an ensemble); `temperature` is
        one value or one per member (`[M]`)."""

    @abstractmethod
    def __call__(
        self,
        student_logits: torch.Tensor,
        labels: torch.Tensor,
        targets: torch.Tensor,
        temperature: float | torch.Tensor,
        alpha: float | torch.Tensor,
    ) -> torch.Tensor:
        """The loss of each member `[M]` (mean over its batch)."""


class PaperKD(DistillationLoss):
    """The paper's loss (Figure 2): alpha * CE + (1 - alpha) * T^2 * KL on softened outputs."""

    def __init__(self, head: str = "logits", ensemble: str = "probs"):
        self.head, self.ensemble = head, ensemble

    @classmethod
    def from_config(cls, cfg: Config) -> DistillationLoss:
        return cls(cfg.model.head, cfg.distill.ensemble_targets)

    def targets(self, teacher_logits, temperature):
        per_member = _per_member(temperature, teacher_logits[0])
        return ensemble_targets(head_outputs(teacher_logits, self.head), per_member, self.ensemble)

    def __call__(self, student_logits, labels, targets, temperature, alpha):
        return kd_loss(student_logits, labels, targets, temperature, alpha, self.head)


LOSSES: dict[str, type[DistillationLoss]] = {"kd": PaperKD}


def loss_class(name: str) -> type[DistillationLoss]:
    """The registered loss `name`, or one clear error that suggests the closest names."""
    if name not in LOSSES:
        raise ConfigError(
            f"unknown distillation loss '{name}'{did_you_mean(name, LOSSES)}; fix --loss: one of"
            f" {', '.join(LOSSES)}"
        )
    return LOSSES[name]
