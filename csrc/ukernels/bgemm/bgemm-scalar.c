/* Scalar binary GEMM: 64-bit XOR + hardware popcount (the compiler's builtin), MR=2, NR=4.
 * Compiled with the target's popcount instruction where it has one (x86: -mpopcnt). */
#include <string.h>

#include "../../xk_internal.h"

#define MR 2
#define NR 4

#if defined(__GNUC__) || defined(__clang__)
#define POPCNT64(x) ((uint32_t)__builtin_popcountll(x))
#else
#define POPCNT64(x) xk_popcount64_portable(x)
#endif

static void ukernel(size_t mr, size_t kw, const uint64_t *a, size_t lda, const uint8_t *panel,
                    uint32_t *q, size_t ldq) {
  const uint64_t *b = (const uint64_t *)panel; /* [kw][NR] words */
  const uint64_t *a0 = a, *a1 = a + (mr > 1 ? lda : 0);
  uint32_t c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  for (size_t w = 0; w < kw; w++, b += NR) {
    const uint64_t x0 = a0[w], x1 = a1[w];
    c00 += POPCNT64(x0 ^ b[0]); c01 += POPCNT64(x0 ^ b[1]);
    c02 += POPCNT64(x0 ^ b[2]); c03 += POPCNT64(x0 ^ b[3]);
    c10 += POPCNT64(x1 ^ b[0]); c11 += POPCNT64(x1 ^ b[1]);
    c12 += POPCNT64(x1 ^ b[2]); c13 += POPCNT64(x1 ^ b[3]);
  }
  q[0] = c00; q[1] = c01; q[2] = c02; q[3] = c03;
  if (mr > 1) { q[ldq + 0] = c10; q[ldq + 1] = c11; q[ldq + 2] = c12; q[ldq + 3] = c13; }
}

static void pack_f32(const float *x, size_t k, uint64_t *out) {
  size_t kw = xk_div_up(k, 64);
  for (size_t w = 0; w < kw; w++) {
    size_t n = (k - w * 64 < 64) ? k - w * 64 : 64;
    uint64_t word = 0;
    for (size_t i = 0; i < n; i++) word |= (uint64_t)(!(x[w * 64 + i] >= 0.0f)) << i;
    out[w] = word;
  }
}

static void pack_i8(const int8_t *x, size_t k, uint64_t *out) {
  size_t kw = xk_div_up(k, 64);
  for (size_t w = 0; w < kw; w++) {
    size_t n = (k - w * 64 < 64) ? k - w * 64 : 64;
    uint64_t word = 0;
    for (size_t i = 0; i < n; i++) word |= (uint64_t)(x[w * 64 + i] < 0) << i;
    out[w] = word;
  }
}

const xk_bgemm_ukernel_desc xk_bgemm_scalar = {
    XK_ISA_SCALAR, MR, NR, 8, 1, ukernel, pack_f32, pack_i8, NULL, NULL, 0, 0,
};
