#define _POSIX_C_SOURCE 200809L
/* Micro-benchmark of the engine ops on the layer shapes of the zoo models (batch 1).
 * Build: see tests/engine/test_c_ops.py (or cc -O2 -Iinclude -Icsrc ... build/c/libxnorkit.a -lm -lpthread). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops/xk_ops.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *xalloc(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n ? n : 64)) abort();
  memset(p, 0x5a, n);
  return p;
}

#define CHECK(x) do { xk_status s_ = (x); if (s_) { printf("error %d: %s\n", s_, xk_last_error()); exit(1); } } while (0)

static double median(double *v, int n) {
  for (int i = 0; i < n; i++) for (int j = i + 1; j < n; j++) if (v[j] < v[i]) { double t = v[i]; v[i] = v[j]; v[j] = t; }
  return v[n / 2];
}

static void bench_bconv(const char *name, size_t h, size_t c, size_t oc, size_t k, size_t stride, size_t pad, int pv, int bits) {
  xk_conv_shape s = {1, h, h, c, oc, k, k, stride, stride, 1, 1, pad, pad, pad, pad};
  size_t oh, ow;
  CHECK(xk_conv_out_size(&s, &oh, &ow));
  size_t rb = xk_packed_row_bytes(k * k * c);
  uint8_t *w = xalloc(oc * rb), *x = xalloc(h * h * xk_packed_row_bytes(c));
  size_t ps = xk_bconv2d_packed_size(&s, pv), wss = xk_bconv2d_workspace_size(&s);
  void *p = xalloc(ps), *ws = xalloc(wss), *out = xalloc(oh * ow * oc * 4);
  xk_bweights wb = {w, rb, c};
  CHECK(xk_bconv2d_pack(&s, pv, &wb, p, ps));
  int32_t *thr = calloc(oc, 4);
  xk_output o;
  memset(&o, 0, sizeof o);
  o.kind = bits ? XK_OUT_BITS : XK_OUT_FLOAT;
  o.threshold = thr;
  size_t ldc = bits ? xk_packed_row_bytes(oc) : oc;
  double t[21];
  for (int r = 0; r < 21; r++) {
    double t0 = now();
    CHECK(xk_bconv2d_run(&s, p, ps, x, &o, out, ldc, ws, wss));
    t[r] = now() - t0;
  }
  double m = median(t, 21), macs = (double)oh * ow * oc * k * k * c;
  printf("%-28s %8.3f ms  %6.1f GBOP/s (binary MAC)\n", name, m * 1e3, macs / m * 1e-9);
  free(w); free(x); free(p); free(ws); free(out); free(thr);
}

static void bench_conv(const char *name, size_t h, size_t c, size_t oc, size_t k, size_t stride, size_t pad) {
  xk_conv_shape s = {1, h, h, c, oc, k, k, stride, stride, 1, 1, pad, pad, pad, pad};
  size_t oh, ow;
  CHECK(xk_conv_out_size(&s, &oh, &ow));
  float *w = xalloc(oc * k * k * c * 4), *x = xalloc(h * h * c * 4);
  for (size_t i = 0; i < oc * k * k * c; i++) w[i] = 0.01f * (float)(i % 7);
  for (size_t i = 0; i < h * h * c; i++) x[i] = 0.1f * (float)(i % 5);
  size_t ps = xk_conv2d_packed_size(&s), wss = xk_conv2d_workspace_size(&s, 2);
  void *p = xalloc(ps), *ws = xalloc(wss), *out = xalloc(oh * ow * oc * 4);
  CHECK(xk_conv2d_pack(&s, w, p, ps));
  xk_output o;
  memset(&o, 0, sizeof o);
  o.kind = XK_OUT_FLOAT;
  double t[11];
  for (int r = 0; r < 11; r++) {
    double t0 = now();
    CHECK(xk_conv2d_run(&s, p, ps, x, &o, out, oc, ws, wss));
    t[r] = now() - t0;
  }
  double m = median(t, 11), macs = (double)oh * ow * oc * k * k * c;
  printf("%-28s %8.3f ms  %6.1f GFLOP/s\n", name, m * 1e3, 2 * macs / m * 1e-9);
  free(w); free(x); free(p); free(ws); free(out);
}

static void bench_qconv(const char *name, size_t h, size_t c, size_t oc, size_t k, size_t stride, size_t pad) {
  xk_conv_shape s = {1, h, h, c, oc, k, k, stride, stride, 1, 1, pad, pad, pad, pad};
  size_t oh, ow;
  CHECK(xk_conv_out_size(&s, &oh, &ow));
  int8_t *w = xalloc(oc * k * k * c);
  float *x = xalloc(h * h * c * 4);
  for (size_t i = 0; i < h * h * c; i++) x[i] = 0.1f * (float)(i % 5);
  size_t ps = xk_qconv2d_packed_size(&s), wss = xk_qconv2d_workspace_size(&s, 2);
  void *p = xalloc(ps), *ws = xalloc(wss), *out = xalloc(oh * ow * oc * 4);
  CHECK(xk_qconv2d_pack(&s, w, p, ps));
  xk_output o;
  memset(&o, 0, sizeof o);
  o.kind = XK_OUT_FLOAT;
  xk_quant q = {0.01f, 0};
  double t[11];
  for (int r = 0; r < 11; r++) {
    double t0 = now();
    CHECK(xk_qconv2d_run(&s, p, ps, x, q, &o, out, oc, ws, wss));
    t[r] = now() - t0;
  }
  double m = median(t, 11), macs = (double)oh * ow * oc * k * k * c;
  printf("%-28s %8.3f ms  %6.1f GMAC/s\n", name, m * 1e3, macs / m * 1e-9);
  free(w); free(x); free(p); free(ws); free(out);
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  xk_set_num_threads(threads);
  printf("ISA %s, %d thread(s)\n", xk_isa_name(xk_get_isa()), xk_get_num_threads());
  bench_conv("f32 stem 7x7s2 3->64 @224", 224, 3, 64, 7, 2, 3);
  bench_qconv("i8 stem 7x7s2 3->64 @224", 224, 3, 64, 7, 2, 3);
  bench_conv("f32 stem 3x3s2 3->16 @224", 224, 3, 16, 3, 2, 1);
  bench_conv("f32 conv 3x3 3->128 @32", 32, 3, 128, 3, 1, 1);
  bench_bconv("b 3x3 64->64 @56 pad0 f32", 56, 64, 64, 3, 1, 1, 0, 0);
  bench_bconv("b 3x3 64->64 @56 pad+1 f32", 56, 64, 64, 3, 1, 1, 1, 0);
  bench_bconv("b 3x3 128->128 @28 pad0", 28, 128, 128, 3, 1, 1, 0, 0);
  bench_bconv("b 3x3 256->256 @14 pad0", 14, 256, 256, 3, 1, 1, 0, 0);
  bench_bconv("b 3x3 512->512 @7 pad0", 7, 512, 512, 3, 1, 1, 0, 0);
  bench_bconv("b 3x3 128->128 @32 bits", 32, 128, 128, 3, 1, 1, 0, 1);
  bench_bconv("b 3x3 512->512 @8 bits", 8, 512, 512, 3, 1, 1, 0, 1);
  return 0;
}
