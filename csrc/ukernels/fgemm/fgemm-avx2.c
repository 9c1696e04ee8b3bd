/* AVX2 + FMA float GEMM micro-kernel (x86-64): MR=6 rows x NR=16 columns held in 12 ymm
 * accumulators; per k step 2 panel loads, 6 broadcasts and 12 FMAs. */
#include <immintrin.h>
#include <string.h>

#include "fgemm.h"

#define MR 6
#define NR 16

/* Direct convolution (fgemm.h): the 6 x 16 FMA tile with row i of A (output pixel i) read from
 * the zero-padded input image at x[i], the reduction walked as kh x kw segments of `len`
 * contiguous values. The GEMM micro-kernel below is this kernel with one segment, so a direct
 * convolution is bit-identical to the GEMM on its im2col tile. */
/* The output stage of st on the two accumulator vectors of one row (columns 0..7, 8..15). */
static inline void stage2(const xk_fstage *st, __m256 *v0, __m256 *v1) {
  if (st->sc) {
    *v0 = _mm256_mul_ps(_mm256_loadu_ps(st->sc), *v0);
    *v1 = _mm256_mul_ps(_mm256_loadu_ps(st->sc + 8), *v1);
  }
  if (st->bi) {
    *v0 = _mm256_add_ps(*v0, _mm256_loadu_ps(st->bi));
    *v1 = _mm256_add_ps(*v1, _mm256_loadu_ps(st->bi + 8));
  }
  if (st->relu) { /* max(v, +0): NaN and -0 -> +0, as v > 0 ? v : 0 */
    *v0 = _mm256_max_ps(*v0, _mm256_setzero_ps());
    *v1 = _mm256_max_ps(*v1, _mm256_setzero_ps());
  }
  if (st->ps) {
    *v0 = _mm256_mul_ps(*v0, _mm256_loadu_ps(st->ps));
    *v1 = _mm256_mul_ps(*v1, _mm256_loadu_ps(st->ps + 8));
  }
  if (st->pb) {
    *v0 = _mm256_add_ps(*v0, _mm256_loadu_ps(st->pb));
    *v1 = _mm256_add_ps(*v1, _mm256_loadu_ps(st->pb + 8));
  }
}

void xk_fconv_ukernel_avx2(size_t mr, const float *const *x, const xk_conv_segs *t, const float *b, float *c,
                           size_t ldc, const xk_fstage *st) {
  const float *x0 = x[0], *x1 = x[mr > 1 ? 1 : 0], *x2 = x[mr > 2 ? 2 : mr - 1], *x3 = x[mr > 3 ? 3 : mr - 1];
  const float *x4 = x[mr > 4 ? 4 : mr - 1], *x5 = x[mr > 5 ? 5 : mr - 1];
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const size_t len = t->len;
  for (size_t ky = 0; ky < t->kh; ky++)
    for (size_t kx = 0; kx < t->kw; kx++) {
      const size_t o = ky * t->ystride + kx * t->xstride;
      const float *a0 = x0 + o, *a1 = x1 + o, *a2 = x2 + o, *a3 = x3 + o, *a4 = x4 + o, *a5 = x5 + o;
      for (size_t p = 0; p < len; p++, b += NR) {
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        __m256 v;
        v = _mm256_broadcast_ss(a0 + p); c00 = _mm256_fmadd_ps(v, b0, c00); c01 = _mm256_fmadd_ps(v, b1, c01);
        v = _mm256_broadcast_ss(a1 + p); c10 = _mm256_fmadd_ps(v, b0, c10); c11 = _mm256_fmadd_ps(v, b1, c11);
        v = _mm256_broadcast_ss(a2 + p); c20 = _mm256_fmadd_ps(v, b0, c20); c21 = _mm256_fmadd_ps(v, b1, c21);
        v = _mm256_broadcast_ss(a3 + p); c30 = _mm256_fmadd_ps(v, b0, c30); c31 = _mm256_fmadd_ps(v, b1, c31);
        v = _mm256_broadcast_ss(a4 + p); c40 = _mm256_fmadd_ps(v, b0, c40); c41 = _mm256_fmadd_ps(v, b1, c41);
        v = _mm256_broadcast_ss(a5 + p); c50 = _mm256_fmadd_ps(v, b0, c50); c51 = _mm256_fmadd_ps(v, b1, c51);
      }
    }
  if (st) { /* rows >= mr repeat row mr - 1 and are not stored */
    stage2(st, &c00, &c01);
    if (mr > 1) stage2(st, &c10, &c11);
    if (mr > 2) stage2(st, &c20, &c21);
    if (mr > 3) stage2(st, &c30, &c31);
    if (mr > 4) stage2(st, &c40, &c41);
    if (mr > 5) stage2(st, &c50, &c51);
  }
  _mm256_storeu_ps(c, c00); _mm256_storeu_ps(c + 8, c01);
  if (mr > 1) { _mm256_storeu_ps(c + ldc, c10); _mm256_storeu_ps(c + ldc + 8, c11); }
  if (mr > 2) { _mm256_storeu_ps(c + 2 * ldc, c20); _mm256_storeu_ps(c + 2 * ldc + 8, c21); }
  if (mr > 3) { _mm256_storeu_ps(c + 3 * ldc, c30); _mm256_storeu_ps(c + 3 * ldc + 8, c31); }
  if (mr > 4) { _mm256_storeu_ps(c + 4 * ldc, c40); _mm256_storeu_ps(c + 4 * ldc + 8, c41); }
  if (mr > 5) { _mm256_storeu_ps(c + 5 * ldc, c50); _mm256_storeu_ps(c + 5 * ldc + 8, c51); }
}

/* The GEMM micro-kernel: the convolution kernel above with one segment of k values per row
 * (row i of A at a + i * lda), so both run the same 6 x 16 FMA tile in the same order. */
void xk_fgemm_ukernel_stage_avx2(size_t mr, size_t k, const float *a, size_t lda, const float *b, float *c,
                                 size_t ldc, const xk_fstage *st) {
  const float *x[XK_CONV_MR];
  for (size_t i = 0; i < mr; i++) x[i] = a + i * lda; /* the kernel reads rows < mr only */
  const xk_conv_segs one = {1, 1, k, 0, 0};
  xk_fconv_ukernel_avx2(mr, x, &one, b, c, ldc, st);
}

static void ukernel(size_t mr, size_t k, const float *a, size_t lda, const float *b, float *c, size_t ldc) {
  xk_fgemm_ukernel_stage_avx2(mr, k, a, lda, b, c, ldc, NULL);
}

/* One row against NB <= 4 column blocks: 2 * NB accumulators, each column's sum in k order with
 * one FMA per step, as in the 6 x 16 tile. */
static inline __attribute__((always_inline)) void gemv_blocks(const int NB, size_t k, const float *a, const float *b,
                                                              float *c, const xk_fstage *st) {
  const size_t bs = k * NR;
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  const float *b0 = b, *b1 = b + (NB > 1 ? bs : 0), *b2 = b + (NB > 2 ? 2 * bs : 0), *b3 = b + (NB > 3 ? 3 * bs : 0);
  for (size_t p = 0; p < k; p++, b0 += NR, b1 += NR, b2 += NR, b3 += NR) {
    const __m256 v = _mm256_broadcast_ss(a + p);
    s0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(b0), s0);
    s1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(b0 + 8), s1);
    if (NB > 1) {
      s2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(b1), s2);
      s3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(b1 + 8), s3);
    }
    if (NB > 2) {
      s4 = _mm256_fmadd_ps(v, _mm256_loadu_ps(b2), s4);
      s5 = _mm256_fmadd_ps(v, _mm256_loadu_ps(b2 + 8), s5);
    }
    if (NB > 3) {
      s6 = _mm256_fmadd_ps(v, _mm256_loadu_ps(b3), s6);
      s7 = _mm256_fmadd_ps(v, _mm256_loadu_ps(b3 + 8), s7);
    }
  }
  if (st) {
    stage2(&st[0], &s0, &s1);
    if (NB > 1) stage2(&st[1], &s2, &s3);
    if (NB > 2) stage2(&st[2], &s4, &s5);
    if (NB > 3) stage2(&st[3], &s6, &s7);
  }
  _mm256_storeu_ps(c, s0); _mm256_storeu_ps(c + 8, s1);
  if (NB > 1) { _mm256_storeu_ps(c + 16, s2); _mm256_storeu_ps(c + 24, s3); }
  if (NB > 2) { _mm256_storeu_ps(c + 32, s4); _mm256_storeu_ps(c + 40, s5); }
  if (NB > 3) { _mm256_storeu_ps(c + 48, s6); _mm256_storeu_ps(c + 56, s7); }
}

void xk_fgemv_ukernel_avx2(size_t k, const float *a, const float *b, size_t nblk, float *c, const xk_fstage *st) {
  switch (nblk) {
    case 1: gemv_blocks(1, k, a, b, c, st); break;
    case 2: gemv_blocks(2, k, a, b, c, st); break;
    case 3: gemv_blocks(3, k, a, b, c, st); break;
    default: gemv_blocks(4, k, a, b, c, st); break;
  }
}

const xk_fgemm_desc xk_fgemm_avx2 = {XK_ISA_AVX2, MR, NR, ukernel};

/* ------------------------------------------------------------------ row kernels of the depthwise
 * convolution, pooling and int8 input quantization (fgemm.h): 8 channels per ymm, up to 4 ymm
 * accumulators (32 channels) per pass over the window; channel tails masked. */

static inline __m256i tail_mask(size_t n) { /* lanes < n set, n in [0, 8] */
  static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256((const __m256i *)(m + 8 - n));
}

static inline __m256 load_x(const float *x, size_t n, __m256i mask) {
  return n == 8 ? _mm256_loadu_ps(x) : _mm256_maskload_ps(x, mask);
}

/* Four output pixels ox..ox+3 at once for rows of at most 16 channels (two vectors), every tap
 * inside the image along x: eight independent FMA chains where one pixel has one or two (the
 * 8-channel stem of QuickNet was bound by the latency of one chain). Taps in the same (ky, kx)
 * order, so each pixel's sums are the ones of the one-pixel loop. */
static void dw_px4(const xk_dw_row *r, size_t ox, long dh, long dw, __m256i mlast) {
  const size_t c = r->c, kw = r->kw, sx = r->stride_w * c, nv = (c + 7) / 8;
  const long ix0 = (long)(ox * r->stride_w) - r->pad_l;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  for (size_t ky = 0; ky < r->kh; ky++) {
    const long iy = r->iy0 + (long)ky * dh;
    if (iy < 0 || iy >= (long)r->h) continue;
    const float *xr = r->in + ((size_t)iy * r->w + (size_t)ix0) * c;
    const float *wr = r->wf + ky * kw * c;
    for (size_t kx = 0; kx < kw; kx++) {
      const float *x = xr + (size_t)((long)kx * dw) * c, *wt = wr + kx * c;
      if (nv == 1) {
        const __m256 w0 = load_x(wt, c, mlast);
        a0 = _mm256_fmadd_ps(load_x(x, c, mlast), w0, a0);
        a1 = _mm256_fmadd_ps(load_x(x + sx, c, mlast), w0, a1);
        a2 = _mm256_fmadd_ps(load_x(x + 2 * sx, c, mlast), w0, a2);
        a3 = _mm256_fmadd_ps(load_x(x + 3 * sx, c, mlast), w0, a3);
      } else {
        const __m256 w0 = _mm256_loadu_ps(wt), w1 = load_x(wt + 8, c - 8, mlast);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x), w0, a0);
        b0 = _mm256_fmadd_ps(load_x(x + 8, c - 8, mlast), w1, b0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + sx), w0, a1);
        b1 = _mm256_fmadd_ps(load_x(x + sx + 8, c - 8, mlast), w1, b1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 2 * sx), w0, a2);
        b2 = _mm256_fmadd_ps(load_x(x + 2 * sx + 8, c - 8, mlast), w1, b2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 3 * sx), w0, a3);
        b3 = _mm256_fmadd_ps(load_x(x + 3 * sx + 8, c - 8, mlast), w1, b3);
      }
    }
  }
  const __m256 lo[4] = {a0, a1, a2, a3}, hi[4] = {b0, b1, b2, b3};
  for (size_t i = 0; i < 4; i++) {
    float *y = r->y + (ox + i) * r->ldy;
    if (nv == 1) {
      if (c == 8) _mm256_storeu_ps(y, lo[i]);
      else _mm256_maskstore_ps(y, mlast, lo[i]);
    } else {
      _mm256_storeu_ps(y, lo[i]);
      if (c == 16) _mm256_storeu_ps(y + 8, hi[i]);
      else _mm256_maskstore_ps(y + 8, mlast, hi[i]);
    }
  }
}

void xk_dw_row_avx2(const xk_dw_row *r) {
  const size_t c = r->c, kh = r->kh, kw = r->kw;
  const long dh = (long)r->dil_h, dw = (long)r->dil_w;
  for (size_t ox = 0; ox < r->ow; ox++) {
    const long ix0 = (long)(ox * r->stride_w) - r->pad_l;
    if (c <= 16 && ox + 4 <= r->ow && ix0 >= 0 &&
        (long)((ox + 3) * r->stride_w) - r->pad_l + (long)(kw - 1) * dw < (long)r->w) {
      dw_px4(r, ox, dh, dw, tail_mask(c - (c - 1) / 8 * 8));
      ox += 3;
      continue;
    }
    float *y = r->y + ox * r->ldy;
    for (size_t c0 = 0; c0 < c; c0 += 32) {
      const size_t nb = c - c0 < 32 ? c - c0 : 32, nv = (nb + 7) / 8;
      const __m256i mlast = tail_mask(nb - (nv - 1) * 8);
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (size_t ky = 0; ky < kh; ky++) {
        const long iy = r->iy0 + (long)ky * dh;
        if (iy < 0 || iy >= (long)r->h) continue;
        const float *xr = r->in + (size_t)iy * r->w * c + c0;
        for (size_t kx = 0; kx < kw; kx++) {
          const long ix = ix0 + (long)kx * dw;
          if (ix < 0 || ix >= (long)r->w) continue;
          const float *x = xr + (size_t)ix * c;
          const size_t wo = (ky * kw + kx) * c + c0;
          /* one case per vector count, so the accumulators stay in registers; only the last
           * vector of a block may be partial (masked loads) */
          switch (nv) {
            case 4: a3 = _mm256_fmadd_ps(load_x(x + 24, nb - 24, mlast), load_x(r->wf + wo + 24, nb - 24, mlast), a3);
              /* fall through */
            case 3: a2 = _mm256_fmadd_ps(load_x(x + 16, nv == 3 ? nb - 16 : 8, mlast),
                                         load_x(r->wf + wo + 16, nv == 3 ? nb - 16 : 8, mlast), a2);
              /* fall through */
            case 2: a1 = _mm256_fmadd_ps(load_x(x + 8, nv == 2 ? nb - 8 : 8, mlast),
                                         load_x(r->wf + wo + 8, nv == 2 ? nb - 8 : 8, mlast), a1);
              /* fall through */
            default: a0 = _mm256_fmadd_ps(load_x(x, nv == 1 ? nb : 8, mlast), load_x(r->wf + wo, nv == 1 ? nb : 8, mlast), a0);
          }
        }
      }
      const __m256 out[4] = {a0, a1, a2, a3};
      for (size_t v = 0; v < nv; v++) {
        if (v + 1 < nv || nb - v * 8 == 8) _mm256_storeu_ps(y + c0 + v * 8, out[v]);
        else _mm256_maskstore_ps(y + c0 + v * 8, mlast, out[v]);
      }
    }
  }
}

/* One max step in tap order: v replaces acc when greater or NaN (NaN propagates as in PyTorch). */
static inline __m256 max_step(__m256 acc, __m256 v) {
  return _mm256_blendv_ps(acc, v, _mm256_or_ps(_mm256_cmp_ps(v, acc, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}

void xk_pool_row_avx2(const xk_pool_row *r) {
  const size_t c = r->c;
  for (size_t ox = 0; ox < r->ow; ox++) {
    const long ix0 = (long)(ox * r->stride_w) - r->pad_l;
    const long xlo = ix0 < 0 ? 0 : ix0, xhi = ix0 + (long)r->kw > (long)r->w ? (long)r->w : ix0 + (long)r->kw;
    float *y = r->y + ox * c;
    __m256 div = _mm256_set1_ps(1.0f);
    if (r->avg) {
      long cnt;
      if (r->include_pad) {
        long ey1 = r->iy0 + r->kh, ex1 = ix0 + (long)r->kw;
        const long hmax = (long)r->h + r->pad_b, wmax = (long)r->w + r->pad_r;
        if (ey1 > hmax) ey1 = hmax;
        if (ex1 > wmax) ex1 = wmax;
        cnt = (ey1 - r->iy0) * (ex1 - ix0);
      } else {
        cnt = (r->yhi - r->ylo) * (xhi - xlo);
      }
      div = _mm256_set1_ps((float)cnt);
    }
    size_t c0 = 0;
    /* 32 channels at a time: four independent chains (the max step, compare + blend, is bound by
     * its latency; one chain per 8 channels ran at a quarter of the throughput). Each chain
     * takes the taps in the same order as below, so the results are the same bits. */
    for (; c0 + 32 <= c; c0 += 32) {
      const float *base = r->in + c0;
      const float *x0 = base + ((size_t)r->ylo * r->w + (size_t)xlo) * c;
      __m256 a0 = _mm256_loadu_ps(x0), a1 = _mm256_loadu_ps(x0 + 8), a2 = _mm256_loadu_ps(x0 + 16),
             a3 = _mm256_loadu_ps(x0 + 24);
      for (long iy = r->ylo; iy < r->yhi; iy++)
        for (long ix = iy == r->ylo ? xlo + 1 : xlo; ix < xhi; ix++) {
          const float *xp = base + ((size_t)iy * r->w + (size_t)ix) * c;
          const __m256 v0 = _mm256_loadu_ps(xp), v1 = _mm256_loadu_ps(xp + 8), v2 = _mm256_loadu_ps(xp + 16),
                       v3 = _mm256_loadu_ps(xp + 24);
          if (r->avg) {
            a0 = _mm256_add_ps(a0, v0);
            a1 = _mm256_add_ps(a1, v1);
            a2 = _mm256_add_ps(a2, v2);
            a3 = _mm256_add_ps(a3, v3);
          } else {
            a0 = max_step(a0, v0);
            a1 = max_step(a1, v1);
            a2 = max_step(a2, v2);
            a3 = max_step(a3, v3);
          }
        }
      if (r->avg) {
        a0 = _mm256_div_ps(a0, div);
        a1 = _mm256_div_ps(a1, div);
        a2 = _mm256_div_ps(a2, div);
        a3 = _mm256_div_ps(a3, div);
      }
      _mm256_storeu_ps(y + c0, a0);
      _mm256_storeu_ps(y + c0 + 8, a1);
      _mm256_storeu_ps(y + c0 + 16, a2);
      _mm256_storeu_ps(y + c0 + 24, a3);
    }
    for (; c0 < c; c0 += 8) {
      const size_t n = c - c0 < 8 ? c - c0 : 8;
      const __m256i m = tail_mask(n);
      const float *base = r->in + c0;
      const float *x0 = base + ((size_t)r->ylo * r->w + (size_t)xlo) * c;
      __m256 acc = n == 8 ? _mm256_loadu_ps(x0) : _mm256_maskload_ps(x0, m); /* AMD: masked ops only in tails */
      for (long iy = r->ylo; iy < r->yhi; iy++)
        for (long ix = iy == r->ylo ? xlo + 1 : xlo; ix < xhi; ix++) {
          const float *xp = base + ((size_t)iy * r->w + (size_t)ix) * c;
          const __m256 v = n == 8 ? _mm256_loadu_ps(xp) : _mm256_maskload_ps(xp, m);
          if (r->avg) {
            acc = _mm256_add_ps(acc, v);
          } else {
            acc = max_step(acc, v);
          }
        }
      if (r->avg) acc = _mm256_div_ps(acc, div);
      if (n == 8) _mm256_storeu_ps(y + c0, acc);
      else _mm256_maskstore_ps(y + c0, m, acc);
    }
  }
}

/* q - zp for q = clamp(round_half_even(x * inv) + zp, -128, 127), as float (f) or int16 (h):
 * max(v, -512) maps NaN to -512 (maxps returns its second operand when either is NaN), then
 * the same steps as the portable quantizer of csrc/ops/qconv.c, so the results are identical. */
void xk_quantize_centered_avx2(const float *x, size_t n, float inv, float zpf, float *f, int16_t *h) {
  const __m256 vinv = _mm256_set1_ps(inv), zp = _mm256_set1_ps(zpf);
  const __m256 lo = _mm256_set1_ps(-512.0f), hi = _mm256_set1_ps(512.0f);
  const __m256 qlo = _mm256_set1_ps(-128.0f), qhi = _mm256_set1_ps(127.0f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv), lo);
    v = _mm256_min_ps(v, hi);
    v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_add_ps(v, zp);
    v = _mm256_min_ps(_mm256_max_ps(v, qlo), qhi);
    v = _mm256_sub_ps(v, zp);
    if (f) {
      _mm256_storeu_ps(f + i, v);
    } else {
      const __m256i q = _mm256_cvtps_epi32(v);
      const __m128i p = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
      _mm_storeu_si128((__m128i *)(h + i), p);
    }
  }
  for (; i < n; i++) { /* tail: the scalar steps */
    float v = x[i] * inv;
    v = v >= -512.0f ? v : -512.0f;
    v = v <= 512.0f ? v : 512.0f;
    v = (v + 12582912.0f) - 12582912.0f;
    v = v + zpf;
    v = v >= -128.0f ? v : -128.0f;
    v = v <= 127.0f ? v : 127.0f;
    v = v - zpf;
    if (f) f[i] = v;
    else h[i] = (int16_t)v;
  }
}

void xk_add_avx2(const float *a, const float *b, float *y, size_t n) {
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256 s0 = _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    const __m256 s1 = _mm256_add_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
    const __m256 s2 = _mm256_add_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16));
    const __m256 s3 = _mm256_add_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24));
    _mm256_storeu_ps(y + i, s0);
    _mm256_storeu_ps(y + i + 8, s1);
    _mm256_storeu_ps(y + i + 16, s2);
    _mm256_storeu_ps(y + i + 24, s3);
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  for (; i < n; i++) y[i] = a[i] + b[i];
}

void xk_binarize_rows_avx2(size_t rows, size_t c, const float *x, size_t ldx, const float *t, const uint64_t *flipw,
                           uint8_t *out, size_t rb) {
  const size_t ngroups = (c + 7) / 8, full = c / 8; /* groups of 8 channels; group `full` is the tail */
  const __m256i tmask = tail_mask(c % 8);
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * ldx;
    uint64_t word = 0;
    for (size_t g = 0; g < ngroups; g++) {
      __m256 v, th = _mm256_setzero_ps();
      if (g < full) {
        v = _mm256_loadu_ps(xr + 8 * g);
        if (t) th = _mm256_loadu_ps(t + 8 * g);
      } else { /* the tail: lanes past c read as x = t = 0, so their bits are 0 */
        v = _mm256_maskload_ps(xr + 8 * g, tmask);
        if (t) th = _mm256_maskload_ps(t + 8 * g, tmask);
      }
      /* bit 1 = not (x >= t): NaN sets it, as the portable loop */
      word |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, th, _CMP_NGE_UQ)) << (8 * (g % 8));
      if (g % 8 == 7 || g + 1 == ngroups) { /* a whole 64-bit word */
        if (flipw) word ^= flipw[g / 8];
        memcpy(out + r * rb + g / 8 * 8, &word, 8);
        word = 0;
      }
    }
  }
}
