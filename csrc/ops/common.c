/* Shape checks, output stages and packed-buffer headers shared by the operators. */
#include "ops_internal.h"

xk_status xk_conv_out_size(const xk_conv_shape *s, size_t *oh, size_t *ow) {
  if (!s) return xk_fail(XK_ERR_ARGUMENT, "conv: null shape");
  if (s->kh == 0 || s->kw == 0 || s->stride_h == 0 || s->stride_w == 0)
    return xk_fail(XK_ERR_SHAPE, "conv: kernel %zux%zu and stride %zux%zu must be >= 1", s->kh, s->kw,
                   s->stride_h, s->stride_w);
  size_t ekh = (s->kh - 1) * xk_dil(s->dil_h) + 1, ekw = (s->kw - 1) * xk_dil(s->dil_w) + 1;
  size_t ph = s->h + s->pad_t + s->pad_b, pw = s->w + s->pad_l + s->pad_r;
  if (ph < ekh || pw < ekw)
    return xk_fail(XK_ERR_SHAPE, "conv: kernel %zux%zu (dilated %zux%zu) larger than padded input %zux%zu",
                   s->kh, s->kw, ekh, ekw, ph, pw);
  if (s->pad_t >= ekh || s->pad_b >= ekh || s->pad_l >= ekw || s->pad_r >= ekw)
    return xk_fail(XK_ERR_SHAPE, "conv: padding (t=%zu, l=%zu, b=%zu, r=%zu) must be smaller than the kernel %zux%zu",
                   s->pad_t, s->pad_l, s->pad_b, s->pad_r, ekh, ekw);
  if (oh) *oh = (ph - ekh) / s->stride_h + 1;
  if (ow) *ow = (pw - ekw) / s->stride_w + 1;
  return XK_OK;
}

xk_status xk_conv_check(const xk_conv_shape *s, const char *op, size_t *oh, size_t *ow) {
  if (!s) return xk_fail(XK_ERR_ARGUMENT, "%s: null shape", op);
  if (s->n == 0 || s->h == 0 || s->w == 0 || s->c == 0 || s->oc == 0)
    return xk_fail(XK_ERR_SHAPE, "%s: empty tensor (n=%zu, h=%zu, w=%zu, c=%zu, oc=%zu)", op, s->n, s->h, s->w,
                   s->c, s->oc);
  if (s->kh > 255 || s->kw > 255 || s->c > ((size_t)1 << 24) || s->oc > ((size_t)1 << 24))
    return xk_fail(XK_ERR_SHAPE, "%s: unreasonable size (kernel %zux%zu, c=%zu, oc=%zu)", op, s->kh, s->kw, s->c,
                   s->oc);
  xk_status st = xk_conv_out_size(s, oh, ow);
  if (st != XK_OK) {
    char msg[256];
    strncpy(msg, xk_last_error(), sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    return xk_fail(st, "%s: %s", op, msg);
  }
  return XK_OK;
}

size_t xk_conv_taps(const xk_conv_shape *s) { return s->kh * s->kw; }

xk_status xk_act_check(const xk_act_params *a, size_t c, const char *op) {
  if ((unsigned)a->kind >= XK_ACT_COUNT) return xk_fail(XK_ERR_ARGUMENT, "%s: unknown activation %d", op, (int)a->kind);
  if (a->kind == XK_ACT_PRELU && (!a->alpha || (a->alpha_count != 1 && a->alpha_count != c)))
    return xk_fail(XK_ERR_ARGUMENT, "%s: PReLU needs 1 or %zu slopes (got %zu%s)", op, c, a->alpha_count,
                   a->alpha ? "" : ", null");
  if (a->kind == XK_ACT_HARDTANH && !(a->lo <= a->hi))
    return xk_fail(XK_ERR_ARGUMENT, "%s: hardtanh bounds lo=%g > hi=%g", op, (double)a->lo, (double)a->hi);
  return XK_OK;
}

xk_status xk_output_check(const xk_output *o, size_t n, size_t ldc, int flags, const char *op) {
  const int binary_acc = flags & XK_CHECK_BINARY_ACC;
  if (!o) return xk_fail(XK_ERR_ARGUMENT, "%s: null output stage", op);
  switch (o->kind) {
    case XK_OUT_INT32:
    case XK_OUT_FLOAT:
      if (ldc < n) return xk_fail(XK_ERR_SHAPE, "%s: output stride %zu < %zu channels", op, ldc, n);
      break;
    case XK_OUT_BITS:
      if (binary_acc && !o->threshold) return xk_fail(XK_ERR_ARGUMENT, "%s: bits output needs thresholds", op);
      if (ldc < xk_packed_row_bytes(n) || ldc % 8)
        return xk_fail(XK_ERR_SHAPE, "%s: bits output stride %zu bytes; need a multiple of 8 >= %zu", op, ldc,
                       xk_packed_row_bytes(n));
      break;
    default: return xk_fail(XK_ERR_ARGUMENT, "%s: unknown output kind %d", op, (int)o->kind);
  }
  if (o->residual && (o->kind != XK_OUT_FLOAT || !(flags & XK_CHECK_RESIDUAL)))
    return xk_fail(XK_ERR_ARGUMENT,
                   "%s: a residual input needs float output of a binary conv / dense or a float conv2d op", op);
  return xk_act_check(&o->act, n, op);
}

void xk_act_inplace(const xk_act_params *a, float *y, size_t n, size_t ch0) {
  switch (a->kind) {
    case XK_ACT_RELU:
      for (size_t i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
      break;
    case XK_ACT_RELU6:
      for (size_t i = 0; i < n; i++) {
        float v = y[i] > 0.0f ? y[i] : 0.0f;
        y[i] = v < 6.0f ? v : 6.0f;
      }
      break;
    case XK_ACT_HARDTANH: {
      const float lo = a->lo, hi = a->hi;
      for (size_t i = 0; i < n; i++) {
        float v = y[i] < lo ? lo : y[i];
        y[i] = v > hi ? hi : v;
      }
      break;
    }
    case XK_ACT_PRELU:
      if (a->alpha_count == 1) {
        const float al = a->alpha[0];
        for (size_t i = 0; i < n; i++) y[i] = y[i] >= 0.0f ? y[i] : al * y[i];
      } else {
        const float *al = a->alpha + ch0;
        for (size_t i = 0; i < n; i++) y[i] = y[i] >= 0.0f ? y[i] : al[i] * y[i];
      }
      break;
    case XK_ACT_LEAKY: {
      const float sl = a->lo;
      for (size_t i = 0; i < n; i++) y[i] = y[i] >= 0.0f ? y[i] : sl * y[i];
      break;
    }
    default: break;
  }
}

/* The output stage in place on channels [col0, col0 + n): one pass per operation, each a plain
 * loop the compiler vectorizes; the same roundings as evaluating xk_out_value per element. */
void xk_output_apply_passes(const xk_output *o, float *y, size_t col0, size_t n) {
  if (o->scale) {
    const float *s = o->scale + col0;
    if (o->bias) {
      const float *b = o->bias + col0;
      for (size_t c = 0; c < n; c++) y[c] = s[c] * y[c] + b[c]; /* no contraction: two roundings */
    } else {
      for (size_t c = 0; c < n; c++) y[c] = s[c] * y[c];
    }
  } else if (o->bias) {
    const float *b = o->bias + col0;
    for (size_t c = 0; c < n; c++) y[c] = y[c] + b[c];
  }
  if (o->act.kind != XK_ACT_NONE) xk_act_inplace(&o->act, y, n, col0);
  if (o->post_scale) {
    const float *s = o->post_scale + col0;
    for (size_t c = 0; c < n; c++) y[c] = y[c] * s[c];
  }
  if (o->post_bias) {
    const float *b = o->post_bias + col0;
    for (size_t c = 0; c < n; c++) y[c] = y[c] + b[c];
  }
}

void xk_output_apply(const xk_output *o, float *y, size_t col0, size_t n) {
  if (!xk_stage_rows(o, col0, n, 1, NULL, y, 0, y, 0)) xk_output_apply_passes(o, y, col0, n);
}

void xk_output_apply_rows(const xk_output *o, float *y, size_t rows, size_t ldc, size_t col0, size_t n) {
  if (rows == 0 || n == 0) return;
  if (ldc == n && col0 == 0 && rows > 1) { /* contiguous: channel-wise arrays repeat every n elements */
    const int per_channel_act = o->act.kind == XK_ACT_PRELU && o->act.alpha_count != 1;
    if (!o->scale && !o->bias && !o->post_scale && !o->post_bias && !per_channel_act) {
      if (o->act.kind != XK_ACT_NONE) xk_act_inplace(&o->act, y, rows * n, 0);
      return;
    }
  }
  if (xk_stage_rows(o, col0, n, rows, NULL, y, ldc, y, ldc)) return;
  for (size_t r = 0; r < rows; r++) xk_output_apply_passes(o, y + r * ldc, col0, n);
}

void xk_output_store_f32(const xk_output *o, float *acc, size_t col0, size_t ncols, void *out, size_t ldc, size_t row) {
  switch (o->kind) {
    case XK_OUT_FLOAT: {
      float *y = (float *)out + row * ldc + col0;
      if (xk_stage_rows(o, col0, ncols, 1, NULL, acc, 0, y, 0)) break; /* the common stages, one pass */
      memcpy(y, acc, ncols * sizeof(float));
      xk_output_apply_passes(o, y, col0, ncols);
      break;
    }
    case XK_OUT_INT32: { /* float accumulators are never stored as int32 (checked by the ops) */
      int32_t *y = (int32_t *)out + row * ldc + col0;
      for (size_t c = 0; c < ncols; c++) y[c] = (int32_t)acc[c];
      break;
    }
    case XK_OUT_BITS: {
      xk_output_apply(o, acc, col0, ncols);
      uint8_t *y = (uint8_t *)out + row * ldc + (col0 / 64) * 8;
      for (size_t w0 = 0; w0 < ncols; w0 += 64) {
        uint64_t word = 0;
        size_t nb = ncols - w0 < 64 ? ncols - w0 : 64;
        for (size_t c = 0; c < nb; c++) word |= (uint64_t)!(acc[w0 + c] >= 0.0f) << c;
        memcpy(y + (w0 / 64) * 8, &word, 8);
      }
      break;
    }
  }
}

xk_status xk_packed_check(const void *packed, size_t packed_size, uint32_t magic, uint64_t n, uint64_t k,
                          size_t need, const char *op) {
  if (!packed) return xk_fail(XK_ERR_ARGUMENT, "%s: null packed weights", op);
  if (packed_size < XK_PACKED_HEADER) return xk_fail(XK_ERR_MEMORY, "%s: packed weights buffer too small", op);
  xk_packed_header h;
  memcpy(&h, packed, sizeof h);
  if (h.magic != magic) return xk_fail(XK_ERR_ARGUMENT, "%s: buffer was not packed by this op (bad magic)", op);
  if (h.n != n || h.k != k)
    return xk_fail(XK_ERR_SHAPE, "%s: weights packed for n=%llu, k=%llu but called with n=%llu, k=%llu", op,
                   (unsigned long long)h.n, (unsigned long long)h.k, (unsigned long long)n, (unsigned long long)k);
  if (packed_size < need)
    return xk_fail(XK_ERR_MEMORY, "%s: packed weights buffer %zu bytes < %zu needed", op, packed_size, need);
  return XK_OK;
}
