/* Direct binary convolution for few input channels (AVX2). See bconv2d_direct.h. */
#include "bconv2d_direct.h"

#include <stdlib.h>

#if defined(XK_HAVE_AVX2) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define XK_BDIRECT 1
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
/* as in bgemm-avx2.c: GCC's tree-PRE keeps the kernel's accumulators in memory (a store per
 * step and accumulator) */
#pragma GCC optimize("no-tree-pre")
#endif
#else
#define XK_BDIRECT 0
#endif

#define DMR 4   /* output pixels per kernel call */
#define DCOLS 8 /* output channels per kernel call: one panel block */
#define TCOLS 64 /* output channels per call of the table-lookup kernel (oc % 64 == 0) */
#define TFLIP_WORDS 64 /* bits output in registers for up to 4096 output channels */
#define SERIAL_WORK ((size_t)1 << 17) /* pixel x channel x step products below which a call stays serial */

static size_t steps_of(const xk_conv_shape *s) { return s->kh * s->kw * (s->c / 32); }

/* The table-lookup kernel takes output channels 64 at a time; other counts the XOR kernel. Its
 * byte counters are widened every <= 63 byte steps: whole taps while a tap has at most 63 bytes
 * (C <= 252), else runs of 32 bytes (C a multiple of 128). */
static int table_kernel(const xk_conv_shape *s) {
  return s->oc % TCOLS == 0 && s->kh * s->kw <= XK_BDIRECT_MAX_TAPS && (s->c / 4 <= 63 || s->c % 128 == 0);
}

int xk_bdirect_shape_ok(const xk_conv_shape *s) {
#if XK_BDIRECT
  if (s->c % 32 || s->c < 32) return 0;
  return table_kernel(s) || (s->c <= 128 && steps_of(s) <= XK_BDIRECT_MAX_STEPS);
#else
  (void)s;
  return 0;
#endif
}

int xk_bdirect_applies(const xk_conv_shape *s, xk_isa isa) {
  static int off = -1; /* XK_NO_DIRECT_BCONV=1: the im2col path (A/B benchmarks, tests) */
  if (off < 0) off = getenv("XK_NO_DIRECT_BCONV") != NULL;
  return !off && isa == XK_ISA_AVX2 && xk_isa_available(XK_ISA_AVX2) && xk_bdirect_shape_ok(s);
}

size_t xk_bdirect_panel_bytes(const xk_conv_shape *s) {
  if (table_kernel(s)) return s->oc / TCOLS * steps_of(s) * 8 * 64;
  return xk_div_up(s->oc, XK_BDIRECT_BLOCK) * steps_of(s) * 64;
}

/* Rows and columns of the padded input that the output reads. */
static void padded_dims(const xk_conv_shape *s, size_t oh, size_t ow, size_t *hp, size_t *wp) {
  *hp = (oh - 1) * s->stride_h + (s->kh - 1) * xk_dil(s->dil_h) + 1;
  *wp = (ow - 1) * s->stride_w + (s->kw - 1) * xk_dil(s->dil_w) + 1;
}

size_t xk_bdirect_workspace_size(const xk_conv_shape *s, size_t oh, size_t ow) {
  if (!xk_bdirect_shape_ok(s) || !oh || !ow) return 0;
  size_t hp, wp;
  padded_dims(s, oh, ow, &hp, &wp);
  return xk_align_up(s->n * hp * wp * (s->c / 32) * 8);
}

/* A 32-bit channel word split into nibbles: [x & 0x0f0f0f0f, (x >> 4) & 0x0f0f0f0f] (weights
 * and input alike, so one vpxor + vpshufb counts a step). */
static uint64_t nibble_split(uint32_t x) {
  return (uint64_t)(x & 0x0f0f0f0fu) | (uint64_t)((x >> 4) & 0x0f0f0f0fu) << 32;
}

void xk_bdirect_pack_word(const xk_conv_shape *s, size_t o, size_t i, uint32_t word, uint8_t *panel) {
  const size_t steps = steps_of(s);
  const uint64_t v = nibble_split(word);
  if (table_kernel(s)) { /* blocks of 64 channels; per byte step (word i, byte b of its split form) two
                          * vectors of 32 channels' nibbles, byte 2u = channel u, byte 2u + 1 = channel 16 + u */
    const size_t lane = o % TCOLS, u = lane % 32, pos = lane / 32 * 32 + (u < 16 ? 2 * u : 2 * (u - 16) + 1);
    uint8_t *blk = panel + (o / TCOLS) * steps * 8 * 64 + pos;
    for (size_t b = 0; b < 8; b++) blk[(i * 8 + b) * 64] = (uint8_t)(v >> (8 * b));
    return;
  }
  const size_t lane = o % XK_BDIRECT_BLOCK;
  memcpy(panel + (o / XK_BDIRECT_BLOCK) * steps * 64 + (lane / 4) * 32 + (lane % 4) * 8 + i * 64, &v, 8);
}

#if XK_BDIRECT
/* The float output stages done in registers: y = pb + ps * relu(bi + sc * dot) (+ residual),
 * each part optional, the same operations and roundings as xk_stage_rows (no FMA: this file is
 * not built with it). */
typedef struct fstage {
  int on; /* float output with one of these stages */
  const float *sc, *bi, *ps, *pb;
  int relu;
} fstage;

static fstage fstage_of(const xk_output *o) {
  fstage f;
  memset(&f, 0, sizeof f);
  if (o->kind != XK_OUT_FLOAT || (o->act.kind != XK_ACT_NONE && o->act.kind != XK_ACT_RELU)) return f;
  f.on = 1;
  f.sc = o->scale;
  f.bi = o->bias;
  f.ps = o->post_scale;
  f.pb = o->post_bias;
  f.relu = o->act.kind == XK_ACT_RELU;
  return f;
}

typedef struct dgeom {
  const xk_bdirect_job *j;
  size_t hp, wp, dw, pix; /* padded size, channel words per pixel, bytes per split pixel */
  size_t steps, rows_per_task;
  size_t soff[XK_BDIRECT_MAX_STEPS]; /* XOR kernel: byte offset of each step (tap, channel word) in the split input */
  int table;                         /* the table-lookup kernel */
  size_t taps, seg_taps, chunk;      /* table kernel: runs of byte counters of seg_taps taps x chunk bytes */
  size_t toff[XK_BDIRECT_MAX_TAPS];  /* table kernel: byte offset of each tap in the split input */
  fstage fs;
  int bits;                          /* table kernel, bits output: tstage_bits */
  uint64_t flipw[TFLIP_WORDS];       /* its flip bits, one word per 64 channels (oc <= 64 * TFLIP_WORDS) */
} dgeom;

/* Rows (image, padded row) of the split input: per pixel and channel word x, the 64-bit word
 * [x & 0x0f0f0f0f, (x >> 4) & 0x0f0f0f0f] (times 4 for the table kernel); outside the image the
 * pad value's bits. */
static void prep_task(void *ctx, size_t t) {
  const dgeom *g = (const dgeom *)ctx;
  const xk_bdirect_job *j = g->j;
  const xk_conv_shape *s = j->s;
  const size_t nrows = s->n * g->hp, r1 = (t + 1) * g->rows_per_task < nrows ? (t + 1) * g->rows_per_task : nrows;
  const size_t in_pix = xk_div_up(s->c, 64) * 8;
  /* the table kernel reads each byte as a table offset / 8: nibble * 4 */
  const unsigned sh = g->table ? 2 : 0;
  const uint64_t fill = j->pad == XK_PAD_MINUS ? UINT64_C(0x0f0f0f0f0f0f0f0f) << sh : 0;
  for (size_t r = t * g->rows_per_task; r < r1; r++) {
    const size_t b = r / g->hp;
    const long iy = (long)(r % g->hp) - (long)s->pad_t;
    uint64_t *dst = (uint64_t *)(j->ws + r * g->wp * g->pix);
    if (iy < 0 || iy >= (long)s->h) {
      for (size_t i = 0; i < g->wp * g->dw; i++) dst[i] = fill;
      continue;
    }
    const uint8_t *row = j->in + (b * s->h + (size_t)iy) * s->w * in_pix;
    for (size_t px = 0; px < g->wp; px++, dst += g->dw) {
      const long ix = (long)px - (long)s->pad_l;
      if (ix < 0 || ix >= (long)s->w) {
        for (size_t d = 0; d < g->dw; d++) dst[d] = fill;
        continue;
      }
      const uint8_t *src = row + (size_t)ix * in_pix;
      for (size_t d = 0; d < g->dw; d++) {
        uint32_t x;
        memcpy(&x, src + 4 * d, 4);
        dst[d] = nibble_split(x) << sh;
      }
    }
  }
}

/* Popcounts of MR <= 4 pixels (split input at ap[r] + soff[step]) against the 8 output channels
 * of one panel block w (two vectors of 4): cnt[r][0..8). One step (tap, channel word) at a time;
 * named accumulators (an array of them stays in memory with GCC 12). */
__attribute__((target("avx2"))) static XK_ALWAYS_INLINE void dkernel_counts(const int MR, size_t steps,
                                                                            const size_t *soff,
                                                                            const uint8_t *const *ap, const uint8_t *w,
                                                                            __m256i *k0, __m256i *k1, __m256i *k2,
                                                                            __m256i *k3) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i zero = _mm256_setzero_si256();
  __m256i c00 = zero, c01 = zero, c10 = zero, c11 = zero, c20 = zero, c21 = zero, c30 = zero, c31 = zero;
  const uint8_t *p0 = ap[0], *p1 = ap[MR > 1 ? 1 : 0], *p2 = ap[MR > 2 ? 2 : 0], *p3 = ap[MR > 3 ? 3 : 0];
  for (size_t st = 0; st < steps; st++, w += 64) {
    const size_t off = soff[st];
    const __m256i b0 = _mm256_loadu_si256((const __m256i *)w), b1 = _mm256_loadu_si256((const __m256i *)(w + 32));
    __m256i a;
    /* vbroadcastsd: a load-port broadcast */
#define DROW(p, x0, x1)                                                                      \
  a = _mm256_castpd_si256(_mm256_broadcast_sd((const double *)(const void *)((p) + off)));   \
  x0 = _mm256_add_epi8(x0, _mm256_shuffle_epi8(lut, _mm256_xor_si256(a, b0)));              \
  x1 = _mm256_add_epi8(x1, _mm256_shuffle_epi8(lut, _mm256_xor_si256(a, b1)));
    DROW(p0, c00, c01)
    if (MR > 1) { DROW(p1, c10, c11) }
    if (MR > 2) { DROW(p2, c20, c21) }
    if (MR > 3) { DROW(p3, c30, c31) }
#undef DROW
  }
  /* per vector, vpsadbw: the counts of its 4 channels in 64-bit lanes; two vectors -> 8 int32 */
  const __m256i order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
#define DOUT(x0, x1)                                                                                     \
  _mm256_permutevar8x32_epi32(_mm256_or_si256(_mm256_sad_epu8(x0, zero), _mm256_slli_epi64(_mm256_sad_epu8(x1, zero), 32)), \
                              order)
  *k0 = DOUT(c00, c01);
  *k1 = MR > 1 ? DOUT(c10, c11) : *k0;
  *k2 = MR > 2 ? DOUT(c20, c21) : *k1;
  *k3 = MR > 3 ? DOUT(c30, c31) : *k2;
#undef DOUT
}

/* The counts of dkernel_counts stored: cnt[r][0..8) for r < MR. */
__attribute__((target("avx2"))) static XK_ALWAYS_INLINE void dkernel(const int MR, size_t steps, const size_t *soff,
                                                                     const uint8_t *const *ap, const uint8_t *w,
                                                                     int32_t cnt[DMR][DCOLS]) {
  __m256i k0, k1, k2, k3;
  dkernel_counts(MR, steps, soff, ap, w, &k0, &k1, &k2, &k3);
  _mm256_storeu_si256((__m256i *)cnt[0], k0);
  if (MR > 1) _mm256_storeu_si256((__m256i *)cnt[1], k1);
  if (MR > 2) _mm256_storeu_si256((__m256i *)cnt[2], k2);
  if (MR > 3) _mm256_storeu_si256((__m256i *)cnt[3], k3);
}

__attribute__((target("avx2"), noinline)) static void dkernel_any(size_t mr, size_t steps, const size_t *soff,
                                                                   const uint8_t *const *ap, const uint8_t *w,
                                                                   int32_t cnt[DMR][DCOLS]) {
  switch (mr) {
    case 1: dkernel(1, steps, soff, ap, w, cnt); break;
    case 2: dkernel(2, steps, soff, ap, w, cnt); break;
    case 3: dkernel(3, steps, soff, ap, w, cnt); break;
    default: dkernel(4, steps, soff, ap, w, cnt); break;
  }
}

/* The output stage of one pixel (output row `row`, position oy, ox) for channels
 * [col0, col0 + nc): dot = base - 2 cnt, then int32, float (stage + residual) or bits. */
__attribute__((target("avx2"))) static void depilogue(const xk_bdirect_job *j, size_t row, size_t oy, size_t ox,
                                                       size_t col0, size_t nc, const int32_t *cnt) {
  const xk_output *o = j->o;
  const size_t oc = j->s->oc;
  int32_t dot[DCOLS];
  if (j->base) {
    const int32_t *b = j->base + ((size_t)j->ycls[oy] * j->nxc + j->xcls[ox]) * oc + col0;
    for (size_t c = 0; c < nc; c++) dot[c] = b[c] - 2 * cnt[c];
  } else {
    for (size_t c = 0; c < nc; c++) dot[c] = j->kfull - 2 * cnt[c];
  }
  switch (o->kind) {
    case XK_OUT_INT32: memcpy((int32_t *)j->out + row * j->ldc + col0, dot, nc * sizeof(int32_t)); break;
    case XK_OUT_FLOAT:
      xk_float_row(o, dot, col0, nc, (float *)j->out + row * j->ldc + col0,
                   o->residual ? o->residual + row * j->ldc + col0 : NULL);
      break;
    case XK_OUT_BITS: { /* nc <= 8 channels: one byte (col0 is a multiple of 8); one AVX2 compare
                          * for a whole block (xk_threshold_word's SSE2 loop measured 3% slower on
                          * BinaryAlexNet, whose 5x5 64-channel layer writes bits here) */
      uint8_t *dst = j->out + row * j->ldc + col0 / 8;
      const int32_t *thr = o->threshold + col0;
      unsigned bits = 0;
      if (nc == 8) {
        const __m256i lt = _mm256_cmpgt_epi32(_mm256_loadu_si256((const __m256i *)thr),
                                              _mm256_loadu_si256((const __m256i *)dot));
        bits = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(lt));
      } else {
        for (size_t k = 0; k < nc; k++) bits |= (unsigned)(dot[k] < thr[k]) << k;
      }
      bits ^= (unsigned)xk_flip_word(o, col0, nc);
      *dst = (uint8_t)bits;
      if (col0 + nc == oc) /* the row's padding bytes, up to its last 64-bit word */
        for (size_t k = xk_div_up(oc, 8); k < xk_div_up(oc, 64) * 8; k++) j->out[row * j->ldc + k] = 0;
      break;
    }
  }
}

/* The float stages of 4 pixels' dots (int32, 8 channels [col, col + 8)) in registers: y = pb +
 * ps * relu(bi + sc * dot) (+ residual), each value with the operations and roundings of
 * xk_float_row (bit-identical to the im2col path). y and res (nullable) point at pixel 0's
 * column `col`; pixel i at + i * ldc for i < mr (a missing pixel repeats the last and is not
 * stored: d1..d3 and the residual rows i1..i3 are the caller's). */
__attribute__((target("avx2"))) static XK_ALWAYS_INLINE void fstage4_store(const fstage *f, size_t col, size_t mr,
                                                                           size_t ldc, float *y, const float *res,
                                                                           __m256i d0, __m256i d1, __m256i d2,
                                                                           __m256i d3) {
  const size_t i1 = mr > 1 ? 1 : 0, i2 = mr > 2 ? 2 : i1, i3 = mr > 3 ? 3 : i2;
  __m256 v0 = _mm256_cvtepi32_ps(d0), v1 = _mm256_cvtepi32_ps(d1), v2 = _mm256_cvtepi32_ps(d2),
         v3 = _mm256_cvtepi32_ps(d3);
  if (f->sc) {
    const __m256 sc = _mm256_loadu_ps(f->sc + col);
    v0 = _mm256_mul_ps(sc, v0), v1 = _mm256_mul_ps(sc, v1), v2 = _mm256_mul_ps(sc, v2), v3 = _mm256_mul_ps(sc, v3);
  }
  if (f->bi) {
    const __m256 bi = _mm256_loadu_ps(f->bi + col);
    v0 = _mm256_add_ps(v0, bi), v1 = _mm256_add_ps(v1, bi), v2 = _mm256_add_ps(v2, bi), v3 = _mm256_add_ps(v3, bi);
  }
  if (f->relu) { /* -0 and NaN -> +0, as v > 0 ? v : 0 */
    const __m256 z = _mm256_setzero_ps();
    v0 = _mm256_max_ps(v0, z), v1 = _mm256_max_ps(v1, z), v2 = _mm256_max_ps(v2, z), v3 = _mm256_max_ps(v3, z);
  }
  if (f->ps) {
    const __m256 ps = _mm256_loadu_ps(f->ps + col);
    v0 = _mm256_mul_ps(v0, ps), v1 = _mm256_mul_ps(v1, ps), v2 = _mm256_mul_ps(v2, ps), v3 = _mm256_mul_ps(v3, ps);
  }
  if (f->pb) {
    const __m256 pb = _mm256_loadu_ps(f->pb + col);
    v0 = _mm256_add_ps(v0, pb), v1 = _mm256_add_ps(v1, pb), v2 = _mm256_add_ps(v2, pb), v3 = _mm256_add_ps(v3, pb);
  }
  if (res) {
    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(res));
    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(res + i1 * ldc));
    v2 = _mm256_add_ps(v2, _mm256_loadu_ps(res + i2 * ldc));
    v3 = _mm256_add_ps(v3, _mm256_loadu_ps(res + i3 * ldc));
  }
  _mm256_storeu_ps(y, v0);
  if (mr > 1) _mm256_storeu_ps(y + ldc, v1);
  if (mr > 2) _mm256_storeu_ps(y + 2 * ldc, v2);
  if (mr > 3) _mm256_storeu_ps(y + 3 * ldc, v3);
}

/* MR pixels x 8 channels [col0, col0 + 8) (all < oc) of the float output, one output row from
 * (oy, ox): dot = base - 2 cnt, then fstage4_store. */
__attribute__((target("avx2"))) static XK_ALWAYS_INLINE void fast_float8(const xk_bdirect_job *j, const fstage *f,
                                                                         size_t row0, size_t oy, size_t ox, size_t mr,
                                                                         size_t col0, __m256i k0, __m256i k1,
                                                                         __m256i k2, __m256i k3) {
  const size_t oc = j->s->oc, ldc = j->ldc;
  const size_t i1 = mr > 1 ? 1 : 0, i2 = mr > 2 ? 2 : i1, i3 = mr > 3 ? 3 : i2;
  __m256i b0 = _mm256_set1_epi32(j->kfull), b1 = b0, b2 = b0, b3 = b0;
  if (j->base) {
    const int32_t *row = j->base + (size_t)j->ycls[oy] * j->nxc * oc + col0;
    b0 = _mm256_loadu_si256((const __m256i *)(row + (size_t)j->xcls[ox] * oc));
    b1 = _mm256_loadu_si256((const __m256i *)(row + (size_t)j->xcls[ox + i1] * oc));
    b2 = _mm256_loadu_si256((const __m256i *)(row + (size_t)j->xcls[ox + i2] * oc));
    b3 = _mm256_loadu_si256((const __m256i *)(row + (size_t)j->xcls[ox + i3] * oc));
  }
  fstage4_store(f, col0, mr, ldc, (float *)j->out + row0 * ldc + col0,
                j->o->residual ? j->o->residual + row0 * ldc + col0 : NULL,
                _mm256_sub_epi32(b0, _mm256_slli_epi32(k0, 1)), _mm256_sub_epi32(b1, _mm256_slli_epi32(k1, 1)),
                _mm256_sub_epi32(b2, _mm256_slli_epi32(k2, 1)), _mm256_sub_epi32(b3, _mm256_slli_epi32(k3, 1)));
}

/* MR pixels x 8 channels through the popcounts and the float stage, the counts in registers. */
__attribute__((target("avx2"), noinline)) static void dkernel_float8(size_t mr, const dgeom *g,
                                                                      const uint8_t *const *ap, const uint8_t *w,
                                                                      size_t row0, size_t oy, size_t ox, size_t col0) {
  __m256i k0, k1, k2, k3;
  switch (mr) {
    case 1: dkernel_counts(1, g->steps, g->soff, ap, w, &k0, &k1, &k2, &k3); break;
    case 2: dkernel_counts(2, g->steps, g->soff, ap, w, &k0, &k1, &k2, &k3); break;
    case 3: dkernel_counts(3, g->steps, g->soff, ap, w, &k0, &k1, &k2, &k3); break;
    default: dkernel_counts(4, g->steps, g->soff, ap, w, &k0, &k1, &k2, &k3); break;
  }
  fast_float8(g->j, &g->fs, row0, oy, ox, mr, col0, k0, k1, k2, k3);
}

/* ------------------------------------------------------------------ table-lookup kernel */
/* For oc % 64 == 0 (table_kernel). Each byte of the split input is one nibble a of a pixel's
 * channel bits (stored as 4 a, a table offset / 8); it selects the table T_a[k] = popcount(a ^ k),
 * and one vpshufb looks up the weight nibbles of that position for 32 output channels:
 * popcount(a ^ w) without a vpxor, the output channels in the vector lanes. Per 128 bit pairs
 * the XOR kernel issues vpxor + vpshufb + vpaddb, this one vpshufb + vpaddb (a table load per
 * pixel and step is shared by two vectors). 4 pixels x 64 channels per call; byte counters
 * (at most 4 per step) widened to 16 bits after at most 63 steps. */
#define PC4(x) (((x) & 1) + ((x) >> 1 & 1) + ((x) >> 2 & 1) + ((x) >> 3 & 1))
#define TROW16(a)                                                                                              \
  PC4((a) ^ 0), PC4((a) ^ 1), PC4((a) ^ 2), PC4((a) ^ 3), PC4((a) ^ 4), PC4((a) ^ 5), PC4((a) ^ 6), PC4((a) ^ 7), \
      PC4((a) ^ 8), PC4((a) ^ 9), PC4((a) ^ 10), PC4((a) ^ 11), PC4((a) ^ 12), PC4((a) ^ 13), PC4((a) ^ 14),      \
      PC4((a) ^ 15)
#define TROW(a) {TROW16(a), TROW16(a)}
static const uint8_t tl_lut[16][32] __attribute__((aligned(32))) = {
    TROW(0), TROW(1), TROW(2),  TROW(3),  TROW(4),  TROW(5),  TROW(6),  TROW(7),
    TROW(8), TROW(9), TROW(10), TROW(11), TROW(12), TROW(13), TROW(14), TROW(15)};
#undef TROW
#undef TROW16
#undef PC4

/* Popcounts of MR <= 4 pixels against the 64 channels of one panel block: cnt[r][0..64). */
__attribute__((target("avx2"))) static XK_ALWAYS_INLINE void tkernel_counts(const int MR, const dgeom *g,
                                                                            const uint8_t *const *ap, const uint8_t *w,
                                                                            uint16_t cnt[DMR][TCOLS]) {
  const __m256i zero = _mm256_setzero_si256(), low = _mm256_set1_epi16(0xff);
  const uint8_t *p0 = ap[0], *p1 = ap[MR > 1 ? 1 : 0], *p2 = ap[MR > 2 ? 2 : 0], *p3 = ap[MR > 3 ? 3 : 0];
  const size_t nb = g->pix; /* byte steps per tap */
  const uint8_t *lut = &tl_lut[0][0];
  const size_t chunk = g->chunk;
  /* runs of byte counters: seg_taps whole taps (chunk = nb), or chunk bytes of one tap */
  for (size_t t0 = 0; t0 < g->taps; t0 += g->seg_taps) {
    const size_t t1 = t0 + g->seg_taps < g->taps ? t0 + g->seg_taps : g->taps;
    for (size_t b0 = 0; b0 < nb; b0 += chunk) {
      const int first = t0 == 0 && b0 == 0;
      __m256i c00 = zero, c01 = zero, c10 = zero, c11 = zero, c20 = zero, c21 = zero, c30 = zero, c31 = zero;
      for (size_t t = t0; t < t1; t++) {
        const size_t off = g->toff[t] + b0;
        const uint8_t *q0 = p0 + off, *q1 = p1 + off, *q2 = p2 + off, *q3 = p3 + off;
#pragma GCC unroll 2
        for (size_t b = 0; b < chunk; b++, w += 64) {
          const __m256i w0 = _mm256_loadu_si256((const __m256i *)w), w1 = _mm256_loadu_si256((const __m256i *)(w + 32));
          __m256i l;
#define TROWK(q, x0, x1)                                                \
  l = _mm256_load_si256((const __m256i *)(lut + (size_t)(q)[b] * 8)); \
  x0 = _mm256_add_epi8(x0, _mm256_shuffle_epi8(l, w0));                 \
  x1 = _mm256_add_epi8(x1, _mm256_shuffle_epi8(l, w1));
          TROWK(q0, c00, c01)
          if (MR > 1) { TROWK(q1, c10, c11) }
          if (MR > 2) { TROWK(q2, c20, c21) }
          if (MR > 3) { TROWK(q3, c30, c31) }
#undef TROWK
        }
      }
      /* widened into cnt: even bytes are the vector's channels 0..15, odd bytes 16..31 (the
       * panel's order), so cnt ends up in channel order */
#define TFLUSH(x, dst)                                                                \
  {                                                                                   \
    __m256i e = _mm256_and_si256(x, low), o = _mm256_srli_epi16(x, 8);                \
    if (!first) {                                                                     \
      e = _mm256_add_epi16(e, _mm256_load_si256((const __m256i *)(dst)));             \
      o = _mm256_add_epi16(o, _mm256_load_si256((const __m256i *)((dst) + 16)));      \
    }                                                                                 \
    _mm256_store_si256((__m256i *)(dst), e);                                          \
    _mm256_store_si256((__m256i *)((dst) + 16), o);                                   \
  }
      TFLUSH(c00, cnt[0]) TFLUSH(c01, cnt[0] + 32)
      if (MR > 1) { TFLUSH(c10, cnt[1]) TFLUSH(c11, cnt[1] + 32) }
      if (MR > 2) { TFLUSH(c20, cnt[2]) TFLUSH(c21, cnt[2] + 32) }
      if (MR > 3) { TFLUSH(c30, cnt[3]) TFLUSH(c31, cnt[3] + 32) }
#undef TFLUSH
    }
  }
}

/* The pixels of one table-kernel call: up to 4 output pixels, consecutive in the output (flat
 * index row0 + i, possibly across the end of an output row). */
typedef struct tpix {
  const uint8_t *ap[DMR]; /* split input at each pixel's window */
  size_t oy[DMR], ox[DMR];
  size_t row0;            /* flat output row of pixel 0 */
} tpix;

/* The float stages of mr pixels x 64 channels from their counts (pixels of a group: missing
 * ones repeat the last and are not stored), with the per-pixel pointers (correction row,
 * residual, output) set up once per call instead of once per 8 channels. */
__attribute__((target("avx2"))) static XK_ALWAYS_INLINE void tstage_float(const xk_bdirect_job *j, const fstage *f,
                                                                          size_t mr, const tpix *px, size_t col0,
                                                                          uint16_t cnt[DMR][TCOLS]) {
  const size_t oc = j->s->oc, ldc = j->ldc;
  const size_t i1 = mr > 1 ? 1 : 0, i2 = mr > 2 ? 2 : i1, i3 = mr > 3 ? 3 : i2;
  const int32_t *b0 = NULL, *b1 = NULL, *b2 = NULL, *b3 = NULL;
  if (j->base) {
#define BROW(i) (j->base + ((size_t)j->ycls[px->oy[i]] * j->nxc + j->xcls[px->ox[i]]) * oc + col0)
    b0 = BROW(0), b1 = BROW(i1), b2 = BROW(i2), b3 = BROW(i3);
#undef BROW
  }
  const __m256i kf = _mm256_set1_epi32(j->kfull);
  float *y0 = (float *)j->out + px->row0 * ldc + col0;
  const float *res = j->o->residual ? j->o->residual + px->row0 * ldc + col0 : NULL;
  const uint16_t *n0 = cnt[0], *n1 = cnt[i1], *n2 = cnt[i2], *n3 = cnt[i3];
  for (size_t c = 0; c < TCOLS; c += 8) {
    /* dot = base - 2 cnt; base: the pad-0 correction row, else K */
#define DOT(b, n)                                                                           \
  _mm256_sub_epi32((b) ? _mm256_loadu_si256((const __m256i *)((b) + c)) : kf,               \
                   _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_load_si128((const __m128i *)((n) + c))), 1))
    fstage4_store(f, col0 + c, mr, ldc, y0 + c, res ? res + c : NULL, DOT(b0, n0), DOT(b1, n1), DOT(b2, n2),
                  DOT(b3, n3));
#undef DOT
  }
}

/* Bits output of mr pixels x 64 channels: bit = (dot < threshold) XOR flip, dot = base - 2 cnt,
 * 8 channels per compare, one 64-bit word per pixel (oc % 64 == 0: no padding bytes). */
__attribute__((target("avx2"))) static XK_ALWAYS_INLINE void tstage_bits(const dgeom *g, size_t mr, const tpix *px,
                                                                         size_t col0, uint16_t cnt[DMR][TCOLS]) {
  const xk_bdirect_job *j = g->j;
  const size_t oc = j->s->oc;
  const int32_t *thr = j->o->threshold + col0;
  const __m256i kf = _mm256_set1_epi32(j->kfull);
  for (size_t i = 0; i < mr; i++) {
    const int32_t *b = j->base ? j->base + ((size_t)j->ycls[px->oy[i]] * j->nxc + j->xcls[px->ox[i]]) * oc + col0 : NULL;
    uint64_t word = 0;
    for (size_t c = 0; c < TCOLS; c += 8) {
      const __m256i k = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_load_si128((const __m128i *)(cnt[i] + c))), 1);
      const __m256i dot = _mm256_sub_epi32(b ? _mm256_loadu_si256((const __m256i *)(b + c)) : kf, k);
      const __m256i lt = _mm256_cmpgt_epi32(_mm256_loadu_si256((const __m256i *)(thr + c)), dot);
      word |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(lt)) << c;
    }
    word ^= g->flipw[col0 / TCOLS];
    memcpy(j->out + (px->row0 + i) * j->ldc + col0 / 8, &word, 8);
  }
}

/* mr pixels x 64 channels [col0, col0 + 64): popcounts, then the output stage (the float stages
 * and bits in registers, else per pixel and 8 channels). */
__attribute__((target("avx2"), noinline)) static void tkernel_run(size_t mr, const dgeom *g, const tpix *px,
                                                                   const uint8_t *w, size_t col0) {
  uint16_t cnt[DMR][TCOLS] __attribute__((aligned(32)));
  switch (mr) {
    case 1: tkernel_counts(1, g, px->ap, w, cnt); break;
    case 2: tkernel_counts(2, g, px->ap, w, cnt); break;
    case 3: tkernel_counts(3, g, px->ap, w, cnt); break;
    default: tkernel_counts(4, g, px->ap, w, cnt); break;
  }
  const xk_bdirect_job *j = g->j;
  if (g->fs.on) {
    tstage_float(j, &g->fs, mr, px, col0, cnt);
    return;
  }
  if (g->bits) {
    tstage_bits(g, mr, px, col0, cnt);
    return;
  }
  for (size_t i = 0; i < mr; i++)
    for (size_t c = 0; c < TCOLS; c += DCOLS) {
      int32_t c32[DCOLS];
      for (size_t k = 0; k < DCOLS; k++) c32[k] = cnt[i][c + k];
      depilogue(j, px->row0 + i, px->oy[i], px->ox[i], col0 + c, DCOLS, c32);
    }
}

/* The table kernel over the output pixels of rows [r0, r1) (row = image x output row), taken
 * 4 at a time in output order across the ends of rows, so a row whose width is not a multiple
 * of 4 leaves no 1- to 3-pixel call (only the task's last group may be short). */
__attribute__((target("avx2"))) static void table_rows(const dgeom *g, size_t r0, size_t r1, const uint8_t *w,
                                                        size_t col0) {
  const xk_bdirect_job *j = g->j;
  const xk_conv_shape *s = j->s;
  const size_t ow = j->ow, p1 = r1 * ow;
  size_t oy = r0 % j->oh, ox = 0; /* the pixel after the last group */
  const uint8_t *row = j->ws + ((r0 / j->oh) * g->hp + oy * s->stride_h) * g->wp * g->pix; /* its input row */
  const size_t xstep = s->stride_w * g->pix, ystep = s->stride_h * g->wp * g->pix;
  /* from the last output row of an image to the first of the next (may be < ystep, or negative
   * in the unusual case stride_h > the dilated kernel height) */
  const ptrdiff_t istep = (ptrdiff_t)(g->hp * g->wp * g->pix) - (ptrdiff_t)((j->oh - 1) * ystep);
  for (size_t p = r0 * ow; p < p1; p += DMR) {
    const size_t mr = p1 - p < DMR ? p1 - p : DMR;
    tpix px;
    px.row0 = p;
    for (size_t i = 0; i < DMR; i++) {
      if (i < mr) {
        px.oy[i] = oy;
        px.ox[i] = ox;
        px.ap[i] = row + ox * xstep;
        if (++ox == ow) {
          ox = 0;
          if (++oy == j->oh) oy = 0, row += istep;
          else row += ystep;
        }
      } else { /* a missing pixel reads pixel 0's window (its counts are not stored) */
        px.oy[i] = px.oy[0];
        px.ox[i] = px.ox[0];
        px.ap[i] = px.ap[0];
      }
    }
    tkernel_run(mr, g, &px, w, col0);
  }
}

__attribute__((target("avx2"))) static void conv_task(void *ctx, size_t t) {
  const dgeom *g = (const dgeom *)ctx;
  const xk_bdirect_job *j = g->j;
  const xk_conv_shape *s = j->s;
  const size_t nrows = s->n * j->oh, r1 = (t + 1) * g->rows_per_task < nrows ? (t + 1) * g->rows_per_task : nrows;
  const size_t wblk = g->steps * 64;
  int32_t cnt[DMR][DCOLS];
  /* channel blocks outermost: a block's weights (XOR kernel: steps * 64 bytes per 8 channels;
   * table kernel: 9 KiB per 64 channels for a 3x3 layer with C = 64) stay in L1 or L2 over the
   * task's rows, where the whole panel might not */
  const size_t cols = g->table ? TCOLS : DCOLS;
  for (size_t col0 = 0; col0 < s->oc; col0 += cols) {
    const size_t nc = s->oc - col0 < cols ? s->oc - col0 : cols;
    const uint8_t *w = g->table ? j->panel + col0 / TCOLS * g->steps * 8 * 64
                                : j->panel + (col0 / XK_BDIRECT_BLOCK) * wblk;
    if (g->table) {
      table_rows(g, t * g->rows_per_task, r1, w, col0);
      continue;
    }
    for (size_t r = t * g->rows_per_task; r < r1; r++) {
      const size_t b = r / j->oh, oy = r % j->oh;
      const uint8_t *rowbase = j->ws + (b * g->hp + oy * s->stride_h) * g->wp * g->pix;
      for (size_t ox = 0; ox < j->ow; ox += DMR) {
        const size_t mr = j->ow - ox < DMR ? j->ow - ox : DMR;
        const uint8_t *ap[DMR];
        for (size_t i = 0; i < DMR; i++) ap[i] = rowbase + (ox + (i < mr ? i : 0)) * s->stride_w * g->pix;
        if (g->fs.on && nc == DCOLS) { /* a whole block of 8 channels, in registers */
          dkernel_float8(mr, g, ap, w, r * j->ow + ox, oy, ox, col0);
          continue;
        }
        dkernel_any(mr, g->steps, g->soff, ap, w, cnt);
        for (size_t i = 0; i < mr; i++) depilogue(j, r * j->ow + ox + i, oy, ox + i, col0, nc, cnt[i]);
      }
    }
  }
}

void xk_bdirect_run(const xk_bdirect_job *j) {
  const xk_conv_shape *s = j->s;
  dgeom g;
  memset(&g, 0, sizeof g);
  g.j = j;
  padded_dims(s, j->oh, j->ow, &g.hp, &g.wp);
  g.dw = s->c / 32;
  g.pix = g.dw * 8;
  g.steps = steps_of(s);
  g.fs = fstage_of(j->o);
  g.table = table_kernel(s);
  if (g.table && j->o->kind == XK_OUT_BITS && s->oc <= 64 * TFLIP_WORDS) {
    g.bits = 1;
    for (size_t w = 0; w < s->oc / TCOLS; w++) g.flipw[w] = xk_flip_word(j->o, w * TCOLS, TCOLS);
  }
  g.taps = s->kh * s->kw;
  g.chunk = g.pix <= 63 ? g.pix : 32;
  g.seg_taps = g.pix <= 63 ? 63 / g.pix : 1;
  const size_t dh = xk_dil(s->dil_h), dwl = xk_dil(s->dil_w);
  for (size_t ky = 0, t = 0; ky < s->kh; ky++)
    for (size_t kx = 0; kx < s->kw; kx++, t++) {
      const size_t off = (ky * dh * g.wp + kx * dwl) * g.pix;
      if (g.table)
        g.toff[t] = off;
      else
        for (size_t d = 0; d < g.dw; d++) g.soff[t * g.dw + d] = off + 8 * d;
    }
  /* tasks of rows in image order (threadpool.c keeps each thread's rows from op to op); one task
   * (run on this thread) for small calls */
  const size_t nthreads = (size_t)xk_get_num_threads();
  const int serial = s->n * j->oh * j->ow * s->oc * g.steps < SERIAL_WORK;
  size_t nrows = s->n * g.hp, ntasks = serial ? 1 : nthreads * 2;
  g.rows_per_task = xk_div_up(nrows, ntasks < nrows ? ntasks : nrows);
  xk_parallel_for(xk_div_up(nrows, g.rows_per_task), prep_task, &g);
  nrows = s->n * j->oh;
  g.rows_per_task = serial || nthreads == 1 ? nrows : 1; /* one output row per task: see threadpool.c */
  xk_parallel_for(xk_div_up(nrows, g.rows_per_task), conv_task, &g);
}
#else
void xk_bdirect_run(const xk_bdirect_job *j) { (void)j; }
#endif
