"""Shared helpers of the engine tests: independent numpy bit packing and float references."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ACT = {"none": 0, "relu": 1, "relu6": 2, "hardtanh": 3, "prelu": 4, "leaky": 5}


def row_bytes(k: int) -> int:
    return (k + 63) // 64 * 8


def pack_pm1(x: np.ndarray, tap_bits: int | None = None) -> np.ndarray:
    """Pack +-1 values along the last axis (bit 1 = -1, little-endian), rows padded to 64 bits.

    With tap_bits, x has shape (..., taps, c) and each tap starts at bit t * tap_bits."""
    x = np.asarray(x)
    if tap_bits is not None:
        *lead, taps, c = x.shape
        bits = np.zeros((*lead, taps, tap_bits), dtype=np.uint8)
        bits[..., :c] = x < 0
        bits = bits.reshape(*lead, taps * tap_bits)
    else:
        bits = (x < 0).astype(np.uint8)
    k = bits.shape[-1]
    padded = np.zeros((*bits.shape[:-1], row_bytes(k) * 8), dtype=np.uint8)
    padded[..., :k] = bits
    return np.packbits(padded, axis=-1, bitorder="little").reshape(-1, row_bytes(k))


def unpack_pm1(bits: np.ndarray, k: int) -> np.ndarray:
    b = np.unpackbits(np.asarray(bits, dtype=np.uint8), axis=-1, bitorder="little")[..., :k]
    return np.where(b == 1, -1.0, 1.0).astype(np.float32)


def pad_bits_of(bits: np.ndarray, k: int) -> np.ndarray:
    """The padding bits past k of each packed row."""
    return np.unpackbits(np.asarray(bits, dtype=np.uint8), axis=-1, bitorder="little")[..., k:]


def rand_pm1(rng, shape) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def conv_shape(n, h, w, c, oc, kh, kw, sh=1, sw=1, dh=1, dw=1, pt=0, pl=0, pb=0, pr=0):
    return [n, h, w, c, oc, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr]


def conv_ref(x_nhwc, w_ohwi, stride, pad, dil, pad_value=0.0, groups=1) -> np.ndarray:
    """float64 torch conv on NHWC input / OHWI weights with an explicit constant pad value.
    pad = (top, left, bottom, right). Returns NHWC."""
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc, dtype=np.float64)).permute(0, 3, 1, 2)
    w = torch.from_numpy(np.ascontiguousarray(w_ohwi, dtype=np.float64)).permute(0, 3, 1, 2)
    t, l, b, r = pad
    x = F.pad(x, (l, r, t, b), value=float(pad_value))
    y = F.conv2d(x, w, stride=stride, dilation=dil, groups=groups)
    return y.permute(0, 2, 3, 1).numpy()


def act_ref(y, kind="none", lo=-1.0, hi=1.0, alpha=None):
    if kind == "none":
        return y
    if kind == "relu":
        return np.maximum(y, 0)
    if kind == "relu6":
        return np.clip(y, 0, 6)
    if kind == "hardtanh":
        return np.clip(y, lo, hi)
    if kind == "prelu":
        return np.where(y >= 0, y, np.asarray(alpha) * y)
    if kind == "leaky":
        return np.where(y >= 0, y, lo * y)
    raise ValueError(kind)
