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
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        k = x.shape[-1]
        n = w.shape[0]
        y = bgemm(pack(x.reshape(-1, k)), pack(w), k, out="float")
        return y.to(_result_dtype(x, w)).reshape(*x.shape[:-1], n)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        k, n = x.shape[-1], w.shape[0]
        g2 = g.reshape(-1, n)
        gx = gw = None
        # The same products autograd forms for F.linear (mm backward): g @ w and g^T @ x.
        if ctx.needs_input_grad[0]:
            gx = g2.mm(w).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            gw = g2.t().mm(x.reshape(-1, k))
        return gx, gw


def xnor_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, w)`` for ±1 tensors, forward on packed bits (no bias; add it outside).

    Args:
        x: (..., K) ±1 activations (CUDA, or CPU in Triton interpreter mode).
        w: (N, K) ±1 weights on the same device.

    Returns:
        (..., N) tensor of dtype ``result_type(x, w)`` holding the exact integer sums.
    """
    if x.dim() < 1 or w.dim() != 2:
        raise ValueError(f"xnor_linear: expected x (..., K) and w (N, K), got {tuple(x.shape)} and {tuple(w.shape)}")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"xnor_linear: x has K={x.shape[-1]} features but w has K={w.shape[1]}")
    if x.device != w.device:
        raise ValueError(f"xnor_linear: x is on {x.device} but w is on {w.device}")
    _check_k(x.shape[-1], "xnor_linear")
    return _XnorLinear.apply(x, w)


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
    @staticmethod
    def forward(ctx, x, w, stride, padding, dilation, groups, pad_value):
        ph, pw = padding
        if pad_value == 0.0 or (ph == 0 and pw == 0):
            conv_pad = (ph, pw)  # F.conv2d semantics: zero padding
            xp = F.pad(x, (pw, pw, ph, ph), value=1.0) if (ph or pw) else x
        else:
            conv_pad = (0, 0)
            xp = F.pad(x, (pw, pw, ph, ph), value=float(pad_value))
        cg = x.shape[1] // groups
        og = w.shape[0] // groups
        outs = []
        for gi in range(groups):
            xs = xp[:, gi * cg:(gi + 1) * cg] if groups > 1 else xp
            ws = w[gi * og:(gi + 1) * og] if groups > 1 else w
            outs.append(_conv_bits(xs, ws, stride, dilation))
        y = torch.cat(outs, 1) if groups > 1 else outs[0]
        if pad_value == 0.0 and (ph or pw):
            # Padded taps were packed as +1; zero padding contributes nothing, so remove
            # sum(w over the padded taps) = conv(border indicator, per-group channel sums of w).
            ind = torch.ones((1, 1, x.shape[2], x.shape[3]), dtype=torch.float32, device=x.device)
            ind = 1.0 - F.pad(ind, (pw, pw, ph, ph), value=0.0)
            wsum = w.to(torch.float32).reshape(groups, og, cg, *w.shape[2:]).sum(2).reshape(w.shape[0], 1, *w.shape[2:])
            corr = F.conv2d(ind.expand(1, groups, -1, -1), wsum, None, stride, 0, dilation, groups)
            y = y - corr
        ctx.conv = (stride, conv_pad, dilation, groups, (ph, pw), pad_value)
        ctx.save_for_backward(x, w)
        return y.to(_result_dtype(x, w))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        stride, conv_pad, dilation, groups, (ph, pw), pad_value = ctx.conv
        explicit = conv_pad == (0, 0) and (ph or pw)
        xin = F.pad(x, (pw, pw, ph, ph), value=float(pad_value)) if explicit else x
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False]
        # Exactly the call autograd makes for F.conv2d (ConvolutionBackward0).
        gx, gw, _ = torch.ops.aten.convolution_backward(
            g, xin, w, None, list(stride), list(conv_pad), list(dilation), False, [0, 0], groups, mask
        )
        if explicit and gx is not None:
            gx = gx[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]  # F.pad's backward
        return gx, gw, None, None, None, None, None


def xnor_conv2d(
    x: torch.Tensor,
    w: torch.Tensor,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    pad_value: float = 0.0,
) -> torch.Tensor:
    """``F.conv2d(x, w, None, stride, padding, dilation, groups)`` for ±1 tensors, on packed bits.

    Args:
        x: (N, C, H, W) ±1 activations; w: (O, C / groups, kh, kw) ±1 weights.
        padding: int or pair (no "same"/"valid" strings: resolve them first).
        pad_value: value of the padded border: 0.0 (F.conv2d semantics, corrected exactly),
            +1.0 or -1.0. With ±1 the gradient is that of ``F.conv2d(F.pad(x, value=pad_value), w)``.

    Returns:
        (N, O, Ho, Wo) tensor of dtype ``result_type(x, w)`` holding the exact integer sums.
    """
    if x.dim() != 4 or w.dim() != 4:
        raise ValueError(f"xnor_conv2d: expected 4-D x and w, got {tuple(x.shape)} and {tuple(w.shape)}")
    if isinstance(padding, str):
        raise ValueError("xnor_conv2d: string padding is not supported; pass ints (resolve 'same'/'valid' first)")
    if pad_value not in (0.0, 1.0, -1.0):
        raise ValueError(f"xnor_conv2d: pad_value must be 0, +1 or -1, got {pad_value}")
    groups = int(groups)
    if groups < 1 or x.shape[1] % groups or w.shape[0] % groups or w.shape[1] * groups != x.shape[1]:
        raise ValueError(
            f"xnor_conv2d: channels do not match groups={groups}: x has {x.shape[1]}, w is {tuple(w.shape)}"
        )
    if x.device != w.device:
        raise ValueError(f"xnor_conv2d: x is on {x.device} but w is on {w.device}")
    _check_k(w.shape[1] * w.shape[2] * w.shape[3], "xnor_conv2d")
    return _XnorConv2d.apply(
        x, w, _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation"), groups, float(pad_value)
    )


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


# Quantizers whose forward output is exactly ±1 (sign0 of something): the binary kernels compute
# the same integer sums as the float simulation only for these. Not included: LeakySign (0 -> 0),
# SteHeaviside ({0, 1}), MagnitudeAwareSign (±alpha), NoOp (identity; exact only if the weights
# happen to be ±1), DoReFa/SteTern (multi-level).
SIGN_QUANTIZERS = frozenset({"SteSign", "ApproxSign", "SwishSign", "BMXNetSign"})


def routes(layer: torch.nn.Module, t: torch.Tensor) -> bool:
    """Whether binary ``layer`` seeing tensor ``t`` should run on the packed-bit kernels now.

    True inside :func:`use_binary_kernels` (and where the kernels can run on ``t``'s device) for a
    layer whose input and weight quantizers are both sign-type ±1 quantizers and whose export
    spec says 1-bit inputs and weights with no weight scale.
    """
    if not binary_kernels_enabled(t):
        return False
    iq = getattr(layer, "input_quantizer", None)
    wq = getattr(layer, "weight_quantizer", None)
    if type(iq).__name__ not in SIGN_QUANTIZERS or type(wq).__name__ not in SIGN_QUANTIZERS:
        return False
    spec_fn = getattr(layer, "export_spec", None)
    if spec_fn is not None:
        spec = spec_fn()
        if getattr(spec, "input_bits", 1) != 1 or getattr(spec, "weight_bits", 1) != 1:
            return False
        if getattr(spec, "weight_scale", "none") not in ("none", None):
            return False
    return True
