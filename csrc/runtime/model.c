/*
 * The model engine: .xk validation (docs/format.md §7), arena layout, weight re-packing for the
 * micro-kernels, and the executor.
 *
 * Arena layout (all parts 64-byte aligned, sized by the same code in a counting pass):
 *   [xk_model][rt_op x op_count][kernel-ready weights of every op]
 *   [activations: max_batch * arena_size, the converter's plan scaled by the batch]
 *   [scratch: the largest workspace of any op]
 * Nothing is allocated while loading or running; the file bytes are read in place.
 */
#include <math.h>
#include <string.h>

#include "engine_internal.h"

/* ------------------------------------------------------------------ runtime structs */
typedef struct rt_op {
  const xkf_op *f;
  uint16_t kind;
  uint8_t in_bits, out_bits; /* dtype of input 0 / output is BITS */
  int depthwise, int8;
  xk_conv_shape cs;          /* conv geometry (n = 1; the run sets the batch) */
  xk_pool_shape ps;
  size_t rows;               /* per sample: dense rows / pixels / flattened rows */
  size_t k, nout;            /* dense: K and OC; elementwise: channels (last dim) */
  size_t count;              /* elements per sample of the output */
  xk_output out;
  xk_act_params act;
  xk_quant q;
  const void *w;             /* raw weights in the file (depthwise f32, ...) */
  const float *t;            /* SIGN thresholds / AFFINE scale */
  const float *b;            /* AFFINE bias */
  const uint8_t *u8;         /* SIGN flip / bit maxpool invert */
  uint8_t *packed;
  size_t packed_size;
  size_t ws_size;
  uint64_t macs;
  uint64_t weight_bytes;
  /* load-time fusion (plan_fusion): res_in >= 0: this binary conv adds tensor res_in and writes
   * the next op's output; fused: this op runs inside the previous one */
  int32_t res_in;
  int fused;
} rt_op;

struct xk_model {
  const uint8_t *data;
  size_t size;
  const xkf_header *h;
  const xkf_tensor *tensors;
  const xkf_op *fops;
  const int32_t *io;
  const xkf_meta *meta;
  const char *strings;
  rt_op *ops;
  uint8_t *act;
  uint64_t act_per_sample;
  uint32_t max_batch;
  uint32_t flags;
  uint8_t *ws;
  size_t ws_size;
  xk_op_hook hook;
  void *hook_user;
};

static const char *const kKindNames[XKF_OP_KIND_COUNT] = {
    "?",       "bconv2d", "bdense",        "conv2d", "dense",      "sign",   "unpack", "maxpool2d", "avgpool2d",
    "global_avgpool", "add", "concat", "flatten", "reshape", "activation", "affine", "softmax"};

/* ------------------------------------------------------------------ small helpers */
#define FMT_FAIL(...) xk_fail(XK_ERR_FORMAT, __VA_ARGS__)

static int add_overflows(uint64_t a, uint64_t b, uint64_t *out) {
  *out = a + b;
  return *out < a;
}

static int mul_overflows(uint64_t a, uint64_t b, uint64_t *out) {
  if (a && b > UINT64_MAX / a) return 1;
  *out = a * b;
  return 0;
}

/* [off, off + len) inside [0, size)? */
static int in_bounds(uint64_t off, uint64_t len, uint64_t size) {
  uint64_t end;
  return !add_overflows(off, len, &end) && end <= size;
}

static const char *str_at(const xk_model *m, uint32_t off) { return m->strings + off; }

/* Bump allocator over the arena; counts only when base is NULL. */
typedef struct bump {
  uint8_t *base;
  size_t used, cap;
} bump;

static void *bump_take(bump *b, size_t n) {
  size_t at = xk_round_up(b->used, 64);
  b->used = at + xk_round_up(n ? n : 1, 64);
  if (!b->base || b->used > b->cap) return NULL;
  return b->base + at;
}

/* ------------------------------------------------------------------ file-level checks */
static xk_status check_file(const uint8_t *d, size_t size, xk_model *m) {
  if (!d) return xk_fail(XK_ERR_ARGUMENT, "model: null data");
  if (((uintptr_t)d) % 8) return xk_fail(XK_ERR_ARGUMENT, "model: the file bytes must be 8-byte aligned (got address %% 8 = %u)", (unsigned)((unsigned)(((uintptr_t)d) % 8)));
  if (size < sizeof(xkf_header)) return FMT_FAIL("model file truncated: %zu bytes, shorter than the 128-byte header", size);
  const xkf_header *h = (const xkf_header *)d;
  if (memcmp(h->magic, XKF_MAGIC, 4) != 0) return FMT_FAIL("not an xnorkit model: magic is not \"XNRK\"");
  if (h->version_major != XKF_VERSION_MAJOR)
    return FMT_FAIL("unsupported format version %u.%u (this engine reads version %u.x)", (unsigned)(h->version_major), (unsigned)(h->version_minor), (unsigned)(XKF_VERSION_MAJOR));
  if (h->header_size != sizeof(xkf_header)) return FMT_FAIL("header_size is %u, expected 128", (unsigned)(h->header_size));
  if (xk_crc32(0, d, 124) != h->header_crc32) return FMT_FAIL("header checksum mismatch (header_crc32): the header is corrupted");
  if ((h->flags & XKF_FLAGS_REQUIRED) != XKF_FLAGS_REQUIRED || (h->flags & ~XKF_FLAGS_KNOWN))
    return FMT_FAIL("flags 0x%x: expected all of 0x%x and no unknown bits", (unsigned)(h->flags), (unsigned)(XKF_FLAGS_REQUIRED));
  if (h->file_size != size) {
    if (h->file_size > size) return FMT_FAIL("model file truncated: header says %llu bytes, got %zu", (unsigned long long)h->file_size, size);
    return FMT_FAIL("file_size is %llu but %zu bytes were given (trailing data)", (unsigned long long)h->file_size, size);
  }
  if (xk_crc32(0, d + h->header_size, size - h->header_size) != h->crc32)
    return FMT_FAIL("checksum mismatch (crc32 of bytes [128, %zu)): the file is corrupted", size);
  if (h->arena_size % XKF_ALIGN) return FMT_FAIL("arena_size %llu is not a multiple of 64", (unsigned long long)h->arena_size);
  if (h->op_count == 0 || h->input_count == 0 || h->output_count == 0)
    return FMT_FAIL("empty graph: %u ops, %u inputs, %u outputs", (unsigned)(h->op_count), (unsigned)(h->input_count), (unsigned)(h->output_count));
  if (h->reserved != 0) return FMT_FAIL("header reserved field is %u, expected 0", (unsigned)(h->reserved));
  if (h->data_offset % XKF_ALIGN || h->data_offset > size || h->data_size != size - h->data_offset)
    return FMT_FAIL("data area [%llu, +%llu) does not match the file (size %zu, offsets multiple of 64)",
                    (unsigned long long)h->data_offset, (unsigned long long)h->data_size, size);
  /* tables: aligned, inside the file, not overlapping each other or the data area */
  struct { const char *name; uint64_t off, len; } parts[5];
  uint64_t n;
  parts[0].name = "tensor table"; parts[0].off = h->tensor_offset;
  if (mul_overflows(h->tensor_count, sizeof(xkf_tensor), &n)) return FMT_FAIL("tensor_count overflows");
  parts[0].len = n;
  parts[1].name = "op table"; parts[1].off = h->op_offset;
  if (mul_overflows(h->op_count, sizeof(xkf_op), &n)) return FMT_FAIL("op_count overflows");
  parts[1].len = n;
  parts[2].name = "io table"; parts[2].off = h->io_offset;
  parts[2].len = ((uint64_t)h->input_count + h->output_count) * 4;
  parts[3].name = "metadata table"; parts[3].off = h->meta_offset;
  if (mul_overflows(h->meta_count, sizeof(xkf_meta), &n)) return FMT_FAIL("meta_count overflows");
  parts[3].len = n;
  parts[4].name = "string table"; parts[4].off = h->strings_offset; parts[4].len = h->strings_size;
  for (int i = 0; i < 5; i++) {
    if (parts[i].off % XKF_ALIGN) return FMT_FAIL("%s offset %llu is not a multiple of 64", parts[i].name, (unsigned long long)parts[i].off);
    if (parts[i].len == 0) continue;
    if (parts[i].off < sizeof(xkf_header) || !in_bounds(parts[i].off, parts[i].len, h->data_offset))
      return FMT_FAIL("%s [%llu, +%llu) lies outside the table area [128, %llu)", parts[i].name,
                      (unsigned long long)parts[i].off, (unsigned long long)parts[i].len, (unsigned long long)h->data_offset);
    for (int j = 0; j < i; j++) {
      if (parts[j].len == 0) continue;
      if (parts[i].off < parts[j].off + parts[j].len && parts[j].off < parts[i].off + parts[i].len)
        return FMT_FAIL("%s overlaps the %s", parts[i].name, parts[j].name);
    }
  }
  if (h->strings_size == 0) return FMT_FAIL("string table is empty (it must hold at least the empty string)");
  const char *s = (const char *)d + h->strings_offset;
  if (s[0] != '\0' || s[h->strings_size - 1] != '\0') return FMT_FAIL("string table must start and end with a NUL byte");
  m->data = d;
  m->size = size;
  m->h = h;
  m->tensors = (const xkf_tensor *)(d + h->tensor_offset);
  m->fops = (const xkf_op *)(d + h->op_offset);
  m->io = (const int32_t *)(d + h->io_offset);
  m->meta = (const xkf_meta *)(d + h->meta_offset);
  m->strings = s;
  m->act_per_sample = h->arena_size;
  return XK_OK;
}

static size_t dtype_width(uint8_t dt) {
  switch (dt) {
    case XKF_DTYPE_F32: case XKF_DTYPE_I32: return 4;
    case XKF_DTYPE_I8: case XKF_DTYPE_U8: return 1;
    default: return 0;
  }
}

static xk_status check_tensors(const xk_model *m) {
  const xkf_header *h = m->h;
  for (uint32_t i = 0; i < h->tensor_count; i++) {
    const xkf_tensor *t = &m->tensors[i];
    if (t->name >= h->strings_size) return FMT_FAIL("tensor %u: name offset %u outside the string table", (unsigned)(i), (unsigned)(t->name));
    const char *nm = str_at(m, t->name);
    if (t->dtype < XKF_DTYPE_F32 || t->dtype > XKF_DTYPE_BITS) return FMT_FAIL("tensor %u '%s': unknown dtype %u", (unsigned)(i), nm, (unsigned)(t->dtype));
    if (t->storage != XKF_STORAGE_CONST && t->storage != XKF_STORAGE_ARENA)
      return FMT_FAIL("tensor %u '%s': unknown storage %u", (unsigned)(i), nm, (unsigned)(t->storage));
    if (t->ndim < 1 || t->ndim > 4) return FMT_FAIL("tensor %u '%s': ndim %u outside 1..4", (unsigned)(i), nm, (unsigned)(t->ndim));
    if (t->torch_layout > XKF_TORCH_NCL) return FMT_FAIL("tensor %u '%s': unknown torch_layout %u", (unsigned)(i), nm, (unsigned)(t->torch_layout));
    uint64_t elems = 1, rows = 1;
    for (int d = 0; d < 4; d++) {
      if (d >= t->ndim && t->shape[d] != 1) return FMT_FAIL("tensor %u '%s': unused dimension %d is %u, expected 1", (unsigned)(i), nm, (int)(d), (unsigned)(t->shape[d]));
      if (t->shape[d] == 0) return FMT_FAIL("tensor %u '%s': dimension %d is zero", (unsigned)(i), nm, (int)(d));
      if (mul_overflows(elems, t->shape[d], &elems)) return FMT_FAIL("tensor %u '%s': size overflows", (unsigned)(i), nm);
      if (d < t->ndim - 1) rows *= t->shape[d];
    }
    uint64_t want;
    if (t->dtype == XKF_DTYPE_BITS) {
      uint64_t rb = XKF_PACKED_ROW_BYTES(t->shape[t->ndim - 1]);
      if (t->row_bytes != rb) return FMT_FAIL("tensor %u '%s': row_bytes %u, expected %llu for %u bits", (unsigned)(i), nm, (unsigned)(t->row_bytes), (unsigned long long)rb, (unsigned)(t->shape[t->ndim - 1]));
      if (mul_overflows(rows, rb, &want)) return FMT_FAIL("tensor %u '%s': size overflows", (unsigned)(i), nm);
    } else {
      if (t->row_bytes != 0) return FMT_FAIL("tensor %u '%s': row_bytes %u for a non-bits tensor, expected 0", (unsigned)(i), nm, (unsigned)(t->row_bytes));
      if (mul_overflows(elems, dtype_width(t->dtype), &want)) return FMT_FAIL("tensor %u '%s': size overflows", (unsigned)(i), nm);
    }
    if (t->size != want) return FMT_FAIL("tensor %u '%s': size %llu bytes, expected %llu for its shape", (unsigned)(i), nm, (unsigned long long)t->size, (unsigned long long)want);
    if (t->offset % XKF_ALIGN) return FMT_FAIL("tensor %u '%s': offset %llu is not a multiple of 64", (unsigned)(i), nm, (unsigned long long)t->offset);
    if (t->storage == XKF_STORAGE_CONST) {
      if (t->offset < h->data_offset || !in_bounds(t->offset, t->size, h->file_size))
        return FMT_FAIL("tensor %u '%s': blob [%llu, +%llu) outside the data area [%llu, %llu)", (unsigned)(i), nm,
                        (unsigned long long)t->offset, (unsigned long long)t->size, (unsigned long long)h->data_offset,
                        (unsigned long long)h->file_size);
    } else {
      if (t->dtype != XKF_DTYPE_F32 && t->dtype != XKF_DTYPE_BITS)
        return FMT_FAIL("tensor %u '%s': activations must be F32 or BITS (dtype %u)", (unsigned)(i), nm, (unsigned)(t->dtype));
      if (t->shape[0] != 1) return FMT_FAIL("tensor %u '%s': activation batch dimension is %u, expected 1", (unsigned)(i), nm, (unsigned)(t->shape[0]));
      if (!in_bounds(t->offset, t->size, h->arena_size))
        return FMT_FAIL("tensor %u '%s': arena range [%llu, +%llu) past arena_size %llu", (unsigned)(i), nm, (unsigned long long)t->offset,
                        (unsigned long long)t->size, (unsigned long long)h->arena_size);
    }
  }
  for (uint32_t i = 0; i < h->meta_count; i++) {
    const xkf_meta *e = &m->meta[i];
    if (e->key >= h->strings_size) return FMT_FAIL("metadata %u: key offset %u outside the string table", (unsigned)(i), (unsigned)(e->key));
    if (e->type < XKF_META_UTF8 || e->type > XKF_META_I32) return FMT_FAIL("metadata '%s': unknown type %u", str_at(m, e->key), (unsigned)(e->type));
    uint64_t w = (e->type == XKF_META_F32 || e->type == XKF_META_I32) ? 4 : 1, want;
    if (mul_overflows(e->count, w, &want) || want != e->size)
      return FMT_FAIL("metadata '%s': size %llu does not match count %llu", str_at(m, e->key), (unsigned long long)e->size, (unsigned long long)e->count);
    if (e->offset % XKF_ALIGN || e->offset < h->data_offset || !in_bounds(e->offset, e->size, h->file_size))
      return FMT_FAIL("metadata '%s': value [%llu, +%llu) outside the data area", str_at(m, e->key), (unsigned long long)e->offset, (unsigned long long)e->size);
  }
  for (uint32_t i = 0; i < h->input_count + h->output_count; i++) {
    int32_t t = m->io[i];
    const char *what = i < h->input_count ? "input" : "output";
    if (t < 0 || (uint32_t)t >= h->tensor_count) return FMT_FAIL("graph %s %u: tensor index %d out of range", what, (unsigned)(i), (int)(t));
    if (m->tensors[t].storage != XKF_STORAGE_ARENA) return FMT_FAIL("graph %s %u: tensor %d is not an activation", what, (unsigned)(i), (int)(t));
    if (i < h->input_count && m->tensors[t].dtype != XKF_DTYPE_F32) return FMT_FAIL("graph input %u: tensor %d must be F32", (unsigned)(i), (int)(t));
  }
  return XK_OK;
}

/* ------------------------------------------------------------------ per-op checks and setup */
typedef struct opctx {
  const xk_model *m;
  uint32_t i;
  const xkf_op *f;
  const char *name;
  const char *kind;
} opctx;

#define OP_FAIL(c, fmt, ...) \
  xk_fail(XK_ERR_FORMAT, "op %u (%s '%s'): " fmt, (unsigned)(c)->i, (c)->kind, (c)->name, __VA_ARGS__)

static const xkf_tensor *tensor(const opctx *c, int32_t idx) { return &c->m->tensors[idx]; }

/* An activation tensor of the given dtype (0 = F32 or BITS) and ndim (0 = any). */
static xk_status need_act(const opctx *c, int32_t idx, const char *role, uint8_t dtype, uint8_t ndim) {
  if (idx < 0 || (uint32_t)idx >= c->m->h->tensor_count) return OP_FAIL(c, "%s tensor index %d out of range", role, (int)(idx));
  const xkf_tensor *t = tensor(c, idx);
  if (t->storage != XKF_STORAGE_ARENA) return OP_FAIL(c, "%s tensor %d is a constant, expected an activation", role, (int)(idx));
  if (dtype && t->dtype != dtype) return OP_FAIL(c, "%s tensor %d has dtype %u, expected %u", role, (int)(idx), (unsigned)(t->dtype), (unsigned)(dtype));
  if (ndim && t->ndim != ndim) return OP_FAIL(c, "%s tensor %d has %u dims, expected %u", role, (int)(idx), (unsigned)(t->ndim), (unsigned)(ndim));
  return XK_OK;
}

/* A constant of `dtype` with exactly `count` elements (BITS: count bits in one row), or absent
 * (idx = -1) when optional. Returns its bytes in *p. */
static xk_status need_const(const opctx *c, int32_t idx, const char *role, uint8_t dtype, uint64_t count, int optional,
                            const void **p) {
  *p = NULL;
  if (idx == XKF_NONE && optional) return XK_OK;
  if (idx < 0 || (uint32_t)idx >= c->m->h->tensor_count) return OP_FAIL(c, "%s tensor index %d out of range", role, (int)(idx));
  const xkf_tensor *t = tensor(c, idx);
  if (t->storage != XKF_STORAGE_CONST) return OP_FAIL(c, "%s tensor %d is an activation, expected a constant", role, (int)(idx));
  if (t->dtype != dtype) return OP_FAIL(c, "%s tensor %d has dtype %u, expected %u", role, (int)(idx), (unsigned)(t->dtype), (unsigned)(dtype));
  uint64_t n = (uint64_t)t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3];
  if (n != count) return OP_FAIL(c, "%s tensor %d has %llu elements, expected %llu", role, (int)(idx), (unsigned long long)n, (unsigned long long)count);
  *p = c->m->data + t->offset;
  return XK_OK;
}

static xk_status check_act(const opctx *c, uint32_t act, float lo, float hi, int32_t alpha, uint64_t ch, xk_act_params *a) {
  memset(a, 0, sizeof *a);
  if (act >= XKF_ACT_COUNT) return OP_FAIL(c, "unknown activation %u", (unsigned)(act));
  if (act == XKF_ACT_HARDTANH && !(lo <= hi)) return OP_FAIL(c, "hardtanh bounds lo=%g > hi=%g", (double)lo, (double)hi);
  if (act == XKF_ACT_LEAKY && !isfinite(lo)) return OP_FAIL(c, "leaky slope %g is not finite", (double)lo);
  a->kind = (xk_act)act;
  a->lo = lo;
  a->hi = hi;
  if (act == XKF_ACT_PRELU) {
    if (alpha < 0 || (uint32_t)alpha >= c->m->h->tensor_count) return OP_FAIL(c, "PReLU slope tensor index %d out of range", (int)(alpha));
    const xkf_tensor *t = tensor(c, alpha);
    uint64_t n = (uint64_t)t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3];
    const void *p;
    xk_status st = need_const(c, alpha, "act_alpha", XKF_DTYPE_F32, n == 1 ? 1 : ch, 0, &p);
    if (st != XK_OK) return st;
    a->alpha = (const float *)p;
    a->alpha_count = n == 1 ? 1 : ch;
  }
  return XK_OK;
}

static xk_status check_stage(const opctx *c, uint64_t oc, int binary, xk_output *o) {
  const xkf_output_stage *s = &c->f->out;
  memset(o, 0, sizeof *o);
  const void *p;
  xk_status st;
  if (s->kind == XKF_OUT_FLOAT) o->kind = XK_OUT_FLOAT;
  else if (s->kind == XKF_OUT_BITS) o->kind = XK_OUT_BITS;
  else if (s->kind == XKF_OUT_INT32 && binary) o->kind = XK_OUT_INT32;
  else return OP_FAIL(c, "output kind %u not supported (float 1, bits 2)", (unsigned)(s->kind));
#define GET(field, dt, dst, cast)                                                     \
  if ((st = need_const(c, s->field, #field, dt, oc, 1, &p)) != XK_OK) return st; \
  o->dst = (cast)p;
  GET(scale, XKF_DTYPE_F32, scale, const float *)
  GET(bias, XKF_DTYPE_F32, bias, const float *)
  GET(post_scale, XKF_DTYPE_F32, post_scale, const float *)
  GET(post_bias, XKF_DTYPE_F32, post_bias, const float *)
  GET(threshold, XKF_DTYPE_I32, threshold, const int32_t *)
  GET(flip, XKF_DTYPE_U8, flip, const uint8_t *)
#undef GET
  if (o->flip)
    for (uint64_t j = 0; j < oc; j++)
      if (o->flip[j] > 1) return OP_FAIL(c, "flip[%llu] = %u, expected 0 or 1", (unsigned long long)j, (unsigned)(o->flip[j]));
  if (binary && o->kind == XK_OUT_BITS && !o->threshold) return OP_FAIL(c, "%s", "bits output of a binary op needs a threshold tensor");
  return check_act(c, s->act, s->act_lo, s->act_hi, s->act_alpha, oc, &o->act);
}

static xk_status check_out_dtype(const opctx *c, const xk_output *o, const xkf_tensor *out) {
  uint8_t want = o->kind == XK_OUT_BITS ? XKF_DTYPE_BITS : (o->kind == XK_OUT_INT32 ? XKF_DTYPE_I32 : XKF_DTYPE_F32);
  if (o->kind == XK_OUT_INT32) return OP_FAIL(c, "%s", "int32 activations are not supported in version 1 files");
  if (out->dtype != want) return OP_FAIL(c, "output dtype %u does not match the output stage kind (want %u)", (unsigned)(out->dtype), (unsigned)(want));
  return XK_OK;
}

static xk_status same_shape(const opctx *c, const xkf_tensor *a, const xkf_tensor *b, const char *what) {
  if (a->ndim != b->ndim || memcmp(a->shape, b->shape, sizeof a->shape) != 0)
    return OP_FAIL(c, "%s shapes differ ([%u,%u,%u,%u] vs [%u,%u,%u,%u])", what, (unsigned)(a->shape[0]), (unsigned)(a->shape[1]), (unsigned)(a->shape[2]), (unsigned)(a->shape[3]), (unsigned)(b->shape[0]), (unsigned)(b->shape[1]), (unsigned)(b->shape[2]), (unsigned)(b->shape[3]));
  return XK_OK;
}

static uint64_t elems(const xkf_tensor *t) { return (uint64_t)t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3]; }
static uint64_t last_dim(const xkf_tensor *t) { return t->shape[t->ndim - 1]; }

static xk_status conv_geometry(const opctx *c, const xkf_conv_params *p, const xkf_tensor *in, const xkf_tensor *out,
                               xk_conv_shape *s) {
  memset(s, 0, sizeof *s);
  if (in->ndim != 4 || out->ndim != 4) return OP_FAIL(c, "%s", "input and output must be 4-D NHWC");
  if (p->kh == 0 || p->kw == 0 || p->stride_h == 0 || p->stride_w == 0 || p->dil_h == 0 || p->dil_w == 0)
    return OP_FAIL(c, "kernel %ux%u, stride %ux%u, dilation %ux%u must all be >= 1", (unsigned)(p->kh), (unsigned)(p->kw), (unsigned)(p->stride_h), (unsigned)(p->stride_w), (unsigned)(p->dil_h), (unsigned)(p->dil_w));
  if (p->kh > 255 || p->kw > 255 || p->stride_h > 4096 || p->stride_w > 4096 || p->dil_h > 4096 || p->dil_w > 4096)
    return OP_FAIL(c, "kernel %ux%u / stride / dilation out of range", (unsigned)(p->kh), (unsigned)(p->kw));
  s->n = 1;
  s->h = in->shape[1];
  s->w = in->shape[2];
  s->c = in->shape[3];
  s->oc = out->shape[3];
  s->kh = p->kh;
  s->kw = p->kw;
  s->stride_h = p->stride_h;
  s->stride_w = p->stride_w;
  s->dil_h = p->dil_h;
  s->dil_w = p->dil_w;
  s->pad_t = p->pad_top;
  s->pad_l = p->pad_left;
  s->pad_b = p->pad_bottom;
  s->pad_r = p->pad_right;
  size_t oh, ow;
  if (xk_conv_out_size(s, &oh, &ow) != XK_OK) {
    char msg[200];
    strncpy(msg, xk_last_error(), sizeof msg - 1);
    msg[sizeof msg - 1] = 0;
    return OP_FAIL(c, "%s", msg);
  }
  if (oh != out->shape[1] || ow != out->shape[2])
    return OP_FAIL(c, "output is %ux%u, the geometry gives %zux%zu", (unsigned)(out->shape[1]), (unsigned)(out->shape[2]), oh, ow);
  return XK_OK;
}

/* Validate op i and size (pass 1) or fill (pass 2, b->base set) its runtime struct. */
static xk_status setup_op(const xk_model *m, uint32_t i, rt_op *r, bump *b, size_t nslots, uint32_t max_batch) {
  const xkf_op *f = &m->fops[i];
  opctx cx = {m, i, f, "?", "?"};
  opctx *c = &cx;
  if (f->name >= m->h->strings_size) return FMT_FAIL("op %u: name offset %u outside the string table", (unsigned)(i), (unsigned)(f->name));
  cx.name = str_at(m, f->name);
  if (f->kind == 0 || f->kind >= XKF_OP_KIND_COUNT) return FMT_FAIL("op %u '%s': unknown kind %u", (unsigned)(i), cx.name, (unsigned)(f->kind));
  cx.kind = kKindNames[f->kind];
  memset(r, 0, sizeof *r);
  r->f = f;
  r->kind = f->kind;
  if (f->num_inputs < 1 || f->num_inputs > XKF_MAX_INPUTS) return OP_FAIL(c, "num_inputs %u outside 1..4", (unsigned)(f->num_inputs));
  for (int k = f->num_inputs; k < (int)XKF_MAX_INPUTS; k++)
    if (f->inputs[k] != XKF_NONE) return OP_FAIL(c, "unused input slot %d holds %d, expected -1", (int)(k), (int)(f->inputs[k]));
  int want_inputs = f->kind == XKF_OP_ADD ? 2 : (f->kind == XKF_OP_CONCAT ? -1 : 1);
  if (want_inputs > 0 && f->num_inputs != want_inputs) return OP_FAIL(c, "takes %d input(s), got %u", (int)(want_inputs), (unsigned)(f->num_inputs));
  if (f->kind == XKF_OP_CONCAT && f->num_inputs < 2) return OP_FAIL(c, "concat needs 2..4 inputs, got %u", (unsigned)(f->num_inputs));
  xk_status st;
  for (int k = 0; k < f->num_inputs; k++)
    if ((st = need_act(c, f->inputs[k], "input", 0, 0)) != XK_OK) return st;
  if ((st = need_act(c, f->output, "output", 0, 0)) != XK_OK) return st;
  const xkf_tensor *in = tensor(c, f->inputs[0]), *out = tensor(c, f->output);
  r->in_bits = in->dtype == XKF_DTYPE_BITS;
  r->out_bits = out->dtype == XKF_DTYPE_BITS;
  r->count = elems(out);
  int uses_weights = f->kind == XKF_OP_BCONV2D || f->kind == XKF_OP_BDENSE || f->kind == XKF_OP_CONV2D || f->kind == XKF_OP_DENSE;
  if (!uses_weights && f->weights != XKF_NONE) return OP_FAIL(c, "weights tensor %d given to an op without weights", (int)(f->weights));
  const void *p;
  size_t packed = 0;

  switch (f->kind) {
    case XKF_OP_BCONV2D: {
      const xkf_conv_params *cp = &f->p.conv;
      if ((st = need_act(c, f->inputs[0], "input", XKF_DTYPE_BITS, 4)) != XK_OK) return st;
      if ((st = conv_geometry(c, cp, in, out, &r->cs)) != XK_OK) return st;
      if (cp->pad_value != 0 && cp->pad_value != 1 && cp->pad_value != -1) return OP_FAIL(c, "pad_value %d not in {0, +1, -1}", (int)(cp->pad_value));
      if (cp->groups != 1) return OP_FAIL(c, "groups %u: binary convolutions support groups = 1", (unsigned)(cp->groups));
      if (cp->precision != 0) return OP_FAIL(c, "precision %u, expected 0", (unsigned)(cp->precision));
      uint64_t kbits = (uint64_t)cp->kh * cp->kw * r->cs.c;
      if ((st = need_const(c, f->weights, "weights", XKF_DTYPE_BITS, r->cs.oc * kbits, 0, &p)) != XK_OK) return st;
      const xkf_tensor *wt = tensor(c, f->weights);
      if (wt->ndim != 2 || wt->shape[0] != r->cs.oc || wt->shape[1] != kbits)
        return OP_FAIL(c, "weights must be BITS [%zu, %llu]", r->cs.oc, (unsigned long long)kbits);
      if ((st = check_stage(c, r->cs.oc, 1, &r->out)) != XK_OK) return st;
      if ((st = check_out_dtype(c, &r->out, out)) != XK_OK) return st;
      r->w = p;
      r->weight_bytes = wt->size;
      r->macs = (uint64_t)out->shape[1] * out->shape[2] * r->cs.oc * kbits;
      packed = xk_bconv2d_packed_size(&r->cs, (xk_pad_value)cp->pad_value);
      if (!packed) return OP_FAIL(c, "%s", "cannot size the packed weights");
      xk_conv_shape sb = r->cs;
      sb.n = max_batch;
      r->ws_size = xk_bconv2d_workspace_size(&sb);
      r->packed = bump_take(b, packed);
      r->packed_size = packed;
      if (r->packed) {
        xk_bweights wb = {(const uint8_t *)p, wt->row_bytes, r->cs.c};
        if ((st = xk_bconv2d_pack(&r->cs, (xk_pad_value)cp->pad_value, &wb, r->packed, packed)) != XK_OK) return st;
      }
      break;
    }
    case XKF_OP_BDENSE:
    case XKF_OP_DENSE: {
      const int bin = f->kind == XKF_OP_BDENSE;
      if ((st = need_act(c, f->inputs[0], "input", bin ? XKF_DTYPE_BITS : XKF_DTYPE_F32, 0)) != XK_OK) return st;
      if (in->ndim != out->ndim) return OP_FAIL(c, "input has %u dims, output %u", (unsigned)(in->ndim), (unsigned)(out->ndim));
      for (int d = 0; d < in->ndim - 1; d++)
        if (in->shape[d] != out->shape[d]) return OP_FAIL(c, "%s", "input and output differ outside the last dimension");
      r->k = last_dim(in);
      r->nout = last_dim(out);
      r->rows = elems(in) / r->k;
      const xkf_dense_params *dp = &f->p.dense;
      if (bin && dp->precision != 0) return OP_FAIL(c, "precision %u, expected 0", (unsigned)(dp->precision));
      if (dp->precision > XKF_PREC_I8) return OP_FAIL(c, "unknown precision %u", (unsigned)(dp->precision));
      r->int8 = dp->precision == XKF_PREC_I8;
      uint8_t wdt = bin ? XKF_DTYPE_BITS : (r->int8 ? XKF_DTYPE_I8 : XKF_DTYPE_F32);
      if ((st = need_const(c, f->weights, "weights", wdt, (uint64_t)r->nout * r->k, 0, &p)) != XK_OK) return st;
      const xkf_tensor *wt = tensor(c, f->weights);
      if (wt->ndim != 2 || wt->shape[0] != r->nout || wt->shape[1] != r->k)
        return OP_FAIL(c, "weights must be [%zu, %zu]", r->nout, r->k);
      if ((st = check_stage(c, r->nout, bin, &r->out)) != XK_OK) return st;
      if ((st = check_out_dtype(c, &r->out, out)) != XK_OK) return st;
      r->w = p;
      r->weight_bytes = wt->size;
      r->macs = (uint64_t)r->rows * r->k * r->nout;
      if (r->int8) {
        if (!(dp->in_scale > 0.0f) || !isfinite(dp->in_scale)) return OP_FAIL(c, "in_scale %g must be positive and finite", (double)dp->in_scale);
        if (dp->in_zero_point < -128 || dp->in_zero_point > 127) return OP_FAIL(c, "in_zero_point %d outside [-128, 127]", (int)(dp->in_zero_point));
        if (r->k >= 65536) return OP_FAIL(c, "int8 dense with K = %zu >= 65536 is not supported", r->k);
        r->q.scale = dp->in_scale;
        r->q.zero_point = dp->in_zero_point;
        packed = xk_qdense_packed_size(r->k, r->nout);
        r->ws_size = xk_qdense_workspace_size(max_batch * r->rows, r->k);
      } else {
        packed = bin ? xk_bdense_packed_size(r->k, r->nout) : xk_dense_packed_size(r->k, r->nout);
      }
      r->packed = bump_take(b, packed);
      r->packed_size = packed;
      if (r->packed) {
        if (bin) st = xk_bdense_pack(r->k, r->nout, (const uint8_t *)p, wt->row_bytes, r->packed, packed);
        else if (r->int8) st = xk_qdense_pack(r->k, r->nout, (const int8_t *)p, r->packed, packed);
        else st = xk_dense_pack(r->k, r->nout, (const float *)p, r->packed, packed);
        if (st != XK_OK) return st;
      }
      break;
    }
    case XKF_OP_CONV2D: {
      const xkf_conv_params *cp = &f->p.conv;
      if ((st = need_act(c, f->inputs[0], "input", XKF_DTYPE_F32, 4)) != XK_OK) return st;
      if ((st = conv_geometry(c, cp, in, out, &r->cs)) != XK_OK) return st;
      if (cp->pad_value != 0) return OP_FAIL(c, "pad_value %d, float convolutions pad with 0", (int)(cp->pad_value));
      if (cp->precision > XKF_PREC_I8) return OP_FAIL(c, "unknown precision %u", (unsigned)(cp->precision));
      r->int8 = cp->precision == XKF_PREC_I8;
      if (cp->groups > 1 && cp->groups == r->cs.c) {
        r->depthwise = 1;
        if (r->cs.oc % r->cs.c) return OP_FAIL(c, "depthwise output channels %zu not a multiple of %zu", r->cs.oc, r->cs.c);
      } else if (cp->groups != 1) {
        return OP_FAIL(c, "groups %u: only 1 or C (= %zu, depthwise) are supported", (unsigned)(cp->groups), r->cs.c);
      }
      uint64_t wcount = r->depthwise ? (uint64_t)cp->kh * cp->kw * r->cs.oc : (uint64_t)r->cs.oc * cp->kh * cp->kw * r->cs.c;
      if ((st = need_const(c, f->weights, "weights", r->int8 ? XKF_DTYPE_I8 : XKF_DTYPE_F32, wcount, 0, &p)) != XK_OK) return st;
      const xkf_tensor *wt = tensor(c, f->weights);
      if ((st = check_stage(c, r->cs.oc, 0, &r->out)) != XK_OK) return st;
      if ((st = check_out_dtype(c, &r->out, out)) != XK_OK) return st;
      r->w = p;
      r->weight_bytes = wt->size;
      r->macs = (uint64_t)out->shape[1] * out->shape[2] * r->cs.oc * cp->kh * cp->kw * (r->depthwise ? 1 : r->cs.c);
      xk_conv_shape sb = r->cs;
      sb.n = max_batch;
      if (r->int8) {
        if (!(cp->in_scale > 0.0f) || !isfinite(cp->in_scale)) return OP_FAIL(c, "in_scale %g must be positive and finite", (double)cp->in_scale);
        if (cp->in_zero_point < -128 || cp->in_zero_point > 127) return OP_FAIL(c, "in_zero_point %d outside [-128, 127]", (int)(cp->in_zero_point));
        r->q.scale = cp->in_scale;
        r->q.zero_point = cp->in_zero_point;
      }
      if (r->depthwise) {
        /* float result into scratch first when the output is bits; int8: the quantized input */
        size_t fbytes = r->out_bits ? xk_round_up(max_batch * (size_t)out->shape[1] * out->shape[2] * r->cs.oc * sizeof(float), 64) : 0;
        r->ws_size = fbytes + (r->int8 ? xk_qdwconv2d_workspace_size(&sb) : 0);
        if (r->int8 && cp->kh * cp->kw > 513) return OP_FAIL(c, "%s", "int8 depthwise kernel larger than 513 taps");
        break;
      }
      if (r->int8) {
        if (wcount / r->cs.oc >= 65536) return OP_FAIL(c, "%s", "int8 convolution with KH*KW*C >= 65536 is not supported");
        packed = xk_qconv2d_packed_size(&r->cs);
        r->ws_size = xk_qconv2d_workspace_size(&sb, nslots);
      } else {
        packed = xk_conv2d_packed_size(&r->cs);
        r->ws_size = xk_conv2d_workspace_size(&sb, nslots);
      }
      r->packed = bump_take(b, packed);
      r->packed_size = packed;
      if (r->packed) {
        st = r->int8 ? xk_qconv2d_pack(&r->cs, (const int8_t *)p, r->packed, packed)
                     : xk_conv2d_pack(&r->cs, (const float *)p, r->packed, packed);
        if (st != XK_OK) return st;
      }
      break;
    }
    case XKF_OP_SIGN: {
      if ((st = need_act(c, f->inputs[0], "input", XKF_DTYPE_F32, 0)) != XK_OK) return st;
      if (out->dtype != XKF_DTYPE_BITS) return OP_FAIL(c, "%s", "output must be BITS");
      if (in->ndim != out->ndim || memcmp(in->shape, out->shape, sizeof in->shape)) return OP_FAIL(c, "%s", "input and output shapes differ");
      r->k = last_dim(in);
      r->rows = elems(in) / r->k;
      if ((st = need_const(c, f->p.sign.threshold, "threshold", XKF_DTYPE_F32, r->k, 1, &p)) != XK_OK) return st;
      r->t = (const float *)p;
      if ((st = need_const(c, f->p.sign.flip, "flip", XKF_DTYPE_U8, r->k, 1, &p)) != XK_OK) return st;
      r->u8 = (const uint8_t *)p;
      if (r->u8)
        for (size_t j = 0; j < r->k; j++)
          if (r->u8[j] > 1) return OP_FAIL(c, "flip[%zu] = %u, expected 0 or 1", j, (unsigned)(r->u8[j]));
      break;
    }
    case XKF_OP_UNPACK:
      if ((st = need_act(c, f->inputs[0], "input", XKF_DTYPE_BITS, 0)) != XK_OK) return st;
      if (out->dtype != XKF_DTYPE_F32) return OP_FAIL(c, "%s", "output must be F32");
      if ((st = same_shape(c, in, out, "input and output")) != XK_OK) return st;
      r->k = last_dim(in);
      r->rows = elems(in) / r->k;
      break;
    case XKF_OP_MAXPOOL2D:
    case XKF_OP_AVGPOOL2D: {
      const xkf_pool_params *pp = &f->p.pool;
      if (in->ndim != 4 || out->ndim != 4) return OP_FAIL(c, "%s", "input and output must be 4-D NHWC");
      if (in->dtype != out->dtype) return OP_FAIL(c, "%s", "input and output dtypes differ");
      if (f->kind == XKF_OP_AVGPOOL2D && in->dtype != XKF_DTYPE_F32) return OP_FAIL(c, "%s", "average pooling needs F32");
      if (in->shape[3] != out->shape[3]) return OP_FAIL(c, "%s", "pooling changes the channel count");
      xk_pool_shape *s = &r->ps;
      s->n = 1;
      s->h = in->shape[1];
      s->w = in->shape[2];
      s->c = in->shape[3];
      s->kh = pp->kh;
      s->kw = pp->kw;
      s->stride_h = pp->stride_h;
      s->stride_w = pp->stride_w;
      s->pad_t = pp->pad_top;
      s->pad_l = pp->pad_left;
      s->pad_b = pp->pad_bottom;
      s->pad_r = pp->pad_right;
      size_t oh, ow;
      if (xk_pool_out_size(s, &oh, &ow) != XK_OK) {
        char msg[200];
        strncpy(msg, xk_last_error(), sizeof msg - 1);
        msg[sizeof msg - 1] = 0;
        return OP_FAIL(c, "%s", msg);
      }
      if (oh != out->shape[1] || ow != out->shape[2]) return OP_FAIL(c, "output is %ux%u, the window gives %zux%zu", (unsigned)(out->shape[1]), (unsigned)(out->shape[2]), oh, ow);
      if (pp->count_include_pad > 1) return OP_FAIL(c, "count_include_pad %u, expected 0 or 1", (unsigned)(pp->count_include_pad));
      if (f->kind == XKF_OP_MAXPOOL2D && r->in_bits) {
        if ((st = need_const(c, pp->invert, "invert", XKF_DTYPE_BITS, s->c, 1, &p)) != XK_OK) return st;
        r->u8 = (const uint8_t *)p;
      } else if (pp->invert != XKF_NONE) {
        return OP_FAIL(c, "invert tensor %d on a float pooling", (int)(pp->invert));
      }
      r->macs = (uint64_t)oh * ow * s->c * s->kh * s->kw;
      break;
    }
    case XKF_OP_GLOBAL_AVGPOOL:
      if ((st = need_act(c, f->inputs[0], "input", XKF_DTYPE_F32, 4)) != XK_OK) return st;
      if (out->dtype != XKF_DTYPE_F32 || elems(out) != in->shape[3] || last_dim(out) != in->shape[3])
        return OP_FAIL(c, "output must be F32 [1, 1, 1, %u]", (unsigned)(in->shape[3]));
      r->rows = (size_t)in->shape[1] * in->shape[2];
      r->k = in->shape[3];
      break;
    case XKF_OP_ADD:
    case XKF_OP_ACTIVATION: {
      for (int k = 0; k < f->num_inputs; k++) {
        if ((st = need_act(c, f->inputs[k], "input", XKF_DTYPE_F32, 0)) != XK_OK) return st;
        if ((st = same_shape(c, tensor(c, f->inputs[k]), out, "input and output")) != XK_OK) return st;
      }
      if (out->dtype != XKF_DTYPE_F32) return OP_FAIL(c, "%s", "output must be F32");
      const xkf_eltwise_params *ep = &f->p.eltwise;
      r->k = last_dim(out);
      r->rows = elems(out) / r->k;
      if ((st = check_act(c, ep->act, ep->act_lo, ep->act_hi, ep->act_alpha, r->k, &r->act)) != XK_OK) return st;
      break;
    }
    case XKF_OP_CONCAT: {
      uint64_t total = 0;
      for (int k = 0; k < f->num_inputs; k++) {
        const xkf_tensor *t = tensor(c, f->inputs[k]);
        if (t->dtype != out->dtype || t->ndim != out->ndim) return OP_FAIL(c, "input %d dtype/rank differs from the output", (int)(k));
        for (int d = 0; d < out->ndim - 1; d++)
          if (t->shape[d] != out->shape[d]) return OP_FAIL(c, "input %d differs from the output outside the last dimension", (int)(k));
        total += last_dim(t);
      }
      if (total != last_dim(out)) return OP_FAIL(c, "inputs have %llu channels in all, output %llu", (unsigned long long)total, (unsigned long long)last_dim(out));
      r->k = last_dim(out);
      r->rows = elems(out) / r->k;
      break;
    }
    case XKF_OP_FLATTEN: {
      const uint32_t order = f->p.flatten.order;
      if (in->ndim != 4) return OP_FAIL(c, "%s", "flatten input must be 4-D NHWC");
      if (out->ndim != 2 || out->shape[1] != (uint64_t)in->shape[1] * in->shape[2] * in->shape[3] || out->dtype != in->dtype)
        return OP_FAIL(c, "output must be [1, %llu] of the input dtype", (unsigned long long)in->shape[1] * in->shape[2] * in->shape[3]);
      if (order > 1) return OP_FAIL(c, "unknown flatten order %u", (unsigned)(order));
      if (order == 1 && r->in_bits) return OP_FAIL(c, "%s", "CHW-order flatten of bits is not defined");
      r->rows = (size_t)in->shape[1] * in->shape[2];
      r->k = in->shape[3];
      break;
    }
    case XKF_OP_RESHAPE:
      if (in->dtype != XKF_DTYPE_F32 || out->dtype != XKF_DTYPE_F32) return OP_FAIL(c, "%s", "reshape is defined on F32 only");
      if (elems(in) != elems(out)) return OP_FAIL(c, "%s", "reshape changes the element count");
      break;
    case XKF_OP_AFFINE: {
      if ((st = need_act(c, f->inputs[0], "input", XKF_DTYPE_F32, 0)) != XK_OK) return st;
      if ((st = same_shape(c, in, out, "input and output")) != XK_OK) return st;
      if (out->dtype != XKF_DTYPE_F32) return OP_FAIL(c, "%s", "output must be F32");
      r->k = last_dim(out);
      r->rows = elems(out) / r->k;
      if ((st = need_const(c, f->p.affine.scale, "scale", XKF_DTYPE_F32, r->k, 1, &p)) != XK_OK) return st;
      r->t = (const float *)p;
      if ((st = need_const(c, f->p.affine.bias, "bias", XKF_DTYPE_F32, r->k, 1, &p)) != XK_OK) return st;
      r->b = (const float *)p;
      break;
    }
    case XKF_OP_SOFTMAX:
      if ((st = need_act(c, f->inputs[0], "input", XKF_DTYPE_F32, 0)) != XK_OK) return st;
      if ((st = same_shape(c, in, out, "input and output")) != XK_OK) return st;
      if (out->dtype != XKF_DTYPE_F32) return OP_FAIL(c, "%s", "output must be F32");
      r->k = last_dim(out);
      r->rows = elems(out) / r->k;
      break;
    default: return OP_FAIL(c, "unsupported kind %u", (unsigned)(f->kind));
  }
  if (!uses_weights) {
    const xkf_output_stage *s = &f->out;
    if (s->kind || s->act || s->scale != XKF_NONE || s->bias != XKF_NONE || s->act_alpha != XKF_NONE ||
        s->post_scale != XKF_NONE || s->post_bias != XKF_NONE || s->threshold != XKF_NONE || s->flip != XKF_NONE)
      return OP_FAIL(c, "%s", "output stage set on an op that has none");
  }
  return XK_OK;
}

/* Execution order and the activation plan (docs/format.md §3). */
static xk_status check_graph(const xk_model *m, uint32_t *first, uint32_t *last) {
  const xkf_header *h = m->h;
  const uint32_t T = h->tensor_count, NONE = UINT32_MAX;
  /* first[t]: op writing t (0 for graph inputs, ops are numbered from 1); last[t]: last reader */
  for (uint32_t t = 0; t < T; t++) first[t] = last[t] = NONE;
  for (uint32_t k = 0; k < h->input_count; k++) {
    int32_t t = m->io[k];
    if (first[t] != NONE) return FMT_FAIL("tensor %d is listed twice as a graph input", (int)(t));
    first[t] = last[t] = 0;
  }
  for (uint32_t i = 0; i < h->op_count; i++) {
    const xkf_op *f = &m->fops[i];
    for (int k = 0; k < f->num_inputs; k++) {
      int32_t t = f->inputs[k];
      if (first[t] == NONE)
        return FMT_FAIL("op %u '%s' reads tensor %d '%s' before any op writes it", (unsigned)(i), str_at(m, f->name), (int)(t), str_at(m, m->tensors[t].name));
      last[t] = i + 1;
    }
    int32_t o = f->output;
    if (first[o] != NONE) return FMT_FAIL("op %u '%s' writes tensor %d '%s', which is already written", (unsigned)(i), str_at(m, f->name), (int)(o), str_at(m, m->tensors[o].name));
    first[o] = last[o] = i + 1;
  }
  for (uint32_t k = 0; k < h->output_count; k++) {
    int32_t t = m->io[h->input_count + k];
    if (first[t] == NONE) return FMT_FAIL("graph output %u (tensor %d) is never written", (unsigned)(k), (int)(t));
    last[t] = h->op_count + 1;
  }
  /* tensors whose lifetimes overlap never overlap in memory */
  for (uint32_t a = 0; a < T; a++) {
    if (first[a] == NONE) continue;
    const xkf_tensor *ta = &m->tensors[a];
    for (uint32_t bb = a + 1; bb < T; bb++) {
      if (first[bb] == NONE) continue;
      if (!(first[a] <= last[bb] && first[bb] <= last[a])) continue;
      const xkf_tensor *tb = &m->tensors[bb];
      if (ta->offset < tb->offset + tb->size && tb->offset < ta->offset + ta->size)
        return FMT_FAIL("arena plan: live tensors %u '%s' [%llu, +%llu) and %u '%s' [%llu, +%llu) overlap", (unsigned)(a), str_at(m, ta->name),
                        (unsigned long long)ta->offset, (unsigned long long)ta->size, (unsigned)(bb), str_at(m, tb->name),
                        (unsigned long long)tb->offset, (unsigned long long)tb->size);
    }
  }
  return XK_OK;
}

static int overlaps(const xkf_tensor *a, const xkf_tensor *b) {
  return a->offset < b->offset + b->size && b->offset < a->offset + a->size;
}

/* Load-time fusion: a binary convolution or a float (not int8, not depthwise) convolution with
 * float output whose only reader is the next op, a residual add without activation, runs as one
 * op: its output stage adds the add's other input and writes the add's output, and the add is
 * skipped (the same float addition: the same results). Allowed when the add's output does not overlap the convolution's input (still read
 * while outputs are written), and is either exactly the other input's memory (in place: each
 * element is read, then written) or does not overlap it. last[t]: the last op reading tensor t
 * (1-based; graph outputs: op_count + 1). */
static void plan_fusion(xk_model *m, const uint32_t *last) {
  const uint32_t nops = m->h->op_count;
  for (uint32_t i = 0; i < nops; i++) m->ops[i].res_in = -1, m->ops[i].fused = 0;
  if (m->flags & XK_MODEL_NO_FUSION) return;
  for (uint32_t i = 0; i + 1 < nops; i++) {
    rt_op *r = &m->ops[i], *a = &m->ops[i + 1];
    const int fconv = r->kind == XKF_OP_CONV2D && !r->int8 && !r->depthwise;
    if ((r->kind != XKF_OP_BCONV2D && !fconv) || r->out_bits || r->out.kind != XK_OUT_FLOAT) continue;
    if (a->kind != XKF_OP_ADD || a->act.kind != XK_ACT_NONE || a->f->num_inputs != 2) continue;
    const int32_t t = r->f->output, *ain = a->f->inputs;
    int32_t x;
    if (ain[0] == t && ain[1] != t) x = ain[1];
    else if (ain[1] == t && ain[0] != t) x = ain[0];
    else continue;
    if (last[t] != i + 2) continue; /* read by the add only */
    const xkf_tensor *tx = &m->tensors[x], *ty = &m->tensors[a->f->output], *tin = &m->tensors[r->f->inputs[0]];
    if (tx->size != ty->size || overlaps(ty, tin)) continue;
    if (ty->offset != tx->offset && overlaps(ty, tx)) continue;
    r->res_in = x;
    a->fused = 1;
    i++;
  }
}

/* Everything the arena holds, in one function used to size (arena == NULL) and to build. */
static xk_status build(const void *data, size_t size, const xk_model_options *opt, void *arena, size_t arena_size,
                       xk_model **out, size_t *need) {
  xk_model tmp;
  memset(&tmp, 0, sizeof tmp);
  xk_status st = check_file((const uint8_t *)data, size, &tmp);
  if (st != XK_OK) return st;
  if ((st = check_tensors(&tmp)) != XK_OK) return st;
  const uint32_t max_batch = opt && opt->max_batch ? opt->max_batch : 1;
  const size_t nslots = opt && opt->num_threads ? opt->num_threads : (size_t)xk_get_num_threads();
  if (max_batch > 65536) return xk_fail(XK_ERR_ARGUMENT, "model: max_batch %u too large", (unsigned)(max_batch));
  if (arena && ((uintptr_t)arena) % 64) return xk_fail(XK_ERR_ARGUMENT, "model: the arena must be 64-byte aligned");

  bump b = {(uint8_t *)arena, 0, arena ? arena_size : 0};
  xk_model *m = (xk_model *)bump_take(&b, sizeof(xk_model));
  rt_op *ops = (rt_op *)bump_take(&b, sizeof(rt_op) * tmp.h->op_count);
  /* lifetimes scratch: two uint32 per tensor, in the region later used for activations */
  size_t life_bytes = 2 * sizeof(uint32_t) * (size_t)tmp.h->tensor_count;
  rt_op probe;
  size_t ws = 0;
  for (uint32_t i = 0; i < tmp.h->op_count; i++) {
    /* bump_take returns NULL once the arena is exhausted (or when only counting); the op is
     * then validated and sized but not packed, and the size check below reports it */
    rt_op *r = ops ? &ops[i] : &probe;
    if ((st = setup_op(&tmp, i, r, &b, nslots, max_batch)) != XK_OK) return st;
    if (r->ws_size > ws) ws = r->ws_size;
  }
  uint64_t act_bytes;
  if (mul_overflows(tmp.act_per_sample, max_batch, &act_bytes) || act_bytes > (uint64_t)SIZE_MAX / 2)
    return xk_fail(XK_ERR_MEMORY, "model: activation arena for batch %u overflows", (unsigned)(max_batch));
  uint8_t *act = (uint8_t *)bump_take(&b, (size_t)act_bytes > life_bytes ? (size_t)act_bytes : life_bytes);
  uint8_t *wsp = (uint8_t *)bump_take(&b, ws);
  *need = b.used;
  if (!arena) {
    /* the graph checks need scratch; sizing validates them with a small stack buffer when possible */
    uint32_t stack_life[2 * 512];
    if (tmp.h->tensor_count <= 512) {
      if ((st = check_graph(&tmp, stack_life, stack_life + tmp.h->tensor_count)) != XK_OK) return st;
    }
    return XK_OK;
  }
  if (b.used > arena_size) return xk_fail(XK_ERR_MEMORY, "model: arena of %zu bytes is too small, %zu needed", arena_size, b.used);
  uint32_t *life = (uint32_t *)act;
  if ((st = check_graph(&tmp, life, life + tmp.h->tensor_count)) != XK_OK) return st;
  *m = tmp;
  m->ops = ops;
  m->act = act;
  m->max_batch = max_batch;
  m->flags = opt ? opt->flags : 0;
  m->ws = wsp;
  m->ws_size = ws;
  plan_fusion(m, life + tmp.h->tensor_count); /* before the activations overwrite the lifetimes */
  *out = m;
  return XK_OK;
}

xk_status xk_model_arena_size(const void *data, size_t size, const xk_model_options *opt, size_t *bytes) {
  if (!bytes) return xk_fail(XK_ERR_ARGUMENT, "xk_model_arena_size: null result pointer");
  *bytes = 0;
  size_t need = 0;
  xk_status st = build(data, size, opt, NULL, 0, NULL, &need);
  if (st == XK_OK) *bytes = need;
  return st;
}

xk_status xk_model_load(const void *data, size_t size, const xk_model_options *opt, void *arena, size_t arena_size,
                        xk_model **model) {
  if (!model || !arena) return xk_fail(XK_ERR_ARGUMENT, "xk_model_load: null arena or result pointer");
  *model = NULL;
  size_t need = 0;
  return build(data, size, opt, arena, arena_size, model, &need);
}

/* ------------------------------------------------------------------ execution */
static uint8_t *tensor_ptr(const xk_model *m, int32_t idx, size_t batch) {
  return m->act + batch * m->tensors[idx].offset;
}

static xk_status run_op(xk_model *m, const rt_op *r, size_t n) {
  const xkf_op *f = r->f;
  uint8_t *in = tensor_ptr(m, f->inputs[0], n), *out = tensor_ptr(m, f->output, n);
  const xkf_tensor *to = &m->tensors[f->output];
  switch (r->kind) {
    case XKF_OP_BCONV2D: {
      xk_conv_shape s = r->cs;
      s.n = n;
      size_t ldc = r->out_bits ? to->row_bytes : s.oc;
      if (r->res_in >= 0) { /* fused residual add: writes the output of the add, the next op */
        xk_output o = r->out;
        o.residual = (const float *)tensor_ptr(m, r->res_in, n);
        return xk_bconv2d_run(&s, r->packed, r->packed_size, in, &o, tensor_ptr(m, r[1].f->output, n), ldc, m->ws,
                              m->ws_size);
      }
      return xk_bconv2d_run(&s, r->packed, r->packed_size, in, &r->out, out, ldc, m->ws, m->ws_size);
    }
    case XKF_OP_BDENSE:
      return xk_bdense_run(n * r->rows, r->k, r->nout, r->packed, r->packed_size, in, &r->out, out,
                           r->out_bits ? to->row_bytes : r->nout);
    case XKF_OP_DENSE:
      if (r->int8)
        return xk_qdense_run(n * r->rows, r->k, r->nout, r->packed, r->packed_size, (const float *)in, r->q, &r->out, out,
                             r->out_bits ? to->row_bytes : r->nout, m->ws, m->ws_size);
      return xk_dense_run(n * r->rows, r->k, r->nout, r->packed, r->packed_size, (const float *)in, r->k, &r->out, out,
                          r->out_bits ? to->row_bytes : r->nout);
    case XKF_OP_CONV2D: {
      xk_conv_shape s = r->cs;
      s.n = n;
      size_t ldc = r->out_bits ? to->row_bytes : s.oc;
      if (r->depthwise) {
        size_t rows = n * (size_t)to->shape[1] * to->shape[2];
        size_t fbytes = r->out_bits ? xk_round_up(rows * s.oc * sizeof(float), 64) : 0;
        float *dst = r->out_bits ? (float *)m->ws : (float *)out;
        xk_output fo = r->out;
        fo.kind = XK_OUT_FLOAT;
        xk_status st = r->int8 ? xk_qdwconv2d_run(&s, (const int8_t *)r->w, (const float *)in, r->q, &fo, dst, s.oc,
                                                  m->ws + fbytes, m->ws_size - fbytes)
                               : xk_dwconv2d_run(&s, (const float *)r->w, (const float *)in, &fo, dst, s.oc);
        if (st != XK_OK || !r->out_bits) return st;
        return xk_binarize(rows, s.oc, dst, s.oc, NULL, NULL, out);
      }
      if (r->int8) return xk_qconv2d_run(&s, r->packed, r->packed_size, (const float *)in, r->q, &r->out, out, ldc, m->ws, m->ws_size);
      if (r->res_in >= 0) { /* fused residual add (plan_fusion): writes the output of the add, the next op */
        xk_output o = r->out;
        o.residual = (const float *)tensor_ptr(m, r->res_in, n);
        return xk_conv2d_run(&s, r->packed, r->packed_size, (const float *)in, &o, tensor_ptr(m, r[1].f->output, n),
                             ldc, m->ws, m->ws_size);
      }
      return xk_conv2d_run(&s, r->packed, r->packed_size, (const float *)in, &r->out, out, ldc, m->ws, m->ws_size);
    }
    case XKF_OP_SIGN: return xk_binarize(n * r->rows, r->k, (const float *)in, r->k, r->t, r->u8, out);
    case XKF_OP_UNPACK: return xk_unbinarize(n * r->rows, r->k, in, (float *)out, r->k);
    case XKF_OP_MAXPOOL2D:
    case XKF_OP_AVGPOOL2D: {
      xk_pool_shape s = r->ps;
      s.n = n;
      if (r->kind == XKF_OP_AVGPOOL2D) return xk_avgpool2d(&s, (int)r->f->p.pool.count_include_pad, (const float *)in, (float *)out);
      if (r->in_bits) return xk_bmaxpool2d(&s, in, r->u8, out);
      return xk_maxpool2d(&s, (const float *)in, (float *)out);
    }
    case XKF_OP_GLOBAL_AVGPOOL: return xk_global_avgpool(n, r->rows, r->k, (const float *)in, (float *)out);
    case XKF_OP_ADD:
      return xk_add(n * r->rows, r->k, (const float *)in, (const float *)tensor_ptr(m, f->inputs[1], n), &r->act, (float *)out);
    case XKF_OP_ACTIVATION: return xk_activation(n * r->rows, r->k, (const float *)in, &r->act, (float *)out);
    case XKF_OP_CONCAT: {
      size_t cs[XKF_MAX_INPUTS];
      const uint8_t *ptrs[XKF_MAX_INPUTS];
      for (int k = 0; k < f->num_inputs; k++) {
        const xkf_tensor *t = &m->tensors[f->inputs[k]];
        cs[k] = t->shape[t->ndim - 1];
        ptrs[k] = tensor_ptr(m, f->inputs[k], n);
      }
      if (r->out_bits) return xk_bconcat(n * r->rows, f->num_inputs, ptrs, cs, out);
      return xk_concat(n * r->rows, f->num_inputs, (const float *const *)ptrs, cs, (float *)out);
    }
    case XKF_OP_FLATTEN:
      if (r->in_bits) return xk_bflatten(n, r->rows, r->k, in, out);
      if (f->p.flatten.order == 1) {
        const xkf_tensor *ti = &m->tensors[f->inputs[0]];
        return xk_nhwc_to_nchw(n, ti->shape[1], ti->shape[2], ti->shape[3], (const float *)in, (float *)out);
      }
      memmove(out, in, n * r->count * sizeof(float));
      return XK_OK;
    case XKF_OP_RESHAPE: memmove(out, in, n * r->count * sizeof(float)); return XK_OK;
    case XKF_OP_AFFINE: return xk_affine(n * r->rows, r->k, (const float *)in, r->t, r->b, (float *)out);
    case XKF_OP_SOFTMAX: return xk_softmax(n * r->rows, r->k, (const float *)in, (float *)out);
    default: return xk_fail(XK_ERR_INTERNAL, "model: op kind %u has no executor", (unsigned)(r->kind));
  }
}

float *xk_model_input_buffer(xk_model *m, size_t i, size_t batch) {
  if (!m || i >= m->h->input_count || batch < 1 || batch > m->max_batch) return NULL;
  return (float *)tensor_ptr(m, m->io[i], batch);
}

xk_status xk_model_run_multi(xk_model *m, size_t batch, const float *const *inputs, float *const *outputs) {
  if (!m || !inputs || !outputs) return xk_fail(XK_ERR_ARGUMENT, "xk_model_run: null argument");
  if (batch < 1 || batch > m->max_batch)
    return xk_fail(XK_ERR_ARGUMENT, "xk_model_run: batch %zu outside 1..%u (the model was loaded for max_batch %u)", batch, (unsigned)(m->max_batch), (unsigned)(m->max_batch));
  const xkf_header *h = m->h;
  for (uint32_t k = 0; k < h->input_count; k++) {
    if (!inputs[k]) return xk_fail(XK_ERR_ARGUMENT, "xk_model_run: input %u is null", (unsigned)(k));
    const xkf_tensor *t = &m->tensors[m->io[k]];
    uint8_t *dst = tensor_ptr(m, m->io[k], batch);
    if ((const uint8_t *)inputs[k] != dst) memcpy(dst, inputs[k], batch * t->size); /* else: xk_model_input_buffer */
  }
  for (uint32_t i = 0; i < h->op_count; i++) {
    if (m->hook) m->hook(m->hook_user, i, 0);
    xk_status st = m->ops[i].fused ? XK_OK : run_op(m, &m->ops[i], batch); /* fused: ran with op i - 1 */
    if (st != XK_OK) {
      char msg[300];
      strncpy(msg, xk_last_error(), sizeof msg - 1);
      msg[sizeof msg - 1] = 0;
      return xk_fail(st, "op %u (%s '%s'): %s", (unsigned)(i), kKindNames[m->ops[i].kind], str_at(m, m->fops[i].name), msg);
    }
    if (m->hook) m->hook(m->hook_user, i, 1);
  }
  for (uint32_t k = 0; k < h->output_count; k++) {
    int32_t idx = m->io[h->input_count + k];
    const xkf_tensor *t = &m->tensors[idx];
    if (!outputs[k]) return xk_fail(XK_ERR_ARGUMENT, "xk_model_run: output %u is null", (unsigned)(k));
    const uint8_t *src = tensor_ptr(m, idx, batch);
    if (t->dtype == XKF_DTYPE_BITS) {
      size_t c = t->shape[t->ndim - 1], rows = batch * (size_t)(elems(t) / c);
      xk_status st = xk_unbinarize(rows, c, src, outputs[k], c);
      if (st != XK_OK) return st;
    } else {
      memcpy(outputs[k], src, batch * t->size);
    }
  }
  return XK_OK;
}

xk_status xk_model_run(xk_model *m, size_t batch, const float *input, float *output) {
  if (!m) return xk_fail(XK_ERR_ARGUMENT, "xk_model_run: null model");
  if (m->h->input_count != 1 || m->h->output_count != 1)
    return xk_fail(XK_ERR_ARGUMENT, "xk_model_run: the model has %u inputs and %u outputs; use xk_model_run_multi", (unsigned)(m->h->input_count), (unsigned)(m->h->output_count));
  return xk_model_run_multi(m, batch, &input, &output);
}

/* ------------------------------------------------------------------ introspection */
static void fill_info(const xk_model *m, int32_t idx, xk_tensor_info *info) {
  const xkf_tensor *t = &m->tensors[idx];
  info->name = str_at(m, t->name);
  info->dtype = t->dtype;
  info->ndim = t->ndim;
  memcpy(info->shape, t->shape, sizeof info->shape);
  info->torch_layout = t->torch_layout;
  info->count = (size_t)elems(t);
}

size_t xk_model_num_inputs(const xk_model *m) { return m ? m->h->input_count : 0; }
size_t xk_model_num_outputs(const xk_model *m) { return m ? m->h->output_count : 0; }

xk_status xk_model_input(const xk_model *m, size_t i, xk_tensor_info *info) {
  if (!m || !info || i >= m->h->input_count) return xk_fail(XK_ERR_ARGUMENT, "xk_model_input: no input %zu", i);
  fill_info(m, m->io[i], info);
  return XK_OK;
}

xk_status xk_model_output(const xk_model *m, size_t i, xk_tensor_info *info) {
  if (!m || !info || i >= m->h->output_count) return xk_fail(XK_ERR_ARGUMENT, "xk_model_output: no output %zu", i);
  fill_info(m, m->io[m->h->input_count + i], info);
  return XK_OK;
}

size_t xk_model_num_ops(const xk_model *m) { return m ? m->h->op_count : 0; }

xk_status xk_model_op(const xk_model *m, size_t i, xk_op_info *info) {
  if (!m || !info || i >= m->h->op_count) return xk_fail(XK_ERR_ARGUMENT, "xk_model_op: no op %zu", i);
  const rt_op *r = &m->ops[i];
  info->name = str_at(m, r->f->name);
  info->kind = kKindNames[r->kind];
  switch (r->kind) {
    case XKF_OP_BCONV2D: case XKF_OP_BDENSE: info->precision = "binary"; break;
    case XKF_OP_CONV2D: case XKF_OP_DENSE: info->precision = r->int8 ? "int8" : "float"; break;
    default: info->precision = "-";
  }
  fill_info(m, r->f->output, &info->output);
  info->macs = r->macs;
  info->weight_bytes = r->weight_bytes;
  info->fused = r->fused ? 1u : 0u;
  return XK_OK;
}

xk_status xk_model_meta(const xk_model *m, const char *key, int *type, const void **value, size_t *size) {
  if (!m || !key) return xk_fail(XK_ERR_ARGUMENT, "xk_model_meta: null argument");
  for (uint32_t i = 0; i < m->h->meta_count; i++) {
    const xkf_meta *e = &m->meta[i];
    if (strcmp(str_at(m, e->key), key) == 0) {
      if (type) *type = (int)e->type;
      if (value) *value = m->data + e->offset;
      if (size) *size = (size_t)e->size;
      return XK_OK;
    }
  }
  return xk_fail(XK_ERR_ARGUMENT, "xk_model_meta: no metadata key '%s'", key);
}

void xk_model_format(const xk_model *m, uint32_t *major, uint32_t *minor, uint64_t *arena_per_sample) {
  if (!m) return;
  if (major) *major = m->h->version_major;
  if (minor) *minor = m->h->version_minor;
  if (arena_per_sample) *arena_per_sample = m->h->arena_size;
}

void xk_model_set_hook(xk_model *m, xk_op_hook hook, void *user) {
  if (!m) return;
  m->hook = hook;
  m->hook_user = user;
}
