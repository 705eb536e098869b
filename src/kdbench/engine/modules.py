"""Any `nn.Module` as a stack: your own architecture, trained with the engine's guarantees.

A factory (a callable returning a fresh module) builds each member after `torch.manual_seed` of
the member's init seed, so a member's weights depend only on its seed. The members' parameters
are stacked (`torch.func.stack_module_state`) and run together with `torch.func.vmap` over
`functional_call`; autograd gives every member's gradients, and the engine's Adam updates them all
in one fused call, each member with its own state.

What a stack cannot run correctly is refused with one line, never trained silently wrong: a module
with buffers (BatchNorm's running statistics would be shared or lost) or with its own random
layers (nn.Dropout inside vmap would tie a member's masks to its stack).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.utils.flop_counter import FlopCounterMode

from kdbench.engine import native
from kdbench.engine.conv_direct import DIRECT
from kdbench.engine.conv_stack import Plan, plan
from kdbench.engine.losses import ensemble_probs
from kdbench.engine.stack_model import Params, StackModel
from kdbench.errors import ConfigError

Factory = Callable[[], nn.Module]
_RANDOM = (nn.modules.dropout._DropoutNd,)


def _name(factory: Factory) -> str:
    return getattr(factory, "__qualname__", type(factory).__name__)


def check_module(module: nn.Module, where: str) -> None:
    """One clear line for a module kdbench cannot stack correctly."""
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{where} returned {type(module).__name__}, not an nn.Module")
    buffers = [n for n, _ in module.named_buffers()]
    if buffers:
        raise ConfigError(
            f"{where} has buffers ({', '.join(buffers[:3])}): running statistics such as"
            " BatchNorm's cannot be kept per member in a stack; use a module without them"
            " (e.g. GroupNorm or LayerNorm)"
        )
    random = [n for n, m in module.named_modules() if isinstance(m, _RANDOM)]
    if random:
        raise ConfigError(
            f"{where} has its own random layers ({', '.join(random[:3])}): inside a stack their"
            " masks would depend on the stack, not on the member's seed; remove them"
        )
    if not list(module.parameters()):
        raise ConfigError(f"{where} has no parameters to train")


def dropout_refused(model: StackModel) -> str:
    """Why a module cannot take the engine's dropout, and the fix."""
    return (
        f"dropout needs a sequential conv or dense net, and {model!r} is not one (its own"
        " forward); set --teacher-dropout 0 --teacher-input-dropout 0"
    )


class Ensemble(nn.Module):
    """An ensemble as the study evaluates it: the mean of its members' probabilities. Its
    output is probabilities, not logits."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ensemble_probs(torch.stack([m(x) for m in self.members]))


class ModuleStack(StackModel):
    """A stack of members built by `factory`; `forward` takes the dataset's inputs
    `[N, features]` and returns `[N, classes]` logits."""

    def __init__(self, factory: Factory, n_features: int, n_classes: int):
        self.factory, self.n_features = factory, n_features
        template = self._build(0)
        where = f"the factory {_name(factory)}"
        probe = torch.zeros(2, n_features)
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as flops:
                out = template(probe[:1])
        except Exception as exc:  # any failure of your forward: say which and on what
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                f"{where} fails on inputs [N, {n_features}] float32: {first}; its forward must"
                " take the dataset's inputs"
            ) from None
        if tuple(out.shape) != (1, n_classes):
            raise ConfigError(
                f"{where} gives outputs of shape {list(out.shape)} for one input; it must give"
                f" [N, {n_classes}] logits (one per class)"
            )
        self._macs = flops.get_total_flops() // 2  # a multiply-accumulate is two flops
        self.names = [n for n, _ in template.named_parameters()]
        self._base = copy.deepcopy(template).to("meta")  # the architecture, without weights
        self.plan = plan(self._base, self.names)  # the conv fast path, where it applies
        # on the CPU, its compiled kernels where they build and run this net's layers
        convs = any(isinstance(m, nn.Conv2d) for m in self._base.modules())
        direct = plan(self._base, self.names, DIRECT) if self.plan and convs else None
        self.direct = direct if direct is not None and native.kernels() is not None else None

    def __repr__(self) -> str:
        return f"ModuleStack({_name(self.factory)})"

    def _build(self, seed: int) -> nn.Module:
        torch.manual_seed(int(seed))
        module = self.factory()
        check_module(module, f"the factory {_name(self.factory)}")
        return module

    def init(self, seeds, device="cpu") -> Params:
        members = [self._build(s).to(device) for s in seeds]
        stacked, _ = stack_module_state(members)
        return [stacked[n].detach().clone() for n in self.names]

    def _fast(self, x: torch.Tensor) -> Plan | None:
        """The fast path for inputs `x`: the compiled one for float32 on the CPU."""
        if self.direct is not None and x.device.type == "cpu" and x.dtype == torch.float32:
            return self.direct
        return self.plan

    def _run(self, params: Params, x: torch.Tensor, shared: bool, dropout=None) -> torch.Tensor:
        """Own batches through the fast path where there is one; else (and shared inputs off
        the compiled path) vmap. `dropout` needs the fast path (`step` refuses it otherwise)."""
        fast = self._fast(x)
        if fast is not None and (not shared or fast is self.direct):
            if shared:  # every member on the same inputs: the layout copy makes them its own
                x = x.expand(len(params[0]), *x.shape)
            return fast.run(params, x, dropout)

        def one(member_params, xi):
            return functional_call(self._base, dict(zip(self.names, member_params, strict=True)),
                                   (xi,))  # fmt: skip

        return vmap(one, in_dims=(0, None if shared else 0))(tuple(params), x)

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return self._run(params, x, shared=x.dim() == 2)

    def step(self, params, adam, x, loss_of, dropout=None) -> torch.Tensor:
        if dropout is not None and self.plan is None:
            raise ConfigError(dropout_refused(self))
        leaves = [p.detach().requires_grad_() for p in params]
        loss = loss_of(self._run(leaves, x, False, dropout))
        # backward, not autograd.grad: teachers trained along (`teachers.FamilyCopies`) get
        # their gradients from the same pass
        loss.sum().backward()
        adam.count_step()
        # the fused kernel walks gradient and weight alike: vmap's may come transposed
        adam.update_all(params, [leaf.grad.contiguous() for leaf in leaves])
        return loss.detach()

    @torch.no_grad()
    def logits(self, params: Params, x: torch.Tensor, chunk: int = 128) -> torch.Tensor:
        """As the base class, in chunks of 128 inputs: a conv net's activations for thousands of
        images at once leave the cache (measured: 500 validation images twice as fast)."""
        return super().logits(params, x, chunk)

    def member(self, params: Params, m: int) -> nn.Module:
        module = self._build(0)
        with torch.no_grad():
            for (_, p), stacked in zip(module.named_parameters(), params, strict=True):
                p.copy_(stacked[m])
        return module.to(params[0].device)

    def tensor_names(self) -> list[str]:
        return list(self.names)

    def hidden_weights(self, params: Params) -> list[torch.Tensor]:
        # conv and dense weights are [M, out, in, ...]; the last one is the output layer's
        weights = [p for p in params if p.dim() >= 3]
        return weights[:-1]

    def parameters_per_member(self) -> int:
        return sum(p.numel() for p in self._base.parameters())

    def macs_per_image(self) -> int:
        return int(self._macs)
