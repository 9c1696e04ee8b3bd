"""Pure-torch oracles for the GPU kernels (any device, no Triton): what they must compute.

Conventions are those of the CPU kernels (docs/kernels.md): bit 1 means -1, bit 0 means +1,
sign(0) = +1 and NaN counts as negative (bit = ``not x >= 0``); a row of ``k`` values is a
little-endian bit stream padded with zero bits to a multiple of 64, stored here as int32 words
(element ``i`` is bit ``i % 32`` of word ``i // 32``), so ``words.view(torch.uint8)`` is byte for
byte what ``xnorkit.kernels.pack`` writes. The binary dot product of two rows is
``k - 2 * popcount(a ^ b)`` over the first ``k`` bits.

These functions are deliberately plain (unpack to ±1, integer matmul) and slow.
"""

from __future__ import annotations

import torch

__all__ = ["packed_words", "pack_ref", "unpack_ref", "bgemm_ref"]

_SHIFTS = torch.arange(32, dtype=torch.int64)


def packed_words(k: int) -> int:
    """int32 words in one packed row of ``k`` bits: 2 * ceil(k / 64)."""
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return 2 * (-(-k // 64))


def pack_ref(x: torch.Tensor) -> torch.Tensor:
    """Sign bits of ``x`` along the last axis -> int32 words (..., packed_words(k))."""
    k = x.shape[-1]
    neg = ~(x >= 0) if x.is_floating_point() else (x < 0)
    w = packed_words(k)
    bits = torch.zeros((*x.shape[:-1], w * 32), dtype=torch.int64, device=x.device)
    bits[..., :k] = neg.to(torch.int64)
    bits = bits.reshape(*x.shape[:-1], w, 32) << _SHIFTS.to(x.device)
    words = bits.sum(-1)  # disjoint bits: the sum is the OR, in [0, 2**32)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32)


def unpack_ref(words: torch.Tensor, k: int) -> torch.Tensor:
    """int32 words (..., W) -> float32 ±1 (..., k); only the first ``k`` bits are read."""
    if words.dtype != torch.int32:
        raise TypeError(f"unpack_ref: expected int32 words, got {words.dtype}")
    if k > 32 * words.shape[-1]:
        raise ValueError(f"unpack_ref: k={k} exceeds the {32 * words.shape[-1]} bits of a row")
    bits = (words.to(torch.int64)[..., None] >> _SHIFTS.to(words.device)) & 1
    bits = bits.reshape(*words.shape[:-1], -1)[..., :k]
    return torch.where(bits == 1, -1.0, 1.0).to(torch.float32)


def bgemm_ref(a_words, b_words, k, out="int32", scale=None, bias=None, threshold=None, flip=None):
    """C[i, j] = k - 2 * popcount(A[i] ^ B[j]) with the fused output stage of ``bgemm``.

    ``out="float"`` applies ``scale[j] * dot + bias[j]`` with two float32 roundings (no FMA);
    ``out="bits"`` packs ``(dot < threshold[j]) ^ flip[j]`` (bit 1 = -1) along j.
    """
    a = unpack_ref(a_words, k).to(torch.float64)
    b = unpack_ref(b_words, k).to(torch.float64)
    d = (a @ b.T).to(torch.int64)  # exact: |dot| <= k < 2**53
    n = d.shape[1]
    if out == "int32":
        return d.to(torch.int32)
    if out == "float":
        y = d.to(torch.float32)
        if scale is not None:
            y = y * scale.to(torch.float32)
        if bias is not None:
            y = y + bias.to(torch.float32)
        return y
    if out == "bits":
        neg = d < threshold.to(torch.int64)[None, :]
        if flip is not None:
            neg = neg ^ (flip != 0)[None, :]
        return pack_ref(torch.where(neg, -1.0, 1.0))
    raise ValueError(f"out must be 'int32', 'float' or 'bits', got {out!r}")
