/* Ops on bit-packed activations: binarize, unbinarize, max pooling on bits, channel concat. */
#include "../ukernels/fgemm/fgemm.h"
#include "ops_internal.h"

#define SERIAL_BYTES ((size_t)1 << 16)

xk_status xk_binarize(size_t rows, size_t c, const float *x, size_t ldx, const float *t, const uint8_t *flip,
                      uint8_t *out) {
  static const char op[] = "xk_binarize";
  if (!x || !out) return xk_fail(XK_ERR_ARGUMENT, "%s: null buffer", op);
  if (rows == 0 || c == 0) return xk_fail(XK_ERR_SHAPE, "%s: empty input (rows=%zu, c=%zu)", op, rows, c);
  if (ldx < c) return xk_fail(XK_ERR_SHAPE, "%s: row stride %zu < c=%zu", op, ldx, c);
  const size_t rb = xk_packed_row_bytes(c);
  if (!t && !flip) return xk_pack_f32(x, rows, c, ldx, out, rb); /* sign0, ISA-specific packer */
#ifdef XK_HAVE_AVX2
  if (xk_use_avx2()) { /* 8 compares per step; the flip bits packed once per slice of 4096 channels */
    uint64_t flipw[64];
    for (size_t c0 = 0; c0 < c; c0 += 64 * 64) {
      const size_t cn = c - c0 < 64 * 64 ? c - c0 : 64 * 64;
      for (size_t w = 0; flip && w < xk_div_up(cn, 64); w++)
        flipw[w] = xk_pack_flags(flip + c0 + 64 * w, cn - 64 * w < 64 ? cn - 64 * w : 64);
      xk_binarize_rows_avx2(rows, cn, x + c0, ldx, t ? t + c0 : NULL, flip ? flipw : NULL, out + c0 / 8, rb);
    }
    return XK_OK;
  }
#endif
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * ldx;
    for (size_t w = 0; w < rb / 8; w++) {
      uint64_t word = 0;
      size_t n = c - w * 64 < 64 ? c - w * 64 : 64;
      for (size_t i = 0; i < n; i++) {
        size_t ch = w * 64 + i;
        unsigned bit = !(xr[ch] >= (t ? t[ch] : 0.0f));
        if (flip) bit ^= flip[ch] & 1u;
        word |= (uint64_t)bit << i;
      }
      memcpy(out + r * rb + w * 8, &word, 8);
    }
  }
  return XK_OK;
}

xk_status xk_unbinarize(size_t rows, size_t c, const uint8_t *bits, float *out, size_t ldo) {
  return xk_unpack_f32(bits, rows, c, xk_packed_row_bytes(c), out, ldo);
}

xk_status xk_pool_out_size(const xk_pool_shape *s, size_t *oh, size_t *ow) {
  if (!s) return xk_fail(XK_ERR_ARGUMENT, "pool: null shape");
  if (s->n == 0 || s->h == 0 || s->w == 0 || s->c == 0)
    return xk_fail(XK_ERR_SHAPE, "pool: empty tensor (n=%zu, h=%zu, w=%zu, c=%zu)", s->n, s->h, s->w, s->c);
  if (s->kh == 0 || s->kw == 0 || s->stride_h == 0 || s->stride_w == 0)
    return xk_fail(XK_ERR_SHAPE, "pool: window %zux%zu and stride %zux%zu must be >= 1", s->kh, s->kw, s->stride_h,
                   s->stride_w);
  if (s->pad_t >= s->kh || s->pad_b >= s->kh || s->pad_l >= s->kw || s->pad_r >= s->kw)
    return xk_fail(XK_ERR_SHAPE, "pool: padding must be smaller than the window %zux%zu", s->kh, s->kw);
  size_t ph = s->h + s->pad_t + s->pad_b, pw = s->w + s->pad_l + s->pad_r;
  if (ph < s->kh || pw < s->kw)
    return xk_fail(XK_ERR_SHAPE, "pool: window %zux%zu larger than padded input %zux%zu", s->kh, s->kw, ph, pw);
  if (oh) *oh = (ph - s->kh) / s->stride_h + 1;
  if (ow) *ow = (pw - s->kw) / s->stride_w + 1;
  return XK_OK;
}

typedef struct bpool_job {
  const xk_pool_shape *s;
  size_t oh, ow, cw;
  const uint64_t *in;
  const uint64_t *inv; /* nullable */
  uint64_t *out;
} bpool_job;

static void bpool_task(void *ctx, size_t t) { /* one output row (b, oy) */
  const bpool_job *j = (const bpool_job *)ctx;
  const xk_pool_shape *s = j->s;
  const size_t cw = j->cw, b = t / j->oh, oy = t % j->oh;
  const uint64_t tail = xk_tail_mask(s->c);
  long iy0 = (long)(oy * s->stride_h) - (long)s->pad_t;
  long ylo = iy0 < 0 ? 0 : iy0, yhi = iy0 + (long)s->kh > (long)s->h ? (long)s->h : iy0 + (long)s->kh;
  for (size_t ox = 0; ox < j->ow; ox++) {
    long ix0 = (long)(ox * s->stride_w) - (long)s->pad_l;
    long xlo = ix0 < 0 ? 0 : ix0, xhi = ix0 + (long)s->kw > (long)s->w ? (long)s->w : ix0 + (long)s->kw;
    uint64_t *dst = j->out + ((b * j->oh + oy) * j->ow + ox) * cw;
    for (size_t w = 0; w < cw; w++) {
      const uint64_t inv = j->inv ? j->inv[w] : 0;
      uint64_t acc = ~UINT64_C(0);
      for (long iy = ylo; iy < yhi; iy++)
        for (long ix = xlo; ix < xhi; ix++)
          acc &= j->in[((b * s->h + (size_t)iy) * s->w + (size_t)ix) * cw + w] ^ inv;
      acc ^= inv;
      dst[w] = w + 1 == cw ? acc & tail : acc;
    }
  }
}

xk_status xk_bmaxpool2d(const xk_pool_shape *s, const uint8_t *in, const uint8_t *invert, uint8_t *out) {
  static const char op[] = "xk_bmaxpool2d";
  size_t oh, ow;
  xk_status st = xk_pool_out_size(s, &oh, &ow);
  if (st != XK_OK) return st;
  if (!in || !out) return xk_fail(XK_ERR_ARGUMENT, "%s: null buffer", op);
  if (((uintptr_t)in | (uintptr_t)out | (uintptr_t)invert) % 8)
    return xk_fail(XK_ERR_ARGUMENT, "%s: buffers must be 8-byte aligned", op);
  bpool_job j = {s, oh, ow, xk_div_up(s->c, 64), (const uint64_t *)in, (const uint64_t *)invert, (uint64_t *)out};
  size_t ntasks = s->n * oh;
  if (s->n * oh * ow * s->kh * s->kw * j.cw * 8 < SERIAL_BYTES) {
    for (size_t t = 0; t < ntasks; t++) bpool_task(&j, t);
  } else {
    xk_parallel_for(ntasks, bpool_task, &j);
  }
  return XK_OK;
}

xk_status xk_bconcat(size_t rows, size_t k, const uint8_t *const *in, const size_t *c, uint8_t *out) {
  static const char op[] = "xk_bconcat";
  if (!in || !c || !out || k == 0) return xk_fail(XK_ERR_ARGUMENT, "%s: null argument or no inputs", op);
  size_t total = 0;
  for (size_t i = 0; i < k; i++) {
    if (!in[i] || c[i] == 0) return xk_fail(XK_ERR_ARGUMENT, "%s: input %zu is null or empty", op, i);
    total += c[i];
  }
  const size_t orw = xk_packed_row_bytes(total) / 8;
  uint64_t *o = (uint64_t *)out;
  for (size_t r = 0; r < rows; r++) {
    uint64_t *dst = o + r * orw;
    memset(dst, 0, orw * 8);
    size_t off = 0;
    for (size_t i = 0; i < k; i++) {
      const size_t iw = xk_div_up(c[i], 64);
      const uint8_t *src = in[i] + r * iw * 8;
      for (size_t w = 0; w < iw; w++) {
        uint64_t v;
        memcpy(&v, src + w * 8, 8);
        if (w + 1 == iw) v &= xk_tail_mask(c[i]);
        size_t pos = off + w * 64, q = pos / 64;
        unsigned sh = (unsigned)(pos % 64);
        dst[q] |= v << sh;
        if (sh && q + 1 < orw) dst[q + 1] |= v >> (64 - sh);
      }
      off += c[i];
    }
  }
  return XK_OK;
}

xk_status xk_bflatten(size_t n, size_t hw, size_t c, const uint8_t *in, uint8_t *out) {
  static const char op[] = "xk_bflatten";
  if (!in || !out || in == out) return xk_fail(XK_ERR_ARGUMENT, "%s: null or aliased buffers", op);
  if (n == 0 || hw == 0 || c == 0) return xk_fail(XK_ERR_SHAPE, "%s: empty tensor", op);
  if (((uintptr_t)in | (uintptr_t)out) % 8) return xk_fail(XK_ERR_ARGUMENT, "%s: buffers must be 8-byte aligned", op);
  const size_t iw = xk_div_up(c, 64), orw = xk_packed_row_bytes(hw * c) / 8;
  const uint64_t tail = xk_tail_mask(c);
  const uint64_t *src = (const uint64_t *)in;
  uint64_t *dst = (uint64_t *)out;
  for (size_t b = 0; b < n; b++, dst += orw) {
    memset(dst, 0, orw * 8);
    for (size_t p = 0; p < hw; p++)
      for (size_t w = 0; w < iw; w++) {
        uint64_t v = src[(b * hw + p) * iw + w];
        if (w + 1 == iw) v &= tail;
        size_t pos = p * c + w * 64, q = pos / 64;
        unsigned sh = (unsigned)(pos % 64);
        dst[q] |= v << sh;
        if (sh && q + 1 < orw) dst[q + 1] |= v >> (64 - sh);
      }
  }
  return XK_OK;
}
