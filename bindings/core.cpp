// xnorkit._core: the thin nanobind layer over the C core. Buffers in (numpy arrays, already
// validated for dtype/contiguity by xnorkit.kernels), status codes out as Python exceptions.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>

extern "C" {
#include "xnorkit/xk.h"
}

#include "common.h"

namespace nb = nanobind;

void xk_check(xk_status s) {
  if (s == XK_OK) return;
  std::string msg = xk_last_error();
  switch (s) {
    case XK_ERR_ARGUMENT:
    case XK_ERR_SHAPE:
    case XK_ERR_FORMAT:
    case XK_ERR_MEMORY: throw nb::value_error(msg.c_str());
    case XK_ERR_UNSUPPORTED: throw std::runtime_error("unsupported: " + msg);
    default: throw std::runtime_error(msg);
  }
}

using u8c = nb::ndarray<const uint8_t, nb::c_contig, nb::device::cpu>;
using u8w = nb::ndarray<uint8_t, nb::c_contig, nb::device::cpu>;

static void pack_f32(nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> x, u8w out) {
  size_t rows = x.shape(0), k = x.shape(1);
  size_t rb = xk_packed_row_bytes(k);
  if (out.size() < rows * rb) throw nb::value_error("pack: output buffer too small");
  nb::gil_scoped_release nogil;
  xk_check(xk_pack_f32(x.data(), rows, k, k, out.data(), rb));
}

static void pack_i8(nb::ndarray<const int8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu> x, u8w out) {
  size_t rows = x.shape(0), k = x.shape(1);
  size_t rb = xk_packed_row_bytes(k);
  if (out.size() < rows * rb) throw nb::value_error("pack: output buffer too small");
  nb::gil_scoped_release nogil;
  xk_check(xk_pack_i8(x.data(), rows, k, k, out.data(), rb));
}

static void unpack_f32(u8c bits, size_t rows, size_t k, nb::ndarray<float, nb::c_contig, nb::device::cpu> out) {
  size_t rb = xk_packed_row_bytes(k);
  if (bits.size() < rows * rb || out.size() < rows * k) throw nb::value_error("unpack: buffer too small");
  xk_check(xk_unpack_f32(bits.data(), rows, k, rb, out.data(), k));
}

static size_t panel_size(int isa, size_t n, size_t k) { return xk_bgemm_panel_size((xk_isa)isa, n, k); }

static void pack_panel(int isa, u8c b, size_t n, size_t k, u8w panel) {
  size_t rb = xk_packed_row_bytes(k);
  if (b.size() < n * rb) throw nb::value_error("pack_panel: weight bits buffer too small");
  xk_check(xk_bgemm_pack_panel((xk_isa)isa, b.data(), n, k, rb, panel.data(), panel.size()));
}

// out_kind: 0 int32, 1 float, 2 bits. `c` is a raw byte view of the output buffer.
static void bgemm(size_t m, size_t n, size_t k, u8c a, size_t lda, u8c panel, int out_kind,
                  nb::object scale, nb::object bias, nb::object thr, nb::object flip, u8w c, size_t ldc) {
  using f32c = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
  using i32c = nb::ndarray<const int32_t, nb::c_contig, nb::device::cpu>;
  xk_epilogue ep{};
  ep.kind = (xk_out_kind)out_kind;
  f32c s, b;
  i32c t;
  u8c f;
  if (!scale.is_none()) { s = nb::cast<f32c>(scale); ep.scale = s.data(); }
  if (!bias.is_none()) { b = nb::cast<f32c>(bias); ep.bias = b.data(); }
  if (!thr.is_none()) { t = nb::cast<i32c>(thr); ep.threshold = t.data(); }
  if (!flip.is_none()) { f = nb::cast<u8c>(flip); ep.flip = f.data(); }
  if (a.size() < (m - 1) * lda + xk_packed_row_bytes(k)) throw nb::value_error("bgemm: A buffer too small");
  size_t esz = out_kind == 2 ? 1 : 4;
  size_t row = out_kind == 2 ? xk_packed_row_bytes(n) : n * esz;
  if (c.size() < (m - 1) * ldc * esz + row) throw nb::value_error("bgemm: C buffer too small");
  nb::gil_scoped_release nogil;
  xk_check(xk_bgemm(m, n, k, a.data(), lda, panel.data(), panel.size(), &ep, c.data(), ldc));
}

static double calibrate_ghz() {
  // A chain of dependent integer adds retires one per cycle on every x86/ARM core, so
  // cycles/second = adds/second. Used by benchmarks to report MACs per cycle.
  const uint64_t iters = 200000000ull;
  volatile uint64_t sink;
  uint64_t x = 1;
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < iters; i++) {
#if defined(__GNUC__)
    __asm__ volatile("add $1, %0" : "+r"(x));
#else
    x += 1;
#endif
  }
  auto t1 = std::chrono::steady_clock::now();
  sink = x;
  (void)sink;
  return iters / std::chrono::duration<double>(t1 - t0).count() * 1e-9;
}

NB_MODULE(_core, m) {
  m.doc() = "xnorkit C core (bit packing, binary GEMM, engine)";
  m.def("isa_available", [](int isa) { return xk_isa_available((xk_isa)isa) != 0; });
  m.def("isa_name", [](int isa) { return std::string(xk_isa_name((xk_isa)isa)); });
  m.def("isa_best", []() { return (int)xk_isa_best(); });
  m.def("set_isa", [](int isa) { xk_check(xk_set_isa((xk_isa)isa)); });
  m.def("get_isa", []() { return (int)xk_get_isa(); });
  m.def("last_isa", []() { return (int)xk_last_isa(); });
  m.def("set_num_threads", [](int n) { xk_set_num_threads(n); });
  m.def("get_num_threads", []() { return xk_get_num_threads(); });
  m.def("packed_row_bytes", [](size_t k) { return xk_packed_row_bytes(k); });
  m.def("pack_f32", &pack_f32);
  m.def("pack_i8", &pack_i8);
  m.def("unpack_f32", &unpack_f32);
  m.def("panel_size", &panel_size);
  m.def("pack_panel", &pack_panel);
  m.def("bgemm", &bgemm, nb::arg("m"), nb::arg("n"), nb::arg("k"), nb::arg("a"), nb::arg("lda"),
        nb::arg("panel"), nb::arg("out_kind"), nb::arg("scale").none(), nb::arg("bias").none(),
        nb::arg("thr").none(), nb::arg("flip").none(), nb::arg("c"), nb::arg("ldc"));
  m.def("calibrate_ghz", &calibrate_ghz);
  bind_engine(m);
}
