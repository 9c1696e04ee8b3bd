/* Micro-benchmark of the C core alone (no Python): binary GEMM and packing for one ISA.
 * Usage: xk_bench_bgemm ISA M N K THREADS REPS -> prints median/min/max seconds and GMAC/s. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xk_internal.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 7) { fprintf(stderr, "usage: %s ISA M N K THREADS REPS\n", argv[0]); return 2; }
  xk_isa isa;
  if (xk_isa_from_name(argv[1], &isa) != XK_OK || xk_set_isa(isa) != XK_OK) {
    fprintf(stderr, "%s\n", xk_last_error());
    return 2;
  }
  size_t m = strtoul(argv[2], 0, 10), n = strtoul(argv[3], 0, 10), k = strtoul(argv[4], 0, 10);
  int threads = atoi(argv[5]), reps = atoi(argv[6]);
  xk_set_num_threads(threads);
  size_t rb = xk_packed_row_bytes(k), ps = xk_bgemm_panel_size(isa, n, k);
  uint8_t *a = aligned_alloc(64, xk_round_up(m * rb, 64)), *b = aligned_alloc(64, xk_round_up(n * rb, 64));
  void *panel = aligned_alloc(64, xk_round_up(ps, 64));
  int32_t *c = aligned_alloc(64, xk_round_up(m * n * 4, 64));
  for (size_t i = 0; i < m * rb; i++) a[i] = (uint8_t)rand();
  for (size_t i = 0; i < n * rb; i++) b[i] = (uint8_t)rand();
  xk_bgemm_pack_panel(isa, b, n, k, rb, panel, ps);
  xk_epilogue ep = {XK_OUT_INT32, 0, 0, 0, 0};
  double *t = malloc(sizeof(double) * reps);
  xk_bgemm(m, n, k, a, rb, panel, ps, &ep, c, n);
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    xk_bgemm(m, n, k, a, rb, panel, ps, &ep, c, n);
    t[r] = now() - t0;
  }
  qsort(t, reps, sizeof(double), cmpd);
  double macs = (double)m * n * k;
  printf("%s m=%zu n=%zu k=%zu threads=%d median=%.6f min=%.6f max=%.6f s  %.1f GMAC/s\n",
         xk_isa_name(isa), m, n, k, threads, t[reps / 2], t[0], t[reps - 1], macs / t[reps / 2] * 1e-9);
  return 0;
}
