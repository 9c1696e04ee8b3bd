/* AVX-512 binary GEMM (x86-64, AVX-512F/BW + VPOPCNTDQ): the column-lane kernel below, for every
 * K (vpxorq + vpopcntq + vpaddq per 8 columns x 64 bits), and the packing of float32 / int8 rows.
 *
 * Built with -mavx512f -mavx512bw -mavx512vl -mavx512vpopcntdq. With XK_EMULATE_AVX512 defined the
 * same source compiles against SIMDe's portable AVX-512 (tests/c: verifies the kernel's logic on
 * CPUs without AVX-512). */

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
  if (full < kw) { /* the last k % 64 values (C = 32 pixels are all tail) */
    const float *p = x + full * 64;
    const size_t rest = k - full * 64;
    uint64_t word = 0;
#ifndef XK_EMULATE_AVX512
    for (size_t i = 0; i < rest; i += 16) { /* 16 at a time, masked loads */
      const size_t n = rest - i < 16 ? rest - i : 16;
      const xk_mask16 m = (xk_mask16)((1u << n) - 1u);
      word |= (uint64_t)_mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, p + i), zero, _CMP_NGE_UQ) << i;
    }
#else /* SIMDe has no masked loads: the same bits one value at a time */
    for (size_t i = 0; i < rest; i++) word |= (uint64_t)(!(p[i] >= 0.0f)) << i;
#endif
    out[full] = word;
  }
}

static void pack_i8(const int8_t *x, size_t k, uint64_t *out) {
  size_t kw = xk_div_up(k, 64), full = k / 64;
  for (size_t w = 0; w < full; w++)
    out[w] = (uint64_t)_mm512_movepi8_mask(_mm512_loadu_si512((const void *)(x + w * 64)));
  if (full < kw) { /* the last k % 64 values */
#ifndef XK_EMULATE_AVX512
    const uint64_t m = (UINT64_C(1) << (k - full * 64)) - 1; /* one masked load */
    out[full] = (uint64_t)_mm512_movepi8_mask(_mm512_maskz_loadu_epi8(m, (const void *)(x + full * 64))) & m;
#else /* SIMDe has no masked loads */
    uint64_t word = 0;
    for (size_t i = full * 64; i < k; i++) word |= (uint64_t)(x[i] < 0) << (i - full * 64);
    out[full] = word;
#endif
  }
}


/* ------------------------------------------------------------------ column-lane kernel
 * The default AVX-512 kernel: k advances one 64-bit word per step with the output columns in
 * the vector lanes. Panel, per k-word: the words of NR = 16 columns (two 64-byte vectors); the
 * A word of each row is broadcast (vpbroadcastq from memory), XORed with both vectors,
 * popcounted (vpopcntq) and added into 64-bit lane counters: 3 instructions per 8 columns x 64
 * bits, no horizontal reduction, no widening (64-bit counters) and no padding past the last
 * 64-bit word. MR = 8 rows x NR = 16 columns: 16 accumulators, 2 panel vectors and a broadcast
 * in the 32 zmm registers; per step 10 loads for 48 vector ALU instructions. Rows 1..7 without
 * duplicate work (ROWS is a compile-time constant). */
#define LMR 8
#define LNR 16

static inline __attribute__((always_inline)) void lanes_kernel(const size_t ROWS, size_t kw, const uint64_t *a,
                                                               size_t lda, const uint8_t *panel, uint32_t *q,
                                                               size_t ldq) {
  const long long *r[LMR];
  for (size_t i = 0; i < LMR; i++) r[i] = (const long long *)(a + (i < ROWS ? i : 0) * lda);
  const __m512i *b = (const __m512i *)panel;
  __m512i c[LMR][2];
  for (size_t i = 0; i < ROWS; i++) c[i][0] = c[i][1] = _mm512_setzero_si512();
  for (size_t w = 0; w < kw; w++, b += 2) {
    const __m512i b0 = _mm512_loadu_si512((const void *)b), b1 = _mm512_loadu_si512((const void *)(b + 1));
    for (size_t i = 0; i < ROWS; i++) {
      const __m512i x = _mm512_set1_epi64(r[i][w]);
      c[i][0] = _mm512_add_epi64(c[i][0], _mm512_popcnt_epi64(_mm512_xor_si512(x, b0)));
      c[i][1] = _mm512_add_epi64(c[i][1], _mm512_popcnt_epi64(_mm512_xor_si512(x, b1)));
    }
  }
  /* counts < 2^32 (k < 2^31 bits): the low halves of the lanes are the counts */
  for (size_t i = 0; i < ROWS; i++) {
    _mm256_storeu_si256((__m256i *)(q + i * ldq), _mm512_cvtepi64_epi32(c[i][0]));
    _mm256_storeu_si256((__m256i *)(q + i * ldq + 8), _mm512_cvtepi64_epi32(c[i][1]));
  }
}

static void lanes_ukernel(size_t mr, size_t kw, const uint64_t *a, size_t lda, const uint8_t *panel, uint32_t *q,
                          size_t ldq) {
  switch (mr) {
    case 1: lanes_kernel(1, kw, a, lda, panel, q, ldq); break;
    case 2: lanes_kernel(2, kw, a, lda, panel, q, ldq); break;
    case 3: lanes_kernel(3, kw, a, lda, panel, q, ldq); break;
    case 4: lanes_kernel(4, kw, a, lda, panel, q, ldq); break;
    case 5: lanes_kernel(5, kw, a, lda, panel, q, ldq); break;
    case 6: lanes_kernel(6, kw, a, lda, panel, q, ldq); break;
    case 7: lanes_kernel(7, kw, a, lda, panel, q, ldq); break;
    default: lanes_kernel(8, kw, a, lda, panel, q, ldq); break;
  }
}

/* Rows of up to XK_AVX512_LANES_MAX_KWORDS words: convolutions gather their im2col rows inside the
 * GEMM tasks (8 rows fit the ops' scratch). Longer rows: the same kernel on a materialized im2col. */
static const xk_bgemm_ukernel_desc lanes_implicit = {
    XK_ISA_AVX512, LMR, LNR, 8, 1, lanes_ukernel, pack_f32, pack_i8, NULL, NULL, 0, 1, NULL, 0, NULL, 0, NULL,
};

const xk_bgemm_ukernel_desc XK_DESC_NAME = {
    XK_ISA_AVX512, LMR, LNR, 8, 1, lanes_ukernel, pack_f32, pack_i8, NULL,
    &lanes_implicit, XK_AVX512_LANES_MAX_KWORDS, 0, NULL, 0, NULL, 0, NULL,
};
