/* AVX-512 VNNI int8 micro-kernels on int16 operands (x86-64): the AVX2 kernels of qgemm-avx2.c
 * over two panel blocks at once, one vpdpwssd per accumulator and step (the int16 pair products
 * and their sum added into each int32 lane, the vpmaddwd + vpaddd of AVX2 in one instruction).
 * Exact in int32 like AVX2 (|a| <= 255, |b| <= 128, kp < 2^16: no lane wraps), so the results
 * are identical. The panels are the AVX2 ones ([kp/2][16][2] int16 per 16-column block: one zmm
 * per pair step). Built with -mavx512f -mavx512bw -mavx512vnni. */
#include <immintrin.h>
#include <string.h>

#include "../fgemm/fgemm.h"

#define NR 16

static inline __m512i bcast_pair(const int16_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

/* Direct convolution: 6 output pixels x 32 channels (blocks b and b + bstride) in 12 zmm. */
void xk_qconv_ukernel2_avx512(size_t mr, const int16_t *const *x, const xk_conv_segs *t, const int16_t *b,
                              size_t bstride, int32_t *c, size_t ldc) {
  const int16_t *x0 = x[0], *x1 = x[mr > 1 ? 1 : 0], *x2 = x[mr > 2 ? 2 : mr - 1], *x3 = x[mr > 3 ? 3 : mr - 1];
  const int16_t *x4 = x[mr > 4 ? 4 : mr - 1], *x5 = x[mr > 5 ? 5 : mr - 1];
  const int16_t *b2 = b + bstride;
  __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m512i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const size_t len = t->len;
  for (size_t ky = 0; ky < t->kh; ky++)
    for (size_t kx = 0; kx < t->kw; kx++) {
      const size_t o = ky * t->ystride + kx * t->xstride;
      const int16_t *a0 = x0 + o, *a1 = x1 + o, *a2 = x2 + o, *a3 = x3 + o, *a4 = x4 + o, *a5 = x5 + o;
      for (size_t p = 0; p < len; p += 2, b += 2 * NR, b2 += 2 * NR) {
        const __m512i w0 = _mm512_loadu_si512((const void *)b), w1 = _mm512_loadu_si512((const void *)b2);
        __m512i v;
        v = bcast_pair(a0 + p); c00 = _mm512_dpwssd_epi32(c00, v, w0); c01 = _mm512_dpwssd_epi32(c01, v, w1);
        v = bcast_pair(a1 + p); c10 = _mm512_dpwssd_epi32(c10, v, w0); c11 = _mm512_dpwssd_epi32(c11, v, w1);
        v = bcast_pair(a2 + p); c20 = _mm512_dpwssd_epi32(c20, v, w0); c21 = _mm512_dpwssd_epi32(c21, v, w1);
        v = bcast_pair(a3 + p); c30 = _mm512_dpwssd_epi32(c30, v, w0); c31 = _mm512_dpwssd_epi32(c31, v, w1);
        v = bcast_pair(a4 + p); c40 = _mm512_dpwssd_epi32(c40, v, w0); c41 = _mm512_dpwssd_epi32(c41, v, w1);
        v = bcast_pair(a5 + p); c50 = _mm512_dpwssd_epi32(c50, v, w0); c51 = _mm512_dpwssd_epi32(c51, v, w1);
      }
    }
  _mm512_storeu_si512((void *)c, c00); _mm512_storeu_si512((void *)(c + NR), c01);
  if (mr > 1) { c += ldc; _mm512_storeu_si512((void *)c, c10); _mm512_storeu_si512((void *)(c + NR), c11); }
  if (mr > 2) { c += ldc; _mm512_storeu_si512((void *)c, c20); _mm512_storeu_si512((void *)(c + NR), c21); }
  if (mr > 3) { c += ldc; _mm512_storeu_si512((void *)c, c30); _mm512_storeu_si512((void *)(c + NR), c31); }
  if (mr > 4) { c += ldc; _mm512_storeu_si512((void *)c, c40); _mm512_storeu_si512((void *)(c + NR), c41); }
  if (mr > 5) { c += ldc; _mm512_storeu_si512((void *)c, c50); _mm512_storeu_si512((void *)(c + NR), c51); }
}

/* GEMM: ROWS <= 4 rows (a compile-time count) x 32 columns (blocks b and b + bstride). */
static inline __attribute__((always_inline)) void gemm_rows(const size_t ROWS, size_t kp, const int16_t *a,
                                                            size_t lda, const int16_t *b, size_t bstride, int32_t *c,
                                                            size_t ldc) {
  const int16_t *a0 = a, *a1 = a + (ROWS > 1 ? 1 : 0) * lda, *a2 = a + (ROWS > 2 ? 2 : 0) * lda;
  const int16_t *a3 = a + (ROWS > 3 ? 3 : 0) * lda, *b2 = b + bstride;
  __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (size_t p = 0; p < kp; p += 2, b += 2 * NR, b2 += 2 * NR) {
    const __m512i w0 = _mm512_loadu_si512((const void *)b), w1 = _mm512_loadu_si512((const void *)b2);
    __m512i v;
    v = bcast_pair(a0 + p); c00 = _mm512_dpwssd_epi32(c00, v, w0); c01 = _mm512_dpwssd_epi32(c01, v, w1);
    if (ROWS > 1) { v = bcast_pair(a1 + p); c10 = _mm512_dpwssd_epi32(c10, v, w0); c11 = _mm512_dpwssd_epi32(c11, v, w1); }
    if (ROWS > 2) { v = bcast_pair(a2 + p); c20 = _mm512_dpwssd_epi32(c20, v, w0); c21 = _mm512_dpwssd_epi32(c21, v, w1); }
    if (ROWS > 3) { v = bcast_pair(a3 + p); c30 = _mm512_dpwssd_epi32(c30, v, w0); c31 = _mm512_dpwssd_epi32(c31, v, w1); }
  }
  _mm512_storeu_si512((void *)c, c00); _mm512_storeu_si512((void *)(c + NR), c01);
  if (ROWS > 1) { _mm512_storeu_si512((void *)(c + ldc), c10); _mm512_storeu_si512((void *)(c + ldc + NR), c11); }
  if (ROWS > 2) { _mm512_storeu_si512((void *)(c + 2 * ldc), c20); _mm512_storeu_si512((void *)(c + 2 * ldc + NR), c21); }
  if (ROWS > 3) { _mm512_storeu_si512((void *)(c + 3 * ldc), c30); _mm512_storeu_si512((void *)(c + 3 * ldc + NR), c31); }
}

void xk_qgemm_ukernel2_avx512(size_t mr, size_t kp, const int16_t *a, size_t lda, const int16_t *b, size_t bstride,
                              int32_t *c, size_t ldc) {
  switch (mr) {
    case 1: gemm_rows(1, kp, a, lda, b, bstride, c, ldc); break;
    case 2: gemm_rows(2, kp, a, lda, b, bstride, c, ldc); break;
    case 3: gemm_rows(3, kp, a, lda, b, bstride, c, ldc); break;
    default: gemm_rows(4, kp, a, lda, b, bstride, c, ldc); break;
  }
}
