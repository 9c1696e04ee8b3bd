/* AVX2 int8 GEMM micro-kernel on int16 operands: vpmaddwd multiplies 16 int16 pairs and adds
 * each pair into an int32 lane (exact, no saturation for |a| <= 255, |b| <= 128). MR=4 rows x
 * NR=16 columns in 8 ymm accumulators; per k pair 2 panel loads, 4 broadcasts, 8 vpmaddwd. */
#include <immintrin.h>
#include <string.h>

#include "../fgemm/fgemm.h"

#define MR 4
#define NR 16

static inline __m256i bcast_pair(const int16_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

/* ROWS <= MR rows, a compile-time count (see ukernel): a dense layer at batch 1 runs one row,
 * not the same row four times. */
static inline __attribute__((always_inline)) void ukernel_rows(const size_t ROWS, size_t kp, const int16_t *a,
                                                               size_t lda, const int16_t *b, int32_t *c,
                                                               size_t ldc) {
  const int16_t *a0 = a, *a1 = a + (ROWS > 1 ? 1 : 0) * lda, *a2 = a + (ROWS > 2 ? 2 : 0) * lda;
  const int16_t *a3 = a + (ROWS > 3 ? 3 : 0) * lda;
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (size_t p = 0; p < kp; p += 2, b += 2 * NR) {
    const __m256i b0 = _mm256_loadu_si256((const __m256i *)b), b1 = _mm256_loadu_si256((const __m256i *)(b + 16));
    __m256i x;
    x = bcast_pair(a0 + p);
    c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(x, b0)); c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(x, b1));
    if (ROWS > 1) {
      x = bcast_pair(a1 + p);
      c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(x, b0)); c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(x, b1));
    }
    if (ROWS > 2) {
      x = bcast_pair(a2 + p);
      c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(x, b0)); c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(x, b1));
    }
    if (ROWS > 3) {
      x = bcast_pair(a3 + p);
      c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(x, b0)); c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(x, b1));
    }
  }
  _mm256_storeu_si256((__m256i *)c, c00); _mm256_storeu_si256((__m256i *)(c + 8), c01);
  if (ROWS > 1) { _mm256_storeu_si256((__m256i *)(c + ldc), c10); _mm256_storeu_si256((__m256i *)(c + ldc + 8), c11); }
  if (ROWS > 2) { _mm256_storeu_si256((__m256i *)(c + 2 * ldc), c20); _mm256_storeu_si256((__m256i *)(c + 2 * ldc + 8), c21); }
  if (ROWS > 3) { _mm256_storeu_si256((__m256i *)(c + 3 * ldc), c30); _mm256_storeu_si256((__m256i *)(c + 3 * ldc + 8), c31); }
}

static void ukernel(size_t mr, size_t kp, const int16_t *a, size_t lda, const int16_t *b, int32_t *c, size_t ldc) {
  switch (mr) {
    case 1: ukernel_rows(1, kp, a, lda, b, c, ldc); break;
    case 2: ukernel_rows(2, kp, a, lda, b, c, ldc); break;
    case 3: ukernel_rows(3, kp, a, lda, b, c, ldc); break;
    default: ukernel_rows(4, kp, a, lda, b, c, ldc); break;
  }
}

const xk_qgemm_desc xk_qgemm_avx2 = {XK_ISA_AVX2, MR, NR, ukernel};

/* Direct convolution (fgemm.h): int16 pairs read from the zero-padded, centred quantized input
 * image; 6 output pixels x 16 channels in 12 accumulators. */
void xk_qconv_ukernel_avx2(size_t mr, const int16_t *const *x, const xk_conv_segs *t, const int16_t *b, int32_t *c,
                           size_t ldc) {
  const int16_t *x0 = x[0], *x1 = x[mr > 1 ? 1 : 0], *x2 = x[mr > 2 ? 2 : mr - 1], *x3 = x[mr > 3 ? 3 : mr - 1];
  const int16_t *x4 = x[mr > 4 ? 4 : mr - 1], *x5 = x[mr > 5 ? 5 : mr - 1];
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const size_t len = t->len;
  for (size_t ky = 0; ky < t->kh; ky++)
    for (size_t kx = 0; kx < t->kw; kx++) {
      const size_t o = ky * t->ystride + kx * t->xstride;
      const int16_t *a0 = x0 + o, *a1 = x1 + o, *a2 = x2 + o, *a3 = x3 + o, *a4 = x4 + o, *a5 = x5 + o;
      for (size_t p = 0; p < len; p += 2, b += 2 * NR) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)b), b1 = _mm256_loadu_si256((const __m256i *)(b + 16));
        __m256i v;
        v = bcast_pair(a0 + p);
        c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(v, b0)); c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(v, b1));
        v = bcast_pair(a1 + p);
        c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(v, b0)); c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(v, b1));
        v = bcast_pair(a2 + p);
        c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(v, b0)); c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(v, b1));
        v = bcast_pair(a3 + p);
        c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(v, b0)); c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(v, b1));
        v = bcast_pair(a4 + p);
        c40 = _mm256_add_epi32(c40, _mm256_madd_epi16(v, b0)); c41 = _mm256_add_epi32(c41, _mm256_madd_epi16(v, b1));
        v = bcast_pair(a5 + p);
        c50 = _mm256_add_epi32(c50, _mm256_madd_epi16(v, b0)); c51 = _mm256_add_epi32(c51, _mm256_madd_epi16(v, b1));
      }
    }
  _mm256_storeu_si256((__m256i *)c, c00); _mm256_storeu_si256((__m256i *)(c + 8), c01);
  if (mr > 1) { c += ldc; _mm256_storeu_si256((__m256i *)c, c10); _mm256_storeu_si256((__m256i *)(c + 8), c11); }
  if (mr > 2) { c += ldc; _mm256_storeu_si256((__m256i *)c, c20); _mm256_storeu_si256((__m256i *)(c + 8), c21); }
  if (mr > 3) { c += ldc; _mm256_storeu_si256((__m256i *)c, c30); _mm256_storeu_si256((__m256i *)(c + 8), c31); }
  if (mr > 4) { c += ldc; _mm256_storeu_si256((__m256i *)c, c40); _mm256_storeu_si256((__m256i *)(c + 8), c41); }
  if (mr > 5) { c += ldc; _mm256_storeu_si256((__m256i *)c, c50); _mm256_storeu_si256((__m256i *)(c + 8), c51); }
}
