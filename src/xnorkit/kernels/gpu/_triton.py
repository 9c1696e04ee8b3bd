"""Triton kernels: fused sign+pack and the binary GEMM (XOR + popcount).

Imported only when Triton is installed. With ``TRITON_INTERPRET=1`` set *before* this module is
imported, the same kernels run in Triton's interpreter on CPU tensors (that is how CI tests them);
on a GPU they are compiled, and the GEMM's tile sizes are autotuned per (M, N, KW).

Word layout (see reference.py): int32 words, element i of a row is bit i % 32 of word i // 32,
bit 1 means -1; rows are padded with zero bits to a multiple of 64.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl
from triton.language.extra import libdevice


def _interpret_mode() -> bool:
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:  # triton >= 3.4
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


# Fixed when this module is imported, exactly like @triton.jit decides it.
INTERPRET = _interpret_mode()

# Output kinds of the GEMM epilogue (constexpr OUT).
OUT_INT32, OUT_FLOAT, OUT_BITS = 0, 1, 2


@triton.jit
def _popc32(x, HW_POPC: tl.constexpr):
    """Population count of each int32 lane: the hardware instruction, or SWAR bit tricks.

    The SWAR path is exact on int32 with arithmetic shifts: every shifted value is masked with
    a constant whose top bits are clear before it can matter, and the final multiply only needs
    its top byte (at most 32).
    """
    if HW_POPC:
        return libdevice.popc(x)
    else:
        x = x - ((x >> 1) & 0x55555555)
        x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
        x = (x + (x >> 4)) & 0x0F0F0F0F
        return (x * 0x01010101) >> 24


@triton.jit
def _word_mask(offs_w, K_BITS):
    """Mask of the valid bits of words ``offs_w`` of a row of K_BITS bits (-1, partial or 0)."""
    nvalid = K_BITS - offs_w * 32
    nvalid = tl.minimum(tl.maximum(nvalid, 0), 32)
    part = (1 << tl.minimum(nvalid, 31)) - 1
    return tl.where(nvalid >= 32, -1, part)


@triton.jit
def pack_kernel(
    x_ptr, out_ptr, R, K, W, R_INNER, stride_xo, stride_xr, stride_xk, stride_or,
    BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """out[r, w] = sum_j (not x[r, 32 w + j] >= 0) << j over valid j; zero bits past K.

    Row r of x starts at (r // R_INNER) * stride_xo + (r % R_INNER) * stride_xr, so views such
    as an NCHW tensor read as NHWC rows pack without a copy.
    """
    pid_r = tl.program_id(0)
    pid_w = tl.program_id(1)
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_w = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    j = tl.arange(0, 32)
    offs_k = offs_w[None, :, None] * 32 + j[None, None, :]  # [1, BW, 32]
    row_ok = offs_r[:, None, None] < R
    mask = row_ok & (offs_k < K)
    r64 = offs_r.to(tl.int64)
    row_off = (r64 // R_INNER) * stride_xo + (r64 % R_INNER) * stride_xr
    ptrs = x_ptr + row_off[:, None, None] + offs_k.to(tl.int64) * stride_xk
    x = tl.load(ptrs, mask=mask, other=0)
    neg = ~(x >= 0)  # NaN compares false: it packs as -1, like the CPU kernels
    neg = neg & mask
    bits = neg.to(tl.int32) << j[None, None, :]
    words = tl.sum(bits, axis=2)  # disjoint bits: the sum is the OR (int32 wraps at bit 31)
    o_ptrs = out_ptr + offs_r[:, None].to(tl.int64) * stride_or + offs_w[None, :]
    tl.store(o_ptrs, words, mask=(offs_r[:, None] < R) & (offs_w[None, :] < W))


@triton.jit
def bgemm_kernel(
    a_ptr, b_ptr, c_ptr, scale_ptr, bias_ptr, thr_ptr, flip_ptr,
    M, N, KW, K_BITS, stride_am, stride_bn, stride_cm, OUT_W,
    OUT: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_FLIP: tl.constexpr,
    HW_POPC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """C[m, n] = K_BITS - 2 * popcount(A[m] ^ B[n]) over the first K_BITS bits, any M, N, K.

    A is (M, KW) and B is (N, KW) int32 words, rows contiguous. Bits past K_BITS are masked off
    in both operands, so the result is exact whatever the padding holds.
    Epilogue OUT: 0 int32; 1 float32 ``scale[n] * dot + bias[n]``; 2 bits packed along n,
    bit = (dot < thr[n]) ^ flip[n], zero past N.
    """
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped ordering: GROUP_M row-tiles share B tiles in L2.
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_rows = a_ptr + offs_m.to(tl.int64) * stride_am
    b_rows = b_ptr + offs_n.to(tl.int64) * stride_bn

    # The XOR cube of a K-slab, [BM, BN, BK], is accumulated as is and reduced over the slab axis
    # once after the loop: reducing it every step makes Triton shuffle across lanes (the slab axis
    # is spread over lanes), which doubles the instructions per popcount. With the deferred
    # reduction the inner loop is LOP3 (xor) + POPC + IADD per word pair (about 3.5 SASS
    # instructions per POPC on sm_80/sm_90, checked offline with ptxas), i.e. popcount-bound.
    acc3 = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_K), dtype=tl.int32)
    for kw0 in range(0, KW, BLOCK_K):
        offs_k = kw0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < KW
        km = _word_mask(offs_k, K_BITS)
        a = tl.load(a_rows[:, None] + offs_k[None, :], mask=mask_m[:, None] & k_ok[None, :], other=0)
        b = tl.load(b_rows[:, None] + offs_k[None, :], mask=mask_n[:, None] & k_ok[None, :], other=0)
        a = a & km[None, :]
        b = b & km[None, :]
        acc3 += _popc32(a[:, None, :] ^ b[None, :, :], HW_POPC)
    acc = tl.sum(acc3, axis=2)

    dot = K_BITS - 2 * acc
    c_rows = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm
    if OUT == 0:
        tl.store(c_rows + offs_n[None, :], dot, mask=mask_m[:, None] & mask_n[None, :])
    elif OUT == 1:
        y = dot.to(tl.float32)
        if HAS_SCALE:
            y = y * tl.load(scale_ptr + offs_n, mask=mask_n, other=1.0)[None, :]
        if HAS_BIAS:
            y = y + tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
        tl.store(c_rows + offs_n[None, :], y, mask=mask_m[:, None] & mask_n[None, :])
    else:
        thr = tl.load(thr_ptr + offs_n, mask=mask_n, other=0)
        neg = dot < thr[None, :]
        if HAS_FLIP:
            fl = tl.load(flip_ptr + offs_n, mask=mask_n, other=0) != 0
            neg = neg ^ fl[None, :]
        neg = neg & mask_n[None, :]
        sh = tl.arange(0, BLOCK_N) % 32
        bits = neg.to(tl.int32) << sh[None, :]
        words = tl.sum(tl.reshape(bits, (BLOCK_M, BLOCK_N // 32, 32)), axis=2)
        offs_w = pid_n * (BLOCK_N // 32) + tl.arange(0, BLOCK_N // 32)
        tl.store(c_rows + offs_w[None, :], words, mask=mask_m[:, None] & (offs_w[None, :] < OUT_W))


def _cfg(bm, bn, bk, warps, stages, group=8):
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group},
        num_warps=warps, num_stages=stages,
    )


# Search space for the GPU autotuner. Every entry compiles for sm_80 and sm_90 with no register
# spills (ptxas, offline) and a popcount-bound inner loop; large tiles for square problems,
# thin-M tiles for batch-1..256 inference. BLOCK_N >= 32 always (the bits epilogue needs it).
GPU_CONFIGS = [
    _cfg(64, 64, 4, 4, 3),
    _cfg(64, 64, 4, 4, 4),
    _cfg(128, 64, 2, 4, 3),
    _cfg(64, 128, 2, 4, 3),
    _cfg(128, 128, 1, 4, 3),
    _cfg(128, 128, 2, 8, 3),
    _cfg(128, 128, 2, 8, 4),
    _cfg(256, 128, 1, 8, 3),
    _cfg(32, 128, 4, 4, 3),
    _cfg(32, 64, 4, 4, 3),
    _cfg(16, 64, 8, 4, 3),
    _cfg(16, 256, 2, 4, 3),
]

# Interpreter (CPU) default: small tiles keep the numpy emulation fast.
INTERPRET_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 4, "GROUP_M": 4}

bgemm_autotuned = triton.autotune(configs=GPU_CONFIGS, key=["M", "N", "KW", "OUT"])(bgemm_kernel)


@triton.jit
def unpack_kernel(
    w_ptr, out_ptr, R, K, WIDTH, stride_wr, stride_or,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out[r, c] = -1 if bit c of row r is set else +1 for c < K; 0 for K <= c < WIDTH."""
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = offs_r[:, None] < R
    valid = offs_c[None, :] < K
    w_ptrs = w_ptr + offs_r[:, None].to(tl.int64) * stride_wr + (offs_c // 32)[None, :]
    word = tl.load(w_ptrs, mask=row_ok & valid, other=0)
    bit = (word >> (offs_c % 32)[None, :]) & 1
    v = tl.where(valid, 1 - 2 * bit, 0)
    o_ptrs = out_ptr + offs_r[:, None].to(tl.int64) * stride_or + offs_c[None, :]
    tl.store(o_ptrs, v.to(out_ptr.dtype.element_ty), mask=row_ok & (offs_c[None, :] < WIDTH))
