/* Internal declarations of the model engine (csrc/runtime/model.c). */
#ifndef XNORKIT_ENGINE_INTERNAL_H
#define XNORKIT_ENGINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "../ops/xk_ops.h"
#include "../xk_internal.h"
#include "xnorkit/xk_engine.h"
#include "xnorkit/xk_format.h"

/* CRC-32 (zlib's crc32(crc, data, n); start with crc = 0). */
uint32_t xk_crc32(uint32_t crc, const void *data, size_t n);

#endif
