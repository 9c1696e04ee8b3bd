"""Plain numpy oracles for the CPU kernels (no C involved): what pack/bgemm must compute."""

from __future__ import annotations

import numpy as np


def pack_ref(x: np.ndarray) -> np.ndarray:
    """Sign bits along the last axis (1 iff not x >= 0), little-endian, padded to 64 bits."""
    x = np.asarray(x)
    k = x.shape[-1]
    neg = ~(x >= 0) if x.dtype.kind == "f" else (x < 0)
    nbytes = -(-k // 64) * 8
    padded = np.zeros((*x.shape[:-1], nbytes * 8), dtype=bool)
    padded[..., :k] = neg
    return np.packbits(padded, axis=-1, bitorder="little")


def unpack_ref(bits: np.ndarray, k: int) -> np.ndarray:
    b = np.unpackbits(np.asarray(bits, dtype=np.uint8), axis=-1, bitorder="little")[..., :k]
    return np.where(b == 1, -1.0, 1.0).astype(np.float32)


def bdot_ref(a_bits: np.ndarray, b_bits: np.ndarray, k: int) -> np.ndarray:
    """int64 (m, n): dot of the ±1 vectors, only the first k bits of each row counted."""
    a = unpack_ref(a_bits, k).astype(np.int64)
    b = unpack_ref(b_bits, k).astype(np.int64)
    return a @ b.T


def bgemm_ref(a_bits, b_bits, k, out="int32", scale=None, bias=None, threshold=None, flip=None):
    d = bdot_ref(a_bits, b_bits, k)
    n = d.shape[1]
    if out == "int32":
        return d.astype(np.int32)
    if out == "float":
        s = np.ones(n, np.float32) if scale is None else np.asarray(scale, np.float32)
        o = np.zeros(n, np.float32) if bias is None else np.asarray(bias, np.float32)
        return (s * d.astype(np.float32)) + o  # two float32 roundings, no FMA: as the C epilogue
    if out == "bits":
        f = np.zeros(n, bool) if flip is None else np.asarray(flip).astype(bool)
        neg = (d < np.asarray(threshold, np.int64)[None, :]) ^ f[None, :]
        return pack_ref(np.where(neg, -1.0, 1.0).astype(np.float32))
    raise ValueError(out)
