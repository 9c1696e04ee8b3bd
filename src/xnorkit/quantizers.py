"""Quantizers: the forward rule and the pseudo-gradient that make a network binary.

A quantizer maps a real tensor to a small set of values (usually {-1, +1}) in the forward
pass. Its true derivative is zero almost everywhere, so training uses a *pseudo-gradient*
(a straight-through estimator, STE) in the backward pass. Each quantizer exists twice:

* a plain function (``ste_sign(x, clip_value=1.0)``) implemented with a custom
  :class:`torch.autograd.Function`, and
* a small :class:`torch.nn.Module` wrapper (``SteSign(clip_value=1.0)``) that stores the
  configuration, declares what the quantizer is for export (:attr:`Quantizer.precision`,
  :attr:`Quantizer.values`, :attr:`Quantizer.scale_mode`, :attr:`Quantizer.description`)
  and is what the layers of :mod:`xnorkit.nn` hold.

Every wrapper is registered in :data:`QUANTIZERS` under a string alias equal to its
function's name, so a layer accepts ``input_quantizer="ste_sign"``::

    >>> import torch
    >>> from xnorkit.quantizers import get_quantizer, ste_sign
    >>> x = torch.tensor([-1.5, -0.5, 0.0, 0.5, 1.5], requires_grad=True)
    >>> ste_sign(x)
    tensor([-1., -1.,  1.,  1.,  1.], grad_fn=<_SignSTEBackward>)
    >>> ste_sign(x).sum().backward(); x.grad
    tensor([0., 1., 1., 1., 0.])
    >>> get_quantizer("ste_sign")
    SteSign(clip_value=1.0)

Sign convention (fixed project-wide, see ARCHITECTURE.md): ``sign0(x) = +1 if x >= 0 else
-1``; zero, including ``-0.0``, maps to +1, exactly like the deployed bit packing (bit 1
means -1). Only :func:`leaky_sign` (a TensorFlow ``tf.sign`` compatibility mode) maps zero
to 0. NaN inputs are unsupported (their sign follows the NaN's sign bit).

The forward and backward rules are each one or two fused tensor operations (no Python
loops, no boolean intermediate tensors on the hot path of :func:`ste_sign`), so a quantized
layer costs little more to train than its float twin (``benchmarks/train_overhead.py``).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, ClassVar

import torch
from torch import nn

__all__ = [
    "QUANTIZERS",
    "Quantizer",
    "CallableQuantizer",
    "register_quantizer",
    "get_quantizer",
    "sign0",
    # functions
    "ste_sign",
    "approx_sign",
    "swish_sign",
    "magnitude_aware_sign",
    "ste_heaviside",
    "ste_tern",
    "dorefa",
    "leaky_sign",
    "bmxnet_sign",
    "noop",
    # modules
    "SteSign",
    "ApproxSign",
    "SwishSign",
    "MagnitudeAwareSign",
    "SteHeaviside",
    "SteTern",
    "DoReFa",
    "LeakySign",
    "BMXNetSign",
    "NoOp",
]


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------

def _check_tensor(x, fn: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected a floating-point tensor, got dtype {x.dtype}")


def _check_positive(value, name: str, fn: str, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{fn}: {name} must be a positive number{' or None' if allow_none else ''}, "
                        f"got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{fn}: {name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_bits(k, name: str, fn: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{fn}: {name} must be an int in 1..32, got {k!r}")
    if not 1 <= k <= 32:
        raise ValueError(f"{fn}: {name} must be in 1..32, got {k}")
    return k


# --------------------------------------------------------------------------------------------
# fused primitives
# --------------------------------------------------------------------------------------------

def sign0(x: torch.Tensor) -> torch.Tensor:
    """The deployed sign: ``+1`` where ``x >= 0`` (``-0.0`` included), ``-1`` elsewhere.

    Not differentiable (the result is detached; use :func:`ste_sign` in training code).
    Implemented as ``copysign(1, x + 0)`` in two passes: adding ``+0.0`` turns ``-0.0`` into
    ``+0.0``, so the result equals the bit packing's ``x >= 0`` rule exactly.
    """
    t = x.detach() + 0.0
    return torch.copysign(t.new_ones(()), t, out=t)


@functools.lru_cache(maxsize=256)
def _strict_bound(c: float, dtype: torch.dtype) -> float:
    """Smallest value t of ``dtype`` with ``|x| <= c  <=>  |x| < t`` for every x of ``dtype``.

    Lets the inclusive mask 1{|x| <= c} use ATen's fused ``hardtanh_backward`` kernel, whose
    window is the open interval (-t, t).
    """
    inf = torch.tensor(math.inf, dtype=dtype)
    cd = torch.tensor(c, dtype=torch.float64).to(dtype)  # round to nearest
    if cd.item() > c:  # rounded up: the largest representable value <= c is one step below
        cd = torch.nextafter(cd, -inf)
    return torch.nextafter(cd, inf).item()


_FUSED_MASK_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _window_grad(grad: torch.Tensor, x: torch.Tensor, clip: float | None) -> torch.Tensor:
    """``grad * 1{|x| <= clip}`` (``grad`` unchanged when ``clip`` is None), one fused kernel."""
    if clip is None:
        return grad
    if x.dtype in _FUSED_MASK_DTYPES and grad.dtype == x.dtype:
        t = _strict_bound(clip, x.dtype)
        return torch.ops.aten.hardtanh_backward(grad, x, -t, t)
    return grad * (x.abs().double() <= clip).to(grad.dtype)  # c itself, not c rounded to x's dtype


# --------------------------------------------------------------------------------------------
# autograd rules
# --------------------------------------------------------------------------------------------

class _SignSTE(torch.autograd.Function):
    """forward sign0(x); backward g * 1{|x| <= clip} (identity when clip is None)."""

    @staticmethod
    def forward(ctx, x, clip):
        ctx.save_for_backward(x)
        ctx.clip = clip
        return sign0(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _window_grad(grad, x, ctx.clip), None


class _ApproxSign(torch.autograd.Function):
    """forward sign0(x); backward g * max(0, 2 - 2|x|)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign0(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.abs().neg_().add_(1.0).clamp_(min=0.0).mul_(2.0)


class _SwishSign(torch.autograd.Function):
    """forward sign0(x); backward g * beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))."""

    @staticmethod
    def forward(ctx, x, beta):
        ctx.save_for_backward(x)
        ctx.beta = beta
        return sign0(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        b = ctx.beta
        # beyond |b x| = 60 the derivative is below 1e-23; clamping keeps inf/huge x finite
        bx = (x * b).clamp_(-60.0, 60.0)
        d = (2.0 - bx * torch.tanh(bx * 0.5)).mul_(b).div_(torch.cosh(bx).add_(1.0))
        return grad * d, None


def _channel_mean_abs(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """alpha = mean |x| per output channel (dim 0) broadcastable to x, and the count n."""
    if x.dim() >= 2:
        n = x[0].numel()
        alpha = x.abs().mean(dim=tuple(range(1, x.dim())), keepdim=True)
    else:
        n = max(x.numel(), 1)
        alpha = x.abs().mean()
    return alpha, n


class _MagnitudeAwareSign(torch.autograd.Function):
    """forward alpha * sign0(x); backward g * (1/n + alpha * 1{|x| <= clip})."""

    @staticmethod
    def forward(ctx, x, clip):
        alpha, n = _channel_mean_abs(x)
        ctx.save_for_backward(x, alpha)
        ctx.clip, ctx.n = clip, n
        return sign0(x).mul_(alpha)

    @staticmethod
    def backward(ctx, grad):
        x, alpha = ctx.saved_tensors
        return _window_grad(grad, x, ctx.clip) * alpha + grad * (1.0 / ctx.n), None


class _Heaviside(torch.autograd.Function):
    """forward 1{x >= 0}; backward g * 1{|x| <= clip}."""

    @staticmethod
    def forward(ctx, x, clip):
        ctx.save_for_backward(x)
        ctx.clip = clip
        return sign0(x).add_(1.0).mul_(0.5)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _window_grad(grad, x, ctx.clip), None


class _Tern(torch.autograd.Function):
    """forward sign(x) * 1{|x| >= threshold}; backward g * 1{|x| <= clip}."""

    @staticmethod
    def forward(ctx, x, threshold, twn, clip):
        if twn:
            t = x.abs().mean().mul_(0.7)
        else:
            t = torch.tensor(threshold, dtype=x.dtype, device=x.device)
        ctx.save_for_backward(x)
        ctx.clip = clip
        return (x >= t).to(x.dtype) - (x <= -t).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _window_grad(grad, x, ctx.clip), None, None, None


class _LeakySign(torch.autograd.Function):
    """forward tf.sign(x) (0 -> 0); backward clip(g, -1, 1)."""

    @staticmethod
    def forward(ctx, x):
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(-1.0, 1.0)


class _DoReFaActivation(torch.autograd.Function):
    """k > 1: forward q_k(clip(x, 0, 1)) (k = 32: clip only); backward identity."""

    @staticmethod
    def forward(ctx, x, k):
        y = x.clamp(0.0, 1.0)
        if k < 32:
            n = float(2 ** k - 1)
            y = y.mul_(n).add_(0.5).floor_().div_(n)
        return y

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _DoReFaWeight(torch.autograd.Function):
    """1 < k < 32: forward 2 q_k(tanh(w) / (2 max|tanh w|) + 1/2) - 1; backward identity."""

    @staticmethod
    def forward(ctx, x, k):
        t = torch.tanh(x)
        m = t.abs().max().mul_(2.0).clamp_(min=torch.finfo(x.dtype).tiny)
        n = float(2 ** k - 1)
        q = t.div_(m).add_(0.5).mul_(n).add_(0.5).floor_().div_(n)
        return q.mul_(2.0).sub_(1.0)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _IdentitySTE(torch.autograd.Function):
    """forward sign0(x); backward identity (BMXNet 1-bit weights, gradient mode 'bf')."""

    @staticmethod
    def forward(ctx, x):
        return sign0(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


# --------------------------------------------------------------------------------------------
# functions
# --------------------------------------------------------------------------------------------

def ste_sign(x: torch.Tensor, clip_value: float | None = 1.0) -> torch.Tensor:
    r"""Sign with the hard-tanh straight-through estimator (BinaryNet).

    Forward:
        q(x) = sign0(x) = +1 if x >= 0 else -1   (0 -> +1)

    Pseudo-gradient (the derivative of hard-tanh, clip(x, -c, c)):
        dq/dx = 1{|x| <= c}, with c = ``clip_value`` (the window includes its edges);
        ``clip_value=None`` passes the gradient unchanged (dq/dx = 1).

    Args:
        x: floating-point tensor.
        clip_value: c > 0, or None for no gradient window.

    Returns:
        A tensor of x's shape and dtype with values in {-1, +1}.

    References:
        Courbariaux, Hubara, Soudry, El-Yaniv, Bengio, "Binarized Neural Networks: Training
        Deep Neural Networks with Weights and Activations Constrained to +1 or -1",
        arXiv:1602.02830 (2016). Bengio, Léonard, Courville, "Estimating or Propagating
        Gradients Through Stochastic Neurons", arXiv:1308.3432 (2013).
    """
    _check_tensor(x, "ste_sign")
    clip = _check_positive(clip_value, "clip_value", "ste_sign", allow_none=True)
    return _SignSTE.apply(x, clip)


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    r"""Sign with the piecewise-polynomial pseudo-gradient of Bi-Real Net.

    Forward:
        q(x) = sign0(x)   (0 -> +1)

    Pseudo-gradient (derivative of the ApproxSign polynomial
    F(x) = -1 for x < -1, 2x + x^2 on [-1, 0), 2x - x^2 on [0, 1), +1 for x >= 1):
        dq/dx = (2 - 2|x|) * 1{|x| <= 1}

    References:
        Liu, Wu, Luo, Yang, Liu, Cheng, "Bi-Real Net: Enhancing the Performance of 1-bit CNNs
        With Improved Representational Capability and Advanced Training Algorithm",
        ECCV 2018, arXiv:1808.00278.
    """
    _check_tensor(x, "approx_sign")
    return _ApproxSign.apply(x)


def swish_sign(x: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    r"""Sign with the SignSwish pseudo-gradient (BNN+).

    Forward:
        q(x) = sign0(x)   (0 -> +1)

    Pseudo-gradient, the derivative of SS_b(x) = 2 sigmoid(b x) (1 + b x (1 - sigmoid(b x))) - 1:
        dq/dx = b (2 - b x tanh(b x / 2)) / (1 + cosh(b x)),   b = ``beta``.
    It peaks at b for x = 0 and is slightly negative for |x| > 2.4/b.

    References:
        Darabi, Belbahri, Courbariaux, Partovi Nia, "BNN+: Improved Binary Network Training",
        arXiv:1812.11800 (2018).
    """
    _check_tensor(x, "swish_sign")
    b = _check_positive(beta, "beta", "swish_sign")
    return _SwishSign.apply(x, b)


def magnitude_aware_sign(x: torch.Tensor, clip_value: float | None = 1.0) -> torch.Tensor:
    r"""XNOR-Net weight binarization: sign scaled by the mean magnitude per output channel.

    Forward (W with the output channel on dim 0, n = elements per output channel):
        alpha_o = ||W_o||_1 / n,   q(W)_o = alpha_o * sign0(W_o)
    A tensor with fewer than 2 dims uses one alpha for the whole tensor.

    Pseudo-gradient (the paper's rule, §3.2: the STE of sign plus the diagonal term of the
    derivative of alpha; cross terms are dropped):
        dC/dW_i = dC/dq_i * (1/n + alpha * 1{|W_i| <= c}),   c = ``clip_value``
    (``clip_value=None`` removes the window). larq's ``MagnitudeAwareSign`` instead stops
    the gradient through alpha (no 1/n term); this follows the XNOR-Net paper.

    Export: ``scale_mode = "per_channel_mean_abs"`` (alpha is recomputed from the latent
    weights by the converter).

    References:
        Rastegari, Ordonez, Redmon, Farhadi, "XNOR-Net: ImageNet Classification Using Binary
        Convolutional Neural Networks", ECCV 2016, arXiv:1603.05279.
    """
    _check_tensor(x, "magnitude_aware_sign")
    clip = _check_positive(clip_value, "clip_value", "magnitude_aware_sign", allow_none=True)
    return _MagnitudeAwareSign.apply(x, clip)


def ste_heaviside(x: torch.Tensor, clip_value: float | None = 1.0) -> torch.Tensor:
    r"""Binarization to {0, 1} with a straight-through estimator.

    Forward:
        q(x) = 1 if x >= 0 else 0   (= (sign0(x) + 1) / 2, so 0 -> 1)
    larq maps 0 -> 0 (``x > 0``); xnorkit keeps the project-wide ``x >= 0`` rule so that a
    {0, 1} activation packs to the same bit as the sign of the same input.

    Pseudo-gradient:
        dq/dx = 1{|x| <= c},   c = ``clip_value`` (None: no window).

    References:
        Bengio, Léonard, Courville, arXiv:1308.3432 (2013) (straight-through estimator).
    """
    _check_tensor(x, "ste_heaviside")
    clip = _check_positive(clip_value, "clip_value", "ste_heaviside", allow_none=True)
    return _Heaviside.apply(x, clip)


def ste_tern(x: torch.Tensor, threshold_value: float = 0.05, ternary_weight_networks: bool = False,
             clip_value: float | None = 1.0) -> torch.Tensor:
    r"""Ternarization to {-1, 0, +1} with a straight-through estimator.

    Forward, with threshold t:
        q(x) = +1 if x >= t,  -1 if x <= -t,  0 otherwise
    t = ``threshold_value``, or with ``ternary_weight_networks=True`` the TWN rule
    t = 0.7 * mean(|x|) over the whole tensor (no scaling factor is applied).

    Pseudo-gradient:
        dq/dx = 1{|x| <= c},   c = ``clip_value`` (None: no window).

    References:
        Li, Zhang, Liu, "Ternary Weight Networks", arXiv:1605.04711 (2016).
    """
    _check_tensor(x, "ste_tern")
    if isinstance(threshold_value, bool) or not isinstance(threshold_value, (int, float)) \
            or not (threshold_value >= 0 and math.isfinite(threshold_value)):
        raise ValueError(f"ste_tern: threshold_value must be a finite number >= 0, got {threshold_value!r}")
    clip = _check_positive(clip_value, "clip_value", "ste_tern", allow_none=True)
    return _Tern.apply(x, float(threshold_value), bool(ternary_weight_networks), clip)


_DOREFA_MODES = ("activations", "weights")


def dorefa(x: torch.Tensor, k_bit: int = 2, mode: str = "activations") -> torch.Tensor:
    r"""DoReFa-style k-bit quantization with BMXNet's ``act_bit`` / ``weight_bit`` semantics.

    With q_k(a) = round((2^k - 1) a) / (2^k - 1) for a in [0, 1] (round half up):

    ``mode="activations"``:
        * k = 1: q(x) = sign0(x), pseudo-gradient 1{|x| <= 0.5} (BMXNet ``det_sign``);
        * 1 < k < 32: q(x) = q_k(clip(x, 0, 1)), pseudo-gradient 1 (no clip window);
        * k = 32: q(x) = clip(x, 0, 1) (BMXNet still clips), pseudo-gradient 1.

    ``mode="weights"``:
        * k = 1: q(w) = sign0(w) (no scale), pseudo-gradient 1;
        * 1 < k < 32: q(w) = 2 q_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1, max over the whole
          tensor, pseudo-gradient 1 (the gradient w.r.t. q(w) is applied to w unchanged,
          BMXNet's default "bf" mode; the DoReFa paper differentiates through tanh instead);
        * k = 32: no quantization, q(w) = w.

    Args:
        x: floating-point tensor.
        k_bit: bit width, 1..32.
        mode: ``"activations"`` or ``"weights"``.

    Raises:
        ValueError: ``k_bit`` outside 1..32 or an unknown ``mode``.

    References:
        Zhou, Wu, Ni, Zhou, Wen, Zou, "DoReFa-Net: Training Low Bitwidth Convolutional Neural
        Networks with Low Bitwidth Gradients", arXiv:1606.06160 (2016). Yang, Fritzsche,
        Bartz, Meinel, "BMXNet: An Open-Source Binary Neural Network Implementation Based on
        MXNet", ACM MM 2017, arXiv:1705.09864.
    """
    _check_tensor(x, "dorefa")
    k = _check_bits(k_bit, "k_bit", "dorefa")
    if mode not in _DOREFA_MODES:
        raise ValueError(f"dorefa: mode must be one of {_DOREFA_MODES}, got {mode!r}")
    if mode == "activations":
        if k == 1:
            return _SignSTE.apply(x, 0.5)
        return _DoReFaActivation.apply(x, k)
    if k == 1:
        return _IdentitySTE.apply(x)
    if k == 32:
        return x
    return _DoReFaWeight.apply(x, k)


def leaky_sign(x: torch.Tensor) -> torch.Tensor:
    r"""TensorFlow-compatible sign (``tf.sign``) with a clipped-gradient-value STE.

    Forward:
        q(x) = -1 if x < 0, 0 if x == 0, +1 if x > 0   (0 -> 0, "leaky")

    Pseudo-gradient (AngusG/tensorflow-xnor-bnn's ``QuantizeGrad``): the incoming gradient
    *value* is clipped, it is not masked by |x|:
        dC/dx = clip(dC/dq, -1, 1)

    Compatibility only: the deployed bit packing has no zero, so an exact 0 here becomes +1
    after conversion (the "zero leak" of spec §1.1). Prefer :func:`ste_sign`.

    References:
        Courbariaux et al., arXiv:1602.02830 (2016); AngusG/tensorflow-xnor-bnn
        (``models/binary_net.py``).
    """
    _check_tensor(x, "leaky_sign")
    return _LeakySign.apply(x)


def bmxnet_sign(x: torch.Tensor) -> torch.Tensor:
    r"""BMXNet's ``det_sign``: sign with a straight-through window of half-width 0.5.

    Forward:
        q(x) = sign0(x) = +1 if x >= 0 else -1   (0 -> +1)

    Pseudo-gradient:
        dq/dx = 1{|x| <= 0.5}

    References:
        Yang et al., "BMXNet", arXiv:1705.09864 (2017); the window was narrowed from 1.0 to
        0.5 in hpi-xnor/BMXNet commit e4fc9106 (``mshadow_op.h`` ``det_sign_grad``).
    """
    _check_tensor(x, "bmxnet_sign")
    return _SignSTE.apply(x, 0.5)


def noop(x: torch.Tensor) -> torch.Tensor:
    r"""Identity: q(x) = x, dq/dx = 1.

    Used on kernels trained by a latent-free optimizer (Bop): the optimizer keeps the weight
    at ±1 itself, and the wrapper ``NoOp(precision=1)`` only *declares* the weight binary so
    that routing and export treat it as 1-bit.

    References:
        Helwegen, Widdicombe, Geiger, Liu, Cheng, Nusselder, "Latent Weights Do Not Exist:
        Rethinking Binarized Neural Network Optimization", NeurIPS 2019, arXiv:1906.02107.
    """
    _check_tensor(x, "noop")
    return x


# --------------------------------------------------------------------------------------------
# modules and registry
# --------------------------------------------------------------------------------------------

#: alias (== function name) -> quantizer module class.
QUANTIZERS: dict[str, type["Quantizer"]] = {}
_BY_FUNCTION: dict[Callable, type["Quantizer"]] = {}


class Quantizer(nn.Module):
    """Base class of the quantizer modules.

    Subclasses set the class attribute ``function`` (the plain quantizer function) and
    implement :meth:`forward`. What export reads:

    Attributes:
        precision: bits per value (1 for sign types, 2 for ternary, k for DoReFa, 32 for a
            float pass-through).
        scale_mode: ``"none"`` or ``"per_channel_mean_abs"`` (XNOR-Net alpha).
        values: the finite set of output values, or None when it is not a fixed small set
            (scaled outputs, more than 2^8 levels, or a float pass-through).
        description: the alias with its arguments, e.g. ``"ste_sign(clip_value=1.0)"``.
    """

    function: ClassVar[Callable]
    alias: ClassVar[str]
    precision: int = 1
    scale_mode: str = "none"

    @property
    def values(self) -> tuple[float, ...] | None:
        return (-1.0, 1.0)

    def _args(self) -> dict:
        return {}

    @property
    def description(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._args().items())
        return f"{self.alias}({args})"

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._args().items())


def register_quantizer(cls: type[Quantizer]) -> type[Quantizer]:
    """Class decorator: register ``cls`` in :data:`QUANTIZERS` under its function's name.

    Raises:
        ValueError: the alias is already taken, or ``cls.function`` is missing.
    """
    fn = getattr(cls, "function", None)
    if not callable(fn):
        raise ValueError(f"register_quantizer: {cls.__name__} has no 'function' attribute")
    fn = getattr(fn, "__func__", fn)
    alias = fn.__name__
    if alias in QUANTIZERS and QUANTIZERS[alias] is not cls:
        raise ValueError(f"register_quantizer: alias {alias!r} is already registered to "
                         f"{QUANTIZERS[alias].__name__}")
    cls.alias = alias
    QUANTIZERS[alias] = cls
    _BY_FUNCTION[fn] = cls
    return cls


@register_quantizer
class SteSign(Quantizer):
    """Module form of :func:`ste_sign` (alias ``"ste_sign"``). Precision 1, values {-1, +1}."""

    function = staticmethod(ste_sign)

    def __init__(self, clip_value: float | None = 1.0):
        super().__init__()
        self.clip_value = _check_positive(clip_value, "clip_value", "SteSign", allow_none=True)

    def _args(self):
        return {"clip_value": self.clip_value}

    def forward(self, x):
        return ste_sign(x, self.clip_value)


@register_quantizer
class ApproxSign(Quantizer):
    """Module form of :func:`approx_sign` (alias ``"approx_sign"``). Precision 1."""

    function = staticmethod(approx_sign)

    def forward(self, x):
        return approx_sign(x)


@register_quantizer
class SwishSign(Quantizer):
    """Module form of :func:`swish_sign` (alias ``"swish_sign"``). Precision 1."""

    function = staticmethod(swish_sign)

    def __init__(self, beta: float = 5.0):
        super().__init__()
        self.beta = _check_positive(beta, "beta", "SwishSign")

    def _args(self):
        return {"beta": self.beta}

    def forward(self, x):
        return swish_sign(x, self.beta)


@register_quantizer
class MagnitudeAwareSign(Quantizer):
    """Module form of :func:`magnitude_aware_sign` (alias ``"magnitude_aware_sign"``).

    Precision 1, ``scale_mode="per_channel_mean_abs"``; outputs are ±alpha per output channel,
    so ``values`` is None.
    """

    function = staticmethod(magnitude_aware_sign)
    scale_mode = "per_channel_mean_abs"

    def __init__(self, clip_value: float | None = 1.0):
        super().__init__()
        self.clip_value = _check_positive(clip_value, "clip_value", "MagnitudeAwareSign", allow_none=True)

    @property
    def values(self):
        return None

    def _args(self):
        return {"clip_value": self.clip_value}

    def forward(self, x):
        return magnitude_aware_sign(x, self.clip_value)


@register_quantizer
class SteHeaviside(Quantizer):
    """Module form of :func:`ste_heaviside` (alias ``"ste_heaviside"``). Precision 1, values {0, 1}."""

    function = staticmethod(ste_heaviside)

    def __init__(self, clip_value: float | None = 1.0):
        super().__init__()
        self.clip_value = _check_positive(clip_value, "clip_value", "SteHeaviside", allow_none=True)

    @property
    def values(self):
        return (0.0, 1.0)

    def _args(self):
        return {"clip_value": self.clip_value}

    def forward(self, x):
        return ste_heaviside(x, self.clip_value)


@register_quantizer
class SteTern(Quantizer):
    """Module form of :func:`ste_tern` (alias ``"ste_tern"``). Precision 2, values {-1, 0, +1}."""

    function = staticmethod(ste_tern)
    precision = 2

    def __init__(self, threshold_value: float = 0.05, ternary_weight_networks: bool = False,
                 clip_value: float | None = 1.0):
        super().__init__()
        if isinstance(threshold_value, bool) or not isinstance(threshold_value, (int, float)) \
                or not (threshold_value >= 0 and math.isfinite(threshold_value)):
            raise ValueError(f"SteTern: threshold_value must be a finite number >= 0, got {threshold_value!r}")
        self.threshold_value = float(threshold_value)
        self.ternary_weight_networks = bool(ternary_weight_networks)
        self.clip_value = _check_positive(clip_value, "clip_value", "SteTern", allow_none=True)

    @property
    def values(self):
        return (-1.0, 0.0, 1.0)

    def _args(self):
        return {"threshold_value": self.threshold_value,
                "ternary_weight_networks": self.ternary_weight_networks,
                "clip_value": self.clip_value}

    def forward(self, x):
        return ste_tern(x, self.threshold_value, self.ternary_weight_networks, self.clip_value)


@register_quantizer
class DoReFa(Quantizer):
    """Module form of :func:`dorefa` (alias ``"dorefa"``). Precision ``k_bit``.

    ``values`` lists the 2^k levels for k <= 8 (activations: i / (2^k - 1); weights:
    2 i / (2^k - 1) - 1; k = 1: {-1, +1}) and is None above 8 bits.
    """

    function = staticmethod(dorefa)

    def __init__(self, k_bit: int = 2, mode: str = "activations"):
        super().__init__()
        self.k_bit = _check_bits(k_bit, "k_bit", "DoReFa")
        if mode not in _DOREFA_MODES:
            raise ValueError(f"DoReFa: mode must be one of {_DOREFA_MODES}, got {mode!r}")
        self.mode = mode
        self.precision = self.k_bit

    @property
    def values(self):
        k = self.k_bit
        if k == 1:
            return (-1.0, 1.0)
        if k > 8:
            return None
        n = 2 ** k - 1
        if self.mode == "activations":
            return tuple(i / n for i in range(n + 1))
        return tuple(2 * i / n - 1 for i in range(n + 1))

    def _args(self):
        return {"k_bit": self.k_bit, "mode": self.mode}

    def forward(self, x):
        return dorefa(x, self.k_bit, self.mode)


@register_quantizer
class LeakySign(Quantizer):
    """Module form of :func:`leaky_sign` (alias ``"leaky_sign"``). Precision 1, values {-1, 0, +1}."""

    function = staticmethod(leaky_sign)

    @property
    def values(self):
        return (-1.0, 0.0, 1.0)

    def forward(self, x):
        return leaky_sign(x)


@register_quantizer
class BMXNetSign(Quantizer):
    """Module form of :func:`bmxnet_sign` (alias ``"bmxnet_sign"``). Precision 1."""

    function = staticmethod(bmxnet_sign)

    def forward(self, x):
        return bmxnet_sign(x)


@register_quantizer
class NoOp(Quantizer):
    """Module form of :func:`noop` (alias ``"noop"``): identity that declares a precision.

    ``NoOp(precision=1)`` (the default, and what the alias ``"noop"`` gives) tags a kernel
    trained by Bop as binary; ``NoOp(precision=32)`` is a plain float pass-through.
    ``values`` is None: the identity does not enforce a value set (Bop keeps the weights at
    ±1; :func:`xnorkit.optim.init_binary_` sets them before training).
    """

    function = staticmethod(noop)

    def __init__(self, precision: int = 1):
        super().__init__()
        self.precision = _check_bits(precision, "precision", "NoOp")

    @property
    def values(self):
        return None

    def _args(self):
        return {"precision": self.precision}

    def forward(self, x):
        return noop(x)


class CallableQuantizer(Quantizer):
    """Wraps an arbitrary callable as a quantizer module (not registered, no alias).

    Args:
        fn: tensor -> tensor.
        precision: the bits per value it produces, or None when undeclared; a layer with an
            undeclared quantizer trains but cannot state an export spec.
        values: the finite set of output values, if known.
    """

    alias = "callable"

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], precision: int | None = None,
                 values: tuple[float, ...] | None = None):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"CallableQuantizer: fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.precision = None if precision is None else _check_bits(precision, "precision",
                                                                    "CallableQuantizer")
        self._values = None if values is None else tuple(float(v) for v in values)

    @property
    def values(self):
        return self._values

    @property
    def description(self):
        return f"callable({getattr(self.fn, '__name__', type(self.fn).__name__)})"

    def extra_repr(self):
        return f"fn={getattr(self.fn, '__name__', self.fn)!r}, precision={self.precision}"

    def forward(self, x):
        return self.fn(x)


def get_quantizer(spec) -> nn.Module | None:
    """Resolve a quantizer specification to a module.

    Args:
        spec: None (no quantizer), an alias string from :data:`QUANTIZERS`, an
            ``nn.Module`` (returned as is), a quantizer class (instantiated with its
            defaults), a registered quantizer function (e.g. :func:`ste_sign`, mapped to its
            module with default arguments) or any other callable (wrapped in
            :class:`CallableQuantizer`, precision undeclared).

    Returns:
        The quantizer module, or None.

    Raises:
        ValueError: unknown alias (the message lists the known ones).
        TypeError: spec of another type.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        cls = QUANTIZERS.get(spec)
        if cls is None:
            raise ValueError(f"unknown quantizer {spec!r}; known aliases: {sorted(QUANTIZERS)}")
        return cls()
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, type):
        if issubclass(spec, nn.Module):
            return spec()
        raise TypeError(f"get_quantizer: a class given as quantizer must be an nn.Module "
                        f"subclass, got {spec.__name__}")
    if callable(spec):
        cls = _BY_FUNCTION.get(spec)
        return cls() if cls is not None else CallableQuantizer(spec)
    raise TypeError(f"get_quantizer: expected None, an alias string, an nn.Module or a callable, "
                    f"got {type(spec).__name__} ({spec!r})")
