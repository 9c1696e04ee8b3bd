"""Build the model and the optimizer of a run from its hyperparameters."""

from __future__ import annotations

import math
import torch
from torch import nn

from xnorkit.train.hparams import HParams, schedule_value
from xnorkit.train.monitor import binary_weight_layers, quantized_layers

__all__ = ["build_model", "build_optimizer", "ScheduledOptimizer", "apply_weight_constraints",
           "glorot_lr_scale"]


def build_model(name: str, kwargs: dict) -> nn.Module:
    """``xnorkit.models.get_model(name, **kwargs)`` with a clear error for bad arguments."""
    from xnorkit.models import get_model

    try:
        return get_model(name, **kwargs)
    except TypeError as exc:
        raise ValueError(f"model {name!r} rejected its arguments {kwargs}: {exc}") from exc


def glorot_lr_scale(weight: torch.Tensor) -> float:
    """BinaryNet's per-layer learning-rate scale 1/sqrt(1.5 / (fan_in + fan_out)).

    For a linear weight (out, in): fan_in = in, fan_out = out; for a convolution weight
    (cout, cin, *k): fan_in = cin * prod(k), fan_out = cout * prod(k) (Courbariaux et al.
    2016, Theano ``binary_net.py``).
    """
    rf = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * rf, weight.shape[0] * rf
    return 1.0 / math.sqrt(1.5 / (fan_in + fan_out))


class ScheduledOptimizer:
    """An optimizer plus the rule that sets its scheduled hyperparameters at every step.

    Each param group carries ``kind`` (``binary`` for Bop-trained weights, ``latent`` for
    latent binary weights, ``float`` for everything else) and ``lr_scale``; :meth:`set_step`
    writes ``lr`` (= lr_scale x learning_rate(step)) and, for Bop groups, ``threshold``,
    ``gamma`` and ``sigma`` into the groups before the step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, hp: HParams, steps_per_epoch: int) -> None:
        self.optimizer = optimizer
        self.hp = hp
        self.steps_per_epoch = steps_per_epoch

    def values(self, step: int) -> dict[str, float]:
        """The scheduled values at ``step`` (for logging)."""
        names = ["learning_rate"]
        if self.hp.optimizer in ("bop", "bop2ndorder"):
            names += ["threshold", "gamma"] + (["sigma"] if self.hp.optimizer == "bop2ndorder" else [])
        return {n: schedule_value(self.hp, n, step, self.steps_per_epoch) for n in names}

    def set_step(self, step: int) -> dict[str, float]:
        vals = self.values(step)
        for g in self.optimizer.param_groups:
            if g.get("kind") == "binary":
                for n in ("threshold", "gamma", "sigma"):
                    if n in vals and n in g:
                        g[n] = vals[n]
            else:
                g["lr"] = g.get("lr_scale", 1.0) * vals["learning_rate"]
        return vals

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.optimizer.step()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def _split_params(model: nn.Module, hp: HParams):
    latent: list[tuple[nn.Parameter, float]] = []
    seen: set[int] = set()
    for _, m in binary_weight_layers(model):
        w = m.weight
        if id(w) in seen or not w.requires_grad:
            continue
        seen.add(id(w))
        latent.append((w, glorot_lr_scale(w) if hp.glorot_lr_scale else 1.0))
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    return latent, rest


def build_optimizer(model: nn.Module, hp: HParams, steps_per_epoch: int) -> ScheduledOptimizer:
    """The optimizer named by ``hp.optimizer`` with param groups tagged for scheduling.

    - ``adam`` / ``sgd``: latent-weight training (BinaryNet). Latent binary weights form
      groups without weight decay, with the Glorot learning-rate scale when
      ``hp.glorot_lr_scale``; other parameters get ``hp.weight_decay``.
    - ``bop`` / ``bop2ndorder``: binary weights go to Bop / Bop2ndOrder, the rest to Adam
      (:func:`xnorkit.optim.make_optimizer`).
    """
    if hp.optimizer in ("adam", "sgd"):
        latent, rest = _split_params(model, hp)
        groups = []
        for p, scale in latent:
            groups.append({"params": [p], "kind": "latent", "lr_scale": scale, "weight_decay": 0.0,
                           "lr": hp.learning_rate * scale})
        if rest:
            groups.append({"params": rest, "kind": "float", "lr_scale": 1.0,
                           "weight_decay": hp.weight_decay, "lr": hp.learning_rate})
        if hp.optimizer == "adam":
            opt = torch.optim.Adam(groups, lr=hp.learning_rate, betas=tuple(hp.adam_betas))
        else:
            opt = torch.optim.SGD(groups, lr=hp.learning_rate, momentum=hp.momentum)
        return ScheduledOptimizer(opt, hp, steps_per_epoch)
    return _build_bop(model, hp, steps_per_epoch)


def _build_bop(model: nn.Module, hp: HParams, steps_per_epoch: int) -> ScheduledOptimizer:
    raise NotImplementedError("Bop routing needs xnorkit.optim")


def apply_weight_constraints(model: nn.Module) -> None:
    """Clip the latent weights of layers that declare ``weight_clip`` (BinaryNet: [-1, 1])."""
    with torch.no_grad():
        for _, m in quantized_layers(model):
            clip = getattr(m, "weight_clip", None)
            if clip is not None:
                m.weight.clamp_(-clip, clip)

