/* Portable float GEMM micro-kernel: MR=4, NR=16, plain loops the compiler vectorizes with the
 * target's baseline SIMD (SSE2 on x86-64, NEON on AArch64, scalar on microcontrollers). */
#include "fgemm.h"

#define MR 4
#define NR 16

static void ukernel(size_t mr, size_t k, const float *a, size_t lda, const float *b, float *c, size_t ldc) {
  float acc[MR][NR] = {{0}};
  const float *ar[MR];
  for (size_t r = 0; r < MR; r++) ar[r] = a + (r < mr ? r : mr - 1) * lda;
  for (size_t p = 0; p < k; p++, b += NR) {
    for (size_t r = 0; r < MR; r++) {
      const float x = ar[r][p];
      for (size_t j = 0; j < NR; j++) acc[r][j] += x * b[j];
    }
  }
  for (size_t r = 0; r < mr; r++)
    for (size_t j = 0; j < NR; j++) c[r * ldc + j] = acc[r][j];
}

const xk_fgemm_desc xk_fgemm_scalar = {XK_ISA_SCALAR, MR, NR, ukernel};
