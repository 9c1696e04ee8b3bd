/*
 * Direct binary convolution for inputs of C % 32 == 0 channels (AVX2; internal to
 * csrc/ops/bconv2d.c).
 *
 * With few input channels the im2col path spends more time gathering rows, preparing them and
 * reducing per call than in its inner loop (a 56x56x32 layer: 42% kernel, 25% gather, 21% output
 * stage). This path has none of that:
 *   - the input is split into nibbles once per call, into a copy with the padding filled in
 *     (workspace, xk_bdirect_workspace_size): per pixel and 32-bit channel word x, one 64-bit word
 *     [x & 0x0f0f0f0f, (x >> 4) & 0x0f0f0f0f] (each byte times 4 for the table kernel);
 *   - two kernels, chosen from the shape when packing:
 *     - table lookup (oc % 64 == 0, any C % 32 == 0 up to 252 or a multiple of 128, <= 64 taps):
 *       weights in blocks of 64 output channels, per byte step of the split input two vectors of
 *       32 channels' weight nibbles; the input byte selects a table T_a[k] = popcount(a ^ k) and
 *       one vpshufb + vpaddb counts 32 channels x 4 bits; byte counters widened to 16 bits every
 *       <= 63 steps;
 *     - XOR (other oc, C <= 128, taps * C/32 <= 63): weights in blocks of 8 output channels, per
 *       step (tap t, channel word d) two vectors [c0 lo, c0 hi, c1 lo, ..., c3 hi], [c4 .. c7];
 *       one 64-bit broadcast of the pixel's word, vpxor + vpshufb + vpaddb per 4 channels; byte
 *       counters hold the whole reduction, one vpsadbw per 4 channels;
 *   - the output stage runs on 8 channels at a time in registers (same operations and roundings
 *     as xk_output_apply).
 * Results are bit-identical to the im2col path (tests/engine/test_ops_binary.py runs every case
 * with and without it; XK_NO_DIRECT_BCONV=1 turns it off).
 */
#ifndef XNORKIT_BCONV2D_DIRECT_H
#define XNORKIT_BCONV2D_DIRECT_H

#include "ops_internal.h"

#define XK_BDIRECT_MAX_STEPS 63 /* XOR kernel: taps * C/32 (byte counters: 63 * 4 <= 255) */
#define XK_BDIRECT_MAX_TAPS 64  /* table-lookup kernel */
#define XK_BDIRECT_BLOCK 8      /* output channels per panel block */

/* Shape conditions of the direct path (without the ISA): C a multiple of 32 and one of the two
 * kernels' conditions above. Always 0 in builds without the AVX2 kernels. */
int xk_bdirect_shape_ok(const xk_conv_shape *s);
/* The direct path for an op packed for `isa`: the shape conditions, isa AVX2 on a host that has
 * it, and XK_NO_DIRECT_BCONV unset (read once). */
int xk_bdirect_applies(const xk_conv_shape *s, xk_isa isa);
/* Panel bytes: table kernel oc / 64 blocks of taps * C/4 * 64 bytes, XOR kernel ceil(oc / 8)
 * blocks of taps * C/32 * 64 bytes. */
size_t xk_bdirect_panel_bytes(const xk_conv_shape *s);
/* Workspace: the nibble-split, padded copy of the input (0 when the shape conditions fail). */
size_t xk_bdirect_workspace_size(const xk_conv_shape *s, size_t oh, size_t ow);
/* Write word i of output channel o's weights into the panel: bits [32 i, 32 i + 32) of the
 * channel's dense K-bit stream, for i < taps * C/32. */
void xk_bdirect_pack_word(const xk_conv_shape *s, size_t o, size_t i, uint32_t word, uint8_t *panel);

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
