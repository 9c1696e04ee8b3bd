/*
 * Float convolution, depthwise convolution and dense layers.
 *
 * conv2d: im2col + a register-blocked GEMM micro-kernel (csrc/ukernels/fgemm); the weights are
 * packed once into NR-column panels ([K][NR] floats per block). im2col is done one tile of MT
 * output pixels at a time into a per-slot workspace (one slot per thread that may run), so the
 * column matrix never exists whole and stays in cache; 1x1 stride-1 unpadded convolutions and
 * dense layers read their input directly. The output stage (xk_output) is fused per tile.
 *
 * Direct path (AVX2, C <= 4: the 3-channel stems): no im2col for the output pixels whose window
 * lies inside the image; the micro-kernel reads them straight from the NHWC input, kernel row
 * by kernel row (xk_fconv_ukernel_avx2), one run of interior pixels per output row.
 * Pixels whose window crosses the padding (the first / last rows and columns) take the im2col
 * path. Same weights panel and FMA order, so the results equal the im2col path bit for bit.
 * XK_NO_DIRECT_CONV=1 (environment) selects the im2col path everywhere (benchmarks, tests).
 */
#include <stdlib.h>

#include "../ukernels/fgemm/fgemm.h"
#include "ops_internal.h"

#define MT 48     /* output pixels per im2col tile (a multiple of every MR) */
#define GROUP 64  /* output channels per epilogue group */
#define SERIAL_FLOPS ((size_t)1 << 17)
#define DIRECT_MAX_C 4     /* direct path for input channel counts up to this */

static const xk_fgemm_desc *fgemm_for(xk_isa isa) {
#ifdef XK_HAVE_AVX2
  if ((isa == XK_ISA_AVX2 || isa == XK_ISA_AVX512) && xk_isa_available(XK_ISA_AVX2)) return &xk_fgemm_avx2;
#endif
  (void)isa;
  return &xk_fgemm_scalar;
}

static const xk_fgemm_desc *fgemm_by_id(uint32_t isa) {
  if (isa == XK_ISA_SCALAR) return &xk_fgemm_scalar;
#ifdef XK_HAVE_AVX2
  if (isa == XK_ISA_AVX2 && xk_isa_available(XK_ISA_AVX2)) return &xk_fgemm_avx2;
#endif
  return NULL;
}

/* ------------------------------------------------------------------ weight panels */
static size_t panel_bytes(const xk_fgemm_desc *d, size_t n, size_t k) {
  return XK_PACKED_HEADER + xk_div_up(n, d->nr) * k * d->nr * sizeof(float);
}

/* w: n rows of k floats (stride k). */
static xk_status pack_panel(const xk_fgemm_desc *d, size_t n, size_t k, const float *w, void *packed,
                            size_t packed_size, const char *op) {
  if (!w || !packed) return xk_fail(XK_ERR_ARGUMENT, "%s: null buffer", op);
  size_t need = panel_bytes(d, n, k);
  if (packed_size < need) return xk_fail(XK_ERR_MEMORY, "%s: packed buffer %zu bytes < %zu needed", op, packed_size, need);
  uint8_t *p = (uint8_t *)packed;
  xk_packed_header h = {XK_MAGIC_FGEMM, (uint32_t)d->isa, n, k, {0, 0, 0, 0, 0}};
  memcpy(p, &h, sizeof h);
  float *panel = (float *)(p + XK_PACKED_HEADER);
  const size_t nr = d->nr;
  for (size_t blk = 0; blk < xk_div_up(n, nr); blk++) {
    float *dst = panel + blk * k * nr;
    for (size_t q = 0; q < k; q++)
      for (size_t j = 0; j < nr; j++) {
        size_t col = blk * nr + j;
        dst[q * nr + j] = col < n ? w[col * k + q] : 0.0f;
      }
  }
  return XK_OK;
}

static xk_status open_panel(const void *packed, size_t packed_size, size_t n, size_t k, const xk_fgemm_desc **d,
                            const char *op) {
  if (!packed || packed_size < XK_PACKED_HEADER) return xk_fail(XK_ERR_ARGUMENT, "%s: packed weights missing", op);
  xk_packed_header h;
  memcpy(&h, packed, sizeof h);
  if (h.magic != XK_MAGIC_FGEMM) return xk_fail(XK_ERR_ARGUMENT, "%s: buffer was not packed by this op (bad magic)", op);
  *d = fgemm_by_id(h.isa);
  if (!*d) return xk_fail(XK_ERR_UNSUPPORTED, "%s: weights packed for ISA %s, not available here", op, xk_isa_name((xk_isa)h.isa));
  return xk_packed_check(packed, packed_size, XK_MAGIC_FGEMM, n, k, panel_bytes(*d, n, k), op);
}

/* ------------------------------------------------------------------ GEMM driver */
typedef struct fjob {
  const xk_fgemm_desc *d;
  size_t m, n, k, ngroups;
  const float *a; /* direct input, or NULL: im2col tiles of `in` */
  size_t lda;
  const float *in;
  const xk_conv_shape *s;
  size_t oh, ow;
  float *ws;
  size_t slot_floats, ntiles, mtiles;
  size_t *slot_tile; /* per worker: the tile in its slot (xk_tile_workers) */
  const float *panel;
  const xk_output *o;
  uint8_t *c;
  size_t ldc;
  xk_conv_segs segs;  /* direct path: the reduction as segments of the padded input */
  const float *xpad;  /* direct path: the zero-padded input, [n][hp][wp][c] */
  size_t hp, wp;
  int avx512;         /* AVX-512 selected: two panel blocks per micro-kernel call (fgemm-avx512.c) */
} fjob;

#ifdef XK_HAVE_AVX2
/* The output stage of columns [col, col + NR) as the AVX2 micro-kernels apply it before their
 * store (fgemm.h xk_fstage): float or bits output (bits: the sign of the staged value, packed
 * after the kernel) with no activation or ReLU; 0 for other stages. */
static int fused_stage(const xk_output *o, size_t col, xk_fstage *st) {
  if ((o->kind != XK_OUT_FLOAT && o->kind != XK_OUT_BITS) || (o->act.kind != XK_ACT_NONE && o->act.kind != XK_ACT_RELU))
    return 0;
  st->sc = o->scale ? o->scale + col : NULL;
  st->bi = o->bias ? o->bias + col : NULL;
  st->ps = o->post_scale ? o->post_scale + col : NULL;
  st->pb = o->post_bias ? o->post_bias + col : NULL;
  st->relu = o->act.kind == XK_ACT_RELU;
  return 1;
}

/* AVX2: mr rows of A (stride lda) x the columns [col0, col0 + ncols) (whole NR blocks of the
 * panel, zero past n) into dst (stride ldd): one row through the 1 x 64 kernel, 4 blocks per
 * call, else the 6 x 16 tile per block; with the stage of those columns when `stage`. */
static void avx2_tile(const fjob *j, const float *a, size_t lda, size_t mr, size_t col0, size_t ncols, float *dst,
                      size_t ldd, int stage) {
  const size_t nr = j->d->nr;
  xk_fstage st[4];
  if (mr == 1) {
    for (size_t c = 0; c < ncols; c += 4 * nr) {
      const size_t nblk = xk_div_up(ncols - c < 4 * nr ? ncols - c : 4 * nr, nr);
      for (size_t b = 0; stage && b < nblk; b++) fused_stage(j->o, col0 + c + b * nr, &st[b]);
      xk_fgemv_ukernel_avx2(j->k, a, j->panel + ((col0 + c) / nr) * j->k * nr, nblk, dst + c, stage ? st : NULL);
    }
    return;
  }
  for (size_t c = 0; c < ncols; c += nr) {
    if (stage) fused_stage(j->o, col0 + c, &st[0]);
#ifdef XK_HAVE_AVX512
    if (j->avx512 && c + nr < ncols) { /* two blocks in one call (the second may be partial) */
      xk_fgemm_ukernel2_stage_avx512(mr, j->k, a, lda, j->panel + ((col0 + c) / nr) * j->k * nr, j->k * nr, dst + c,
                                     ldd, stage ? st : NULL);
      c += nr;
      continue;
    }
#endif
    xk_fgemm_ukernel_stage_avx2(mr, j->k, a, lda, j->panel + ((col0 + c) / nr) * j->k * nr, dst + c, ldd,
                                stage ? st : NULL);
  }
}
#endif

/* A fused residual add (xk_output.residual, conv2d only): rows [row0, row0 + mr) of the output,
 * columns [col0, col0 + ncols), y = stage(q) + residual, the stage applied here unless `staged`.
 * The tile is complete in q before the output is written, so the output may be the residual
 * itself (the add in place). The same float addition as the separate add op. */
static void store_residual_rows(const fjob *j, float q[][GROUP], size_t mr, size_t row0, size_t col0, size_t ncols,
                                int staged) {
  for (size_t r = 0; r < mr; r++) {
    if (!staged) xk_output_apply(j->o, q[r], col0, ncols);
    const float *res = j->o->residual + (row0 + r) * j->ldc + col0;
    float *y = (float *)j->c + (row0 + r) * j->ldc + col0;
    for (size_t c = 0; c < ncols; c++) y[c] = q[r][c] + res[c];
  }
}

/* rows [r0, r0 + rows) of the output; their A rows start at a (stride lda); groups g0, g0+gs.. */
static void gemm_rows(const fjob *j, const float *a, size_t lda, size_t r0, size_t rows, size_t g0, size_t gs) {
  const xk_fgemm_desc *d = j->d;
  float q[XK_FGEMM_MAX_MR][GROUP];
#ifdef XK_HAVE_AVX2
  xk_fstage st0;
  const int avx2 = d == &xk_fgemm_avx2, fuse = avx2 && fused_stage(j->o, 0, &st0);
#endif
  for (size_t g = g0; g < j->ngroups; g += gs) {
    size_t col0 = g * GROUP, ncols = j->n - col0 < GROUP ? j->n - col0 : GROUP;
    /* float output, whole NR blocks: the micro-kernel writes the output rows in place and the
     * output stage runs once over the mr rows (AVX2: inside the micro-kernel, before the store) */
    const int in_place = j->o->kind == XK_OUT_FLOAT && !j->o->residual && ncols % d->nr == 0;
    for (size_t i = 0; i < rows; i += d->mr) {
      size_t mr = rows - i < d->mr ? rows - i : d->mr;
#ifdef XK_HAVE_AVX2
      if (avx2) { /* in place, or into q (a residual add, a partial block, bits output); the stage in
                   * the kernels when it can be, else after */
        float *y = (float *)j->c + (r0 + i) * j->ldc + col0;
        /* The stage in the kernels for whole blocks only: they read NR stage values per block.
         * Bits output: then the signs packed 8 at a time (the same bits as xk_output_store_f32:
         * !(v >= 0), NaN sets the bit). */
        const int staged = fuse && ncols % d->nr == 0 && (in_place || j->o->residual || j->o->kind == XK_OUT_BITS);
        const int bits = staged && j->o->kind == XK_OUT_BITS;
        avx2_tile(j, a + i * lda, lda, mr, col0, ncols, in_place ? y : q[0], in_place ? j->ldc : GROUP, staged);
        if (bits) {
          xk_binarize_rows_avx2(mr, ncols, q[0], GROUP, NULL, NULL, j->c + (r0 + i) * j->ldc + (col0 / 64) * 8, j->ldc);
        } else if (j->o->residual) {
          store_residual_rows(j, q, mr, r0 + i, col0, ncols, staged);
        } else if (in_place) {
          if (!staged) xk_output_apply_rows(j->o, y, mr, j->ldc, col0, ncols);
        } else {
          for (size_t r = 0; r < mr; r++) xk_output_store_f32(j->o, q[r], col0, ncols, j->c, j->ldc, r0 + i + r);
        }
        continue;
      }
#endif
      if (in_place) {
        float *y = (float *)j->c + (r0 + i) * j->ldc + col0;
        for (size_t c = 0; c < ncols; c += d->nr)
          d->ukernel(mr, j->k, a + i * lda, lda, j->panel + ((col0 + c) / d->nr) * j->k * d->nr, y + c, j->ldc);
        xk_output_apply_rows(j->o, y, mr, j->ldc, col0, ncols);
        continue;
      }
      for (size_t c = 0; c < ncols; c += d->nr)
        d->ukernel(mr, j->k, a + i * lda, lda, j->panel + ((col0 + c) / d->nr) * j->k * d->nr, &q[0][c], GROUP);
      if (j->o->residual) {
        store_residual_rows(j, q, mr, r0 + i, col0, ncols, 0);
        continue;
      }
      for (size_t r = 0; r < mr; r++) xk_output_store_f32(j->o, q[r], col0, ncols, j->c, j->ldc, r0 + i + r);
    }
  }
}

static void im2col_f32(const fjob *j, size_t r0, size_t rows, float *dst) {
  const xk_conv_shape *s = j->s;
  const size_t c = s->c, oh = j->oh, ow = j->ow;
  const long dh = (long)xk_dil(s->dil_h), dw = (long)xk_dil(s->dil_w);
  for (size_t r = r0; r < r0 + rows; r++) {
    size_t b = r / (oh * ow), pix = r % (oh * ow), oy = pix / ow, ox = pix % ow;
    long iy0 = (long)(oy * s->stride_h) - (long)s->pad_t, ix0 = (long)(ox * s->stride_w) - (long)s->pad_l;
    const int row_inside = dw == 1 && ix0 >= 0 && ix0 + (long)s->kw <= (long)s->w;
    for (size_t ky = 0; ky < s->kh; ky++) {
      long iy = iy0 + (long)ky * dh;
      if (row_inside && iy >= 0 && iy < (long)s->h) { /* the KW taps are contiguous in NHWC */
        memcpy(dst, j->in + ((b * s->h + (size_t)iy) * s->w + (size_t)ix0) * c, s->kw * c * sizeof(float));
        dst += s->kw * c;
        continue;
      }
      for (size_t kx = 0; kx < s->kw; kx++, dst += c) {
        long ix = ix0 + (long)kx * dw;
        if (iy < 0 || iy >= (long)s->h || ix < 0 || ix >= (long)s->w) {
          for (size_t i = 0; i < c; i++) dst[i] = 0.0f;
        } else {
          const float *src = j->in + ((b * s->h + (size_t)iy) * s->w + (size_t)ix) * c;
          for (size_t i = 0; i < c; i++) dst[i] = src[i];
        }
      }
    }
  }
}

static void input_task(void *ctx, size_t t) {
  const fjob *j = (const fjob *)ctx;
  size_t g = t / j->mtiles, mt = t % j->mtiles;
  size_t r0 = mt * MT, rows = j->m - r0 < MT ? j->m - r0 : MT;
  gemm_rows(j, j->a + r0 * j->lda, j->lda, r0, rows, g, j->ngroups);
}

/* Task t: column group t % ngroups of tile t / ngroups, in the slot of the worker running it
 * (xk_tile_workers). Row tiles and column groups both split the work: a few rows (the 7x7 and
 * 14x14 layers, dense rows) spread over threads by columns. */
static void tiled_task(void *ctx, size_t t) {
  const fjob *j = (const fjob *)ctx;
  const size_t w = xk_worker(), tile = t / j->ngroups, g = t % j->ngroups;
  const size_t r0 = tile * MT, rows = j->m - r0 < MT ? j->m - r0 : MT;
  float *slot = j->ws + w * j->slot_floats;
  if (j->slot_tile[w] != tile) {
    im2col_f32(j, r0, rows, slot);
    j->slot_tile[w] = tile;
  }
  gemm_rows(j, slot, j->k, r0, rows, g, j->ngroups);
}

/* ------------------------------------------------------------------ direct path (AVX2, C <= 4) */
/* The zero-padded input: [n][pad_t + h + pad_b][pad_l + w + pad_r][c] floats. */
static size_t xpad_bytes(const xk_conv_shape *s) {
  return xk_align_up(s->n * (s->pad_t + s->h + s->pad_b) * (s->pad_l + s->w + s->pad_r) * s->c * sizeof(float));
}

#ifdef XK_HAVE_AVX2
/* Whether the direct path applies: AVX2 panels, few input channels, not XK_NO_DIRECT_CONV. */
static int use_direct_conv(const xk_fgemm_desc *d, const xk_conv_shape *s) {
  if (d != &xk_fgemm_avx2 || s->c > DIRECT_MAX_C) return 0;
  return getenv("XK_NO_DIRECT_CONV") == NULL;
}

static void pad_input(const xk_conv_shape *s, const float *in, float *xp, size_t hp, size_t wp) {
  const size_t c = s->c, rowf = wp * c;
  for (size_t b = 0; b < s->n; b++) {
    float *img = xp + b * hp * rowf;
    memset(img, 0, s->pad_t * rowf * sizeof(float));
    for (size_t y = 0; y < s->h; y++) {
      float *row = img + (s->pad_t + y) * rowf;
      memset(row, 0, s->pad_l * c * sizeof(float));
      memcpy(row + s->pad_l * c, in + (b * s->h + y) * s->w * c, s->w * c * sizeof(float));
      memset(row + (s->pad_l + s->w) * c, 0, s->pad_r * c * sizeof(float));
    }
    memset(img + (s->pad_t + s->h) * rowf, 0, s->pad_b * rowf * sizeof(float));
  }
}

/* Output pixels [r0, r0 + rows) (rows <= MT), all column groups, A straight from the padded input. */
static void direct_tile(const fjob *j, size_t r0, size_t rows) {
  const xk_conv_shape *s = j->s;
  const size_t nr = j->d->nr;
  const float *px[MT + XK_CONV_MR];
  size_t off[MT];
  xk_window_offsets(s, j->oh, j->ow, j->hp, j->wp, r0, rows, off);
  for (size_t i = 0; i < rows; i++) px[i] = j->xpad + off[i];
  float q[XK_CONV_MR][GROUP];
  for (size_t g = 0; g < j->ngroups; g++) {
    const size_t col0 = g * GROUP, ncols = j->n - col0 < GROUP ? j->n - col0 : GROUP;
    /* float output written in place by the kernels: whole blocks, or any block with AVX-512 (masked) */
    const int in_place = j->o->kind == XK_OUT_FLOAT && !j->o->residual && (ncols % nr == 0 || j->avx512);
    xk_fstage st;
    const int fuse = in_place && fused_stage(j->o, 0, &st);
    /* bits output, whole blocks: the stage in the kernels, then the signs packed 8 at a time */
    const int bits = j->o->kind == XK_OUT_BITS && ncols % nr == 0 && fused_stage(j->o, 0, &st);
    for (size_t i = 0; i < rows; i += XK_CONV_MR) {
      const size_t mr = rows - i < XK_CONV_MR ? rows - i : XK_CONV_MR;
      const float *const *x = px + i;
      if (in_place) { /* the stage in the micro-kernel when it can, else one pass over the rows */
        float *y = (float *)j->c + (r0 + i) * j->ldc + col0;
        for (size_t cc = 0; cc < ncols; cc += nr) {
          if (fuse) fused_stage(j->o, col0 + cc, &st);
#ifdef XK_HAVE_AVX512
          if (j->avx512 && cc + 2 * nr <= ncols) { /* two whole blocks */
            xk_fconv_ukernel2_avx512(mr, x, &j->segs, j->panel + ((col0 + cc) / nr) * j->k * nr, j->k * nr, y + cc,
                                     j->ldc, fuse ? &st : NULL);
            cc += nr;
            continue;
          }
          if (j->avx512) { /* a lone last block, whole or partial: masked */
            xk_fconv_ukernel1_avx512(mr, x, &j->segs, j->panel + ((col0 + cc) / nr) * j->k * nr,
                                     ncols - cc < nr ? ncols - cc : nr, y + cc, j->ldc, fuse ? &st : NULL);
            continue;
          }
#endif
          xk_fconv_ukernel_avx2(mr, x, &j->segs, j->panel + ((col0 + cc) / nr) * j->k * nr, y + cc, j->ldc,
                                fuse ? &st : NULL);
        }
        if (!fuse) xk_output_apply_rows(j->o, y, mr, j->ldc, col0, ncols);
        continue;
      }
      for (size_t cc = 0; cc < ncols; cc += nr) {
        if (bits) fused_stage(j->o, col0 + cc, &st);
#ifdef XK_HAVE_AVX512
        if (j->avx512 && cc + nr < ncols) {
          xk_fconv_ukernel2_avx512(mr, x, &j->segs, j->panel + ((col0 + cc) / nr) * j->k * nr, j->k * nr, &q[0][cc],
                                   GROUP, bits ? &st : NULL);
          cc += nr;
          continue;
        }
#endif
        xk_fconv_ukernel_avx2(mr, x, &j->segs, j->panel + ((col0 + cc) / nr) * j->k * nr, &q[0][cc], GROUP,
                              bits ? &st : NULL);
      }
      if (bits) {
        xk_binarize_rows_avx2(mr, ncols, q[0], GROUP, NULL, NULL, j->c + (r0 + i) * j->ldc + (col0 / 64) * 8, j->ldc);
        continue;
      }
      if (j->o->residual) {
        store_residual_rows(j, q, mr, r0 + i, col0, ncols, 0);
        continue;
      }
      for (size_t r = 0; r < mr; r++) xk_output_store_f32(j->o, q[r], col0, ncols, j->c, j->ldc, r0 + i + r);
    }
  }
}

static void direct_task(void *ctx, size_t t) {
  const fjob *j = (const fjob *)ctx;
  const size_t r0 = t * MT;
  direct_tile(j, r0, j->m - r0 < MT ? j->m - r0 : MT);
}
#endif

static void run_direct(fjob *j) {
  j->mtiles = xk_div_up(j->m, MT);
  size_t ntasks = j->mtiles * j->ngroups;
  if (j->m * j->n * j->k < SERIAL_FLOPS) {
    for (size_t t = 0; t < ntasks; t++) input_task(j, t);
  } else {
    xk_parallel_for(ntasks, input_task, j);
  }
}

static int direct_input(const xk_conv_shape *s) {
  return s->kh == 1 && s->kw == 1 && s->stride_h == 1 && s->stride_w == 1 && !s->pad_t && !s->pad_b && !s->pad_l &&
         !s->pad_r;
}

static size_t slot_bytes(const xk_conv_shape *s) { return xk_align_up(MT * s->kh * s->kw * s->c * sizeof(float)); }

/* ------------------------------------------------------------------ conv2d */
size_t xk_conv2d_packed_size(const xk_conv_shape *s) {
  if (xk_conv_check(s, "xk_conv2d_packed_size", NULL, NULL) != XK_OK) return 0;
  return panel_bytes(fgemm_for(xk_get_isa()), s->oc, s->kh * s->kw * s->c);
}

xk_status xk_conv2d_pack(const xk_conv_shape *s, const float *w, void *packed, size_t packed_size) {
  xk_status st = xk_conv_check(s, "xk_conv2d_pack", NULL, NULL);
  if (st != XK_OK) return st;
  return pack_panel(fgemm_for(xk_get_isa()), s->oc, s->kh * s->kw * s->c, w, packed, packed_size, "xk_conv2d_pack");
}

size_t xk_conv2d_workspace_size(const xk_conv_shape *s, size_t nslots) {
  if (xk_conv_check(s, "xk_conv2d_workspace_size", NULL, NULL) != XK_OK) return 0;
  if (direct_input(s)) return 0;
  size_t im2col = (nslots ? nslots : 1) * slot_bytes(s);
  if (s->c <= DIRECT_MAX_C && xpad_bytes(s) > im2col) return xpad_bytes(s); /* direct path */
  return im2col;
}

xk_status xk_conv2d_run(const xk_conv_shape *s, const void *packed, size_t packed_size, const float *in,
                        const xk_output *o, void *out, size_t ldc, void *ws, size_t ws_size) {
  static const char op[] = "xk_conv2d";
  size_t oh, ow;
  xk_status st = xk_conv_check(s, op, &oh, &ow);
  if (st != XK_OK) return st;
  fjob j;
  memset(&j, 0, sizeof j);
  j.k = s->kh * s->kw * s->c;
  if ((st = open_panel(packed, packed_size, s->oc, j.k, &j.d, op)) != XK_OK) return st;
  if (!in || !out) return xk_fail(XK_ERR_ARGUMENT, "%s: null input or output", op);
  if ((st = xk_output_check(o, s->oc, ldc, XK_CHECK_RESIDUAL, op)) != XK_OK) return st;
  if (o->kind == XK_OUT_INT32) return xk_fail(XK_ERR_ARGUMENT, "%s: int32 output needs an integer op", op);
  j.m = s->n * oh * ow;
  j.n = s->oc;
  j.ngroups = xk_div_up(s->oc, GROUP);
  j.panel = (const float *)((const uint8_t *)packed + XK_PACKED_HEADER);
  j.avx512 = xk_use_avx512();
  j.o = o;
  j.c = (uint8_t *)out;
  j.ldc = ldc;
  if (direct_input(s)) {
    j.a = in;
    j.lda = s->c;
    run_direct(&j);
    return XK_OK;
  }
  size_t sb = slot_bytes(s);
  if (!ws || ws_size < sb) return xk_fail(XK_ERR_MEMORY, "%s: workspace %zu bytes < %zu needed (one slot)", op, ws_size, sb);
  if (((uintptr_t)ws) % sizeof(float)) return xk_fail(XK_ERR_ARGUMENT, "%s: workspace must be 4-byte aligned", op);
  j.in = in;
  j.s = s;
  j.oh = oh;
  j.ow = ow;
  j.ws = (float *)ws;
  j.slot_floats = sb / sizeof(float);
  j.ntiles = xk_div_up(j.m, MT);
#ifdef XK_HAVE_AVX2
  if (use_direct_conv(j.d, s) && ws_size >= xpad_bytes(s)) {
    j.hp = s->pad_t + s->h + s->pad_b;
    j.wp = s->pad_l + s->w + s->pad_r;
    j.segs = xk_direct_segs(s, j.wp);
    j.xpad = (const float *)ws;
    pad_input(s, in, (float *)ws, j.hp, j.wp);
    /* one tile per task (see threadpool.c) */
    xk_parallel_run(j.ntiles, j.m * j.n * j.k < SERIAL_FLOPS ? 1 : SIZE_MAX, direct_task, &j);
    return XK_OK;
  }
#endif
  size_t slot_tile[XK_MAX_THREADS];
  const size_t nworkers = xk_tile_workers(ws_size, sb, j.m * j.n * j.k < SERIAL_FLOPS, slot_tile);
  j.slot_tile = slot_tile;
  xk_parallel_run(j.ntiles * j.ngroups, nworkers, tiled_task, &j); /* small tasks: see threadpool.c */
  return XK_OK;
}

/* ------------------------------------------------------------------ dense */
size_t xk_dense_packed_size(size_t k, size_t n_out) {
  if (k == 0 || n_out == 0) return 0;
  return panel_bytes(fgemm_for(xk_get_isa()), n_out, k);
}

xk_status xk_dense_pack(size_t k, size_t n_out, const float *w, void *packed, size_t packed_size) {
  if (k == 0 || n_out == 0) return xk_fail(XK_ERR_SHAPE, "xk_dense_pack: empty weights (k=%zu, n=%zu)", k, n_out);
  return pack_panel(fgemm_for(xk_get_isa()), n_out, k, w, packed, packed_size, "xk_dense_pack");
}

xk_status xk_dense_run(size_t n, size_t k, size_t n_out, const void *packed, size_t packed_size, const float *in,
                       size_t ldx, const xk_output *o, void *out, size_t ldc) {
  static const char op[] = "xk_dense";
  if (n == 0 || k == 0 || n_out == 0) return xk_fail(XK_ERR_SHAPE, "%s: empty problem (n=%zu, k=%zu, out=%zu)", op, n, k, n_out);
  if (ldx < k) return xk_fail(XK_ERR_SHAPE, "%s: input stride %zu < k=%zu", op, ldx, k);
  fjob j;
  memset(&j, 0, sizeof j);
  xk_status st = open_panel(packed, packed_size, n_out, k, &j.d, op);
  if (st != XK_OK) return st;
  if (!in || !out) return xk_fail(XK_ERR_ARGUMENT, "%s: null input or output", op);
  if ((st = xk_output_check(o, n_out, ldc, 0, op)) != XK_OK) return st;
  if (o->kind == XK_OUT_INT32) return xk_fail(XK_ERR_ARGUMENT, "%s: int32 output needs an integer op", op);
  j.m = n;
  j.n = n_out;
  j.k = k;
  j.ngroups = xk_div_up(n_out, GROUP);
  j.panel = (const float *)((const uint8_t *)packed + XK_PACKED_HEADER);
  j.avx512 = xk_use_avx512();
  j.o = o;
  j.c = (uint8_t *)out;
  j.ldc = ldc;
  j.a = in;
  j.lda = ldx;
  run_direct(&j);
  return XK_OK;
}

/* ------------------------------------------------------------------ depthwise conv2d */
typedef struct dwjob {
  const xk_conv_shape *s;
  size_t oh, ow, mult;
  const float *w, *in;
  const xk_output *o;
  float *out;
  size_t ldc;
  int avx2;
} dwjob;

static void dw_task(void *ctx, size_t t) { /* one output row (b, oy) */
  const dwjob *j = (const dwjob *)ctx;
  const xk_conv_shape *s = j->s;
  const size_t oc = s->oc, c = s->c, m = j->mult, b = t / j->oh, oy = t % j->oh;
  const long dh = (long)xk_dil(s->dil_h), dw = (long)xk_dil(s->dil_w);
  long iy0 = (long)(oy * s->stride_h) - (long)s->pad_t;
#ifdef XK_HAVE_AVX2
  if (j->avx2 && m == 1) {
    float *yrow = j->out + (b * j->oh + oy) * j->ow * j->ldc;
    xk_dw_row r = {j->in + b * s->h * s->w * c, s->h, s->w, c, j->w, s->kh, s->kw, s->stride_w,
                   (size_t)dh, (size_t)dw, iy0, (long)s->pad_l, j->ow, yrow, j->ldc};
    xk_dw_row_avx2(&r);
    xk_output_apply_rows(j->o, yrow, j->ow, j->ldc, 0, oc);
    return;
  }
#endif
  for (size_t ox = 0; ox < j->ow; ox++) {
    long ix0 = (long)(ox * s->stride_w) - (long)s->pad_l;
    float *y = j->out + ((b * j->oh + oy) * j->ow + ox) * j->ldc;
    for (size_t ch = 0; ch < oc; ch++) y[ch] = 0.0f;
    for (size_t ky = 0; ky < s->kh; ky++) {
      long iy = iy0 + (long)ky * dh;
      if (iy < 0 || iy >= (long)s->h) continue;
      for (size_t kx = 0; kx < s->kw; kx++) {
        long ix = ix0 + (long)kx * dw;
        if (ix < 0 || ix >= (long)s->w) continue;
        const float *x = j->in + ((b * s->h + (size_t)iy) * s->w + (size_t)ix) * c;
        const float *wt = j->w + (ky * s->kw + kx) * oc;
        if (m == 1) {
          for (size_t ch = 0; ch < oc; ch++) y[ch] += x[ch] * wt[ch];
        } else {
          for (size_t ch = 0; ch < oc; ch++) y[ch] += x[ch / m] * wt[ch];
        }
      }
    }
    xk_output_apply(j->o, y, 0, oc);
  }
}

xk_status xk_dwconv2d_run(const xk_conv_shape *s, const float *w, const float *in, const xk_output *o, float *out,
                          size_t ldc) {
  static const char op[] = "xk_dwconv2d";
  size_t oh, ow;
  xk_status st = xk_conv_check(s, op, &oh, &ow);
  if (st != XK_OK) return st;
  if (s->oc % s->c) return xk_fail(XK_ERR_SHAPE, "%s: output channels %zu not a multiple of input channels %zu", op, s->oc, s->c);
  if (!w || !in || !out) return xk_fail(XK_ERR_ARGUMENT, "%s: null buffer", op);
  if ((st = xk_output_check(o, s->oc, ldc, 0, op)) != XK_OK) return st;
  if (o->kind != XK_OUT_FLOAT) return xk_fail(XK_ERR_ARGUMENT, "%s: only float output is supported", op);
  dwjob j = {s, oh, ow, s->oc / s->c, w, in, o, out, ldc, xk_use_avx2()};
  size_t ntasks = s->n * oh;
  if (s->n * oh * ow * s->oc * s->kh * s->kw < SERIAL_FLOPS) {
    for (size_t t = 0; t < ntasks; t++) dw_task(&j, t);
  } else {
    xk_parallel_for(ntasks, dw_task, &j);
  }
  return XK_OK;
}
