"""Losses and soft targets: hard-label cross-entropy, the paper's distillation loss and the
methods since (DKD, DIST, logit standardization, logit matching).

    loss = alpha * CE(y, student) + (1 - alpha) * soft(student, targets)

alpha weights the *hard-label* term (the paper's convention; alpha = 1 is plain training); the
paper's soft term is T^2 * KL(teacher_T || student_T). Every loss is reduced over the batch
only, so a stack of M students gets M independent losses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from kdbench.engine.own_code import imported
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
    """The paper's combined loss (`PaperKD`); `targets` are the teacher's softened
    probabilities. The hard-label term is the same for either head (CE of the softmax output).
    `temperature` and `alpha` are scalars or one value per member of a stack (`[M]`)."""
    return PaperKD(head)(student_logits, labels, targets, temperature, alpha)


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
    """What a distilled student minimises, given its teachers' outputs:

        loss = alpha * CE(labels, student) + (1 - alpha) * soft(student, targets)

    `alpha` weighs the hard-label term for every loss (the paper's convention); a loss is its
    soft term (`soft`) and what it compares the student with (`targets`). A new loss is one
    subclass (a frozen dataclass: equal settings, equal loss), an entry in `LOSSES` and its
    settings in `DistillConfig`; your own is a subclass named `--loss package.module:Class`.
    The engine never looks inside: it asks for targets once (frozen teachers, cached) or at
    every step (teachers run on augmented images or trained along), and for the per-member
    loss. Every loss is reduced over the batch only, so a stack of M students gets M losses.
    """

    @classmethod
    def from_config(cls, cfg: Config) -> DistillationLoss:
        return cls()

    def targets(self, teacher_logits: torch.Tensor, temperature) -> torch.Tensor:
        """What the student is compared with, `[M, ..., C]`, from the logits of its K teachers
        `[K, M, ..., C]` (K = 1 for one teacher, the members of an ensemble); `temperature` is
        one value or one per member (`[M]`). By default the paper's soft targets: the mean
        over the K teachers of softmax(logits / T)."""
        per_member = _per_member(temperature, teacher_logits[0])
        return ensemble_targets(teacher_logits, per_member, "probs")

    def probabilities(self, teacher_logits: torch.Tensor, temperature) -> torch.Tensor:
        """The class probabilities the student is pulled towards (what `diagnose` measures the
        entropy of, and the matched smoothing control matches): the targets, where those are
        probabilities."""
        return self.targets(teacher_logits, temperature)

    @abstractmethod
    def soft(self, student_logits, labels, targets, temperature, epoch: int | None) -> torch.Tensor:
        """The distillation term of each member `[M]` (mean over its batch): `student_logits`
        `[M, B, C]`, `labels` `[M, B]`, `targets` from `targets`; `epoch` the training epoch
        (from 1), None for the validation loss early stopping watches."""

    def __call__(self, student_logits, labels, targets, temperature, alpha, epoch=None):
        """The loss of each member `[M]`: alpha * CE + (1 - alpha) * soft."""
        hard = cross_entropy(student_logits, labels)
        soft = self.soft(student_logits, labels, targets, temperature, epoch)
        return alpha * hard + (1 - alpha) * soft


def standardized(logits: torch.Tensor) -> torch.Tensor:
    """Logit standardization (Sun et al., "Logit Standardization in Knowledge Distillation",
    CVPR 2024): each output's logits z-scored over the classes, (z - mean) / (std + 1e-7), the
    std with Bessel's correction as in the authors' code; the temperature then divides these."""
    mean = logits.mean(-1, keepdim=True)
    return (logits - mean) / (logits.std(-1, keepdim=True) + 1e-7)


@dataclass(frozen=True)
class PaperKD(DistillationLoss):
    """Hinton et al.'s loss, the paper's (Figure 2): soft = T^2 * KL(targets || softmax(z / T)).
    `head`: what T divides (`head_outputs`); `ensemble`: an ensemble's targets, the mean of its
    members' softened probabilities (`probs`, the paper) or the softened mean logit
    (`logits`); `standardize`: both sides' logits z-scored first (`standardized`)."""

    head: str = "logits"
    ensemble: str = "probs"
    standardize: bool = False

    @classmethod
    def from_config(cls, cfg: Config) -> DistillationLoss:
        d = cfg.distill
        return cls(cfg.model.head, d.ensemble_targets, d.logit_standardization)

    def _z(self, logits: torch.Tensor) -> torch.Tensor:
        return standardized(logits) if self.standardize else head_outputs(logits, self.head)

    def targets(self, teacher_logits, temperature):
        per_member = _per_member(temperature, teacher_logits[0])
        return ensemble_targets(self._z(teacher_logits), per_member, self.ensemble)

    def soft(self, student_logits, labels, targets, temperature, epoch):
        return temperature**2 * kl_soft(targets, self._z(student_logits), temperature)


@dataclass(frozen=True)
class DKD(DistillationLoss):
    """Decoupled KD (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022): KD's KL split
    into the target-class term TCKD (KL between the binary [target, rest] probabilities) and
    the non-target term NCKD (KL among the non-target classes, renormalised), re-weighted:
    soft = warm * T^2 * (dkd_alpha * TCKD + dkd_beta * NCKD), where KD itself is
    TCKD + (1 - p_target) * NCKD. The paper's CIFAR defaults: alpha 1, beta 8, the term ramped
    up linearly over the first 20 epochs (warm = min(epoch / warmup, 1); early stopping's
    validation loss uses the full term, so its criterion does not move with the ramp). The
    targets are probabilities (an ensemble's: the mean of its members' softened
    probabilities), so NCKD's teacher side is the non-target probabilities renormalised."""

    alpha: float = 1.0
    beta: float = 8.0
    warmup: int = 20
    ensemble: str = "probs"
    standardize: bool = False

    @classmethod
    def from_config(cls, cfg: Config) -> DistillationLoss:
        d = cfg.distill
        return cls(d.dkd_alpha, d.dkd_beta, d.dkd_warmup, d.ensemble_targets,
                   d.logit_standardization)  # fmt: skip

    def targets(self, teacher_logits, temperature):
        z = standardized(teacher_logits) if self.standardize else teacher_logits
        return ensemble_targets(z, _per_member(temperature, teacher_logits[0]), self.ensemble)

    def soft(self, student_logits, labels, targets, temperature, epoch):
        z = standardized(student_logits) if self.standardize else student_logits
        tckd, nckd = dkd_parts(targets, z, labels, temperature)
        warm = 1.0 if epoch is None or self.warmup <= 0 else min(epoch / self.warmup, 1.0)
        term = self.alpha * tckd.mean(-1) + self.beta * nckd.mean(-1)
        return warm * temperature**2 * term


def dkd_parts(targets, student_logits, labels, temperature):
    """Per example `[M, B]`: (TCKD, NCKD) of DKD between `targets` (the teachers' softened
    probabilities `[M, B, C]`) and the student's logits at temperature T."""
    log_s = torch.log_softmax(student_logits / _per_member(temperature, student_logits), -1)
    gt = F.one_hot(labels, log_s.shape[-1]).bool()
    t_gt = (targets * gt).sum(-1)  # the teacher's target-class probability
    t_rest = (targets * ~gt).sum(-1)  # and the rest (summed: exact where t_gt is near 1)
    s_gt = log_s.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # log p_s,target
    s_rest = torch.logsumexp(log_s.masked_fill(gt, -torch.inf), -1)  # log(1 - p_s,target)
    tckd = (torch.xlogy(t_gt, t_gt) - t_gt * s_gt) + (torch.xlogy(t_rest, t_rest) - t_rest * s_rest)
    q_t = (targets / t_rest.clamp_min(1e-30).unsqueeze(-1)).masked_fill(gt, 0.0)
    log_q_s = (log_s - s_rest.unsqueeze(-1)).masked_fill(gt, 0.0)  # log-softmax over the rest
    nckd = (torch.xlogy(q_t, q_t) - q_t * log_q_s).sum(-1)
    return tckd, nckd


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation along the last axis, as DIST's code computes it: the cosine of the
    centred vectors, eps added to the norms' product."""
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


@dataclass(frozen=True)
class DIST(DistillationLoss):
    """DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022):
    relations instead of probabilities. With y = softmax(z / T) for the student and the
    targets for the teachers, inter = 1 - mean over the batch of each example's Pearson
    correlation across classes, intra = 1 - mean over the classes of each class's correlation
    across the batch; soft = T^2 * (dist_beta * inter + dist_gamma * intra). The paper's
    defaults: beta = gamma = 1. The intra-class term reads the whole batch, as in the paper."""

    beta: float = 1.0
    gamma: float = 1.0
    ensemble: str = "probs"

    @classmethod
    def from_config(cls, cfg: Config) -> DistillationLoss:
        d = cfg.distill
        return cls(d.dist_beta, d.dist_gamma, d.ensemble_targets)

    def targets(self, teacher_logits, temperature):
        per_member = _per_member(temperature, teacher_logits[0])
        return ensemble_targets(teacher_logits, per_member, self.ensemble)

    def soft(self, student_logits, labels, targets, temperature, epoch):
        y_s = soften(student_logits, _per_member(temperature, student_logits))
        inter = 1 - pearson(y_s, targets).mean(-1)  # [M]
        intra = 1 - pearson(y_s.transpose(-1, -2), targets.transpose(-1, -2)).mean(-1)
        return temperature**2 * (self.beta * inter + self.gamma * intra)


@dataclass(frozen=True)
class LogitMSE(DistillationLoss):
    """Logit matching (Ba & Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014,
    who trained shallow fully connected students by regressing an ensemble's logits; Kim et
    al., IJCAI 2021, found it beats KL): soft = the squared distance between the student's
    and the targets' logits, summed over classes. The targets are logits, an ensemble's the
    mean of its members'; the temperature plays no part. Chosen as the fourth method because
    it is what users ask first ("why not just match the logits?") and is the original
    compression recipe for the paper's setting: small MLPs from an ensemble."""

    def targets(self, teacher_logits, temperature):
        return teacher_logits.mean(0)

    def probabilities(self, teacher_logits, temperature):
        return torch.softmax(self.targets(teacher_logits, temperature), -1)

    def soft(self, student_logits, labels, targets, temperature, epoch):
        return (student_logits - targets).square().sum(-1).mean(-1)


LOSSES: dict[str, type[DistillationLoss]] = {"kd": PaperKD, "dkd": DKD, "dist": DIST,
                                             "mse": LogitMSE}  # fmt: skip


def loss_class(name: str) -> type[DistillationLoss]:
    """The registered loss `name`, your own `package.module:Class` (a `DistillationLoss`
    subclass, imported only with consent: `own_code.imported`), or one clear error that
    suggests the closest names."""
    if ":" in name:
        cls = imported(name, "loss")
        if not (isinstance(cls, type) and issubclass(cls, DistillationLoss)):
            raise ConfigError(
                f"loss '{name}' is not a subclass of kdbench.DistillationLoss; subclass it and"
                " write its soft term (docs/guide.md: your own loss)"
            )
        return cls
    if name not in LOSSES:
        raise ConfigError(
            f"unknown distillation loss '{name}'{did_you_mean(name, LOSSES)}; fix --loss: one of"
            f" {', '.join(LOSSES)}, or package.module:Class"
        )
    return LOSSES[name]
