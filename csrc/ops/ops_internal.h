/* Helpers shared by the operator files (not installed). */
#ifndef XNORKIT_OPS_INTERNAL_H
#define XNORKIT_OPS_INTERNAL_H

#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../ukernels/fgemm/fgemm.h"
#include "../xk_internal.h"
#include "xk_ops.h"

#define XK_ALIGN 64
static inline size_t xk_align_up(size_t x) { return xk_round_up(x, XK_ALIGN); }

/* Every packed-weights buffer starts with this 64-byte header so a run can check that the
 * buffer was packed for the same op, shape and kernel family. */
typedef struct xk_packed_header {
  uint32_t magic;   /* op kind */
  uint32_t isa;     /* kernel family the panel was packed for */
  uint64_t n, k;    /* output channels, reduction length (in the op's units) */
  uint64_t aux[5];  /* op-specific */
} xk_packed_header;
#define XK_PACKED_HEADER 64

#define XK_MAGIC_BCONV 0x56434258u  /* "XBCV" */
#define XK_MAGIC_BDENSE 0x44424258u /* "XBBD" */
#define XK_MAGIC_FGEMM 0x4d474658u  /* "XFGM" */
#define XK_MAGIC_QGEMM 0x4d475158u  /* "XQGM" */

xk_status xk_packed_check(const void *packed, size_t packed_size, uint32_t magic, uint64_t n, uint64_t k,
                          size_t need, const char *op);

/* y = post_scale * act(scale * acc + bias) + post_bias for channel ch. */
static inline float xk_out_value(const xk_output *o, float acc, size_t ch) {
  float y = o->scale ? o->scale[ch] * acc : acc;
  if (o->bias) y += o->bias[ch];
  if (o->act.kind != XK_ACT_NONE) y = xk_act_apply(&o->act, y, ch);
  if (o->post_scale) y *= o->post_scale[ch];
  if (o->post_bias) y += o->post_bias[ch];
  return y;
}

#if defined(__GNUC__) || defined(__clang__)
#define XK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define XK_ALWAYS_INLINE inline
#endif

/* y = pb + ps * relu(bi + sc * x) for the stages flagged (use_*: compile-time constants at every
 * call, so each combination is one branch-free loop). x is xi (int32, converted) or xf. */
static XK_ALWAYS_INLINE void xk_stage_loop(float *y, const int32_t *xi, const float *xf, size_t n, const float *sc,
                                           const float *bi, const float *ps, const float *pb, int use_sc, int use_bi,
                                           int use_relu, int use_ps, int use_pb) {
  for (size_t c = 0; c < n; c++) {
    float v = xi ? (float)xi[c] : xf[c];
    if (use_sc) v = sc[c] * v;
    if (use_bi) v = v + bi[c];
    if (use_relu) v = v > 0.0f ? v : 0.0f;
    if (use_ps) v = v * ps[c];
    if (use_pb) v = v + pb[c];
    y[c] = v;
  }
}

/* The float output stage of `rows` rows of channels [col0, col0 + n) in one pass per row, when it
 * is one of the common combinations (folded BatchNorm, BatchNorm + ReLU, QuickNet's ReLU ->
 * BatchNorm, ...): y row r = stage(x row r), x = xi (int32, stride ldx) or xf (float, stride ldx,
 * may be y itself). Same operations and roundings as xk_output_apply. Returns 0 (nothing
 * written) for other stages. Inline, so the caller's target (e.g. AVX2) vectorizes the loops. */
static XK_ALWAYS_INLINE int xk_stage_rows(const xk_output *o, size_t col0, size_t n, size_t rows, const int32_t *xi,
                                          const float *xf, size_t ldx, float *y, size_t ldy) {
  if (o->act.kind != XK_ACT_NONE && o->act.kind != XK_ACT_RELU) return 0;
  const float *sc = o->scale ? o->scale + col0 : NULL, *bi = o->bias ? o->bias + col0 : NULL;
  const float *ps = o->post_scale ? o->post_scale + col0 : NULL, *pb = o->post_bias ? o->post_bias + col0 : NULL;
  const unsigned st = (sc ? 1u : 0u) | (bi ? 2u : 0u) | (o->act.kind == XK_ACT_RELU ? 4u : 0u) | (ps ? 8u : 0u) |
                      (pb ? 16u : 0u);
#define XK_STAGE_CASE(S, SC, BI, RE, PS, PB)                                                                  \
  case S:                                                                                                    \
    for (size_t r = 0; r < rows; r++)                                                                        \
      xk_stage_loop(y + r * ldy, xi ? xi + r * ldx : NULL, xi ? NULL : xf + r * ldx, n, sc, bi, ps, pb, SC, BI, \
                    RE, PS, PB);                                                                             \
    return 1;
  switch (st) {
    XK_STAGE_CASE(0, 0, 0, 0, 0, 0)
    XK_STAGE_CASE(1, 1, 0, 0, 0, 0)
    XK_STAGE_CASE(2, 0, 1, 0, 0, 0)
    XK_STAGE_CASE(1 | 2, 1, 1, 0, 0, 0)         /* folded BatchNorm */
    XK_STAGE_CASE(4, 0, 0, 1, 0, 0)
    XK_STAGE_CASE(1 | 2 | 4, 1, 1, 1, 0, 0)     /* BatchNorm + ReLU */
    XK_STAGE_CASE(2 | 4, 0, 1, 1, 0, 0)
    XK_STAGE_CASE(4 | 8 | 16, 0, 0, 1, 1, 1)    /* QuickNet: ReLU -> BatchNorm */
    XK_STAGE_CASE(1 | 4 | 8 | 16, 1, 0, 1, 1, 1)
    XK_STAGE_CASE(2 | 4 | 8 | 16, 0, 1, 1, 1, 1)
    XK_STAGE_CASE(1 | 2 | 4 | 8 | 16, 1, 1, 1, 1, 1)
    default: return 0;
  }
#undef XK_STAGE_CASE
}

/* Packed-bits output of a row segment (ncols <= 64): bit c = (dot[c] < t[c]) XOR flip bit c. */
static inline uint64_t xk_threshold_word(const int32_t *dot, const int32_t *t, size_t ncols, uint64_t flip) {
  uint64_t word = 0;
  size_t c = 0;
#if defined(__SSE2__)
  for (; c + 8 <= ncols; c += 8) {
    __m128i lo = _mm_cmplt_epi32(_mm_loadu_si128((const __m128i *)(dot + c)), _mm_loadu_si128((const __m128i *)(t + c)));
    __m128i hi = _mm_cmplt_epi32(_mm_loadu_si128((const __m128i *)(dot + c + 4)),
                                 _mm_loadu_si128((const __m128i *)(t + c + 4)));
    word |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_packs_epi16(_mm_packs_epi32(lo, hi), _mm_setzero_si128())) << c;
  }
#endif
  for (; c < ncols; c++) word |= (uint64_t)(dot[c] < t[c]) << c;
  return word ^ flip;
}

/* Per-channel flags f[0..n) (n <= 64, bit 0 of each byte) as one packed word, channel c at bit c. */
static inline uint64_t xk_pack_flags(const uint8_t *f, size_t n) {
  uint64_t w = 0;
  for (size_t c = 0; c < n; c++) w |= (uint64_t)(f[c] & 1) << c;
  return w;
}

/* The flip bits of output channels [col0, col0 + ncols) (<= 64) as one packed word (0 without). */
static inline uint64_t xk_flip_word(const xk_output *o, size_t col0, size_t ncols) {
  return o->kind == XK_OUT_BITS && o->flip ? xk_pack_flags(o->flip + col0, ncols) : 0;
}

/* Validate an output stage for an op with n output channels. flags: XK_CHECK_BINARY_ACC
 * (thresholds allowed: a binary op), XK_CHECK_RESIDUAL (the op takes a fused residual input). */
#define XK_CHECK_BINARY_ACC 1
#define XK_CHECK_RESIDUAL 2
xk_status xk_output_check(const xk_output *o, size_t n, size_t ldc, int flags, const char *op);

/* Write one row segment of float accumulators through the output stage.
 * Columns [col0, col0 + ncols) of row `row` of the output (stride ldc). For BITS, col0 must be
 * a multiple of 64 (acc is used as scratch). */
void xk_output_store_f32(const xk_output *o, float *acc, size_t col0, size_t ncols, void *out, size_t ldc, size_t row);
/* The output stage in place on y[0..n) = channels [col0, col0 + n): xk_stage_rows when it
 * applies, else xk_output_apply_passes (one pass per operation; for callers that already tried
 * xk_stage_rows). */
void xk_output_apply(const xk_output *o, float *y, size_t col0, size_t n);
void xk_output_apply_passes(const xk_output *o, float *y, size_t col0, size_t n);
/* The output stage in place on channels [col0, col0 + n) of `rows` rows of y (stride ldc floats):
 * xk_output_apply per row; an activation-only stage over contiguous rows is one pass. */
void xk_output_apply_rows(const xk_output *o, float *y, size_t rows, size_t ldc, size_t col0, size_t n);
/* A float output row of channels [col0, col0 + n) from exact integer accumulators: the one-pass
 * stage when it applies, else one pass per operation, then the fused residual (res, nullable;
 * may be y itself: each element read, then written). Inline for the callers' targets (AVX2). */
static XK_ALWAYS_INLINE void xk_float_row(const xk_output *o, const int32_t *dot, size_t col0, size_t n, float *y,
                                          const float *res) {
  if (!xk_stage_rows(o, col0, n, 1, dot, NULL, 0, y, 0)) {
    for (size_t c = 0; c < n; c++) y[c] = (float)dot[c];
    xk_output_apply_passes(o, y, col0, n);
  }
  if (res)
    for (size_t c = 0; c < n; c++) y[c] = y[c] + res[c];
}

/* An activation in place on y[0..n) = channels [ch0, ch0 + n). */
void xk_act_inplace(const xk_act_params *a, float *y, size_t n, size_t ch0);

size_t xk_conv_taps(const xk_conv_shape *s);
/* 1 when the selected ISA (xk_get_isa()) may use the AVX2 kernels of the non-binary ops. */
static inline int xk_use_avx2(void) {
#ifdef XK_HAVE_AVX2
  xk_isa isa = xk_get_isa();
  return (isa == XK_ISA_AVX2 || isa == XK_ISA_AVX512) && xk_isa_available(XK_ISA_AVX2);
#else
  return 0;
#endif
}
/* 1 when the selected ISA is AVX-512 and this build and CPU have it (ops with AVX-512 kernels). */
static inline int xk_use_avx512(void) {
#ifdef XK_HAVE_AVX512
  return xk_get_isa() == XK_ISA_AVX512 && xk_isa_available(XK_ISA_AVX512);
#else
  return 0;
#endif
}
/* ... and the CPU has AVX-512 VNNI (the int8 ops' AVX-512 kernels, qgemm-avx512.c). */
static inline int xk_use_avx512_vnni(void) { return xk_use_avx512() && xk_cpu_has_avx512_vnni(); }
static inline size_t xk_dil(size_t d) { return d ? d : 1; }
/* The im2col convolutions' tile tasks (qconv.c, fconv.c): one workspace slot per worker, each
 * remembering the tile it holds (slot_tile[w], SIZE_MAX: none), so a worker gathers a tile once
 * for its consecutive (tile, column group) tasks. Returns how many workers take part: the slots
 * the workspace holds, 1 for a small (serial) call. */
static inline size_t xk_tile_workers(size_t ws_size, size_t slot_bytes, int serial, size_t slot_tile[XK_MAX_THREADS]) {
  size_t n = serial ? 1 : ws_size / slot_bytes;
  if (n > XK_MAX_THREADS) n = XK_MAX_THREADS;
  for (size_t i = 0; i < n; i++) slot_tile[i] = SIZE_MAX;
  return n;
}


/* Direct convolutions over a zero-padded NHWC input [n][hp][wp][c]: off[i] = element offset of
 * the window origin of output pixel r0 + i (i < rows), output pixels counted over n x oh x ow. */
static inline void xk_window_offsets(const xk_conv_shape *s, size_t oh, size_t ow, size_t hp, size_t wp, size_t r0,
                                     size_t rows, size_t *off) {
  size_t b = r0 / (oh * ow), pix = r0 % (oh * ow), oy = pix / ow, ox = pix % ow;
  for (size_t i = 0; i < rows; i++) {
    off[i] = ((b * hp + oy * s->stride_h) * wp + ox * s->stride_w) * s->c;
    if (++ox == ow) {
      ox = 0;
      if (++oy == oh) oy = 0, b++;
    }
  }
}
/* The reduction of a direct convolution as segments of its padded input, row width wp elements
 * per channel-pixel (fgemm.h xk_conv_segs): one segment of KW * C values per kernel row, or per
 * tap C values with dilation. wp = 0 gives the segment shape only (weight packing). */
static inline xk_conv_segs xk_direct_segs(const xk_conv_shape *s, size_t wp) {
  const size_t dh = xk_dil(s->dil_h), dw = xk_dil(s->dil_w), c = s->c;
  xk_conv_segs g = {s->kh, dw == 1 ? 1 : s->kw, dw == 1 ? s->kw * c : c, dh * wp * c, dw * c};
  return g;
}
xk_status xk_conv_check(const xk_conv_shape *s, const char *op, size_t *oh, size_t *ow);

#endif
