"""Route parameters to optimizers: binary weights to Bop, everything else to Adam.

:class:`CaseOptimizer` follows Larq's ``CaseOptimizer``: each parameter goes to the one
optimizer whose predicate claims it (or to the default optimizer when none does), and the
whole set behaves as one optimizer (``step``, ``zero_grad``, ``state_dict``,
``load_state_dict``). :func:`make_optimizer` builds the usual split from a model: binary
weights (layers whose ``export_spec().weight_bits == 1``, see
:mod:`xnorkit.optim.binary`) to Bop / Bop2ndOrder (or to a latent-weight optimizer), and
BatchNorm, biases and float layers to Adam.

Example:
    >>> import torch
    >>> from xnorkit.optim import make_optimizer, ExponentialDecay
    >>> model = torch.nn.Linear(4, 2)  # a real model has xnorkit.nn layers
    >>> opt = make_optimizer(model, binary="bop", float="adam",
    ...                      float_kwargs={"lr": 1e-2}, require_binary=False)
"""

from __future__ import annotations

import builtins
import functools
from typing import Any, Callable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from .binary import init_binary_, is_binary_param, named_binary_parameters
from .bop import Bop, Bop2ndOrder
from .latent import glorot_lr_scale as _glorot_lr_scale
from .schedules import ScheduleLR

__all__ = ["CaseOptimizer", "make_optimizer", "OPTIMIZERS"]

Factory = Callable[[list], Optimizer]

#: Optimizer names understood by :func:`make_optimizer` (case-insensitive).
OPTIMIZERS: dict[str, type[Optimizer]] = {
    "bop": Bop,
    "bop2ndorder": Bop2ndOrder,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}
_FLIP = (Bop, Bop2ndOrder)


def _named(params) -> list[tuple[str, torch.Tensor]]:
    """Normalise a model / iterable of params / (name, param) pairs to named params."""
    if isinstance(params, nn.Module):
        return list(params.named_parameters())
    if isinstance(params, torch.Tensor):
        raise TypeError("CaseOptimizer expects a model or an iterable of parameters, got a "
                        "single tensor (wrap it in a list)")
    out, seen = [], set()
    for i, item in enumerate(params):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor):
            name, p = item
        elif isinstance(item, torch.Tensor):
            name, p = f"params[{i}]", item
        else:
            raise TypeError(f"CaseOptimizer: params[{i}] is a {type(item).__name__}; expected a "
                            "tensor or a (name, tensor) pair (param-group dicts are not "
                            "routed: give the groups to the optimizer factories instead)")
        if id(p) in seen:
            raise ValueError(f"CaseOptimizer: parameter {name!r} appears more than once")
        seen.add(id(p))
        out.append((name, p))
    return out


class CaseOptimizer:
    """Several optimizers acting as one, each owning the parameters its predicate claims.

    Every parameter is claimed by exactly one case: a parameter claimed by two predicates is
    an error, and an unclaimed one goes to ``default_optimizer`` (an error when there is
    none). Cases whose predicate claims nothing create no optimizer (their slot is None).

    Args:
        params: a model (its ``named_parameters()``), or an iterable of parameters or of
            ``(name, parameter)`` pairs.
        *cases: ``(predicate, factory)`` pairs. ``predicate(param) -> bool``;
            ``factory(list_of_params) -> torch.optim.Optimizer``, e.g. ``Bop``,
            ``functools.partial(torch.optim.Adam, lr=1e-3)``.
        default_optimizer: factory for the parameters no predicate claims, or None.

    Raises:
        ValueError: a parameter claimed by several predicates, or by none without a default.
        TypeError: malformed cases, or a factory that does not return an Optimizer.

    Attributes:
        optimizers: the sub-optimizers that exist, cases first, then the default.
        slots: one entry per case plus one for the default: the optimizer or None.
        assignment: parameter name -> slot index.
    """

    def __init__(self, params, *cases: tuple[Callable[[torch.Tensor], bool], Factory],
                 default_optimizer: Factory | None = None) -> None:
        for i, case in enumerate(cases):
            if not (isinstance(case, (tuple, list)) and len(case) == 2
                    and callable(case[0]) and callable(case[1])):
                raise TypeError(f"CaseOptimizer: case {i} must be a (predicate, factory) pair of "
                                f"callables, got {case!r}")
        if default_optimizer is not None and not callable(default_optimizer):
            raise TypeError(f"CaseOptimizer: default_optimizer must be a factory, got "
                            f"{default_optimizer!r}")
        named = _named(params)
        buckets: list[list[torch.Tensor]] = [[] for _ in range(len(cases) + 1)]
        self.assignment: dict[str, int] = {}
        for name, p in named:
            claims = [i for i, (pred, _) in enumerate(cases) if pred(p)]
            if len(claims) > 1:
                raise ValueError(f"CaseOptimizer: parameter {name!r} (shape {tuple(p.shape)}) is "
                                 f"claimed by cases {claims}; each parameter must be claimed by "
                                 "exactly one optimizer")
            if not claims:
                if default_optimizer is None:
                    raise ValueError(f"CaseOptimizer: parameter {name!r} (shape {tuple(p.shape)}) "
                                     "is claimed by no case and there is no default_optimizer")
                claims = [len(cases)]
            buckets[claims[0]].append(p)
            self.assignment[name] = claims[0]
        factories = [f for _, f in cases] + [default_optimizer]
        self.slots: list[Optimizer | None] = []
        for i, (factory, bucket) in enumerate(zip(factories, buckets)):
            if not bucket:
                self.slots.append(None)
                continue
            opt = factory(bucket)
            if not isinstance(opt, Optimizer):
                raise TypeError(f"CaseOptimizer: factory of slot {i} returned "
                                f"{type(opt).__name__}, expected a torch.optim.Optimizer")
            self.slots.append(opt)
        self.schedulers: list[LRScheduler] = []

    # -- introspection ----------------------------------------------------------------
    @property
    def optimizers(self) -> list[Optimizer]:
        """The sub-optimizers that exist (cases in order, then the default)."""
        return [o for o in self.slots if o is not None]

    @property
    def param_groups(self) -> list[dict]:
        """All param groups of all sub-optimizers (the dicts themselves, not copies)."""
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:
        """Per-parameter state of all sub-optimizers merged (read-only view)."""
        out: dict = {}
        for o in self.optimizers:
            out.update(o.state)
        return out

    def optimizer_for(self, param: torch.Tensor) -> Optimizer:
        """The sub-optimizer that owns ``param``.

        Raises:
            KeyError: ``param`` is not managed by this CaseOptimizer.
        """
        for o in self.optimizers:
            for g in o.param_groups:
                if any(q is param for q in g["params"]):
                    return o
        raise KeyError(f"parameter of shape {tuple(param.shape)} is not managed by this CaseOptimizer")

    def attach_scheduler(self, scheduler: LRScheduler) -> LRScheduler:
        """Step ``scheduler`` after every :meth:`step` and save it in :meth:`state_dict`.

        Raises:
            ValueError: the scheduler drives an optimizer that is not one of ours.
        """
        if not any(scheduler.optimizer is o for o in self.optimizers):
            raise ValueError("attach_scheduler: the scheduler's optimizer is not a sub-optimizer "
                             "of this CaseOptimizer")
        self.schedulers.append(scheduler)
        return scheduler

    # -- optimizer API ------------------------------------------------------------------
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """Evaluate ``closure`` once (if given), step every sub-optimizer, then the schedulers.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self.optimizers:
            o.step()
        for s in self.schedulers:
            s.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``zero_grad`` on every sub-optimizer."""
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """``{"optimizers": [state dict or None per slot], "schedulers": [...]}``."""
        return {
            "optimizers": [None if o is None else o.state_dict() for o in self.slots],
            "schedulers": [s.state_dict() for s in self.schedulers],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; training then continues exactly.

        Raises:
            ValueError: the checkpoint's layout (slots, groups, schedulers) differs from this
                CaseOptimizer's, i.e. the parameters are routed differently.
        """
        if not isinstance(state_dict, dict) or "optimizers" not in state_dict:
            raise ValueError("CaseOptimizer.load_state_dict: expected a dict with 'optimizers' "
                             f"(from CaseOptimizer.state_dict), got {type(state_dict).__name__}")
        saved = state_dict["optimizers"]
        if len(saved) != len(self.slots):
            raise ValueError(f"CaseOptimizer.load_state_dict: checkpoint has {len(saved)} slots, "
                             f"this optimizer has {len(self.slots)}")
        for i, (o, sd) in enumerate(zip(self.slots, saved)):
            if (o is None) != (sd is None):
                have = "no optimizer" if o is None else type(o).__name__
                raise ValueError(f"CaseOptimizer.load_state_dict: slot {i} is "
                                 f"{'empty' if sd is None else 'used'} in the checkpoint but holds "
                                 f"{have} here (parameters routed differently)")
        scheds = state_dict.get("schedulers", [])
        if len(scheds) != len(self.schedulers):
            raise ValueError(f"CaseOptimizer.load_state_dict: checkpoint has {len(scheds)} "
                             f"schedulers, this optimizer has {len(self.schedulers)}")
        for i, (o, sd) in enumerate(zip(self.slots, saved)):
            if o is not None:
                try:
                    o.load_state_dict(sd)
                except ValueError as exc:
                    raise ValueError(f"CaseOptimizer.load_state_dict: slot {i} "
                                     f"({type(o).__name__}): {exc}") from exc
        for s, sd in zip(self.schedulers, scheds):
            s.load_state_dict(sd)

    def __repr__(self) -> str:
        parts = []
        for i, o in enumerate(self.slots):
            label = "default" if i == len(self.slots) - 1 else f"case {i}"
            n = 0 if o is None else sum(len(g["params"]) for g in o.param_groups)
            parts.append(f"  {label}: {type(o).__name__ if o else None} ({n} tensors)")
        return "CaseOptimizer(\n" + "\n".join(parts) + "\n)"


def _resolve_cls(spec, role: str):
    if isinstance(spec, str):
        key = spec.lower()
        if key not in OPTIMIZERS:
            raise ValueError(f"make_optimizer: unknown {role} optimizer {spec!r}; known: "
                             f"{', '.join(OPTIMIZERS)} (or pass a factory)")
        return OPTIMIZERS[key]
    if callable(spec):
        return spec
    raise TypeError(f"make_optimizer: {role} must be an optimizer name or a factory, got {spec!r}")


def _torch_factory(cls, kwargs: dict, scale_of: Callable[[torch.Tensor], float] | None,
                   schedulers: list, kind: str):
    """Factory for a learning-rate optimizer, with optional per-tensor LR scale and LR schedule."""
    kwargs = dict(kwargs)
    lr = kwargs.pop("lr", None)

    def factory(params: list):
        if scale_of is None:
            groups = [{"params": params, "lr_scale": 1.0, "kind": kind}]
        else:
            groups = [{"params": [p], "lr_scale": scale_of(p), "kind": kind} for p in params]
        scheduled = callable(lr)
        for g in groups:
            if lr is not None:
                base = lr(0) if scheduled else lr
                g["lr"] = base * g["lr_scale"]
            elif g["lr_scale"] != 1.0:
                raise ValueError("make_optimizer: glorot_lr_scale needs an explicit 'lr' in the "
                                 "kwargs of the latent-weight optimizer")
        opt = cls(groups, **kwargs)
        if scheduled:
            schedulers.append(ScheduleLR(opt, lr))
        return opt

    return factory


def make_optimizer(model: nn.Module, binary: str | Factory = "bop",
                   binary_kwargs: dict | None = None, float: str | Factory = "adam",  # noqa: A002
                   float_kwargs: dict | None = None, *, glorot_lr_scale: bool = False,
                   clip_latent: builtins.float | None = None, init_binary: bool = True,
                   require_binary: bool = True) -> CaseOptimizer:
    """Binary weights to one optimizer, all other parameters to another, as one object.

    Binary weights are found through the layers' export specs (``weight_bits == 1``) or the
    :func:`xnorkit.optim.mark_binary` tag (see :func:`xnorkit.optim.binary_parameters`).

    - ``binary="bop"`` / ``"bop2ndorder"`` (Helwegen et al. 2019; Suarez-Ramirez et al.
      2021): ``binary_kwargs`` go to :class:`Bop` / :class:`Bop2ndOrder` (``threshold``,
      ``gamma``, ``sigma``, ``correction``, ... — numbers or schedules). With
      ``init_binary`` the binary weights are set to sign0 now, so the first forward pass is
      already binary.
    - ``binary="adam"`` / ``"adamw"`` / ``"sgd"``: latent-weight training (BinaryNet,
      Courbariaux et al. 2016); ``glorot_lr_scale=True`` multiplies each binary weight's LR by
      1/sqrt(1.5/(fan_in+fan_out)), ``clip_latent=1.0`` clips them to [-1, 1] after every
      step.
    - ``float``: ``"adam"`` (default), ``"adamw"``, ``"sgd"`` or a factory, with
      ``float_kwargs``.

    For the learning-rate optimizers ``lr`` may be a schedule (callable of the step); a
    :class:`xnorkit.optim.ScheduleLR` is then attached to the returned CaseOptimizer and
    stepped with it (update k uses ``lr(k)``), and saved in its state dict.

    Args:
        model: the network.
        binary: optimizer name or factory ``f(params) -> Optimizer`` for binary weights.
        binary_kwargs: keyword arguments of the binary optimizer.
        float: optimizer name or factory for every other parameter.
        float_kwargs: keyword arguments of the float optimizer.
        glorot_lr_scale: BinaryNet's per-layer LR scale (latent-weight optimizers only).
        clip_latent: clip binary weights to [-c, c] after each step (latent-weight only).
        init_binary: with Bop-type optimizers, binarize the binary weights immediately.
        require_binary: raise when ``binary`` is a Bop-type optimizer and the model has no
            binary weights (usually a model whose layers do not declare ``export_spec``).

    Returns:
        A :class:`CaseOptimizer` with the binary optimizer in slot 0 and the float one as
        default. Param groups built here carry ``kind`` (``"binary"`` for Bop-type groups,
        ``"latent"`` for latent binary weights, ``"float"`` for the rest) and, for the
        learning-rate optimizers, ``lr_scale``.

    Raises:
        ValueError: unknown optimizer names, a Bop-type ``float`` optimizer, options that do
            not apply to the chosen optimizer, or no binary weights (see ``require_binary``).
    """
    float_spec = float
    binary_kwargs = dict(binary_kwargs or {})
    float_kwargs = dict(float_kwargs or {})
    bcls = _resolve_cls(binary, "binary")
    fcls = _resolve_cls(float_spec, "float")
    if isinstance(fcls, type) and issubclass(fcls, _FLIP):
        raise ValueError(f"make_optimizer: float={float_spec!r}: {fcls.__name__} only trains binary "
                         "weights; use adam, adamw or sgd for the other parameters")
    flip = isinstance(bcls, type) and issubclass(bcls, _FLIP)
    if flip and (glorot_lr_scale or clip_latent is not None):
        raise ValueError("make_optimizer: glorot_lr_scale and clip_latent apply to latent-weight "
                         f"training; {bcls.__name__} keeps weights in {{-1, +1}}")
    if clip_latent is not None and not (isinstance(clip_latent, (int, builtins.float))
                                        and clip_latent > 0):
        raise ValueError(f"make_optimizer: clip_latent must be a positive number, got {clip_latent!r}")

    binary_params = [p for _, p in named_binary_parameters(model)]  # also tags them
    if flip and not binary_params and require_binary:
        raise ValueError(f"make_optimizer: binary={binary!r} but the model has no binary weights "
                         "(no layer with export_spec().weight_bits == 1 and no parameter tagged "
                         "with xnorkit.optim.mark_binary)")
    if flip and init_binary:
        init_binary_(binary_params)

    schedulers: list = []
    if flip:
        def bfactory(params: list):
            return bcls([{"params": params, "kind": "binary"}], **binary_kwargs)
    elif isinstance(bcls, type) and issubclass(bcls, Optimizer):
        scale = (lambda p: _glorot_lr_scale(p) if p.dim() >= 2 else 1.0) if glorot_lr_scale else None
        bfactory = _torch_factory(bcls, binary_kwargs, scale, schedulers, "latent")
    else:
        if glorot_lr_scale:
            raise ValueError("make_optimizer: glorot_lr_scale needs a named optimizer, not a factory")
        bfactory = functools.partial(bcls, **binary_kwargs)
    if isinstance(fcls, type) and issubclass(fcls, Optimizer):
        ffactory = _torch_factory(fcls, float_kwargs, None, schedulers, "float")
    else:
        ffactory = functools.partial(fcls, **float_kwargs)

    opt = CaseOptimizer(model, (is_binary_param, bfactory), default_optimizer=ffactory)
    for s in schedulers:
        opt.attach_scheduler(s)
    if clip_latent is not None and opt.slots[0] is not None:
        bound = builtins.float(clip_latent)

        def _clip(optimizer, args, kwargs):
            with torch.no_grad():
                for g in optimizer.param_groups:
                    for p in g["params"]:
                        p.clamp_(-bound, bound)

        opt.slots[0].register_step_post_hook(_clip)
    return opt
