"""Quantized dense and convolution layers (torch spelling of larq's ``QuantDense``/``QuantConv2D``).

Forward of every layer (docs/api-contract.md)::

    xq = input_quantizer(x)                    # identity without one
    xq = pad(xq, value=pad_value)              # spatial padding, convolutions only
    wq = layer.quantized_weight()              # weight_quantizer(weight)
    y  = conv(xq, wq) + bias                   # or linear
    y  = y * scale                             # with output_scale only

The backward pass is plain autograd through ``conv``/``linear``; each quantizer contributes
its pseudo-gradient (see :mod:`xnorkit.quantizers`), so the latent float ``weight`` receives
the gradient computed with the quantized weight (BinaryConnect's rule; BMXNet's "bf" mode).
The padding is applied *after* the input quantizer, with an explicit constant (0, +1 or -1,
spec §1.3), so the deployed bit-packed convolution reproduces it exactly.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from .base import QuantLayerMixin, register_layer

__all__ = ["QuantLinear", "QuantConv1d", "QuantConv2d", "QuantDepthwiseConv2d"]


def _binary_kernels(layer: nn.Module, xq: torch.Tensor):
    """``xnorkit.kernels.gpu`` if its ``use_binary_kernels()`` routes this layer now, else None.

    Opt-in packed-bit forward for binary layers (docs/gpu.md); the module is optional (Triton),
    so it is only consulted once the user has imported it.
    """
    gpu = sys.modules.get("xnorkit.kernels.gpu")
    return gpu if gpu is not None and gpu.routes(layer, xq) else None


_QUANT_ARGS_DOC = """
        input_quantizer: quantizer of the input: None, an alias (``"ste_sign"``), a module
            or a callable (:func:`xnorkit.quantizers.get_quantizer`).
        weight_quantizer: quantizer of the weight, same forms.
        act_bit: BMXNet shorthand, ``input_quantizer = DoReFa(act_bit, "activations")``
            (1..32; exclusive with ``input_quantizer``).
        weight_bit: BMXNet shorthand, ``weight_quantizer = DoReFa(weight_bit, "weights")``
            (1..32; exclusive with ``weight_quantizer``).
        output_scale: False (none), True (a learned scalar ``scale`` initialised to 1, after
            Tang, Hua, Wang, "How to Train a Compact Binary Neural Network with High
            Accuracy?", AAAI 2017), or a number used as the initial value.
        weight_clip: latent weights are clipped to [-weight_clip, weight_clip] by
            ``constrain_()`` / :func:`xnorkit.nn.apply_constraints` (BinaryNet uses 1.0);
            None for no clipping.
        init_binary_: set the weight to sign0(glorot-uniform init) at construction (and on
            ``reset_parameters()``), for kernels trained by Bop with ``NoOp(precision=1)``.
            Default False: plain glorot-uniform init (Keras/larq default); the optimizer
            helper :func:`xnorkit.optim.init_binary_` does the same later.
        device, dtype: as for the torch layer.
"""


@register_layer
class QuantLinear(QuantLayerMixin, nn.Linear):
    __doc__ = f"""Quantized fully connected layer.

    Forward: ``y = (input_quantizer(x) @ weight_quantizer(W).T + b) * scale``.

    Args:
        in_features: size of the last input dimension.
        out_features: size of the last output dimension.
        bias: add a learned bias (zero-initialised).
{_QUANT_ARGS_DOC}
    Raises:
        ValueError: invalid argument (both ``act_bit`` and ``input_quantizer``, bit width
            outside 1..32, ``weight_clip <= 0``, unknown alias, ...).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 input_quantizer=None, weight_quantizer=None, act_bit: int | None = None,
                 weight_bit: int | None = None, output_scale: bool | float = False,
                 weight_clip: float | None = None, init_binary_: bool = False,
                 device=None, dtype=None):
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        self._init_quant(input_quantizer=input_quantizer, weight_quantizer=weight_quantizer,
                         act_bit=act_bit, weight_bit=weight_bit, output_scale=output_scale,
                         weight_clip=weight_clip, init_binary_=init_binary_)

    def reset_parameters(self) -> None:
        self._reset_quant_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: expected input with last dimension "
                             f"in_features={self.in_features}, got shape {tuple(x.shape)}")
        xq = self._quantize_input(x)
        gpu = _binary_kernels(self, xq)
        y = (F.linear if gpu is None else gpu.xnor_linear)(xq, self.quantized_weight(), self.bias)
        return self._apply_output_scale(y)

    def extra_repr(self) -> str:
        return ", ".join(p for p in (nn.Linear.extra_repr(self), self._quant_extra_repr()) if p)


def _as_tuple(v, nd: int, what: str, layer: str, minimum: int) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v,) * nd
    if not (isinstance(v, (tuple, list)) and len(v) == nd
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= minimum for i in v)):
        raise ValueError(f"{layer}: {what} must be an int >= {minimum} or a tuple of {nd} such ints, "
                         f"got {v!r}")
    return tuple(v)


def _normalize_padding(padding, nd: int, layer: str):
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"{layer}: padding must be an int, a tuple of {nd} ints, 'same' or "
                             f"'valid', got {padding!r}")
        return padding
    return _as_tuple(padding, nd, "padding", layer, 0)


class _QuantConvMixin(QuantLayerMixin):
    """Forward, padding and checks shared by the quantized convolutions."""

    _nd: int
    _conv_fn = None

    def _init_conv(self, base, in_channels, out_channels, kernel_size, stride, padding, dilation,
                   groups, bias, device, dtype, quant_kwargs) -> None:
        name = type(self).__name__
        nd = self._nd
        pad = _normalize_padding(padding, nd, name)
        stride = _as_tuple(stride, nd, "stride", name, 1)
        dilation = _as_tuple(dilation, nd, "dilation", name, 1)
        # 'same' is computed here (TF/Keras rule, also for strides > 1, which torch rejects)
        base.__init__(self, in_channels, out_channels, kernel_size, stride,
                      0 if pad == "same" else pad, dilation, groups, bias,
                      padding_mode="zeros", device=device, dtype=dtype)
        self.padding = pad
        self._init_quant(**quant_kwargs)

    def reset_parameters(self) -> None:
        self._reset_quant_parameters()

    def explicit_padding(self, input_size) -> tuple[tuple[int, int], ...]:
        """The (before, after) padding of each spatial dimension for an input of this size.

        ``'same'`` follows TensorFlow/Keras: output size ceil(in / stride), total padding
        max((out - 1) * stride + (kernel - 1) * dilation + 1 - in, 0), the odd element at the
        end (bottom/right). With stride 1 this equals torch's ``padding='same'``.

        Args:
            input_size: the spatial size (H, W) (or (L,) for 1-d), or the full input shape.
        """
        size = tuple(int(s) for s in input_size)[-self._nd:]
        if len(size) != self._nd:
            raise ValueError(f"{type(self).__name__}.explicit_padding: expected {self._nd} spatial "
                             f"sizes, got {tuple(input_size)!r}")
        if self.padding == "valid":
            return tuple((0, 0) for _ in size)
        if self.padding == "same":
            pairs = []
            for n, k, s, d in zip(size, self.kernel_size, self.stride, self.dilation):
                out = -(-n // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        return tuple((p, p) for p in self.padding)

    def _check_input(self, x: torch.Tensor) -> None:
        nd = self._nd
        if x.dim() not in (nd + 1, nd + 2) or x.shape[-nd - 1] != self.in_channels:
            want = "N, C, L" if nd == 1 else "N, C, H, W"
            raise ValueError(f"{type(self).__name__}: expected input of shape ({want}) with "
                             f"C=in_channels={self.in_channels}, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        xq = self._quantize_input(x)
        pad = self.padding
        native = None
        if isinstance(pad, str):
            if pad == "valid":
                native = 0
            elif self.pad_value == 0.0 and all(s == 1 for s in self.stride) and \
                    all((k - 1) * d % 2 == 0 for k, d in zip(self.kernel_size, self.dilation)):
                native = tuple((k - 1) * d // 2 for k, d in zip(self.kernel_size, self.dilation))
        elif self.pad_value == 0.0 or not any(pad):
            native = pad
        if native is None:
            flat = [v for pair in reversed(self.explicit_padding(x.shape)) for v in pair]
            if any(flat):
                xq = F.pad(xq, flat, mode="constant", value=self.pad_value)
            native = 0
        gpu = _binary_kernels(self, xq) if self._nd == 2 else None
        conv = type(self)._conv_fn if gpu is None else gpu.xnor_conv2d
        y = conv(xq, self.quantized_weight(), self.bias, self.stride, native, self.dilation, self.groups)
        return self._apply_output_scale(y)


_CONV_DOC = """
    Args:
        in_channels: input channels C.
        out_channels: output channels.
        kernel_size: int or tuple.
        stride: int or tuple, >= 1.
        padding: int or tuple (symmetric), ``"valid"`` (none) or ``"same"`` (TF/Keras rule,
            any stride; see :meth:`explicit_padding`).
        dilation: int or tuple, >= 1.
        groups: as in torch.
        bias: add a learned bias (zero-initialised).
        pad_value: the constant the *quantized* input is padded with: 0 (float-simulation
            zero padding, larq/TF), +1 (BMXNet: pad with 0 then binarize) or -1.
""" + _QUANT_ARGS_DOC + """
    Raises:
        ValueError: invalid argument (``pad_value`` not in {0, +1, -1}, bad padding, both
            ``act_bit`` and ``input_quantizer``, bit width outside 1..32, ...).
"""


@register_layer
class QuantConv1d(_QuantConvMixin, nn.Conv1d):
    __doc__ = """Quantized 1-d convolution, input (N, C, L) (e.g. the VAD models).

    Forward: ``y = conv1d(pad(input_quantizer(x), pad_value), weight_quantizer(W)) + b``,
    then ``* scale``.
""" + _CONV_DOC

    _nd = 1
    _conv_fn = staticmethod(F.conv1d)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, *, pad_value: float = 0.0,
                 input_quantizer=None, weight_quantizer=None, act_bit: int | None = None,
                 weight_bit: int | None = None, output_scale: bool | float = False,
                 weight_clip: float | None = None, init_binary_: bool = False,
                 device=None, dtype=None):
        self._init_conv(nn.Conv1d, in_channels, out_channels, kernel_size, stride, padding,
                        dilation, groups, bias, device, dtype, dict(
                            input_quantizer=input_quantizer, weight_quantizer=weight_quantizer,
                            act_bit=act_bit, weight_bit=weight_bit, output_scale=output_scale,
                            weight_clip=weight_clip, pad_value=pad_value,
                            init_binary_=init_binary_))

    def extra_repr(self) -> str:
        return ", ".join(p for p in (nn.Conv1d.extra_repr(self), self._quant_extra_repr()) if p)


@register_layer
class QuantConv2d(_QuantConvMixin, nn.Conv2d):
    __doc__ = """Quantized 2-d convolution, input (N, C, H, W).

    Forward: ``y = conv2d(pad(input_quantizer(x), pad_value), weight_quantizer(W)) + b``,
    then ``* scale``.
""" + _CONV_DOC

    _nd = 2
    _conv_fn = staticmethod(F.conv2d)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, *, pad_value: float = 0.0,
                 input_quantizer=None, weight_quantizer=None, act_bit: int | None = None,
                 weight_bit: int | None = None, output_scale: bool | float = False,
                 weight_clip: float | None = None, init_binary_: bool = False,
                 device=None, dtype=None):
        self._init_conv(nn.Conv2d, in_channels, out_channels, kernel_size, stride, padding,
                        dilation, groups, bias, device, dtype, dict(
                            input_quantizer=input_quantizer, weight_quantizer=weight_quantizer,
                            act_bit=act_bit, weight_bit=weight_bit, output_scale=output_scale,
                            weight_clip=weight_clip, pad_value=pad_value,
                            init_binary_=init_binary_))

    def extra_repr(self) -> str:
        return ", ".join(p for p in (nn.Conv2d.extra_repr(self), self._quant_extra_repr()) if p)


@register_layer
class QuantDepthwiseConv2d(QuantConv2d):
    """Quantized depthwise 2-d convolution: ``groups = in_channels``,
    ``out_channels = in_channels * depth_multiplier`` (Keras ``DepthwiseConv2D``).

    Forward as :class:`QuantConv2d`. Output channel ``c * depth_multiplier + j`` is input
    channel c convolved with its j-th filter (torch's grouped-convolution order).

    Args:
        in_channels: input channels C.
        kernel_size: int or tuple.
        stride, padding: as :class:`QuantConv2d`.
        depth_multiplier: filters per input channel, >= 1.
        bias: add a learned bias (zero-initialised).
        dilation: keyword-only, as :class:`QuantConv2d`.
        pad_value, input_quantizer, weight_quantizer, act_bit, weight_bit, output_scale,
        weight_clip, init_binary_, device, dtype: as :class:`QuantConv2d`.
    """

    def __init__(self, in_channels: int, kernel_size, stride=1, padding=0,
                 depth_multiplier: int = 1, bias: bool = True, *, dilation=1,
                 pad_value: float = 0.0, input_quantizer=None, weight_quantizer=None,
                 act_bit: int | None = None, weight_bit: int | None = None,
                 output_scale: bool | float = False, weight_clip: float | None = None,
                 init_binary_: bool = False, device=None, dtype=None):
        if isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, int) \
                or depth_multiplier < 1:
            raise ValueError(f"QuantDepthwiseConv2d: depth_multiplier must be an int >= 1, "
                             f"got {depth_multiplier!r}")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"QuantDepthwiseConv2d: in_channels must be an int >= 1, got {in_channels!r}")
        super().__init__(in_channels, in_channels * depth_multiplier, kernel_size, stride,
                         padding, dilation, in_channels, bias, pad_value=pad_value,
                         input_quantizer=input_quantizer, weight_quantizer=weight_quantizer,
                         act_bit=act_bit, weight_bit=weight_bit, output_scale=output_scale,
                         weight_clip=weight_clip, init_binary_=init_binary_, device=device,
                         dtype=dtype)
        self.depth_multiplier = depth_multiplier
