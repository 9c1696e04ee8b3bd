/* CPU feature detection and ISA selection: one table of kernel descriptors, chosen once;
 * XK_ISA=scalar|avx2|avx512|neon forces a path. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../xk_internal.h"

#ifdef XK_EMULATE_AVX512
/* Test builds only: the AVX-512 kernel compiled against SIMDe's portable AVX-512, so its logic is
 * verified bit-exactly on CPUs without AVX-512 (see tests/test_c_core.py). */
extern const xk_bgemm_ukernel_desc xk_bgemm_avx512_emulated;
#endif

static const char *const kNames[XK_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};

static const xk_bgemm_ukernel_desc *compiled(xk_isa isa) {
  switch (isa) {
    case XK_ISA_SCALAR: return &xk_bgemm_scalar;
#ifdef XK_HAVE_AVX2
    case XK_ISA_AVX2: return &xk_bgemm_avx2;
#endif
#if defined(XK_EMULATE_AVX512)
    case XK_ISA_AVX512: return &xk_bgemm_avx512_emulated;
#elif defined(XK_HAVE_AVX512)
    case XK_ISA_AVX512: return &xk_bgemm_avx512;
#endif
#ifdef XK_HAVE_NEON
    case XK_ISA_NEON: return &xk_bgemm_neon;
#endif
    default: return NULL;
  }
}

static int cpu_has(xk_isa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (isa == XK_ISA_AVX2) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
  }
#endif
  switch (isa) {
    case XK_ISA_SCALAR: return 1;
#if defined(XK_EMULATE_AVX512)
    case XK_ISA_AVX512: return 1;
#elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    case XK_ISA_AVX512:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vpopcntdq");
#endif
#if defined(__aarch64__)
    case XK_ISA_NEON: return 1; /* Advanced SIMD is mandatory on AArch64 */
#endif
    default: return 0;
  }
}

int xk_cpu_has_avx512_vnni(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(XK_EMULATE_AVX512)
  static _Atomic int has = -1; /* asked once per op call: cached */
  int h = atomic_load(&has);
  if (h < 0) {
    __builtin_cpu_init();
    h = __builtin_cpu_supports("avx512vnni") != 0;
    atomic_store(&has, h);
  }
  return h;
#else
  return 0;
#endif
}

const char *xk_isa_name(xk_isa isa) {
  return (isa >= 0 && isa < XK_ISA_COUNT) ? kNames[isa] : (isa == XK_ISA_AUTO ? "auto" : "?");
}

xk_status xk_isa_from_name(const char *name, xk_isa *out) {
  if (!name || !out) return xk_fail(XK_ERR_ARGUMENT, "xk_isa_from_name: null argument");
  if (strcmp(name, "auto") == 0) { *out = XK_ISA_AUTO; return XK_OK; }
  for (int i = 0; i < XK_ISA_COUNT; i++)
    if (strcmp(name, kNames[i]) == 0) { *out = (xk_isa)i; return XK_OK; }
  return xk_fail(XK_ERR_ARGUMENT, "unknown ISA '%s' (expected one of: auto, scalar, avx2, avx512, neon)", name);
}

int xk_isa_available(xk_isa isa) {
  if (isa < 0 || isa >= XK_ISA_COUNT) return 0;
  return compiled(isa) != NULL && cpu_has(isa);
}

xk_isa xk_isa_best(void) {
  static const xk_isa order[] = {XK_ISA_AVX512, XK_ISA_AVX2, XK_ISA_NEON, XK_ISA_SCALAR};
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
    if (xk_isa_available(order[i])) return order[i];
  return XK_ISA_SCALAR;
}

static _Atomic int g_isa = -2; /* -2: not resolved yet */
static XK_THREAD_LOCAL int g_last_isa = -1;

xk_status xk_set_isa(xk_isa isa) {
  if (isa == XK_ISA_AUTO) {
    const char *env = getenv("XK_ISA");
    xk_isa forced = XK_ISA_AUTO;
    if (env && *env && xk_isa_from_name(env, &forced) != XK_OK)
      return xk_fail(XK_ERR_ARGUMENT, "XK_ISA='%s' is not an ISA (expected auto, scalar, avx2, avx512 or neon)", env);
    isa = forced == XK_ISA_AUTO ? xk_isa_best() : forced;
  }
  if (!xk_isa_available(isa))
    return xk_fail(XK_ERR_UNSUPPORTED, "ISA '%s' is not available on this CPU/build (best: %s)",
                   xk_isa_name(isa), xk_isa_name(xk_isa_best()));
  atomic_store(&g_isa, (int)isa);
  return XK_OK;
}

xk_isa xk_get_isa(void) {
  int isa = atomic_load(&g_isa);
  if (isa == -2) {
    if (xk_set_isa(XK_ISA_AUTO) != XK_OK) atomic_store(&g_isa, (int)xk_isa_best());
    isa = atomic_load(&g_isa);
  }
  return (xk_isa)isa;
}

const xk_bgemm_ukernel_desc *xk_ukernel_for(xk_isa isa) {
  return xk_isa_available(isa) ? compiled(isa) : NULL;
}

/* A family's variant v when it exists, takes rows of kwords words (<= max_kwords) and the
 * environment variable `env` (benchmarks, tests) is unset; read once, cached in *off. */
static int variant_applies(const xk_bgemm_ukernel_desc *v, size_t max_kwords, size_t kwords, const char *env,
                           int *off) {
  if (*off < 0) *off = getenv(env) != NULL;
  return v && kwords <= max_kwords && !*off;
}

const xk_bgemm_ukernel_desc *xk_ukernel_for_k(xk_isa isa, size_t kwords) {
  const xk_bgemm_ukernel_desc *d = xk_ukernel_for(isa);
  static int off = -1; /* XK_NO_SMALL_K=1: always the main kernel */
  return d && variant_applies(d->small_k, d->small_k_max_kwords, kwords, "XK_NO_SMALL_K", &off) ? d->small_k : d;
}

const xk_bgemm_ukernel_desc *xk_ukernel_for_conv(xk_isa isa, size_t kwords) {
  const xk_bgemm_ukernel_desc *d = xk_ukernel_for(isa);
  static int off = -1; /* XK_NO_CONV_KERNEL=1: convolutions take the dense layers' kernel */
  if (d && variant_applies(d->conv, d->conv_max_kwords, kwords, "XK_NO_CONV_KERNEL", &off)) return d->conv;
  return xk_ukernel_for_k(isa, kwords);
}

void xk_note_isa(xk_isa isa) { g_last_isa = (int)isa; }
xk_isa xk_last_isa(void) { return (xk_isa)g_last_isa; }
