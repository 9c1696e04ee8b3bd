r"""Latent-weight training à la BinaryNet: per-layer Glorot LR scale and weight clipping.

In BinaryNet (Courbariaux, Hubara, Soudry, El-Yaniv, Bengio 2016, arXiv 1602.02830) each
binary layer keeps real-valued latent weights W_r; the forward pass uses sign(W_r), the
gradient w.r.t. the binarized weights is applied to W_r by Adam with the layer's learning
rate multiplied by

.. math::

    c = \frac{1}{\sqrt{1.5 / (\text{fan\_in} + \text{fan\_out})}}

(the inverse of the Glorot-uniform bound), and W_r is then clipped to [-1, 1]. BatchNorm
and other non-binary parameters use plain Adam. Seed 002 applies the same coefficient
(spec seeds.md §3.1, §5.2).

Typical loop::

    opt = torch.optim.Adam(binarynet_param_groups(model, lr=1e-3))
    ...
    opt.step()
    clip_latent_weights_(model)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .binary import named_binary_parameters

__all__ = ["glorot_fans", "glorot_lr_scale", "binarynet_param_groups", "clip_latent_weights_"]


def glorot_fans(weight_or_layer: nn.Module | torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a dense or convolution weight.

    For a weight of shape (out, in, *kernel): fan_in = in * prod(kernel) and
    fan_out = out * prod(kernel). For a conv this is fan_in = kh*kw*cin and
    fan_out = kh*kw*cout (with ``cin`` the per-group input channels, i.e. the weight's
    second dimension, as Glorot/Lasagne compute it); for a dense layer fan_in = in_features,
    fan_out = out_features.

    Args:
        weight_or_layer: a weight tensor or a module with a ``weight`` tensor.

    Raises:
        TypeError: a module without a ``weight`` tensor.
        ValueError: a weight with fewer than 2 dimensions.
    """
    w = weight_or_layer
    if isinstance(w, nn.Module):
        w = getattr(weight_or_layer, "weight", None)
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"{type(weight_or_layer).__name__} has no 'weight' tensor")
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"expected a layer or a weight tensor, got {type(w).__name__}")
    if w.dim() < 2:
        raise ValueError(f"Glorot fans need a weight with >= 2 dims (out, in, *kernel), "
                         f"got shape {tuple(w.shape)}")
    receptive = math.prod(w.shape[2:])
    return int(w.shape[1]) * receptive, int(w.shape[0]) * receptive


def glorot_lr_scale(weight_or_layer: nn.Module | torch.Tensor) -> float:
    """BinaryNet's per-layer LR multiplier: 1 / sqrt(1.5 / (fan_in + fan_out)).

    Example: a 784 -> 4096 dense layer gets sqrt(4880 / 1.5) ≈ 57.04.

    Args:
        weight_or_layer: a layer with a ``weight`` or the weight tensor itself.

    Raises:
        TypeError / ValueError: see :func:`glorot_fans`.
    """
    fan_in, fan_out = glorot_fans(weight_or_layer)
    return 1.0 / math.sqrt(1.5 / (fan_in + fan_out))


def binarynet_param_groups(model: nn.Module, lr: float, scale: bool = True) -> list[dict]:
    """Param groups for latent-weight training with BinaryNet's per-layer LR scale.

    One group per binary weight (the ``weight`` of each layer whose
    ``export_spec().weight_bits == 1``, or a parameter tagged with
    :func:`xnorkit.optim.mark_binary`) with ``lr = lr * glorot_lr_scale(weight)`` (1-D tagged
    tensors get scale 1), plus one group (``name == "float"``) with every other parameter at
    ``lr``. Each group carries ``name`` (the parameter's name) and
    ``lr_scale``; :class:`xnorkit.optim.ScheduleLR` multiplies a scheduled LR by
    ``lr_scale``, so the scaling survives LR schedules. Binary weights are also tagged (see
    :func:`xnorkit.optim.mark_binary`).

    Args:
        model: the network.
        lr: the base learning rate (float parameters use it unscaled).
        scale: False gives every binary group ``lr_scale = 1`` (same grouping, no scaling).

    Returns:
        A list usable as ``torch.optim.Adam(groups)``; groups without parameters are omitted.

    Raises:
        ValueError: ``lr`` is not a positive number.
    """
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"binarynet_param_groups: lr must be a positive number, got {lr!r}")
    groups, taken = [], set()
    for name, w in named_binary_parameters(model):
        s = glorot_lr_scale(w) if scale and w.dim() >= 2 else 1.0
        groups.append({"params": [w], "lr": lr * s, "lr_scale": s, "name": name})
        taken.add(id(w))
    rest = [p for p in model.parameters() if id(p) not in taken]
    if rest:
        groups.append({"params": rest, "lr": float(lr), "lr_scale": 1.0, "name": "float"})
    return groups


@torch.no_grad()
def clip_latent_weights_(model: nn.Module, value: float = 1.0) -> int:
    """Clip every binary weight of ``model`` to [-value, value] in place.

    BinaryNet clips the latent weights to [-1, 1] after each update so that they cannot
    drift far from the sign threshold (otherwise they stop responding to gradients).

    Args:
        model: the network; its binary weights are found as in
            :func:`xnorkit.optim.binary_parameters`.
        value: the clip bound, > 0.

    Returns:
        The number of tensors clipped.

    Raises:
        ValueError: ``value`` is not a positive number.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"clip_latent_weights_: value must be a positive number, got {value!r}")
    params = [p for _, p in named_binary_parameters(model)]
    for p in params:
        p.clamp_(-value, value)
    return len(params)
