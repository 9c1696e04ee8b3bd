/*
 * Direct binary convolution for few input channels (AVX2; internal to csrc/ops/bconv2d.c).
 *
 * For C = 32, 64, 96 or 128 input channels the im2col path spends more time gathering rows,
 * preparing them and reducing per call than in its inner loop (a 56x56x32 layer: 42% kernel,
 * 25% gather, 21% output stage). This path has none of that:
 *   - the input is split into nibbles once per call, into a copy with the padding filled in
 *     (workspace, xk_bdirect_workspace_size): per pixel and 32-bit channel word x, one 64-bit word
 *     [x & 0x0f0f0f0f, (x >> 4) & 0x0f0f0f0f];
 *   - weights (packed once, xk_bdirect_pack_row): blocks of 8 output channels, per step (tap t,
 *     channel word d) two vectors [c0 lo, c0 hi, c1 lo, c1 hi, c2 lo, ..., c3 hi], [c4 .. c7];
 *   - the inner step for one output pixel and 4 output channels is one 64-bit broadcast of the
 *     pixel's word, vpxor + vpshufb (nibble popcount) + vpaddb; byte counters hold a whole
 *     reduction (steps = taps * C/32 <= 63, at most 4 per byte per step);
 *   - the reduction is one vpsadbw per 4 channels, the output stage runs on 8 channels at a time
 *     in registers (same operations and roundings as xk_output_apply).
 * Results are bit-identical to the im2col path (tests/engine/test_ops_binary.py runs every case
 * with and without it; XK_NO_DIRECT_BCONV=1 turns it off).
 */
#ifndef XNORKIT_BCONV2D_DIRECT_H
#define XNORKIT_BCONV2D_DIRECT_H

#include "ops_internal.h"

#define XK_BDIRECT_MAX_STEPS 63 /* taps * C/32 (byte counters: 63 * 4 <= 255) */
#define XK_BDIRECT_BLOCK 8      /* output channels per panel block */

/* Shape conditions of the direct path (without the ISA): C a multiple of 32, at most 128,
 * taps * C/32 <= XK_BDIRECT_MAX_STEPS. Always 0 in builds without the AVX2 kernels. */
int xk_bdirect_shape_ok(const xk_conv_shape *s);
/* The direct path for an op packed for `isa`: the shape conditions, isa AVX2 on a host that has
 * it, and XK_NO_DIRECT_BCONV unset (read once). */
int xk_bdirect_applies(const xk_conv_shape *s, xk_isa isa);
/* Panel bytes: ceil(oc / 8) blocks of steps * 64 bytes. */
size_t xk_bdirect_panel_bytes(const xk_conv_shape *s);
/* Workspace: the nibble-split, padded copy of the input (0 when the shape conditions fail). */
size_t xk_bdirect_workspace_size(const xk_conv_shape *s, size_t oh, size_t ow);
/* Write output channel o's weights into the panel: word32(i) = bits [32 i, 32 i + 32) of the
 * channel's dense K-bit stream, for i < steps. */
void xk_bdirect_pack_row(const xk_conv_shape *s, size_t o, const uint32_t *words, uint8_t *panel);

typedef struct xk_bdirect_job {
  const xk_conv_shape *s;
  size_t oh, ow;
  xk_pad_value pad;
  const uint8_t *in;     /* packed NHWC input, xk_packed_row_bytes(C) bytes per pixel */
  const uint8_t *panel;  /* xk_bdirect_pack_row output */
  int32_t kfull;         /* K = taps * C (no pad-0 table) */
  const int32_t *base;   /* pad-0 correction table (bconv2d.c) or NULL */
  const uint16_t *ycls, *xcls;
  size_t nxc;
  const xk_output *o;
  uint8_t *out;
  size_t ldc;
  uint8_t *ws;
} xk_bdirect_job;

void xk_bdirect_run(const xk_bdirect_job *j);

#endif
