/*
 * xnorkit model engine: load a .xk model file (docs/format.md) and run it.
 *
 * Memory: the engine never allocates. The caller asks xk_model_arena_size() how many bytes the
 * model needs for a given maximum batch and thread count, provides one 64-byte aligned arena of
 * that size, and xk_model_load() builds everything inside it: the model handle, kernel-ready
 * (re-packed) weights, the activation tensors (planned by the converter, checked here) and the
 * scratch workspaces. The file bytes are referenced, not copied: they must stay valid and
 * unchanged while the model is in use (a microcontroller passes its const array directly).
 *
 * Validation: xk_model_arena_size() and xk_model_load() check the whole file before anything
 * runs -- magic, version, flags, checksums, the bounds and alignment of every table, tensor and
 * blob, every index, every op's shapes and parameters, the execution order and the activation
 * plan -- and fail with XK_ERR_FORMAT and a message naming the problem (xk_last_error()).
 *
 * Threads: kernels use xk_parallel_for (xk_set_num_threads); one model may be run by one thread
 * at a time. Build with XK_NO_THREADS for a serial engine.
 */
#ifndef XNORKIT_XK_ENGINE_H
#define XNORKIT_XK_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "xk.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xk_model xk_model;

typedef struct xk_model_options {
  uint32_t max_batch;    /* largest batch a run may use (0 means 1) */
  uint32_t num_threads;  /* threads that may work at once; sizes per-thread scratch (0: xk_get_num_threads()) */
  uint32_t flags;        /* XK_MODEL_* below (0: defaults) */
} xk_model_options;

/* Run every op as the file lists it. By default a binary convolution or a float convolution
 * (not int8, not depthwise) with float output whose only reader is a residual add (no
 * activation) runs with the add fused into its output stage (same float addition, same
 * results); the add then takes no time in per-op profiles. */
#define XK_MODEL_NO_FUSION 1u

/* Bytes of arena needed to load the model (validates the file). */
xk_status xk_model_arena_size(const void *data, size_t size, const xk_model_options *opt, size_t *bytes);

/* Validate the file and build the model in `arena` (64-byte aligned, >= xk_model_arena_size()).
 * Packs the weights for the ISA selected now (xk_get_isa()). *model points into the arena. */
xk_status xk_model_load(const void *data, size_t size, const xk_model_options *opt, void *arena, size_t arena_size,
                        xk_model **model);

/* Run on `batch` samples (1 <= batch <= max_batch). inputs[i] / outputs[i]: float32 in the
 * stored (NHWC / NC) layout of graph input / output i, batch-major, element counts
 * batch * xk_model_input(m, i)->count. Binary outputs are written as +1.0f / -1.0f. */
xk_status xk_model_run_multi(xk_model *model, size_t batch, const float *const *inputs, float *const *outputs);
/* The common case: one input, one output. */
xk_status xk_model_run(xk_model *model, size_t batch, const float *input, float *output);
/* Where graph input i of a run on `batch` samples lives in the arena (NULL for a bad index or
 * batch): write the input there (same layout as for xk_model_run_multi) and pass this pointer
 * as inputs[i] to skip the copy into the arena (as TFLite's input tensors). Valid until the
 * next run; the run overwrites it only if an op's output shares its memory. */
float *xk_model_input_buffer(xk_model *model, size_t i, size_t batch);

/* ---------------------------------------------------------------- introspection */
typedef enum xk_dtype { XK_DTYPE_F32 = 1, XK_DTYPE_I8 = 2, XK_DTYPE_I32 = 3, XK_DTYPE_U8 = 4, XK_DTYPE_BITS = 5 } xk_dtype;

typedef struct xk_tensor_info {
  const char *name;
  int dtype;              /* xk_dtype */
  int ndim;
  uint32_t shape[4];      /* batch dimension (shape[0] of activations) reported as 1 */
  int torch_layout;       /* 0: same as stored, 1: stored NHWC is PyTorch NCHW, 2: stored N1LC is NCL */
  size_t count;           /* elements per sample */
} xk_tensor_info;

typedef struct xk_op_info {
  const char *name;       /* the PyTorch module path */
  const char *kind;       /* "bconv2d", "conv2d", "dense", ... */
  const char *precision;  /* "binary", "int8", "float" or "-" */
  xk_tensor_info output;
  uint64_t macs;          /* multiply-accumulates per sample (binary ops: binary MACs) */
  uint64_t weight_bytes;  /* bytes of this op's constant tensors in the file */
  uint32_t fused;         /* 1: runs inside the previous op (a residual add fused at load) */
} xk_op_info;

size_t xk_model_num_inputs(const xk_model *model);
size_t xk_model_num_outputs(const xk_model *model);
xk_status xk_model_input(const xk_model *model, size_t i, xk_tensor_info *info);
xk_status xk_model_output(const xk_model *model, size_t i, xk_tensor_info *info);
size_t xk_model_num_ops(const xk_model *model);
xk_status xk_model_op(const xk_model *model, size_t i, xk_op_info *info);
/* Metadata value by key ("labels", "input_mean", "config", ...): type (1 UTF-8, 2 JSON, 3 F32,
 * 4 I32), pointer into the file and size in bytes. XK_ERR_ARGUMENT if the key is absent. */
xk_status xk_model_meta(const xk_model *model, const char *key, int *type, const void **value, size_t *size);
/* File format version and the activation arena bytes per sample planned by the converter. */
void xk_model_format(const xk_model *model, uint32_t *major, uint32_t *minor, uint64_t *arena_per_sample);

/* Per-op hook for profiling: called with end = 0 before and end = 1 after op i runs. The
 * engine has no clock of its own (no OS calls in the core); the hook measures. NULL removes. */
typedef void (*xk_op_hook)(void *user, size_t op, int end);
void xk_model_set_hook(xk_model *model, xk_op_hook hook, void *user);

#ifdef __cplusplus
}
#endif
#endif /* XNORKIT_XK_ENGINE_H */
