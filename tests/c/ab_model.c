#define _GNU_SOURCE
/* A/B of two engine builds on one model: both shared libraries are loaded side by side
 * (dlopen, RTLD_LOCAL) and run the model alternately, run by run, in the same process, so the
 * slow and fast phases of a shared machine hit both alike; the paired ratio B/A of each pair
 * of runs is the figure to read. Built and driven by benchmarks/ab_engine.py.
 *   ab_model LIB_A.so LIB_B.so MODEL.xk RUNS [THREADS] */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xnorkit/xk.h"
#include "xnorkit/xk_engine.h"

typedef struct {
  void *h;
  xk_status (*arena_size)(const void *, size_t, const xk_model_options *, size_t *);
  xk_status (*load)(const void *, size_t, const xk_model_options *, void *, size_t, xk_model **);
  xk_status (*run)(xk_model *, size_t, const float *, float *);
  xk_status (*input)(const xk_model *, size_t, xk_tensor_info *);
  xk_status (*output)(const xk_model *, size_t, xk_tensor_info *);
  void (*set_threads)(int);
  const char *(*last_error)(void);
  xk_model *m;
} engine;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static void *sym(void *h, const char *name) {
  void *p = dlsym(h, name);
  if (!p) {
    fprintf(stderr, "error: %s not found: %s\n", name, dlerror());
    exit(2);
  }
  return p;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s LIB_A.so LIB_B.so MODEL.xk RUNS [THREADS]\n", argv[0]);
    return 2;
  }
  const int runs = atoi(argv[4]), threads = argc > 5 ? atoi(argv[5]) : 1;
  if (runs < 2 || threads < 1) {
    fprintf(stderr, "error: RUNS must be >= 2 and THREADS >= 1\n");
    return 2;
  }
  FILE *f = fopen(argv[3], "rb");
  if (!f) {
    fprintf(stderr, "error: cannot open %s\n", argv[3]);
    return 2;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *data = aligned_alloc(64, ((size_t)n + 63) / 64 * 64);
  if (!data || fread(data, 1, (size_t)n, f) != (size_t)n) {
    fprintf(stderr, "error: cannot read %s\n", argv[3]);
    return 2;
  }
  fclose(f);
  engine e[2];
  float *in = NULL, *out = NULL;
  for (int k = 0; k < 2; k++) {
    e[k].h = dlopen(argv[1 + k], RTLD_NOW | RTLD_LOCAL);
    if (!e[k].h) {
      fprintf(stderr, "error: %s\n", dlerror());
      return 2;
    }
    e[k].arena_size = sym(e[k].h, "xk_model_arena_size");
    e[k].load = sym(e[k].h, "xk_model_load");
    e[k].run = sym(e[k].h, "xk_model_run");
    e[k].input = sym(e[k].h, "xk_model_input");
    e[k].output = sym(e[k].h, "xk_model_output");
    e[k].set_threads = (void (*)(int))sym(e[k].h, "xk_set_num_threads");
    e[k].last_error = (const char *(*)(void))sym(e[k].h, "xk_last_error");
    xk_model_options o;
    memset(&o, 0, sizeof o);
    o.max_batch = 1;
    o.num_threads = (uint32_t)threads;
    size_t bytes = 0;
    void *arena;
    if (e[k].arena_size(data, (size_t)n, &o, &bytes) != XK_OK || !(arena = aligned_alloc(64, (bytes + 63) / 64 * 64)) ||
        e[k].load(data, (size_t)n, &o, arena, bytes, &e[k].m) != XK_OK) {
      fprintf(stderr, "error: %s cannot load the model: %s\n", argv[1 + k], e[k].last_error());
      return 2;
    }
    e[k].set_threads(threads);
    if (!in) {
      xk_tensor_info ti, to;
      e[k].input(e[k].m, 0, &ti);
      e[k].output(e[k].m, 0, &to);
      in = malloc(ti.count * sizeof(float));
      out = malloc(to.count * sizeof(float));
      srand(1);
      for (size_t i = 0; i < ti.count; i++) in[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    }
    for (int w = 0; w < 5; w++) e[k].run(e[k].m, 1, in, out);
  }
  double *t[2] = {malloc(runs * sizeof(double)), malloc(runs * sizeof(double))}, *ratio = malloc(runs * sizeof(double));
  for (int r = 0; r < runs; r++) {
    double tt[2];
    for (int z = 0; z < 2; z++) { /* the order alternates: neither build always runs second */
      const int k = z ^ (r & 1);
      double t0 = now();
      if (e[k].run(e[k].m, 1, in, out) != XK_OK) {
        fprintf(stderr, "error: run failed: %s\n", e[k].last_error());
        return 1;
      }
      tt[k] = now() - t0;
    }
    t[0][r] = tt[0];
    t[1][r] = tt[1];
    ratio[r] = tt[1] / tt[0];
  }
  qsort(t[0], runs, sizeof(double), cmp);
  qsort(t[1], runs, sizeof(double), cmp);
  qsort(ratio, runs, sizeof(double), cmp);
  printf("{\"a_median_ms\": %.4f, \"a_min_ms\": %.4f, \"a_max_ms\": %.4f, \"b_median_ms\": %.4f, "
         "\"b_min_ms\": %.4f, \"b_max_ms\": %.4f, \"ratio_median\": %.4f, \"ratio_p25\": %.4f, "
         "\"ratio_p75\": %.4f, \"runs\": %d, \"threads\": %d}\n",
         1e3 * t[0][runs / 2], 1e3 * t[0][0], 1e3 * t[0][runs - 1], 1e3 * t[1][runs / 2], 1e3 * t[1][0],
         1e3 * t[1][runs - 1], ratio[runs / 2], ratio[runs / 4], ratio[3 * runs / 4], runs, threads);
  return 0;
}
