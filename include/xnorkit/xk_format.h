/*
 * xnorkit model file format (.xk), version 1 -- plain C structs and constants.
 *
 * The full specification, with the meaning of every field and the exact arithmetic of every
 * op, is docs/format.md. This header is its machine-readable half; src/xnorkit/convert/format.py
 * mirrors it (and a test checks that the two agree).
 *
 * Encoding rules:
 *  - every integer and float is little-endian, fixed width, naturally aligned; structs have no
 *    implicit padding (checked by the static asserts at the bottom), so a little-endian reader
 *    may read them in place from a 64-byte aligned copy of the file (a microcontroller can use
 *    the const array that `xnorkit export-c` writes directly, without a parser library);
 *  - offsets are byte offsets from the start of the file; every table and every constant
 *    tensor blob starts at a multiple of XKF_ALIGN (64);
 *  - bit convention: bit 1 means -1, bit 0 means +1 (sign0(0) = +1); binary tensors are packed
 *    along their last axis (channels / input features) as a little-endian bit stream (element i
 *    is bit i%8 of byte i/8) and each row is padded with zero bits to a multiple of 64 bits;
 *  - activations are NHWC (dense activations: NC); the batch dimension is stored as 1.
 *
 * File layout:
 *   [xkf_header][tensor table: xkf_tensor x tensor_count][op table: xkf_op x op_count]
 *   [io table: int32 x (input_count + output_count)][metadata table: xkf_meta x meta_count]
 *   [string table][tensor / metadata blobs, each 64-byte aligned]
 * (each part starts at the offset the header gives; the order above is what the writer emits,
 * readers must use the offsets).
 */
#ifndef XNORKIT_XK_FORMAT_H
#define XNORKIT_XK_FORMAT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ constants */
#define XKF_MAGIC "XNRK"                 /* bytes 'X' 'N' 'R' 'K' at offset 0 */
#define XKF_MAGIC_U32 0x4B524E58u        /* the same 4 bytes read as a little-endian uint32 */
#define XKF_VERSION_MAJOR 1u             /* incompatible changes bump this; readers reject others */
#define XKF_VERSION_MINOR 0u             /* compatible additions (readers accept any minor) */
#define XKF_ALIGN 64u                    /* alignment of tables, blobs and arena offsets */
#define XKF_MAX_INPUTS 4u                /* activation inputs per op (ADD/CONCAT chain beyond) */
#define XKF_NONE (-1)                    /* "no tensor" in every tensor-index field */

/* xkf_header.flags: the writer sets all XKF_FLAGS_REQUIRED bits; a reader rejects a file
 * whose flags lack one of them or carry a bit it does not know. */
#define XKF_FLAG_LITTLE_ENDIAN 0x1u      /* all fields little-endian */
#define XKF_FLAG_BIT1_IS_MINUS1 0x2u     /* bit 1 = -1, bit 0 = +1 */
#define XKF_FLAG_PACK_LSB_FIRST 0x4u     /* element i = bit i%8 of byte i/8 */
#define XKF_FLAG_ROWS_PAD64 0x8u         /* packed rows padded to a multiple of 64 bits */
#define XKF_FLAGS_REQUIRED 0xFu
#define XKF_FLAGS_KNOWN 0xFu

/* Bytes of one packed row of k binary elements (a multiple of 8). */
#define XKF_PACKED_ROW_BYTES(k) ((((uint64_t)(k) + 63u) / 64u) * 8u)

/* ------------------------------------------------------------------ header (128 bytes) */
typedef struct xkf_header {
  uint8_t magic[4];          /*   0  "XNRK" */
  uint16_t version_major;    /*   4  XKF_VERSION_MAJOR */
  uint16_t version_minor;    /*   6  XKF_VERSION_MINOR */
  uint32_t header_size;      /*   8  sizeof(xkf_header) = 128 */
  uint32_t flags;            /*  12  XKF_FLAG_* */
  uint64_t file_size;        /*  16  total bytes of the file */
  uint64_t arena_size;       /*  24  activation arena bytes for batch 1 (multiple of 64) */
  uint64_t tensor_offset;    /*  32  tensor table */
  uint64_t op_offset;        /*  40  op table */
  uint64_t io_offset;        /*  48  io table: input tensor indices, then output tensor indices */
  uint64_t meta_offset;      /*  56  metadata table */
  uint64_t strings_offset;   /*  64  string table (NUL-terminated UTF-8; offset 0 holds "") */
  uint64_t strings_size;     /*  72  bytes of the string table */
  uint64_t data_offset;      /*  80  first blob (multiple of 64) */
  uint64_t data_size;        /*  88  bytes from data_offset to the end of the file */
  uint32_t tensor_count;     /*  96 */
  uint32_t op_count;         /* 100  ops in execution order (a topological order) */
  uint32_t input_count;      /* 104  graph inputs (>= 1) */
  uint32_t output_count;     /* 108  graph outputs (>= 1) */
  uint32_t meta_count;       /* 112 */
  uint32_t reserved;         /* 116  0 */
  uint32_t crc32;            /* 120  CRC-32 (IEEE 802.3 / zlib) of bytes [header_size, file_size) */
  uint32_t header_crc32;     /* 124  CRC-32 of header bytes [0, 124) */
} xkf_header;

/* ------------------------------------------------------------------ tensors (64 bytes each) */
typedef enum xkf_dtype {
  XKF_DTYPE_F32 = 1,   /* float32 */
  XKF_DTYPE_I8 = 2,    /* int8 */
  XKF_DTYPE_I32 = 3,   /* int32 */
  XKF_DTYPE_U8 = 4,    /* uint8 (flip masks: 0 or 1 per channel) */
  XKF_DTYPE_BITS = 5   /* packed binary along the last axis, rows of XKF_PACKED_ROW_BYTES(last) */
} xkf_dtype;

typedef enum xkf_storage {
  XKF_STORAGE_CONST = 1,  /* weights/parameters: blob at `offset` in the file */
  XKF_STORAGE_ARENA = 2   /* activation: at `offset` in the arena (batch 1; see below) */
} xkf_storage;

/* How the PyTorch model sees an activation tensor (for graph inputs and outputs: the runtime
 * transposes between this and the stored NHWC layout). */
typedef enum xkf_torch_layout {
  XKF_TORCH_SAME = 0,  /* same order as stored (NC, or NHWC) */
  XKF_TORCH_NCHW = 1,  /* stored [N,H,W,C] is PyTorch's [N,C,H,W] */
  XKF_TORCH_NCL = 2    /* stored [N,1,L,C] is PyTorch's [N,C,L] (conv1d models) */
} xkf_torch_layout;

typedef struct xkf_tensor {
  uint32_t name;          /*  0  string table offset */
  uint8_t dtype;          /*  4  xkf_dtype */
  uint8_t storage;        /*  5  xkf_storage */
  uint8_t ndim;           /*  6  1..4 */
  uint8_t torch_layout;   /*  7  xkf_torch_layout (activations; 0 for constants) */
  uint32_t shape[4];      /*  8  dims; entries >= ndim are 1. Activations: shape[0] = 1 (batch) */
  uint32_t row_bytes;     /* 24  BITS: XKF_PACKED_ROW_BYTES(shape[ndim-1]); others 0 */
  uint32_t reserved0;     /* 28  0 */
  uint64_t offset;        /* 32  CONST: file offset (multiple of 64); ARENA: arena offset, batch 1 */
  uint64_t size;          /* 40  bytes (ARENA: for batch 1). BITS: rows * row_bytes, where rows
                                 is the product of all dims but the last; others: elements * width */
  uint64_t reserved1;     /* 48  0 */
  uint64_t reserved2;     /* 56  0 */
} xkf_tensor;
/* Batch N: an ARENA tensor occupies [N*offset, N*offset + N*size) of an arena of N*arena_size
 * bytes (the plan for batch 1 scaled by N stays free of overlaps and 64-byte aligned). */

/* ------------------------------------------------------------------ ops */
typedef enum xkf_op_kind {
  XKF_OP_BCONV2D = 1,         /* binary conv: bits in, BITS weights [OC][KH*KW*C]; xkf_conv_params */
  XKF_OP_BDENSE = 2,          /* binary dense: bits in [N][K], BITS weights [OC][K] */
  XKF_OP_CONV2D = 3,          /* float / int8 conv: f32 in; xkf_conv_params (precision) */
  XKF_OP_DENSE = 4,           /* float / int8 dense: f32 in [N][K]; xkf_dense_params */
  XKF_OP_SIGN = 5,            /* f32 -> bits: bit = !(x >= t[c]) XOR flip[c]; xkf_sign_params */
  XKF_OP_UNPACK = 6,          /* bits -> f32 +-1 */
  XKF_OP_MAXPOOL2D = 7,       /* f32 or bits (AND of bits; OR where invert); xkf_pool_params */
  XKF_OP_AVGPOOL2D = 8,       /* f32; xkf_pool_params */
  XKF_OP_GLOBAL_AVGPOOL = 9,  /* f32 [N,H,W,C] -> [N,1,1,C] */
  XKF_OP_ADD = 10,            /* f32: out = act(in0 + in1 + ...); xkf_eltwise_params */
  XKF_OP_CONCAT = 11,         /* f32 or bits, along the last axis (channels) */
  XKF_OP_FLATTEN = 12,        /* [N,H,W,C] -> [N,H*W*C]; xkf_flatten_params */
  XKF_OP_RESHAPE = 13,        /* reinterpret the element order of the input with the out shape */
  XKF_OP_ACTIVATION = 14,     /* f32 elementwise; xkf_eltwise_params */
  XKF_OP_AFFINE = 15,         /* f32 per channel: out = x * scale[c] + bias[c]; xkf_affine_params */
  XKF_OP_SOFTMAX = 16,        /* f32 along the last axis */
  XKF_OP_KIND_COUNT = 17
} xkf_op_kind;

/* Output kinds of the GEMM-based ops (same values as xk_out_kind in xk.h). */
typedef enum xkf_out_kind {
  XKF_OUT_INT32 = 0,  /* not written by the converter (reserved for tests) */
  XKF_OUT_FLOAT = 1,
  XKF_OUT_BITS = 2
} xkf_out_kind;

/* Activations (same values as xk_act in csrc/ops/xk_ops.h). */
typedef enum xkf_act {
  XKF_ACT_NONE = 0,
  XKF_ACT_RELU = 1,      /* max(x, 0) */
  XKF_ACT_RELU6 = 2,     /* min(max(x, 0), 6) */
  XKF_ACT_HARDTANH = 3,  /* min(max(x, lo), hi) */
  XKF_ACT_PRELU = 4,     /* x >= 0 ? x : alpha[c] * x (alpha: F32 [C] or [1]) */
  XKF_ACT_LEAKY = 5,     /* x >= 0 ? x : lo * x */
  XKF_ACT_COUNT = 6
} xkf_act;

typedef enum xkf_precision {
  XKF_PREC_F32 = 0,  /* float32 weights and arithmetic */
  XKF_PREC_I8 = 1    /* int8 per-output-channel weights, int8 per-tensor input quantization */
} xkf_precision;

typedef enum xkf_pad_value { XKF_PAD_ZERO = 0, XKF_PAD_PLUS = 1, XKF_PAD_MINUS = -1 } xkf_pad_value;

/* Output stage of BCONV2D, BDENSE, CONV2D, DENSE (48 bytes). acc is the exact accumulator:
 * binary: dot over the valid taps (docs/format.md "Padding"); int8: sum (q_x - zp) * q_w;
 * float: sum x * w.
 *   FLOAT: y = post_scale[c] * act(scale[c] * acc + bias[c]) + post_bias[c]
 *   BITS, binary ops:     bit = (acc < threshold[c]) XOR flip[c]       (exact integers)
 *   BITS, float/int8 ops: bit = !(y >= 0) with y as for FLOAT
 * Missing tensors (XKF_NONE) mean scale = 1, bias = 0, post_scale = 1, post_bias = 0,
 * flip = 0; threshold is required for BITS output of binary ops. */
typedef struct xkf_output_stage {
  uint32_t kind;        /*  0  xkf_out_kind */
  uint32_t act;         /*  4  xkf_act */
  float act_lo;         /*  8  HARDTANH lower bound / LEAKY slope */
  float act_hi;         /* 12  HARDTANH upper bound */
  int32_t scale;        /* 16  F32 [OC] */
  int32_t bias;         /* 20  F32 [OC] */
  int32_t act_alpha;    /* 24  F32 [OC] or [1] (PRELU) */
  int32_t post_scale;   /* 28  F32 [OC] */
  int32_t post_bias;    /* 32  F32 [OC] */
  int32_t threshold;    /* 36  I32 [OC] */
  int32_t flip;         /* 40  U8 [OC], values 0/1 */
  uint32_t reserved;    /* 44  0 */
} xkf_output_stage;

typedef struct xkf_conv_params {  /* BCONV2D, CONV2D (64 bytes) */
  uint32_t kh, kw;
  uint32_t stride_h, stride_w;
  uint32_t dil_h, dil_w;
  uint32_t pad_top, pad_left, pad_bottom, pad_right;
  int32_t pad_value;      /* BCONV2D: xkf_pad_value; CONV2D: 0 */
  uint32_t groups;        /* BCONV2D: 1. CONV2D: 1, or C (depthwise, OC = C * multiplier) */
  uint32_t precision;     /* CONV2D: xkf_precision; BCONV2D: 0 */
  float in_scale;         /* I8: input quantization q = clamp(rne(x / in_scale) + in_zero_point) */
  int32_t in_zero_point;  /* I8: in [-128, 127] */
  uint32_t reserved;
} xkf_conv_params;

typedef struct xkf_dense_params {  /* BDENSE, DENSE */
  uint32_t precision;      /* DENSE: xkf_precision; BDENSE: 0 */
  float in_scale;
  int32_t in_zero_point;
  uint32_t reserved[13];
} xkf_dense_params;

typedef struct xkf_sign_params {   /* SIGN */
  int32_t threshold;       /* F32 [C] or XKF_NONE (all 0) */
  int32_t flip;            /* U8 [C] or XKF_NONE (all 0) */
  uint32_t reserved[14];
} xkf_sign_params;

typedef struct xkf_pool_params {   /* MAXPOOL2D, AVGPOOL2D */
  uint32_t kh, kw;
  uint32_t stride_h, stride_w;
  uint32_t pad_top, pad_left, pad_bottom, pad_right;  /* taps outside the input are skipped */
  uint32_t count_include_pad;  /* AVGPOOL2D: 1 = divide by kh*kw, 0 = by the taps inside */
  int32_t invert;              /* MAXPOOL2D on bits: BITS [C] (channels pooled with OR) or XKF_NONE */
  uint32_t reserved[6];
} xkf_pool_params;

typedef struct xkf_eltwise_params {  /* ADD, ACTIVATION */
  uint32_t act;            /* xkf_act */
  float act_lo, act_hi;
  int32_t act_alpha;       /* F32 [C] or [1] (PRELU) */
  uint32_t reserved[12];
} xkf_eltwise_params;

typedef struct xkf_affine_params {   /* AFFINE */
  int32_t scale;           /* F32 [C] or XKF_NONE */
  int32_t bias;            /* F32 [C] or XKF_NONE */
  uint32_t reserved[14];
} xkf_affine_params;

typedef struct xkf_flatten_params {  /* FLATTEN */
  uint32_t order;          /* 0: HWC order (a copy of the NHWC rows; required for bits),
                              1: CHW order (PyTorch's flatten of NCHW; f32 only) */
  uint32_t reserved[15];
} xkf_flatten_params;

typedef union xkf_op_params {
  xkf_conv_params conv;
  xkf_dense_params dense;
  xkf_sign_params sign;
  xkf_pool_params pool;
  xkf_eltwise_params eltwise;
  xkf_affine_params affine;
  xkf_flatten_params flatten;
  uint32_t raw[16];
} xkf_op_params;

/* One op (160 bytes). Tensor fields are indices into the tensor table or XKF_NONE. */
typedef struct xkf_op {
  uint16_t kind;                    /*   0  xkf_op_kind */
  uint16_t num_inputs;              /*   2  1..XKF_MAX_INPUTS activation inputs */
  uint32_t name;                    /*   4  string table offset: the PyTorch module path */
  int32_t inputs[XKF_MAX_INPUTS];   /*   8  activation tensors (unused: XKF_NONE) */
  int32_t output;                   /*  24  activation tensor */
  int32_t weights;                  /*  28  BITS / I8 / F32 weight tensor or XKF_NONE */
  xkf_output_stage out;             /*  32  GEMM-based ops; zeros + XKF_NONE otherwise */
  xkf_op_params p;                  /*  80  per kind */
  uint32_t reserved[4];             /* 144 */
} xkf_op;

/* ------------------------------------------------------------------ metadata (32 bytes each) */
typedef enum xkf_meta_type {
  XKF_META_UTF8 = 1,   /* UTF-8 text, not NUL-terminated */
  XKF_META_JSON = 2,   /* UTF-8 JSON document */
  XKF_META_F32 = 3,    /* float32 array (count elements) */
  XKF_META_I32 = 4     /* int32 array */
} xkf_meta_type;

/* Keys the converter writes (others may appear; readers skip unknown keys):
 *   "producer"    UTF8  e.g. "xnorkit 0.1.0"
 *   "input_mean"  F32   per-channel mean subtracted from raw inputs (input normalisation)
 *   "input_std"   F32   per-channel std dividing them: x = (raw - mean) / std
 *   "labels"      UTF8  class labels, one per line
 *   "config"      JSON  training configuration
 *   "report"      JSON  the conversion report (per layer: binary/int8/float and why) */
typedef struct xkf_meta {
  uint32_t key;        /*  0  string table offset */
  uint32_t type;       /*  4  xkf_meta_type */
  uint64_t count;      /*  8  elements (bytes for UTF8/JSON) */
  uint64_t offset;     /* 16  file offset of the value (multiple of 64) */
  uint64_t size;       /* 24  bytes */
} xkf_meta;

/* ------------------------------------------------------------------ layout checks */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define XKF_STATIC_ASSERT(c, m) _Static_assert(c, #m)
#elif defined(__cplusplus) && __cplusplus >= 201103L
#define XKF_STATIC_ASSERT(c, m) static_assert(c, #m)
#else
#define XKF_STATIC_ASSERT(c, m) typedef char xkf_static_assert_##m[(c) ? 1 : -1]
#endif
XKF_STATIC_ASSERT(sizeof(xkf_header) == 128, xkf_header_is_128_bytes);
XKF_STATIC_ASSERT(sizeof(xkf_tensor) == 64, xkf_tensor_is_64_bytes);
XKF_STATIC_ASSERT(sizeof(xkf_output_stage) == 48, xkf_output_stage_is_48_bytes);
XKF_STATIC_ASSERT(sizeof(xkf_op_params) == 64, xkf_op_params_is_64_bytes);
XKF_STATIC_ASSERT(sizeof(xkf_op) == 160, xkf_op_is_160_bytes);
XKF_STATIC_ASSERT(sizeof(xkf_meta) == 32, xkf_meta_is_32_bytes);

#ifdef __cplusplus
}
#endif
#endif /* XNORKIT_XK_FORMAT_H */
