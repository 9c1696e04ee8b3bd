/* Float and int8 GEMM micro-kernel families used by the float / int8 conv and dense ops
 * (csrc/ops/fconv.c, csrc/ops/qconv.c). One file per ISA; the op layer picks the family that
 * matches the selected ISA (xk_get_isa()) and falls back to scalar.
 *
 * fgemm: c[i][j] = sum_{p<k} a[i*lda + p] * b[p*NR + j] for i < mr (<= MR), j < NR; b is one
 *        NR-column block of the packed weights ([k][NR] floats, zero past n).
 * qgemm: c[i][j] = sum_{p<kp} a[i*lda + p] * b[(p/2)*2*NR + 2*j + p%2] (int16 x int16 -> int32);
 *        kp is even, a holds (q_x - zero_point) as int16 (zero past k), b is one NR-column
 *        block of [kp/2][NR][2] int16 weights (zero past n and k). Exact in int32 for
 *        |a| <= 255, |b| <= 128 and kp < 2^16.
 * c is a tile buffer with stride ldc (>= NR). */
#ifndef XNORKIT_UKERNEL_GEMM_H
#define XNORKIT_UKERNEL_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "xnorkit/xk.h"

typedef void (*xk_fgemm_ukernel_fn)(size_t mr, size_t k, const float *a, size_t lda, const float *b, float *c,
                                    size_t ldc);
typedef struct xk_fgemm_desc {
  xk_isa isa;
  size_t mr, nr;
  xk_fgemm_ukernel_fn ukernel;
} xk_fgemm_desc;

typedef void (*xk_qgemm_ukernel_fn)(size_t mr, size_t kp, const int16_t *a, size_t lda, const int16_t *b, int32_t *c,
                                    size_t ldc);
typedef struct xk_qgemm_desc {
  xk_isa isa;
  size_t mr, nr;
  xk_qgemm_ukernel_fn ukernel;
} xk_qgemm_desc;

extern const xk_fgemm_desc xk_fgemm_scalar;
extern const xk_qgemm_desc xk_qgemm_scalar;
#ifdef XK_HAVE_AVX2
extern const xk_fgemm_desc xk_fgemm_avx2;
extern const xk_qgemm_desc xk_qgemm_avx2;
#endif

/* Row kernels of the non-GEMM float ops (csrc/ops/fconv.c depthwise, csrc/ops/qconv.c int8
 * depthwise, csrc/ops/elementwise.c pools): one output row (b, oy) of an NHWC tensor, channels in
 * vector lanes. One file per ISA; the portable loops of the op files are the scalar path.
 *
 * dw:   y[ox][ch] = sum over the window's taps inside the input, in (ky, kx) order, of
 *       x[iy][ix][ch] * w[ky][kx][ch] (channel multiplier 1), float weights (the int8 op passes
 *       its weights converted, x holding exact small integers: every partial sum is an integer
 *       below 2^24, so the float accumulation is exact). Then the float output stage (caller).
 * pool: max (NaN propagates) or sum in row-major tap order starting from the first tap, then
 *       divided by the count (avg); the window clipped to the input. */
typedef struct xk_dw_row {
  const float *in;      /* image b, [h][w][c] */
  size_t h, w, c;
  const float *wf;      /* [kh][kw][c] float weights */
  size_t kh, kw, stride_w, dil_h, dil_w;
  long iy0, pad_l;      /* input row of ky = 0; left padding */
  size_t ow;
  float *y;             /* output row, pixel stride ldy */
  size_t ldy;
} xk_dw_row;

typedef struct xk_pool_row {
  const float *in;      /* image b, [h][w][c] */
  size_t h, w, c;
  size_t kw, stride_w;
  long ylo, yhi, pad_l; /* rows [ylo, yhi) of the window, clipped */
  long pad_r, include_pad, iy0, kh, pad_b; /* avg count rule */
  int avg;
  size_t ow;
  float *y;             /* output row, pixel stride c */
} xk_pool_row;

/* Direct (implicit-GEMM) convolution micro-kernels for inputs with few channels (the C <= 4
 * stems of csrc/ops/fconv.c and csrc/ops/qconv.c): the GEMM micro-kernel of the same ISA with
 * row i of A (output pixel i, i < mr) read straight from a zero-padded NHWC copy of the input,
 * starting at x[i] (the window's top-left tap). The reduction is kh x kw segments of len
 * contiguous values, segment (ky, kx) at x[i] + ky * ystride + kx * xstride (dilation 1: one
 * segment of KW * C values per kernel row).
 * fconv: the reduction index p runs over the segments in order; c[i][j] = sum_p x_i[p] * b[p*NR + j]
 *        with the fgemm panel block b (MR 6, NR 16): bit-identical to the fgemm micro-kernel on the
 *        im2col rows.
 * qconv: each segment is read as len / 2 int16 pairs (len even: an odd segment is extended by the
 *        next value in memory, whose weight is zero); c[i][j] = sum over pairs m of
 *        x_i[2m] * b[m*2*NR + 2j] + x_i[2m+1] * b[m*2*NR + 2j + 1] (int32 lanes; MR 6, NR 16). */
typedef struct xk_conv_segs {
  size_t kh, kw, len;
  size_t ystride, xstride; /* in input elements */
} xk_conv_segs;
#define XK_CONV_MR 6

/* A float output stage applied by the AVX2 float micro-kernels to their accumulators before the
 * store: y = pb + ps * relu(bi + sc * acc), each part optional (NULL pointer, relu 0), pointers
 * at the first of the block's NR columns. The operations and roundings of xk_stage_loop
 * (ops_internal.h): one rounding per operation, no fused multiply-add, relu as v > 0 ? v : 0. */
typedef struct xk_fstage {
  const float *sc, *bi, *ps, *pb;
  int relu;
} xk_fstage;

#ifdef XK_HAVE_AVX2
/* st: NULL stores the plain sums; else the stage above applied first. */
void xk_fconv_ukernel_avx2(size_t mr, const float *const *x, const xk_conv_segs *t, const float *b, float *c,
                           size_t ldc, const xk_fstage *st);
/* The fgemm micro-kernel (MR 6, NR 16) with the stage above applied before the store. */
void xk_fgemm_ukernel_stage_avx2(size_t mr, size_t k, const float *a, size_t lda, const float *b, float *c,
                                 size_t ldc, const xk_fstage *st);
/* One row of A (batch-1 dense layers and the last row of a tile) against nblk <= 4 NR-column
 * blocks of the panel (block i at b + i * k * NR): c[j] for j < nblk * NR, each column summed in
 * the order of the 6 x 16 micro-kernel (bit-identical to it), then the stage of each block
 * (st[i], or none when st is NULL). Four blocks: 8 independent FMA chains. */
void xk_fgemv_ukernel_avx2(size_t k, const float *a, const float *b, size_t nblk, float *c, const xk_fstage *st);
void xk_qconv_ukernel_avx2(size_t mr, const int16_t *const *x, const xk_conv_segs *t, const int16_t *b, int32_t *c,
                           size_t ldc);
#endif

#ifdef XK_HAVE_AVX512
/* AVX-512F (fgemm-avx512.c): the AVX2 6 x 16 kernels above over two panel blocks at once (b and
 * b + bstride floats; 32 columns of c, st at the first of them), bit-identical to two AVX2 calls. */
void xk_fconv_ukernel2_avx512(size_t mr, const float *const *x, const xk_conv_segs *t, const float *b,
                              size_t bstride, float *c, size_t ldc, const xk_fstage *st);
void xk_fgemm_ukernel2_stage_avx512(size_t mr, size_t k, const float *a, size_t lda, const float *b, size_t bstride,
                                    float *c, size_t ldc, const xk_fstage *st);
/* The direct-convolution kernel on one block, its first n <= 16 columns only: stage values read
 * and outputs written for those columns (masked), bit-identical to the AVX2 kernel's columns. */
void xk_fconv_ukernel1_avx512(size_t mr, const float *const *x, const xk_conv_segs *t, const float *b, size_t n,
                              float *c, size_t ldc, const xk_fstage *st);
/* AVX-512 VNNI (qgemm-avx512.c): the AVX2 int8 kernels (qconv: 6 rows, qgemm: up to 4 rows) over two
 * panel blocks (b and b + bstride int16; 32 columns of c), identical results (exact int32). The CPU
 * must have AVX-512 VNNI (xk_cpu_has_avx512_vnni). */
void xk_qconv_ukernel2_avx512(size_t mr, const int16_t *const *x, const xk_conv_segs *t, const int16_t *b,
                              size_t bstride, int32_t *c, size_t ldc);
void xk_qgemm_ukernel2_avx512(size_t mr, size_t kp, const int16_t *a, size_t lda, const int16_t *b, size_t bstride,
                              int32_t *c, size_t ldc);
#endif

#ifdef XK_HAVE_AVX2
void xk_dw_row_avx2(const xk_dw_row *r);
void xk_pool_row_avx2(const xk_pool_row *r);
/* The int8 ops' input quantizer (csrc/ops/qconv.c): q - zp into f (float) or, when f is NULL, h. */
/* y[i] = a[i] + b[i] (csrc/ops/elementwise.c xk_add); y may alias a or b. */
void xk_add_avx2(const float *a, const float *b, float *y, size_t n);
/* xk_binarize with thresholds t (NULL: 0) and flip words (NULL: none; bit ch of word ch / 64,
 * zero past c): bit = !(x >= t) ^ flip, rows of stride rb bytes (words written: (c + 63) / 64,
 * the bits past c zero). */
void xk_binarize_rows_avx2(size_t rows, size_t c, const float *x, size_t ldx, const float *t, const uint64_t *flipw,
                           uint8_t *out, size_t rb);
void xk_quantize_centered_avx2(const float *x, size_t n, float inv, float zpf, float *f, int16_t *h);
#endif

#define XK_FGEMM_MAX_MR 8
#define XK_FGEMM_MAX_NR 16

#endif
