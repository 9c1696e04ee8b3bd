/*
 * Int8 convolution and dense layers: per-tensor affine int8 activations, per-channel symmetric
 * int8 weights, exact int32 accumulation.
 *
 * The input is quantized on the fly while it is gathered (im2col tile or dense row):
 *   q = clamp(round_half_even(x * (1 / scale)) + zero_point, -128, 127)
 * and stored as a = q - zero_point in int16, so a padded tap (a real 0) is exactly a = 0 and the
 * accumulator needs no zero-point correction: acc = sum a * w. The micro-kernels multiply int16
 * pairs into int32 lanes (csrc/ukernels/qgemm). The output stage sees acc as an exact integer
 * (fold in_scale * w_scale[c] into xk_output.scale).
 *
 * Direct path (AVX2, C <= 4: the 3-channel stems): the input is quantized once into a zero-padded
 * int16 image and the micro-kernel reads each output pixel's window from it as int16 pairs
 * (xk_qconv_ukernel_avx2), no im2col. The reduction is split into segments of contiguous input
 * values (one kernel row of KW * C values; per tap C values with dilation), each padded to an
 * even length with a zero weight, so a pair never straddles two segments. The weights are packed
 * in that order (header aux[0] = the padded reduction length). Exact like the GEMM path.
 * XK_NO_DIRECT_CONV=1 (environment, read when packing) keeps the im2col layout (benchmarks, tests).
 */
#include <math.h>
#include <stdlib.h>

#include "../ukernels/fgemm/fgemm.h"
#include "ops_internal.h"

#define MT 48
#define GROUP 64
#define SERIAL_OPS ((size_t)1 << 17)
#define DIRECT_MAX_C 4

static const xk_qgemm_desc *qgemm_for(xk_isa isa) {
#ifdef XK_HAVE_AVX2
  if ((isa == XK_ISA_AVX2 || isa == XK_ISA_AVX512) && xk_isa_available(XK_ISA_AVX2)) return &xk_qgemm_avx2;
#endif
  (void)isa;
  return &xk_qgemm_scalar;
}

static const xk_qgemm_desc *qgemm_by_id(uint32_t isa) {
  if (isa == XK_ISA_SCALAR) return &xk_qgemm_scalar;
#ifdef XK_HAVE_AVX2
  if (isa == XK_ISA_AVX2 && xk_isa_available(XK_ISA_AVX2)) return &xk_qgemm_avx2;
#endif
  return NULL;
}


static xk_status quant_check(xk_quant q, const char *op) {
  if (!(q.scale > 0.0f) || !isfinite(q.scale))
    return xk_fail(XK_ERR_ARGUMENT, "%s: input scale %g must be positive and finite", op, (double)q.scale);
  if (q.zero_point < -128 || q.zero_point > 127)
    return xk_fail(XK_ERR_ARGUMENT, "%s: zero point %d outside [-128, 127]", op, (int)q.zero_point);
  return XK_OK;
}

/* round_half_even(x * inv) + zp clamped to [-128, 127], minus zp, computed in float (every
 * intermediate after the rounding is a small integer, so exact). Values are clamped to +-512
 * first (NaN to -512), then rounded with the 1.5 * 2^23 trick, which rounds half to even in the
 * default rounding mode (the library is built without -ffast-math and without FP contraction, so
 * the compiler keeps both additions). Branch-free selects, so the loops over it vectorize. */
static inline float quant_centered_f(float x, float inv, float zpf) {
  const float magic = 12582912.0f;
  float v = x * inv;
  v = v >= -512.0f ? v : -512.0f;
  v = v <= 512.0f ? v : 512.0f;
  v = (v + magic) - magic;
  v = v + zpf;
  v = v >= -128.0f ? v : -128.0f;
  v = v <= 127.0f ? v : 127.0f;
  return v - zpf;
}

static inline int16_t quant_centered(float x, float inv, int32_t zp) {
  return (int16_t)quant_centered_f(x, inv, (float)zp);
}

/* The whole input, into f (float) or h (int16). */
static void quantize_all(const float *x, size_t n, float inv, float zpf, float *f, int16_t *h) {
#ifdef XK_HAVE_AVX2
  if (xk_use_avx2()) {
    xk_quantize_centered_avx2(x, n, inv, zpf, f, h);
    return;
  }
#endif
  if (f) {
    for (size_t i = 0; i < n; i++) f[i] = quant_centered_f(x[i], inv, zpf);
  } else {
    for (size_t i = 0; i < n; i++) h[i] = (int16_t)quant_centered_f(x[i], inv, zpf);
  }
}

int8_t xk_quantize1(float x, xk_quant q) {
  return (int8_t)(quant_centered(x, 1.0f / q.scale, q.zero_point) + q.zero_point);
}

/* ------------------------------------------------------------------ weight panels */
static size_t kpad(size_t k) { return xk_round_up(k, 2); }

static size_t panel_bytes(const xk_qgemm_desc *d, size_t n, size_t k) {
  return XK_PACKED_HEADER + xk_div_up(n, d->nr) * kpad(k) * d->nr * sizeof(int16_t);
}

/* ------------------------------------------------------------------ direct path layout */
/* The padded reduction length of the direct layout for weights packed for d, or 0 (GEMM layout). */
static size_t direct_kq(const xk_qgemm_desc *d, const xk_conv_shape *s) {
#ifdef XK_HAVE_AVX2
  if (d != &xk_qgemm_avx2 || s->c > DIRECT_MAX_C || getenv("XK_NO_DIRECT_CONV")) return 0;
  xk_conv_segs g = xk_direct_segs(s, 0);
  return g.kh * g.kw * kpad(g.len);
#else
  (void)d, (void)s;
  return 0;
#endif
}

static size_t direct_panel_bytes(const xk_qgemm_desc *d, size_t n, size_t kq) {
  return XK_PACKED_HEADER + xk_div_up(n, d->nr) * kq * d->nr * sizeof(int16_t);
}

/* w: oc rows of K = kh*kw*c int8 in (ky, kx, c) order; reduction position (segment g, element e)
 * holds k = g * len + e, zero for the padding element e = len of an odd segment. */
static xk_status pack_direct(const xk_qgemm_desc *d, const xk_conv_shape *s, size_t kq, const int8_t *w, void *packed,
                             size_t packed_size, const char *op) {
  if (!w || !packed) return xk_fail(XK_ERR_ARGUMENT, "%s: null buffer", op);
  const size_t n = s->oc, k = s->kh * s->kw * s->c;
  if (k >= ((size_t)1 << 16)) return xk_fail(XK_ERR_SHAPE, "%s: reduction length %zu too long for int32 accumulators", op, k);
  size_t need = direct_panel_bytes(d, n, kq);
  if (packed_size < need) return xk_fail(XK_ERR_MEMORY, "%s: packed buffer %zu bytes < %zu needed", op, packed_size, need);
  uint8_t *p = (uint8_t *)packed;
  xk_packed_header h = {XK_MAGIC_QGEMM, (uint32_t)d->isa, n, k, {kq, 0, 0, 0, 0}};
  memcpy(p, &h, sizeof h);
  int16_t *panel = (int16_t *)(p + XK_PACKED_HEADER);
  const xk_conv_segs g = xk_direct_segs(s, 0);
  const size_t nr = d->nr, lenp = kpad(g.len);
  for (size_t blk = 0; blk < xk_div_up(n, nr); blk++) {
    int16_t *dst = panel + blk * kq * nr;
    for (size_t q = 0; q < kq; q++) {
      const size_t seg = q / lenp, e = q % lenp;
      for (size_t j = 0; j < nr; j++) {
        size_t col = blk * nr + j;
        dst[(q / 2) * 2 * nr + 2 * j + q % 2] = (col < n && e < g.len) ? (int16_t)w[col * k + seg * g.len + e] : 0;
      }
    }
  }
  return XK_OK;
}

static xk_status pack_panel(const xk_qgemm_desc *d, size_t n, size_t k, const int8_t *w, void *packed,
                            size_t packed_size, const char *op) {
  if (!w || !packed) return xk_fail(XK_ERR_ARGUMENT, "%s: null buffer", op);
  if (k >= ((size_t)1 << 16)) return xk_fail(XK_ERR_SHAPE, "%s: reduction length %zu too long for int32 accumulators", op, k);
  size_t need = panel_bytes(d, n, k);
  if (packed_size < need) return xk_fail(XK_ERR_MEMORY, "%s: packed buffer %zu bytes < %zu needed", op, packed_size, need);
  uint8_t *p = (uint8_t *)packed;
  xk_packed_header h = {XK_MAGIC_QGEMM, (uint32_t)d->isa, n, k, {0, 0, 0, 0, 0}};
  memcpy(p, &h, sizeof h);
  int16_t *panel = (int16_t *)(p + XK_PACKED_HEADER);
  const size_t nr = d->nr, kp = kpad(k);
  for (size_t blk = 0; blk < xk_div_up(n, nr); blk++) {
    int16_t *dst = panel + blk * kp * nr;
    for (size_t q = 0; q < kp; q++)
      for (size_t j = 0; j < nr; j++) {
        size_t col = blk * nr + j;
        dst[(q / 2) * 2 * nr + 2 * j + q % 2] = (col < n && q < k) ? (int16_t)w[col * k + q] : 0;
      }
  }
  return XK_OK;
}

static xk_status open_panel(const void *packed, size_t packed_size, size_t n, size_t k, const xk_qgemm_desc **d,
                            size_t *kq, const char *op) {
  if (!packed || packed_size < XK_PACKED_HEADER) return xk_fail(XK_ERR_ARGUMENT, "%s: packed weights missing", op);
  xk_packed_header h;
  memcpy(&h, packed, sizeof h);
  if (h.magic != XK_MAGIC_QGEMM) return xk_fail(XK_ERR_ARGUMENT, "%s: buffer was not packed by this op (bad magic)", op);
  *d = qgemm_by_id(h.isa);
  if (!*d) return xk_fail(XK_ERR_UNSUPPORTED, "%s: weights packed for ISA %s, not available here", op, xk_isa_name((xk_isa)h.isa));
  *kq = (size_t)h.aux[0];
  if (h.aux[0]) { /* direct layout */
    if (h.aux[0] < k) return xk_fail(XK_ERR_ARGUMENT, "%s: corrupt packed header", op);
    return xk_packed_check(packed, packed_size, XK_MAGIC_QGEMM, n, k, direct_panel_bytes(*d, n, h.aux[0]), op);
  }
  return xk_packed_check(packed, packed_size, XK_MAGIC_QGEMM, n, k, panel_bytes(*d, n, k), op);
}

/* ------------------------------------------------------------------ GEMM driver */
typedef struct qjob {
  const xk_qgemm_desc *d;
  size_t m, n, k, kp, ngroups;
  const float *in;
  size_t ldx;
  const int16_t *qin;     /* conv: the whole input quantized once (q - zp) */
  const xk_conv_shape *s; /* NULL: dense rows */
  size_t oh, ow;
  float inv;
  int32_t zp;
  int16_t *ws;
  size_t slot_elems, ntiles;
  size_t *slot_tile; /* per worker: the tile in its slot (xk_tile_workers) */
  const int16_t *panel;
  const xk_output *o;
  uint8_t *c;
  size_t ldc;
  int vnni; /* AVX-512 VNNI: two panel blocks per micro-kernel call (qgemm-avx512.c) */
} qjob;

/* Rows [row0, row0 + mr) x channels [col0, col0 + ncols) of exact int32 accumulators through the
 * output stage (int32 as is, else as float through xk_output_store_f32). */
static void store_rows(const xk_output *o, const int32_t (*q)[GROUP], size_t mr, size_t row0, size_t col0,
                       size_t ncols, uint8_t *c, size_t ldc) {
  float f[GROUP];
  if (o->kind == XK_OUT_FLOAT &&
      xk_stage_rows(o, col0, ncols, mr, &q[0][0], NULL, GROUP, (float *)c + row0 * ldc + col0, ldc))
    return; /* the common stages, one pass per row */
  for (size_t r = 0; r < mr; r++) {
    if (o->kind == XK_OUT_INT32) {
      memcpy((int32_t *)c + (row0 + r) * ldc + col0, q[r], ncols * sizeof(int32_t));
    } else {
      for (size_t cc = 0; cc < ncols; cc++) f[cc] = (float)q[r][cc];
      xk_output_store_f32(o, f, col0, ncols, c, ldc, row0 + r);
    }
  }
}

static void gemm_rows(const qjob *j, const int16_t *a, size_t r0, size_t rows, size_t g0, size_t gs) {
  const xk_qgemm_desc *d = j->d;
  int32_t q[XK_FGEMM_MAX_MR][GROUP];
  for (size_t g = g0; g < j->ngroups; g += gs) {
    size_t col0 = g * GROUP, ncols = j->n - col0 < GROUP ? j->n - col0 : GROUP;
    for (size_t i = 0; i < rows; i += d->mr) {
      size_t mr = rows - i < d->mr ? rows - i : d->mr;
      for (size_t c = 0; c < ncols; c += d->nr) {
        const int16_t *blk = j->panel + ((col0 + c) / d->nr) * j->kp * d->nr;
#ifdef XK_HAVE_AVX512
        if (j->vnni && c + d->nr < ncols) { /* two blocks in one call (the second may be partial) */
          xk_qgemm_ukernel2_avx512(mr, j->kp, a + i * j->kp, j->kp, blk, j->kp * d->nr, &q[0][c], GROUP);
          c += d->nr;
          continue;
        }
#endif
        d->ukernel(mr, j->kp, a + i * j->kp, j->kp, blk, &q[0][c], GROUP);
      }
      store_rows(j->o, (const int32_t(*)[GROUP])q, mr, r0 + i, col0, ncols, j->c, j->ldc);
    }
  }
}

static void gather(const qjob *j, size_t r0, size_t rows, int16_t *dst) {
  const float inv = j->inv;
  const int32_t zp = j->zp;
  if (!j->s) { /* dense rows */
    for (size_t r = r0; r < r0 + rows; r++, dst += j->kp) {
      const float *x = j->in + r * j->ldx;
      for (size_t i = 0; i < j->k; i++) dst[i] = quant_centered(x[i], inv, zp);
      if (j->kp > j->k) dst[j->k] = 0;
    }
    return;
  }
  const xk_conv_shape *s = j->s;
  const size_t c = s->c, oh = j->oh, ow = j->ow;
  const long dh = (long)xk_dil(s->dil_h), dw = (long)xk_dil(s->dil_w);
  for (size_t r = r0; r < r0 + rows; r++) {
    size_t b = r / (oh * ow), pix = r % (oh * ow), oy = pix / ow, ox = pix % ow;
    long iy0 = (long)(oy * s->stride_h) - (long)s->pad_t, ix0 = (long)(ox * s->stride_w) - (long)s->pad_l;
    int16_t *row = dst + (r - r0) * j->kp, *d = row;
    const int row_inside = dw == 1 && ix0 >= 0 && ix0 + (long)s->kw <= (long)s->w;
    for (size_t ky = 0; ky < s->kh; ky++) {
      long iy = iy0 + (long)ky * dh;
      if (row_inside && iy >= 0 && iy < (long)s->h) { /* the KW taps are contiguous in NHWC */
        memcpy(d, j->qin + ((b * s->h + (size_t)iy) * s->w + (size_t)ix0) * c, s->kw * c * sizeof(int16_t));
        d += s->kw * c;
        continue;
      }
      for (size_t kx = 0; kx < s->kw; kx++, d += c) {
        long ix = ix0 + (long)kx * dw;
        if (iy < 0 || iy >= (long)s->h || ix < 0 || ix >= (long)s->w) {
          for (size_t i = 0; i < c; i++) d[i] = 0;
        } else {
          memcpy(d, j->qin + ((b * s->h + (size_t)iy) * s->w + (size_t)ix) * c, c * sizeof(int16_t));
        }
      }
    }
    if (j->kp > j->k) row[j->k] = 0;
  }
}

/* Task t: column group t % ngroups of tile t / ngroups, in the slot of the worker running it
 * (xk_tile_workers). Row tiles and column groups both split the work: a few rows (the 7x7 and
 * 14x14 layers, dense rows) spread over threads by columns. */
static void tiled_task(void *ctx, size_t t) {
  const qjob *j = (const qjob *)ctx;
  const size_t w = xk_worker(), tile = t / j->ngroups, g = t % j->ngroups;
  const size_t r0 = tile * MT, rows = j->m - r0 < MT ? j->m - r0 : MT;
  int16_t *slot = j->ws + w * j->slot_elems;
  if (j->slot_tile[w] != tile) {
    gather(j, r0, rows, slot);
    j->slot_tile[w] = tile;
  }
  gemm_rows(j, slot, r0, rows, g, j->ngroups);
}

static size_t slot_bytes(size_t k) { return xk_align_up(MT * kpad(k) * sizeof(int16_t)); }

static xk_status run(qjob *j, void *ws, size_t ws_size, const char *op) {
  size_t sb = slot_bytes(j->k);
  if (!ws || ws_size < sb) return xk_fail(XK_ERR_MEMORY, "%s: workspace %zu bytes < %zu needed (one slot)", op, ws_size, sb);
  if (((uintptr_t)ws) % 4) return xk_fail(XK_ERR_ARGUMENT, "%s: workspace must be 4-byte aligned", op);
  j->ws = (int16_t *)ws;
  j->slot_elems = sb / sizeof(int16_t);
  j->ntiles = xk_div_up(j->m, MT);
  j->ngroups = xk_div_up(j->n, GROUP);
  size_t slot_tile[XK_MAX_THREADS];
  const size_t nworkers = xk_tile_workers(ws_size, sb, j->m * j->n * j->k < SERIAL_OPS, slot_tile);
  j->slot_tile = slot_tile;
  xk_parallel_run(j->ntiles * j->ngroups, nworkers, tiled_task, j); /* small tasks: see threadpool.c */
  return XK_OK;
}

/* ------------------------------------------------------------------ direct path (AVX2, C <= 4) */
/* The centred quantized input, zero-padded: [n][pad_t + h + pad_b][pad_l + w + pad_r][c] int16 and
 * a few zero elements past the end (read with a zero weight by the last pair of an odd segment). */
#define XQPAD_SLACK 8
static size_t xqpad_bytes(const xk_conv_shape *s) {
  return xk_align_up((s->n * (s->pad_t + s->h + s->pad_b) * (s->pad_l + s->w + s->pad_r) * s->c + XQPAD_SLACK) *
                     sizeof(int16_t));
}

typedef struct qdjob {
  const xk_conv_shape *s;
  size_t m, n, k, kq, ngroups, oh, ow, hp, wp, ntiles;
  xk_conv_segs segs;
  const int16_t *xpad, *panel;
  const xk_output *o;
  uint8_t *c;
  size_t ldc;
  int vnni; /* AVX-512 VNNI: two panel blocks per micro-kernel call */
} qdjob;

#ifdef XK_HAVE_AVX2
static void qdirect_tile(const qdjob *j, size_t r0, size_t rows) {
  const xk_conv_shape *s = j->s;
  const size_t nr = xk_qgemm_avx2.nr;
  const int16_t *px[MT];
  size_t off[MT];
  xk_window_offsets(s, j->oh, j->ow, j->hp, j->wp, r0, rows, off);
  for (size_t i = 0; i < rows; i++) px[i] = j->xpad + off[i];
  int32_t q[XK_CONV_MR][GROUP];
  for (size_t g = 0; g < j->ngroups; g++) {
    const size_t col0 = g * GROUP, ncols = j->n - col0 < GROUP ? j->n - col0 : GROUP;
    for (size_t i = 0; i < rows; i += XK_CONV_MR) {
      const size_t mr = rows - i < XK_CONV_MR ? rows - i : XK_CONV_MR;
      for (size_t cc = 0; cc < ncols; cc += nr) {
        const int16_t *blk = j->panel + ((col0 + cc) / nr) * j->kq * nr;
#ifdef XK_HAVE_AVX512
        if (j->vnni && cc + nr < ncols) {
          xk_qconv_ukernel2_avx512(mr, px + i, &j->segs, blk, j->kq * nr, &q[0][cc], GROUP);
          cc += nr;
          continue;
        }
#endif
        xk_qconv_ukernel_avx2(mr, px + i, &j->segs, blk, &q[0][cc], GROUP);
      }
      store_rows(j->o, (const int32_t(*)[GROUP])q, mr, r0 + i, col0, ncols, j->c, j->ldc);
    }
  }
}

static void qdirect_task(void *ctx, size_t t) {
  const qdjob *j = (const qdjob *)ctx;
  const size_t r0 = t * MT;
  qdirect_tile(j, r0, j->m - r0 < MT ? j->m - r0 : MT);
}
#endif

static xk_status run_qdirect(const xk_conv_shape *s, const xk_qgemm_desc *d, size_t kq, const void *packed,
                             const float *in, xk_quant q, const xk_output *o, void *out, size_t ldc, void *ws,
                             size_t ws_size, size_t oh, size_t ow, const char *op) {
#ifdef XK_HAVE_AVX2
  const xk_conv_segs g0 = xk_direct_segs(s, s->pad_l + s->w + s->pad_r);
  if (d != &xk_qgemm_avx2 || s->c > DIRECT_MAX_C || kq != g0.kh * g0.kw * kpad(g0.len))
    return xk_fail(XK_ERR_ARGUMENT, "%s: weights packed for a direct convolution of another shape", op);
  size_t need = xqpad_bytes(s);
  if (!ws || ws_size < need) return xk_fail(XK_ERR_MEMORY, "%s: workspace %zu bytes < %zu needed", op, ws_size, need);
  if (((uintptr_t)ws) % 4) return xk_fail(XK_ERR_ARGUMENT, "%s: workspace must be 4-byte aligned", op);
  qdjob j;
  memset(&j, 0, sizeof j);
  j.s = s;
  j.oh = oh;
  j.ow = ow;
  j.m = s->n * oh * ow;
  j.n = s->oc;
  j.k = s->kh * s->kw * s->c;
  j.kq = kq;
  j.ngroups = xk_div_up(s->oc, GROUP);
  j.hp = s->pad_t + s->h + s->pad_b;
  j.wp = s->pad_l + s->w + s->pad_r;
  j.segs = g0;
  j.panel = (const int16_t *)((const uint8_t *)packed + XK_PACKED_HEADER);
#ifdef XK_HAVE_AVX2
  j.vnni = xk_use_avx512_vnni();
#endif
  j.o = o;
  j.c = (uint8_t *)out;
  j.ldc = ldc;
  /* quantize into the padded image */
  int16_t *xp = (int16_t *)ws;
  const float inv = 1.0f / q.scale, zpf = (float)q.zero_point;
  const size_t c = s->c, rowe = j.wp * c;
  for (size_t b = 0; b < s->n; b++) {
    int16_t *img = xp + b * j.hp * rowe;
    memset(img, 0, s->pad_t * rowe * sizeof(int16_t));
    for (size_t y = 0; y < s->h; y++) {
      int16_t *row = img + (s->pad_t + y) * rowe;
      memset(row, 0, s->pad_l * c * sizeof(int16_t));
      quantize_all(in + (b * s->h + y) * s->w * c, s->w * c, inv, zpf, NULL, row + s->pad_l * c);
      memset(row + (s->pad_l + s->w) * c, 0, s->pad_r * c * sizeof(int16_t));
    }
    memset(img + (s->pad_t + s->h) * rowe, 0, s->pad_b * rowe * sizeof(int16_t));
  }
  memset(xp + s->n * j.hp * rowe, 0, XQPAD_SLACK * sizeof(int16_t));
  j.xpad = xp;
  j.ntiles = xk_div_up(j.m, MT);
  /* one tile per task (see threadpool.c) */
  xk_parallel_run(j.ntiles, j.m * j.n * j.k < SERIAL_OPS ? 1 : SIZE_MAX, qdirect_task, &j);
  return XK_OK;
#else
  (void)s, (void)d, (void)kq, (void)packed, (void)in, (void)q, (void)o, (void)out, (void)ldc, (void)ws, (void)ws_size;
  (void)oh, (void)ow;
  return xk_fail(XK_ERR_UNSUPPORTED, "%s: direct-layout weights need AVX2", op);
#endif
}

/* ------------------------------------------------------------------ conv2d */
size_t xk_qconv2d_packed_size(const xk_conv_shape *s) {
  if (xk_conv_check(s, "xk_qconv2d_packed_size", NULL, NULL) != XK_OK) return 0;
  const xk_qgemm_desc *d = qgemm_for(xk_get_isa());
  const size_t kq = direct_kq(d, s);
  if (kq) return direct_panel_bytes(d, s->oc, kq);
  return panel_bytes(d, s->oc, s->kh * s->kw * s->c);
}

xk_status xk_qconv2d_pack(const xk_conv_shape *s, const int8_t *w, void *packed, size_t packed_size) {
  xk_status st = xk_conv_check(s, "xk_qconv2d_pack", NULL, NULL);
  if (st != XK_OK) return st;
  const xk_qgemm_desc *d = qgemm_for(xk_get_isa());
  const size_t kq = direct_kq(d, s);
  if (kq) return pack_direct(d, s, kq, w, packed, packed_size, "xk_qconv2d_pack");
  return pack_panel(d, s->oc, s->kh * s->kw * s->c, w, packed, packed_size, "xk_qconv2d_pack");
}

static size_t qin_bytes(const xk_conv_shape *s) { return xk_align_up(s->n * s->h * s->w * s->c * sizeof(int16_t)); }

size_t xk_qconv2d_workspace_size(const xk_conv_shape *s, size_t nslots) {
  if (xk_conv_check(s, "xk_qconv2d_workspace_size", NULL, NULL) != XK_OK) return 0;
  size_t gemm = qin_bytes(s) + (nslots ? nslots : 1) * slot_bytes(s->kh * s->kw * s->c);
  if (s->c <= DIRECT_MAX_C && xqpad_bytes(s) > gemm) return xqpad_bytes(s); /* direct path */
  return gemm;
}

static xk_status common_checks(const void *in, const void *out, const xk_output *o, size_t n, size_t ldc, xk_quant q,
                               const char *op) {
  if (!in || !out) return xk_fail(XK_ERR_ARGUMENT, "%s: null input or output", op);
  xk_status st = quant_check(q, op);
  if (st != XK_OK) return st;
  if ((st = xk_output_check(o, n, ldc, 0, op)) != XK_OK) return st;
  return XK_OK;
}

xk_status xk_qconv2d_run(const xk_conv_shape *s, const void *packed, size_t packed_size, const float *in,
                         xk_quant q, const xk_output *o, void *out, size_t ldc, void *ws, size_t ws_size) {
  static const char op[] = "xk_qconv2d";
  size_t oh, ow;
  xk_status st = xk_conv_check(s, op, &oh, &ow);
  if (st != XK_OK) return st;
  qjob j;
  memset(&j, 0, sizeof j);
  j.k = s->kh * s->kw * s->c;
  j.kp = kpad(j.k);
  size_t kq;
  if ((st = open_panel(packed, packed_size, s->oc, j.k, &j.d, &kq, op)) != XK_OK) return st;
  if ((st = common_checks(in, out, o, s->oc, ldc, q, op)) != XK_OK) return st;
  if (kq) return run_qdirect(s, j.d, kq, packed, in, q, o, out, ldc, ws, ws_size, oh, ow, op);
  j.m = s->n * oh * ow;
  j.n = s->oc;
  j.in = in;
  j.s = s;
  j.oh = oh;
  j.ow = ow;
  j.inv = 1.0f / q.scale;
  j.zp = q.zero_point;
  j.panel = (const int16_t *)((const uint8_t *)packed + XK_PACKED_HEADER);
#ifdef XK_HAVE_AVX2
  j.vnni = j.d == &xk_qgemm_avx2 && xk_use_avx512_vnni();
#endif
  j.o = o;
  j.c = (uint8_t *)out;
  j.ldc = ldc;
  size_t qb = qin_bytes(s);
  if (!ws || ws_size < qb) return xk_fail(XK_ERR_MEMORY, "%s: workspace %zu bytes < %zu needed", op, ws_size, qb);
  if (((uintptr_t)ws) % 4) return xk_fail(XK_ERR_ARGUMENT, "%s: workspace must be 4-byte aligned", op);
  int16_t *qin = (int16_t *)ws;
  const size_t count = s->n * s->h * s->w * s->c;
  quantize_all(in, count, j.inv, (float)j.zp, NULL, qin);
  j.qin = qin;
  return run(&j, (uint8_t *)ws + qb, ws_size - qb, op);
}

/* ------------------------------------------------------------------ dense */
size_t xk_qdense_packed_size(size_t k, size_t n_out) {
  if (k == 0 || n_out == 0) return 0;
  return panel_bytes(qgemm_for(xk_get_isa()), n_out, k);
}

xk_status xk_qdense_pack(size_t k, size_t n_out, const int8_t *w, void *packed, size_t packed_size) {
  if (k == 0 || n_out == 0) return xk_fail(XK_ERR_SHAPE, "xk_qdense_pack: empty weights (k=%zu, n=%zu)", k, n_out);
  return pack_panel(qgemm_for(xk_get_isa()), n_out, k, w, packed, packed_size, "xk_qdense_pack");
}

size_t xk_qdense_workspace_size(size_t n, size_t k) {
  (void)n;
  return slot_bytes(k) * (size_t)1;
}

xk_status xk_qdense_run(size_t n, size_t k, size_t n_out, const void *packed, size_t packed_size, const float *in,
                        xk_quant q, const xk_output *o, void *out, size_t ldc, void *ws, size_t ws_size) {
  static const char op[] = "xk_qdense";
  if (n == 0 || k == 0 || n_out == 0) return xk_fail(XK_ERR_SHAPE, "%s: empty problem (n=%zu, k=%zu, out=%zu)", op, n, k, n_out);
  qjob j;
  memset(&j, 0, sizeof j);
  j.k = k;
  j.kp = kpad(k);
  size_t kq;
  xk_status st = open_panel(packed, packed_size, n_out, k, &j.d, &kq, op);
  if (st != XK_OK) return st;
  if (kq) return xk_fail(XK_ERR_ARGUMENT, "%s: weights packed for a direct convolution", op);
  if ((st = common_checks(in, out, o, n_out, ldc, q, op)) != XK_OK) return st;
  j.m = n;
  j.n = n_out;
  j.in = in;
  j.ldx = k;
  j.inv = 1.0f / q.scale;
  j.zp = q.zero_point;
  j.panel = (const int16_t *)((const uint8_t *)packed + XK_PACKED_HEADER);
#ifdef XK_HAVE_AVX2
  j.vnni = j.d == &xk_qgemm_avx2 && xk_use_avx512_vnni();
#endif
  j.o = o;
  j.c = (uint8_t *)out;
  j.ldc = ldc;
  return run(&j, ws, ws_size, op);
}

/* ------------------------------------------------------------------ depthwise conv2d */
/* Accumulated exactly in int32 and converted to float32 once, which is exact: the sum is an
 * integer of magnitude <= KH*KW * 255 * 128 < 2^24 (checked). */
/* The depthwise op keeps the centred quantized input (q - zp) as float: exact small integers. */
static size_t qdw_in_bytes(const xk_conv_shape *s) { return xk_align_up(s->n * s->h * s->w * s->c * sizeof(float)); }
/* ... followed by the weights as float (exact), so the AVX2 rows load them without converting */
static size_t qdw_w_bytes(const xk_conv_shape *s) { return xk_align_up(s->kh * s->kw * s->oc * sizeof(float)); }

size_t xk_qdwconv2d_workspace_size(const xk_conv_shape *s) {
  if (xk_conv_check(s, "xk_qdwconv2d_workspace_size", NULL, NULL) != XK_OK) return 0;
  return qdw_in_bytes(s) + qdw_w_bytes(s);
}

typedef struct qdwjob {
  const xk_conv_shape *s;
  size_t oh, ow, mult;
  const int8_t *w;
  const float *wf; /* w as float */
  const float *qin;
  const xk_output *o;
  float *out;
  size_t ldc;
  int avx2;
} qdwjob;

/* One output row (b, oy): blocks of QDWB channels accumulated in float (exact: integers below
 * 2^24), taps in (ky, kx) order; the output stage runs once over the whole row. */
#define QDWB 16
static void qdw_task(void *ctx, size_t t) {
  const qdwjob *j = (const qdwjob *)ctx;
  const xk_conv_shape *s = j->s;
  const size_t oc = s->oc, c = s->c, m = j->mult, b = t / j->oh, oy = t % j->oh;
  const long dh = (long)xk_dil(s->dil_h), dw = (long)xk_dil(s->dil_w);
  const long iy0 = (long)(oy * s->stride_h) - (long)s->pad_t;
  float *yrow = j->out + (b * j->oh + oy) * j->ow * j->ldc;
#ifdef XK_HAVE_AVX2
  if (j->avx2 && m == 1) {
    xk_dw_row r = {j->qin + b * s->h * s->w * c, s->h, s->w, c, j->wf, s->kh, s->kw, s->stride_w,
                   (size_t)dh, (size_t)dw, iy0, (long)s->pad_l, j->ow, yrow, j->ldc};
    xk_dw_row_avx2(&r);
    xk_output_apply_rows(j->o, yrow, j->ow, j->ldc, 0, oc);
    return;
  }
#endif
  for (size_t ox = 0; ox < j->ow; ox++) {
    const long ix0 = (long)(ox * s->stride_w) - (long)s->pad_l;
    float *y = yrow + ox * j->ldc;
    for (size_t c0 = 0; c0 < oc; c0 += QDWB) {
      const size_t nb = oc - c0 < QDWB ? oc - c0 : QDWB;
      float acc[QDWB] = {0};
      for (size_t ky = 0; ky < s->kh; ky++) {
        const long iy = iy0 + (long)ky * dh;
        if (iy < 0 || iy >= (long)s->h) continue;
        const float *xr = j->qin + (b * s->h + (size_t)iy) * s->w * c;
        for (size_t kx = 0; kx < s->kw; kx++) {
          const long ix = ix0 + (long)kx * dw;
          if (ix < 0 || ix >= (long)s->w) continue;
          const float *x = xr + (size_t)ix * c;
          const int8_t *wt = j->w + (ky * s->kw + kx) * oc + c0;
          if (m == 1 && nb == QDWB) {
            for (size_t q = 0; q < QDWB; q++) acc[q] += x[c0 + q] * (float)wt[q];
          } else if (m == 1) {
            for (size_t q = 0; q < nb; q++) acc[q] += x[c0 + q] * (float)wt[q];
          } else {
            for (size_t q = 0; q < nb; q++) acc[q] += x[(c0 + q) / m] * (float)wt[q];
          }
        }
      }
      memcpy(y + c0, acc, nb * sizeof(float));
    }
  }
  xk_output_apply_rows(j->o, yrow, j->ow, j->ldc, 0, oc);
}

xk_status xk_qdwconv2d_run(const xk_conv_shape *s, const int8_t *w, const float *in, xk_quant q, const xk_output *o,
                           float *out, size_t ldc, void *ws, size_t ws_size) {
  static const char op[] = "xk_qdwconv2d";
  size_t oh, ow;
  xk_status st = xk_conv_check(s, op, &oh, &ow);
  if (st != XK_OK) return st;
  if (s->oc % s->c) return xk_fail(XK_ERR_SHAPE, "%s: output channels %zu not a multiple of input channels %zu", op, s->oc, s->c);
  if (s->kh * s->kw > 513) return xk_fail(XK_ERR_SHAPE, "%s: %zux%zu kernel too large for exact accumulation", op, s->kh, s->kw);
  if (!w) return xk_fail(XK_ERR_ARGUMENT, "%s: null weights", op);
  if ((st = common_checks(in, out, o, s->oc, ldc, q, op)) != XK_OK) return st;
  if (o->kind != XK_OUT_FLOAT) return xk_fail(XK_ERR_ARGUMENT, "%s: only float output is supported", op);
  size_t qb = qdw_in_bytes(s), need = qb + qdw_w_bytes(s);
  if (!ws || ws_size < need) return xk_fail(XK_ERR_MEMORY, "%s: workspace %zu bytes < %zu needed", op, ws_size, need);
  if (((uintptr_t)ws) % 4) return xk_fail(XK_ERR_ARGUMENT, "%s: workspace must be 4-byte aligned", op);
  float *qin = (float *)ws, *wf = (float *)((uint8_t *)ws + qb);
  for (size_t i = 0; i < s->kh * s->kw * s->oc; i++) wf[i] = (float)w[i];
  const float inv = 1.0f / q.scale;
  const size_t count = s->n * s->h * s->w * s->c;
  const float zpf = (float)q.zero_point;
  quantize_all(in, count, inv, zpf, qin, NULL);
  qdwjob j = {s, oh, ow, s->oc / s->c, w, wf, qin, o, out, ldc, xk_use_avx2()};
  size_t ntasks = s->n * oh;
  if (s->n * oh * ow * s->oc * s->kh * s->kw < SERIAL_OPS) {
    for (size_t t = 0; t < ntasks; t++) qdw_task(&j, t);
  } else {
    xk_parallel_for(ntasks, qdw_task, &j);
  }
  return XK_OK;
}
