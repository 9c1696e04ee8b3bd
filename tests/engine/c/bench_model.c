/* Times a .xk model in plain C: bench_model model.xk [runs] [threads]
 * Prints the median whole-run latency and the median per-op time (via the engine's op hook). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xnorkit/xk_engine.h"

static clockid_t g_clock = CLOCK_MONOTONIC;

/* Wall time, or with XK_BENCH_CPU=1 the calling thread's CPU time (1 thread: immune to other
 * processes on a shared machine). */
static double now(void) {
  struct timespec t;
  clock_gettime(g_clock, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct { double t0; double *times; int run; size_t nops; } prof;

static void hook(void *user, size_t op, int end) {
  prof *p = (prof *)user;
  if (!end) p->t0 = now();
  else p->times[op * 1000 + (size_t)p->run] = now() - p->t0;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: bench_model model.xk [runs] [threads]\n"); return 1; }
  int runs = argc > 2 ? atoi(argv[2]) : 100, threads = argc > 3 ? atoi(argv[3]) : 1;
  if (runs > 1000) runs = 1000;
  xk_set_num_threads(threads);
  if (getenv("XK_BENCH_CPU") && atoi(getenv("XK_BENCH_CPU"))) g_clock = CLOCK_THREAD_CPUTIME_ID;
  FILE *f = fopen(argv[1], "rb");
  if (!f) return 1;
  fseek(f, 0, SEEK_END);
  size_t size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  void *data = aligned_alloc(64, (size + 63) / 64 * 64);
  if (fread(data, 1, size, f) != size) return 1;
  fclose(f);
  xk_model_options opt = {1, (uint32_t)threads};
  size_t need;
  if (xk_model_arena_size(data, size, &opt, &need)) { printf("%s\n", xk_last_error()); return 2; }
  void *arena = aligned_alloc(64, (need + 63) / 64 * 64);
  xk_model *m;
  if (xk_model_load(data, size, &opt, arena, need, &m)) { printf("%s\n", xk_last_error()); return 2; }
  xk_tensor_info ti, to;
  xk_model_input(m, 0, &ti);
  xk_model_output(m, 0, &to);
  float *in = calloc(ti.count, sizeof(float)), *out = calloc(to.count, sizeof(float));
  for (size_t i = 0; i < ti.count; i++) in[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
  size_t nops = xk_model_num_ops(m);
  prof p = {0, calloc(nops * 1000, sizeof(double)), 0, nops};
  double *whole = calloc((size_t)runs, sizeof(double));
  for (int r = 0; r < 5; r++) xk_model_run(m, 1, in, out);
  for (int r = 0; r < runs; r++) {
    double t0 = now();
    xk_model_run(m, 1, in, out);
    whole[r] = now() - t0;
  }
  xk_model_set_hook(m, hook, &p);
  for (p.run = 0; p.run < runs; p.run++) xk_model_run(m, 1, in, out);
  qsort(whole, (size_t)runs, sizeof(double), cmp);
  printf("%s: %d threads, %s time, median %.3f ms (min %.3f, max %.3f), arena %zu bytes\n", argv[1], threads,
         g_clock == CLOCK_MONOTONIC ? "wall" : "thread CPU", whole[runs / 2] * 1e3, whole[0] * 1e3, whole[runs - 1] * 1e3, need);
  double sum = 0;
  for (size_t i = 0; i < nops; i++) {
    qsort(p.times + i * 1000, (size_t)runs, sizeof(double), cmp);
    double med = p.times[i * 1000 + (size_t)runs / 2];
    sum += med;
    xk_op_info oi;
    xk_model_op(m, i, &oi);
    printf("  %3zu %-16s %-7s %8.3f ms %8.1f MMAC  %s\n", i, oi.kind, oi.precision, med * 1e3, oi.macs / 1e6, oi.name);
  }
  printf("  sum of op medians %.3f ms\n", sum * 1e3);
  return 0;
}
