/* NEON binary GEMM (AArch64): per (row, column) pair and 128 bits, veor + vcnt (bytes) +
 * vpadal (bytes -> 16-bit lanes); the 16-bit lanes are widened into 32-bit ones every 2048
 * steps (2048 * 16 = 32768 < 65536). MR = 4, NR = 4: 16 accumulators in the 32 q registers. */
#include <arm_neon.h>
#include <string.h>

#include "../../xk_internal.h"

#define MR 4
#define NR 4
#define CHUNK 16
#define MAX_U16_STEPS 2048

static inline uint8x16_t load_a(const uint64_t *row, size_t w, size_t kw) {
  if (w + 2 <= kw) return vreinterpretq_u8_u64(vld1q_u64(row + w));
  return vreinterpretq_u8_u64(vcombine_u64(vld1_u64(row + w), vdup_n_u64(0)));
}

static void ukernel(size_t mr, size_t kw, const uint64_t *a, size_t lda, const uint8_t *panel,
                    uint32_t *q, size_t ldq) {
  const uint64_t *ar[MR];
  for (size_t i = 0; i < MR; i++) ar[i] = a + (i < mr ? i : 0) * lda;
  const uint8_t *b = panel;
  const size_t nsteps = xk_div_up(kw, 2);
  uint32x4_t acc32[MR][NR];
  for (size_t i = 0; i < MR; i++)
    for (size_t j = 0; j < NR; j++) acc32[i][j] = vdupq_n_u32(0);
  for (size_t s = 0; s < nsteps;) {
    size_t end = s + MAX_U16_STEPS < nsteps ? s + MAX_U16_STEPS : nsteps;
    uint16x8_t acc[MR][NR];
    for (size_t i = 0; i < MR; i++)
      for (size_t j = 0; j < NR; j++) acc[i][j] = vdupq_n_u16(0);
    for (; s < end; s++, b += CHUNK * NR) {
      uint8x16_t bv[NR];
      for (size_t j = 0; j < NR; j++) bv[j] = vld1q_u8(b + CHUNK * j);
      for (size_t i = 0; i < MR; i++) {
        uint8x16_t av = load_a(ar[i], 2 * s, kw);
        for (size_t j = 0; j < NR; j++) acc[i][j] = vpadalq_u8(acc[i][j], vcntq_u8(veorq_u8(av, bv[j])));
      }
    }
    for (size_t i = 0; i < MR; i++)
      for (size_t j = 0; j < NR; j++) acc32[i][j] = vpadalq_u16(acc32[i][j], acc[i][j]);
  }
  for (size_t i = 0; i < mr; i++)
    for (size_t j = 0; j < NR; j++) q[i * ldq + j] = vaddvq_u32(acc32[i][j]);
}

static void pack_f32(const float *x, size_t k, uint64_t *out) {
  static const uint32_t w4[4] = {1, 2, 4, 8};
  const uint32x4_t weights = vld1q_u32(w4);
  size_t kw = xk_div_up(k, 64), full = k / 64;
  for (size_t w = 0; w < full; w++) {
    uint64_t word = 0;
    for (int g = 0; g < 16; g++) {
      float32x4_t v = vld1q_f32(x + w * 64 + 4 * g);
      uint32x4_t neg = vmvnq_u32(vcgeq_f32(v, vdupq_n_f32(0.0f))); /* !(x >= 0) */
      word |= (uint64_t)vaddvq_u32(vandq_u32(neg, weights)) << (4 * g);
    }
    out[w] = word;
  }
  if (full < kw) {
    uint64_t word = 0;
    for (size_t i = full * 64; i < k; i++) word |= (uint64_t)(!(x[i] >= 0.0f)) << (i - full * 64);
    out[full] = word;
  }
}

static void pack_i8(const int8_t *x, size_t k, uint64_t *out) {
  static const uint8_t w8[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t weights = vld1q_u8(w8);
  size_t kw = xk_div_up(k, 64), full = k / 64;
  for (size_t w = 0; w < full; w++) {
    uint64_t word = 0;
    for (int g = 0; g < 4; g++) {
      uint8x16_t neg = vcltzq_s8(vld1q_s8(x + w * 64 + 16 * g));
      uint8x16_t bits = vandq_u8(neg, weights);
      uint64_t lo = vaddv_u8(vget_low_u8(bits)), hi = vaddv_u8(vget_high_u8(bits));
      word |= (lo | (hi << 8)) << (16 * g);
    }
    out[w] = word;
  }
  if (full < kw) {
    uint64_t word = 0;
    for (size_t i = full * 64; i < k; i++) word |= (uint64_t)(x[i] < 0) << (i - full * 64);
    out[full] = word;
  }
}

const xk_bgemm_ukernel_desc xk_bgemm_neon = {
    XK_ISA_NEON, MR, NR, CHUNK, 1, ukernel, pack_f32, pack_i8, NULL, NULL, 0, 0,
};
