"""Run a converted model (``.xk``) with PyTorch ops on any torch device: GPU batch inference.

``xnorkit.Model(path, device="cuda")`` returns a :class:`TorchModel`: the same file, parsed and
validated by the format's own reader (:func:`xnorkit.convert.format.decode`, every check of
docs/format.md §7), executed op by op with torch on the device. It computes what the C engine
computes (docs/format.md §4, §6):

* binary activations stay bit-packed between ops, as int32 words (``packed_words(k) =
  2·ceil(k/64)`` per row, element ``i`` = bit ``i % 32`` of word ``i // 32``: the file's and the C
  engine's bytes);
* BCONV2D / BDENSE run a binary GEMM on the packed words: on CUDA the kernels of
  :mod:`xnorkit.kernels.gpu` (Triton XOR-popcount, 1-bit ``mma``, int8 tensor cores; its dispatch
  picks the fastest, all bit-identical), else torch integer math (±1 matmuls whose integer sums
  are exact). Convolutions run im2col on packed words (each tap's channels padded to a word
  multiple; the constant contribution of the padding bits is subtracted); zero spatial padding
  is packed as +1 and corrected exactly by a per-position table built at load time (§4.2);
  integer thresholds give packed bits inside the GEMM's epilogue where the correction is
  per channel, else in torch;
* float output stages run as separate float32 torch ops (one rounding each, no fused
  multiply-add, §4.1); int8 layers quantize their input as §4.4 says and accumulate exactly
  (float64, integers far below 2^53); float layers use float32 convolutions and matmuls with
  TF32 disabled while the model runs.

So binary activations and integer sums equal the C engine's bit for bit and float outputs agree
within 1e-5 relative (the float summation order is the only freedom); the tests check it against
the C engine on CPU (``Model(path, device="cpu", backend="torch")``) and, with
``TRITON_INTERPRET=1``, through the Triton kernels.

Example:
    >>> import xnorkit
    >>> model = xnorkit.Model("model.xk", device="cuda")       # doctest: +SKIP
    >>> logits = model(images_on_gpu)      # torch in -> torch out, on the model's device

Inputs may be numpy arrays or torch tensors on any device; numpy inputs give numpy outputs
(copied to the host), torch inputs give torch tensors that stay on the model's device.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from xnorkit.convert import format as xkf
from xnorkit.runtime import Model, OpTiming, input_plan

__all__ = ["TorchModel", "TorchExecutor", "resolve_device", "packed_words", "pack_bool", "unpack_bool"]

if sys.byteorder != "little":  # pragma: no cover - every supported host is little-endian
    raise ImportError("xnorkit.runtime_torch needs a little-endian host (packed bits are viewed as words)")

KERNELS = ("auto", "triton", "torch")
_FLOAT_EXACT = 1 << 24  # integer sums of ±1 products are exact in float32 below this length
_SHIFTS: dict[torch.device, torch.Tensor] = {}


def _shifts(device: torch.device) -> torch.Tensor:
    """0..7 as uint8 on ``device`` (bit positions within a byte), cached."""
    t = _SHIFTS.get(device)
    if t is None:
        t = _SHIFTS[device] = torch.arange(8, dtype=torch.uint8, device=device)
    return t


# --------------------------------------------------------------------------------------- devices
def resolve_device(device: Any) -> torch.device:
    """A torch.device from ``"cpu"``, ``"cuda"``, ``"cuda:N"``, an int (CUDA index) or a torch.device.

    Raises:
        ValueError: an unknown device string or an unsupported device type.
        RuntimeError: CUDA requested but unusable here (says what is missing).
    """
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, bool):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}")
    elif isinstance(device, int):
        dev = torch.device("cuda", device)
    elif isinstance(device, str):
        try:
            dev = torch.device(device.strip())
        except (RuntimeError, ValueError):
            raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N' "
                             "(or a torch.device)") from None
    else:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {type(device).__name__}")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(dev)!r} is not supported: xnorkit.Model runs on 'cpu' or 'cuda'")
    if dev.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            raise RuntimeError(f"device {str(dev)!r} requested but this PyTorch build ({torch.__version__}) has no "
                               "CUDA support; install a CUDA build of PyTorch")
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {str(dev)!r} requested but no CUDA GPU is visible to PyTorch "
                               "(torch.cuda.is_available() is False: check the NVIDIA driver and "
                               "CUDA_VISIBLE_DEVICES)")
        count = torch.cuda.device_count()
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if not 0 <= index < count:
            raise RuntimeError(f"device {str(dev)!r} requested but only {count} CUDA device(s) are visible")
        dev = torch.device("cuda", index)
    return dev


# --------------------------------------------------------------------------------------- bits
def packed_words(k: int) -> int:
    """int32 words of one packed row of ``k`` bits (rows padded to 64 bits)."""
    return 2 * (-(-int(k) // 64))


def pack_bool(neg: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor (True = bit 1 = -1) along its last axis -> int32 words, zero padding."""
    k = neg.shape[-1]
    w = packed_words(k)
    b = neg.to(torch.uint8)
    if 32 * w != k:
        b = F.pad(b, (0, 32 * w - k))
    b = b.reshape(*neg.shape[:-1], 4 * w, 8) << _shifts(neg.device)
    return b.sum(-1, dtype=torch.uint8).view(torch.int32)


def unpack_bool(words: torch.Tensor, k: int) -> torch.Tensor:
    """int32 words (..., W) -> bool (..., k), True where the bit is 1 (-1)."""
    b = words.contiguous().view(torch.uint8)
    bits = (b.unsqueeze(-1) >> _shifts(words.device)) & 1
    return bits.reshape(*words.shape[:-1], -1)[..., :k].bool()


def unpack_pm1(words: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """int32 words -> ±1 values (..., k) of ``dtype``."""
    return torch.where(unpack_bool(words, k), -1.0, 1.0).to(dtype)


def _words_of(raw: np.ndarray, device: torch.device) -> torch.Tensor:
    """A BITS constant (uint8 [rows, row_bytes]) as int32 words [rows, row_bytes / 4]."""
    a = np.ascontiguousarray(np.array(raw, dtype=np.uint8, copy=True))
    return torch.from_numpy(a).view(torch.int32).to(device)


# --------------------------------------------------------------------------------------- binary GEMM
class _TorchBits:
    """Binary GEMM on packed words with torch math: unpack to ±1 float32 and multiply. The sums
    are integers of magnitude <= k < 2^24, exact at every step in float32 (also with TF32,
    which holds ±1 exactly)."""

    name = "torch"

    def __init__(self, device: torch.device):
        self.device = device

    def weights(self, words: torch.Tensor, k: int) -> Any:
        return unpack_pm1(words, k).t().contiguous()  # [k, n]

    def gemm(self, a: torch.Tensor, w: Any, k: int) -> torch.Tensor:
        m = a.shape[0]
        out = torch.empty((m, w.shape[1]), dtype=torch.int32, device=a.device)
        step = max(1, (1 << 24) // max(k, 1))  # rows per chunk: <= 64 MiB of unpacked floats
        for i in range(0, m, step):
            out[i:i + step] = (unpack_pm1(a[i:i + step], k) @ w).to(torch.int32)
        return out

    def gemm_bits(self, a: torch.Tensor, w: Any, k: int, thr: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
        return _threshold_bits(self.gemm(a, w, k), thr, flip)


class _TritonBits:
    """Binary GEMM through :func:`xnorkit.kernels.gpu.bgemm` (Triton / mma_b1 / int8_tc, chosen by
    its dispatch), with the threshold epilogue fused into the kernel."""

    name = "triton"

    def __init__(self, xg):
        self.xg = xg

    def weights(self, words: torch.Tensor, k: int) -> Any:
        return words.contiguous()

    def gemm(self, a: torch.Tensor, w: Any, k: int) -> torch.Tensor:
        return self.xg.bgemm(a, w, k, out="int32")

    def gemm_bits(self, a: torch.Tensor, w: Any, k: int, thr: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
        return self.xg.bgemm(a, w, k, out="bits", threshold=thr, flip=flip)


def _threshold_bits(acc: torch.Tensor, thr: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
    """bit = (acc < threshold) XOR flip (docs/format.md §4.1), packed along the last axis."""
    neg = acc < thr
    if flip is not None:
        neg = neg ^ flip
    return pack_bool(neg)


def _gpu_kernels():
    import xnorkit.kernels.gpu as xg  # noqa: PLC0415  (optional: Triton is imported lazily there)

    return xg


def _choose_kernels(kernels: str, device: torch.device):
    """(bit backend object, reason the Triton kernels are not used or None)."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {', '.join(map(repr, KERNELS))}, got {kernels!r}")
    if kernels == "torch":
        return _TorchBits(device), "kernels='torch' requested"
    if kernels == "auto" and device.type != "cuda":
        return _TorchBits(device), "not a CUDA device"
    xg = _gpu_kernels()
    why = xg.unavailable_reason()
    if why is None and device.type == "cpu" and not xg.interpreting():
        why = "CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before Triton is imported)"
    if why is not None:
        if kernels == "triton":
            raise RuntimeError(f"kernels='triton' requested but the GPU kernels cannot run on {device}: {why}")
        warnings.warn(f"xnorkit.Model(device={str(device)!r}): the binary GPU kernels are unavailable ({why}); "
                      "binary layers run on torch integer math (same results, slower)", stacklevel=4)
        return _TorchBits(device), why
    return _TritonBits(xg), None


# --------------------------------------------------------------------------------------- float helpers
@contextlib.contextmanager
def _exact_float32(device: torch.device):
    """While a model runs on CUDA: no TF32 in float32 convolutions / matmuls (§6 tolerance; the
    flags are process-wide, restored afterwards) and the model's GPU as the current device."""
    if device.type != "cuda":
        yield
        return
    prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.cuda.device(device):  # Triton launches on the current device: make it the model's
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


# --------------------------------------------------------------------------------------- executor
class TorchExecutor:
    """Executes an :class:`~xnorkit.convert.format.XkModel` with torch on ``device``.

    ``run(inputs)`` takes float32 tensors in the stored layout (NHWC, batch first) on the device
    and returns the graph outputs in the stored layout, float32 (BITS outputs unpacked to ±1).
    All constants are prepared on the device once, at construction.
    """

    def __init__(self, model: xkf.XkModel, device: torch.device, kernels: str = "auto"):
        self.model = model
        self.device = device
        self.bits, self.kernels_reason = _choose_kernels(kernels, device)
        self.kernels = self.bits.name
        self._consts: dict[tuple[int, torch.dtype | None], torch.Tensor] = {}
        self._steps: list[Callable[[list[torch.Tensor]], torch.Tensor]] = [self._prepare(op) for op in model.ops]
        # last op reading each tensor: free activations as soon as they are dead
        last: dict[int, int] = {}
        for j, op in enumerate(model.ops):
            for i in op.inputs:
                last[i] = j
        keep = set(model.outputs)
        self._free_after = [[i for i in set(op.inputs) if last[i] == j and i not in keep]
                            for j, op in enumerate(model.ops)]

    # ------------------------------------------------------------------ constants
    def _const(self, ti: int, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        if ti == xkf.NONE:
            return None
        key = (ti, dtype)
        if key not in self._consts:
            a = np.array(self.model.tensors[ti].data, copy=True)
            t = torch.from_numpy(a).reshape(-1)
            self._consts[key] = t.to(device=self.device, dtype=dtype or t.dtype)
        return self._consts[key]

    def _f32(self, v: float) -> torch.Tensor:
        return torch.tensor(np.float32(v), dtype=torch.float32, device=self.device)

    def _act(self, act: str, lo: float, hi: float, alpha_ti: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Activation of docs/format.md §4.1 in float32 (same comparisons as xnorkit.reference)."""
        zero = self._f32(0.0)
        if act == "none":
            return lambda y: y
        if act == "relu":
            return lambda y: torch.where(y > 0, y, zero)
        if act == "relu6":
            six = self._f32(6.0)
            return lambda y: torch.where(y > 0, torch.where(y < 6, y, six), zero)
        if act == "hardtanh":
            lo_t, hi_t = self._f32(lo), self._f32(hi)
            return lambda y: torch.where(y < lo_t, lo_t, torch.where(y > hi_t, hi_t, y))
        if act == "prelu":
            a = self._const(alpha_ti, torch.float32)
            return lambda y: torch.where(y >= 0, y, a * y)
        if act == "leaky":
            lo_t = self._f32(lo)
            return lambda y: torch.where(y >= 0, y, lo_t * y)
        raise ValueError(f"unknown activation {act!r}")

    def _float_stage(self, op: xkf.Op) -> Callable[[torch.Tensor], torch.Tensor]:
        """y = post_scale·act(scale·acc + bias) + post_bias, one float32 op each; bits: !(y >= 0)."""
        o = op.out
        s, b = self._const(o["scale"], torch.float32), self._const(o["bias"], torch.float32)
        ps, pb = self._const(o["post_scale"], torch.float32), self._const(o["post_bias"], torch.float32)
        act = self._act(o["act"], o["act_lo"], o["act_hi"], o["act_alpha"])
        to_bits = o["kind"] == "bits"

        def stage(acc: torch.Tensor) -> torch.Tensor:
            y = acc.to(torch.float32)
            if s is not None:
                y = y * s
            if b is not None:
                y = y + b
            y = act(y)
            if ps is not None:
                y = y * ps
            if pb is not None:
                y = y + pb
            return pack_bool(~(y >= 0)) if to_bits else y

        return stage

    # ------------------------------------------------------------------ ops
    def _prepare(self, op: xkf.Op) -> Callable[[list[torch.Tensor]], torch.Tensor]:
        prep = getattr(self, f"_op_{op.kind}", None)
        if prep is None:  # pragma: no cover - the reader rejects unknown kinds
            raise ValueError(f"op {op.name}: kind {op.kind!r} is not implemented by the torch executor")
        return prep(op)

    def _binary_epilogue(self, op: xkf.Op, shift: int, corr: torch.Tensor | None):
        """(bits_fused(a, w, k) or None, finish(acc_int32) -> output) for a binary op.

        acc = dot - shift - corr[position] where dot is the raw GEMM sum over the padded rows."""
        o = op.out
        if o["kind"] == "bits":
            thr = self._const(o["threshold"], torch.int64)
            flip = self._const(o["flip"], torch.bool)
            if corr is None:
                # (dot - shift < t) == (dot < t + shift): fold the constant shift into the thresholds
                thr_s = torch.clamp(thr + shift, -2**31, 2**31 - 1).to(torch.int32)
                fl = flip.to(torch.int32) if flip is not None else None
                return (lambda a, w, k: self.bits.gemm_bits(a, w, k, thr_s, fl)), None
            thr32 = thr.to(torch.int32)
            return None, lambda acc: _threshold_bits(acc, thr32, flip)
        return None, self._float_stage(op)

    def _op_bdense(self, op: xkf.Op):
        T = self.model.tensors
        k = T[op.inputs[0]].shape[1]
        if k >= _FLOAT_EXACT:
            raise ValueError(f"op {op.name}: reduction length {k} >= 2^24 is not supported")
        w = self.bits.weights(_words_of(T[op.weights].data, self.device), k)
        fused, finish = self._binary_epilogue(op, 0, None)
        if fused is not None:
            return lambda xs: fused(xs[0], w, k)
        return lambda xs: finish(self.bits.gemm(xs[0], w, k))

    def _op_bconv2d(self, op: xkf.Op):
        T, p = self.model.tensors, op.params
        _, h, wd, c = T[op.inputs[0]].shape
        _, oh, ow, oc = T[op.output].shape
        kh, kw, sh, sw, dh, dw = p["kh"], p["kw"], p["stride_h"], p["stride_w"], p["dil_h"], p["dil_w"]
        pt, pl, pb, pr, pv = p["pad_top"], p["pad_left"], p["pad_bottom"], p["pad_right"], p["pad_value"]
        wc = packed_words(c)
        taps = kh * kw
        if taps * c >= _FLOAT_EXACT:
            raise ValueError(f"op {op.name}: reduction length {taps * c} >= 2^24 is not supported")
        # weights: file rows hold the taps back to back (C bits each); re-pack each tap to whole words
        wpm = xkf.unpack_bits(T[op.weights].data, taps * c).reshape(oc, taps, c)
        wneg = torch.from_numpy(wpm < 0).to(self.device)
        wwords = pack_bool(wneg).reshape(oc, taps * wc)
        kbits = 32 * taps * wc
        shift = kbits - taps * c  # padding bits: 0 in both operands, each adds +1 to the raw sum
        w = self.bits.weights(wwords, kbits)
        padded = bool(pt or pl or pb or pr)
        corr = None
        if padded and pv == 0:
            # invalid taps were filled with +1 (bit 0) but must contribute 0: subtract the sum of the
            # weights over the invalid taps of each output position (exact small integers)
            inval = 1.0 - F.pad(torch.ones((1, 1, h, wd), dtype=torch.float64), (pl, pr, pt, pb), value=0.0)
            wsum = torch.from_numpy(wpm.astype(np.float64).sum(-1)).reshape(oc, 1, kh, kw)
            cm = F.conv2d(inval, wsum, stride=(sh, sw), dilation=(dh, dw))  # [1, OC, OH, OW]
            cm = cm[0].permute(1, 2, 0).reshape(1, oh * ow, oc)
            if bool(cm.any()):
                corr = torch.round(cm).to(torch.int32).to(self.device)
        fill = None
        if padded:
            fill_neg = torch.full((c,), pv == -1, dtype=torch.bool, device=self.device)
            fill = pack_bool(fill_neg)  # [wc]: -1 padding sets exactly the C real bits
        fused, finish = self._binary_epilogue(op, shift, corr)

        def run(xs: list[torch.Tensor]) -> torch.Tensor:
            x = xs[0]  # [N, H, W, wc] int32 words
            n = x.shape[0]
            if padded:
                xp = fill.expand(n, h + pt + pb, wd + pl + pr, wc).clone()
                xp[:, pt:pt + h, pl:pl + wd] = x
            else:
                xp = x.contiguous()
            s = xp.stride()
            cols = xp.as_strided((n, oh, ow, kh, kw, wc), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]))
            cols = cols.reshape(n * oh * ow, taps * wc)
            if fused is not None:
                y = fused(cols, w, kbits)
            else:
                acc = self.bits.gemm(cols, w, kbits)
                if shift:
                    acc = acc - shift
                if corr is not None:
                    acc = (acc.reshape(n, oh * ow, oc) - corr).reshape(n * oh * ow, oc)
                y = finish(acc)
            return y.reshape(n, oh, ow, y.shape[-1])

        return run

    def _int8_input(self, p: dict) -> Callable[[torch.Tensor], torch.Tensor]:
        """q - zp of docs/format.md §4.4 as float64 (exact small integers)."""
        inv = self._f32(np.float32(1) / np.float32(p["in_scale"]))
        zp = int(p["in_zero_point"])

        def quant(x: torch.Tensor) -> torch.Tensor:
            v = x * inv
            v = torch.where(torch.isnan(v), -512.0, torch.clamp(v, -512.0, 512.0))
            q = torch.clamp(torch.round(v) + zp, -128, 127)  # round: half to even
            return (q - zp).to(torch.float64)

        return quant

    def _op_dense(self, op: xkf.Op):
        p = op.params
        i8 = p["precision"] == xkf.PREC["i8"]
        wt = self.model.tensors[op.weights]
        w = self._const(op.weights, torch.float64 if i8 else torch.float32).reshape(wt.shape).t().contiguous()
        stage = self._float_stage(op)
        if i8:
            quant = self._int8_input(p)
            return lambda xs: stage(quant(xs[0]) @ w)  # exact int accumulation in float64
        return lambda xs: stage(xs[0] @ w)

    def _op_conv2d(self, op: xkf.Op):
        p = op.params
        i8 = p["precision"] == xkf.PREC["i8"]
        wt = self.model.tensors[op.weights]
        dt = torch.float64 if i8 else torch.float32
        w = self._const(op.weights, dt).reshape(wt.shape)
        g = p["groups"]
        w = w.permute(0, 3, 1, 2) if g == 1 else w.permute(2, 0, 1).unsqueeze(1)  # OHWI / [KH,KW,OC] -> OIHW
        w = w.contiguous()
        pads = (p["pad_left"], p["pad_right"], p["pad_top"], p["pad_bottom"])
        stride, dil = (p["stride_h"], p["stride_w"]), (p["dil_h"], p["dil_w"])
        stage = self._float_stage(op)
        quant = self._int8_input(p) if i8 else None

        def run(xs: list[torch.Tensor]) -> torch.Tensor:
            x = xs[0]
            if quant is not None:
                x = quant(x)  # padded taps: q = zp, a real 0
            x = _nchw(x)
            if any(pads):
                x = F.pad(x, pads, value=0.0)
            y = F.conv2d(x, w, stride=stride, dilation=dil, groups=g)
            return stage(_nhwc(y))

        return run

    def _op_sign(self, op: xkf.Op):
        t = self._const(op.params["threshold"], torch.float32)
        fl = self._const(op.params["flip"], torch.bool)

        def run(xs: list[torch.Tensor]) -> torch.Tensor:
            neg = ~(xs[0] >= (t if t is not None else 0.0))
            if fl is not None:
                neg = neg ^ fl
            return pack_bool(neg)

        return run

    def _op_unpack(self, op: xkf.Op):
        c = self.model.tensors[op.output].shape[-1]
        return lambda xs: unpack_pm1(xs[0], c)

    def _op_maxpool2d(self, op: xkf.Op):
        T, p = self.model.tensors, op.params
        kh, kw, sh, sw = p["kh"], p["kw"], p["stride_h"], p["stride_w"]
        pads = (p["pad_left"], p["pad_right"], p["pad_top"], p["pad_bottom"])
        _, oh, ow, _ = T[op.output].shape
        if T[op.inputs[0]].dtype != "bits":
            def run_f(xs: list[torch.Tensor]) -> torch.Tensor:
                x = _nchw(xs[0])
                if any(pads):
                    x = F.pad(x, pads, value=float("-inf"))  # taps outside are skipped
                return _nhwc(F.max_pool2d(x, (kh, kw), (sh, sw)))
            return run_f
        # bits: max over ±1 is the AND of the bits; channels in `invert` use OR (a min)
        inv = None
        if p["invert"] != xkf.NONE:
            inv = _words_of(T[p["invert"]].data, self.device).reshape(-1)

        def taps(x: torch.Tensor, fill: int):
            if any(pads):
                x = F.pad(x, (0, 0) + pads, value=fill)
            for ky in range(kh):
                for kx in range(kw):
                    yield x[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]

        def reduce(x: torch.Tensor, fill: int, fn) -> torch.Tensor:
            acc = None
            for tap in taps(x, fill):
                acc = tap.clone() if acc is None else fn(acc, tap)
            return acc

        def run_b(xs: list[torch.Tensor]) -> torch.Tensor:
            x = xs[0]  # [N, H, W, wc]; every window holds at least one valid tap (pad < window)
            y = reduce(x, -1, torch.bitwise_and)
            if inv is not None:
                y = (y & ~inv) | (reduce(x, 0, torch.bitwise_or) & inv)
            return y.contiguous()

        return run_b

    def _op_avgpool2d(self, op: xkf.Op):
        T, p = self.model.tensors, op.params
        kh, kw, sh, sw = p["kh"], p["kw"], p["stride_h"], p["stride_w"]
        pads = (p["pad_left"], p["pad_right"], p["pad_top"], p["pad_bottom"])
        _, h, wd, _ = T[op.inputs[0]].shape
        if p["count_include_pad"] or not any(pads):
            div = torch.tensor(float(kh * kw), dtype=torch.float32, device=self.device)
        else:
            ones = F.pad(torch.ones((1, 1, h, wd), dtype=torch.float32), pads, value=0.0)
            cnt = F.avg_pool2d(ones, (kh, kw), (sh, sw), divisor_override=1)  # taps inside
            div = _nhwc(cnt).to(self.device)

        def run(xs: list[torch.Tensor]) -> torch.Tensor:
            x = _nchw(xs[0])
            if any(pads):
                x = F.pad(x, pads, value=0.0)
            s = F.avg_pool2d(x, (kh, kw), (sh, sw), divisor_override=1)  # window sums
            return _nhwc(s) / div

        return run

    def _op_global_avgpool(self, op: xkf.Op):
        return lambda xs: xs[0].mean(dim=(1, 2), keepdim=True)

    def _op_add(self, op: xkf.Op):
        p = op.params
        act = self._act(xkf.ACT_NAME[p["act"]], p["act_lo"], p["act_hi"], p["act_alpha"])
        return lambda xs: act(xs[0] + xs[1])

    def _op_activation(self, op: xkf.Op):
        p = op.params
        act = self._act(xkf.ACT_NAME[p["act"]], p["act_lo"], p["act_hi"], p["act_alpha"])
        return lambda xs: act(xs[0])

    def _op_concat(self, op: xkf.Op):
        T = self.model.tensors
        if T[op.output].dtype != "bits":
            return lambda xs: torch.cat(xs, dim=-1)
        cs = [T[i].shape[-1] for i in op.inputs]
        if all(c % 64 == 0 for c in cs[:-1]):  # rows join at word boundaries: concatenate the words
            return lambda xs: torch.cat(xs, dim=-1)
        return lambda xs: pack_bool(torch.cat([unpack_bool(x, c) for x, c in zip(xs, cs)], dim=-1))

    def _op_flatten(self, op: xkf.Op):
        T = self.model.tensors
        src = T[op.inputs[0]]
        if op.params["order"] == 1:
            return lambda xs: _nchw(xs[0]).reshape(xs[0].shape[0], -1)
        if src.dtype != "bits" or src.shape[-1] % 64 == 0:  # whole words per pixel: a reshape
            return lambda xs: xs[0].reshape(xs[0].shape[0], -1)
        c = src.shape[-1]
        return lambda xs: pack_bool(unpack_bool(xs[0], c).reshape(xs[0].shape[0], -1))

    def _op_reshape(self, op: xkf.Op):
        shape = tuple(self.model.tensors[op.output].shape[1:])
        return lambda xs: xs[0].reshape((xs[0].shape[0],) + shape)

    def _op_affine(self, op: xkf.Op):
        s = self._const(op.params["scale"], torch.float32)
        b = self._const(op.params["bias"], torch.float32)

        def run(xs: list[torch.Tensor]) -> torch.Tensor:
            y = xs[0]
            if s is not None:
                y = y * s
            if b is not None:
                y = y + b
            return y

        return run

    def _op_softmax(self, op: xkf.Op):
        return lambda xs: torch.softmax(xs[0], dim=-1)

    # ------------------------------------------------------------------ running
    def run(self, inputs: Sequence[torch.Tensor], times: list[float] | None = None, return_all: bool = False):
        """Execute the graph on stored-layout float32 inputs (on the device); see the class doc.

        With ``return_all`` also return every activation (dict tensor index -> tensor, BITS as
        ±1 float32 in the stored layout), like ``xnorkit.reference.run(..., return_all=True)``."""
        m = self.model
        env: dict[int, torch.Tensor] = dict(zip(m.inputs, inputs))
        seen: dict[int, torch.Tensor] = {}
        sync = self.device.type == "cuda" and times is not None
        with torch.no_grad(), _exact_float32(self.device):
            for j, (op, step) in enumerate(zip(m.ops, self._steps)):
                t0 = time.perf_counter() if times is not None else 0.0
                env[op.output] = step([env[i] for i in op.inputs])
                if times is not None:
                    if sync:
                        torch.cuda.synchronize(self.device)
                    times.append(time.perf_counter() - t0)
                if return_all:
                    seen[op.output] = env[op.output]
                for i in self._free_after[j]:
                    env.pop(i, None)
            outs = [self._as_float(o, env[o]) for o in m.outputs]
            if return_all:
                every = {**dict(zip(m.inputs, inputs)), **seen}
                return outs, {i: self._as_float(i, t) for i, t in every.items()}
        return outs

    def _as_float(self, ti: int, y: torch.Tensor) -> torch.Tensor:
        t = self.model.tensors[ti]
        return unpack_pm1(y, t.shape[-1]) if t.dtype == "bits" else y


# --------------------------------------------------------------------------------------- the Model
_DTYPE_NAMES = {"f32": "float32", "i8": "int8", "i32": "int32", "u8": "uint8", "bits": "bits"}


def _tensor_info(t: xkf.Tensor) -> dict:
    return {"name": t.name, "dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape), "torch_layout": t.torch_layout,
            "count": t.count}


def _op_info(m: xkf.XkModel, op: xkf.Op) -> dict:
    T = m.tensors
    out = T[op.output]
    p = op.params
    if op.kind in ("bconv2d", "bdense"):
        prec = "binary"
    elif op.kind in ("conv2d", "dense"):
        prec = "int8" if p["precision"] == xkf.PREC["i8"] else "float"
    else:
        prec = "-"
    macs = 0
    if op.kind in ("bconv2d", "conv2d"):
        c = T[op.inputs[0]].shape[3]
        per = p["kh"] * p["kw"] * (1 if p["groups"] > 1 else c)
        macs = out.shape[1] * out.shape[2] * out.shape[3] * per
    elif op.kind in ("bdense", "dense"):
        macs = T[op.inputs[0]].shape[1] * out.shape[1]
    elif op.kind in ("maxpool2d", "avgpool2d"):
        macs = out.shape[1] * out.shape[2] * out.shape[3] * p["kh"] * p["kw"]
    wb = T[op.weights].nbytes if op.weights != xkf.NONE else 0
    return {"name": op.name, "kind": op.kind, "precision": prec, "output": _tensor_info(out), "macs": int(macs),
            "weight_bytes": int(wb)}


class TorchModel(Model):
    """A converted model run with torch ops on a device (``xnorkit.Model(..., device="cuda")``).

    Same API as the C-engine :class:`~xnorkit.runtime.Model` (``run`` / ``__call__``, ``inputs``,
    ``outputs``, ``ops``, ``meta``, ``labels``, ``normalize``, ``info``, ``profile``); outputs are
    float32 with BITS outputs as ±1, in the PyTorch layout by default.

    Args:
        source: path of a ``.xk`` file, or its bytes.
        num_threads: CPU only: torch intra-op threads while this model runs (None: torch's setting).
        max_batch: largest batch one pass processes (None: the whole input at once); bounds the
            device memory of one pass.
        device: "cuda", "cuda:N", a torch.device, or "cpu" (default; the torch executor on the
            CPU: what the tests compare with the C engine).
        kernels: binary GEMM: "auto" (the GPU kernels on CUDA when Triton works, else torch),
            "triton" (:mod:`xnorkit.kernels.gpu`, required; on CPU only in Triton interpreter
            mode) or "torch" (±1 matmuls, exact).
        fuse: accepted for the C engine's signature; torch runs every op as listed.

    Outputs of torch inputs stay on the model's device; numpy inputs give numpy outputs.
    """

    def __init__(self, source: str | os.PathLike | bytes | bytearray | memoryview, num_threads: int | None = None,
                 max_batch: int | None = None, *, device: Any = "cpu", backend: str = "torch", kernels: str = "auto",
                 fuse: bool = True):
        if backend not in ("torch", "auto"):
            raise ValueError(f"TorchModel: backend must be 'torch', got {backend!r}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.device = resolve_device(device)
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            self.path = None
        else:
            self.path = Path(source)
            if not self.path.is_file():
                raise FileNotFoundError(f"model file not found: {self.path}")
            data = self.path.read_bytes()
        try:
            self._xk = xkf.decode(data)
        except xkf.FormatError as exc:
            where = f"{self.path}: " if self.path else ""
            raise ValueError(f"{where}{exc}") from None
        self._nbytes = len(data)
        self.num_threads = num_threads
        self.max_batch = max_batch
        self.backend = "torch"
        self._exec = TorchExecutor(self._xk, self.device, kernels)
        self.kernels = self._exec.kernels
        m = self._xk
        self._info = {
            "inputs": [_tensor_info(m.tensors[i]) for i in m.inputs],
            "outputs": [_tensor_info(m.tensors[i]) for i in m.outputs],
            "ops": [_op_info(m, op) for op in m.ops],
            "format_version": f"{m.version[0]}.{m.version[1]}",
        }

    # ------------------------------------------------------------------ properties
    def meta(self, key: str) -> Any:
        """Metadata value by key (str for text, parsed JSON, or a numpy array); None if absent."""
        if key not in self._xk.meta:
            return None
        val = self._xk.meta[key][1]
        return val.copy() if isinstance(val, np.ndarray) else val

    def info(self) -> dict:
        """Inputs, outputs, ops (name, kind, precision, output, MACs, weight bytes), format version,
        and how it runs: device, backend "torch", kernels ("triton" or "torch") and why not Triton."""
        d = dict(self._info)
        d.update(file_bytes=self._nbytes, device=str(self.device), backend=self.backend, kernels=self.kernels,
                 kernels_reason=self._exec.kernels_reason, max_batch=self.max_batch, num_threads=self.num_threads)
        return d

    # ------------------------------------------------------------------ running
    def _to_device(self, x: Any, spec: dict, layout: str) -> torch.Tensor:
        if torch.is_tensor(x):
            if x.is_complex():
                raise TypeError(f"input '{spec['name']}': expected real values, got {x.dtype}")
            t = x.detach()
        else:
            t = torch.from_numpy(np.array(x, dtype=np.float32, copy=True))
        add_batch, perm = input_plan(tuple(t.shape), spec, layout)
        if add_batch:
            t = t.unsqueeze(0)
        if perm is not None:
            t = t.permute(*perm)
        t = t.to(device=self.device, dtype=torch.float32)
        return t.reshape((t.shape[0],) + tuple(spec["shape"][1:])).contiguous()

    def _from_stored_t(self, y: torch.Tensor, spec: dict, layout: str) -> torch.Tensor:
        if layout != "torch":
            return y
        if spec["torch_layout"] == "nchw" and y.dim() == 4:
            return y.permute(0, 3, 1, 2).contiguous()
        if spec["torch_layout"] == "ncl" and y.dim() == 4:
            return y[:, 0].permute(0, 2, 1).contiguous()
        return y

    def _run_stored(self, stored: list[torch.Tensor], times: list[float] | None = None) -> list[torch.Tensor]:
        n = stored[0].shape[0]
        step = self.max_batch or n
        prev = torch.get_num_threads()
        if self.num_threads and self.device.type == "cpu":
            torch.set_num_threads(self.num_threads)
        try:
            chunks = [self._exec.run([s[i:i + step] for s in stored], times) for i in range(0, n, step)]
        finally:
            if self.num_threads and self.device.type == "cpu":
                torch.set_num_threads(prev)
        return [torch.cat([c[i] for c in chunks]) if len(chunks) > 1 else chunks[0][i] for i in range(len(self.outputs))]

    def run(self, *inputs: Any, layout: str = "torch") -> Any:
        """Run the model on a batch.

        Args:
            *inputs: one array per graph input (numpy, or torch on any device), batch first.
            layout: ``"torch"`` (default): PyTorch layout (NCHW images); ``"stored"``: NHWC.

        Returns:
            The output (or a tuple of outputs), float32: numpy arrays for numpy inputs, torch
            tensors on the model's device when any input is a torch tensor.
        """
        if layout not in ("torch", "stored"):
            raise ValueError(f"layout must be 'torch' or 'stored', got {layout!r}")
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the model takes {len(self.inputs)} input(s), got {len(inputs)}")
        is_torch = any(torch.is_tensor(x) for x in inputs)
        stored = [self._to_device(x, spec, layout) for x, spec in zip(inputs, self.inputs)]
        n = stored[0].shape[0]
        if any(s.shape[0] != n for s in stored):
            raise ValueError("all inputs must have the same batch size")
        outs = self._run_stored(stored)
        outs = [self._from_stored_t(y, spec, layout) for y, spec in zip(outs, self.outputs)]
        if not is_torch:
            outs = [y.cpu().numpy() for y in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    __call__ = run

    def profile(self, *inputs: Any, repeats: int = 20, warmup: int = 3, layout: str = "torch") -> tuple[list[OpTiming], list[float]]:
        """Per-op latency (median over ``repeats`` runs; CUDA is synchronized after every op, which
        serializes the device) and whole-run wall times (inputs already on the device)."""
        stored = [self._to_device(x, spec, layout) for x, spec in zip(inputs, self.inputs)]
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        for _ in range(warmup):
            self._run_stored(stored)
        sync()
        per_op, totals = [], []
        for _ in range(repeats):
            times: list[float] = []
            t0 = time.perf_counter()
            self._run_stored(stored, times)
            sync()
            totals.append(time.perf_counter() - t0)
            per_op.append(times)
        med = np.median(np.asarray(per_op), axis=0)
        nops = len(self.ops)
        med = med.reshape(-1, nops).sum(0) if med.size != nops else med  # several chunks: sum per op
        timings = [OpTiming(i, op["name"], op["kind"], op["precision"], float(med[i]), int(op["macs"]))
                   for i, op in enumerate(self.ops)]
        return timings, totals

    def __repr__(self) -> str:
        src = str(self.path) if self.path else "<bytes>"
        return (f"xnorkit.Model({src!r}, device={str(self.device)!r}, kernels={self.kernels!r}, ops={len(self.ops)}, "
                f"inputs={[i['shape'] for i in self.inputs]})")
