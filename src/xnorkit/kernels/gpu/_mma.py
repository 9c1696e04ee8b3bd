"""Tensor-core binary GEMM: ``mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc`` (sm_80+).

Why AND and not XOR: the PTX ISA's 1-bit ``mma`` has ``.xor.popc`` (sm_75+) and ``.and.popc``
(sm_80+), and ``.xor`` is deprecated and not supported on the newest architectures (Hopper
onwards), so this path uses AND everywhere and recovers the XOR count exactly with
``popc(a ^ b) = popc(a) + popc(b) - 2 * popc(a & b)``; the row popcounts are accumulated while
the tiles are staged in shared memory. Whether a GPU executes b1 mma natively (A100/Ada) or
emulates it is not something the ISA promises, which is why dispatch times this backend against
the Triton one instead of assuming it wins.

Block tile 64x64 (4 warps, each 32x32 = 2 x 4 mma tiles), K in slabs of 256 bits (8 words),
zero-filled past M, N and the row length, bits past ``k`` masked: any M, N, K.

Compiled on first use with ``torch.utils.cpp_extension.load_inline`` (needs nvcc and ninja).
"""

from __future__ import annotations

import threading

import torch

_CPP = r"""
#include <torch/extension.h>
torch::Tensor bgemm_b1_and(torch::Tensor a, torch::Tensor b, int64_t k);
"""

_CUDA = r"""
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cstdint>

namespace {

constexpr int BM = 64;       // rows of A per block
constexpr int BN = 64;       // rows of B (output columns) per block
constexpr int KWC = 8;       // int32 words per K slab = 256 bits = one m16n8k256 step
constexpr int LDS = 12;      // padded shared-memory row stride (words): conflict-free fragments
constexpr int THREADS = 128; // 4 warps in a 2 x 2 arrangement of 32 x 32 warp tiles

__device__ __forceinline__ uint32_t word_mask(int kw, int64_t kbits) {
  int64_t nvalid = kbits - 32LL * kw;
  if (nvalid >= 32) return 0xffffffffu;
  if (nvalid <= 0) return 0u;
  return (1u << nvalid) - 1u;
}

__device__ __forceinline__ void mma_and_popc(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();  // the host refuses to launch below sm_80
#endif
}

__global__ void __launch_bounds__(THREADS) bgemm_b1_and_kernel(
    const uint32_t* __restrict__ A, const uint32_t* __restrict__ B, int32_t* __restrict__ C,
    int M, int N, int KW, int64_t kbits, int64_t lda, int64_t ldb, int64_t ldc) {
  __shared__ uint32_t sA[BM][LDS];
  __shared__ uint32_t sB[BN][LDS];
  __shared__ int popA[BM];
  __shared__ int popB[BN];

  const int tid = threadIdx.x;
  const int warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;  // groupID, threadID_in_group (PTX fragment layout)
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;

  if (tid < BM) popA[tid] = 0; else popB[tid - BM] = 0;  // THREADS == BM + BN

  int acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][j][q] = 0;
  __syncthreads();

  for (int kw0 = 0; kw0 < KW; kw0 += KWC) {
    // Stage one 256-bit slab of 64 rows of A and of B; zero outside the matrices, bits past k
    // masked; count each row's set bits on the way (for the XOR identity).
    for (int i = tid; i < BM * KWC; i += THREADS) {
      const int r = i / KWC, w = i % KWC, kw = kw0 + w;
      const uint32_t km = word_mask(kw, kbits);
      uint32_t va = 0u, vb = 0u;
      if (kw < KW && m0 + r < M) va = A[(int64_t)(m0 + r) * lda + kw] & km;
      if (kw < KW && n0 + r < N) vb = B[(int64_t)(n0 + r) * ldb + kw] & km;
      sA[r][w] = va;
      sB[r][w] = vb;
      if (va) atomicAdd(&popA[r], __popc(va));
      if (vb) atomicAdd(&popB[r], __popc(vb));
    }
    __syncthreads();

    // Fragments (PTX ISA, mma.m16n8k256 .b1): A reg0 row g words t, reg1 row g+8 words t,
    // reg2 row g words t+4, reg3 row g+8 words t+4; B reg0 col g words t, reg1 col g words t+4.
    uint32_t af[2][4], bf[4][2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = wm + i * 16 + g;
      af[i][0] = sA[r][t];
      af[i][1] = sA[r + 8][t];
      af[i][2] = sA[r][t + 4];
      af[i][3] = sA[r + 8][t + 4];
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = wn + j * 8 + g;
      bf[j][0] = sB[c][t];
      bf[j][1] = sB[c][t + 4];
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) mma_and_popc(acc[i][j], af[i], bf[j]);
    __syncthreads();
  }

  // C fragment: reg q -> row g + 8 * (q >= 2), col 2 t + (q & 1).
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int r = wm + i * 16 + g + ((q >> 1) << 3);
        const int c = wn + j * 8 + 2 * t + (q & 1);
        if (m0 + r < M && n0 + c < N) {
          const int x = popA[r] + popB[c] - 2 * acc[i][j][q];  // popcount(a ^ b)
          C[(int64_t)(m0 + r) * ldc + (n0 + c)] = (int32_t)(kbits - 2 * (int64_t)x);
        }
      }
}

}  // namespace

torch::Tensor bgemm_b1_and(torch::Tensor a, torch::Tensor b, int64_t k) {
  TORCH_CHECK(a.is_cuda() && b.is_cuda(), "bgemm_b1_and: CUDA tensors expected");
  TORCH_CHECK(a.scalar_type() == torch::kInt32 && b.scalar_type() == torch::kInt32,
              "bgemm_b1_and: int32 words expected");
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1), "bgemm_b1_and: (m, w) and (n, w) expected");
  TORCH_CHECK(a.stride(1) == 1 && b.stride(1) == 1, "bgemm_b1_and: rows must be contiguous");
  TORCH_CHECK(k >= 1 && k <= 32 * a.size(1), "bgemm_b1_and: k out of range");
  const c10::cuda::CUDAGuard guard(a.device());
  const int M = (int)a.size(0), N = (int)b.size(0), KW = (int)a.size(1);
  auto c = torch::empty({M, N}, a.options());
  dim3 grid((N + BN - 1) / BN, (M + BM - 1) / BM);
  TORCH_CHECK(grid.y <= 65535, "bgemm_b1_and: too many rows for one launch");
  bgemm_b1_and_kernel<<<grid, THREADS, 0, at::cuda::getCurrentCUDAStream()>>>(
      reinterpret_cast<const uint32_t*>(a.data_ptr<int32_t>()),
      reinterpret_cast<const uint32_t*>(b.data_ptr<int32_t>()), c.data_ptr<int32_t>(), M, N, KW, k,
      a.stride(0), b.stride(0), c.stride(0));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return c;
}
"""

_lock = threading.Lock()
_module = None
_error: str | None = None


def cuda_source() -> str:
    """The CUDA source of the kernel (for inspection and offline compile checks)."""
    return _CUDA


def _load():
    global _module, _error
    with _lock:
        if _module is None and _error is None:
            try:
                from torch.utils.cpp_extension import CUDA_HOME, load_inline  # noqa: PLC0415

                if not torch.cuda.is_available():
                    raise RuntimeError("no CUDA GPU")
                if CUDA_HOME is None:
                    raise RuntimeError("the CUDA toolkit (nvcc) was not found; set CUDA_HOME")
                _module = load_inline(
                    name="xnorkit_bgemm_b1_mma",
                    cpp_sources=[_CPP],
                    cuda_sources=[_CUDA],
                    functions=["bgemm_b1_and"],
                    extra_cuda_cflags=["-O3", "--use_fast_math"],
                    verbose=False,
                )
            except Exception as exc:  # compile or toolchain failure: backend unavailable
                _error = f"could not build the b1 mma extension ({type(exc).__name__}: {str(exc)[:300]})"
        return _module


def load_error() -> str | None:
    """None if the extension is built and loaded (building it on first call), else why not."""
    _load()
    return _error


def bgemm_int32(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    mod = _load()
    if mod is None:
        raise RuntimeError(f"mma_b1 backend unavailable: {_error}")
    return mod.bgemm_b1_and(a, b, int(k))
