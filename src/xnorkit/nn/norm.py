"""Normalization layers that the seed models need and torch does not spell directly."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelLayerNorm"]


class ChannelLayerNorm(nn.Module):
    r"""Layer normalization over the channel dimension only, at every position (N, C, *).

    Keras' ``LayerNormalization()`` default (``axis=-1`` on NHWC tensors), used as the "N"
    block of seed 004's ``binarynet`` / ``xnornet`` / ``birealnet`` models (spec §7.4). For an
    input x of shape (N, C, H, W) (or (N, C, L), or (N, C)):

        mu[n, h, w]     = mean_c x[n, c, h, w]
        var[n, h, w]    = mean_c (x[n, c, h, w] - mu[n, h, w])^2       (biased)
        y[n, c, h, w]   = gamma[c] * (x - mu) / sqrt(var + eps) + beta[c]

    ``torch.nn.LayerNorm(C)`` on NCHW would normalize over the last dim (W) instead; the
    "full" variant (over C, H, W) is ``nn.GroupNorm(1, C)`` or ``nn.LayerNorm((C, H, W))``.

    Args:
        num_channels: C.
        eps: added to the variance; 1e-3 is the Keras default.
        elementwise_affine: learn gamma (init 1) and beta (init 0).
        bias: learn beta (with ``elementwise_affine``).

    References:
        Ba, Kiros, Hinton, "Layer Normalization", arXiv:1607.06450 (2016).
    """

    def __init__(self, num_channels: int, eps: float = 1e-3, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"ChannelLayerNorm: num_channels must be an int >= 1, got {num_channels!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps > 0 and math.isfinite(eps)):
            raise ValueError(f"ChannelLayerNorm: eps must be a positive number, got {eps!r}")
        self.num_channels = num_channels
        self.eps = float(eps)
        self.elementwise_affine = elementwise_affine
        kw = {"device": device, "dtype": dtype}
        self.register_parameter(
            "weight", nn.Parameter(torch.ones(num_channels, **kw)) if elementwise_affine else None)
        self.register_parameter(
            "bias", nn.Parameter(torch.zeros(num_channels, **kw)) if elementwise_affine and bias else None)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"ChannelLayerNorm: expected input (N, C, ...) with C={self.num_channels}, "
                             f"got shape {tuple(x.shape)}")
        y = F.layer_norm(x.movedim(1, -1), (self.num_channels,), self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps:g}, elementwise_affine={self.elementwise_affine}"
