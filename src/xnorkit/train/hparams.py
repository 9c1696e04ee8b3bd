"""Hyperparameter sets: named, registered per model, overridable with ``k=v`` strings.

A set is an :class:`HParams` value. Sets are registered per model name with
:func:`register_hparams`, looked up with :func:`get_hparams`, and modified from the
command line with :func:`apply_overrides` (``--hparams "epochs=5,learning_rate=1e-3"``).
Keys of the ``model`` dict (the keyword arguments of ``get_model``) are overridden the
same way, either bare (``n_hidden=1024``) or prefixed (``model.n_hidden=1024``).

Scheduled hyperparameters (``learning_rate``, ``threshold``, ``gamma``, ``sigma``) each
have a start value ``X``, a kind ``X_schedule`` and an end value ``X_end`` or a factor
``X_decay``; see :func:`schedule_value` for the formulas.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from xnorkit.optim.schedules import Constant, ExponentialDecay, PolynomialDecay, Schedule

__all__ = [
    "CosineDecay",
    "make_schedule",
    "HParams",
    "SCHEDULED",
    "SCHEDULE_KINDS",
    "register_hparams",
    "get_hparams",
    "list_hparams",
    "apply_overrides",
    "parse_overrides",
    "schedule_value",
]

SCHEDULE_KINDS = ("constant", "step", "exponential", "linear", "cosine")
SCHEDULED = ("learning_rate", "threshold", "gamma", "sigma")
LOSSES = ("cross_entropy", "squared_hinge")
OPTIMIZERS = ("adam", "sgd", "bop", "bop2ndorder")


@dataclass
class HParams:
    """Everything that defines a training run besides the model name, dataset and seed.

    Attributes:
        epochs: training epochs.
        batch_size: global mini-batch size (split over data-parallel processes).
        loss: ``cross_entropy`` or ``squared_hinge`` (BinaryNet: mean over batch and classes
            of max(0, 1 - t*y)^2 with targets t in {-1, +1}).
        optimizer: ``adam`` / ``sgd`` for every parameter (latent-weight training), or
            ``bop`` / ``bop2ndorder`` for binary weights with ``adam`` for the rest.
        learning_rate: Adam/SGD learning rate at step 0 (the float/latent parameters).
        learning_rate_schedule / learning_rate_end / learning_rate_decay: its schedule.
        decay_epochs: period (``step``) or length (``linear``, ``cosine``, ``exponential``)
            of every schedule in epochs; ``None`` means ``epochs``.
        threshold, gamma, sigma (+ ``_schedule``, ``_end``, ``_decay``): Bop / Bop2ndOrder
            hyperparameters (tau, gamma, sigma of the spec, §7.3).
        bop_correction: Bop2ndOrder bias correction: ``none``, ``code`` (the seed's /gamma,
            /sigma) or ``adam``.
        momentum: SGD momentum; adam_betas: Adam betas; weight_decay: L2 on float parameters.
        l1: L1 penalty on all trainable parameters (seed 000's ``--reg``; 0 disables it).
        glorot_lr_scale: BinaryNet's per-layer learning-rate scale of latent binary weights.
        preprocess: batch recipe name (:mod:`xnorkit.data.transforms`).
        validation_size: hold out this many training samples for validation (0: none).
        eval_batch_size: batch size of evaluation passes.
        sync_batchnorm: convert BatchNorm to SyncBatchNorm under data parallelism.
        channels_last: run convolutions in NHWC memory format (about 1.5x faster on CPUs with
            oneDNN; the numbers are the same up to float rounding).
        model: keyword arguments for ``xnorkit.models.get_model``.
    """

    epochs: int = 100
    batch_size: int = 100
    loss: str = "cross_entropy"
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    learning_rate_schedule: str = "constant"
    learning_rate_end: float | None = None
    learning_rate_decay: float = 0.1
    decay_epochs: float | None = None
    threshold: float = 1e-6
    threshold_schedule: str = "constant"
    threshold_end: float | None = None
    threshold_decay: float = 0.1
    gamma: float = 1e-3
    gamma_schedule: str = "constant"
    gamma_end: float | None = None
    gamma_decay: float = 0.1
    sigma: float = 1e-3
    sigma_schedule: str = "constant"
    sigma_end: float | None = None
    sigma_decay: float = 0.1
    bop_correction: str = "none"
    momentum: float = 0.9
    adam_betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.0
    l1: float = 0.0
    glorot_lr_scale: bool = False
    preprocess: str = "default"
    validation_size: int = 0
    eval_batch_size: int = 1000
    sync_batchnorm: bool = False
    channels_last: bool = False
    model: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field when a value is out of its domain."""
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"hparams.{name}: expected {expected}, got {getattr(self, name)!r}")

        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise bad("epochs", "an integer >= 0")
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise bad("batch_size", "a positive integer")
        if self.loss not in LOSSES:
            raise bad("loss", " or ".join(LOSSES))
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", " | ".join(OPTIMIZERS))
        if self.bop_correction not in ("none", "code", "adam"):
            raise bad("bop_correction", "none | code | adam")
        for name in SCHEDULED:
            kind = getattr(self, f"{name}_schedule")
            if kind not in SCHEDULE_KINDS:
                raise bad(f"{name}_schedule", " | ".join(SCHEDULE_KINDS))
            if kind in ("exponential", "linear") and getattr(self, f"{name}_end") is None:
                raise bad(f"{name}_end", f"a value (needed by the {kind} schedule)")
            if getattr(self, name) < 0:
                raise bad(name, "a value >= 0")
        if self.decay_epochs is not None and self.decay_epochs <= 0:
            raise bad("decay_epochs", "a positive number or None")
        if self.validation_size < 0:
            raise bad("validation_size", "an integer >= 0")
        if self.eval_batch_size <= 0:
            raise bad("eval_batch_size", "a positive integer")
        if not isinstance(self.model, dict):
            raise bad("model", "a dict of get_model keyword arguments")

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "HParams":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown hparams keys {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "adam_betas" in d:
            d["adam_betas"] = tuple(d["adam_betas"])
        return cls(**d)

    def replace(self, **changes: Any) -> "HParams":
        """A copy with ``changes`` applied (``model`` is merged, not replaced)."""
        model = dict(self.model)
        model.update(changes.pop("model", {}) or {})
        return dataclasses.replace(self, model=model, **changes)


@dataclass(frozen=True)
class CosineDecay(Schedule):
    """Cosine decay: v(t) = v_end + (v0 - v_end) * (1 + cos(pi * min(t, D) / D)) / 2.

    Args:
        initial_value: v0, the value at step 0.
        decay_steps: D > 0, in optimizer steps.
        end_value: the value from step D on.
    """

    initial_value: float
    decay_steps: float
    end_value: float = 0.0

    def __post_init__(self) -> None:
        if not self.decay_steps > 0:
            raise ValueError(f"CosineDecay: decay_steps must be > 0, got {self.decay_steps}")

    def __call__(self, step: int) -> float:
        t = min(int(step), self.decay_steps) / self.decay_steps
        return self.end_value + (self.initial_value - self.end_value) * (1 + math.cos(math.pi * t)) / 2


def make_schedule(hp: HParams, name: str, steps_per_epoch: int) -> Schedule:
    """The schedule (a picklable callable of the optimizer step) of hyperparameter ``name``.

    With v0 = ``hp.<name>``, v1 = ``hp.<name>_end``, E = ``decay_epochs`` (default
    ``epochs``) and D = E x ``steps_per_epoch`` steps:

    - ``constant``: v0
    - ``step``: v0 * decay ** floor(step / D) (Keras ExponentialDecay, staircase; seed 004's
      "x0.1 every 100 epochs")
    - ``exponential``: v0 * (v1 / v0) ** (floor(step / steps_per_epoch) / E): multiplied by
      (v1 / v0) ** (1 / E) after every epoch, reaching v1 after E epochs (BinaryNet's
      LR_start -> LR_fin)
    - ``linear``: v0 + (v1 - v0) * min(step, D) / D (Keras PolynomialDecay, power 1)
    - ``cosine``: v1 + (v0 - v1) * (1 + cos(pi * min(step, D) / D)) / 2 (v1 = 0 when unset)

    Raises:
        ValueError: an exponential schedule without positive start and end values.
    """
    v0 = float(getattr(hp, name))
    kind = getattr(hp, f"{name}_schedule")
    if kind == "constant":
        return Constant(v0)
    spe = max(1, int(steps_per_epoch))
    d_epochs = float(hp.decay_epochs if hp.decay_epochs is not None else max(hp.epochs, 1))
    d_steps = d_epochs * spe
    if kind == "step":
        return ExponentialDecay(v0, d_steps, float(getattr(hp, f"{name}_decay")), staircase=True)
    v1 = getattr(hp, f"{name}_end")
    if kind == "exponential":
        if v0 <= 0 or v1 is None or v1 <= 0:
            raise ValueError(f"hparams.{name}: the exponential schedule needs positive start and "
                             f"end values, got {v0} and {v1}")
        return ExponentialDecay(v0, spe, (v1 / v0) ** (1.0 / d_epochs), staircase=True)
    if kind == "linear":
        return PolynomialDecay(v0, d_steps, float(v1), power=1.0)
    return CosineDecay(v0, d_steps, 0.0 if v1 is None else float(v1))


def schedule_value(hp: HParams, name: str, step: int, steps_per_epoch: int) -> float:
    """Value of the scheduled hyperparameter ``name`` at optimizer step ``step``
    (see :func:`make_schedule`)."""
    return float(make_schedule(hp, name, steps_per_epoch)(step))


# ------------------------------------------------------------------------------ registry

_REGISTRY: dict[str, dict[str, Callable[[], HParams]]] = {}
_DESCRIPTIONS: dict[tuple[str, str], str] = {}


def register_hparams(model: str, name: str, description: str = ""):
    """Decorator registering a zero-argument factory of :class:`HParams` for ``model``.

    Example:
        >>> @register_hparams("my_mlp", "quick", "3 epochs of Adam")
        ... def _quick():
        ...     return HParams(epochs=3)
    """

    def deco(fn: Callable[[], HParams]):
        _REGISTRY.setdefault(model, {})[name] = fn
        _DESCRIPTIONS[(model, name)] = description or (fn.__doc__ or "").strip().split("\n")[0]
        return fn

    return deco


def list_hparams(model: str | None = None) -> dict[str, list[str]] | list[str]:
    """Set names for ``model``, or a dict {model: [names]} of every model when None."""
    _ensure_builtin()
    if model is None:
        return {m: sorted(s) for m, s in sorted(_REGISTRY.items())}
    return sorted(_REGISTRY.get(model, {}))


def describe_hparams(model: str, name: str) -> str:
    """The one-line description of a registered set."""
    _ensure_builtin()
    return _DESCRIPTIONS.get((model, name), "")


def get_hparams(model: str, name: str = "default") -> HParams:
    """A fresh copy of the set ``name`` registered for ``model``.

    A model without a registered ``default`` set gets ``HParams()``.

    Raises:
        ValueError: no such set; the message lists the sets of the model.
    """
    _ensure_builtin()
    sets = _REGISTRY.get(model, {})
    if name == "default" and name not in sets:
        return HParams()
    if name not in sets:
        known = ", ".join(sorted(sets)) or "none registered"
        raise ValueError(f"unknown hparams set {name!r} for model {model!r}; known: {known}")
    return copy.deepcopy(sets[name]())


def _ensure_builtin() -> None:
    # The built-in sets live in a separate module; import it on first use.
    from xnorkit.train import hparams_sets  # noqa: F401


# ------------------------------------------------------------------------------ overrides

def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes."""
    out, depth, cur, quote = [], 0, [], None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def _parse_value(text: str) -> Any:
    low = text.strip()
    if low.lower() in ("none", "null"):
        return None
    if low.lower() in ("true", "yes", "on"):
        return True
    if low.lower() in ("false", "no", "off"):
        return False
    try:
        return json.loads(low)
    except json.JSONDecodeError:
        pass
    if low[:1] in "([" and low[-1:] in ")]":
        return [_parse_value(v) for v in _split_top(low[1:-1])]
    if len(low) >= 2 and low[0] == low[-1] and low[0] in "\"'":
        return low[1:-1]
    return low


def parse_overrides(items: str | list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """Parse ``"a=1,b=x"`` (or a list of such strings) into ``{"a": 1, "b": "x"}``.

    Values are read as JSON where possible (numbers, booleans, lists), ``none`` as None,
    and otherwise kept as strings.

    Raises:
        ValueError: an item without ``=``.
    """
    if items is None:
        return {}
    if isinstance(items, str):
        items = [items]
    out: dict[str, Any] = {}
    for chunk in items:
        for item in _split_top(chunk):
            if "=" not in item:
                raise ValueError(f"--hparams: expected key=value, got {item!r}")
            k, v = item.split("=", 1)
            out[k.strip()] = _parse_value(v)
    return out


def _coerce(name: str, current: Any, value: Any, annotation: str) -> Any:
    if value is None:
        if "None" in annotation or current is None:
            return None
        raise ValueError(f"hparams.{name}: None is not allowed (type {annotation})")
    if isinstance(current, bool) or annotation == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"hparams.{name}: expected true/false, got {value!r}")
    if annotation.startswith("int"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"hparams.{name}: expected an integer, got {value!r}")
    if annotation.startswith("float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"hparams.{name}: expected a number, got {value!r}")
    if annotation == "str":
        return str(value)
    if annotation == "tuple":
        if isinstance(value, (list, tuple)):
            return tuple(value)
        raise ValueError(f"hparams.{name}: expected a list like (0.9,0.999), got {value!r}")
    return value


def apply_overrides(hp: HParams, overrides: dict[str, Any]) -> HParams:
    """Apply ``{key: value}`` overrides with type checks; returns a new :class:`HParams`.

    Keys are HParams fields, ``model.<kwarg>``, or a bare key already present in ``hp.model``.

    Raises:
        ValueError: unknown key (the message lists the valid ones) or a badly typed value.
    """
    types = {f.name: str(f.type) for f in fields(HParams)}
    changes: dict[str, Any] = {}
    model = dict(hp.model)
    for key, value in overrides.items():
        if key.startswith("model."):
            model[key[len("model."):]] = value
        elif key in types and key != "model":
            changes[key] = _coerce(key, getattr(hp, key), value, types[key])
        elif key in model:
            model[key] = value
        else:
            known = sorted(k for k in types if k != "model") + [f"model.{k}" for k in sorted(model)]
            raise ValueError(f"--hparams: unknown key {key!r}; known: {', '.join(known)} "
                             "(use model.<name>=<value> for another model argument)")
    return dataclasses.replace(hp, model=model, **changes)
