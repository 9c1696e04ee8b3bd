#define _POSIX_C_SOURCE 200809L
/* Binary convolution micro-benchmark: the 3x3 layer shapes of Bi-Real Net / QuickNet at 224x224
 * input (and QuickNetSmall's 56x56 32-channel layer), batch 1, float output (scale + bias) and packed-bits output, calling-thread CPU time.
 *   bench_bconv [threads] [reps] [shape index] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops/xk_ops.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1, reps = argc > 2 ? atoi(argv[2]) : 30;
  xk_set_num_threads(threads);
  static const size_t shapes[][4] = {{56, 64, 64, 1}, {28, 128, 128, 1}, {14, 256, 256, 1}, {7, 512, 512, 1},
                                     {56, 64, 128, 2}, {28, 128, 256, 2}, {56, 32, 32, 1}};
  const int only = argc > 3 ? atoi(argv[3]) : -1;
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    if (only >= 0 && (size_t)only != si) continue;
    size_t hw = shapes[si][0], c = shapes[si][1], oc = shapes[si][2], st = shapes[si][3];
    xk_conv_shape s = {1, hw, hw, c, oc, 3, 3, st, st, 1, 1, 1, 1, 1, 1};
    size_t oh, ow;
    xk_conv_out_size(&s, &oh, &ow);
    size_t row_bytes = (9 * c + 7) / 8;
    uint8_t *wb = malloc(oc * row_bytes), *in = aligned_alloc(64, hw * hw * ((c + 63) / 64) * 8 + 64);
    for (size_t i = 0; i < oc * row_bytes; i++) wb[i] = (uint8_t)rand();
    for (size_t i = 0; i < hw * hw * ((c + 63) / 64) * 8; i++) in[i] = (uint8_t)rand();
    xk_bweights w = {wb, row_bytes, c};
    for (int pad = 0; pad <= 1; pad++) {
      size_t psize = xk_bconv2d_packed_size(&s, pad ? XK_PAD_PLUS : XK_PAD_ZERO);
      void *packed = aligned_alloc(64, (psize + 63) / 64 * 64);
      if (xk_bconv2d_pack(&s, pad ? XK_PAD_PLUS : XK_PAD_ZERO, &w, packed, psize) != XK_OK) {
        printf("pack failed: %s\n", xk_last_error());
        return 1;
      }
      size_t wss = xk_bconv2d_workspace_size(&s);
      void *ws = aligned_alloc(64, (wss + 63) / 64 * 64 + 64);
      float *scale = malloc(oc * 4), *bias = malloc(oc * 4);
      int32_t *thr = malloc(oc * 4);
      for (size_t i = 0; i < oc; i++) scale[i] = 0.01f * (float)(i + 1), bias[i] = 0.5f, thr[i] = (int32_t)(i % 7) - 3;
      float *out = aligned_alloc(64, oh * ow * oc * 4 + 64);
      for (int kind = 0; kind < 2; kind++) {
        xk_output o;
        memset(&o, 0, sizeof o);
        o.kind = kind ? XK_OUT_BITS : XK_OUT_FLOAT;
        o.scale = scale;
        o.bias = bias;
        o.threshold = thr;
        size_t ldc = kind ? (oc + 63) / 64 * 8 : oc;
        double t[200];
        int n = reps < 200 ? reps : 200;
        for (int r = 0; r < n + 3; r++) {
          double t0 = now();
          if (xk_bconv2d_run(&s, packed, psize, in, &o, out, ldc, ws, wss) != XK_OK) {
            printf("run failed: %s\n", xk_last_error());
            return 1;
          }
          if (r >= 3) t[r - 3] = now() - t0;
        }
        qsort(t, n, sizeof(double), cmp);
        double macs = (double)oh * ow * oc * 9 * c;
        printf("%3zux%-3zu c=%-4zu oc=%-4zu s=%zu pad=%s out=%-5s  %.3f ms [%.3f-%.3f]  %6.1f GMAC/s\n", hw, hw, c, oc,
               st, pad ? "+1" : "0 ", kind ? "bits" : "float", 1e3 * t[n / 2], 1e3 * t[0], 1e3 * t[n - 1],
               macs / t[n / 2] * 1e-9);
      }
      free(packed);
      free(ws);
      free(scale);
      free(bias);
      free(thr);
      free(out);
    }
    free(wb);
    free(in);
  }
  /* binary dense layers (batch 1 and 8), float output */
  static const size_t dshapes[][3] = {{1, 9216, 4096}, {1, 4096, 4096}, {1, 4096, 1000}, {8, 4096, 4096}};
  for (size_t si = 0; si < sizeof dshapes / sizeof dshapes[0]; si++) {
    if (only >= 0 && (size_t)only != 100 + si) continue;
    size_t n = dshapes[si][0], k = dshapes[si][1], no = dshapes[si][2], rb = (k + 63) / 64 * 8;
    uint8_t *wb = malloc(no * rb), *in = aligned_alloc(64, n * rb + 64);
    for (size_t i = 0; i < no * rb; i++) wb[i] = (uint8_t)rand();
    for (size_t i = 0; i < n * rb; i++) in[i] = (uint8_t)rand();
    size_t psize = xk_bdense_packed_size(k, no);
    void *packed = aligned_alloc(64, (psize + 63) / 64 * 64);
    if (xk_bdense_pack(k, no, wb, rb, packed, psize) != XK_OK) {
      printf("pack failed: %s\n", xk_last_error());
      return 1;
    }
    float *out = malloc(n * no * 4);
    xk_output o;
    memset(&o, 0, sizeof o);
    o.kind = XK_OUT_FLOAT;
    double t[200];
    int nr = reps < 200 ? reps : 200;
    for (int r = 0; r < nr + 3; r++) {
      double t0 = now();
      if (xk_bdense_run(n, k, no, packed, psize, in, &o, out, no) != XK_OK) {
        printf("run failed: %s\n", xk_last_error());
        return 1;
      }
      if (r >= 3) t[r - 3] = now() - t0;
    }
    qsort(t, nr, sizeof(double), cmp);
    printf("dense %zux%zux%zu  %.3f ms [%.3f-%.3f]  %6.1f GMAC/s  (panel %.1f MB)\n", n, k, no, 1e3 * t[nr / 2], 1e3 * t[0],
           1e3 * t[nr - 1], (double)n * k * no / t[nr / 2] * 1e-9, psize / 1e6);
    free(wb);
    free(in);
    free(packed);
    free(out);
  }
  return 0;
}
