/* What bounds the float stems' 6 x 16 FMA micro-kernel (ukernels/fgemm/fgemm-avx2.c) on this
 * host: register-blocked FMA loops with their data in L1, each timed against a pure 12-FMA
 * register loop in the same alternation, so a slow phase of a shared machine hits both.
 * Driven by benchmarks/float_loop_bound.py (x86-64 with AVX2 + FMA only).
 *
 *   float_loop_bound ROUNDS REPS
 *
 * Prints one JSON object per line: {"variant": ..., "ratios": [...]}, each ratio the variant's
 * FMA rate over the pure loop's in one round (1.0: as fast as FMAs alone). */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define K 96          /* reduction steps per pass: A, B and AE together stay in L1 */
#define LDA (K + 8)   /* row stride of A, as an im2col tile's */
static float A[6 * LDA] __attribute__((aligned(64)));
static float B[K * 48] __attribute__((aligned(64)));  /* panel, up to 48 columns per step */
static float AE[K * 48] __attribute__((aligned(64))); /* A pre-broadcast: [k][row][8] */
static float sink[8];

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define ACC __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c04 = c00, c05 = c00, \
                   c06 = c00, c07 = c00, c08 = c00, c09 = c00, c10 = c00, c11 = c00
#define SINK _mm256_storeu_ps(sink, c00 + c01 + c02 + c03 + c04 + c05 + c06 + c07 + c08 + c09 + c10 + c11)
#define F(c, a, b) c = _mm256_fmadd_ps(a, b, c)

/* Each variant returns the FMAs it ran. */
static long pure(long reps) { /* 12 independent FMA chains, operands in registers */
  ACC;
  __m256 b0 = _mm256_set1_ps(0.999f), b1 = _mm256_set1_ps(0.998f), v = _mm256_set1_ps(1e-4f);
  for (long r = 0; r < reps; r++)
    for (int p = 0; p < K; p++) {
      __asm__ volatile("" : "+x"(v));
      F(c00, v, b0); F(c01, v, b1); F(c02, v, b0); F(c03, v, b1); F(c04, v, b0); F(c05, v, b1);
      F(c06, v, b0); F(c07, v, b1); F(c08, v, b0); F(c09, v, b1); F(c10, v, b0); F(c11, v, b1);
    }
  SINK;
  return reps * K * 12;
}

/* The kernel's loop: 6 vbroadcastss + 2 panel loads per 12 FMAs. */
#define ROW16(i, ca, cb, V) { const __m256 v = V; F(ca, v, b0); F(cb, v, b1); }
static long tile6x16(long reps) {
  ACC;
  for (long r = 0; r < reps; r++) {
    const float *a = A, *b = B;
    for (int p = 0; p < K; p++, a++, b += 16) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
      ROW16(0, c00, c01, _mm256_broadcast_ss(a)); ROW16(1, c02, c03, _mm256_broadcast_ss(a + LDA));
      ROW16(2, c04, c05, _mm256_broadcast_ss(a + 2 * LDA)); ROW16(3, c06, c07, _mm256_broadcast_ss(a + 3 * LDA));
      ROW16(4, c08, c09, _mm256_broadcast_ss(a + 4 * LDA)); ROW16(5, c10, c11, _mm256_broadcast_ss(a + 5 * LDA));
    }
  }
  SINK;
  return reps * K * 12;
}

/* The same, the six inputs in registers: 2 panel loads per 12 FMAs. */
static long panel_only(long reps) {
  ACC;
  __m256 v0 = _mm256_set1_ps(1e-4f), v1 = v0, v2 = v0, v3 = v0, v4 = v0, v5 = v0;
  for (long r = 0; r < reps; r++) {
    const float *b = B;
    for (int p = 0; p < K; p++, b += 16) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
      ROW16(0, c00, c01, v0); ROW16(1, c02, c03, v1); ROW16(2, c04, c05, v2);
      ROW16(3, c06, c07, v3); ROW16(4, c08, c09, v4); ROW16(5, c10, c11, v5);
    }
  }
  SINK;
  return reps * K * 12;
}

/* The same, the panel in registers: 6 broadcasts per 12 FMAs. */
static long bcast_only(long reps) {
  ACC;
  const __m256 b0 = _mm256_set1_ps(0.999f), b1 = _mm256_set1_ps(0.998f);
  for (long r = 0; r < reps; r++) {
    const float *a = A;
    for (int p = 0; p < K; p++, a++) {
      ROW16(0, c00, c01, _mm256_broadcast_ss(a)); ROW16(1, c02, c03, _mm256_broadcast_ss(a + LDA));
      ROW16(2, c04, c05, _mm256_broadcast_ss(a + 2 * LDA)); ROW16(3, c06, c07, _mm256_broadcast_ss(a + 3 * LDA));
      ROW16(4, c08, c09, _mm256_broadcast_ss(a + 4 * LDA)); ROW16(5, c10, c11, _mm256_broadcast_ss(a + 5 * LDA));
    }
  }
  SINK;
  return reps * K * 12;
}

/* 4 rows x 24 columns: 4 broadcasts + 3 panel loads per 12 FMAs. */
static long tile4x24(long reps) {
  ACC;
  for (long r = 0; r < reps; r++) {
    const float *a = A, *b = B;
    for (int p = 0; p < K; p++, a++, b += 24) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), b2 = _mm256_load_ps(b + 16);
      __m256 v = _mm256_broadcast_ss(a); F(c00, v, b0); F(c01, v, b1); F(c02, v, b2);
      v = _mm256_broadcast_ss(a + LDA); F(c03, v, b0); F(c04, v, b1); F(c05, v, b2);
      v = _mm256_broadcast_ss(a + 2 * LDA); F(c06, v, b0); F(c07, v, b1); F(c08, v, b2);
      v = _mm256_broadcast_ss(a + 3 * LDA); F(c09, v, b0); F(c10, v, b1); F(c11, v, b2);
    }
  }
  SINK;
  return reps * K * 12;
}

/* 3 rows x 32 columns: 3 broadcasts + 4 panel loads per 12 FMAs. */
static long tile3x32(long reps) {
  ACC;
  for (long r = 0; r < reps; r++) {
    const float *a = A, *b = B;
    for (int p = 0; p < K; p++, a++, b += 32) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), b2 = _mm256_load_ps(b + 16),
                   b3 = _mm256_load_ps(b + 24);
      __m256 v = _mm256_broadcast_ss(a); F(c00, v, b0); F(c01, v, b1); F(c02, v, b2); F(c03, v, b3);
      v = _mm256_broadcast_ss(a + LDA); F(c04, v, b0); F(c05, v, b1); F(c06, v, b2); F(c07, v, b3);
      v = _mm256_broadcast_ss(a + 2 * LDA); F(c08, v, b0); F(c09, v, b1); F(c10, v, b2); F(c11, v, b3);
    }
  }
  SINK;
  return reps * K * 12;
}

/* 2 rows x 48 columns: 2 broadcasts + 6 panel loads per 12 FMAs. */
static long tile2x48(long reps) {
  ACC;
  for (long r = 0; r < reps; r++) {
    const float *a = A, *b = B;
    for (int p = 0; p < K; p++, a++, b += 48) {
      const __m256 v = _mm256_broadcast_ss(a), w = _mm256_broadcast_ss(a + LDA);
      __m256 bb = _mm256_load_ps(b); F(c00, v, bb); F(c01, w, bb);
      bb = _mm256_load_ps(b + 8); F(c02, v, bb); F(c03, w, bb);
      bb = _mm256_load_ps(b + 16); F(c04, v, bb); F(c05, w, bb);
      bb = _mm256_load_ps(b + 24); F(c06, v, bb); F(c07, w, bb);
      bb = _mm256_load_ps(b + 32); F(c08, v, bb); F(c09, w, bb);
      bb = _mm256_load_ps(b + 40); F(c10, v, bb); F(c11, w, bb);
    }
  }
  SINK;
  return reps * K * 12;
}

/* 6 x 16 with the inputs pre-broadcast in memory: 8 full 256-bit loads per 12 FMAs. */
static long prebroadcast(long reps) {
  ACC;
  for (long r = 0; r < reps; r++) {
    const float *e = AE, *b = B;
    for (int p = 0; p < K; p++, e += 48, b += 16) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
      ROW16(0, c00, c01, _mm256_load_ps(e)); ROW16(1, c02, c03, _mm256_load_ps(e + 8));
      ROW16(2, c04, c05, _mm256_load_ps(e + 16)); ROW16(3, c06, c07, _mm256_load_ps(e + 24));
      ROW16(4, c08, c09, _mm256_load_ps(e + 32)); ROW16(5, c10, c11, _mm256_load_ps(e + 40));
    }
  }
  SINK;
  return reps * K * 12;
}

/* 3 x 32, each row's next 4 inputs loaded once (vbroadcastf128) and spread with vpermilps,
 * the panel read by the FMAs' memory operands. */
#define Q3(j)                                                                                         \
  {                                                                                                   \
    __m256 v = _mm256_permute_ps(q0, (j) * 0x55);                                                     \
    F(c00, v, _mm256_load_ps(b + (j) * 32)); F(c01, v, _mm256_load_ps(b + (j) * 32 + 8));            \
    F(c02, v, _mm256_load_ps(b + (j) * 32 + 16)); F(c03, v, _mm256_load_ps(b + (j) * 32 + 24));      \
    v = _mm256_permute_ps(q1, (j) * 0x55);                                                            \
    F(c04, v, _mm256_load_ps(b + (j) * 32)); F(c05, v, _mm256_load_ps(b + (j) * 32 + 8));            \
    F(c06, v, _mm256_load_ps(b + (j) * 32 + 16)); F(c07, v, _mm256_load_ps(b + (j) * 32 + 24));      \
    v = _mm256_permute_ps(q2, (j) * 0x55);                                                            \
    F(c08, v, _mm256_load_ps(b + (j) * 32)); F(c09, v, _mm256_load_ps(b + (j) * 32 + 8));            \
    F(c10, v, _mm256_load_ps(b + (j) * 32 + 16)); F(c11, v, _mm256_load_ps(b + (j) * 32 + 24));      \
  }
static long permute3x32(long reps) {
  ACC;
  for (long r = 0; r < reps; r++) {
    const float *a = A, *b = B;
    for (int p = 0; p < K; p += 4, a += 4, b += 128) {
      const __m256 q0 = _mm256_broadcast_ps((const __m128 *)a), q1 = _mm256_broadcast_ps((const __m128 *)(a + LDA)),
                   q2 = _mm256_broadcast_ps((const __m128 *)(a + 2 * LDA));
      Q3(0) Q3(1) Q3(2) Q3(3)
    }
  }
  SINK;
  return reps * K * 12;
}

/* 6 x 16 with each input loaded as a scalar (vmovss) and broadcast from the register. */
static inline __m256 bcast_reg(const float *p) {
  __m128 x = _mm_load_ss(p);
  __asm__("" : "+x"(x));
  return _mm256_broadcastss_ps(x);
}
static long scalar_then_bcast(long reps) {
  ACC;
  for (long r = 0; r < reps; r++) {
    const float *a = A, *b = B;
    for (int p = 0; p < K; p++, a++, b += 16) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
      ROW16(0, c00, c01, bcast_reg(a)); ROW16(1, c02, c03, bcast_reg(a + LDA));
      ROW16(2, c04, c05, bcast_reg(a + 2 * LDA)); ROW16(3, c06, c07, bcast_reg(a + 3 * LDA));
      ROW16(4, c08, c09, bcast_reg(a + 4 * LDA)); ROW16(5, c10, c11, bcast_reg(a + 5 * LDA));
    }
  }
  SINK;
  return reps * K * 12;
}

typedef struct variant {
  const char *name;
  long (*fn)(long);
} variant;

static const variant VARIANTS[] = {
    {"6x16 kernel loop: 6 vbroadcastss + 2 panel loads", tile6x16},
    {"6x16, inputs in registers: 2 panel loads", panel_only},
    {"6x16, panel in registers: 6 vbroadcastss", bcast_only},
    {"4x24: 4 vbroadcastss + 3 panel loads", tile4x24},
    {"3x32: 3 vbroadcastss + 4 panel loads", tile3x32},
    {"2x48: 2 vbroadcastss + 6 panel loads", tile2x48},
    {"6x16, pre-broadcast inputs: 8 256-bit loads", prebroadcast},
    {"3x32, vbroadcastf128 + vpermilps per 4 steps (GCC spills one accumulator)", permute3x32},
    {"6x16, vmovss + register vbroadcastss", scalar_then_bcast},
};
#define NV (sizeof VARIANTS / sizeof VARIANTS[0])

int main(int argc, char **argv) {
  if (argc != 3 || atoi(argv[1]) < 1 || atol(argv[2]) < 1) {
    fprintf(stderr, "usage: %s ROUNDS REPS (both >= 1)\n", argv[0]);
    return 2;
  }
  const int rounds = atoi(argv[1]);
  const long reps = atol(argv[2]);
  for (int i = 0; i < 6 * LDA; i++) A[i] = 1e-3f * (float)(i % 7);
  for (int i = 0; i < K * 48; i++) B[i] = 1e-3f * (float)(i % 5), AE[i] = 1e-3f * (float)(i % 3);
  double *ratios = malloc(sizeof(double) * NV * (size_t)rounds);
  if (!ratios) return 1;
  for (int r = 0; r < rounds; r++) {
    for (size_t v = 0; v < NV; v++) { /* the pure loop right before each variant */
      double t = now();
      const long f0 = pure(reps);
      const double rate0 = f0 / (now() - t);
      t = now();
      const long f = VARIANTS[v].fn(reps);
      ratios[v * rounds + r] = f / (now() - t) / rate0;
    }
  }
  for (size_t v = 0; v < NV; v++) {
    printf("{\"variant\": \"%s\", \"ratios\": [", VARIANTS[v].name);
    for (int r = 0; r < rounds; r++) printf("%s%.4f", r ? ", " : "", ratios[v * rounds + r]);
    printf("]}\n");
  }
  free(ratios);
  return sink[0] == 12345.0f; /* keep the sums alive */
}
