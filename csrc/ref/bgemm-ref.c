/* Reference kernels: one bit at a time, no tricks. The oracle for every fast path. */
#include <string.h>

#include "../xk_internal.h"

static int get_bit(const uint8_t *row, size_t i) { return (row[i / 8] >> (i % 8)) & 1; }

void xk_ref_pack_f32(const float *x, size_t k, uint8_t *out) {
  memset(out, 0, xk_packed_row_bytes(k));
  for (size_t i = 0; i < k; i++) {
    int neg = !(x[i] >= 0.0f); /* sign(0) = +1; NaN packs as -1 */
    out[i / 8] |= (uint8_t)(neg << (i % 8));
  }
}

void xk_ref_pack_i8(const int8_t *x, size_t k, uint8_t *out) {
  memset(out, 0, xk_packed_row_bytes(k));
  for (size_t i = 0; i < k; i++) out[i / 8] |= (uint8_t)((x[i] < 0) << (i % 8));
}

int32_t xk_ref_bdot(const uint8_t *a, const uint8_t *b, size_t k) {
  int32_t dot = 0;
  for (size_t i = 0; i < k; i++) dot += (get_bit(a, i) == get_bit(b, i)) ? 1 : -1;
  return dot;
}

void xk_ref_bgemm(size_t m, size_t n, size_t k, const uint8_t *a, size_t lda, const uint8_t *b,
                  size_t ldb, const xk_epilogue *ep, void *c, size_t ldc) {
  for (size_t i = 0; i < m; i++) {
    if (ep->kind == XK_OUT_BITS) memset((uint8_t *)c + i * ldc, 0, xk_packed_row_bytes(n));
    for (size_t j = 0; j < n; j++) {
      int32_t d = xk_ref_bdot(a + i * lda, b + j * ldb, k);
      switch (ep->kind) {
        case XK_OUT_INT32: ((int32_t *)c)[i * ldc + j] = d; break;
        case XK_OUT_FLOAT: {
          float s = ep->scale ? ep->scale[j] : 1.0f, o = ep->bias ? ep->bias[j] : 0.0f;
          ((float *)c)[i * ldc + j] = s * (float)d + o;
          break;
        }
        case XK_OUT_BITS: {
          int bit = (d < ep->threshold[j]) ^ (ep->flip ? (ep->flip[j] & 1) : 0);
          ((uint8_t *)c)[i * ldc + j / 8] |= (uint8_t)(bit << (j % 8));
          break;
        }
      }
    }
  }
}
