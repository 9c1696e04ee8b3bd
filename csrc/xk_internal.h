/* Internal declarations shared by the C core (not installed). */
#ifndef XNORKIT_INTERNAL_H
#define XNORKIT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "xnorkit/xk.h"

#if defined(_MSC_VER)
#define XK_THREAD_LOCAL __declspec(thread)
#else
#define XK_THREAD_LOCAL _Thread_local
#endif

#define XK_MAX_THREADS 64 /* the calling thread and up to 63 helpers */

/* xk_parallel_for with at most max_workers threads taking part (the caller and helpers
 * 1 .. max_workers - 1), so a task may use per-worker scratch indexed by xk_worker(). Tasks
 * must not start parallel work themselves (a nested call runs serially, on a thread whose
 * xk_worker() may be above the nested call's cap). */
void xk_parallel_run(size_t ntasks, size_t max_workers, xk_task_fn fn, void *ctx);
/* The index of the calling thread in the running job: 0 for the thread that called
 * xk_parallel_run / xk_parallel_for (and any thread outside the pool), 1 .. for helpers. */
size_t xk_worker(void);

/* Record an error message (printf-style) for xk_last_error(); returns `status`. */
xk_status xk_fail(xk_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void xk_clear_error(void);

static inline size_t xk_div_up(size_t a, size_t b) { return (a + b - 1) / b; }
static inline size_t xk_round_up(size_t a, size_t b) { return xk_div_up(a, b) * b; }

/* Mask of the valid bits in the last 64-bit word of a k-bit row (all ones if k % 64 == 0). */
static inline uint64_t xk_tail_mask(size_t k) {
  return (k % 64) ? ((UINT64_C(1) << (k % 64)) - 1) : ~UINT64_C(0);
}

static inline uint32_t xk_popcount64_portable(uint64_t x) {
  x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
  x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
  x = (x + (x >> 4)) & UINT64_C(0x0f0f0f0f0f0f0f0f);
  return (uint32_t)((x * UINT64_C(0x0101010101010101)) >> 56);
}

/*
 * One ISA's binary GEMM micro-kernel family.
 *
 * Panel layout (B pre-packed): columns in blocks of NR; for each block, the k bits in chunks of
 * `chunk_bytes`; for each chunk the NR rows' chunks back to back, each `chunk_bytes *
 * panel_expand` bytes (AVX2 stores every chunk split into low and high nibbles: expand 2).
 * Missing rows (n not a multiple of NR) and bits past k are zero.
 *
 * ukernel(mr, kw, a, lda_words, panel_block, q, ldq): for i < mr (mr <= MR), j < NR:
 *   q[i*ldq + j] = sum_{w < kw} popcount(a[i*lda_words + w] XOR b_j[w])
 * reading only words w < kw of each A row.
 */
typedef void (*xk_bgemm_ukernel_fn)(size_t mr, size_t kw, const uint64_t *a, size_t lda_words,
                                    const uint8_t *panel_block, uint32_t *q, size_t ldq);
typedef void (*xk_pack_f32_fn)(const float *x, size_t k, uint64_t *out);
typedef void (*xk_pack_i8_fn)(const int8_t *x, size_t k, uint64_t *out);

typedef struct xk_bgemm_ukernel_desc {
  xk_isa isa;
  size_t mr, nr;
  size_t chunk_bytes;   /* k bits consumed per step of one row, in bytes */
  size_t panel_expand;  /* bytes stored per input byte in the panel (1 or 2) */
  xk_bgemm_ukernel_fn ukernel;
  xk_pack_f32_fn pack_f32;  /* one row of k floats -> ceil(k/64) words (tail zeroed) */
  xk_pack_i8_fn pack_i8;
  /* panel_chunk_fill: write one chunk of one row into the panel from raw bits (nbytes <=
   * chunk_bytes; the rest zero). NULL means plain copy (panel_expand == 1). */
  void (*panel_chunk_fill)(const uint8_t *src, size_t nbytes, uint8_t *dst);
  /* Optional variant for short reductions: ops whose rows have at most small_k_max_kwords
   * words use *small_k instead (chosen at packing time from the shape, so packing and running
   * agree; see xk_ukernel_for_k). */
  const struct xk_bgemm_ukernel_desc *small_k;
  size_t small_k_max_kwords;
  /* Convolutions with whole-word or whole-byte taps (C % 8 == 0) gather their im2col rows inside
   * the GEMM tasks (MR rows at a time into a scratch buffer) instead of materializing im2col. */
  int implicit_im2col;
  /* Optional variant for convolutions (several GEMM rows per image, rows reused across many
   * column blocks): ops with at most conv_max_kwords words per row use *conv instead (chosen at
   * packing time from the shape, see xk_ukernel_for_conv). */
  const struct xk_bgemm_ukernel_desc *conv;
  size_t conv_max_kwords;
  /* Kernels that read A in their own row format: prep_a(src, kw, dst) writes a_expand * kw words
   * for a row of kw words, and ukernel's a / lda_words refer to those rows. NULL: raw rows.
   * Only AVX2 has one; the ops reserve the scratch for it in XK_HAVE_AVX2 builds only. */
  void (*prep_a)(const uint64_t *src, size_t kw, uint64_t *dst);
  size_t a_expand;
  /* Optional: ukernel over ncols columns (consecutive panel blocks, block_bytes apart; q row
   * stride ldq) in one call, the kernel's setup paid once (short reductions). NULL: the op
   * calls ukernel once per block. */
  void (*ukernel_cols)(size_t mr, size_t kw, const uint64_t *a, size_t lda_words, const uint8_t *panel,
                       size_t block_bytes, size_t ncols, uint32_t *q, size_t ldq);
} xk_bgemm_ukernel_desc;

/* A rows of up to this many words take the AVX2 column-lane kernel in conv / dense ops. */
#ifndef XK_AVX2_LANES_MAX_KWORDS
#define XK_AVX2_LANES_MAX_KWORDS 512
#endif
/* ... and rows of up to this many words take the AVX2 nibble-split kernel in convolutions. */
#ifndef XK_AVX2_SPLIT_MAX_KWORDS
#define XK_AVX2_SPLIT_MAX_KWORDS 512
#endif

/* A rows of up to this many words take the AVX-512 column-lane kernel (all ops; the implicit
 * im2col scratch holds 8 rows of this many words). */
#ifndef XK_AVX512_LANES_MAX_KWORDS
#define XK_AVX512_LANES_MAX_KWORDS 512
#endif

/* Per-ISA descriptors; NULL when the ISA is not compiled into this build. */
#define XK_UKERNEL(name) extern const xk_bgemm_ukernel_desc xk_bgemm_##name;
#include "ukernels/bgemm/bgemm.inc"
#undef XK_UKERNEL

const xk_bgemm_ukernel_desc *xk_ukernel_for(xk_isa isa);
/* 1 when the CPU has AVX-512 VNNI (the int8 ops' AVX-512 kernels; x86-64 GCC / Clang builds). */
int xk_cpu_has_avx512_vnni(void);
/* The micro-kernel family an op with kwords-word rows uses on `isa` (the small-K variant where
 * one exists and applies). */
const xk_bgemm_ukernel_desc *xk_ukernel_for_k(xk_isa isa, size_t kwords);
/* The family a convolution with kwords-word rows uses on `isa` (the conv variant where one exists
 * and applies; XK_NO_CONV_KERNEL=1 disables it, for A/B benchmarks and tests). */
const xk_bgemm_ukernel_desc *xk_ukernel_for_conv(xk_isa isa, size_t kwords);
void xk_note_isa(xk_isa isa);

/* Reference kernels (csrc/ref): plain loops over single bits; the C-side oracle. */
void xk_ref_pack_f32(const float *x, size_t k, uint8_t *out);
void xk_ref_pack_i8(const int8_t *x, size_t k, uint8_t *out);
int32_t xk_ref_bdot(const uint8_t *a, const uint8_t *b, size_t k);
void xk_ref_bgemm(size_t m, size_t n, size_t k, const uint8_t *a, size_t lda, const uint8_t *b,
                  size_t ldb, const xk_epilogue *ep, void *c, size_t ldc);

#endif
