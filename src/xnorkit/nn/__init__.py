"""Quantized layers for binary neural networks (torch spelling of larq's layers).

>>> import torch
>>> from xnorkit import nn as xnn
>>> layer = xnn.QuantConv2d(64, 64, 3, padding="same", pad_value=1.0, bias=False,
...                         input_quantizer="ste_sign", weight_quantizer="ste_sign",
...                         weight_clip=1.0)
>>> xnn.is_binary(layer)
True
>>> layer.export_spec().pad_value
1.0

Layers: :class:`QuantLinear`, :class:`QuantConv1d`, :class:`QuantConv2d`,
:class:`QuantDepthwiseConv2d` (all registered in :data:`LAYERS`), plus
:class:`ChannelLayerNorm` (Keras' default LayerNormalization on NCHW). After each optimizer
step call :func:`apply_constraints` (latent-weight clipping, ``weight_clip``).
"""

from .base import LAYERS, ExportSpec, QuantLayerMixin, apply_constraints, is_binary, register_layer
from .layers import QuantConv1d, QuantConv2d, QuantDepthwiseConv2d, QuantLinear
from .norm import ChannelLayerNorm

__all__ = [
    "LAYERS",
    "ExportSpec",
    "QuantLayerMixin",
    "register_layer",
    "is_binary",
    "apply_constraints",
    "QuantLinear",
    "QuantConv1d",
    "QuantConv2d",
    "QuantDepthwiseConv2d",
    "ChannelLayerNorm",
]
