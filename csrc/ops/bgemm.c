/* Binary GEMM operator: argument checks, weight panel packing, tiling over the thread pool,
 * exact padding correction and the fused epilogues (int32, float scale+bias, packed bits via
 * per-channel integer thresholds). The inner products come from the selected ISA's
 * micro-kernel (csrc/ukernels/bgemm). */
#include <string.h>

#include "../xk_internal.h"

#define PANEL_MAGIC 0x4c4e5058u /* "XPNL" */
#define PANEL_HEADER 64
#define GROUP 64   /* columns per output group: one 64-bit word of packed output */
#define MC 64      /* rows per task */
#define MAX_MR 8
#define SERIAL_WORK ((size_t)1 << 15) /* word-pairs below which a call stays on one thread */

typedef struct panel_header {
  uint32_t magic, isa;
  uint64_t n, k, block_bytes;
} panel_header;

size_t xk_packed_row_bytes(size_t k) { return xk_div_up(k, 64) * 8; }

/* ------------------------------------------------------------------ packing */
static xk_status check_pack(const void *x, size_t rows, size_t k, size_t ld, const void *out,
                            size_t ldo, const char *fn) {
  if (!x || !out) return xk_fail(XK_ERR_ARGUMENT, "%s: null buffer", fn);
  if (rows == 0 || k == 0) return xk_fail(XK_ERR_SHAPE, "%s: empty input (rows=%zu, k=%zu)", fn, rows, k);
  if (ld < k) return xk_fail(XK_ERR_SHAPE, "%s: row stride %zu < k=%zu", fn, ld, k);
  if (ldo < xk_packed_row_bytes(k) || ldo % 8)
    return xk_fail(XK_ERR_SHAPE, "%s: output stride %zu bytes; need a multiple of 8 >= %zu", fn, ldo,
                   xk_packed_row_bytes(k));
  return XK_OK;
}

typedef struct {
  const xk_bgemm_ukernel_desc *d;
  const void *x;
  size_t rows, k, ld, ldo, esize, rows_per_task;
  uint8_t *out;
  int is_f32;
} pack_job;

static void pack_task(void *ctx, size_t t) {
  const pack_job *j = (const pack_job *)ctx;
  size_t r1 = (t + 1) * j->rows_per_task < j->rows ? (t + 1) * j->rows_per_task : j->rows;
  for (size_t r = t * j->rows_per_task; r < r1; r++) {
    const uint8_t *src = (const uint8_t *)j->x + r * j->ld * j->esize;
    uint64_t *dst = (uint64_t *)(j->out + r * j->ldo); /* ldo % 8 == 0 */
    if (j->is_f32) j->d->pack_f32((const float *)src, j->k, dst);
    else j->d->pack_i8((const int8_t *)src, j->k, dst);
    size_t used = xk_packed_row_bytes(j->k);
    if (j->ldo > used) memset(j->out + r * j->ldo + used, 0, j->ldo - used);
  }
}

static xk_status pack_rows(const void *x, size_t rows, size_t k, size_t ld, uint8_t *out, size_t ldo,
                           int is_f32) {
  xk_isa isa = xk_get_isa();
  pack_job j = {xk_ukernel_for(isa), x, rows, k, ld, ldo, is_f32 ? 4 : 1, 0, out, is_f32};
  if (!j.d) return xk_fail(XK_ERR_UNSUPPORTED, "no kernels for ISA %s", xk_isa_name(isa));
  if (((uintptr_t)out) % 8) return xk_fail(XK_ERR_ARGUMENT, "pack: output must be 8-byte aligned");
  size_t bytes = rows * k * j.esize;
  size_t ntasks = bytes < ((size_t)1 << 17) ? 1 : (size_t)xk_get_num_threads() * 4;
  if (ntasks > rows) ntasks = rows;
  j.rows_per_task = xk_div_up(rows, ntasks);
  xk_parallel_for(xk_div_up(rows, j.rows_per_task), pack_task, &j);
  xk_note_isa(isa);
  return XK_OK;
}

xk_status xk_pack_f32(const float *x, size_t rows, size_t k, size_t ld, uint8_t *out, size_t ldo) {
  xk_status s = check_pack(x, rows, k, ld, out, ldo, "xk_pack_f32");
  return s != XK_OK ? s : pack_rows(x, rows, k, ld, out, ldo, 1);
}

xk_status xk_pack_i8(const int8_t *x, size_t rows, size_t k, size_t ld, uint8_t *out, size_t ldo) {
  xk_status s = check_pack(x, rows, k, ld, out, ldo, "xk_pack_i8");
  return s != XK_OK ? s : pack_rows(x, rows, k, ld, out, ldo, 0);
}

xk_status xk_unpack_f32(const uint8_t *bits, size_t rows, size_t k, size_t ldb, float *out, size_t ldo) {
  if (!bits || !out) return xk_fail(XK_ERR_ARGUMENT, "xk_unpack_f32: null buffer");
  if (rows == 0 || k == 0) return xk_fail(XK_ERR_SHAPE, "xk_unpack_f32: empty input");
  if (ldb < xk_packed_row_bytes(k) || ldo < k)
    return xk_fail(XK_ERR_SHAPE, "xk_unpack_f32: strides too small (ldb=%zu, ldo=%zu, k=%zu)", ldb, ldo, k);
  for (size_t r = 0; r < rows; r++)
    for (size_t i = 0; i < k; i++)
      out[r * ldo + i] = ((bits[r * ldb + i / 8] >> (i % 8)) & 1) ? -1.0f : 1.0f;
  return XK_OK;
}

/* ------------------------------------------------------------------ weight panels */
static size_t block_bytes(const xk_bgemm_ukernel_desc *d, size_t k) {
  size_t steps = xk_div_up(xk_packed_row_bytes(k), d->chunk_bytes);
  return steps * d->nr * d->chunk_bytes * d->panel_expand;
}

size_t xk_bgemm_panel_size(xk_isa isa, size_t n, size_t k) {
  const xk_bgemm_ukernel_desc *d = xk_ukernel_for_k(isa, xk_div_up(k, 64));
  if (!d || n == 0 || k == 0) return 0;
  return PANEL_HEADER + xk_div_up(n, d->nr) * block_bytes(d, k);
}

xk_status xk_bgemm_pack_panel(xk_isa isa, const uint8_t *b, size_t n, size_t k, size_t ldb,
                              void *panel, size_t panel_size) {
  if (isa == XK_ISA_AUTO) isa = xk_get_isa();
  const xk_bgemm_ukernel_desc *d = xk_ukernel_for_k(isa, xk_div_up(k, 64));
  if (!d) return xk_fail(XK_ERR_UNSUPPORTED, "xk_bgemm_pack_panel: ISA %s not available", xk_isa_name(isa));
  if (!b || !panel) return xk_fail(XK_ERR_ARGUMENT, "xk_bgemm_pack_panel: null buffer");
  if (n == 0 || k == 0) return xk_fail(XK_ERR_SHAPE, "xk_bgemm_pack_panel: empty weights (n=%zu, k=%zu)", n, k);
  size_t rb = xk_packed_row_bytes(k);
  if (ldb < rb) return xk_fail(XK_ERR_SHAPE, "xk_bgemm_pack_panel: row stride %zu < %zu bytes for k=%zu", ldb, rb, k);
  size_t need = xk_bgemm_panel_size(isa, n, k);
  if (panel_size < need)
    return xk_fail(XK_ERR_MEMORY, "xk_bgemm_pack_panel: panel buffer %zu bytes < %zu needed", panel_size, need);
  uint8_t *p = (uint8_t *)panel;
  memset(p, 0, need);
  panel_header h = {PANEL_MAGIC, (uint32_t)isa, n, k, block_bytes(d, k)};
  memcpy(p, &h, sizeof h);
  const size_t cb = d->chunk_bytes, steps = xk_div_up(rb, cb), stride = cb * d->panel_expand;
  const uint64_t tail = xk_tail_mask(k);
  uint8_t row[8];
  for (size_t j = 0; j < n; j++) {
    uint8_t *blk = p + PANEL_HEADER + (j / d->nr) * h.block_bytes;
    const uint8_t *src = b + j * ldb;
    for (size_t s = 0; s < steps; s++) {
      uint8_t *dst = blk + (s * d->nr + j % d->nr) * stride;
      size_t off = s * cb, nb = rb - off < cb ? rb - off : cb;
      uint8_t chunk[64];
      memcpy(chunk, src + off, nb);
      if (off + nb == rb) { /* zero the bits past k: the padding never counts */
        uint64_t last;
        memcpy(&last, chunk + nb - 8, 8);
        last &= tail;
        memcpy(chunk + nb - 8, &last, 8);
      }
      if (d->panel_chunk_fill) d->panel_chunk_fill(chunk, nb, dst);
      else memcpy(dst, chunk, nb);
    }
  }
  (void)row;
  return XK_OK;
}

/* ------------------------------------------------------------------ GEMM */
typedef struct {
  const xk_bgemm_ukernel_desc *d;
  size_t m, n, k, kw, lda_w, ngroups, mtasks;
  const uint64_t *a;
  const uint8_t *blocks;
  size_t block_bytes;
  const xk_epilogue *ep;
  uint8_t *c;
  size_t ldc;
} gemm_job;

static void epilogue(const gemm_job *j, size_t i, size_t mr, size_t col0, size_t ncols,
                     const uint32_t q[MAX_MR][GROUP]) {
  const int32_t K = (int32_t)j->k;
  const uint64_t pad_mask = ~xk_tail_mask(j->k);
  for (size_t r = 0; r < mr; r++) {
    /* Exact padding correction: B's padding bits are zero in the panel, so A's padding bits
     * (whatever they hold) were each counted once as a mismatch. */
    int32_t corr = pad_mask ? (int32_t)xk_popcount64_portable(j->a[(i + r) * j->lda_w + j->kw - 1] & pad_mask) : 0;
    const uint32_t *qr = q[r];
    switch (j->ep->kind) {
      case XK_OUT_INT32: {
        int32_t *out = (int32_t *)j->c + (i + r) * j->ldc + col0;
        for (size_t c = 0; c < ncols; c++) out[c] = K - 2 * ((int32_t)qr[c] - corr);
        break;
      }
      case XK_OUT_FLOAT: {
        float *out = (float *)j->c + (i + r) * j->ldc + col0;
        const float *s = j->ep->scale, *o = j->ep->bias;
        for (size_t c = 0; c < ncols; c++) {
          float d = (float)(K - 2 * ((int32_t)qr[c] - corr));
          float v = s ? s[col0 + c] * d : d;
          out[c] = o ? v + o[col0 + c] : v;
        }
        break;
      }
      case XK_OUT_BITS: {
        uint64_t word = 0;
        const int32_t *t = j->ep->threshold + col0;
        const uint8_t *f = j->ep->flip ? j->ep->flip + col0 : NULL;
        for (size_t c = 0; c < ncols; c++) {
          int32_t d = K - 2 * ((int32_t)qr[c] - corr);
          uint64_t bit = (uint64_t)(d < t[c]) ^ (f ? (uint64_t)(f[c] & 1) : 0);
          word |= bit << c;
        }
        memcpy(j->c + (i + r) * j->ldc + (col0 / 64) * 8, &word, 8);
        break;
      }
    }
  }
}

static void gemm_task(void *ctx, size_t t) {
  const gemm_job *j = (const gemm_job *)ctx;
  const xk_bgemm_ukernel_desc *d = j->d;
  size_t g = t / j->mtasks, mt = t % j->mtasks;
  size_t i0 = mt * MC, i1 = i0 + MC < j->m ? i0 + MC : j->m;
  size_t col0 = g * GROUP, ncols = j->n - col0 < GROUP ? j->n - col0 : GROUP;
  uint32_t q[MAX_MR][GROUP];
  for (size_t i = i0; i < i1; i += d->mr) {
    size_t mr = i1 - i < d->mr ? i1 - i : d->mr;
    for (size_t c = 0; c < ncols; c += d->nr)
      d->ukernel(mr, j->kw, j->a + i * j->lda_w, j->lda_w, j->blocks + ((col0 + c) / d->nr) * j->block_bytes,
                 &q[0][c], GROUP);
    epilogue(j, i, mr, col0, ncols, (const uint32_t(*)[GROUP])q);
  }
}

xk_status xk_bgemm(size_t m, size_t n, size_t k, const uint8_t *a, size_t lda, const void *panel,
                   size_t panel_size, const xk_epilogue *ep, void *c, size_t ldc) {
  if (!a || !panel || !ep || !c) return xk_fail(XK_ERR_ARGUMENT, "xk_bgemm: null argument");
  if (m == 0 || n == 0 || k == 0) return xk_fail(XK_ERR_SHAPE, "xk_bgemm: empty problem (m=%zu, n=%zu, k=%zu)", m, n, k);
  if (k > (size_t)INT32_MAX / 2) return xk_fail(XK_ERR_SHAPE, "xk_bgemm: k=%zu too large", k);
  panel_header h;
  if (panel_size < PANEL_HEADER) return xk_fail(XK_ERR_ARGUMENT, "xk_bgemm: panel buffer too small");
  memcpy(&h, panel, sizeof h);
  if (h.magic != PANEL_MAGIC) return xk_fail(XK_ERR_ARGUMENT, "xk_bgemm: not a weight panel (bad magic)");
  if (h.n != n || h.k != k)
    return xk_fail(XK_ERR_SHAPE, "xk_bgemm: panel holds n=%llu, k=%llu but the call has n=%zu, k=%zu",
                   (unsigned long long)h.n, (unsigned long long)h.k, n, k);
  const xk_bgemm_ukernel_desc *d = xk_ukernel_for_k((xk_isa)h.isa, xk_div_up(k, 64));
  if (!d) return xk_fail(XK_ERR_UNSUPPORTED, "xk_bgemm: panel packed for ISA %s, not available here", xk_isa_name((xk_isa)h.isa));
  if (panel_size < xk_bgemm_panel_size((xk_isa)h.isa, n, k)) return xk_fail(XK_ERR_MEMORY, "xk_bgemm: panel truncated");
  if (lda % 8 || lda < xk_packed_row_bytes(k) || ((uintptr_t)a) % 8)
    return xk_fail(XK_ERR_SHAPE, "xk_bgemm: A stride %zu bytes; need an 8-byte aligned multiple of 8 >= %zu", lda, xk_packed_row_bytes(k));
  switch (ep->kind) {
    case XK_OUT_INT32:
    case XK_OUT_FLOAT:
      if (ldc < n) return xk_fail(XK_ERR_SHAPE, "xk_bgemm: C stride %zu < n=%zu", ldc, n);
      break;
    case XK_OUT_BITS:
      if (!ep->threshold) return xk_fail(XK_ERR_ARGUMENT, "xk_bgemm: bits output needs thresholds");
      if (ldc < xk_packed_row_bytes(n))
        return xk_fail(XK_ERR_SHAPE, "xk_bgemm: C stride %zu bytes < %zu for n=%zu bits", ldc, xk_packed_row_bytes(n), n);
      break;
    default: return xk_fail(XK_ERR_ARGUMENT, "xk_bgemm: unknown output kind %d", (int)ep->kind);
  }
  gemm_job j = {d, m, n, k, xk_div_up(k, 64), lda / 8, xk_div_up(n, GROUP), xk_div_up(m, MC),
                (const uint64_t *)a, (const uint8_t *)panel + PANEL_HEADER, h.block_bytes, ep,
                (uint8_t *)c, ldc};
  size_t ntasks = j.ngroups * j.mtasks;
  if (m * n * j.kw < SERIAL_WORK) {
    for (size_t t = 0; t < ntasks; t++) gemm_task(&j, t);
  } else {
    xk_parallel_for(ntasks, gemm_task, &j);
  }
  xk_note_isa((xk_isa)h.isa);
  return XK_OK;
}
