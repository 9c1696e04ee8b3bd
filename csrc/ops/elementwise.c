/* Float pools and elementwise ops on NHWC tensors. */
#include <math.h>

#include "../ukernels/fgemm/fgemm.h"
#include "ops_internal.h"

#define SERIAL_ELEMS ((size_t)1 << 16)

typedef struct pool_job {
  const xk_pool_shape *s;
  size_t oh, ow;
  int avg, include_pad, avx2;
  const float *in;
  float *out;
} pool_job;

static void pool_task(void *ctx, size_t t) { /* one output row (b, oy) */
  const pool_job *j = (const pool_job *)ctx;
  const xk_pool_shape *s = j->s;
  const size_t c = s->c, b = t / j->oh, oy = t % j->oh;
  long iy0 = (long)(oy * s->stride_h) - (long)s->pad_t;
  long ylo = iy0 < 0 ? 0 : iy0, yhi = iy0 + (long)s->kh > (long)s->h ? (long)s->h : iy0 + (long)s->kh;
#ifdef XK_HAVE_AVX2
  if (j->avx2) {
    xk_pool_row r = {j->in + b * s->h * s->w * c, s->h, s->w, c, s->kw, s->stride_w, ylo, yhi, (long)s->pad_l,
                     (long)s->pad_r, j->include_pad, iy0, (long)s->kh, (long)s->pad_b, j->avg, j->ow,
                     j->out + (b * j->oh + oy) * j->ow * c};
    xk_pool_row_avx2(&r);
    return;
  }
#endif
  for (size_t ox = 0; ox < j->ow; ox++) {
    long ix0 = (long)(ox * s->stride_w) - (long)s->pad_l;
    long xlo = ix0 < 0 ? 0 : ix0, xhi = ix0 + (long)s->kw > (long)s->w ? (long)s->w : ix0 + (long)s->kw;
    float *y = j->out + ((b * j->oh + oy) * j->ow + ox) * c;
    int first = 1;
    for (long iy = ylo; iy < yhi; iy++)
      for (long ix = xlo; ix < xhi; ix++) {
        const float *x = j->in + ((b * s->h + (size_t)iy) * s->w + (size_t)ix) * c;
        if (first) {
          for (size_t ch = 0; ch < c; ch++) y[ch] = x[ch];
          first = 0;
        } else if (j->avg) {
          for (size_t ch = 0; ch < c; ch++) y[ch] += x[ch];
        } else {
          for (size_t ch = 0; ch < c; ch++) y[ch] = (x[ch] > y[ch] || x[ch] != x[ch]) ? x[ch] : y[ch];
        }
      }
    if (j->avg) {
      size_t cnt;
      if (j->include_pad) {
        /* PyTorch: the window clipped to the padded input counts, taps in the padding included */
        long ey0 = iy0, ey1 = iy0 + (long)s->kh, ex0 = ix0, ex1 = ix0 + (long)s->kw;
        long hmax = (long)(s->h + s->pad_b), wmax = (long)(s->w + s->pad_r);
        if (ey1 > hmax) ey1 = hmax;
        if (ex1 > wmax) ex1 = wmax;
        cnt = (size_t)((ey1 - ey0) * (ex1 - ex0));
      } else {
        cnt = (size_t)((yhi - ylo) * (xhi - xlo));
      }
      const float div = (float)cnt; /* divide (not multiply by 1/cnt): the format's rule */
      for (size_t ch = 0; ch < c; ch++) y[ch] /= div;
    }
  }
}

static xk_status run_pool(const xk_pool_shape *s, int avg, int include_pad, const float *in, float *out, const char *op) {
  size_t oh, ow;
  xk_status st = xk_pool_out_size(s, &oh, &ow);
  if (st != XK_OK) return st;
  if (!in || !out) return xk_fail(XK_ERR_ARGUMENT, "%s: null buffer", op);
  pool_job j = {s, oh, ow, avg, include_pad, xk_use_avx2(), in, out};
  size_t ntasks = s->n * oh;
  if (s->n * oh * ow * s->c * s->kh * s->kw < SERIAL_ELEMS) {
    for (size_t t = 0; t < ntasks; t++) pool_task(&j, t);
  } else {
    xk_parallel_for(ntasks, pool_task, &j);
  }
  return XK_OK;
}

xk_status xk_maxpool2d(const xk_pool_shape *s, const float *in, float *out) {
  return run_pool(s, 0, 0, in, out, "xk_maxpool2d");
}

xk_status xk_avgpool2d(const xk_pool_shape *s, int count_include_pad, const float *in, float *out) {
  return run_pool(s, 1, count_include_pad, in, out, "xk_avgpool2d");
}

xk_status xk_global_avgpool(size_t n, size_t hw, size_t c, const float *in, float *out) {
  if (!in || !out) return xk_fail(XK_ERR_ARGUMENT, "xk_global_avgpool: null buffer");
  if (n == 0 || hw == 0 || c == 0) return xk_fail(XK_ERR_SHAPE, "xk_global_avgpool: empty tensor");
  const float div = (float)hw;
  for (size_t b = 0; b < n; b++) {
    float *y = out + b * c;
    const float *x = in + b * hw * c;
    for (size_t ch = 0; ch < c; ch++) y[ch] = x[ch];
    for (size_t p = 1; p < hw; p++)
      for (size_t ch = 0; ch < c; ch++) y[ch] += x[p * c + ch];
    for (size_t ch = 0; ch < c; ch++) y[ch] /= div;
  }
  return XK_OK;
}

/* add: blocks of whole rows (about ADD_BLOCK floats), the activation applied to a block while it
 * is in cache; the blocks split over threads above SERIAL_ELEMS elements. */
#define ADD_BLOCK ((size_t)1 << 14)
typedef struct add_job {
  size_t rows, c, rows_per_task;
  const float *a, *b;
  const xk_act_params *act;
  float *out;
  int avx2;
} add_job;

static void add_task(void *ctx, size_t t) {
  const add_job *j = (const add_job *)ctx;
  const size_t r0 = t * j->rows_per_task, nr = j->rows - r0 < j->rows_per_task ? j->rows - r0 : j->rows_per_task;
  const size_t off = r0 * j->c, count = nr * j->c;
  const float *a = j->a + off, *b = j->b + off;
  float *y = j->out + off;
#ifdef XK_HAVE_AVX2
  if (j->avx2) {
    xk_add_avx2(a, b, y, count);
  } else
#endif
  {
    for (size_t i = 0; i < count; i++) y[i] = a[i] + b[i];
  }
  if (j->act) {
    if (j->act->kind == XK_ACT_PRELU && j->act->alpha_count != 1) {
      for (size_t r = 0; r < nr; r++) xk_act_inplace(j->act, y + r * j->c, j->c, 0);
    } else {
      xk_act_inplace(j->act, y, count, 0); /* the same function for every channel */
    }
  }
}

xk_status xk_add(size_t rows, size_t c, const float *a, const float *b, const xk_act_params *act, float *out) {
  if (!a || !b || !out) return xk_fail(XK_ERR_ARGUMENT, "xk_add: null buffer");
  if (act && act->kind != XK_ACT_NONE) {
    xk_status st = xk_act_check(act, c, "xk_add");
    if (st != XK_OK) return st;
  } else {
    act = NULL;
  }
  if (rows == 0 || c == 0) return XK_OK;
  add_job j = {rows, c, 1, a, b, act, out, xk_use_avx2()};
  j.rows_per_task = ADD_BLOCK / c ? ADD_BLOCK / c : 1;
  const size_t ntasks = xk_div_up(rows, j.rows_per_task);
  if (rows * c < SERIAL_ELEMS || ntasks == 1) {
    for (size_t t = 0; t < ntasks; t++) add_task(&j, t);
  } else {
    xk_parallel_for(ntasks, add_task, &j);
  }
  return XK_OK;
}

xk_status xk_concat(size_t rows, size_t k, const float *const *in, const size_t *c, float *out) {
  if (!in || !c || !out || k == 0) return xk_fail(XK_ERR_ARGUMENT, "xk_concat: null argument or no inputs");
  size_t total = 0;
  for (size_t i = 0; i < k; i++) {
    if (!in[i] || c[i] == 0) return xk_fail(XK_ERR_ARGUMENT, "xk_concat: input %zu is null or empty", i);
    total += c[i];
  }
  for (size_t r = 0; r < rows; r++) {
    float *y = out + r * total;
    for (size_t i = 0; i < k; i++) {
      memcpy(y, in[i] + r * c[i], c[i] * sizeof(float));
      y += c[i];
    }
  }
  return XK_OK;
}

xk_status xk_activation(size_t rows, size_t c, const float *in, const xk_act_params *act, float *out) {
  if (!in || !out || !act) return xk_fail(XK_ERR_ARGUMENT, "xk_activation: null argument");
  xk_status st = xk_act_check(act, c, "xk_activation");
  if (st != XK_OK) return st;
  if (out != in) memmove(out, in, rows * c * sizeof(float));
  for (size_t r = 0; r < rows; r++) xk_act_inplace(act, out + r * c, c, 0);
  return XK_OK;
}

xk_status xk_affine(size_t rows, size_t c, const float *in, const float *scale, const float *bias, float *out) {
  if (!in || !out) return xk_fail(XK_ERR_ARGUMENT, "xk_affine: null buffer");
  for (size_t r = 0; r < rows; r++) {
    const float *x = in + r * c;
    float *y = out + r * c;
    for (size_t ch = 0; ch < c; ch++) {
      float v = scale ? x[ch] * scale[ch] : x[ch];
      y[ch] = bias ? v + bias[ch] : v;
    }
  }
  return XK_OK;
}

xk_status xk_softmax(size_t rows, size_t c, const float *in, float *out) {
  if (!in || !out) return xk_fail(XK_ERR_ARGUMENT, "xk_softmax: null buffer");
  if (c == 0) return xk_fail(XK_ERR_SHAPE, "xk_softmax: no classes");
  for (size_t r = 0; r < rows; r++) {
    const float *x = in + r * c;
    float *y = out + r * c;
    float m = x[0];
    for (size_t i = 1; i < c; i++) m = x[i] > m ? x[i] : m;
    float sum = 0.0f;
    for (size_t i = 0; i < c; i++) {
      y[i] = expf(x[i] - m);
      sum += y[i];
    }
    const float inv = 1.0f / sum;
    for (size_t i = 0; i < c; i++) y[i] *= inv;
  }
  return XK_OK;
}

xk_status xk_nhwc_to_nchw(size_t n, size_t h, size_t w, size_t c, const float *in, float *out) {
  if (!in || !out || in == out) return xk_fail(XK_ERR_ARGUMENT, "xk_nhwc_to_nchw: null or aliased buffers");
  for (size_t b = 0; b < n; b++)
    for (size_t y = 0; y < h; y++)
      for (size_t x = 0; x < w; x++)
        for (size_t ch = 0; ch < c; ch++) out[((b * c + ch) * h + y) * w + x] = in[((b * h + y) * w + x) * c + ch];
  return XK_OK;
}

/* One image row: C planes read side by side, pixels written interleaved. The 1- and 3-channel
 * cases (grey and RGB inputs) have the channel count as a constant, so the loop is unrolled. */
static void chw_row(size_t c, size_t w, size_t plane, const float *in, float *out) {
  if (c == 3) {
    for (size_t x = 0; x < w; x++) {
      out[3 * x] = in[x];
      out[3 * x + 1] = in[plane + x];
      out[3 * x + 2] = in[2 * plane + x];
    }
  } else if (c == 1) {
    memcpy(out, in, w * sizeof(float));
  } else {
    for (size_t x = 0; x < w; x++)
      for (size_t ch = 0; ch < c; ch++) out[x * c + ch] = in[ch * plane + x];
  }
}

xk_status xk_nchw_to_nhwc(size_t n, size_t c, size_t h, size_t w, const float *in, float *out) {
  if (!in || !out || in == out) return xk_fail(XK_ERR_ARGUMENT, "xk_nchw_to_nhwc: null or aliased buffers");
  const size_t plane = h * w;
  for (size_t b = 0; b < n; b++)
    for (size_t y = 0; y < h; y++) chw_row(c, w, plane, in + b * c * plane + y * w, out + (b * h + y) * w * c);
  return XK_OK;
}
