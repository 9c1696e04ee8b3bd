/*
 * Binary convolution and binary dense layers on bit-packed NHWC activations.
 *
 * Method: bit-packed im2col + the binary GEMM micro-kernels of csrc/ukernels/bgemm, with an
 * output stage fused per tile (int32, float with scale/bias/activation, or packed bits through
 * per-channel integer thresholds).
 *
 * im2col row of output pixel p: the C bits of each tap (ky, kx) back to back (the format's weight
 * layout), K = KH*KW*C bits in ceil(K/64) words, the bits past K zero in both operands, so
 * padding never counts. When C is a multiple of 64 a tap is whole words (plain copies); when C
 * is a multiple of 8 it is whole bytes (byte copies); otherwise the taps are shifted into place.
 * Either way C = 32 takes half the words of a per-tap padded layout. With kernels that gather
 * their own rows (implicit_im2col) the word and byte cases never build the im2col matrix.
 *
 * Taps outside the image, by pad value:
 *   +1  all bits 0: counted as +1 * w, exactly what a +1 pad does;
 *   -1  the C bits set: counted as -1 * w;
 *    0  bits 0 (+1), then corrected. If q is the popcount over all taps, q = q_valid + n_pad,
 *       where n_pad[c] counts the -1 weights of channel c on the padded taps, and the wanted
 *       dot over the valid taps is dot = K_valid - 2 q_valid = (K_valid + 2 n_pad[c]) - 2 q.
 *       The valid taps of an output position form a box [ylo, yhi] x [xlo, xhi]; along each axis
 *       the range only changes near the borders and changes monotonically, so positions fall into
 *       a few row classes and column classes. base[ycls][xcls][c] = K_valid + 2 n_pad[c] is
 *       tabulated when the weights are packed and the epilogue uses dot = base - 2 q.
 */
#include "bconv2d_direct.h"
#include "ops_internal.h"

/* x86-64 builds with the AVX2 kernels also compile the output stage for AVX2 (GCC / Clang
 * function target), used when the op's kernel family is AVX2 or AVX-512. */
#if defined(XK_HAVE_AVX2) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define XK_EPILOGUE_AVX2 1
#else
#define XK_EPILOGUE_AVX2 0
#endif

#define MC 64      /* rows per GEMM task */
#define GROUP 64   /* output channels per GEMM task: one 64-bit word of packed output */
#define MAX_MR 8
#define SERIAL_WORK ((size_t)1 << 15) /* word pairs below which an op stays on one thread */
#define ROWS_SCRATCH_WORDS 4096 /* 32 KiB: MR gathered im2col rows (implicit_im2col kernels) */
_Static_assert(4 * XK_AVX2_LANES_MAX_KWORDS <= ROWS_SCRATCH_WORDS, "row scratch too small for the AVX2 lane kernel");
_Static_assert(2 * 4 * XK_AVX2_SPLIT_MAX_KWORDS <= ROWS_SCRATCH_WORDS, "row scratch too small for the AVX2 split kernel");

/* ------------------------------------------------------------------ bit helpers */
/* Read nbits (<= 64) bits at bit offset pos of a little-endian bit stream, reading only the
 * bytes that hold them. */
static uint64_t load_bits(const uint8_t *p, size_t pos, size_t nbits) {
  if (nbits == 0) return 0;
  const uint8_t *b = p + pos / 8;
  unsigned sh = (unsigned)(pos % 8);
  size_t nbytes = (sh + nbits + 7) / 8; /* <= 9 */
  uint64_t lo = 0;
  for (size_t i = 0; i < nbytes && i < 8; i++) lo |= (uint64_t)b[i] << (8 * i);
  uint64_t v = lo >> sh;
  if (nbytes == 9) v |= (uint64_t)b[8] << (64 - sh);
  return nbits == 64 ? v : v & ((UINT64_C(1) << nbits) - 1);
}

static inline uint32_t popc64(uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
  return (uint32_t)__builtin_popcountll(x);
#else
  return xk_popcount64_portable(x);
#endif
}

/* ------------------------------------------------------------------ border classes */
/* Valid kernel taps [lo, hi] of output position o along one axis (hi < lo when none). */
static void axis_range(size_t o, size_t stride, size_t pad, size_t dil, size_t k, size_t in, long *lo, long *hi) {
  long i0 = (long)(o * stride) - (long)pad, d = (long)dil;
  long l = i0 >= 0 ? 0 : (-i0 + d - 1) / d;
  long h = i0 > (long)in - 1 ? -1 : ((long)in - 1 - i0) / d;
  if (h > (long)k - 1) h = (long)k - 1;
  *lo = l;
  *hi = h;
}

/* Classes of positions along one axis: consecutive positions with the same valid range (the
 * ranges change monotonically, so equal ranges are consecutive). map (nullable) gets the class
 * of each position; returns the number of classes. */
static size_t axis_classes(size_t out, size_t stride, size_t pad, size_t dil, size_t k, size_t in, uint16_t *map) {
  size_t ncls = 0;
  long plo = 0, phi = 0;
  for (size_t o = 0; o < out; o++) {
    long lo, hi;
    axis_range(o, stride, pad, dil, k, in, &lo, &hi);
    if (o == 0 || lo != plo || hi != phi) ncls++;
    plo = lo;
    phi = hi;
    if (map) map[o] = (uint16_t)(ncls - 1);
  }
  return ncls;
}

/* ------------------------------------------------------------------ packed layout */
typedef struct blayout {
  const xk_bgemm_ukernel_desc *d;
  size_t taps, cw, kwords, block_bytes, nblocks;
  size_t oh, ow, nyc, nxc;
  size_t panel_off, base_off, ycls_off, xcls_off, total;
  int table;  /* pad-0 correction table present */
  int direct; /* the direct path for few input channels (bconv2d_direct.h): its own panel */
} blayout;

static xk_status make_layout(const xk_conv_shape *s, xk_pad_value pad, xk_isa isa, blayout *L, const char *op) {
  memset(L, 0, sizeof *L);
  if (pad != XK_PAD_ZERO && pad != XK_PAD_PLUS && pad != XK_PAD_MINUS)
    return xk_fail(XK_ERR_ARGUMENT, "%s: pad value %d; expected 0, +1 or -1", op, (int)pad);
  xk_status st = xk_conv_check(s, op, &L->oh, &L->ow);
  if (st != XK_OK) return st;
  L->taps = s->kh * s->kw;
  L->cw = xk_div_up(s->c, 64);
  L->kwords = xk_div_up(L->taps * s->c, 64);
  /* convolutions (several rows per image) may take the ISA's conv kernel; dense layers keep the
   * kernel that streams the weights once */
  L->d = L->oh * L->ow >= 4 ? xk_ukernel_for_conv(isa, L->kwords) : xk_ukernel_for_k(isa, L->kwords);
  if (!L->d) return xk_fail(XK_ERR_UNSUPPORTED, "%s: no binary kernels for ISA %s", op, xk_isa_name(isa));
  if (L->kwords * 64 > (size_t)INT32_MAX / 4) return xk_fail(XK_ERR_SHAPE, "%s: reduction too long", op);
  size_t steps = xk_div_up(L->kwords * 8, L->d->chunk_bytes);
  L->block_bytes = steps * L->d->nr * L->d->chunk_bytes * L->d->panel_expand;
  L->nblocks = xk_div_up(s->oc, L->d->nr);
  if (L->oh * L->ow >= 4 && xk_bdirect_applies(s, isa)) {
    L->direct = 1;
    L->nblocks = 1;
    L->block_bytes = xk_bdirect_panel_bytes(s);
  }
  L->panel_off = XK_PACKED_HEADER;
  L->base_off = L->ycls_off = L->xcls_off = L->total = xk_align_up(L->panel_off + L->nblocks * L->block_bytes);
  int padded = s->pad_t || s->pad_b || s->pad_l || s->pad_r;
  if (pad == XK_PAD_ZERO && padded) {
    L->table = 1;
    L->nyc = axis_classes(L->oh, s->stride_h, s->pad_t, xk_dil(s->dil_h), s->kh, s->h, NULL);
    L->nxc = axis_classes(L->ow, s->stride_w, s->pad_l, xk_dil(s->dil_w), s->kw, s->w, NULL);
    L->ycls_off = L->base_off + xk_align_up(L->nyc * L->nxc * s->oc * sizeof(int32_t));
    L->xcls_off = L->ycls_off + xk_align_up(L->oh * sizeof(uint16_t));
    L->total = L->xcls_off + xk_align_up(L->ow * sizeof(uint16_t));
  }
  return XK_OK;
}

/* Word wi of the dense K-bit stream of weight row o (taps back to back), bits past K zero. */
static uint64_t weight_word(const xk_bweights *w, size_t c, size_t taps, size_t o, size_t wi) {
  const uint8_t *row = w->bits + o * w->row_bytes;
  const size_t k = taps * c, p0 = wi * 64, p1 = p0 + 64 < k ? p0 + 64 : k;
  if (w->tap_bits == c) return load_bits(row, p0, p1 - p0);
  uint64_t v = 0;
  for (size_t p = p0; p < p1;) { /* one tap segment at a time */
    size_t t = p / c, ci = p % c, n = c - ci < p1 - p ? c - ci : p1 - p;
    v |= load_bits(row, t * w->tap_bits + ci, n) << (p - p0);
    p += n;
  }
  return v;
}

/* Number of -1 weights (bits 1) of row o on tap t. */
static int32_t tap_negatives(const xk_bweights *w, size_t c, size_t o, size_t t) {
  const uint8_t *row = w->bits + o * w->row_bytes;
  int32_t n = 0;
  for (size_t ci = 0; ci < c; ci += 64) n += (int32_t)popc64(load_bits(row, t * w->tap_bits + ci, c - ci < 64 ? c - ci : 64));
  return n;
}

static xk_status pack_common(const xk_conv_shape *s, xk_pad_value pad, const xk_bweights *w, void *packed,
                             size_t packed_size, uint32_t magic, const char *op) {
  xk_isa isa = xk_get_isa();
  blayout L;
  xk_status st = make_layout(s, pad, isa, &L, op);
  if (st != XK_OK) return st;
  if (!w || !w->bits || !packed) return xk_fail(XK_ERR_ARGUMENT, "%s: null buffer", op);
  if (w->tap_bits < s->c || (L.taps - 1) * w->tap_bits + s->c > w->row_bytes * 8)
    return xk_fail(XK_ERR_SHAPE, "%s: weight rows of %zu bytes with %zu bits per tap cannot hold %zu taps x %zu channels",
                   op, w->row_bytes, w->tap_bits, L.taps, s->c);
  if (packed_size < L.total)
    return xk_fail(XK_ERR_MEMORY, "%s: packed buffer %zu bytes < %zu needed", op, packed_size, L.total);
  uint8_t *p = (uint8_t *)packed;
  memset(p, 0, L.total);
  xk_packed_header h = {magic, (uint32_t)isa, s->oc, L.kwords, {(uint64_t)(int64_t)pad, L.oh, L.ow, L.nyc, L.nxc}};
  memcpy(p, &h, sizeof h);

  /* weight panel: blocks of NR output channels; per step, NR chunks of chunk_bytes */
  const xk_bgemm_ukernel_desc *d = L.d;
  const size_t cb = d->chunk_bytes, steps = xk_div_up(L.kwords * 8, cb), stride = cb * d->panel_expand;
  if (L.direct) { /* the direct path's panel: 32-bit words of each channel's dense K-bit stream */
    const size_t nw = L.taps * s->c / 32;
    for (size_t o = 0; o < s->oc; o++)
      for (size_t i = 0; i < nw; i++)
        xk_bdirect_pack_word(s, o, i, (uint32_t)(weight_word(w, s->c, L.taps, o, i / 2) >> (32 * (i % 2))),
                             p + L.panel_off);
  }
  for (size_t o = 0; !L.direct && o < s->oc; o++) {
    uint8_t *blk = p + L.panel_off + (o / d->nr) * L.block_bytes;
    for (size_t st_i = 0; st_i < steps; st_i++) {
      uint8_t chunk[64];
      memset(chunk, 0, sizeof chunk);
      for (size_t b = 0; b < cb / 8; b++) {
        size_t wi = st_i * (cb / 8) + b;
        if (wi >= L.kwords) break;
        uint64_t v = weight_word(w, s->c, L.taps, o, wi);
        memcpy(chunk + 8 * b, &v, 8); /* little-endian hosts (checked by the runtime) */
      }
      uint8_t *dst = blk + (st_i * d->nr + o % d->nr) * stride;
      if (d->panel_chunk_fill) d->panel_chunk_fill(chunk, cb, dst);
      else memcpy(dst, chunk, cb);
    }
  }

  if (L.table) {
    uint16_t *ycls = (uint16_t *)(p + L.ycls_off), *xcls = (uint16_t *)(p + L.xcls_off);
    axis_classes(L.oh, s->stride_h, s->pad_t, xk_dil(s->dil_h), s->kh, s->h, ycls);
    axis_classes(L.ow, s->stride_w, s->pad_l, xk_dil(s->dil_w), s->kw, s->w, xcls);
    int32_t *base = (int32_t *)(p + L.base_off);
    for (size_t oy = 0; oy < L.oh; oy++) {
      if (oy > 0 && ycls[oy] == ycls[oy - 1]) continue;
      long ylo, yhi;
      axis_range(oy, s->stride_h, s->pad_t, xk_dil(s->dil_h), s->kh, s->h, &ylo, &yhi);
      for (size_t ox = 0; ox < L.ow; ox++) {
        if (ox > 0 && xcls[ox] == xcls[ox - 1]) continue;
        long xlo, xhi;
        axis_range(ox, s->stride_w, s->pad_l, xk_dil(s->dil_w), s->kw, s->w, &xlo, &xhi);
        size_t ny = yhi >= ylo ? (size_t)(yhi - ylo + 1) : 0, nx = xhi >= xlo ? (size_t)(xhi - xlo + 1) : 0;
        int32_t kvalid = (int32_t)(ny * nx * s->c);
        int32_t *row = base + ((size_t)ycls[oy] * L.nxc + xcls[ox]) * s->oc;
        for (size_t o = 0; o < s->oc; o++) {
          int32_t npad = 0;
          for (size_t ky = 0; ky < s->kh; ky++)
            for (size_t kx = 0; kx < s->kw; kx++) {
              int inside = (long)ky >= ylo && (long)ky <= yhi && (long)kx >= xlo && (long)kx <= xhi;
              if (inside) continue;
              npad += tap_negatives(w, s->c, o, ky * s->kw + kx);
            }
          row[o] = kvalid + 2 * npad;
        }
      }
    }
  }
  return XK_OK;
}

size_t xk_bconv2d_packed_size(const xk_conv_shape *s, xk_pad_value pad) {
  blayout L;
  return make_layout(s, pad, xk_get_isa(), &L, "xk_bconv2d_packed_size") == XK_OK ? L.total : 0;
}

xk_status xk_bconv2d_pack(const xk_conv_shape *s, xk_pad_value pad, const xk_bweights *w, void *packed,
                          size_t packed_size) {
  return pack_common(s, pad, w, packed, packed_size, XK_MAGIC_BCONV, "xk_bconv2d_pack");
}

/* ------------------------------------------------------------------ GEMM with fused output stage */
typedef struct bjob {
  const xk_bgemm_ukernel_desc *d;
  size_t m, n, kwords, lda_w, mtiles;
  const uint64_t *a;
  const uint8_t *blocks;
  size_t block_bytes;
  int32_t kfull;
  uint64_t a_pad_mask; /* nonzero: A's last word may hold padding bits (read directly) */
  const int32_t *base; /* pad-0 correction table or NULL */
  const uint16_t *ycls, *xcls;
  size_t oh, ow, nxc;
  const xk_output *o;
  uint8_t *c;
  size_t ldc;
  /* implicit im2col (whole-word or whole-byte taps): rows are gathered from the input in the tasks */
  const xk_conv_shape *s;
  const uint64_t *in;
  xk_pad_value pad;
  int avx2; /* the AVX2 build of the output stage */
} bjob;

/* Output position of a GEMM row (batch, y, x), stepped row by row without division. */
typedef struct rowpos {
  size_t b, y, x;
} rowpos;

static rowpos rowpos_of(const bjob *j, size_t row) {
  size_t hw = j->oh * j->ow;
  rowpos p = {row / hw, (row % hw) / j->ow, row % j->ow};
  return p;
}

static void rowpos_next(const bjob *j, rowpos *p) {
  if (++p->x == j->ow) {
    p->x = 0;
    if (++p->y == j->oh) p->y = 0, p->b++;
  }
}

/* The output stage of MR rows. pos: the position of row i (pad-0 table lookups; NULL:
 * computed here). Compiled twice: portable, and for AVX2 hosts with 256-bit vectors (same
 * operations, no FMA contraction, so the same results). */
static XK_ALWAYS_INLINE void epilogue_body(const bjob *j, size_t i, size_t mr, size_t col0, size_t ncols,
                                           const uint32_t q[MAX_MR][GROUP], uint64_t flip, const rowpos *pos) {
  const xk_output *o = j->o;
  rowpos p = {0, 0, 0};
  if (j->base) p = pos ? *pos : rowpos_of(j, i);
  for (size_t r = 0; r < mr; r++) {
    size_t row = i + r;
    int32_t corr = 0;
    if (j->a_pad_mask) corr = (int32_t)popc64(j->a[row * j->lda_w + j->kwords - 1] & j->a_pad_mask);
    int32_t dot[GROUP];
    const uint32_t *qr = q[r];
    if (j->base) {
      const int32_t *b = j->base + ((size_t)j->ycls[p.y] * j->nxc + j->xcls[p.x]) * j->n + col0;
      for (size_t c = 0; c < ncols; c++) dot[c] = b[c] + 2 * corr - 2 * (int32_t)qr[c];
      rowpos_next(j, &p);
    } else {
      const int32_t k = j->kfull + 2 * corr;
      for (size_t c = 0; c < ncols; c++) dot[c] = k - 2 * (int32_t)qr[c];
    }
    switch (o->kind) {
      case XK_OUT_INT32: memcpy((int32_t *)j->c + row * j->ldc + col0, dot, ncols * sizeof(int32_t)); break;
      case XK_OUT_FLOAT: {
        xk_float_row(o, dot, col0, ncols, (float *)j->c + row * j->ldc + col0,
                     o->residual ? o->residual + row * j->ldc + col0 : NULL);
        break;
      }
      case XK_OUT_BITS: {
        uint64_t word = xk_threshold_word(dot, o->threshold + col0, ncols, flip);
        memcpy(j->c + row * j->ldc + (col0 / 64) * 8, &word, 8);
        break;
      }
    }
  }
}

static void epilogue_portable(const bjob *j, size_t i, size_t mr, size_t col0, size_t ncols,
                              const uint32_t q[MAX_MR][GROUP], uint64_t flip, const rowpos *pos) {
  epilogue_body(j, i, mr, col0, ncols, q, flip, pos);
}

#if XK_EPILOGUE_AVX2
__attribute__((target("avx2"))) static void epilogue_avx2(const bjob *j, size_t i, size_t mr, size_t col0,
                                                           size_t ncols, const uint32_t q[MAX_MR][GROUP],
                                                           uint64_t flip, const rowpos *pos) {
  epilogue_body(j, i, mr, col0, ncols, q, flip, pos);
}
#endif

static void epilogue(const bjob *j, size_t i, size_t mr, size_t col0, size_t ncols, const uint32_t q[MAX_MR][GROUP],
                     uint64_t flip, const rowpos *pos) {
#if XK_EPILOGUE_AVX2
  if (j->avx2) {
    epilogue_avx2(j, i, mr, col0, ncols, q, flip, pos);
    return;
  }
#endif
  epilogue_portable(j, i, mr, col0, ncols, q, flip, pos);
}

/* The mr rows at a (stride lda words) in the kernel's row format: a itself, or the rows
 * converted into scratch (kernels with prep_a). *ld gets the stride in words. */
static const uint64_t *kernel_rows(const xk_bgemm_ukernel_desc *d, const uint64_t *a, size_t lda, size_t mr,
                                   size_t kw, uint64_t *scratch, size_t *ld) {
  if (!d->prep_a) {
    *ld = lda;
    return a;
  }
  *ld = d->a_expand * kw;
  for (size_t r = 0; r < mr; r++) d->prep_a(a + r * lda, kw, scratch + r * *ld);
  return scratch;
}

/* MR rows x ncols columns (the panel blocks from blk on) into q: one call for kernels with
 * ukernel_cols, else one per block of NR columns. */
static void kernel_cols(const xk_bgemm_ukernel_desc *d, size_t mr, size_t kw, const uint64_t *a, size_t lda,
                        const uint8_t *blk, size_t block_bytes, size_t ncols, uint32_t q[MAX_MR][GROUP]) {
  if (d->ukernel_cols) {
    d->ukernel_cols(mr, kw, a, lda, blk, block_bytes, ncols, &q[0][0], GROUP);
    return;
  }
  for (size_t c = 0; c < ncols; c += d->nr, blk += block_bytes) d->ukernel(mr, kw, a, lda, blk, &q[0][c], GROUP);
}

static void gemm_task(void *ctx, size_t t) {
  const bjob *j = (const bjob *)ctx;
  const xk_bgemm_ukernel_desc *d = j->d;
  size_t g = t / j->mtiles, mt = t % j->mtiles;
  size_t i0 = mt * MC, i1 = i0 + MC < j->m ? i0 + MC : j->m;
  size_t col0 = g * GROUP, ncols = j->n - col0 < GROUP ? j->n - col0 : GROUP;
  uint32_t q[MAX_MR][GROUP];
#ifdef XK_HAVE_AVX2
  uint64_t prepped[ROWS_SCRATCH_WORDS]; /* kernels with prep_a (AVX2 only; kwords bounded) */
#else
  uint64_t *prepped = NULL; /* no prep_a kernels in this build: keep small stacks small (Cortex-M) */
#endif
  const uint64_t flip = xk_flip_word(j->o, col0, ncols);
  for (size_t i = i0; i < i1; i += d->mr) {
    size_t mr = i1 - i < d->mr ? i1 - i : d->mr, lda;
    const uint64_t *a = kernel_rows(d, j->a + i * j->lda_w, j->lda_w, mr, j->kwords, prepped, &lda);
    kernel_cols(d, mr, j->kwords, a, lda, j->blocks + (col0 / d->nr) * j->block_bytes, j->block_bytes, ncols, q);
    epilogue(j, i, mr, col0, ncols, (const uint32_t(*)[GROUP])q, flip, NULL);
  }
}

/* im2col row of output position pos for a convolution whose taps are whole words (C % 64 == 0),
 * copied from the packed NHWC input: a tap is C/64 words, and a run of kx taps inside the image
 * (stride 1) is one copy. */
static void gather_row_words(const xk_conv_shape *s, const uint64_t *in, xk_pad_value pad, const rowpos *pos,
                             uint64_t *dst) {
  const size_t tw = s->c / 64; /* words per tap */
  const size_t b = pos->b, oy = pos->y, ox = pos->x;
  const long iy0 = (long)(oy * s->stride_h) - (long)s->pad_t, ix0 = (long)(ox * s->stride_w) - (long)s->pad_l;
  const long dh = (long)xk_dil(s->dil_h), dw = (long)xk_dil(s->dil_w);
  const uint64_t fill = pad == XK_PAD_MINUS ? ~UINT64_C(0) : 0;
  const int run = dw == 1 && ix0 >= 0 && ix0 + (long)s->kw <= (long)s->w; /* all kx taps inside */
  for (size_t ky = 0; ky < s->kh; ky++) {
    const long iy = iy0 + (long)ky * dh;
    const uint64_t *row = in + (b * s->h + (size_t)(iy < 0 ? 0 : iy)) * s->w * tw;
    if (iy < 0 || iy >= (long)s->h) {
      for (size_t w = 0; w < s->kw * tw; w++) dst[w] = fill;
      dst += s->kw * tw;
      continue;
    }
    if (run) { /* a few words: an inline loop, not a library call */
      const uint64_t *src = row + (size_t)ix0 * tw;
      for (size_t w = 0; w < s->kw * tw; w++) dst[w] = src[w];
      dst += s->kw * tw;
      continue;
    }
    for (size_t kx = 0; kx < s->kw; kx++, dst += tw) {
      const long ix = ix0 + (long)kx * dw;
      if (ix >= 0 && ix < (long)s->w) memcpy(dst, row + (size_t)ix * tw, tw * 8);
      else for (size_t w = 0; w < tw; w++) dst[w] = fill;
    }
  }
}

/* The same for taps of whole bytes (C % 8 == 0, e.g. C = 32): the first C/8 bytes of each input
 * pixel back to back (the input's bits past C are not read), the bytes past K (kwords words) zero. */
static void gather_row_bytes(const xk_conv_shape *s, const uint64_t *input, xk_pad_value pad, size_t kwords,
                             const rowpos *pos, uint64_t *dst) {
  const size_t tb = s->c / 8, pix = xk_div_up(s->c, 64) * 8; /* bytes per tap, bytes per input pixel */
  const long iy0 = (long)(pos->y * s->stride_h) - (long)s->pad_t, ix0 = (long)(pos->x * s->stride_w) - (long)s->pad_l;
  const long dh = (long)xk_dil(s->dil_h), dw = (long)xk_dil(s->dil_w);
  const int fill = pad == XK_PAD_MINUS ? 0xff : 0;
  const uint8_t *in = (const uint8_t *)input + pos->b * s->h * s->w * pix;
  uint8_t *d = (uint8_t *)dst;
  dst[kwords - 1] = 0; /* the bits past K */
  for (size_t ky = 0; ky < s->kh; ky++) {
    const long iy = iy0 + (long)ky * dh;
    if (iy < 0 || iy >= (long)s->h) {
      memset(d, fill, s->kw * tb);
      d += s->kw * tb;
      continue;
    }
    const uint8_t *row = in + (size_t)iy * s->w * pix;
    for (size_t kx = 0; kx < s->kw; kx++, d += tb) {
      const long ix = ix0 + (long)kx * dw;
      if (ix < 0 || ix >= (long)s->w) memset(d, fill, tb);
      else if (tb == 4) memcpy(d, row + (size_t)ix * pix, 4); /* C = 32: one 32-bit move */
      else memcpy(d, row + (size_t)ix * pix, tb);
    }
  }
}

/* One im2col row (kwords words) of a convolution with C % 8 == 0. */
static void gather_row(const xk_conv_shape *s, const uint64_t *in, xk_pad_value pad, size_t kwords, const rowpos *pos,
                       uint64_t *dst) {
  if (s->c % 64) gather_row_bytes(s, in, pad, kwords, pos, dst);
  else gather_row_words(s, in, pad, pos, dst);
}

/* Implicit im2col: task t is the block of MR rows from t * MR across all output channels, so
 * each row is gathered once and reused by every column block (small tasks: see threadpool.c). */
static void rows_task(void *ctx, size_t t) {
  const bjob *j = (const bjob *)ctx;
  const xk_bgemm_ukernel_desc *d = j->d;
  const size_t i = t * d->mr, mr = j->m - i < d->mr ? j->m - i : d->mr;
  uint32_t q[MAX_MR][GROUP];
  uint64_t rows[ROWS_SCRATCH_WORDS];
#ifdef XK_HAVE_AVX2
  uint64_t prepped[ROWS_SCRATCH_WORDS]; /* kernels with prep_a (AVX2 only) */
#else
  uint64_t *prepped = NULL;
#endif
  rowpos pos = rowpos_of(j, i), next = pos;
  size_t lda;
  for (size_t r = 0; r < mr; r++, rowpos_next(j, &next))
    gather_row(j->s, j->in, j->pad, j->kwords, &next, rows + r * j->kwords);
  const uint64_t *a = kernel_rows(d, rows, j->kwords, mr, j->kwords, prepped, &lda);
  for (size_t col0 = 0; col0 < j->n; col0 += GROUP) {
    size_t ncols = j->n - col0 < GROUP ? j->n - col0 : GROUP;
    const uint64_t flip = xk_flip_word(j->o, col0, ncols);
    kernel_cols(d, mr, j->kwords, a, lda, j->blocks + (col0 / d->nr) * j->block_bytes, j->block_bytes, ncols, q);
    epilogue(j, i, mr, col0, ncols, (const uint32_t(*)[GROUP])q, flip, &pos);
  }
}

static void run_gemm(bjob *j) {
#if XK_EPILOGUE_AVX2
  j->avx2 = (j->d->isa == XK_ISA_AVX2 || j->d->isa == XK_ISA_AVX512) && xk_isa_available(XK_ISA_AVX2);
#endif
  const size_t workers = j->m * j->n * j->kwords < SERIAL_WORK ? 1 : SIZE_MAX;
  if (j->in) {
    xk_parallel_run(xk_div_up(j->m, j->d->mr), workers, rows_task, j);
  } else {
    j->mtiles = xk_div_up(j->m, MC);
    xk_parallel_run(j->mtiles * xk_div_up(j->n, GROUP), workers, gemm_task, j);
  }
  xk_note_isa(j->d->isa);
}

/* ------------------------------------------------------------------ im2col */
typedef struct ijob {
  const xk_conv_shape *s;
  const blayout *L;
  xk_pad_value pad;
  const uint64_t *in;
  uint64_t *a;
  size_t m, rows_per_task;
} ijob;

static void im2col_task(void *ctx, size_t t) {
  const ijob *j = (const ijob *)ctx;
  const xk_conv_shape *s = j->s;
  const size_t cw = j->L->cw, oh = j->L->oh, ow = j->L->ow;
  const uint64_t tail = xk_tail_mask(s->c);
  const long dh = (long)xk_dil(s->dil_h), dw = (long)xk_dil(s->dil_w);
  size_t r1 = (t + 1) * j->rows_per_task < j->m ? (t + 1) * j->rows_per_task : j->m;
  size_t r = t * j->rows_per_task;
  size_t b = r / (oh * ow), oy = (r % (oh * ow)) / ow, ox = r % ow; /* then stepped, no division per row */
  for (; r < r1; r++, ++ox == ow ? (ox = 0, ++oy == oh ? (oy = 0, b++) : 0) : 0) {
    long iy0 = (long)(oy * s->stride_h) - (long)s->pad_t, ix0 = (long)(ox * s->stride_w) - (long)s->pad_l;
    uint64_t *dst = j->a + r * j->L->kwords;
    const size_t kwords = j->L->kwords;
    if (s->c % 8 == 0) { /* whole-word or whole-byte taps: copies */
      const rowpos p = {b, oy, ox};
      gather_row(s, j->in, j->pad, kwords, &p, dst);
      continue;
    }
    memset(dst, 0, kwords * 8);
    size_t pos = 0;
    for (size_t ky = 0; ky < s->kh; ky++) {
      long iy = iy0 + (long)ky * dh;
      for (size_t kx = 0; kx < s->kw; kx++, pos += s->c) {
        long ix = ix0 + (long)kx * dw;
        const int inside = !(iy < 0 || iy >= (long)s->h || ix < 0 || ix >= (long)s->w);
        if (!inside && j->pad != XK_PAD_MINUS) continue; /* zero bits: +1 (pad 0 is corrected later) */
        const uint64_t *src = inside ? j->in + ((b * s->h + (size_t)iy) * s->w + (size_t)ix) * cw : NULL;
        for (size_t w = 0; w < cw; w++) {
          uint64_t v = src ? src[w] : ~UINT64_C(0);
          if (w + 1 == cw) v &= tail;
          size_t p = pos + w * 64, q = p / 64;
          unsigned sh = (unsigned)(p % 64);
          dst[q] |= v << sh;
          if (sh && q + 1 < kwords) dst[q + 1] |= v >> (64 - sh);
        }
      }
    }
  }
}

static int direct_input(const xk_conv_shape *s) {
  return s->kh == 1 && s->kw == 1 && s->stride_h == 1 && s->stride_w == 1 && !s->pad_t && !s->pad_b && !s->pad_l &&
         !s->pad_r;
}

/* Convolutions whose im2col rows are gathered inside the GEMM tasks (kernels with
 * implicit_im2col, taps of whole words or whole bytes): no im2col matrix. */
static int implicit_im2col(const xk_conv_shape *s, const xk_bgemm_ukernel_desc *d) {
  return d->implicit_im2col && s->c % 8 == 0 && !direct_input(s);
}

size_t xk_bconv2d_workspace_size(const xk_conv_shape *s) {
  size_t oh, ow;
  if (!s || xk_conv_out_size(s, &oh, &ow) != XK_OK) return 0;
  /* the direct path's split input (builds with it; the path is chosen at packing) */
  const size_t direct = xk_bdirect_workspace_size(s, oh, ow);
  if (direct_input(s)) return direct;
  /* the im2col matrix (kernels without implicit im2col; the family is chosen at packing) */
  const size_t im2col = xk_align_up(s->n * oh * ow * xk_div_up(s->kh * s->kw * s->c, 64) * 8);
  return im2col > direct ? im2col : direct;
}

static xk_status unpack_layout(const xk_conv_shape *s, const void *packed, size_t packed_size, blayout *L,
                               xk_pad_value *pad, uint32_t magic, const char *op) {
  if (!packed || packed_size < XK_PACKED_HEADER) return xk_fail(XK_ERR_ARGUMENT, "%s: packed weights missing", op);
  xk_packed_header h;
  memcpy(&h, packed, sizeof h);
  if (h.magic != magic) return xk_fail(XK_ERR_ARGUMENT, "%s: buffer was not packed by this op (bad magic)", op);
  *pad = (xk_pad_value)(int64_t)h.aux[0];
  xk_status st = make_layout(s, *pad, (xk_isa)h.isa, L, op);
  if (st != XK_OK) return st;
  if (h.n != s->oc || h.k != L->kwords || h.aux[1] != L->oh || h.aux[2] != L->ow || h.aux[3] != L->nyc ||
      h.aux[4] != L->nxc)
    return xk_fail(XK_ERR_SHAPE, "%s: weights were packed for another shape (n=%llu, k=%llu words; call: n=%zu, k=%zu)",
                   op, (unsigned long long)h.n, (unsigned long long)h.k, s->oc, L->kwords);
  if (packed_size < L->total)
    return xk_fail(XK_ERR_MEMORY, "%s: packed buffer %zu bytes < %zu needed", op, packed_size, L->total);
  return XK_OK;
}

xk_status xk_bconv2d_run(const xk_conv_shape *s, const void *packed, size_t packed_size, const uint8_t *in,
                         const xk_output *o, void *out, size_t ldc, void *ws, size_t ws_size) {
  static const char op[] = "xk_bconv2d";
  blayout L;
  xk_pad_value pad = XK_PAD_PLUS;
  xk_status st = unpack_layout(s, packed, packed_size, &L, &pad, XK_MAGIC_BCONV, op);
  if (st != XK_OK) return st;
  if (!in || !out) return xk_fail(XK_ERR_ARGUMENT, "%s: null input or output", op);
  if (((uintptr_t)in) % 8) return xk_fail(XK_ERR_ARGUMENT, "%s: input must be 8-byte aligned", op);
  if ((st = xk_output_check(o, s->oc, ldc, XK_CHECK_BINARY_ACC | XK_CHECK_RESIDUAL, op)) != XK_OK) return st;
  size_t need = xk_bconv2d_workspace_size(s), m = s->n * L.oh * L.ow;
  if (ws_size < need || (need && !ws))
    return xk_fail(XK_ERR_MEMORY, "%s: workspace %zu bytes < %zu needed", op, ws_size, need);
  if (need && ((uintptr_t)ws) % 8) return xk_fail(XK_ERR_ARGUMENT, "%s: workspace must be 8-byte aligned", op);

  const uint8_t *p = (const uint8_t *)packed;
  if (L.direct) {
    xk_bdirect_job dj = {s, L.oh, L.ow, pad, in, p + L.panel_off, (int32_t)(L.taps * s->c), NULL, NULL, NULL, 0,
                         o, (uint8_t *)out, ldc, (uint8_t *)ws};
    if (L.table) {
      dj.base = (const int32_t *)(p + L.base_off);
      dj.ycls = (const uint16_t *)(p + L.ycls_off);
      dj.xcls = (const uint16_t *)(p + L.xcls_off);
      dj.nxc = L.nxc;
    }
    xk_bdirect_run(&dj);
    xk_note_isa(XK_ISA_AVX2);
    return XK_OK;
  }
  bjob j;
  memset(&j, 0, sizeof j);
  j.d = L.d;
  j.m = m;
  j.n = s->oc;
  j.kwords = L.kwords;
  j.lda_w = L.kwords;
  j.blocks = p + L.panel_off;
  j.block_bytes = L.block_bytes;
  j.kfull = (int32_t)(L.taps * s->c);
  j.o = o;
  j.c = (uint8_t *)out;
  j.ldc = ldc;
  if (direct_input(s)) {
    j.a = (const uint64_t *)in;
    j.a_pad_mask = ~xk_tail_mask(s->c);
  } else if (implicit_im2col(s, L.d)) { /* im2col rows gathered inside the GEMM tasks */
    j.s = s;
    j.in = (const uint64_t *)in;
    j.pad = pad;
    j.oh = L.oh;
    j.ow = L.ow;
  } else {
    ijob ij = {s, &L, pad, (const uint64_t *)in, (uint64_t *)ws, m, 0};
    size_t ntasks = m * L.kwords < SERIAL_WORK ? 1 : (size_t)xk_get_num_threads() * 4;
    if (ntasks > m) ntasks = m;
    ij.rows_per_task = xk_div_up(m, ntasks);
    xk_parallel_for(xk_div_up(m, ij.rows_per_task), im2col_task, &ij);
    j.a = (const uint64_t *)ws;
  }
  if (L.table) {
    j.base = (const int32_t *)(p + L.base_off);
    j.ycls = (const uint16_t *)(p + L.ycls_off);
    j.xcls = (const uint16_t *)(p + L.xcls_off);
    j.oh = L.oh;
    j.ow = L.ow;
    j.nxc = L.nxc;
  }
  run_gemm(&j);
  return XK_OK;
}

/* ------------------------------------------------------------------ binary dense */
static xk_conv_shape dense_shape(size_t n, size_t k, size_t n_out) {
  xk_conv_shape s;
  memset(&s, 0, sizeof s);
  s.n = n ? n : 1;
  s.h = s.w = 1;
  s.c = k;
  s.oc = n_out;
  s.kh = s.kw = s.stride_h = s.stride_w = 1;
  return s;
}

size_t xk_bdense_packed_size(size_t k, size_t n_out) {
  xk_conv_shape s = dense_shape(1, k, n_out);
  return xk_bconv2d_packed_size(&s, XK_PAD_PLUS);
}

xk_status xk_bdense_pack(size_t k, size_t n_out, const uint8_t *w_bits, size_t w_row_bytes, void *packed,
                         size_t packed_size) {
  xk_conv_shape s = dense_shape(1, k, n_out);
  xk_bweights w = {w_bits, w_row_bytes, k};
  return pack_common(&s, XK_PAD_PLUS, &w, packed, packed_size, XK_MAGIC_BDENSE, "xk_bdense_pack");
}

xk_status xk_bdense_run(size_t n, size_t k, size_t n_out, const void *packed, size_t packed_size, const uint8_t *in,
                        const xk_output *o, void *out, size_t ldc) {
  static const char op[] = "xk_bdense";
  if (n == 0) return xk_fail(XK_ERR_SHAPE, "%s: empty batch", op);
  xk_conv_shape s = dense_shape(n, k, n_out);
  blayout L;
  xk_pad_value pad = XK_PAD_PLUS;
  xk_status st = unpack_layout(&s, packed, packed_size, &L, &pad, XK_MAGIC_BDENSE, op);
  if (st != XK_OK) return st;
  if (!in || !out) return xk_fail(XK_ERR_ARGUMENT, "%s: null input or output", op);
  if (((uintptr_t)in) % 8) return xk_fail(XK_ERR_ARGUMENT, "%s: input must be 8-byte aligned", op);
  if ((st = xk_output_check(o, n_out, ldc, XK_CHECK_BINARY_ACC | XK_CHECK_RESIDUAL, op)) != XK_OK) return st;
  bjob j;
  memset(&j, 0, sizeof j);
  j.d = L.d;
  j.m = n;
  j.n = n_out;
  j.kwords = L.kwords;
  j.lda_w = L.kwords;
  j.a = (const uint64_t *)in;
  j.a_pad_mask = ~xk_tail_mask(k);
  j.blocks = (const uint8_t *)packed + L.panel_off;
  j.block_bytes = L.block_bytes;
  j.kfull = (int32_t)k;
  j.o = o;
  j.c = (uint8_t *)out;
  j.ldc = ldc;
  run_gemm(&j);
  return XK_OK;
}
