"""Autograd functions: binary linear / conv2d whose forward runs on packed bits.

The inputs are the *quantized* tensors of a binary layer (activations and weights already ±1,
e.g. the outputs of ``ste_sign``), so the straight-through estimators stay where they are, in
the quantizers. Forward: fused sign+pack of both operands, then the binary GEMM; the integer
sums equal the float simulation's bit for bit. Backward: the very same float matmul /
convolution-backward calls that autograd makes for ``F.linear`` / ``F.conv2d``, so the gradients
equal the float simulation's exactly, and the quantizers' STE rules apply unchanged upstream.

Values must be exactly ±1 for the forward to equal the float simulation (anything >= 0 counts
as +1, anything else as -1; the functions do not check, to avoid a device sync per call).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch
import torch.nn.functional as F

from . import bgemm, interpreting, pack, unavailable_reason

__all__ = ["xnor_linear", "xnor_conv2d", "use_binary_kernels", "binary_kernels_enabled", "routes"]

_FLOAT_EXACT_K = 1 << 24  # integer sums are exact in float32 below this many bits


def _result_dtype(x: torch.Tensor, w: torch.Tensor) -> torch.dtype:
    dt = torch.result_type(x, w)
    if not dt.is_floating_point:
        raise TypeError(f"binary kernels need floating-point ±1 tensors, got {x.dtype} and {w.dtype}")
    return dt


def _check_k(k: int, name: str) -> None:
    if k >= _FLOAT_EXACT_K:
        raise ValueError(f"{name}: reduction length {k} >= 2**24; float32 cannot hold the sums exactly")


class _XnorLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias):
        ctx.save_for_backward(x, w)
        ctx.has_bias = bias is not None
        k = x.shape[-1]
        n = w.shape[0]
        y = bgemm(pack(x.reshape(-1, k)), pack(w), k, out="float").to(_result_dtype(x, w))
        if bias is not None:
            y = y + bias.to(y.dtype)  # one rounding of (exact sum + bias), as addmm does
        return y.reshape(*x.shape[:-1], n)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        k, n = x.shape[-1], w.shape[0]
        g2 = g.reshape(-1, n)
        gx = gw = gb = None
        # The same products autograd forms for F.linear (addmm/mm backward): g @ w, g^T @ x,
        # and the bias gradient summed over the rows.
        if ctx.needs_input_grad[0]:
            gx = g2.mm(w).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            gw = g2.t().mm(x.reshape(-1, k))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb


def xnor_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, w, bias)`` for ±1 ``x`` and ``w``, forward on packed bits.

    Args:
        x: (..., K) ±1 activations (CUDA, or CPU in Triton interpreter mode).
        w: (N, K) ±1 weights on the same device.
        bias: (N,) or None.

    Returns:
        (..., N) tensor of dtype ``result_type(x, w)``: the exact integer sums (+ bias).
    """
    if x.dim() < 1 or w.dim() != 2:
        raise ValueError(f"xnor_linear: expected x (..., K) and w (N, K), got {tuple(x.shape)} and {tuple(w.shape)}")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"xnor_linear: x has K={x.shape[-1]} features but w has K={w.shape[1]}")
    if x.device != w.device:
        raise ValueError(f"xnor_linear: x is on {x.device} but w is on {w.device}")
    if bias is not None and bias.shape != (w.shape[0],):
        raise ValueError(f"xnor_linear: bias must have shape ({w.shape[0]},), got {tuple(bias.shape)}")
    _check_k(x.shape[-1], "xnor_linear")
    return _XnorLinear.apply(x, w, bias)


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(i) for i in v)
    if len(t) != 2:
        raise ValueError(f"xnor_conv2d: {name} must be an int or a pair, got {v!r}")
    return t


def _conv_bits(xp: torch.Tensor, w: torch.Tensor, stride, dilation) -> torch.Tensor:
    """Exact integer conv of ±1 ``xp`` (already padded) with ±1 ``w``: (N, O, Ho, Wo) float32.

    Channels are packed per pixel (NHWC bits, C padded to 64 with zero bits in both operands),
    then im2col runs on the packed words (32x less data than a float unfold); the zero padding
    bits agree in both operands, so each tap adds exactly ``pad_bits`` to the raw sum, which is
    subtracted.
    """
    n, c, h, wd = xp.shape
    o, _, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    ho = (h - dh * (kh - 1) - 1) // sh + 1
    wo = (wd - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"xnor_conv2d: kernel {kh}x{kw} (dilation {dilation}) is larger than the padded input {h}x{wd}")
    xb = pack(xp.permute(0, 2, 3, 1))  # (N, H, W, Wc) int32, C along the words
    wc = xb.shape[-1]
    s = xb.stride()
    cols = xb.as_strided(
        (n, ho, wo, kh, kw, wc), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3])
    ).reshape(n * ho * wo, kh * kw * wc)
    wb = pack(w.permute(0, 2, 3, 1)).reshape(o, kh * kw * wc)
    kbits = 32 * kh * kw * wc
    d = bgemm(cols, wb, kbits, out="int32")
    pad_bits = kh * kw * (32 * wc - c)
    y = (d - pad_bits).to(torch.float32) if pad_bits else d.to(torch.float32)
    return y.reshape(n, ho, wo, o).permute(0, 3, 1, 2).contiguous()


class _XnorConv2d(torch.autograd.Function):
    """pads = (top, bottom, left, right); mode says how the float op it mirrors padded:
    "conv" (padding inside F.conv2d, symmetric), "same" (F.conv2d(padding="same"): an extra
    zero row/column on the bottom/right via constant_pad_nd, then symmetric), "explicit"
    (F.pad with pad_value, then no padding)."""

    @staticmethod
    def forward(ctx, x, w, bias, stride, dilation, groups, pads, mode, pad_value):
        top, bottom, left, right = pads
        padded = any(pads)
        fill = 1.0 if pad_value == 0.0 else float(pad_value)  # zero padding: +1, corrected below
        xp = F.pad(x, (left, right, top, bottom), value=fill) if padded else x
        cg = x.shape[1] // groups
        og = w.shape[0] // groups
        outs = []
        for gi in range(groups):
            xs = xp[:, gi * cg:(gi + 1) * cg] if groups > 1 else xp
            ws = w[gi * og:(gi + 1) * og] if groups > 1 else w
            outs.append(_conv_bits(xs, ws, stride, dilation))
        y = torch.cat(outs, 1) if groups > 1 else outs[0]
        if pad_value == 0.0 and padded:
            # Padded taps were packed as +1; zero padding contributes nothing, so remove
            # sum(w over the padded taps) = conv(border indicator, per-group channel sums of w).
            ind = torch.ones((1, 1, x.shape[2], x.shape[3]), dtype=torch.float32, device=x.device)
            ind = 1.0 - F.pad(ind, (left, right, top, bottom), value=0.0)
            wsum = w.to(torch.float32).reshape(groups, og, cg, *w.shape[2:]).sum(2).reshape(w.shape[0], 1, *w.shape[2:])
            y = y - F.conv2d(ind.expand(1, groups, -1, -1), wsum, None, stride, 0, dilation, groups)
        y = y.to(_result_dtype(x, w))
        if bias is not None:
            y = y + bias.to(y.dtype).reshape(1, -1, 1, 1)  # one rounding of (exact sum + bias), as conv does
        ctx.conv = (stride, dilation, groups, pads, mode, pad_value)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, w)
        return y

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        stride, dilation, groups, (top, bottom, left, right), mode, pad_value = ctx.conv
        if mode == "explicit":
            xin, conv_pad, crop = F.pad(x, (left, right, top, bottom), value=float(pad_value)), (0, 0), (top, left)
        elif mode == "same" and (bottom != top or right != left):
            xin = F.pad(x, (0, right - left, 0, bottom - top), value=0.0)  # _convolution_mode's pad
            conv_pad, crop = (top, left), (0, 0)
        else:
            xin, conv_pad, crop = x, (top, left), None
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        # Exactly the call autograd makes for F.conv2d (ConvolutionBackward0).
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g, xin, w, [w.shape[0]] if ctx.has_bias else None, list(stride), list(conv_pad), list(dilation),
            False, [0, 0], groups, mask,
        )
        if crop is not None and gx is not None:
            gx = gx[:, :, crop[0]:crop[0] + x.shape[2], crop[1]:crop[1] + x.shape[3]]  # F.pad's backward
        return gx, gw, gb, None, None, None, None, None, None


def xnor_conv2d(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    pad_value: float = 0.0,
) -> torch.Tensor:
    """``F.conv2d(x, w, bias, stride, padding, dilation, groups)`` for ±1 x and w, on packed bits.

    Args:
        x: (N, C, H, W) ±1 activations; w: (O, C / groups, kh, kw) ±1 weights; bias: (O,) or None.
        padding: int, pair, "valid" or "same" (stride 1, as F.conv2d).
        pad_value: value of the padded border: 0.0 (F.conv2d semantics, corrected exactly),
            +1.0 or -1.0. With ±1 the gradients are those of
            ``F.conv2d(F.pad(x, value=pad_value), w, bias, stride, 0, dilation, groups)``.

    Returns:
        (N, O, Ho, Wo) tensor of dtype ``result_type(x, w)``: exact integer sums (+ bias).
    """
    if x.dim() != 4 or w.dim() != 4:
        raise ValueError(f"xnor_conv2d: expected 4-D x and w, got {tuple(x.shape)} and {tuple(w.shape)}")
    if pad_value not in (0.0, 1.0, -1.0):
        raise ValueError(f"xnor_conv2d: pad_value must be 0, +1 or -1, got {pad_value}")
    groups = int(groups)
    if groups < 1 or x.shape[1] % groups or w.shape[0] % groups or w.shape[1] * groups != x.shape[1]:
        raise ValueError(
            f"xnor_conv2d: channels do not match groups={groups}: x has {x.shape[1]}, w is {tuple(w.shape)}"
        )
    if x.device != w.device:
        raise ValueError(f"xnor_conv2d: x is on {x.device} but w is on {w.device}")
    if bias is not None and bias.shape != (w.shape[0],):
        raise ValueError(f"xnor_conv2d: bias must have shape ({w.shape[0]},), got {tuple(bias.shape)}")
    _check_k(w.shape[1] * w.shape[2] * w.shape[3], "xnor_conv2d")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    mode = "conv"
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError("xnor_conv2d: padding='same' needs stride 1 (as F.conv2d)")
            th, tw = dilation[0] * (w.shape[2] - 1), dilation[1] * (w.shape[3] - 1)
            pads, mode = (th // 2, th - th // 2, tw // 2, tw - tw // 2), "same"
        else:
            raise ValueError(f"xnor_conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        ph, pw = _pair(padding, "padding")
        pads = (ph, ph, pw, pw)
    if pad_value != 0.0 and any(pads):
        if mode == "same":
            raise ValueError("xnor_conv2d: padding='same' with a nonzero pad_value: pass explicit ints")
        mode = "explicit"
    return _XnorConv2d.apply(x, w, bias, stride, dilation, groups, pads, mode, float(pad_value))


# --------------------------------------------------------------------------- layer routing
_enabled = threading.local()


@contextlib.contextmanager
def use_binary_kernels(enabled: bool = True, *, force: bool = False) -> Iterator[None]:
    """Route binary QuantLinear / QuantConv2d forwards through the packed-bit kernels.

    Inside the block, a layer whose input and weight quantizers are both 1-bit sign-type computes
    its product with :func:`xnor_linear` / :func:`xnor_conv2d` when its tensors are on CUDA
    (seed 000's ``--xnor``). ``force=True`` also routes CPU tensors, which only works in Triton
    interpreter mode (tests). Outside the block, or when the kernels are unavailable, layers use
    the float simulation.
    """
    prev = getattr(_enabled, "value", None)
    _enabled.value = (bool(enabled), bool(force))
    try:
        yield
    finally:
        _enabled.value = prev


def binary_kernels_enabled(t: torch.Tensor) -> bool:
    """Whether a binary layer seeing tensor ``t`` should use the packed-bit kernels now."""
    state = getattr(_enabled, "value", None)
    if not state or not state[0]:
        return False
    if t.device.type == "cuda":
        return unavailable_reason() is None
    return state[1] and t.device.type == "cpu" and interpreting() and unavailable_reason() is None


# Fallback for quantizer modules that do not declare ``values``: classes known to output exactly
# ±1. Not ±1: LeakySign (0 -> 0), SteHeaviside ({0, 1}), MagnitudeAwareSign (±alpha), NoOp
# (identity; ±1 only if the weights happen to be), DoReFa/SteTern (multi-level).
SIGN_QUANTIZERS = frozenset({"SteSign", "ApproxSign", "SwishSign", "BMXNetSign"})


def _is_pm1(q) -> bool:
    """Whether quantizer module ``q`` declares (``values``) or is known to output exactly ±1."""
    if q is None:
        return False
    values = getattr(q, "values", None)
    if values is not None:
        try:
            return set(float(v) for v in values) == {-1.0, 1.0}
        except TypeError:
            return False
    return type(q).__name__ in SIGN_QUANTIZERS


def routes(layer: torch.nn.Module, t: torch.Tensor) -> bool:
    """Whether binary ``layer`` seeing tensor ``t`` should run on the packed-bit kernels now.

    True inside :func:`use_binary_kernels` (and where the kernels can run on ``t``'s device) for a
    layer whose input and weight quantizers both output exactly ±1 (their ``values`` is
    {-1, +1}; e.g. ste_sign, approx_sign, swish_sign, bmxnet_sign) and whose export spec, if it
    has one, says 1-bit inputs and weights with no weight scale.
    """
    if not binary_kernels_enabled(t):
        return False
    if not (_is_pm1(getattr(layer, "input_quantizer", None)) and _is_pm1(getattr(layer, "weight_quantizer", None))):
        return False
    if isinstance(layer, torch.nn.Conv2d):
        if t.dim() != 4:  # unbatched input: leave it to F.conv2d
            return False
        if layer.groups > 1 and layer.groups == layer.in_channels:  # depthwise: K = kh*kw bits, no gain
            return False
    spec_fn = getattr(layer, "export_spec", None)
    if spec_fn is not None:
        spec = spec_fn()
        if getattr(spec, "input_bits", 1) != 1 or getattr(spec, "weight_bits", 1) != 1:
            return False
        if getattr(spec, "weight_scale", "none") not in ("none", None):
            return False
    return True
