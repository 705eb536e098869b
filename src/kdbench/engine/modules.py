"""Any `nn.Module` as a stack: your own architecture, trained with the engine's guarantees.

A factory (a callable returning a fresh module) builds each member after `torch.manual_seed` of
the member's init seed (inside `torch.random.fork_rng`, so the caller's random state is left as
it was), so a member's weights depend only on its seed. The members' parameters and buffers are
stacked (`torch.func.stack_module_state`) and run together with `torch.func.vmap` over
`functional_call`; autograd gives every member's gradients, and the engine's Adam updates them all
in one fused call, each member with its own state. A sequential conv net of the layers
`conv_stack.plan` knows runs on the conv fast path instead.

- **Inputs** come shaped as one input is: `[N, C, H, W]` for image data, `[N, features]` for
  other arrays (`input_shape`).
- **Buffers** (BatchNorm's running statistics) are kept per member: in training each member
  normalises with the statistics of its own minibatch and updates its own running statistics;
  in evaluation it uses its own. They are the trailing tensors of the stack's `Params`, saved
  in checkpoints beside the weights.
- **Dropout inside your module** (`nn.Dropout`, `nn.Dropout1d/2d/3d`) draws each member's masks
  from that member's own stream (`streams.Noise`, seeded from its seed), not from torch's global
  generator: a rerun and a resume draw the same masks, and a member's masks never depend on its
  stack. So a member's masks differ from those the same module would draw trained alone after
  `torch.manual_seed` (everything else is the same).

What a stack cannot run correctly is refused with one line, never trained silently wrong.
"""

from __future__ import annotations

import copy
import math
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
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)  # masks we can draw per member
_RANDOM = (nn.modules.dropout._DropoutNd,)  # every random layer torch has


def _name(factory: Factory) -> str:
    return getattr(factory, "__qualname__", type(factory).__name__)


def check_module(module: nn.Module, where: str) -> None:
    """One clear line for a module kdbench cannot stack correctly."""
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{where} returned {type(module).__name__}, not an nn.Module")
    other = [n for n, m in module.named_modules()
             if isinstance(m, _RANDOM) and not isinstance(m, _DROPOUT)]  # fmt: skip
    if other:
        raise ConfigError(
            f"{where} has random layers kdbench cannot draw per member ({', '.join(other[:3])},"
            f" {type(module.get_submodule(other[0])).__name__}); use nn.Dropout or nn.Dropout2d"
        )
    if not list(module.parameters()):
        raise ConfigError(f"{where} has no parameters to train")


def dropout_refused(model: StackModel) -> str:
    """Why a module cannot take the engine's dropout, and the fix."""
    return (
        f"dropout needs a sequential conv or dense net, and {model!r} is not one (its own"
        " forward); set --teacher-dropout 0 --teacher-input-dropout 0"
    )


class _MemberDropout(nn.Module):
    """An `nn.Dropout` (or its channel-wise kin) inside the stack: in training it applies the
    keep mask it is given as its `keep` buffer (each member's own, from `streams.Noise`), scaled
    by 1 / (1 - p) as torch's dropout is; in evaluation it passes its input through."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.register_buffer("keep", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        return x * self.keep / (1 - self.p)


class Ensemble(nn.Module):
    """An ensemble as the study evaluates it: the mean of its members' probabilities, returned
    as logits like every other model: their log, so `softmax` of the output is that mean and
    `argmax` is the ensemble's prediction."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ensemble_probs(torch.stack([m(x) for m in self.members])).log()


class ModuleStack(StackModel):
    """A stack of members built by `factory`; a member's forward takes inputs `[N,
    *input_shape]` and returns `[N, classes]` logits. `compiled`: the conv fast path may build
    and use the compiled CPU kernels (`native`): for training, not for reading a run folder."""

    def __init__(
        self, factory: Factory, input_shape, n_classes: int, compiled: bool = False
    ):  # fmt: skip
        self.factory, self.input_shape = factory, tuple(int(v) for v in input_shape)
        self.n_features = math.prod(self.input_shape)
        template = self._build(0).eval()
        where = f"the factory {_name(factory)}"
        if self._build(1) is template:  # each member must be its own module
            raise ConfigError(
                f"{where} returns the same module on every call, so every member would share"
                " one set of weights; return a new nn.Module from each call (pass the class)"
            )
        seen: dict[str, tuple[int, ...]] = {}  # each dropout layer's input shape, per input

        def record(name):
            def hook(_module, args, _output):
                seen.setdefault(name, tuple(args[0].shape[1:]))

            return hook

        hooks = [m.register_forward_hook(record(n)) for n, m in template.named_modules()
                 if isinstance(m, _DROPOUT)]  # fmt: skip
        shape = ", ".join(map(str, self.input_shape))
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as flops:
                dtype = next(template.parameters()).dtype
                out = template(torch.zeros(1, *self.input_shape, dtype=dtype))
        except Exception as exc:  # any failure of your forward: say which and on what
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                f"{where} fails on inputs [N, {shape}] float32: {first}; its forward must"
                " take the dataset's inputs"
            ) from None
        finally:
            for h in hooks:
                h.remove()
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, n_classes):
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"{where} gives outputs of shape {got} for one input; it must give"
                f" [N, {n_classes}] logits (one per class)"
            )
        try:  # and a batch of more than one: a view(1, -1) mistake shows only here
            with torch.no_grad():
                two = template(torch.ones(2, *self.input_shape, dtype=dtype))
            bad = not isinstance(two, torch.Tensor) or tuple(two.shape) != (2, n_classes)
            got = list(two.shape) if isinstance(two, torch.Tensor) else type(two).__name__
        except Exception as exc:
            bad, got = True, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if bad:
            raise ConfigError(
                f"{where} works on one input but not on a batch of two ({got}); its forward"
                f" must take [N, {shape}] and give [N, {n_classes}]"
            )
        self._macs = flops.get_total_flops() // 2  # a multiply-accumulate is two flops
        self.names = [n for n, _ in template.named_parameters()]
        self.buffers = [n for n, b in template.named_buffers()]
        self._tensors = self.names + self.buffers  # the stack's tensors, in `Params` order
        self._base = copy.deepcopy(template).to("meta")  # the architecture, without weights
        self.dropout_shapes = {}  # each dropout layer's keep mask per input (its own draws)
        for n, mod in list(self._base.named_modules()):
            if isinstance(mod, _DROPOUT) and n in seen:
                s = tuple(seen[n])
                self.dropout_shapes[n] = (
                    mod.p,
                    s if type(mod) is nn.Dropout else s[:1] + (1,) * (len(s) - 1),
                )
                self._base.set_submodule(n, _MemberDropout(mod.p).to("meta"))
        # the conv fast path, where it applies (not with dropout inside: vmap draws it)
        self.plan = (
            None if self.dropout_shapes else plan(self._base, self._tensors, self.input_shape)
        )
        convs = any(isinstance(m, nn.Conv2d) for m in self._base.modules())
        self._wants_direct = compiled and self.plan is not None and convs
        self._direct: Plan | None = None
        self._decided = False

    def __repr__(self) -> str:
        return f"ModuleStack({_name(self.factory)})"

    def _build(self, seed: int) -> nn.Module:
        where = f"the factory {_name(self.factory)}"
        with torch.random.fork_rng(devices=[]):  # the caller's random state stays its own
            torch.manual_seed(int(seed))
            try:
                module = self.factory()
            except Exception as exc:  # your constructor's failure: one line, not a traceback
                first = str(exc).splitlines()[0] if str(exc) else ""
                raise ConfigError(
                    f"{where} raised {type(exc).__name__}: {first[:200]}; it must build an"
                    " nn.Module when called with no arguments"
                ) from None
        check_module(module, where)
        return module

    def init(self, seeds, device="cpu") -> Params:
        members = [self._build(s).to(device) for s in seeds]
        params, buffers = stack_module_state(members)
        return [params[n].detach().clone() for n in self.names] + [
            buffers[n].clone() for n in self.buffers
        ]

    def buffer_names(self) -> list[str]:
        return list(self.buffers)

    @property
    def random(self) -> bool:
        return bool(self.dropout_shapes)

    @property
    def droppable(self) -> bool:
        return self.plan is not None

    @property
    def direct(self) -> Plan | None:
        """The compiled conv path, where this stack may use it (`compiled`) and the kernels
        build (asked once, on first use)."""
        if self._wants_direct and not self._decided:
            ok = native.kernels() is not None
            self._direct = plan(self._base, self._tensors, self.input_shape, DIRECT) if ok else None
            self._decided = True
        return self._direct

    def prepare(self) -> None:
        _ = self.direct

    def _fast(self, x: torch.Tensor) -> Plan | None:
        """The fast path for inputs `x`: the compiled one for float32 on the CPU, else the
        im2col plan (None: vmap)."""
        if x.device.type == "cpu" and x.dtype == torch.float32 and self.direct is not None:
            return self.direct
        return self.plan

    def _run(self, params: Params, x: torch.Tensor, training: bool, dropout=None, noise=None):
        """Logits of own batches `[M, B, features]` or shared inputs `[N, features]`: through
        the fast path where there is one, else (and shared inputs off the compiled path)
        vmap. `dropout` needs the fast path (`step` refuses it otherwise)."""
        shared = x.dim() == 2
        fast = self._fast(x)
        if fast is not None and (not shared or fast is self._direct):
            if shared:  # every member on the same inputs: the layout copy makes them its own
                x = x.expand(len(params[0]), *x.shape)
            return fast.run(params, x, dropout, training)
        x = x.reshape(*x.shape[: 1 if shared else 2], *self.input_shape)
        keep = self._masks(noise, x.shape[1], x.device) if training and noise else {}
        names = self._tensors + [f"{n}.keep" for n in keep]
        self._base.train(training)

        def one(member_tensors, xi):
            return functional_call(self._base, dict(zip(names, member_tensors, strict=True)),
                                   (xi,))  # fmt: skip

        tensors = (*params, *keep.values())
        return vmap(one, in_dims=(0, None if shared else 0))(tensors, x)

    def _masks(self, noise, batch: int, device="cpu") -> dict[str, torch.Tensor]:
        """Each dropout layer's keep masks `[M, B, ...]`, each member's from its own stream."""
        return {
            n: (noise.rand((batch, *s)) >= p).float().to(device)
            for n, (p, s) in self.dropout_shapes.items()
        }

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return self._run(params, x, training=False)

    def step(self, params, opt, x, loss_of, dropout=None, noise=None) -> torch.Tensor:
        if dropout is not None and self.plan is None:
            raise ConfigError(dropout_refused(self))
        n = len(self.names)  # the trainable tensors; the buffers follow
        leaves = [p.detach().requires_grad_() for p in params[:n]]
        loss = loss_of(self._run(leaves + params[n:], x, True, dropout, noise))
        # backward, not autograd.grad: teachers trained along (`teachers.FamilyCopies`) get
        # their gradients from the same pass
        loss.sum().backward()
        opt.count_step()
        # the fused kernel walks gradient and weight alike: vmap's may come transposed
        opt.update_all(params[:n], [leaf.grad.contiguous() for leaf in leaves])
        return loss.detach()

    @torch.no_grad()
    def logits(self, params: Params, x: torch.Tensor, chunk: int = 128) -> torch.Tensor:
        """As the base class, in chunks of 128 inputs: a conv net's activations for thousands of
        images at once leave the cache (measured: 500 validation images twice as fast)."""
        return super().logits(params, x, chunk)

    def member(self, params: Params, m: int) -> nn.Module:
        module = self._build(0)
        tensors = dict(zip(self._tensors, params, strict=True))
        with torch.no_grad():
            for name, t in [*module.named_parameters(), *module.named_buffers()]:
                if name in tensors:
                    t.copy_(tensors[name][m])
        return module.to(params[0].device).eval()

    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def hidden_weights(self, params: Params) -> list[torch.Tensor]:
        # conv and dense weights are [M, out, in, ...]; the last one is the output layer's
        weights = [p for p in self.trainable(params) if p.dim() >= 3]
        return weights[:-1]

    def parameters_per_member(self) -> int:
        return sum(p.numel() for p in self._base.parameters())  # shapes only: no member built

    def macs_per_image(self) -> int:
        return int(self._macs)
