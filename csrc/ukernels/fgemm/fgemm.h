/* Float and int8 GEMM micro-kernel families used by the float / int8 conv and dense ops
 * (csrc/ops/fconv.c, csrc/ops/qconv.c). One file per ISA; the op layer picks the family that
 * matches the selected ISA (xk_get_isa()) and falls back to scalar.
 *
 * fgemm: c[i][j] = sum_{p<k} a[i*lda + p] * b[p*NR + j] for i < mr (<= MR), j < NR; b is one
 *        NR-column block of the packed weights ([k][NR] floats, zero past n).
 * qgemm: c[i][j] = sum_{p<kp} a[i*lda + p] * b[(p/2)*2*NR + 2*j + p%2] (int16 x int16 -> int32);
 *        kp is even, a holds (q_x - zero_point) as int16 (zero past k), b is one NR-column
 *        block of [kp/2][NR][2] int16 weights (zero past n and k). Exact in int32 for
 *        |a| <= 255, |b| <= 128 and kp < 2^16.
 * c is a tile buffer with stride ldc (>= NR). */
#ifndef XNORKIT_UKERNEL_GEMM_H
#define XNORKIT_UKERNEL_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "xnorkit/xk.h"

typedef void (*xk_fgemm_ukernel_fn)(size_t mr, size_t k, const float *a, size_t lda, const float *b, float *c,
                                    size_t ldc);
typedef struct xk_fgemm_desc {
  xk_isa isa;
  size_t mr, nr;
  xk_fgemm_ukernel_fn ukernel;
} xk_fgemm_desc;

typedef void (*xk_qgemm_ukernel_fn)(size_t mr, size_t kp, const int16_t *a, size_t lda, const int16_t *b, int32_t *c,
                                    size_t ldc);
typedef struct xk_qgemm_desc {
  xk_isa isa;
  size_t mr, nr;
  xk_qgemm_ukernel_fn ukernel;
} xk_qgemm_desc;

extern const xk_fgemm_desc xk_fgemm_scalar;
extern const xk_qgemm_desc xk_qgemm_scalar;
#ifdef XK_HAVE_AVX2
extern const xk_fgemm_desc xk_fgemm_avx2;
extern const xk_qgemm_desc xk_qgemm_avx2;
#endif

#define XK_FGEMM_MAX_MR 8
#define XK_FGEMM_MAX_NR 16

#endif
