/*
 * xnorkit C API: bit packing and binary (XNOR-popcount) GEMM.
 *
 * Conventions (fixed once, see docs/format.md and docs/kernels.md):
 *  - bit 1 means -1, bit 0 means +1; sign(0) = +1, sign(NaN) = -1 (bit = !(x >= 0)).
 *  - a packed row holds K elements as a little-endian bit stream (element i is bit i%8 of
 *    byte i/8, i.e. bit i%64 of 64-bit word i/64), padded with zero bits to a multiple of 64
 *    bits: xk_packed_row_bytes(K) bytes.
 *  - binary dot product of two packed rows: dot = K - 2*popcount(a XOR b).
 *
 * Kernels never allocate: callers pass buffers sized by the *_size() functions.
 * Every function returns a status; xk_last_error() gives a message naming the problem.
 */
#ifndef XNORKIT_XK_H
#define XNORKIT_XK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum xk_status {
  XK_OK = 0,
  XK_ERR_ARGUMENT = 1,     /* null pointer, zero size, bad enum value */
  XK_ERR_SHAPE = 2,        /* dimensions do not agree */
  XK_ERR_UNSUPPORTED = 3,  /* ISA not available on this CPU / build */
  XK_ERR_FORMAT = 4,       /* malformed model file */
  XK_ERR_MEMORY = 5,       /* caller-provided buffer too small */
  XK_ERR_INTERNAL = 6
} xk_status;

/* Message for the last error in the calling thread ("" if none). */
const char *xk_last_error(void);

/* ---------------------------------------------------------------- ISA dispatch */
typedef enum xk_isa {
  XK_ISA_AUTO = -1,
  XK_ISA_SCALAR = 0,  /* portable C, hardware popcount where the target has one */
  XK_ISA_AVX2 = 1,    /* x86-64 AVX2: nibble-LUT popcount (vpshufb) */
  XK_ISA_AVX512 = 2,  /* x86-64 AVX-512F/BW + VPOPCNTDQ */
  XK_ISA_NEON = 3,    /* AArch64 Advanced SIMD: vcnt */
  XK_ISA_COUNT = 4
} xk_isa;

const char *xk_isa_name(xk_isa isa);
/* Parse "scalar" | "avx2" | "avx512" | "neon" | "auto"; returns XK_ERR_ARGUMENT if unknown. */
xk_status xk_isa_from_name(const char *name, xk_isa *out);
/* 1 if this build contains the ISA's kernels and this CPU can run them. */
int xk_isa_available(xk_isa isa);
/* The best available ISA (ignores XK_ISA). */
xk_isa xk_isa_best(void);
/* Select the ISA used by subsequent calls (process-wide). XK_ISA_AUTO = the XK_ISA
 * environment variable if set, else the best available. */
xk_status xk_set_isa(xk_isa isa);
xk_isa xk_get_isa(void);
/* The ISA that ran the most recent kernel call in this thread. */
xk_isa xk_last_isa(void);

/* ---------------------------------------------------------------- threads */
/* Number of threads used by kernels (>= 1). Default: XK_NUM_THREADS or the CPU count. */
void xk_set_num_threads(int n);
int xk_get_num_threads(void);

/* ---------------------------------------------------------------- packing */
size_t xk_packed_row_bytes(size_t k);

/* Pack `rows` rows of `k` values (row stride `ld` elements) into rows of
 * xk_packed_row_bytes(k) bytes (stride `ldo` bytes, >= xk_packed_row_bytes(k)). */
xk_status xk_pack_f32(const float *x, size_t rows, size_t k, size_t ld, uint8_t *out, size_t ldo);
xk_status xk_pack_i8(const int8_t *x, size_t rows, size_t k, size_t ld, uint8_t *out, size_t ldo);
/* Unpack to +1.0f / -1.0f. */
xk_status xk_unpack_f32(const uint8_t *bits, size_t rows, size_t k, size_t ldb, float *out, size_t ldo);

/* ---------------------------------------------------------------- binary GEMM */
/* B (the weights, n rows of k bits) is pre-packed once into the panel layout of the
 * micro-kernel of one ISA. The panel records its ISA; using it with another ISA is an error. */
size_t xk_bgemm_panel_size(xk_isa isa, size_t n, size_t k);
xk_status xk_bgemm_pack_panel(xk_isa isa, const uint8_t *b_bits, size_t n, size_t k, size_t ldb,
                              void *panel, size_t panel_size);

typedef enum xk_out_kind {
  XK_OUT_INT32 = 0, /* c[i][j] = dot (int32) */
  XK_OUT_FLOAT = 1, /* c[i][j] = scale[j] * dot + bias[j] (float; null scale = 1, null bias = 0) */
  XK_OUT_BITS = 2   /* packed bits along j: bit = (dot < threshold[j]) XOR flip[j] */
} xk_out_kind;

typedef struct xk_epilogue {
  xk_out_kind kind;
  const float *scale;        /* XK_OUT_FLOAT, per column, nullable */
  const float *bias;         /* XK_OUT_FLOAT, per column, nullable */
  const int32_t *threshold;  /* XK_OUT_BITS, per column, required */
  const uint8_t *flip;       /* XK_OUT_BITS, per column (0/1), nullable = all 0 */
} xk_epilogue;

/* C = epilogue(K - 2 popcount(A[i] XOR B[j])) for i < m, j < n.
 * a_bits: m rows, stride lda bytes (multiple of 8, >= xk_packed_row_bytes(k)).
 * c: m rows, stride ldc in elements (int32/float) or bytes (bits; >= xk_packed_row_bytes(n)).
 * Padding bits of A beyond k are corrected for exactly (they may hold anything). */
xk_status xk_bgemm(size_t m, size_t n, size_t k, const uint8_t *a_bits, size_t lda,
                   const void *panel, size_t panel_size, const xk_epilogue *ep, void *c, size_t ldc);

/* ---------------------------------------------------------------- parallel helper */
/* Run fn(ctx, task) for task in [0, ntasks) on the kernel threads. The calling thread works
 * too and never waits for a helper that has not started; returns when all tasks are done. */
typedef void (*xk_task_fn)(void *ctx, size_t task);
void xk_parallel_for(size_t ntasks, xk_task_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* XNORKIT_XK_H */
