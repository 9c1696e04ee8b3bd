/* AVX2 binary GEMM (x86-64): no vector popcount on AVX2, so popcount is a 16-entry nibble
 * table looked up with vpshufb (Mula et al., "Faster population counts using AVX2", 2016).
 *
 * The weight panel stores each 256-bit chunk already split into low and high nibbles (one
 * nibble per byte, 2 x 32 bytes), so XOR of nibbles = nibble of XOR and the inner step per
 * (row, column) pair is: 2 vpxor + 2 vpshufb + 2 vpaddb. Byte counters (<= 8 per step) are
 * widened with vpsadbw every 31 steps. MR = 2 rows of A, NR = 4 columns of B. */
#include <immintrin.h>
#include <string.h>

/* GCC: no partial-redundancy elimination in this file. With it, GCC 12 keeps one of the nibble-
 * split kernel's eight accumulators in memory (a store-to-load round trip per step) and that
 * kernel runs ~35% slower; the other kernels here are unaffected. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-pre")
#endif

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
  if (full < kw) { /* the last k % 64 values: groups of 8 vectorized (C = 32 pixels are all tail) */
    const float *p = x + full * 64;
    const size_t rest = k - full * 64;
    uint64_t word = 0;
    size_t i = 0;
    for (; i + 8 <= rest; i += 8)
      word |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(p + i), zero, _CMP_NGE_UQ)) << i;
    for (; i < rest; i++) word |= (uint64_t)(!(p[i] >= 0.0f)) << i;
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
    const int8_t *p = x + full * 64;
    const size_t rest = k - full * 64;
    uint64_t word = 0;
    size_t i = 0;
    if (rest >= 32) {
      word = (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_loadu_si256((const __m256i *)p));
      i = 32;
    }
    for (; i < rest; i++) word |= (uint64_t)(p[i] < 0) << i;
    out[full] = word;
  }
}

/* ------------------------------------------------------------------ column-lane kernel
 * The default AVX2 kernel (rows up to XK_AVX2_LANES_MAX_KWORDS words): k advances one 64-bit
 * word per step with the output columns in the vector lanes. Panel, per k-word: the words of
 * columns [c0 c1 c2 c3] (32 bytes, unsplit); the A word is broadcast to the 4 lanes, XORed,
 * then split into nibbles: vpxor + 2 vpand + vpsrlw + 2 vpshufb + 2 vpaddb per 4 columns x 64
 * bits, byte counters (<= 8 per step) widened every 31 steps, after which vpsadbw leaves one
 * column per 64-bit lane: no horizontal reduction, no padding past the last 64-bit word, and
 * half the panel bytes of a pre-split layout (batch-1 dense layers stream the weights once).
 * It beats the 256-bit kernel above on every shape measured, large square GEMMs included (few
 * loads per instruction); see docs/kernels.md. MR = 4 rows (1..3 without duplicate work),
 * NR = 4 columns. */
#define LMAX_STEPS 31

static inline __attribute__((always_inline)) void lanes_kernel(const size_t ROWS, size_t kw, const uint64_t *a,
                                                               size_t lda, const uint8_t *panel, uint32_t *q,
                                                               size_t ldq) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i m4 = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
  const long long *r0 = (const long long *)a, *r1 = (const long long *)(a + (ROWS > 1 ? 1 : 0) * lda);
  const long long *r2 = (const long long *)(a + (ROWS > 2 ? 2 : 0) * lda);
  const long long *r3 = (const long long *)(a + (ROWS > 3 ? 3 : 0) * lda);
  const __m256i *b = (const __m256i *)panel;
  const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6); /* 64-bit lanes -> 32-bit */
  /* Between blocks of LMAX_STEPS the partial counts go through q (memory), which keeps the
   * inner loop's accumulators, table, mask and operands within the 16 ymm registers. */
  for (size_t w = 0; w < kw;) {
    const int first = w == 0;
    const size_t end = w + LMAX_STEPS < kw ? w + LMAX_STEPS : kw;
    __m256i c0 = zero, c1 = zero, c2 = zero, c3 = zero;
    for (; w < end; w++, b++) {
      const __m256i bw = _mm256_loadu_si256(b);
      __m256i x;
#define ROW(r, c)                                                                                   \
  x = _mm256_xor_si256(_mm256_set1_epi64x(r[w]), bw);                                               \
  c = _mm256_add_epi8(c, _mm256_shuffle_epi8(lut, _mm256_and_si256(x, m4)));                        \
  c = _mm256_add_epi8(c, _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), m4)));
      ROW(r0, c0)
      if (ROWS > 1) { ROW(r1, c1) }
      if (ROWS > 2) { ROW(r2, c2) }
      if (ROWS > 3) { ROW(r3, c3) }
#undef ROW
    }
#define OUT(i, c)                                                                                  \
  if (ROWS > i) {                                                                                  \
    __m128i v = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_sad_epu8(c, zero), idx)); \
    __m128i *dst = (__m128i *)(q + i * ldq);                                                       \
    _mm_storeu_si128(dst, first ? v : _mm_add_epi32(v, _mm_loadu_si128(dst)));                     \
  }
    OUT(0, c0) OUT(1, c1) OUT(2, c2) OUT(3, c3)
#undef OUT
  }
  if (kw == 0)
    for (size_t i = 0; i < ROWS; i++) memset(q + i * ldq, 0, 4 * sizeof(uint32_t));
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

static const xk_bgemm_ukernel_desc xk_bgemm_avx2_lanes = {
    XK_ISA_AVX2, 4, 4, 8, 1, lanes_ukernel, pack_f32, pack_i8, NULL, NULL, 0, 1,
};

/* ------------------------------------------------------------------ nibble-split kernel
 * The convolution kernel (rows up to XK_AVX2_SPLIT_MAX_KWORDS words). Both operands are split
 * into nibbles ahead of the loop, so that the inner step is only vpxor + vpshufb + vpaddb:
 *   A: each row word w becomes 128 bits [w & 0x0f.., (w >> 4) & 0x0f..] (prep_a, once per row
 *      block, reused by every column block of the op), broadcast to both 128-bit halves;
 *   B: per k-word, the columns in pairs [c0 lo, c0 hi, c1 lo, c1 hi] (panel_expand 2).
 * XOR of nibbles is the nibble of the XOR, so one vpshufb counts 128 bit pairs: 3 instructions
 * per 128 MACs where the column-lane kernel needs 8 per 256 (the nibble split of the XOR).
 * Byte counters gain <= 4 per step: widened every 63 steps. MR = 4, NR = 4 (two pairs). */
#define SMAX_STEPS 63

static void split_panel_fill(const uint8_t *src, size_t nbytes, uint8_t *dst) {
  uint64_t w = 0;
  memcpy(&w, src, nbytes < 8 ? nbytes : 8);
  const uint64_t m = UINT64_C(0x0f0f0f0f0f0f0f0f), lo = w & m, hi = (w >> 4) & m;
  memcpy(dst, &lo, 8);
  memcpy(dst + 8, &hi, 8);
}

static void split_prep_a(const uint64_t *src, size_t kw, uint64_t *dst) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  size_t w = 0;
  for (; w + 4 <= kw; w += 4) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)(src + w));
    const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi64(v, 4), m4);
    const __m256i l = _mm256_unpacklo_epi64(lo, hi), h = _mm256_unpackhi_epi64(lo, hi); /* [w0 w2], [w1 w3] */
    _mm256_storeu_si256((__m256i *)(dst + 2 * w), _mm256_permute2x128_si256(l, h, 0x20));
    _mm256_storeu_si256((__m256i *)(dst + 2 * w + 4), _mm256_permute2x128_si256(l, h, 0x31));
  }
  for (; w < kw; w++) {
    dst[2 * w] = src[w] & UINT64_C(0x0f0f0f0f0f0f0f0f);
    dst[2 * w + 1] = (src[w] >> 4) & UINT64_C(0x0f0f0f0f0f0f0f0f);
  }
}

/* Counts of one row: c01 = byte counts of columns 0,1 (64-bit lanes: c0 lo, c0 hi, c1 lo, c1 hi),
 * c23 the same for columns 2,3 -> q[0..3] (added to q unless first). */
static inline void split_out(__m256i c01, __m256i c23, uint32_t *q, int first) {
  const __m256i zero = _mm256_setzero_si256();
  /* 32-bit lanes [c0lo c2lo c0hi c2hi | c1lo c3lo c1hi c3hi] */
  __m256i u = _mm256_or_si256(_mm256_sad_epu8(c01, zero), _mm256_slli_epi64(_mm256_sad_epu8(c23, zero), 32));
  u = _mm256_add_epi32(u, _mm256_shuffle_epi32(u, 0x4e)); /* [c0 c2 c0 c2 | c1 c3 c1 c3] */
  __m128i v = _mm_unpacklo_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1)); /* c0 c1 c2 c3 */
  __m128i *dst = (__m128i *)q;
  _mm_storeu_si128(dst, first ? v : _mm_add_epi32(v, _mm_loadu_si128(dst)));
}

static inline __attribute__((always_inline)) void split_kernel(const size_t ROWS, size_t kw, const uint64_t *a,
                                                               size_t lda, const uint8_t *panel, uint32_t *q,
                                                               size_t ldq) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i zero = _mm256_setzero_si256();
  const __m128i *r0 = (const __m128i *)a, *r1 = (const __m128i *)(a + (ROWS > 1 ? 1 : 0) * lda);
  const __m128i *r2 = (const __m128i *)(a + (ROWS > 2 ? 2 : 0) * lda);
  const __m128i *r3 = (const __m128i *)(a + (ROWS > 3 ? 3 : 0) * lda);
  const __m256i *b = (const __m256i *)panel; /* per k-word: [cols 0,1] [cols 2,3] */
  for (size_t w = 0; w < kw;) {
    const int first = w == 0;
    const size_t end = w + SMAX_STEPS < kw ? w + SMAX_STEPS : kw;
    __m256i c00 = zero, c01 = zero, c10 = zero, c11 = zero, c20 = zero, c21 = zero, c30 = zero, c31 = zero;
    for (; w < end; w++, b += 2) {
      const __m256i b0 = _mm256_loadu_si256(b), b1 = _mm256_loadu_si256(b + 1);
      __m256i av;
#define ROW(r, x0, x1)                                                                       \
  av = _mm256_broadcastsi128_si256(_mm_loadu_si128(r + w));                                  \
  x0 = _mm256_add_epi8(x0, _mm256_shuffle_epi8(lut, _mm256_xor_si256(av, b0)));              \
  x1 = _mm256_add_epi8(x1, _mm256_shuffle_epi8(lut, _mm256_xor_si256(av, b1)));
      ROW(r0, c00, c01)
      if (ROWS > 1) { ROW(r1, c10, c11) }
      if (ROWS > 2) { ROW(r2, c20, c21) }
      if (ROWS > 3) { ROW(r3, c30, c31) }
#undef ROW
    }
    split_out(c00, c01, q, first);
    if (ROWS > 1) split_out(c10, c11, q + ldq, first);
    if (ROWS > 2) split_out(c20, c21, q + 2 * ldq, first);
    if (ROWS > 3) split_out(c30, c31, q + 3 * ldq, first);
  }
  if (kw == 0)
    for (size_t i = 0; i < ROWS; i++) memset(q + i * ldq, 0, 4 * sizeof(uint32_t));
}

static void split_cols(size_t mr, size_t kw, const uint64_t *a, size_t lda, const uint8_t *panel, size_t block_bytes,
                       size_t ncols, uint32_t *q, size_t ldq) {
#define COLS(R)                                                                              \
  for (size_t c = 0; c < ncols; c += 4, panel += block_bytes) split_kernel(R, kw, a, lda, panel, q + c, ldq);
  switch (mr) {
    case 1: COLS(1) break;
    case 2: COLS(2) break;
    case 3: COLS(3) break;
    default: COLS(4) break;
  }
#undef COLS
}

static void split_ukernel(size_t mr, size_t kw, const uint64_t *a, size_t lda, const uint8_t *panel, uint32_t *q,
                          size_t ldq) {
  split_cols(mr, kw, a, lda, panel, 0, 4, q, ldq); /* one block of NR = 4 columns */
}

static const xk_bgemm_ukernel_desc xk_bgemm_avx2_split = {
    XK_ISA_AVX2, 4, 4, 8, 2, split_ukernel, pack_f32, pack_i8, split_panel_fill, NULL, 0, 1,
    NULL, 0, split_prep_a, 2, split_cols,
};

const xk_bgemm_ukernel_desc xk_bgemm_avx2 = {
    XK_ISA_AVX2, MR, NR, CHUNK, 2, ukernel, pack_f32, pack_i8, panel_chunk_fill,
    &xk_bgemm_avx2_lanes, XK_AVX2_LANES_MAX_KWORDS, 0,
    &xk_bgemm_avx2_split, XK_AVX2_SPLIT_MAX_KWORDS, NULL, 1,
};
