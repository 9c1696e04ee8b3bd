/*
 * xnorkit operator layer (internal, used by the model runtime, the binding and the C tests).
 *
 * Every op works on NHWC tensors with batch >= 1, checks its arguments, never allocates and
 * returns an xk_status with a message (xk_last_error()). Ops that need scratch memory take a
 * workspace sized by the matching *_workspace_size(); ops whose weights must be rearranged for
 * the micro-kernels take a "packed" buffer filled once by *_pack() (sized by *_packed_size()).
 *
 * Binary tensors ("bits"): one row per pixel, C channels as a little-endian bit stream, bit 1
 * means -1, the row padded with zero bits to xk_packed_row_bytes(C) bytes (a multiple of 8).
 * Ops read binary rows with the padding masked, so they never depend on what it holds, and
 * always write it as zero.
 */
#ifndef XNORKIT_OPS_H
#define XNORKIT_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "xnorkit/xk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ activations */
typedef enum xk_act {
  XK_ACT_NONE = 0,
  XK_ACT_RELU = 1,      /* max(x, 0) */
  XK_ACT_RELU6 = 2,     /* min(max(x, 0), 6) */
  XK_ACT_HARDTANH = 3,  /* min(max(x, lo), hi); default lo = -1, hi = 1 */
  XK_ACT_PRELU = 4,     /* x >= 0 ? x : alpha[c] * x (alpha per channel, or one shared) */
  XK_ACT_LEAKY = 5,     /* x >= 0 ? x : lo * x */
  XK_ACT_COUNT = 6
} xk_act;

typedef struct xk_act_params {
  xk_act kind;
  float lo, hi;         /* HARDTANH bounds; LEAKY uses lo as the slope */
  const float *alpha;   /* PRELU slopes */
  size_t alpha_count;   /* 1 (shared) or C */
} xk_act_params;

/*
 * The output stage of every GEMM-based op (binary, float and int8 conv / dense):
 *   y = post_scale[c] * act(scale[c] * acc + bias[c]) + post_bias[c]
 * where acc is the exact integer dot product (binary: K - 2 popcount, pad-corrected; int8:
 * sum of (q_x - zp_x) * q_w) or the float dot product. Null arrays mean 1 / 0. Output kinds:
 *   XK_OUT_FLOAT  y as float (stride ldc floats per output pixel)
 *   XK_OUT_INT32  acc itself (binary and int8 ops only)
 *   XK_OUT_BITS   binary ops: bit = (acc < threshold[c]) XOR flip[c]  (exact; threshold required)
 *                 float / int8 ops: bit = !(y >= 0)  (sign0 of y)
 */
typedef struct xk_output {
  xk_out_kind kind;
  const float *scale, *bias;
  xk_act_params act;
  const float *post_scale, *post_bias;
  const int32_t *threshold;
  const uint8_t *flip;
  /* XK_OUT_FLOAT of the binary conv / dense ops only: a tensor of the output's shape and stride
   * added after the stage, y = stage(acc) + residual (a residual connection fused into the op;
   * the same float addition as a separate add). May be the output itself (in place). */
  const float *residual;
} xk_output;

/* ------------------------------------------------------------------ convolution geometry */
typedef struct xk_conv_shape {
  size_t n, h, w, c;               /* input NHWC */
  size_t oc;                       /* output channels (depthwise: c * depth_multiplier) */
  size_t kh, kw;
  size_t stride_h, stride_w;
  size_t dil_h, dil_w;             /* 0 means 1 */
  size_t pad_t, pad_l, pad_b, pad_r;
} xk_conv_shape;

/* Output size; XK_ERR_SHAPE (with a message) when the kernel does not fit. */
xk_status xk_conv_out_size(const xk_conv_shape *s, size_t *oh, size_t *ow);

/* ------------------------------------------------------------------ binary conv / dense */
/* Pad value of a binary convolution: what a tap outside the image contributes.
 *   XK_PAD_ZERO  0 (zero padding of the +-1 input; corrected exactly per output position)
 *   XK_PAD_PLUS  +1 (bit 0)      XK_PAD_MINUS  -1 (bit 1) */
typedef enum xk_pad_value { XK_PAD_ZERO = 0, XK_PAD_PLUS = 1, XK_PAD_MINUS = -1 } xk_pad_value;

/* Weight bit layout accepted by the pack functions: for output channel o, tap t = kh*KW + kw
 * and input channel c, the bit index within row o is t * tap_bits + c, where tap_bits = C
 * (taps back to back: the K = KH*KW*C bits of a row form one stream) or tap_bits = a multiple
 * of 64 >= C (each tap padded). Rows are w_row_bytes apart. */
typedef struct xk_bweights {
  const uint8_t *bits;
  size_t row_bytes;
  size_t tap_bits;
} xk_bweights;

size_t xk_bconv2d_packed_size(const xk_conv_shape *s, xk_pad_value pad);
xk_status xk_bconv2d_pack(const xk_conv_shape *s, xk_pad_value pad, const xk_bweights *w, void *packed,
                          size_t packed_size);
size_t xk_bconv2d_workspace_size(const xk_conv_shape *s);
/* in: N*H*W rows of xk_packed_row_bytes(C) bytes. out: N*OH*OW rows, stride ldc (floats or
 * int32 for FLOAT/INT32 output; bytes, >= xk_packed_row_bytes(OC), multiple of 8, for BITS). */
xk_status xk_bconv2d_run(const xk_conv_shape *s, const void *packed, size_t packed_size, const uint8_t *in,
                         const xk_output *o, void *out, size_t ldc, void *ws, size_t ws_size);

/* Binary dense: in = n rows of xk_packed_row_bytes(k) bytes; weights n_out rows of k bits. */
size_t xk_bdense_packed_size(size_t k, size_t n_out);
xk_status xk_bdense_pack(size_t k, size_t n_out, const uint8_t *w_bits, size_t w_row_bytes, void *packed,
                         size_t packed_size);
xk_status xk_bdense_run(size_t n, size_t k, size_t n_out, const void *packed, size_t packed_size,
                        const uint8_t *in, const xk_output *o, void *out, size_t ldc);

/* ------------------------------------------------------------------ bit ops */
/* Binarize floats (rows x c, stride ldx): bit = (x < t[ch]) XOR flip[ch]; null t = 0 (sign0),
 * null flip = 0. out: rows of xk_packed_row_bytes(c) bytes. */
xk_status xk_binarize(size_t rows, size_t c, const float *x, size_t ldx, const float *t, const uint8_t *flip,
                      uint8_t *out);
/* Bits to +-1 floats. */
xk_status xk_unbinarize(size_t rows, size_t c, const uint8_t *bits, float *out, size_t ldo);

typedef struct xk_pool_shape {
  size_t n, h, w, c;
  size_t kh, kw, stride_h, stride_w;
  size_t pad_t, pad_l, pad_b, pad_r;
} xk_pool_shape;
xk_status xk_pool_out_size(const xk_pool_shape *s, size_t *oh, size_t *ow);

/* Max pooling on bits: max over +-1 values is +1 unless all are -1, i.e. the AND of the bits
 * (bit 1 = -1). Taps outside the image are ignored. invert (nullable, xk_packed_row_bytes(c)
 * bytes): channels whose bit is set are pooled with OR (a min over +-1; the pooled tensor came
 * from a decreasing map, see docs/format.md). */
xk_status xk_bmaxpool2d(const xk_pool_shape *s, const uint8_t *in, const uint8_t *invert, uint8_t *out);

/* Concatenate binary tensors along channels: k inputs with c[i] channels each. */
xk_status xk_bconcat(size_t rows, size_t k, const uint8_t *const *in, const size_t *c, uint8_t *out);

/* Flatten binary [n, hw pixels, c] to [n, hw * c]: each output row is the bit concatenation of
 * the hw input rows' c real bits, re-padded to 64 bits. */
xk_status xk_bflatten(size_t n, size_t hw, size_t c, const uint8_t *in, uint8_t *out);

/* ------------------------------------------------------------------ float conv / dense */
/* Float weights: [OC][KH][KW][C] floats (PyTorch's OIHW transposed to OHWI). */
size_t xk_conv2d_packed_size(const xk_conv_shape *s);
xk_status xk_conv2d_pack(const xk_conv_shape *s, const float *w, void *packed, size_t packed_size);
/* nslots: how many threads may work at once (the workspace holds one im2col tile per slot). */
size_t xk_conv2d_workspace_size(const xk_conv_shape *s, size_t nslots);
xk_status xk_conv2d_run(const xk_conv_shape *s, const void *packed, size_t packed_size, const float *in,
                        const xk_output *o, void *out, size_t ldc, void *ws, size_t ws_size);

/* Depthwise (groups = C, OC = C * multiplier): weights [KH][KW][OC] (TF layout; the converter
 * transposes PyTorch's [OC][1][KH][KW]). Direct loops, no workspace. */
xk_status xk_dwconv2d_run(const xk_conv_shape *s, const float *w, const float *in, const xk_output *o,
                          float *out, size_t ldc);

/* Float dense: weights [n_out][k] (PyTorch's Linear layout). */
size_t xk_dense_packed_size(size_t k, size_t n_out);
xk_status xk_dense_pack(size_t k, size_t n_out, const float *w, void *packed, size_t packed_size);
xk_status xk_dense_run(size_t n, size_t k, size_t n_out, const void *packed, size_t packed_size, const float *in,
                       size_t ldx, const xk_output *o, void *out, size_t ldc);

/* ------------------------------------------------------------------ int8 conv / dense */
/* Per-tensor affine input quantization q = clamp(round_half_even(x / in_scale) + zp, -128, 127)
 * and per-output-channel symmetric int8 weights ([OC][KH][KW][C]); acc = sum (q - zp) * w, an
 * exact int32; the output stage sees acc (fold in_scale * w_scale[c] into xk_output.scale). */
typedef struct xk_quant {
  float scale;
  int32_t zero_point;
} xk_quant;

size_t xk_qconv2d_packed_size(const xk_conv_shape *s);
xk_status xk_qconv2d_pack(const xk_conv_shape *s, const int8_t *w, void *packed, size_t packed_size);
size_t xk_qconv2d_workspace_size(const xk_conv_shape *s, size_t nslots);
xk_status xk_qconv2d_run(const xk_conv_shape *s, const void *packed, size_t packed_size, const float *in,
                         xk_quant q, const xk_output *o, void *out, size_t ldc, void *ws, size_t ws_size);
size_t xk_qdense_packed_size(size_t k, size_t n_out);
xk_status xk_qdense_pack(size_t k, size_t n_out, const int8_t *w, void *packed, size_t packed_size);
size_t xk_qdense_workspace_size(size_t n, size_t k);
xk_status xk_qdense_run(size_t n, size_t k, size_t n_out, const void *packed, size_t packed_size, const float *in,
                        xk_quant q, const xk_output *o, void *out, size_t ldc, void *ws, size_t ws_size);
/* Int8 depthwise: weights int8 [KH][KW][OC] (as the float depthwise), input quantized as above
 * into the workspace (xk_qdwconv2d_workspace_size), exact accumulation, float output. */
size_t xk_qdwconv2d_workspace_size(const xk_conv_shape *s);
xk_status xk_qdwconv2d_run(const xk_conv_shape *s, const int8_t *w, const float *in, xk_quant q, const xk_output *o,
                           float *out, size_t ldc, void *ws, size_t ws_size);
/* The quantizer alone (for tests and for the runtime's calibration checks). */
int8_t xk_quantize1(float x, xk_quant q);

/* ------------------------------------------------------------------ float elementwise and pools */
xk_status xk_maxpool2d(const xk_pool_shape *s, const float *in, float *out);
/* count_include_pad: divide by KH*KW (PyTorch's default) or by the number of taps inside. */
xk_status xk_avgpool2d(const xk_pool_shape *s, int count_include_pad, const float *in, float *out);
xk_status xk_global_avgpool(size_t n, size_t hw, size_t c, const float *in, float *out);
/* out = act(a + b) elementwise on rows x c values (c: channels, for per-channel PReLU); out
 * may alias a or b. */
xk_status xk_add(size_t rows, size_t c, const float *a, const float *b, const xk_act_params *act, float *out);
/* Concatenate float tensors along the last axis. */
xk_status xk_concat(size_t rows, size_t k, const float *const *in, const size_t *c, float *out);
/* In place or out of place; rows x c. */
xk_status xk_activation(size_t rows, size_t c, const float *in, const xk_act_params *act, float *out);
/* out = x * scale[c] + bias[c] (nullable arrays = 1 / 0). */
xk_status xk_affine(size_t rows, size_t c, const float *in, const float *scale, const float *bias, float *out);
/* Softmax along the last axis (max-subtracted). */
xk_status xk_softmax(size_t rows, size_t c, const float *in, float *out);
/* NHWC -> NCHW (for a PyTorch-order flatten). */
xk_status xk_nhwc_to_nchw(size_t n, size_t h, size_t w, size_t c, const float *in, float *out);
/* NCHW -> NHWC (PyTorch-layout images into the engine's layout). */
xk_status xk_nchw_to_nhwc(size_t n, size_t c, size_t h, size_t w, const float *in, float *out);

/* Apply an activation to one value (channel ch); shared by the epilogues. */
static inline float xk_act_apply(const xk_act_params *a, float x, size_t ch) {
  switch (a->kind) {
    case XK_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case XK_ACT_RELU6: return x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f;
    case XK_ACT_HARDTANH: return x < a->lo ? a->lo : (x > a->hi ? a->hi : x);
    case XK_ACT_PRELU: return x >= 0.0f ? x : a->alpha[a->alpha_count == 1 ? 0 : ch] * x;
    case XK_ACT_LEAKY: return x >= 0.0f ? x : a->lo * x;
    default: return x;
  }
}
xk_status xk_act_check(const xk_act_params *a, size_t c, const char *op);

#ifdef __cplusplus
}
#endif
#endif
