// Bindings of the model engine (csrc/runtime) and of its operators (csrc/ops, exposed as
// xnorkit._core.ops for tests and benchmarks). Thin: arrays in, status codes out as exceptions.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <string>
#include <vector>

#include "common.h"

extern "C" {
#include "ops/xk_ops.h"
#include "xnorkit/xk_engine.h"
}

#include <chrono>

namespace nb = nanobind;

namespace {

template <typename T>
using In = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;

// A numpy array owning freshly allocated, zeroed, 64-byte aligned memory.
template <typename T>
nb::ndarray<nb::numpy, T> new_array(std::vector<size_t> shape) {
  size_t n = 1;
  for (size_t s : shape) n *= s;
  size_t bytes = (n * sizeof(T) + 63) / 64 * 64 + 64;
  void *raw = ::operator new(bytes + 64);
  std::memset(raw, 0, bytes + 64);
  uintptr_t p = (reinterpret_cast<uintptr_t>(raw) + sizeof(void *) + 63) / 64 * 64;
  reinterpret_cast<void **>(p)[-1] = raw;
  nb::capsule owner(reinterpret_cast<void *>(p), [](void *q) noexcept { ::operator delete(reinterpret_cast<void **>(q)[-1]); });
  return nb::ndarray<nb::numpy, T>(reinterpret_cast<T *>(p), shape.size(), shape.data(), owner);
}

// Aligned scratch buffer.
struct Buffer {
  std::vector<uint64_t> words;
  explicit Buffer(size_t bytes) : words((bytes + 7) / 8 + 8, 0) {}
  void *data() { return words.data(); }
  size_t size() const { return words.size() * 8; }
};

xk_conv_shape conv_shape(const std::vector<size_t> &v) {
  if (v.size() != 15) throw nb::value_error("conv shape: expected 15 ints (n,h,w,c,oc,kh,kw,sh,sw,dh,dw,pt,pl,pb,pr)");
  xk_conv_shape s;
  std::memset(&s, 0, sizeof s);
  s.n = v[0]; s.h = v[1]; s.w = v[2]; s.c = v[3]; s.oc = v[4]; s.kh = v[5]; s.kw = v[6];
  s.stride_h = v[7]; s.stride_w = v[8]; s.dil_h = v[9]; s.dil_w = v[10];
  s.pad_t = v[11]; s.pad_l = v[12]; s.pad_b = v[13]; s.pad_r = v[14];
  return s;
}

xk_pool_shape pool_shape(const std::vector<size_t> &v) {
  if (v.size() != 12) throw nb::value_error("pool shape: expected 12 ints (n,h,w,c,kh,kw,sh,sw,pt,pl,pb,pr)");
  xk_pool_shape s;
  s.n = v[0]; s.h = v[1]; s.w = v[2]; s.c = v[3]; s.kh = v[4]; s.kw = v[5]; s.stride_h = v[6]; s.stride_w = v[7];
  s.pad_t = v[8]; s.pad_l = v[9]; s.pad_b = v[10]; s.pad_r = v[11];
  return s;
}

// Output stage parsed from a dict; keeps the arrays alive.
struct Output {
  xk_output o;
  std::vector<nb::object> keep;
  template <typename T>
  const T *arr(nb::dict d, const char *key, size_t need) {
    if (!d.contains(key) || d[key].is_none()) return nullptr;
    auto a = nb::cast<In<T>>(d[key]);
    if (a.size() < need) throw nb::value_error((std::string("output stage: '") + key + "' too short").c_str());
    keep.push_back(nb::cast(a));
    return a.data();
  }
  Output(nb::dict d, size_t n) {
    std::memset(&o, 0, sizeof o);
    std::string kind = d.contains("kind") ? nb::cast<std::string>(d["kind"]) : "float";
    if (kind == "float") o.kind = XK_OUT_FLOAT;
    else if (kind == "int32") o.kind = XK_OUT_INT32;
    else if (kind == "bits") o.kind = XK_OUT_BITS;
    else throw nb::value_error("output kind must be float, int32 or bits");
    o.scale = arr<float>(d, "scale", n);
    o.bias = arr<float>(d, "bias", n);
    o.post_scale = arr<float>(d, "post_scale", n);
    o.post_bias = arr<float>(d, "post_bias", n);
    o.threshold = arr<int32_t>(d, "threshold", n);
    o.flip = arr<uint8_t>(d, "flip", n);
    o.act.kind = d.contains("act") ? (xk_act)nb::cast<int>(d["act"]) : XK_ACT_NONE;
    o.act.lo = d.contains("lo") ? nb::cast<float>(d["lo"]) : -1.0f;
    o.act.hi = d.contains("hi") ? nb::cast<float>(d["hi"]) : 1.0f;
    if (d.contains("alpha") && !d["alpha"].is_none()) {
      auto a = nb::cast<In<float>>(d["alpha"]);
      keep.push_back(nb::cast(a));
      o.act.alpha = a.data();
      o.act.alpha_count = a.size();
    }
  }
};

// Output array for rows x n channels of the stage's kind.
nb::object out_array(const xk_output &o, size_t rows, size_t n, size_t *ldc) {
  switch (o.kind) {
    case XK_OUT_BITS: *ldc = xk_packed_row_bytes(n); return nb::cast(new_array<uint8_t>({rows, *ldc}));
    case XK_OUT_INT32: *ldc = n; return nb::cast(new_array<int32_t>({rows, n}));
    default: *ldc = n; return nb::cast(new_array<float>({rows, n}));
  }
}

void *data_of(nb::object a) { return nb::cast<nb::ndarray<nb::numpy>>(a).data(); }

size_t conv_rows(const xk_conv_shape &s) {
  size_t oh, ow;
  xk_check(xk_conv_out_size(&s, &oh, &ow));
  return s.n * oh * ow;
}

// ---------------------------------------------------------------- binary ops
nb::object bconv2d(std::vector<size_t> shape, int pad, In<uint8_t> w, size_t tap_bits, In<uint8_t> x, nb::dict out) {
  xk_conv_shape s = conv_shape(shape);
  Output o(out, s.oc);
  size_t rows = conv_rows(s);
  if (x.size() < s.n * s.h * s.w * xk_packed_row_bytes(s.c)) throw nb::value_error("bconv2d: input too small");
  if (w.ndim() != 2 || w.shape(0) != s.oc) throw nb::value_error("bconv2d: weights must be (oc, row_bytes) uint8");
  size_t psize = xk_bconv2d_packed_size(&s, (xk_pad_value)pad);
  if (!psize) xk_check(XK_ERR_SHAPE);
  Buffer packed(psize), ws(xk_bconv2d_workspace_size(&s));
  xk_bweights wb = {w.data(), w.shape(1), tap_bits};
  size_t ldc;
  nb::object res = out_array(o.o, rows, s.oc, &ldc);
  void *dst = data_of(res);
  {
    nb::gil_scoped_release nogil;
    xk_check(xk_bconv2d_pack(&s, (xk_pad_value)pad, &wb, packed.data(), packed.size()));
    xk_check(xk_bconv2d_run(&s, packed.data(), packed.size(), x.data(), &o.o, dst, ldc, ws.data(), ws.size()));
  }
  return res;
}

nb::object bdense(size_t n, size_t k, In<uint8_t> w, In<uint8_t> x, nb::dict out) {
  if (w.ndim() != 2) throw nb::value_error("bdense: weights must be (n_out, row_bytes) uint8");
  size_t n_out = w.shape(0);
  Output o(out, n_out);
  if (x.size() < n * xk_packed_row_bytes(k)) throw nb::value_error("bdense: input too small");
  size_t psize = xk_bdense_packed_size(k, n_out);
  if (!psize) xk_check(XK_ERR_SHAPE);
  Buffer packed(psize);
  size_t ldc;
  nb::object res = out_array(o.o, n, n_out, &ldc);
  void *dst = data_of(res);
  nb::gil_scoped_release nogil;
  xk_check(xk_bdense_pack(k, n_out, w.data(), w.shape(1), packed.data(), packed.size()));
  xk_check(xk_bdense_run(n, k, n_out, packed.data(), packed.size(), x.data(), &o.o, dst, ldc));
  return res;
}

nb::object binarize(In<float> x, nb::object t, nb::object flip) {
  if (x.ndim() != 2) throw nb::value_error("binarize: x must be 2-D");
  size_t rows = x.shape(0), c = x.shape(1);
  const float *tp = nullptr;
  const uint8_t *fp = nullptr;
  In<float> ta;
  In<uint8_t> fa;
  if (!t.is_none()) { ta = nb::cast<In<float>>(t); if (ta.size() < c) throw nb::value_error("binarize: t too short"); tp = ta.data(); }
  if (!flip.is_none()) { fa = nb::cast<In<uint8_t>>(flip); if (fa.size() < c) throw nb::value_error("binarize: flip too short"); fp = fa.data(); }
  auto res = new_array<uint8_t>({rows, xk_packed_row_bytes(c)});
  xk_check(xk_binarize(rows, c, x.data(), c, tp, fp, res.data()));
  return nb::cast(res);
}

nb::object bmaxpool2d(std::vector<size_t> shape, In<uint8_t> x, nb::object invert) {
  xk_pool_shape s = pool_shape(shape);
  size_t oh, ow;
  xk_check(xk_pool_out_size(&s, &oh, &ow));
  size_t rb = xk_packed_row_bytes(s.c);
  if (x.size() < s.n * s.h * s.w * rb) throw nb::value_error("bmaxpool2d: input too small");
  In<uint8_t> inv;
  const uint8_t *ip = nullptr;
  if (!invert.is_none()) { inv = nb::cast<In<uint8_t>>(invert); if (inv.size() < rb) throw nb::value_error("bmaxpool2d: invert too short"); ip = inv.data(); }
  auto res = new_array<uint8_t>({s.n * oh * ow, rb});
  xk_check(xk_bmaxpool2d(&s, x.data(), ip, res.data()));
  return nb::cast(res);
}

nb::object bconcat(size_t rows, std::vector<In<uint8_t>> xs, std::vector<size_t> cs) {
  if (xs.size() != cs.size()) throw nb::value_error("bconcat: one channel count per input");
  std::vector<const uint8_t *> ptrs;
  size_t total = 0;
  for (size_t i = 0; i < xs.size(); i++) {
    if (xs[i].size() < rows * xk_packed_row_bytes(cs[i])) throw nb::value_error("bconcat: input too small");
    ptrs.push_back(xs[i].data());
    total += cs[i];
  }
  auto res = new_array<uint8_t>({rows, xk_packed_row_bytes(total)});
  xk_check(xk_bconcat(rows, xs.size(), ptrs.data(), cs.data(), res.data()));
  return nb::cast(res);
}

// ---------------------------------------------------------------- float / int8 ops
nb::object conv2d(std::vector<size_t> shape, In<float> w, In<float> x, nb::dict out, size_t nslots) {
  xk_conv_shape s = conv_shape(shape);
  Output o(out, s.oc);
  size_t rows = conv_rows(s);
  if (x.size() < s.n * s.h * s.w * s.c) throw nb::value_error("conv2d: input too small");
  if (w.size() != s.oc * s.kh * s.kw * s.c) throw nb::value_error("conv2d: weights must hold oc*kh*kw*c floats");
  size_t psize = xk_conv2d_packed_size(&s);
  if (!psize) xk_check(XK_ERR_SHAPE);
  Buffer packed(psize), ws(xk_conv2d_workspace_size(&s, nslots));
  size_t ldc;
  nb::object res = out_array(o.o, rows, s.oc, &ldc);
  void *dst = data_of(res);
  nb::gil_scoped_release nogil;
  xk_check(xk_conv2d_pack(&s, w.data(), packed.data(), packed.size()));
  xk_check(xk_conv2d_run(&s, packed.data(), packed.size(), x.data(), &o.o, dst, ldc, ws.data(), ws.size() - 64));
  return res;
}

nb::object dwconv2d(std::vector<size_t> shape, In<float> w, In<float> x, nb::dict out) {
  xk_conv_shape s = conv_shape(shape);
  Output o(out, s.oc);
  size_t rows = conv_rows(s);
  if (x.size() < s.n * s.h * s.w * s.c) throw nb::value_error("dwconv2d: input too small");
  if (w.size() != s.oc * s.kh * s.kw) throw nb::value_error("dwconv2d: weights must hold kh*kw*oc floats");
  auto res = new_array<float>({rows, s.oc});
  xk_check(xk_dwconv2d_run(&s, w.data(), x.data(), &o.o, res.data(), s.oc));
  return nb::cast(res);
}

nb::object dense(In<float> w, In<float> x, nb::dict out) {
  if (w.ndim() != 2 || x.ndim() != 2 || w.shape(1) != x.shape(1)) throw nb::value_error("dense: w (n_out, k), x (n, k)");
  size_t n = x.shape(0), k = x.shape(1), n_out = w.shape(0);
  Output o(out, n_out);
  Buffer packed(xk_dense_packed_size(k, n_out));
  size_t ldc;
  nb::object res = out_array(o.o, n, n_out, &ldc);
  void *dst = data_of(res);
  nb::gil_scoped_release nogil;
  xk_check(xk_dense_pack(k, n_out, w.data(), packed.data(), packed.size()));
  xk_check(xk_dense_run(n, k, n_out, packed.data(), packed.size(), x.data(), k, &o.o, dst, ldc));
  return res;
}

nb::object qconv2d(std::vector<size_t> shape, In<int8_t> w, In<float> x, float scale, int zp, nb::dict out, size_t nslots) {
  xk_conv_shape s = conv_shape(shape);
  Output o(out, s.oc);
  size_t rows = conv_rows(s);
  if (x.size() < s.n * s.h * s.w * s.c) throw nb::value_error("qconv2d: input too small");
  if (w.size() != s.oc * s.kh * s.kw * s.c) throw nb::value_error("qconv2d: weights must hold oc*kh*kw*c int8");
  size_t psize = xk_qconv2d_packed_size(&s);
  if (!psize) xk_check(XK_ERR_SHAPE);
  Buffer packed(psize), ws(xk_qconv2d_workspace_size(&s, nslots));
  size_t ldc;
  nb::object res = out_array(o.o, rows, s.oc, &ldc);
  void *dst = data_of(res);
  xk_quant q = {scale, zp};
  nb::gil_scoped_release nogil;
  xk_check(xk_qconv2d_pack(&s, w.data(), packed.data(), packed.size()));
  xk_check(xk_qconv2d_run(&s, packed.data(), packed.size(), x.data(), q, &o.o, dst, ldc, ws.data(), ws.size() - 64));
  return res;
}

nb::object qdwconv2d(std::vector<size_t> shape, In<int8_t> w, In<float> x, float scale, int zp, nb::dict out) {
  xk_conv_shape s = conv_shape(shape);
  Output o(out, s.oc);
  size_t rows = conv_rows(s);
  if (x.size() < s.n * s.h * s.w * s.c) throw nb::value_error("qdwconv2d: input too small");
  if (w.size() != s.oc * s.kh * s.kw) throw nb::value_error("qdwconv2d: weights must hold kh*kw*oc int8");
  Buffer ws(xk_qdwconv2d_workspace_size(&s));
  auto res = new_array<float>({rows, s.oc});
  xk_quant q = {scale, zp};
  xk_check(xk_qdwconv2d_run(&s, w.data(), x.data(), q, &o.o, res.data(), s.oc, ws.data(), ws.size()));
  return nb::cast(res);
}

nb::object qdense(In<int8_t> w, In<float> x, float scale, int zp, nb::dict out) {
  if (w.ndim() != 2 || x.ndim() != 2 || w.shape(1) != x.shape(1)) throw nb::value_error("qdense: w (n_out, k), x (n, k)");
  size_t n = x.shape(0), k = x.shape(1), n_out = w.shape(0);
  Output o(out, n_out);
  Buffer packed(xk_qdense_packed_size(k, n_out)), ws(xk_qdense_workspace_size(n, k));
  size_t ldc;
  nb::object res = out_array(o.o, n, n_out, &ldc);
  void *dst = data_of(res);
  xk_quant q = {scale, zp};
  nb::gil_scoped_release nogil;
  xk_check(xk_qdense_pack(k, n_out, w.data(), packed.data(), packed.size()));
  xk_check(xk_qdense_run(n, k, n_out, packed.data(), packed.size(), x.data(), q, &o.o, dst, ldc, ws.data(), ws.size()));
  return res;
}

nb::object pool2d(std::vector<size_t> shape, In<float> x, int kind, int include_pad) {
  xk_pool_shape s = pool_shape(shape);
  size_t oh, ow;
  xk_check(xk_pool_out_size(&s, &oh, &ow));
  if (x.size() < s.n * s.h * s.w * s.c) throw nb::value_error("pool2d: input too small");
  auto res = new_array<float>({s.n * oh * ow, s.c});
  if (kind == 0) xk_check(xk_maxpool2d(&s, x.data(), res.data()));
  else xk_check(xk_avgpool2d(&s, include_pad, x.data(), res.data()));
  return nb::cast(res);
}

xk_act_params act_params(nb::dict d, std::vector<nb::object> &keep) {
  xk_act_params a;
  std::memset(&a, 0, sizeof a);
  a.kind = d.contains("act") ? (xk_act)nb::cast<int>(d["act"]) : XK_ACT_NONE;
  a.lo = d.contains("lo") ? nb::cast<float>(d["lo"]) : -1.0f;
  a.hi = d.contains("hi") ? nb::cast<float>(d["hi"]) : 1.0f;
  if (d.contains("alpha") && !d["alpha"].is_none()) {
    auto al = nb::cast<In<float>>(d["alpha"]);
    keep.push_back(nb::cast(al));
    a.alpha = al.data();
    a.alpha_count = al.size();
  }
  return a;
}

// ---------------------------------------------------------------- the model engine
// Owns a copy-free reference to the file bytes (a numpy uint8 array kept alive) and one
// 64-byte aligned arena holding everything the model needs.
class Engine {
 public:
  Engine(nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> data, uint32_t max_batch,
         uint32_t num_threads, bool fuse)
      : data_(data) {
    opt_.max_batch = max_batch ? max_batch : 1;
    opt_.num_threads = num_threads;
    opt_.flags = fuse ? 0u : XK_MODEL_NO_FUSION;
    size_t need = 0;
    {
      nb::gil_scoped_release nogil;
      xk_check(xk_model_arena_size(data_.data(), data_.size(), &opt_, &need));
    }
    arena_.assign(need / 8 + 16, 0);
    uint8_t *base = reinterpret_cast<uint8_t *>(arena_.data());
    uint8_t *aligned = reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(base) + 63) / 64 * 64);
    arena_bytes_ = need;
    nb::gil_scoped_release nogil;
    xk_check(xk_model_load(data_.data(), data_.size(), &opt_, aligned, arena_.size() * 8 - (aligned - base), &model_));
  }

  size_t arena_bytes() const { return arena_bytes_; }
  uint32_t max_batch() const { return opt_.max_batch; }

  // inputs: float32 arrays in the stored layout with a leading batch dimension; an input with
  // nchw[i] set is an NCHW image batch of a stored NHWC input, transposed straight into the
  // arena (xk_model_input_buffer: no temporary array and no copy).
  std::vector<nb::object> run(std::vector<nb::ndarray<const float, nb::c_contig, nb::device::cpu>> inputs, size_t batch,
                              bool profile, std::vector<bool> nchw) {
    size_t nin = xk_model_num_inputs(model_), nout = xk_model_num_outputs(model_);
    if (inputs.size() != nin) throw nb::value_error(("model has " + std::to_string(nin) + " input(s), got " + std::to_string(inputs.size())).c_str());
    if (!nchw.empty() && nchw.size() != nin) throw nb::value_error("nchw: one flag per input");
    if (batch < 1 || batch > opt_.max_batch)
      throw nb::value_error(("batch " + std::to_string(batch) + " outside 1.." + std::to_string(opt_.max_batch)).c_str());
    std::vector<const float *> in_ptrs;
    std::vector<xk_tensor_info> in_info(nin);
    for (size_t i = 0; i < nin; i++) {
      xk_tensor_info &ti = in_info[i];
      xk_check(xk_model_input(model_, i, &ti));
      if (inputs[i].size() != batch * ti.count)
        throw nb::value_error(("input " + std::to_string(i) + " '" + ti.name + "': expected " + std::to_string(batch) + " x " +
                               std::to_string(ti.count) + " floats, got " + std::to_string(inputs[i].size())).c_str());
      if (!nchw.empty() && nchw[i] && (ti.ndim != 4 || inputs[i].ndim() != 4 || inputs[i].shape(1) != ti.shape[3] ||
                                       inputs[i].shape(2) != ti.shape[1] || inputs[i].shape(3) != ti.shape[2]))
        throw nb::value_error(("input " + std::to_string(i) + " '" + ti.name + "': NCHW shape does not match").c_str());
      in_ptrs.push_back(inputs[i].data());
    }
    std::vector<nb::object> outs;
    std::vector<float *> out_ptrs;
    for (size_t i = 0; i < nout; i++) {
      xk_tensor_info ti;
      xk_check(xk_model_output(model_, i, &ti));
      std::vector<size_t> shape{batch};
      for (int d = 1; d < ti.ndim; d++) shape.push_back(ti.shape[d]);
      auto a = new_array<float>(shape);
      out_ptrs.push_back(a.data());
      outs.push_back(nb::cast(a));
    }
    size_t nops = xk_model_num_ops(model_);
    times_.assign(nops, 0.0);
    {
      nb::gil_scoped_release nogil;
      for (size_t i = 0; i < nin && !nchw.empty(); i++) {
        if (!nchw[i]) continue;
        float *buf = xk_model_input_buffer(model_, i, batch);
        const xk_tensor_info &ti = in_info[i];
        xk_check(xk_nchw_to_nhwc(batch, ti.shape[3], ti.shape[1], ti.shape[2], in_ptrs[i], buf));
        in_ptrs[i] = buf;
      }
      if (profile) xk_model_set_hook(model_, &Engine::hook, this);
      xk_status st = xk_model_run_multi(model_, batch, in_ptrs.data(), out_ptrs.data());
      xk_model_set_hook(model_, nullptr, nullptr);
      xk_check(st);
    }
    return outs;
  }

  std::vector<double> last_times() const { return times_; }

  nb::dict tensor_dict(const xk_tensor_info &t) const {
    nb::dict d;
    d["name"] = std::string(t.name);
    static const char *dt[] = {"?", "float32", "int8", "int32", "uint8", "bits"};
    d["dtype"] = std::string(t.dtype >= 1 && t.dtype <= 5 ? dt[t.dtype] : "?");
    std::vector<size_t> shape;
    for (int i = 0; i < t.ndim; i++) shape.push_back(t.shape[i]);
    d["shape"] = shape;
    static const char *lay[] = {"same", "nchw", "ncl"};
    d["torch_layout"] = std::string(t.torch_layout >= 0 && t.torch_layout <= 2 ? lay[t.torch_layout] : "?");
    d["count"] = t.count;
    return d;
  }

  nb::dict info() const {
    nb::dict d;
    nb::list ins, outs, ops;
    for (size_t i = 0; i < xk_model_num_inputs(model_); i++) {
      xk_tensor_info t;
      xk_check(xk_model_input(model_, i, &t));
      ins.append(tensor_dict(t));
    }
    for (size_t i = 0; i < xk_model_num_outputs(model_); i++) {
      xk_tensor_info t;
      xk_check(xk_model_output(model_, i, &t));
      outs.append(tensor_dict(t));
    }
    for (size_t i = 0; i < xk_model_num_ops(model_); i++) {
      xk_op_info o;
      xk_check(xk_model_op(model_, i, &o));
      nb::dict od;
      od["name"] = std::string(o.name);
      od["kind"] = std::string(o.kind);
      od["precision"] = std::string(o.precision);
      od["output"] = tensor_dict(o.output);
      od["macs"] = o.macs;
      od["weight_bytes"] = o.weight_bytes;
      od["fused"] = o.fused != 0;
      ops.append(od);
    }
    uint32_t major, minor;
    uint64_t per_sample;
    xk_model_format(model_, &major, &minor, &per_sample);
    d["inputs"] = ins;
    d["outputs"] = outs;
    d["ops"] = ops;
    d["format_version"] = std::to_string(major) + "." + std::to_string(minor);
    d["activation_bytes_per_sample"] = per_sample;
    d["arena_bytes"] = arena_bytes_;
    d["max_batch"] = opt_.max_batch;
    return d;
  }

  nb::object meta(const std::string &key) const {
    int type;
    const void *value;
    size_t size;
    if (xk_model_meta(model_, key.c_str(), &type, &value, &size) != XK_OK) return nb::none();
    nb::dict d;
    d["type"] = type;
    d["bytes"] = nb::bytes(static_cast<const char *>(value), size);
    return d;
  }

 private:
  static void hook(void *user, size_t op, int end) {
    Engine *e = static_cast<Engine *>(user);
    auto now = std::chrono::steady_clock::now();
    if (!end) e->t0_ = now;
    else if (op < e->times_.size()) e->times_[op] = std::chrono::duration<double>(now - e->t0_).count();
  }

  nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> data_;
  xk_model_options opt_{};
  std::vector<uint64_t> arena_;
  size_t arena_bytes_ = 0;
  xk_model *model_ = nullptr;
  std::vector<double> times_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace

void bind_engine(nb::module_ &m) {
  nb::class_<Engine>(m, "Engine")
      .def(nb::init<nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>, uint32_t, uint32_t, bool>(),
           nb::arg("data"), nb::arg("max_batch") = 1, nb::arg("num_threads") = 0, nb::arg("fuse") = true)
      .def("run", &Engine::run, nb::arg("inputs"), nb::arg("batch"), nb::arg("profile") = false,
           nb::arg("nchw") = std::vector<bool>())
      .def("last_times", &Engine::last_times)
      .def("info", &Engine::info)
      .def("meta", &Engine::meta)
      .def_prop_ro("arena_bytes", &Engine::arena_bytes)
      .def_prop_ro("max_batch", &Engine::max_batch);
  m.def("model_arena_size", [](nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> data,
                               uint32_t max_batch, uint32_t num_threads) {
    xk_model_options o{max_batch, num_threads, 0};
    size_t need = 0;
    xk_check(xk_model_arena_size(data.data(), data.size(), &o, &need));
    return need;
  });

  m.def("nchw_to_nhwc", [](nb::ndarray<const float, nb::ndim<4>, nb::c_contig, nb::device::cpu> x) {
    const size_t n = x.shape(0), c = x.shape(1), h = x.shape(2), w = x.shape(3);
    auto y = new_array<float>({n, h, w, c});
    {
      nb::gil_scoped_release nogil;
      xk_check(xk_nchw_to_nhwc(n, c, h, w, x.data(), y.data()));
    }
    return y;
  }, nb::arg("x"), "NCHW float32 -> a new NHWC array (the engine's image layout).");

  nb::module_ ops = m.def_submodule("ops", "engine operators (tests and benchmarks)");
  ops.def("bconv2d", &bconv2d);
  ops.def("bdense", &bdense);
  ops.def("binarize", &binarize, nb::arg("x"), nb::arg("t").none(), nb::arg("flip").none());
  ops.def("bmaxpool2d", &bmaxpool2d, nb::arg("shape"), nb::arg("x"), nb::arg("invert").none());
  ops.def("bconcat", &bconcat);
  ops.def("conv2d", &conv2d);
  ops.def("dwconv2d", &dwconv2d);
  ops.def("dense", &dense);
  ops.def("qconv2d", &qconv2d);
  ops.def("qdense", &qdense);
  ops.def("qdwconv2d", &qdwconv2d);
  ops.def("quantize1", [](float x, float scale, int zp) { return (int)xk_quantize1(x, xk_quant{scale, zp}); });
  ops.def("pool2d", &pool2d);
  ops.def("global_avgpool", [](In<float> x, size_t n, size_t hw, size_t c) {
    if (x.size() < n * hw * c) throw nb::value_error("global_avgpool: input too small");
    auto res = new_array<float>({n, c});
    xk_check(xk_global_avgpool(n, hw, c, x.data(), res.data()));
    return nb::cast(res);
  });
  ops.def("add", [](In<float> a, In<float> b, nb::dict act, size_t c) {
    if (a.size() != b.size() || c == 0 || a.size() % c) throw nb::value_error("add: sizes differ or not a multiple of c");
    std::vector<nb::object> keep;
    xk_act_params p = act_params(act, keep);
    auto res = new_array<float>({a.size()});
    xk_check(xk_add(a.size() / c, c, a.data(), b.data(), &p, res.data()));
    return nb::cast(res);
  });
  ops.def("concat", [](size_t rows, std::vector<In<float>> xs, std::vector<size_t> cs) {
    if (xs.size() != cs.size()) throw nb::value_error("concat: one channel count per input");
    std::vector<const float *> ptrs;
    size_t total = 0;
    for (size_t i = 0; i < xs.size(); i++) {
      if (xs[i].size() < rows * cs[i]) throw nb::value_error("concat: input too small");
      ptrs.push_back(xs[i].data());
      total += cs[i];
    }
    auto res = new_array<float>({rows, total});
    xk_check(xk_concat(rows, xs.size(), ptrs.data(), cs.data(), res.data()));
    return nb::cast(res);
  });
  ops.def("activation", [](In<float> x, size_t c, nb::dict act) {
    std::vector<nb::object> keep;
    xk_act_params p = act_params(act, keep);
    size_t rows = x.size() / c;
    auto res = new_array<float>({rows, c});
    xk_check(xk_activation(rows, c, x.data(), &p, res.data()));
    return nb::cast(res);
  });
  ops.def("affine", [](In<float> x, size_t c, In<float> scale, In<float> bias) {
    if (scale.size() < c || bias.size() < c) throw nb::value_error("affine: scale/bias too short");
    size_t rows = x.size() / c;
    auto res = new_array<float>({rows, c});
    xk_check(xk_affine(rows, c, x.data(), scale.data(), bias.data(), res.data()));
    return nb::cast(res);
  });
  ops.def("softmax", [](In<float> x, size_t c) {
    size_t rows = x.size() / c;
    auto res = new_array<float>({rows, c});
    xk_check(xk_softmax(rows, c, x.data(), res.data()));
    return nb::cast(res);
  });
}
