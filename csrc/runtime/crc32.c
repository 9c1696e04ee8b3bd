/* CRC-32 (IEEE 802.3 / zlib polynomial, reflected), the checksum of the .xk format. */
#include "engine_internal.h"

static uint32_t g_table[256];
static volatile int g_ready = 0;

static void init_table(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    g_table[i] = c;
  }
  g_ready = 1; /* racing initializers write identical values */
}

uint32_t xk_crc32(uint32_t crc, const void *data, size_t n) {
  if (!g_ready) init_table();
  const uint8_t *p = (const uint8_t *)data;
  crc = ~crc;
  for (size_t i = 0; i < n; i++) crc = g_table[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
  return ~crc;
}
