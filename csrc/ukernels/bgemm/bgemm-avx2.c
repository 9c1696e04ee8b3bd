/* AVX2 binary GEMM (x86-64): no vector popcount on AVX2, so popcount is a 16-entry nibble
 * table looked up with vpshufb (Mula et al., "Faster population counts using AVX2", 2016).
 *
 * The weight panel stores each 256-bit chunk already split into low and high nibbles (one
 * nibble per byte, 2 x 32 bytes), so XOR of nibbles = nibble of XOR and the inner step per
 * (row, column) pair is: 2 vpxor + 2 vpshufb + 2 vpaddb. Byte counters (<= 8 per step) are
 * widened with vpsadbw every 31 steps. MR = 2 rows of A, NR = 4 columns of B. */
#include <immintrin.h>
#include <string.h>

#include "../../xk_internal.h"

#define MR 2
#define NR 4
#define CHUNK 32            /* bytes of k per step */
#define MAX_BYTE_STEPS 31   /* 31 * 8 = 248 <= 255 */

static inline void split(__m256i x, __m256i m, __m256i *lo, __m256i *hi) {
  *lo = _mm256_and_si256(x, m);
  *hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), m);
}

/* Sum of the four 64-bit lanes; each lane holds two 32-bit counts (low: column j, high:
 * column j+1), which never carry into each other (counts < 2^32). */
static inline uint64_t hsum_pair(__m256i v) {
  __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return (uint64_t)_mm_cvtsi128_si64(s) + (uint64_t)_mm_extract_epi64(s, 1);
}

/* Two byte-count vectors -> one vector of 64-bit lanes holding (count_a | count_b << 32). */
static inline __m256i sad_pair(__m256i ca, __m256i cb, __m256i zero) {
  return _mm256_or_si256(_mm256_sad_epu8(ca, zero), _mm256_slli_epi64(_mm256_sad_epu8(cb, zero), 32));
}

static inline __m256i load_a(const uint64_t *row, size_t w, size_t kw) {
  if (w + 4 <= kw) return _mm256_loadu_si256((const __m256i *)(row + w));
  /* tail chunk: load only the words that exist */
  const __m256i idx = _mm256_setr_epi64x(0, 1, 2, 3);
  __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(kw - w)), idx);
  return _mm256_maskload_epi64((const long long *)(row + w), mask);
}

/* ROWS (1 or 2) is a compile-time constant at each call site. */
static inline __attribute__((always_inline)) void kernel(const int ROWS, size_t kw, const uint64_t *a0,
                                                         const uint64_t *a1, const uint8_t *panel,
                                                         uint32_t *q, size_t ldq) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i *b = (const __m256i *)panel; /* per chunk: NR x {lo, hi} */
  const size_t nsteps = xk_div_up(kw, 4);
  __m256i s001 = zero, s023 = zero, s101 = zero, s123 = zero;
  for (size_t step = 0; step < nsteps;) {
    size_t end = step + MAX_BYTE_STEPS < nsteps ? step + MAX_BYTE_STEPS : nsteps;
    __m256i c00 = zero, c01 = zero, c02 = zero, c03 = zero;
    __m256i c10 = zero, c11 = zero, c12 = zero, c13 = zero;
    for (; step < end; step++, b += 2 * NR) {
      __m256i a0l, a0h, a1l = zero, a1h = zero;
      split(load_a(a0, step * 4, kw), m4, &a0l, &a0h);
      if (ROWS > 1) split(load_a(a1, step * 4, kw), m4, &a1l, &a1h);
#define PAIR(c, al, ah, j)                                                                     \
  do {                                                                                         \
    __m256i bl = _mm256_loadu_si256(b + 2 * (j)), bh = _mm256_loadu_si256(b + 2 * (j) + 1);    \
    c = _mm256_add_epi8(c, _mm256_shuffle_epi8(lut, _mm256_xor_si256(al, bl)));                \
    c = _mm256_add_epi8(c, _mm256_shuffle_epi8(lut, _mm256_xor_si256(ah, bh)));                \
  } while (0)
      PAIR(c00, a0l, a0h, 0); PAIR(c01, a0l, a0h, 1); PAIR(c02, a0l, a0h, 2); PAIR(c03, a0l, a0h, 3);
      if (ROWS > 1) {
        PAIR(c10, a1l, a1h, 0); PAIR(c11, a1l, a1h, 1); PAIR(c12, a1l, a1h, 2); PAIR(c13, a1l, a1h, 3);
      }
#undef PAIR
    }
    s001 = _mm256_add_epi64(s001, sad_pair(c00, c01, zero));
    s023 = _mm256_add_epi64(s023, sad_pair(c02, c03, zero));
    if (ROWS > 1) {
      s101 = _mm256_add_epi64(s101, sad_pair(c10, c11, zero));
      s123 = _mm256_add_epi64(s123, sad_pair(c12, c13, zero));
    }
  }
  uint64_t v;
  v = hsum_pair(s001); q[0] = (uint32_t)v; q[1] = (uint32_t)(v >> 32);
  v = hsum_pair(s023); q[2] = (uint32_t)v; q[3] = (uint32_t)(v >> 32);
  if (ROWS > 1) {
    v = hsum_pair(s101); q[ldq + 0] = (uint32_t)v; q[ldq + 1] = (uint32_t)(v >> 32);
    v = hsum_pair(s123); q[ldq + 2] = (uint32_t)v; q[ldq + 3] = (uint32_t)(v >> 32);
  }
}

static void ukernel(size_t mr, size_t kw, const uint64_t *a, size_t lda, const uint8_t *panel,
                    uint32_t *q, size_t ldq) {
  if (mr > 1) kernel(2, kw, a, a + lda, panel, q, ldq);
  else kernel(1, kw, a, a, panel, q, ldq);
}

static void panel_chunk_fill(const uint8_t *src, size_t nbytes, uint8_t *dst) {
  uint8_t tmp[CHUNK] = {0};
  memcpy(tmp, src, nbytes);
  for (size_t i = 0; i < CHUNK; i++) {
    dst[i] = tmp[i] & 0x0f;
    dst[CHUNK + i] = tmp[i] >> 4;
  }
}

static void pack_f32(const float *x, size_t k, uint64_t *out) {
  const __m256 zero = _mm256_setzero_ps();
  size_t kw = xk_div_up(k, 64), full = k / 64;
  for (size_t w = 0; w < full; w++) {
    const float *p = x + w * 64;
    uint64_t word = 0;
    for (int g = 0; g < 8; g++) {
      __m256 v = _mm256_loadu_ps(p + 8 * g);
      /* not(x >= 0), unordered true: negative and NaN -> 1; +0 and -0 -> 0 */
      word |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NGE_UQ)) << (8 * g);
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
  for (size_t w = 0; w < full; w++) {
    __m256i v0 = _mm256_loadu_si256((const __m256i *)(x + w * 64));
    __m256i v1 = _mm256_loadu_si256((const __m256i *)(x + w * 64 + 32));
    out[w] = (uint64_t)(uint32_t)_mm256_movemask_epi8(v0) |
             ((uint64_t)(uint32_t)_mm256_movemask_epi8(v1) << 32);
  }
  if (full < kw) {
    uint64_t word = 0;
    for (size_t i = full * 64; i < k; i++) word |= (uint64_t)(x[i] < 0) << (i - full * 64);
    out[full] = word;
  }
}

/* ------------------------------------------------------------------ column-lane variant
 * For short reductions (the 3x3 convolutions of 64..256 channels: K = 576..2304 bits) the
 * kernel above wastes up to a third of its last 256-bit step on padding and spends a
 * horizontal reduction per (row, column) pair. This variant steps through k one 64-bit word at
 * a time with the output columns in the vector lanes:
 *   panel, per k-word: [c0.lo c0.hi c1.lo c1.hi | c2.lo c2.hi c3.lo c3.hi] (8 bytes each, the
 *                      word split into low / high nibbles, one per byte);
 *   A, pre-split the same way by the caller ([w.lo w.hi] per word), broadcast to both 128-bit
 *                      halves with one load.
 * One vpxor + vpshufb + vpaddb per 2 columns x 64 bits; the byte counters (<= 4 per step) are
 * widened every 63 steps, and lanes (lo, hi) of a column are summed once at the end, so no
 * horizontal reduction and no padding past the last 64-bit word. MR = 4 rows, NR = 4 columns. */
#define LMR 4
#define LNR 4
#define LMAX_STEPS 63 /* 63 * 4 = 252 <= 255 */

/* sad of two byte-count vectors [c0lo c0hi | c1lo c1hi], [c2lo c2hi | c3lo c3hi] -> 64-bit lanes
 * [c0 c2 | c1 c3] */
static inline __m256i lanes_combine(__m256i x01, __m256i x23, __m256i zero) {
  __m256i s01 = _mm256_sad_epu8(x01, zero), s23 = _mm256_sad_epu8(x23, zero);
  return _mm256_add_epi64(_mm256_unpacklo_epi64(s01, s23), _mm256_unpackhi_epi64(s01, s23));
}

/* ROWS (1..4) is a compile-time constant at each call site: a short tile computes no
 * duplicate rows (batch-1 dense layers are ROWS = 1). */
static inline __attribute__((always_inline)) void lanes_kernel(const size_t ROWS, size_t kw, const uint64_t *a,
                                                               size_t lda, const uint8_t *panel, uint32_t *q,
                                                               size_t ldq) {
  const size_t mr = ROWS;
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i zero = _mm256_setzero_si256();
  const __m128i *r0 = (const __m128i *)a, *r1 = (const __m128i *)(a + (mr > 1 ? 1 : 0) * lda);
  const __m128i *r2 = (const __m128i *)(a + (mr > 2 ? 2 : 0) * lda), *r3 = (const __m128i *)(a + (mr > 3 ? 3 : 0) * lda);
  const __m256i *b = (const __m256i *)panel;
  /* [c0 c2 | c1 c3] as 64-bit lanes -> [c0 c1 c2 c3] as 32-bit (counts < 2^32) */
  const __m256i idx = _mm256_setr_epi32(0, 4, 2, 6, 0, 4, 2, 6);
  /* Between blocks of 63 steps the partial counts go through q (memory), which keeps the
   * inner loop's 8 accumulators + table + operands within the 16 ymm registers. */
  for (size_t w = 0; w < kw;) {
    const int first = w == 0;
    const size_t end = w + LMAX_STEPS < kw ? w + LMAX_STEPS : kw;
    __m256i c00 = zero, c01 = zero, c10 = zero, c11 = zero, c20 = zero, c21 = zero, c30 = zero, c31 = zero;
    for (; w < end; w++, b += 2) {
      const __m256i b0 = _mm256_loadu_si256(b), b1 = _mm256_loadu_si256(b + 1);
      __m256i x;
#define ROW(r, ca, cb)                                                              \
  x = _mm256_broadcastsi128_si256(_mm_loadu_si128(r + w));                          \
  ca = _mm256_add_epi8(ca, _mm256_shuffle_epi8(lut, _mm256_xor_si256(x, b0)));      \
  cb = _mm256_add_epi8(cb, _mm256_shuffle_epi8(lut, _mm256_xor_si256(x, b1)));
      ROW(r0, c00, c01)
      if (ROWS > 1) { ROW(r1, c10, c11) }
      if (ROWS > 2) { ROW(r2, c20, c21) }
      if (ROWS > 3) { ROW(r3, c30, c31) }
#undef ROW
    }
#define OUT(i, ca, cb)                                                                              \
  if (mr > i) {                                                                                     \
    __m128i v = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(lanes_combine(ca, cb, zero), idx)); \
    __m128i *dst = (__m128i *)(q + i * ldq);                                                        \
    _mm_storeu_si128(dst, first ? v : _mm_add_epi32(v, _mm_loadu_si128(dst)));                      \
  }
    OUT(0, c00, c01) OUT(1, c10, c11) OUT(2, c20, c21) OUT(3, c30, c31)
#undef OUT
  }
  if (kw == 0)
    for (size_t i = 0; i < mr; i++) memset(q + i * ldq, 0, LNR * sizeof(uint32_t));
}

static void lanes_ukernel(size_t mr, size_t kw, const uint64_t *a, size_t lda, const uint8_t *panel, uint32_t *q,
                          size_t ldq) {
  switch (mr) {
    case 1: lanes_kernel(1, kw, a, lda, panel, q, ldq); break;
    case 2: lanes_kernel(2, kw, a, lda, panel, q, ldq); break;
    case 3: lanes_kernel(3, kw, a, lda, panel, q, ldq); break;
    default: lanes_kernel(4, kw, a, lda, panel, q, ldq); break;
  }
}

static void lanes_chunk_fill(const uint8_t *src, size_t nbytes, uint8_t *dst) {
  uint8_t tmp[8] = {0};
  memcpy(tmp, src, nbytes);
  for (size_t i = 0; i < 8; i++) {
    dst[i] = tmp[i] & 0x0f;
    dst[8 + i] = tmp[i] >> 4;
  }
}

static void lanes_split_a(const uint64_t *a, size_t kw, uint64_t *out) {
  const uint64_t m = UINT64_C(0x0f0f0f0f0f0f0f0f);
  for (size_t w = 0; w < kw; w++) {
    out[2 * w] = a[w] & m;
    out[2 * w + 1] = (a[w] >> 4) & m;
  }
}

static const xk_bgemm_ukernel_desc xk_bgemm_avx2_lanes = {
    XK_ISA_AVX2, LMR, LNR, 8, 2, lanes_ukernel, pack_f32, pack_i8, lanes_chunk_fill, NULL, 0, lanes_split_a, 2,
};

const xk_bgemm_ukernel_desc xk_bgemm_avx2 = {
    XK_ISA_AVX2, MR, NR, CHUNK, 2, ukernel, pack_f32, pack_i8, panel_chunk_fill,
    &xk_bgemm_avx2_lanes, XK_AVX2_LANES_MAX_KWORDS, NULL, 1,
};
