"""Building blocks shared by the zoo: the model base class, Keras-faithful norms and
initializers, and helpers that build binary layers from :mod:`xnorkit.nn`.

Conventions used by every model in the zoo (written once here, cited by the model files):

* **Input** NCHW images (or (N, C, L) sequences for 1-D models); the output is logits, no
  softmax. ``model.default_input_shape`` is the per-sample shape the model was designed for.
* **Binary layers** are :class:`xnorkit.nn.QuantConv2d` / ``QuantConv1d`` / ``QuantLinear``
  whose export spec declares their precision; float layers are plain ``nn.Conv2d`` /
  ``nn.Linear``. :meth:`ZooModel.layer_precisions` lists both, so the converter (and a reader)
  can see which layers deploy as XNOR-popcount layers without guessing from names.
* **Batch-norm momentum** is given the Keras way in the model files (``momentum=0.9`` means
  ``moving = 0.9·moving + 0.1·batch``) and converted to PyTorch's convention
  (``momentum = 1 − keras_momentum``) by :func:`batch_norm`. Keras' ``scale=False`` /
  ``center=False`` become a ``None`` weight / bias (no parameter), as in Keras.
* **"same" padding.** Binary convolutions use the quantized layers' own ``padding="same"``,
  which is TensorFlow's rule exactly (output ⌈H / stride⌉, the odd padding row/column at the
  bottom/right) and pads the ±1 input with the layer's declared ``pad_value``. Float
  convolutions and max-pools written "same" in Keras use PyTorch's symmetric
  ``dilation·(k // 2)`` for an odd window: the same output size ⌈H / stride⌉ for every H, the
  grid of a stride-2 layer shifted by at most one input pixel, which matters only when
  porting Keras weights, never for training from scratch. Keras' 2×2/2 "same" average pool is
  emulated exactly (``ceil_mode=True, count_include_pad=False``).
* **Flatten** follows PyTorch's (C, H, W) order (Keras flattens (H, W, C)); again only
  relevant for weight porting.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Sequence

import torch
from torch import nn

from xnorkit import quantizers as q
from xnorkit.nn import ChannelLayerNorm, QuantConv1d, QuantConv2d, QuantLinear, is_binary

__all__ = [
    "ZooModel",
    "LayerPrecision",
    "BatchNorm1d",
    "BatchNorm2d",
    "batch_norm",
    "norm_layer",
    "BINARY_KERNELS",
    "weight_quantizer",
    "sign_quantizer",
    "binary_conv2d",
    "binary_conv1d",
    "binary_linear",
    "blurpool",
    "init_",
    "conv_out",
    "pool_out",
    "check_input_shape",
    "check_choice",
    "too_small",
    "global_avg_pool",
    "pad_same_avgpool2x2",
]


# ----------------------------------------------------------------------------- base class


class LayerPrecision(NamedTuple):
    """One weight layer of a model as the converter sees it."""

    name: str  #: qualified module name (``model.get_submodule(name)``)
    kind: str  #: module class name (``QuantConv2d``, ``Conv2d``, ``Linear`` ...)
    input_bits: int  #: 1 for sign-quantized inputs, 32 for real-valued inputs
    weight_bits: int  #: 1 for binary weights, 32 for float weights
    weight_count: int  #: number of weights (bias excluded)

    @property
    def binary(self) -> bool:
        """True for XNOR-popcount layers (1-bit inputs and weights)."""
        return self.input_bits == 1 and self.weight_bits == 1


class ZooModel(nn.Module):
    """Base class of the registered models.

    Subclasses set :attr:`default_input_shape` and :attr:`num_classes` in ``__init__``.
    Everything here is derived from the layers' own export specs (never from names), so it
    stays true when a model's options change which layers are binary.
    """

    #: Per-sample input shape the model was built for: (C, H, W), or (C, L) for 1-D models.
    default_input_shape: tuple[int, ...] = ()
    #: Number of logits.
    num_classes: int = 0

    def example_input(self, batch_size: int = 1, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """A standard-normal input batch of ``default_input_shape``."""
        return torch.randn(batch_size, *self.default_input_shape, generator=generator)

    def _weight_layers(self) -> Iterator[tuple[str, nn.Module]]:
        for name, m in self.named_modules():
            if callable(getattr(m, "export_spec", None)) or isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                if isinstance(getattr(m, "weight", None), torch.Tensor):
                    yield name, m

    def layer_precisions(self) -> list[LayerPrecision]:
        """Every weight layer (quantized or float) with its declared input/weight precision.

        Quantized layers report ``export_spec().input_bits`` / ``weight_bits``; plain
        ``nn.Conv*`` / ``nn.Linear`` layers are 32/32.
        """
        rows = []
        for name, m in self._weight_layers():
            spec_fn = getattr(m, "export_spec", None)
            if callable(spec_fn):
                spec = spec_fn()
                ib, wb = int(spec.input_bits), int(spec.weight_bits)
            else:
                ib = wb = 32
            rows.append(LayerPrecision(name, type(m).__name__, ib, wb, int(m.weight.numel())))
        return rows

    def binary_layer_names(self) -> list[str]:
        """Names of the layers that deploy as XNOR-popcount layers (``xnorkit.nn.is_binary``)."""
        return [name for name, m in self._weight_layers() if callable(getattr(m, "export_spec", None))
                and is_binary(m)]

    def binary_weight_count(self) -> int:
        """Number of 1-bit weights (layers whose export spec says ``weight_bits == 1``).

        This includes binary-weight layers with real-valued inputs, such as BinaryNet's first
        convolution, which is how the BinaryNet paper counts them.
        """
        return sum(r.weight_count for r in self.layer_precisions() if r.weight_bits == 1)

    def _check_input(self, x: torch.Tensor, *, exact: bool = False) -> None:
        """Clear errors for inputs of the wrong rank, channel count (or exact shape)."""
        want = self.default_input_shape
        if x.dim() != len(want) + 1 or x.shape[1] != want[0] or (exact and tuple(x.shape[1:]) != tuple(want)):
            what = f"(N, {', '.join(map(str, want))})" if exact else f"(N, {want[0]}, ...) of rank {len(want) + 1}"
            raise ValueError(f"{type(self).__name__} expects input {what}, got {tuple(x.shape)}")


# ----------------------------------------------------------------------------- norms


class _KerasBN:
    """Mixin: BatchNorm with Keras' independent ``center`` (beta) / ``scale`` (gamma) flags."""

    def _setup(self, center: bool, scale: bool) -> None:
        self.center, self.scale = bool(center), bool(scale)
        if not scale:
            self.register_parameter("weight", None)
        if not center:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:  # noqa: D102 (torch API)
        self.reset_running_stats()
        if getattr(self, "weight", None) is not None:
            nn.init.ones_(self.weight)
        if getattr(self, "bias", None) is not None:
            nn.init.zeros_(self.bias)


class BatchNorm2d(_KerasBN, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose gamma (``scale``) and beta (``center``) can be left out one by
    one, like Keras' ``BatchNormalization(center=..., scale=...)``; a left-out one is ``None``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *,
                 center: bool = True, scale: bool = True):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=center or scale)
        self._setup(center, scale)


class BatchNorm1d(_KerasBN, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` counterpart of :class:`BatchNorm2d` (dense layers, 1-D convs)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *,
                 center: bool = True, scale: bool = True):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=center or scale)
        self._setup(center, scale)


def batch_norm(num_features: int, *, momentum: float = 0.99, eps: float = 1e-3, center: bool = True,
               scale: bool = True, dims: int = 2) -> nn.Module:
    """BatchNorm specified the Keras way (defaults = Keras' defaults).

    Args:
        momentum: Keras momentum m (moving = m·moving + (1 − m)·batch); PyTorch gets 1 − m.
        eps: added to the variance.
        center / scale: learn beta / gamma.
        dims: 2 for NCHW feature maps, 1 for (N, C) or (N, C, L).
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"Keras BatchNorm momentum must be in [0, 1), got {momentum}")
    cls = {1: BatchNorm1d, 2: BatchNorm2d}[dims]
    return cls(num_features, eps=eps, momentum=1.0 - momentum, center=center, scale=scale)


NORMS = ("batch", "layer")


def norm_layer(kind: str, num_features: int, *, momentum: float = 0.99, eps: float = 1e-3,
               center: bool = True, scale: bool = True, dims: int = 2, ln_eps: float = 1e-3) -> nn.Module:
    """``"batch"``: :func:`batch_norm`; ``"layer"``: :class:`xnorkit.nn.ChannelLayerNorm`, Keras'
    default ``LayerNormalization()`` (over channels only at each position, eps ``ln_eps``,
    learned gamma and beta), as in seed 004's layer-norm models (spec seeds.md §7.4, §7.8)."""
    check_choice("norm", kind, NORMS)
    if kind == "batch":
        return batch_norm(num_features, momentum=momentum, eps=eps, center=center, scale=scale, dims=dims)
    return ChannelLayerNorm(num_features, eps=ln_eps)


# ----------------------------------------------------------------------------- quantizers

#: How binary weights are represented and trained (the ``binary_kernels`` option of every model):
#:
#: * ``"ste_sign"``: latent real weights, forward sign0(w), hard-tanh STE, weights clipped to
#:   ``[-clip, clip]`` after each step (BinaryNet / larq ``ste_sign`` + ``weight_clip``).
#: * ``"magnitude_aware_sign"``: as ``"ste_sign"`` times the per-output-channel mean |w|
#:   (XNOR-Net's alpha, Bi-Real Net's magnitude-aware sign).
#: * ``"bop"``: the weight *is* the ±1 value, flipped by Bop / Bop2ndOrder; the quantizer is
#:   the identity tagged 1-bit (larq ``NoOpQuantizer(precision=1)``), no clipping (seed 004).
BINARY_KERNELS = ("ste_sign", "magnitude_aware_sign", "bop")


def check_choice(what: str, value, choices: Sequence) -> None:
    """ValueError naming ``what`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")


def weight_quantizer(binary_kernels: str, clip_value: float = 1.0) -> tuple[nn.Module, float | None]:
    """(weight quantizer module, weight clip) for a :data:`BINARY_KERNELS` choice."""
    check_choice("binary_kernels", binary_kernels, BINARY_KERNELS)
    if binary_kernels == "ste_sign":
        return q.SteSign(clip_value=clip_value), float(clip_value)
    if binary_kernels == "magnitude_aware_sign":
        return q.MagnitudeAwareSign(clip_value=clip_value), float(clip_value)
    return q.NoOp(precision=1), None


SIGNS = ("ste_sign", "approx_sign")


def sign_quantizer(kind: str | None, clip_value: float = 1.0) -> nn.Module | None:
    """A fresh input quantizer module: ``"ste_sign"`` (hard-tanh STE window ``clip_value``),
    ``"approx_sign"`` (Bi-Real's piecewise-polynomial STE) or None (real-valued input)."""
    if kind is None:
        return None
    check_choice("input quantizer", kind, SIGNS)
    if kind == "ste_sign":
        return q.SteSign(clip_value=clip_value)
    return q.ApproxSign()


def binary_conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *,
                  padding: int | str = "same", dilation: int = 1, pad_value: float = 0.0,
                  input_quantizer: str | None = "ste_sign", input_clip: float = 1.0,
                  binary_kernels: str = "ste_sign", clip_value: float = 1.0, bias: bool = False,
                  init: str | None = "glorot_normal") -> QuantConv2d:
    """A binary-weight ``QuantConv2d``; inputs are sign-quantized unless ``input_quantizer=None``.

    ``padding`` defaults to ``"same"`` (TensorFlow's rule, any stride); an int pads symmetrically.
    """
    wq, clip = weight_quantizer(binary_kernels, clip_value)
    layer = QuantConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                        dilation=dilation, bias=bias, pad_value=pad_value,
                        input_quantizer=sign_quantizer(input_quantizer, input_clip),
                        weight_quantizer=wq, weight_clip=clip, init_binary_=binary_kernels == "bop")
    return _finish(layer, init, binary_kernels)


def binary_conv1d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *,
                  padding: int | str = "same", dilation: int = 1, pad_value: float = 0.0,
                  input_quantizer: str | None = "ste_sign", input_clip: float = 1.0,
                  binary_kernels: str = "ste_sign", clip_value: float = 1.0, bias: bool = False,
                  init: str | None = "glorot_normal") -> QuantConv1d:
    """1-D counterpart of :func:`binary_conv2d`."""
    wq, clip = weight_quantizer(binary_kernels, clip_value)
    layer = QuantConv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                        dilation=dilation, bias=bias, pad_value=pad_value,
                        input_quantizer=sign_quantizer(input_quantizer, input_clip),
                        weight_quantizer=wq, weight_clip=clip, init_binary_=binary_kernels == "bop")
    return _finish(layer, init, binary_kernels)


def binary_linear(in_features: int, out_features: int, *, input_quantizer: str | None = "ste_sign",
                  input_clip: float = 1.0, binary_kernels: str = "ste_sign", clip_value: float = 1.0,
                  bias: bool = False, output_scale: bool | float = False,
                  init: str | None = "glorot_uniform") -> QuantLinear:
    """A binary-weight ``QuantLinear``; inputs are sign-quantized unless ``input_quantizer=None``."""
    wq, clip = weight_quantizer(binary_kernels, clip_value)
    layer = QuantLinear(in_features, out_features, bias=bias,
                        input_quantizer=sign_quantizer(input_quantizer, input_clip),
                        weight_quantizer=wq, weight_clip=clip, output_scale=output_scale,
                        init_binary_=binary_kernels == "bop")
    return _finish(layer, init, binary_kernels)


@torch.no_grad()
def _finish(layer: nn.Module, init: str | None, binary_kernels: str) -> nn.Module:
    """Apply the Keras-style initializer; Bop kernels then start at sign0 of it (±1), as the
    spec asks (R4: binary kernels initialised to ±1, not left real-valued as in seed 004)."""
    if init is not None:
        init_(layer, init)
    if binary_kernels == "bop":
        layer.weight.copy_(q.sign0(layer.weight))
    return layer


def blurpool(channels: int, stride: int = 2) -> nn.Conv2d:
    """Anti-aliasing blur before subsampling (Zhang 2019, "Making Convolutional Networks
    Shift-Invariant Again", arXiv 1904.11486): a depthwise 3×3 convolution with the fixed
    binomial kernel [1, 2, 1] ⊗ [1, 2, 1] / 16, "same" padding, no bias, not trainable.

    It is a plain frozen ``nn.Conv2d`` (``requires_grad=False``) so converters see an
    ordinary depthwise float convolution. QuickNet's transition blocks use it.
    """
    conv = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)
    k1 = torch.tensor([1.0, 2.0, 1.0])
    k = torch.outer(k1, k1) / 16.0
    with torch.no_grad():
        conv.weight.copy_(k.expand(channels, 1, 3, 3))
    conv.weight.requires_grad_(False)
    return conv


# ----------------------------------------------------------------------------- init


def _fans(weight: torch.Tensor, groups: int = 1) -> tuple[int, int]:
    """Keras' (fan_in, fan_out) for a torch weight (out, in/groups, *kernel)."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    out_ch, in_per_group = int(weight.shape[0]), int(weight.shape[1])
    if groups > 1 and in_per_group == 1:  # depthwise: Keras kernel (kh, kw, C, multiplier)
        return receptive * groups, receptive * (out_ch // groups)
    return in_per_group * receptive, out_ch * receptive


# Keras' truncated normal is cut at ±2 std and rescaled by this factor to keep the variance.
_TRUNC_STD = 0.87962566103423978

INITS = ("glorot_uniform", "glorot_normal", "he_normal", "uniform1")


def _trunc_normal_(w: torch.Tensor, std: float) -> torch.Tensor:
    """N(0, std²) truncated to ±2·std by inverting the CDF on U(Φ(−2), Φ(2)) (one pass; torch's
    ``trunc_normal_`` resamples in a loop, seconds for the zoo's multi-million weight layers)."""
    lo = 0.5 * (1.0 + math.erf(-2.0 / math.sqrt(2.0)))
    w.uniform_(2.0 * lo - 1.0, 1.0 - 2.0 * lo).erfinv_().mul_(std * math.sqrt(2.0))
    return w.clamp_(-2.0 * std, 2.0 * std)


@torch.no_grad()
def init_(layer: nn.Module, kind: str) -> nn.Module:
    """Initialize ``layer.weight`` like Keras' initializer ``kind`` and zero its bias.

    * ``glorot_uniform``: U(±√(6 / (fan_in + fan_out))) (Keras' default);
    * ``glorot_normal``: truncated normal, std √(2 / (fan_in + fan_out));
    * ``he_normal``: truncated normal, std √(2 / fan_in);
    * ``uniform1``: U(−1, 1), BinaryNet's binary-weight init (H = 1, Courbariaux et al. 2016).
    """
    check_choice("init", kind, INITS)
    w = layer.weight
    fan_in, fan_out = _fans(w, getattr(layer, "groups", 1))
    if kind == "glorot_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w.uniform_(-bound, bound)
    elif kind == "uniform1":
        w.uniform_(-1.0, 1.0)
    else:
        var = 2.0 / (fan_in + fan_out) if kind == "glorot_normal" else 2.0 / fan_in
        _trunc_normal_(w, math.sqrt(var) / _TRUNC_STD)
    if getattr(layer, "bias", None) is not None:
        layer.bias.zero_()
    return layer


# ----------------------------------------------------------------------------- shapes


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution / pool along one axis (floor mode)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pool_out(size: int, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False) -> int:
    """Output length of a PyTorch pool along one axis."""
    num = size + 2 * padding - kernel
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def check_input_shape(input_shape, ndim: int = 3, *, name: str = "input_shape") -> tuple[int, ...]:
    """``input_shape`` as a tuple of ``ndim`` positive ints, or a ValueError naming the problem."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of {ndim} ints, got {input_shape!r}") from None
    if len(shape) != ndim or any(s <= 0 for s in shape):
        what = "(C, H, W)" if ndim == 3 else "(C, L)" if ndim == 2 else f"{ndim} positive ints"
        raise ValueError(f"{name} must be {what} with positive sizes, got {input_shape!r}")
    return shape


def too_small(model: str, input_shape: tuple[int, ...], detail: str) -> ValueError:
    """The error for an input too small for a model's fixed downsampling."""
    return ValueError(f"{model}: input_shape {input_shape} is too small ({detail})")


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean over all spatial axes: (N, C, *spatial) -> (N, C)."""
    return x.flatten(2).mean(dim=2)


def pad_same_avgpool2x2() -> nn.AvgPool2d:
    """Keras ``AvgPool2D(2, strides=2, padding="same")`` exactly: windows clipped at the
    bottom/right edge and averaged over the inside taps only."""
    return nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
