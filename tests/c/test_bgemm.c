/* C-side tests of the binary compute core: every available ISA against the reference kernels
 * (csrc/ref) on random shapes, including awkward K (1, 63, 64, 65, primes, 4097), odd M/N,
 * M = 1, garbage in A's padding bits, every output kind, 1 and 2 threads, plus one-hot probes
 * that pin the bit order, and each micro-kernel family (main, small-K, conv) called directly. Prints "N passed, M failed" and exits non-zero on any failure.
 * Usage: xk_test_bgemm [isa ...]   (default: every ISA available here) */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xk_internal.h"

static int g_pass, g_fail;
#define CHECK(cond, ...)                          \
  do {                                            \
    if (cond) g_pass++;                           \
    else { g_fail++; printf("FAIL: " __VA_ARGS__); printf("\n"); } \
  } while (0)

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
  g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
  return g_rng;
}

static void *xmalloc(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n ? n : 1)) abort();
  return p;
}

static void test_pack(xk_isa isa) {
  static const size_t ks[] = {1, 7, 8, 31, 63, 64, 65, 100, 127, 128, 129, 257, 4097};
  for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
    size_t k = ks[t], rows = 3, rb = xk_packed_row_bytes(k);
    float *x = xmalloc(rows * k * 4);
    int8_t *xi = xmalloc(rows * k);
    for (size_t i = 0; i < rows * k; i++) {
      uint64_t r = rnd() % 8;
      x[i] = r == 0 ? 0.0f : r == 1 ? -0.0f : r == 2 ? NAN : ((float)(rnd() % 2001) - 1000.0f) / 7.0f;
      xi[i] = (int8_t)(rnd() & 0xff);
    }
    uint8_t *got = xmalloc(rows * rb), *want = xmalloc(rb);
    memset(got, 0xAB, rows * rb);
    CHECK(xk_pack_f32(x, rows, k, k, got, rb) == XK_OK, "pack_f32 status (%s)", xk_last_error());
    CHECK(xk_last_isa() == isa, "pack_f32 ran %s, forced %s", xk_isa_name(xk_last_isa()), xk_isa_name(isa));
    for (size_t r = 0; r < rows; r++) {
      xk_ref_pack_f32(x + r * k, k, want);
      CHECK(memcmp(got + r * rb, want, rb) == 0, "%s pack_f32 k=%zu row %zu", xk_isa_name(isa), k, r);
    }
    memset(got, 0xAB, rows * rb);
    CHECK(xk_pack_i8(xi, rows, k, k, got, rb) == XK_OK, "pack_i8 status");
    for (size_t r = 0; r < rows; r++) {
      xk_ref_pack_i8(xi + r * k, k, want);
      CHECK(memcmp(got + r * rb, want, rb) == 0, "%s pack_i8 k=%zu row %zu", xk_isa_name(isa), k, r);
    }
    free(x); free(xi); free(got); free(want);
  }
  /* one-hot probes: element i negative -> bit i%8 of byte i/8, nothing else */
  float probe[130];
  uint8_t bits[24];
  for (size_t i = 0; i < 130; i++) {
    for (size_t e = 0; e < 130; e++) probe[e] = 1.0f;
    probe[i] = -1.0f;
    xk_pack_f32(probe, 1, 130, 130, bits, sizeof bits);
    int ok = 1;
    for (size_t byte = 0; byte < xk_packed_row_bytes(130); byte++)
      ok &= bits[byte] == (byte == i / 8 ? (uint8_t)(1u << (i % 8)) : 0);
    CHECK(ok, "%s one-hot probe at element %zu", xk_isa_name(isa), i);
  }
}

static void test_gemm_case(xk_isa isa, size_t m, size_t n, size_t k, int threads) {
  size_t rb = xk_packed_row_bytes(k), lda = rb + 8 * (rnd() % 2); /* sometimes padded stride */
  uint8_t *a = xmalloc(m * lda), *b = xmalloc(n * rb);
  for (size_t i = 0; i < m * lda; i++) a[i] = (uint8_t)rnd();
  for (size_t i = 0; i < n * rb; i++) b[i] = (uint8_t)rnd();
  /* B as the packer would give it (zero padding); A keeps garbage in its padding bits. */
  uint8_t *bclean = xmalloc(n * rb);
  memcpy(bclean, b, n * rb);
  for (size_t j = 0; j < n; j++)
    for (size_t i = k; i < rb * 8; i++) bclean[j * rb + i / 8] &= (uint8_t)~(1u << (i % 8));
  size_t psize = xk_bgemm_panel_size(isa, n, k);
  void *panel = xmalloc(psize);
  CHECK(xk_bgemm_pack_panel(isa, b, n, k, rb, panel, psize) == XK_OK, "pack_panel (%s)", xk_last_error());
  xk_set_num_threads(threads);

  float *scale = xmalloc(n * 4), *bias = xmalloc(n * 4);
  int32_t *thr = xmalloc(n * 4);
  uint8_t *flip = xmalloc(n);
  for (size_t j = 0; j < n; j++) {
    scale[j] = ((float)(rnd() % 2001) - 1000.0f) / 256.0f;
    bias[j] = ((float)(rnd() % 2001) - 1000.0f) / 16.0f;
    thr[j] = (int32_t)(rnd() % (2 * k + 3)) - (int32_t)k - 1;
    flip[j] = (uint8_t)(rnd() & 1);
  }
  xk_epilogue eps[4] = {{XK_OUT_INT32, NULL, NULL, NULL, NULL},
                        {XK_OUT_FLOAT, scale, bias, NULL, NULL},
                        {XK_OUT_BITS, NULL, NULL, thr, flip},
                        {XK_OUT_FLOAT, NULL, NULL, NULL, NULL}};
  for (int e = 0; e < 4; e++) {
    size_t ldc = eps[e].kind == XK_OUT_BITS ? xk_packed_row_bytes(n) : n;
    size_t esz = eps[e].kind == XK_OUT_BITS ? 1 : 4;
    uint8_t *got = xmalloc(m * ldc * esz), *want = xmalloc(m * ldc * esz);
    memset(got, 0x5A, m * ldc * esz);
    memset(want, 0, m * ldc * esz);
    xk_status s = xk_bgemm(m, n, k, a, lda, panel, psize, &eps[e], got, ldc);
    CHECK(s == XK_OK, "bgemm status %d (%s)", s, xk_last_error());
    CHECK(xk_last_isa() == isa, "bgemm ran %s, forced %s", xk_isa_name(xk_last_isa()), xk_isa_name(isa));
    /* the reference sees A with its padding cleared: the padding must not count */
    uint8_t *aclean = xmalloc(m * lda);
    memcpy(aclean, a, m * lda);
    for (size_t i = 0; i < m; i++)
      for (size_t bit = k; bit < lda * 8; bit++) aclean[i * lda + bit / 8] &= (uint8_t)~(1u << (bit % 8));
    xk_ref_bgemm(m, n, k, aclean, lda, bclean, rb, &eps[e], want, ldc);
    CHECK(memcmp(got, want, m * ldc * esz) == 0, "%s bgemm m=%zu n=%zu k=%zu out=%d threads=%d",
          xk_isa_name(isa), m, n, k, (int)eps[e].kind, threads);
    free(got); free(want); free(aclean);
  }
  free(a); free(b); free(bclean); free(panel); free(scale); free(bias); free(thr); free(flip);
}

static void test_gemm(xk_isa isa) {
  static const size_t ks[] = {1, 2, 63, 64, 65, 97, 127, 128, 129, 255, 256, 257, 509, 512, 1021, 4097};
  static const size_t ms[] = {1, 2, 3, 5, 7, 64, 65, 131};
  static const size_t ns[] = {1, 3, 4, 5, 63, 64, 65, 129};
  for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
    size_t m = ms[rnd() % 8], n = ns[rnd() % 8];
    test_gemm_case(isa, m, n, ks[t], 1 + (int)(t % 2));
  }
  test_gemm_case(isa, 1, 1, 1, 1);
  test_gemm_case(isa, 257, 300, 1000, 2); /* large enough to go multi-threaded */
  for (int r = 0; r < 12; r++) test_gemm_case(isa, 1 + rnd() % 70, 1 + rnd() % 140, 1 + rnd() % 2100, 1 + r % 2);
}

/* One micro-kernel family called directly (the conv and small-K variants are not reachable
 * through xk_bgemm): its own panel layout and A row format, every mr, K around the kernels'
 * block boundaries, A rows at a stride larger than K, against plain popcounts. */
static void test_family(const xk_bgemm_ukernel_desc *d, const char *name) {
  static const size_t kws[] = {1, 2, 3, 4, 5, 7, 31, 32, 62, 63, 64, 65, 72, 126, 127, 130};
  enum { NR_MAX = 16, MR_MAX = 8, KW_MAX = 130 };
  if (d->nr > NR_MAX || d->mr > MR_MAX) { CHECK(0, "%s: tile %zux%zu larger than the test's", name, d->mr, d->nr); return; }
  for (size_t t = 0; t < sizeof kws / sizeof kws[0]; t++) {
    const size_t kw = kws[t], lda = kw + 3, steps = xk_div_up(kw * 8, d->chunk_bytes);
    const size_t stride = d->chunk_bytes * d->panel_expand, block = steps * d->nr * stride;
    uint64_t *a = xmalloc(MR_MAX * lda * 8), *b = xmalloc(NR_MAX * kw * 8);
    uint64_t *prepped = xmalloc(MR_MAX * (d->a_expand ? d->a_expand : 1) * kw * 8);
    uint8_t *panel = xmalloc(block);
    for (size_t i = 0; i < MR_MAX * lda; i++) a[i] = rnd();
    for (size_t i = 0; i < NR_MAX * kw; i++) b[i] = rnd();
    memset(panel, 0, block);
    for (size_t j = 0; j < d->nr; j++)
      for (size_t st = 0; st < steps; st++) {
        uint8_t chunk[64] = {0};
        size_t off = st * d->chunk_bytes, nb = kw * 8 - off < d->chunk_bytes ? kw * 8 - off : d->chunk_bytes;
        memcpy(chunk, (const uint8_t *)(b + j * kw) + off, nb);
        uint8_t *dst = panel + (st * d->nr + j) * stride;
        if (d->panel_chunk_fill) d->panel_chunk_fill(chunk, d->chunk_bytes, dst);
        else memcpy(dst, chunk, d->chunk_bytes);
      }
    if (d->ukernel_cols) { /* two column blocks in one call == the blocks one by one */
      uint8_t *panel2 = xmalloc(2 * block);
      memcpy(panel2, panel, block);
      for (size_t i = 0; i < block; i++) panel2[block + i] = panel[block - 1 - i]; /* another block */
      const uint64_t *rows = a;
      size_t ld = lda;
      if (d->prep_a) {
        ld = d->a_expand * kw;
        for (size_t r = 0; r < d->mr; r++) d->prep_a(a + r * lda, kw, prepped + r * ld);
        rows = prepped;
      }
      uint32_t q1[MR_MAX][2 * NR_MAX], q2[MR_MAX][2 * NR_MAX];
      memset(q1, 0x5a, sizeof q1);
      memset(q2, 0x5a, sizeof q2);
      d->ukernel_cols(d->mr, kw, rows, ld, panel2, block, 2 * d->nr, &q1[0][0], 2 * NR_MAX);
      d->ukernel(d->mr, kw, rows, ld, panel2, &q2[0][0], 2 * NR_MAX);
      d->ukernel(d->mr, kw, rows, ld, panel2 + block, &q2[0][d->nr], 2 * NR_MAX);
      CHECK(memcmp(q1, q2, sizeof q1) == 0, "%s kernel: two blocks in one call, kw=%zu", name, kw);
      free(panel2);
    }
    for (size_t mr = 1; mr <= d->mr; mr++) {
      const uint64_t *rows = a;
      size_t ld = lda;
      if (d->prep_a) {
        ld = d->a_expand * kw;
        for (size_t r = 0; r < mr; r++) d->prep_a(a + r * lda, kw, prepped + r * ld);
        rows = prepped;
      }
      uint32_t q[MR_MAX][NR_MAX + 3];
      memset(q, 0xab, sizeof q);
      d->ukernel(mr, kw, rows, ld, panel, &q[0][0], NR_MAX + 3);
      int ok = 1;
      for (size_t r = 0; r < mr; r++)
        for (size_t j = 0; j < d->nr; j++) {
          uint32_t want = 0;
          for (size_t w = 0; w < kw; w++) want += xk_popcount64_portable(a[r * lda + w] ^ b[j * kw + w]);
          if (q[r][j] != want) ok = 0;
        }
      CHECK(ok, "%s kernel: mr=%zu kw=%zu", name, mr, kw);
    }
    free(a); free(b); free(prepped); free(panel);
  }
}

static void test_families(xk_isa isa) {
  const xk_bgemm_ukernel_desc *d = xk_ukernel_for(isa);
  if (!d) return;
  test_family(d, "main");
  if (d->small_k) test_family(d->small_k, "small-K");
  if (d->conv) test_family(d->conv, "conv");
}

static void test_errors(void) {
  uint8_t a[16] = {0}, panel[256];
  int32_t c[1];
  xk_epilogue ep = {XK_OUT_INT32, NULL, NULL, NULL, NULL};
  CHECK(xk_bgemm(1, 1, 1, a, 8, panel, 0, &ep, c, 1) != XK_OK, "too-small panel rejected");
  memset(panel, 0, sizeof panel);
  CHECK(xk_bgemm(1, 1, 1, a, 8, panel, sizeof panel, &ep, c, 1) == XK_ERR_ARGUMENT, "bad magic rejected");
  CHECK(strstr(xk_last_error(), "magic") != NULL, "message names the magic: %s", xk_last_error());
  size_t ps = xk_bgemm_panel_size(XK_ISA_SCALAR, 2, 64);
  CHECK(xk_bgemm_pack_panel(XK_ISA_SCALAR, a, 2, 64, 8, panel, ps) == XK_OK, "pack ok");
  CHECK(xk_bgemm(1, 2, 65, a, 16, panel, ps, &ep, c, 2) == XK_ERR_SHAPE, "mismatched k rejected");
  CHECK(xk_bgemm(0, 2, 64, a, 8, panel, ps, &ep, c, 2) == XK_ERR_SHAPE, "empty rejected");
  xk_isa isa;
  CHECK(xk_isa_from_name("sse9", &isa) == XK_ERR_ARGUMENT, "unknown ISA name rejected");
}

/* The pool: every task runs exactly once, on a worker below the cap; xk_worker() is 0 outside. */
#define POOL_TASKS 4000
static _Atomic int g_runs[POOL_TASKS];
static _Atomic size_t g_max_worker;
static void pool_task(void *ctx, size_t t) {
  (void)ctx;
  size_t w = xk_worker(), m = atomic_load(&g_max_worker);
  while (w > m && !atomic_compare_exchange_weak(&g_max_worker, &m, w)) {
  }
  for (volatile int spin = 0; spin < 200; spin++) { /* some work, so helpers join */
  }
  atomic_fetch_add(&g_runs[t], 1);
}

static void test_pool(void) {
  static const size_t caps[] = {1, 2, 3, SIZE_MAX};
  for (int threads = 1; threads <= 4; threads++)
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++)
      for (size_t ntasks = 1; ntasks <= POOL_TASKS; ntasks *= 7) {
        xk_set_num_threads(threads);
        for (size_t t = 0; t < ntasks; t++) atomic_store(&g_runs[t], 0);
        atomic_store(&g_max_worker, 0);
        xk_parallel_run(ntasks, caps[c], pool_task, NULL);
        int once = 1;
        for (size_t t = 0; t < ntasks; t++) once &= atomic_load(&g_runs[t]) == 1;
        CHECK(once, "pool: %zu tasks, %d threads, cap %zu: every task once", ntasks, threads, caps[c]);
        const size_t limit = caps[c] < (size_t)threads ? caps[c] : (size_t)threads;
        CHECK(atomic_load(&g_max_worker) < limit, "pool: worker %zu ran with %d threads, cap %zu",
              atomic_load(&g_max_worker), threads, caps[c]);
      }
  CHECK(xk_worker() == 0, "xk_worker() is 0 on the calling thread");
  xk_set_num_threads(1);
}

int main(int argc, char **argv) {
  xk_isa isas[XK_ISA_COUNT];
  int nisa = 0;
  if (argc > 1) {
    for (int i = 1; i < argc; i++) {
      if (xk_isa_from_name(argv[i], &isas[nisa]) != XK_OK || !xk_isa_available(isas[nisa])) {
        printf("ISA %s requested but not available here\n", argv[i]);
        printf("0 passed, 1 failed\n");
        return 1;
      }
      nisa++;
    }
  } else {
    for (int i = 0; i < XK_ISA_COUNT; i++)
      if (xk_isa_available((xk_isa)i)) isas[nisa++] = (xk_isa)i;
  }
  test_errors();
  test_pool();
  for (int i = 0; i < nisa; i++) {
    printf("testing ISA %s\n", xk_isa_name(isas[i]));
    if (xk_set_isa(isas[i]) != XK_OK) { printf("cannot select %s\n", xk_isa_name(isas[i])); return 1; }
    test_pack(isas[i]);
    test_gemm(isas[i]);
    test_families(isas[i]);
  }
  printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
