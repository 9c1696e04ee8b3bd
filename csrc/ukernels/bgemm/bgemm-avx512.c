/* AVX-512 binary GEMM (x86-64, AVX-512F/BW + VPOPCNTDQ): per (row, column) pair and 512 bits,
 * one vpxorq + one vpopcntq + one vpaddq. MR = 4 rows of A x NR = 4 columns of B keeps 16
 * accumulators, 4 A vectors and the B vectors in the 32 zmm registers.
 *
 * Built with -mavx512f -mavx512bw -mavx512vpopcntdq. With XK_EMULATE_AVX512 defined the same
 * source compiles against SIMDe's portable AVX-512 (tests/c: verifies the kernel's logic on CPUs
 * without AVX-512). */
#include <string.h>

#ifdef XK_EMULATE_AVX512
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#define XK_DESC_NAME xk_bgemm_avx512_emulated
typedef simde__mmask16 xk_mask16;
#else
#include <immintrin.h>
#define XK_DESC_NAME xk_bgemm_avx512
typedef __mmask16 xk_mask16;
#endif

#include "../../xk_internal.h"

#define MR 4
#define NR 4
#define CHUNK 64 /* bytes of k per step */

static inline __m512i load_a(const uint64_t *row, size_t w, size_t kw) {
  if (w + 8 <= kw) return _mm512_loadu_si512((const void *)(row + w));
  uint64_t tmp[8] = {0}; /* tail step: only the words that exist */
  memcpy(tmp, row + w, (kw - w) * sizeof(uint64_t));
  return _mm512_loadu_si512((const void *)tmp);
}

static void ukernel(size_t mr, size_t kw, const uint64_t *a, size_t lda, const uint8_t *panel,
                    uint32_t *q, size_t ldq) {
  const uint64_t *ar[MR];
  for (size_t i = 0; i < MR; i++) ar[i] = a + (i < mr ? i : 0) * lda;
  const uint64_t *b = (const uint64_t *)panel; /* per step: NR x 8 words */
  const size_t nsteps = xk_div_up(kw, 8);
  __m512i acc[MR][NR];
  for (size_t i = 0; i < MR; i++)
    for (size_t j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_si512();
  for (size_t s = 0; s < nsteps; s++, b += 8 * NR) {
    __m512i bv[NR];
    for (size_t j = 0; j < NR; j++) bv[j] = _mm512_loadu_si512((const void *)(b + 8 * j));
    for (size_t i = 0; i < MR; i++) {
      __m512i av = load_a(ar[i], s * 8, kw);
      for (size_t j = 0; j < NR; j++)
        acc[i][j] = _mm512_add_epi64(acc[i][j], _mm512_popcnt_epi64(_mm512_xor_si512(av, bv[j])));
    }
  }
  for (size_t i = 0; i < mr; i++)
    for (size_t j = 0; j < NR; j++) {
      uint64_t lanes[8];
      _mm512_storeu_si512((void *)lanes, acc[i][j]);
      q[i * ldq + j] = (uint32_t)(lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] +
                                  lanes[6] + lanes[7]);
    }
}

static void pack_f32(const float *x, size_t k, uint64_t *out) {
  const __m512 zero = _mm512_setzero_ps();
  size_t kw = xk_div_up(k, 64), full = k / 64;
  for (size_t w = 0; w < full; w++) {
    const float *p = x + w * 64;
    uint64_t word = 0;
    for (int g = 0; g < 4; g++) {
      xk_mask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 16 * g), zero, _CMP_NGE_UQ);
      word |= (uint64_t)m << (16 * g);
    }
    out[w] = word;
  }
  if (full < kw) {
    uint64_t word = 0;
    for (size_t i = full * 64; i < k; i++) word |= (uint64_t)(!(x[i] >= 0.0f)) << (i - full * 64);
    out[full] = word;
  }
}

static void pack_i8(const int8_t *x, size_t k, uint64_t *out) {
  size_t kw = xk_div_up(k, 64), full = k / 64;
  for (size_t w = 0; w < full; w++)
    out[w] = (uint64_t)_mm512_movepi8_mask(_mm512_loadu_si512((const void *)(x + w * 64)));
  if (full < kw) {
    uint64_t word = 0;
    for (size_t i = full * 64; i < k; i++) word |= (uint64_t)(x[i] < 0) << (i - full * 64);
    out[full] = word;
  }
}

const xk_bgemm_ukernel_desc XK_DESC_NAME = {
    XK_ISA_AVX512, MR, NR, CHUNK, 1, ukernel, pack_f32, pack_i8, NULL, NULL, 0, 0,
};
