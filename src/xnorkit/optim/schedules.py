"""Step-based hyperparameter schedules and a torch LR-scheduler adapter.

A schedule is a callable ``schedule(step) -> float`` where ``step`` is the optimizer
iteration counted from 0 (the first update uses ``schedule(0)``), as in Keras'
``LearningRateSchedule`` evaluated at ``optimizer.iterations``. The same objects drive
every scheduled hyperparameter of xnorkit: Bop's threshold tau and adaptivity rate gamma,
Bop2ndOrder's sigma (these optimizers evaluate them themselves, see
:class:`xnorkit.optim.Bop`) and the learning rate of a float optimizer (through
:class:`ScheduleLR`). Any callable of the step works as well; the classes here add
validation, a readable ``repr``, equality and pickling (they are allow-listed for
``torch.load(..., weights_only=True)``, so checkpoints holding them stay loadable).
Schedules are stored in optimizer state dicts, so a run that saves checkpoints needs
picklable ones: these classes or module-level functions, not lambdas.

Formulas (Keras semantics, spec seeds.md §7.3):

- :class:`Constant`: v(t) = v
- :class:`ExponentialDecay`: v(t) = v0 * rate ** (t / D), with t / D replaced by
  floor(t / D) when ``staircase`` (the default here).
- :class:`PolynomialDecay`: v(t) = (v_start - v_end) * (1 - min(t, D) / D) ** power + v_end,
  i.e. a linear ramp for ``power=1`` that then stays at ``v_end``.

BinaryNet's per-epoch exponential LR decay from ``LR_start`` to ``LR_fin`` over ``E``
epochs (Courbariaux et al. 2016) is
``ExponentialDecay(LR_start, steps_per_epoch, (LR_fin / LR_start) ** (1 / E))``.

Example:
    >>> import torch
    >>> from xnorkit.optim import ExponentialDecay, ScheduleLR
    >>> w = torch.nn.Parameter(torch.zeros(3))
    >>> opt = torch.optim.Adam([w], lr=1.0)
    >>> sched = ScheduleLR(opt, ExponentialDecay(0.01, decay_steps=100, rate=0.1))
    >>> opt.param_groups[0]["lr"]
    0.01
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from numbers import Real
from typing import Callable, Sequence, Union

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "Schedule",
    "Constant",
    "ExponentialDecay",
    "PolynomialDecay",
    "ScheduleLR",
    "HyperParameter",
    "resolve",
]

#: A hyperparameter: a number, or a callable of the (0-based) optimizer step.
HyperParameter = Union[float, Callable[[int], float]]


def _check_step(step: int) -> int:
    if isinstance(step, torch.Tensor) and step.numel() == 1 and not step.is_floating_point():
        step = step.item()
    if isinstance(step, bool):
        raise TypeError(f"schedule step must be an integer, got {step!r}")
    try:
        step = operator.index(step)
    except TypeError:
        raise TypeError(f"schedule step must be an integer, got {step!r}") from None
    if step < 0:
        raise ValueError(f"schedule step must be >= 0, got {step}")
    return step


def _real(name: str, value, cls: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{cls}: {name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{cls}: {name} must be finite, got {value}")
    return value


class Schedule:
    """Base class of the step-based schedules: ``schedule(step) -> float``."""

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Schedule):
    """The constant schedule v(t) = ``value``.

    Args:
        value: the value at every step.
    """

    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _real("value", self.value, "Constant"))

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.value


@dataclass(frozen=True)
class ExponentialDecay(Schedule):
    """Exponential decay: v(t) = v0 * rate ** (t / D), or rate ** floor(t / D) if staircase.

    Same semantics as Keras' ``ExponentialDecay``, which seed 004 (Suarez-Ramirez et al.
    2021, arXiv 2104.05124) uses for tau, gamma, sigma and the Adam LR ("x0.1 every 100
    epochs": ``decay_steps = steps_per_epoch * 100``, ``rate = 0.1``).

    Args:
        initial_value: v0, the value at step 0.
        decay_steps: D > 0, in optimizer steps (may be fractional).
        rate: the factor applied per ``decay_steps``; must be > 0.
        staircase: decay in discrete jumps (floor) rather than continuously.

    Raises:
        ValueError: ``decay_steps <= 0`` or ``rate <= 0``.
    """

    initial_value: float
    decay_steps: float
    rate: float
    staircase: bool = True

    def __post_init__(self) -> None:
        cls = "ExponentialDecay"
        object.__setattr__(self, "initial_value", _real("initial_value", self.initial_value, cls))
        d = _real("decay_steps", self.decay_steps, cls)
        r = _real("rate", self.rate, cls)
        if d <= 0:
            raise ValueError(f"{cls}: decay_steps must be > 0, got {d}")
        if r <= 0:
            raise ValueError(f"{cls}: rate must be > 0, got {r}")
        object.__setattr__(self, "decay_steps", d)
        object.__setattr__(self, "rate", r)
        object.__setattr__(self, "staircase", bool(self.staircase))

    def __call__(self, step: int) -> float:
        t = _check_step(step) / self.decay_steps
        if self.staircase:
            t = math.floor(t)
        return self.initial_value * self.rate ** t


@dataclass(frozen=True)
class PolynomialDecay(Schedule):
    """Polynomial decay: v(t) = (v_start - v_end) * (1 - min(t, D) / D) ** power + v_end.

    Keras' ``PolynomialDecay`` without cycling. With ``power=1`` this is the linear ramp
    of seed 004's ``testPoly`` / ``_CIFAR`` / ``_ImageNet`` sets (spec §7.5); after D steps
    the value stays at ``end_value``. ``end_value`` may exceed ``initial_value`` (seed 004
    ramps sigma and tau *up*).

    Args:
        initial_value: v_start, the value at step 0.
        decay_steps: D > 0, in optimizer steps (may be fractional).
        end_value: v_end, the value from step D on.
        power: exponent of the ramp, > 0.

    Raises:
        ValueError: ``decay_steps <= 0`` or ``power <= 0``.
    """

    initial_value: float
    decay_steps: float
    end_value: float
    power: float = 1.0

    def __post_init__(self) -> None:
        cls = "PolynomialDecay"
        object.__setattr__(self, "initial_value", _real("initial_value", self.initial_value, cls))
        object.__setattr__(self, "end_value", _real("end_value", self.end_value, cls))
        d = _real("decay_steps", self.decay_steps, cls)
        p = _real("power", self.power, cls)
        if d <= 0:
            raise ValueError(f"{cls}: decay_steps must be > 0, got {d}")
        if p <= 0:
            raise ValueError(f"{cls}: power must be > 0, got {p}")
        object.__setattr__(self, "decay_steps", d)
        object.__setattr__(self, "power", p)

    def __call__(self, step: int) -> float:
        t = min(_check_step(step), self.decay_steps) / self.decay_steps
        return (self.initial_value - self.end_value) * (1.0 - t) ** self.power + self.end_value


def resolve(value: HyperParameter, step: int, name: str = "hyperparameter") -> float:
    """The value of ``value`` (a number or a schedule) at optimizer step ``step``.

    Raises:
        TypeError: ``value`` is neither a real number nor a callable returning one.
        ValueError: the result is not finite.
    """
    if callable(value):
        out = value(step)
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            out = out.item()
        if isinstance(out, bool) or not isinstance(out, Real):
            raise TypeError(f"{name}: schedule {value!r} returned {out!r} at step {step}, "
                            "expected a real number")
    else:
        out = value
        if isinstance(out, bool) or not isinstance(out, Real):
            raise TypeError(f"{name} must be a real number or a callable schedule of the step, "
                            f"got {value!r}")
    out = float(out)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out} at step {step}")
    return out


class ScheduleLR(LRScheduler):
    """A torch LR scheduler that sets each group's ``lr`` to ``schedule(step)``.

    This adapts the step-based schedules above (or any callable of the step) to a float
    optimizer such as Adam. Call ``scheduler.step()`` after every ``optimizer.step()``
    (the usual torch order): optimizer update number k (0-based) then runs with
    ``schedule(k)``, matching Keras' schedules evaluated at ``optimizer.iterations``.

    A group that carries an ``lr_scale`` entry (see
    :func:`xnorkit.optim.binarynet_param_groups`) gets ``lr = lr_scale * schedule(step)``,
    which is BinaryNet's per-layer Glorot scaling of a scheduled learning rate.

    Unlike ``LambdaLR`` (which multiplies a base LR by a factor), the schedule gives the
    learning rate itself, so schedules starting at 0 (warm-up) work and the value logged is
    the value the seeds' hyperparameter tables list.

    Args:
        optimizer: a ``torch.optim.Optimizer``.
        schedule: one schedule for all groups, or a sequence with one per group.
        last_epoch: index of the last step taken (``-1`` for a fresh run), as in torch.

    Raises:
        ValueError: a sequence whose length differs from the number of param groups.
        TypeError: a schedule that is not callable.
    """

    def __init__(self, optimizer: torch.optim.Optimizer,
                 schedule: Callable[[int], float] | Sequence[Callable[[int], float]],
                 last_epoch: int = -1) -> None:
        if isinstance(schedule, (list, tuple)):
            schedules = list(schedule)
            if len(schedules) != len(optimizer.param_groups):
                raise ValueError(f"ScheduleLR: got {len(schedules)} schedules for "
                                 f"{len(optimizer.param_groups)} parameter groups")
        else:
            schedules = [schedule] * len(optimizer.param_groups)
        for s in schedules:
            if not callable(s):
                raise TypeError(f"ScheduleLR: schedule must be callable(step) -> float, got {s!r}")
        self.schedules = schedules
        super().__init__(optimizer, last_epoch)

    def _lrs(self, step: int) -> list[float]:
        return [resolve(s, step, "learning rate") * float(g.get("lr_scale", 1.0))
                for s, g in zip(self.schedules, self.optimizer.param_groups)]

    def get_lr(self) -> list[float]:  # noqa: D102 - torch API
        return self._lrs(max(self.last_epoch, 0))

    def _get_closed_form_lr(self) -> list[float]:
        return self._lrs(max(self.last_epoch, 0))


# Checkpoints store schedules inside optimizer/scheduler state dicts; allow-list them so
# that torch.load(..., weights_only=True) can read such checkpoints.
if hasattr(torch.serialization, "add_safe_globals"):
    torch.serialization.add_safe_globals([Constant, ExponentialDecay, PolynomialDecay])
