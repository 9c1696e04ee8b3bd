/* Portable int8 GEMM micro-kernel (int16 operands, int32 accumulators): MR=4, NR=16. */
#include "../fgemm/fgemm.h"

#define MR 4
#define NR 16

static void ukernel(size_t mr, size_t kp, const int16_t *a, size_t lda, const int16_t *b, int32_t *c, size_t ldc) {
  int32_t acc[MR][NR] = {{0}};
  const int16_t *ar[MR];
  for (size_t r = 0; r < MR; r++) ar[r] = a + (r < mr ? r : mr - 1) * lda;
  for (size_t p = 0; p < kp; p += 2, b += 2 * NR) {
    for (size_t r = 0; r < MR; r++) {
      const int32_t x0 = ar[r][p], x1 = ar[r][p + 1];
      for (size_t j = 0; j < NR; j++) acc[r][j] += x0 * b[2 * j] + x1 * b[2 * j + 1];
    }
  }
  for (size_t r = 0; r < mr; r++)
    for (size_t j = 0; j < NR; j++) c[r * ldc + j] = acc[r][j];
}

const xk_qgemm_desc xk_qgemm_scalar = {XK_ISA_SCALAR, MR, NR, ukernel};
