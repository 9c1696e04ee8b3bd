/* AVX-512F float micro-kernels of the float convolutions and GEMMs (x86-64): the AVX2 6 x 16 tile
 * widened to two panel blocks, MR = 6 rows x 32 columns in 12 zmm accumulators; per k step 2 panel
 * loads (one per block), 6 broadcasts and 12 FMAs of 16 lanes. A lone last block takes the 6 x 16
 * tile in 6 zmm (one FMA chain per row: 6 chains of 16 lanes instead of AVX2's 12 of 8) with
 * masked stage loads and stores, so a partial block (fewer than 16 channels left) is written in
 * place too. Each output column is the same chain of FMAs in k order as in the AVX2 kernel
 * (fgemm-avx2.c), and the output stage the same operations, so the two are bit-identical; the
 * panels are the AVX2 ones ([k][16] per block).
 * Built with -mavx512f -mfma. */
#include <immintrin.h>

#include "fgemm.h"

#define MR 6
#define NR 16 /* floats per panel block row: one zmm */

/* The output stage (fgemm.h xk_fstage) on one accumulator: the 16 columns from offset o, of which
 * those in mask m (masked loads: no stage value read past them; 0xffff for a whole block). */
static inline __m512 stage16(const xk_fstage *st, size_t o, __mmask16 m, __m512 v) {
  if (st->sc) v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, st->sc + o), v);
  if (st->bi) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, st->bi + o));
  if (st->relu) v = _mm512_max_ps(v, _mm512_setzero_ps()); /* NaN and -0 -> +0, as v > 0 ? v : 0 */
  if (st->ps) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, st->ps + o));
  if (st->pb) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, st->pb + o));
  return v;
}

void xk_fconv_ukernel2_avx512(size_t mr, const float *const *x, const xk_conv_segs *t, const float *b,
                              size_t bstride, float *c, size_t ldc, const xk_fstage *st) {
  const float *x0 = x[0], *x1 = x[mr > 1 ? 1 : 0], *x2 = x[mr > 2 ? 2 : mr - 1], *x3 = x[mr > 3 ? 3 : mr - 1];
  const float *x4 = x[mr > 4 ? 4 : mr - 1], *x5 = x[mr > 5 ? 5 : mr - 1];
  const float *b2 = b + bstride;
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const size_t len = t->len;
  for (size_t ky = 0; ky < t->kh; ky++)
    for (size_t kx = 0; kx < t->kw; kx++) {
      const size_t o = ky * t->ystride + kx * t->xstride;
      const float *a0 = x0 + o, *a1 = x1 + o, *a2 = x2 + o, *a3 = x3 + o, *a4 = x4 + o, *a5 = x5 + o;
      for (size_t p = 0; p < len; p++, b += NR, b2 += NR) {
        const __m512 w0 = _mm512_loadu_ps(b), w1 = _mm512_loadu_ps(b2);
        __m512 v;
        v = _mm512_set1_ps(a0[p]); c00 = _mm512_fmadd_ps(v, w0, c00); c01 = _mm512_fmadd_ps(v, w1, c01);
        v = _mm512_set1_ps(a1[p]); c10 = _mm512_fmadd_ps(v, w0, c10); c11 = _mm512_fmadd_ps(v, w1, c11);
        v = _mm512_set1_ps(a2[p]); c20 = _mm512_fmadd_ps(v, w0, c20); c21 = _mm512_fmadd_ps(v, w1, c21);
        v = _mm512_set1_ps(a3[p]); c30 = _mm512_fmadd_ps(v, w0, c30); c31 = _mm512_fmadd_ps(v, w1, c31);
        v = _mm512_set1_ps(a4[p]); c40 = _mm512_fmadd_ps(v, w0, c40); c41 = _mm512_fmadd_ps(v, w1, c41);
        v = _mm512_set1_ps(a5[p]); c50 = _mm512_fmadd_ps(v, w0, c50); c51 = _mm512_fmadd_ps(v, w1, c51);
      }
    }
  if (st) { /* rows >= mr repeat row mr - 1 and are not stored */
    c00 = stage16(st, 0, 0xffff, c00); c01 = stage16(st, NR, 0xffff, c01);
    if (mr > 1) { c10 = stage16(st, 0, 0xffff, c10); c11 = stage16(st, NR, 0xffff, c11); }
    if (mr > 2) { c20 = stage16(st, 0, 0xffff, c20); c21 = stage16(st, NR, 0xffff, c21); }
    if (mr > 3) { c30 = stage16(st, 0, 0xffff, c30); c31 = stage16(st, NR, 0xffff, c31); }
    if (mr > 4) { c40 = stage16(st, 0, 0xffff, c40); c41 = stage16(st, NR, 0xffff, c41); }
    if (mr > 5) { c50 = stage16(st, 0, 0xffff, c50); c51 = stage16(st, NR, 0xffff, c51); }
  }
  _mm512_storeu_ps(c, c00); _mm512_storeu_ps(c + NR, c01);
  if (mr > 1) { _mm512_storeu_ps(c + ldc, c10); _mm512_storeu_ps(c + ldc + NR, c11); }
  if (mr > 2) { _mm512_storeu_ps(c + 2 * ldc, c20); _mm512_storeu_ps(c + 2 * ldc + NR, c21); }
  if (mr > 3) { _mm512_storeu_ps(c + 3 * ldc, c30); _mm512_storeu_ps(c + 3 * ldc + NR, c31); }
  if (mr > 4) { _mm512_storeu_ps(c + 4 * ldc, c40); _mm512_storeu_ps(c + 4 * ldc + NR, c41); }
  if (mr > 5) { _mm512_storeu_ps(c + 5 * ldc, c50); _mm512_storeu_ps(c + 5 * ldc + NR, c51); }
}

void xk_fconv_ukernel1_avx512(size_t mr, const float *const *x, const xk_conv_segs *t, const float *b, size_t n,
                              float *c, size_t ldc, const xk_fstage *st) {
  const float *x0 = x[0], *x1 = x[mr > 1 ? 1 : 0], *x2 = x[mr > 2 ? 2 : mr - 1], *x3 = x[mr > 3 ? 3 : mr - 1];
  const float *x4 = x[mr > 4 ? 4 : mr - 1], *x5 = x[mr > 5 ? 5 : mr - 1];
  const __mmask16 m = (__mmask16)((1u << n) - 1u);
  __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
  const size_t len = t->len;
  for (size_t ky = 0; ky < t->kh; ky++)
    for (size_t kx = 0; kx < t->kw; kx++) {
      const size_t o = ky * t->ystride + kx * t->xstride;
      const float *a0 = x0 + o, *a1 = x1 + o, *a2 = x2 + o, *a3 = x3 + o, *a4 = x4 + o, *a5 = x5 + o;
      for (size_t p = 0; p < len; p++, b += NR) {
        const __m512 w = _mm512_loadu_ps(b);
        c0 = _mm512_fmadd_ps(_mm512_set1_ps(a0[p]), w, c0);
        c1 = _mm512_fmadd_ps(_mm512_set1_ps(a1[p]), w, c1);
        c2 = _mm512_fmadd_ps(_mm512_set1_ps(a2[p]), w, c2);
        c3 = _mm512_fmadd_ps(_mm512_set1_ps(a3[p]), w, c3);
        c4 = _mm512_fmadd_ps(_mm512_set1_ps(a4[p]), w, c4);
        c5 = _mm512_fmadd_ps(_mm512_set1_ps(a5[p]), w, c5);
      }
    }
  if (st) {
    c0 = stage16(st, 0, m, c0);
    if (mr > 1) c1 = stage16(st, 0, m, c1);
    if (mr > 2) c2 = stage16(st, 0, m, c2);
    if (mr > 3) c3 = stage16(st, 0, m, c3);
    if (mr > 4) c4 = stage16(st, 0, m, c4);
    if (mr > 5) c5 = stage16(st, 0, m, c5);
  }
  _mm512_mask_storeu_ps(c, m, c0);
  if (mr > 1) _mm512_mask_storeu_ps(c + ldc, m, c1);
  if (mr > 2) _mm512_mask_storeu_ps(c + 2 * ldc, m, c2);
  if (mr > 3) _mm512_mask_storeu_ps(c + 3 * ldc, m, c3);
  if (mr > 4) _mm512_mask_storeu_ps(c + 4 * ldc, m, c4);
  if (mr > 5) _mm512_mask_storeu_ps(c + 5 * ldc, m, c5);
}

void xk_fgemm_ukernel2_stage_avx512(size_t mr, size_t k, const float *a, size_t lda, const float *b, size_t bstride,
                                    float *c, size_t ldc, const xk_fstage *st) {
  const float *x[MR];
  for (size_t i = 0; i < mr; i++) x[i] = a + i * lda; /* the kernel reads rows < mr only */
  const xk_conv_segs one = {1, 1, k, 0, 0};
  xk_fconv_ukernel2_avx512(mr, x, &one, b, bstride, c, ldc, st);
}
