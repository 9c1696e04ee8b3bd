"""What every quantized layer shares: quantizer resolution, the export spec, constraints.

A quantized layer (``QuantLinear``, ``QuantConv2d``, ...) is a torch layer plus

* ``input_quantizer`` / ``weight_quantizer`` submodules (or None), resolved through
  :func:`xnorkit.quantizers.get_quantizer`, or built from BMXNet's shorthand
  ``act_bit=`` / ``weight_bit=`` (:class:`xnorkit.quantizers.DoReFa`);
* an optional learned scalar output scale (``output_scale=True``, parameter ``scale``);
* an optional latent-weight clip ``weight_clip`` applied by :meth:`QuantLayerMixin.constrain_`
  (call it, or :func:`apply_constraints` on the model, after each optimizer step);
* :meth:`QuantLayerMixin.export_spec`, the single thing the converter reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..quantizers import DoReFa, get_quantizer, sign0

__all__ = ["ExportSpec", "QuantLayerMixin", "is_binary", "apply_constraints", "LAYERS",
           "register_layer"]

#: name -> quantized layer class; every registered layer gets the generic tests.
LAYERS: dict[str, type[nn.Module]] = {}


def register_layer(cls):
    """Class decorator registering a quantized layer in :data:`LAYERS` under its class name."""
    if cls.__name__ in LAYERS and LAYERS[cls.__name__] is not cls:
        raise ValueError(f"register_layer: {cls.__name__!r} is already registered")
    LAYERS[cls.__name__] = cls
    return cls


@dataclass(frozen=True)
class ExportSpec:
    """What a quantized layer declares for export (docs/api-contract.md).

    Attributes:
        input_bits: precision of the input quantizer (32 without one).
        weight_bits: precision of the weight quantizer (32 without one).
        weight_scale: ``"none"`` or ``"per_channel_mean_abs"`` (XNOR-Net alpha, computed by
            the converter from the latent weights).
        pad_value: constant used for spatial padding of the quantized input (0, +1 or -1;
            0.0 for dense layers).
        output_scale: the learned scalar output scale, or None when the layer has none.
        has_bias: whether the layer adds a bias.
        input_quantizer: description of the input quantizer (e.g. ``"ste_sign(clip_value=1.0)"``),
            None without one. Informational; the fields above are normative.
        weight_quantizer: description of the weight quantizer, None without one.
        input_values: the finite set of values the quantized input takes (e.g. (-1.0, 1.0);
            (0.0, 1.0) for ``ste_heaviside``; (-1.0, 0.0, 1.0) for ``leaky_sign``), or None.
        weight_values: the same for the quantized weight (None for scaled or float weights).
    """

    input_bits: int
    weight_bits: int
    weight_scale: str
    pad_value: float
    output_scale: float | None
    has_bias: bool
    input_quantizer: str | None = None
    weight_quantizer: str | None = None
    input_values: tuple[float, ...] | None = None
    weight_values: tuple[float, ...] | None = None


def _precision_of(q: nn.Module | None, role: str, layer: nn.Module) -> int:
    if q is None:
        return 32
    p = getattr(q, "precision", None)
    if p is None:
        raise ValueError(
            f"{type(layer).__name__}: the {role} {q!r} declares no precision, so the layer has "
            "no export spec; give it a `precision` attribute, e.g. "
            "xnorkit.quantizers.CallableQuantizer(fn, precision=1)")
    return int(p)


def _check_bit_arg(value, name: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{layer}: {name} must be an int in 1..32, got {value!r}")
    if not 1 <= value <= 32:
        raise ValueError(f"{layer}: {name} must be in 1..32, got {value}")
    return value


class QuantLayerMixin:
    """Shared machinery of the quantized layers; mix in before the torch layer class.

    Subclasses call :meth:`_init_quant` at the end of ``__init__`` and use
    :meth:`quantized_weight` and :meth:`_apply_output_scale` in ``forward``.
    """

    input_quantizer: nn.Module | None
    weight_quantizer: nn.Module | None
    scale: nn.Parameter | None
    weight_clip: float | None
    pad_value: float
    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_quant(self, *, input_quantizer, weight_quantizer, act_bit, weight_bit,
                    output_scale, weight_clip, pad_value=0.0, init_binary_=False) -> None:
        name = type(self).__name__
        if act_bit is not None:
            if input_quantizer is not None:
                raise ValueError(f"{name}: give either act_bit or input_quantizer, not both "
                                 f"(got act_bit={act_bit!r}, input_quantizer={input_quantizer!r})")
            input_quantizer = DoReFa(_check_bit_arg(act_bit, "act_bit", name), "activations")
        if weight_bit is not None:
            if weight_quantizer is not None:
                raise ValueError(f"{name}: give either weight_bit or weight_quantizer, not both "
                                 f"(got weight_bit={weight_bit!r}, weight_quantizer={weight_quantizer!r})")
            weight_quantizer = DoReFa(_check_bit_arg(weight_bit, "weight_bit", name), "weights")
        self.register_module("input_quantizer", get_quantizer(input_quantizer))
        self.register_module("weight_quantizer", get_quantizer(weight_quantizer))

        if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float)) \
                or float(pad_value) not in (0.0, 1.0, -1.0):
            raise ValueError(f"{name}: pad_value must be 0, +1 or -1, got {pad_value!r}")
        self.pad_value = float(pad_value) + 0.0  # -0.0 -> 0.0

        if weight_clip is not None:
            if isinstance(weight_clip, bool) or not isinstance(weight_clip, (int, float)) \
                    or not (weight_clip > 0 and math.isfinite(weight_clip)):
                raise ValueError(f"{name}: weight_clip must be a positive finite number or None, "
                                 f"got {weight_clip!r}")
            weight_clip = float(weight_clip)
        self.weight_clip = weight_clip

        if output_scale is None or output_scale is False:
            self.register_parameter("scale", None)
            self._scale_init = None
        elif output_scale is True or (not isinstance(output_scale, bool)
                                       and isinstance(output_scale, (int, float))):
            init = 1.0 if output_scale is True else float(output_scale)
            if not math.isfinite(init):
                raise ValueError(f"{name}: output_scale initial value must be finite, got {output_scale!r}")
            self._scale_init = init
            self.scale = nn.Parameter(torch.full((), init, dtype=self.weight.dtype,
                                                 device=self.weight.device))
        else:
            raise TypeError(f"{name}: output_scale must be a bool or the initial value (a number), "
                            f"got {output_scale!r}")

        if not isinstance(init_binary_, bool):
            raise TypeError(f"{name}: init_binary_ must be a bool, got {init_binary_!r}")
        self.init_binary = init_binary_
        if init_binary_:
            self._binarize_weight_()

    # ------------------------------------------------------------------ parameters
    def _reset_quant_parameters(self) -> None:
        """Glorot-uniform weight (Keras/larq default), zero bias, scale back to its init."""
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if getattr(self, "scale", None) is not None:
            with torch.no_grad():
                self.scale.fill_(self._scale_init)
        if getattr(self, "init_binary", False):
            self._binarize_weight_()

    def _binarize_weight_(self) -> None:
        with torch.no_grad():
            self.weight.copy_(sign0(self.weight))

    def constrain_(self):
        """Clip the latent weight to ``[-weight_clip, weight_clip]`` in place (no-op without a clip).

        BinaryNet clips the real-valued weights after every update (Courbariaux et al. 2016,
        arXiv:1602.02830, Algorithm 1); call this, or :func:`apply_constraints` on the whole
        model, right after ``optimizer.step()``.

        Returns:
            self.
        """
        if self.weight_clip is not None:
            with torch.no_grad():
                self.weight.clamp_(-self.weight_clip, self.weight_clip)
        return self

    # ------------------------------------------------------------------ forward helpers
    def quantized_weight(self) -> torch.Tensor:
        """The effective weight used in forward: ``weight_quantizer(weight)`` (or ``weight``)."""
        q = self.weight_quantizer
        return self.weight if q is None else q(self.weight)

    def _quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        q = self.input_quantizer
        return x if q is None else q(x)

    def _apply_output_scale(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.scale is None else y * self.scale

    # ------------------------------------------------------------------ export
    def export_spec(self) -> ExportSpec:
        """What this layer is, for the converter (see :class:`ExportSpec`).

        Raises:
            ValueError: a quantizer declares no precision (e.g. a bare callable).
        """
        iq, wq = self.input_quantizer, self.weight_quantizer
        return ExportSpec(
            input_bits=_precision_of(iq, "input_quantizer", self),
            weight_bits=_precision_of(wq, "weight_quantizer", self),
            weight_scale=getattr(wq, "scale_mode", "none") if wq is not None else "none",
            pad_value=self.pad_value,
            output_scale=None if self.scale is None else float(self.scale.detach()),
            has_bias=self.bias is not None,
            input_quantizer=None if iq is None else getattr(iq, "description", repr(iq)),
            weight_quantizer=None if wq is None else getattr(wq, "description", repr(wq)),
            input_values=None if iq is None else getattr(iq, "values", None),
            weight_values=None if wq is None else getattr(wq, "values", None),
        )

    def _quant_extra_repr(self) -> str:
        parts = []
        if self.pad_value != 0.0:
            parts.append(f"pad_value={self.pad_value:g}")
        if self.scale is not None:
            parts.append("output_scale=True")
        if self.weight_clip is not None:
            parts.append(f"weight_clip={self.weight_clip:g}")
        return ", ".join(parts)


def is_binary(layer: nn.Module) -> bool:
    """True when ``layer`` declares 1-bit inputs and 1-bit weights in its export spec.

    Modules without ``export_spec`` (plain torch layers) are not binary.
    """
    fn = getattr(layer, "export_spec", None)
    if not callable(fn):
        return False
    spec = fn()
    return spec.input_bits == 1 and spec.weight_bits == 1


def apply_constraints(model: nn.Module) -> int:
    """Call ``constrain_()`` on every submodule that has it (latent-weight clipping).

    Call after each optimizer step. Returns the number of layers with an active clip.
    """
    n = 0
    for m in model.modules():
        fn = getattr(m, "constrain_", None)
        if callable(fn):
            fn()
            n += getattr(m, "weight_clip", None) is not None
    return n
