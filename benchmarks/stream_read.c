/* A plain streaming read of a buffer (benchmarks/batch1_bound.py): 64-byte loads XORed into two
 * accumulators, so the loop is bound by the memory system, not by its instructions. Portable C
 * (GCC / Clang vector extensions); the compiler picks the widest loads the flags allow. */
#include <stddef.h>
#include <stdint.h>

typedef uint64_t v8u64 __attribute__((vector_size(64), aligned(64)));

/* Reads bytes (a multiple of 128) from p (64-byte aligned) once; returns a value that depends on
 * every byte, so the loads are not optimized away. */
uint64_t xk_stream_read(const void *p, size_t bytes) {
  const v8u64 *v = (const v8u64 *)p;
  v8u64 a = {0}, b = {0};
  for (size_t i = 0; i < bytes / 64; i += 2) {
    a ^= v[i];
    b ^= v[i + 1];
  }
  a ^= b;
  uint64_t r = 0;
  for (int i = 0; i < 8; i++) r ^= a[i];
  return r;
}
