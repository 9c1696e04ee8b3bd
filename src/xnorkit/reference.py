"""The semantic oracle: a plain numpy/torch executor of the ``.xk`` format (docs/format.md).

It computes exactly what the C engine must compute, op by op, with no optimisation:

* binary tensors are held as +-1 float arrays (the packing is a storage detail; the packed
  weights are unpacked with :func:`xnorkit.convert.format.unpack_bits`);
* binary convolutions apply the explicit pad value (0, +1, -1) and accumulate in float64, so
  the accumulator is the exact integer dot product over the valid taps (§4.2);
* the output stage is evaluated in float32 with one rounding per operation and no fused
  multiply-add (§4.1); thresholds compare the exact integer accumulator;
* int8 ops quantize their input as the engine does (§4.4) and accumulate exactly;
* float conv/dense accumulate in float64 and round once (the engine's float32 sums differ from
  this by the tolerance of §6).

It is used to test the converter's passes against PyTorch and the C engine against the file.

Example:
    >>> import xnorkit.reference as ref                     # doctest: +SKIP
    >>> y = ref.run("model.xk", x_nchw)[0]                  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from xnorkit.convert import format as xkf

__all__ = ["run", "to_stored", "to_torch", "apply_act", "output_stage", "quantize_input"]

f32 = np.float32


# ------------------------------------------------------------------------------------------ layouts
def to_stored(x: np.ndarray, t: xkf.Tensor) -> np.ndarray:
    """PyTorch layout -> stored layout (NCHW -> NHWC, NCL -> N1LC) of activation tensor t."""
    x = np.asarray(x, dtype=np.float32)
    want = t.shape[1:]
    if t.torch_layout == "nchw":
        x = x.transpose(0, 2, 3, 1)
    elif t.torch_layout == "ncl":
        x = x.transpose(0, 2, 1)[:, None]
    if tuple(x.shape[1:]) != tuple(want):
        raise ValueError(f"input {t.name}: expected per-sample shape {list(want)} (stored) for torch layout "
                         f"{t.torch_layout}, got {list(x.shape[1:])}")
    return np.ascontiguousarray(x)


def to_torch(x: np.ndarray, t: xkf.Tensor) -> np.ndarray:
    """Stored layout -> PyTorch layout of activation tensor t."""
    if t.torch_layout == "nchw":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if t.torch_layout == "ncl":
        return np.ascontiguousarray(x[:, 0].transpose(0, 2, 1))
    return x


# ------------------------------------------------------------------------------------------ arithmetic
def apply_act(y: np.ndarray, act: str, lo: float, hi: float, alpha: np.ndarray | None) -> np.ndarray:
    """Activation in float32 on the last axis' channels (docs/format.md §4.1)."""
    y = y.astype(f32, copy=False)
    if act == "none":
        return y
    if act == "relu":
        return np.where(y > 0, y, f32(0)).astype(f32)
    if act == "relu6":
        return np.where(y > 0, np.where(y < 6, y, f32(6)), f32(0)).astype(f32)
    if act == "hardtanh":
        return np.where(y < f32(lo), f32(lo), np.where(y > f32(hi), f32(hi), y)).astype(f32)
    if act == "prelu":
        a = np.asarray(alpha, dtype=f32).reshape(-1)
        return np.where(y >= 0, y, (a * y).astype(f32)).astype(f32)
    if act == "leaky":
        return np.where(y >= 0, y, (f32(lo) * y).astype(f32)).astype(f32)
    raise ValueError(f"unknown activation {act!r}")


def _vec(m: xkf.XkModel, ti: int) -> np.ndarray | None:
    return None if ti == xkf.NONE else np.asarray(m.tensors[ti].data).reshape(-1)


def output_stage(m: xkf.XkModel, op: xkf.Op, acc: np.ndarray, binary: bool) -> np.ndarray:
    """Apply op's output stage to the accumulator (channels on the last axis).

    Returns float32 values, or +-1 float32 for bits output.
    """
    o = op.out
    if o["kind"] == "bits" and binary:
        t = _vec(m, o["threshold"]).astype(np.int64)
        fl = _vec(m, o["flip"])
        bit = acc < t
        if fl is not None:
            bit = bit ^ (fl.astype(bool))
        return np.where(bit, f32(-1), f32(1))
    y = acc.astype(f32)
    s, b = _vec(m, o["scale"]), _vec(m, o["bias"])
    if s is not None:
        y = (y * s).astype(f32)
    if b is not None:
        y = (y + b).astype(f32)
    y = apply_act(y, o["act"], o["act_lo"], o["act_hi"], _vec(m, o["act_alpha"]))
    ps, pb = _vec(m, o["post_scale"]), _vec(m, o["post_bias"])
    if ps is not None:
        y = (y * ps).astype(f32)
    if pb is not None:
        y = (y + pb).astype(f32)
    if o["kind"] == "bits":
        return np.where(y >= 0, f32(1), f32(-1))
    return y


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 input quantization of docs/format.md §4.4, returned as q - zero_point (int32)."""
    inv = f32(1) / f32(scale)
    v = (x.astype(f32) * inv).astype(f32)
    v = np.where(np.isnan(v), f32(-512), np.clip(v, -512, 512))
    q = np.clip(np.rint(v).astype(np.int64) + zero_point, -128, 127)  # rint: half to even
    return (q - zero_point).astype(np.int32)


def _conv(x: np.ndarray, w: np.ndarray, p: dict, pad_value: float, groups: int = 1) -> np.ndarray:
    """NHWC x, OIHW-compatible w (torch layout [OC, C/g, KH, KW]) -> NHWC float64 accumulator."""
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float64))
    pads = (p["pad_left"], p["pad_right"], p["pad_top"], p["pad_bottom"])
    if any(pads):
        xt = F.pad(xt, pads, value=float(pad_value))
    y = F.conv2d(xt, torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64)), stride=(p["stride_h"], p["stride_w"]),
                 dilation=(p["dil_h"], p["dil_w"]), groups=groups)
    return y.numpy().transpose(0, 2, 3, 1)


def _pool_windows(x: np.ndarray, p: dict, fill: float) -> np.ndarray:
    """[N,H,W,C] -> [N,OH,OW,KH*KW,C] windows with taps outside the input set to fill."""
    n, h, w, c = x.shape
    xp = np.full((n, h + p["pad_top"] + p["pad_bottom"], w + p["pad_left"] + p["pad_right"], c), fill, x.dtype)
    xp[:, p["pad_top"]: p["pad_top"] + h, p["pad_left"]: p["pad_left"] + w] = x
    oh = xkf.conv_out_size(h, p["kh"], p["stride_h"], 1, p["pad_top"], p["pad_bottom"])
    ow = xkf.conv_out_size(w, p["kw"], p["stride_w"], 1, p["pad_left"], p["pad_right"])
    taps = []
    for ky in range(p["kh"]):
        for kx in range(p["kw"]):
            taps.append(xp[:, ky: ky + p["stride_h"] * (oh - 1) + 1: p["stride_h"],
                           kx: kx + p["stride_w"] * (ow - 1) + 1: p["stride_w"]])
    return np.stack(taps, axis=3)


# ------------------------------------------------------------------------------------------ ops
def _run_op(m: xkf.XkModel, op: xkf.Op, xs: list[np.ndarray]) -> np.ndarray:
    T = m.tensors
    k, p = op.kind, op.params
    x = xs[0]
    if k == "bconv2d":
        w = T[op.weights]
        oc, kk = w.shape
        c = x.shape[-1]
        wf = xkf.unpack_bits(w.data, kk).reshape(oc, p["kh"], p["kw"], c).transpose(0, 3, 1, 2)
        acc = _conv(x, wf, p, pad_value=p["pad_value"])
        return output_stage(m, op, np.rint(acc).astype(np.int64), True)
    if k == "bdense":
        w = T[op.weights]
        wf = xkf.unpack_bits(w.data, w.shape[1]).astype(np.float64)
        acc = x.astype(np.float64) @ wf.T
        return output_stage(m, op, np.rint(acc).astype(np.int64), True)
    if k in ("conv2d", "dense"):
        w = T[op.weights].data
        i8 = p["precision"] == xkf.PREC["i8"]
        xin = quantize_input(x, p["in_scale"], p["in_zero_point"]).astype(np.float64) if i8 else x.astype(np.float64)
        wd = w.astype(np.float64)
        if k == "dense":
            acc = xin @ wd.T
        else:
            g = p["groups"]
            if g == 1:
                wt = wd.transpose(0, 3, 1, 2)
            else:  # [KH, KW, OC] -> [OC, 1, KH, KW]
                wt = wd.transpose(2, 0, 1)[:, None]
            acc = _conv(xin, wt, p, pad_value=0.0, groups=g)
        if i8:
            acc = np.rint(acc).astype(np.int64)
        else:
            acc = acc.astype(f32)
        return output_stage(m, op, acc, False)
    if k == "sign":
        t = _vec(m, p["threshold"])
        fl = _vec(m, p["flip"])
        bit = ~(x >= (t if t is not None else f32(0)))
        if fl is not None:
            bit = bit ^ fl.astype(bool)
        return np.where(bit, f32(-1), f32(1))
    if k == "unpack":
        return x.astype(f32)
    if k == "maxpool2d":
        if T[op.inputs[0]].dtype == "bits" and p["invert"] != xkf.NONE:
            inv = xkf.unpack_bits(T[p["invert"]].data, x.shape[-1]).reshape(-1) < 0  # bit 1: OR (min)
            sgn = np.where(inv, f32(-1), f32(1))
            return (_pool_windows(x * sgn, p, -np.inf).max(axis=3) * sgn).astype(f32)
        return _pool_windows(x, p, -np.inf).max(axis=3).astype(f32)
    if k == "avgpool2d":
        win = _pool_windows(x.astype(np.float64), p, np.nan)
        s = np.nansum(win, axis=3)
        if p["count_include_pad"]:
            d = p["kh"] * p["kw"]
        else:
            d = np.sum(~np.isnan(win), axis=3)
        return (s / d).astype(f32)
    if k == "global_avgpool":
        return x.astype(np.float64).mean(axis=(1, 2), keepdims=True).astype(f32)
    if k == "add":
        y = (xs[0] + xs[1]).astype(f32)
        return apply_act(y, xkf.ACT_NAME[p["act"]], p["act_lo"], p["act_hi"], _vec(m, p["act_alpha"]))
    if k == "activation":
        return apply_act(x, xkf.ACT_NAME[p["act"]], p["act_lo"], p["act_hi"], _vec(m, p["act_alpha"]))
    if k == "concat":
        return np.concatenate(xs, axis=-1)
    if k == "flatten":
        if p["order"] == 1:
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x).reshape(x.shape[0], -1)
    if k == "reshape":
        return x.reshape((x.shape[0],) + T[op.output].shape[1:])
    if k == "affine":
        s, b = _vec(m, p["scale"]), _vec(m, p["bias"])
        y = x.astype(f32)
        if s is not None:
            y = (y * s).astype(f32)
        if b is not None:
            y = (y + b).astype(f32)
        return y
    if k == "softmax":
        z = x.astype(np.float64)
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return (z / z.sum(axis=-1, keepdims=True)).astype(f32)
    raise ValueError(f"reference: op kind {k!r} not implemented")


def run(model: xkf.XkModel | str | os.PathLike | bytes, inputs: np.ndarray | Sequence[np.ndarray], *,
        torch_layout: bool = True, return_all: bool = False):
    """Execute a model file on a batch.

    Args:
        model: an :class:`~xnorkit.convert.format.XkModel`, a path, or file bytes.
        inputs: one array or one per graph input, batch first.
        torch_layout: inputs and outputs in the PyTorch layout (NCHW / NCL / NC); False means
            the stored layout (NHWC).
        return_all: also return every activation tensor (stored layout; bits as +-1 floats).

    Returns:
        A list of output arrays (float32; binary outputs as +-1), and with ``return_all`` a
        second value: dict tensor index -> array.
    """
    if isinstance(model, (bytes, bytearray)):
        model = xkf.decode(model)
    elif not isinstance(model, xkf.XkModel):
        model = xkf.read(model)
    if isinstance(inputs, np.ndarray) or torch.is_tensor(inputs):
        inputs = [inputs]
    inputs = [np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float32) for x in inputs]
    if len(inputs) != len(model.inputs):
        raise ValueError(f"model has {len(model.inputs)} inputs, got {len(inputs)} arrays")
    env: dict[int, np.ndarray] = {}
    for ti, x in zip(model.inputs, inputs):
        t = model.tensors[ti]
        env[ti] = to_stored(x, t) if torch_layout else np.asarray(x, np.float32)
        if env[ti].shape[1:] != t.shape[1:]:
            raise ValueError(f"input {t.name}: expected per-sample shape {list(t.shape[1:])}, got "
                             f"{list(env[ti].shape[1:])}")
    for op in model.ops:
        y = _run_op(model, op, [env[i] for i in op.inputs])
        want = model.tensors[op.output].shape[1:]
        if tuple(y.shape[1:]) != tuple(want):
            raise AssertionError(f"reference: op {op.name} produced {list(y.shape)}, file says {list(want)}")
        env[op.output] = y.astype(f32, copy=False)
    outs = [env[o] for o in model.outputs]
    if torch_layout:
        outs = [to_torch(y, model.tensors[o]) for y, o in zip(outs, model.outputs)]
    return (outs, env) if return_all else outs
