"""The model engine (csrc/runtime/model.c) through xnorkit.Model: graphs written with the
independent test writer (xkfile.py), checked against the same ops run one by one and against
numpy; batches, layouts, profiling, metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xnorkit
import xnorkit.kernels as xk
from xnorkit import _core

import xkfile as X
from engine_util import conv_shape, pack_pm1, rand_pm1, unpack_pm1

ops = _core.ops


def binary_cnn(rng, h=8, w=8):
    """conv(f32 -> bits) -> bconv(pad 0, bits) -> bit maxpool (invert) -> bconv(pad +1, float,
    relu) -> affine -> sign -> flatten bits -> bdense(float) -> dense -> softmax."""
    b = X.Builder()
    P = {}
    P["w0"] = rng.normal(size=(64, 3, 3, 3)).astype(np.float32)
    P["s0"] = rng.normal(size=64).astype(np.float32)
    P["b0"] = rng.normal(size=64).astype(np.float32)
    P["w1"] = rand_pm1(rng, (65, 3, 3, 64))
    P["t1"] = rng.integers(-20, 20, size=65).astype(np.int32)
    P["f1"] = (rng.random(65) < 0.3).astype(np.uint8)
    P["inv"] = rng.random(65) < 0.5
    P["w2"] = rand_pm1(rng, (32, 3, 3, 65))
    P["s2"] = rng.random(32).astype(np.float32) * 0.1
    P["b2"] = rng.normal(size=32).astype(np.float32)
    P["as"] = rng.normal(size=32).astype(np.float32)
    P["ab"] = rng.normal(size=32).astype(np.float32)
    hh, ww = h // 2, w // 2
    P["w3"] = rand_pm1(rng, (20, hh * ww * 32))
    P["w4"] = rng.normal(size=(10, 20)).astype(np.float32)
    P["b4"] = rng.normal(size=10).astype(np.float32)

    x = b.act("input", X.F32, [1, h, w, 3], layout=1)
    t1 = b.act("conv0", X.BITS, [1, h, w, 64])
    b.op("conv2d", "conv0", [x], t1, b.const("conv0.weight", P["w0"]),
         dict(kind=X.OUT_BITS, scale=b.const("conv0.scale", P["s0"]), bias=b.const("conv0.bias", P["b0"])),
         X.conv_params(3, 3, pads=(1, 1, 1, 1)))
    t2 = b.act("bconv1", X.BITS, [1, h, w, 65])
    b.op("bconv2d", "bconv1", [t1], t2, b.const("bconv1.weight", P["w1"].reshape(65, -1), X.BITS),
         dict(kind=X.OUT_BITS, threshold=b.const("bconv1.thr", P["t1"]), flip=b.const("bconv1.flip", P["f1"])),
         X.conv_params(3, 3, pads=(1, 1, 1, 1), pad_value=0))
    t3 = b.act("pool", X.BITS, [1, hh, ww, 65])
    b.op("maxpool2d", "pool", [t2], t3, params=X.pool_params(2, 2, (2, 2),
         invert=b.const("pool.invert", np.where(P["inv"], -1.0, 1.0)[None], X.BITS, shape=[65])))
    t4 = b.act("bconv2", X.F32, [1, hh, ww, 32])
    b.op("bconv2d", "bconv2", [t3], t4, b.const("bconv2.weight", P["w2"].reshape(32, -1), X.BITS),
         dict(kind=X.OUT_FLOAT, act=1, scale=b.const("bconv2.scale", P["s2"]), bias=b.const("bconv2.bias", P["b2"])),
         X.conv_params(3, 3, pads=(1, 1, 1, 1), pad_value=1))
    t5 = b.act("bn", X.F32, [1, hh, ww, 32])
    b.op("affine", "bn", [t4], t5, params=X.affine_params(b.const("bn.scale", P["as"]), b.const("bn.bias", P["ab"])))
    t6 = b.act("sign", X.BITS, [1, hh, ww, 32])
    b.op("sign", "sign", [t5], t6, params=X.sign_params())
    t7 = b.act("flatten", X.BITS, [1, hh * ww * 32])
    b.op("flatten", "flatten", [t6], t7, params=X.flatten_params(0))
    t8 = b.act("fc1", X.F32, [1, 20])
    b.op("bdense", "fc1", [t7], t8, b.const("fc1.weight", P["w3"], X.BITS), dict(kind=X.OUT_FLOAT), X.dense_params())
    t9 = b.act("fc2", X.F32, [1, 10])
    b.op("dense", "fc2", [t8], t9, b.const("fc2.weight", P["w4"]),
         dict(kind=X.OUT_FLOAT, bias=b.const("fc2.bias", P["b4"])), X.dense_params())
    t10 = b.act("softmax", X.F32, [1, 10])
    b.op("softmax", "softmax", [t9], t10)
    b.inputs, b.outputs = [x], [t10]
    b.add_meta("labels", 1, "\n".join(f"class{i}" for i in range(10)).encode())
    b.add_meta("input_mean", 3, np.array([0.5, 0.25, 0.0], np.float32).tobytes(), count=3)
    return b, P


def chain_reference(P, x_nhwc):
    """The same graph, op by op through xnorkit._core.ops (each op is tested against torch)."""
    n, h, w, _ = x_nhwc.shape
    hh, ww = h // 2, w // 2
    t1 = ops.conv2d(conv_shape(n, h, w, 3, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1), P["w0"], x_nhwc,
                    {"kind": "bits", "scale": P["s0"], "bias": P["b0"]}, 1)
    t2 = ops.bconv2d(conv_shape(n, h, w, 64, 65, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 0, pack_pm1(P["w1"].reshape(65, -1)),
                     64, t1, {"kind": "bits", "threshold": P["t1"], "flip": P["f1"]})
    t3 = ops.bmaxpool2d([n, h, w, 65, 2, 2, 2, 2, 0, 0, 0, 0], t2, pack_pm1(np.where(P["inv"], -1.0, 1.0)[None]).ravel())
    t4 = ops.bconv2d(conv_shape(n, hh, ww, 65, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, pack_pm1(P["w2"].reshape(32, -1)),
                     65, t3, {"kind": "float", "act": 1, "scale": P["s2"], "bias": P["b2"]})
    t5 = ops.affine(t4, 32, P["as"], P["ab"])
    bits = unpack_pm1(ops.binarize(t5, None, None), 32).reshape(n, -1)
    t8 = (bits.astype(np.float64) @ P["w3"].T.astype(np.float64)).astype(np.float32)
    t9 = ops.dense(P["w4"], t8, {"kind": "float", "bias": P["b4"]})
    return ops.softmax(t9, 10)


@pytest.fixture(scope="module")
def cnn():
    rng = np.random.default_rng(0)
    b, P = binary_cnn(rng)
    return b.build(), P


@pytest.mark.parametrize("batch", [1, 3])
def test_engine_matches_op_chain(cnn, batch):
    data, P = cnn
    m = xnorkit.Model(data, max_batch=4)
    x = np.random.default_rng(batch).normal(size=(batch, 3, 8, 8)).astype(np.float32)  # NCHW
    y = m.run(x)
    ref = chain_reference(P, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    assert y.shape == (batch, 10)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-5)


def test_batches_are_independent_and_chunked(cnn):
    data, _ = cnn
    x = np.random.default_rng(7).normal(size=(5, 3, 8, 8)).astype(np.float32)
    one = np.concatenate([xnorkit.Model(data, max_batch=1).run(x[i:i + 1]) for i in range(5)])
    for mb in (2, 5, 8):
        np.testing.assert_array_equal(xnorkit.Model(data, max_batch=mb).run(x), one)


def test_torch_in_torch_out_and_layouts(cnn):
    data, _ = cnn
    m = xnorkit.Model(data)
    x = torch.randn(2, 3, 8, 8)
    y = m(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 10)
    y2 = m.run(x.permute(0, 2, 3, 1).contiguous().numpy(), layout="stored")
    np.testing.assert_array_equal(y.numpy(), y2)
    with pytest.raises(ValueError, match=r"expected \(N, 3, 8, 8\) \(NCHW\)"):
        m.run(np.zeros((1, 8, 8, 3), np.float32))


def test_threads_give_identical_results(cnn):
    data, _ = cnn
    x = np.random.default_rng(3).normal(size=(4, 3, 8, 8)).astype(np.float32)
    a = xnorkit.Model(data, num_threads=1, max_batch=4).run(x)
    b = xnorkit.Model(data, num_threads=2, max_batch=4).run(x)
    np.testing.assert_array_equal(a, b)


def test_info_meta_profile(cnn):
    data, _ = cnn
    m = xnorkit.Model(data)
    info = m.info()
    kinds = [o["kind"] for o in info["ops"]]
    assert kinds == ["conv2d", "bconv2d", "maxpool2d", "bconv2d", "affine", "sign", "flatten", "bdense", "dense", "softmax"]
    assert [o["precision"] for o in info["ops"]][:2] == ["float", "binary"]
    assert info["ops"][1]["macs"] == 8 * 8 * 65 * 9 * 64
    assert info["ops"][1]["weight_bytes"] == 65 * 8 * 9  # 576 bits per row = 72 bytes
    assert info["inputs"][0]["shape"] == [1, 8, 8, 3] and info["inputs"][0]["torch_layout"] == "nchw"
    assert info["format_version"] == "1.0"
    assert m.labels == [f"class{i}" for i in range(10)]
    np.testing.assert_array_equal(m.meta("input_mean"), [0.5, 0.25, 0.0])
    assert m.meta("nope") is None
    timings, totals = m.profile(np.zeros((1, 3, 8, 8), np.float32), repeats=3)
    assert len(timings) == 10 and all(t.seconds > 0 for t in timings) and len(totals) == 3
    assert sum(t.seconds for t in timings) <= max(totals)


@pytest.mark.parametrize("isa", xnorkit.kernels.available_isas())
def test_engine_per_isa(cnn, isa):
    data, P = cnn
    x = np.random.default_rng(11).normal(size=(2, 3, 8, 8)).astype(np.float32)
    with xnorkit.kernels.use_isa(isa):
        y = xnorkit.Model(data, max_batch=2).run(x)
    ref = chain_reference(P, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-7)


def test_mlp_against_numpy():
    """An independent check: a float/binary MLP computed in numpy."""
    rng = np.random.default_rng(5)
    b = X.Builder()
    w1 = rng.normal(size=(100, 30)).astype(np.float32)
    w2 = rand_pm1(rng, (70, 100))
    thr = rng.integers(-5, 5, size=70).astype(np.int32)
    w3 = rand_pm1(rng, (10, 70))
    sc = rng.random(10).astype(np.float32)
    x = b.act("x", X.F32, [1, 30])
    h1 = b.act("fc1", X.BITS, [1, 100])
    b.op("dense", "fc1", [x], h1, b.const("fc1.w", w1), dict(kind=X.OUT_BITS), X.dense_params())
    h2 = b.act("fc2", X.BITS, [1, 70])
    b.op("bdense", "fc2", [h1], h2, b.const("fc2.w", w2, X.BITS), dict(kind=X.OUT_BITS, threshold=b.const("fc2.t", thr)),
         X.dense_params())
    h3 = b.act("fc3", X.F32, [1, 10])
    b.op("bdense", "fc3", [h2], h3, b.const("fc3.w", w3, X.BITS), dict(kind=X.OUT_FLOAT, scale=b.const("fc3.s", sc)),
         X.dense_params())
    b.inputs, b.outputs = [x], [h3]
    m = xnorkit.Model(b.build(), max_batch=16)
    xs = rng.normal(size=(16, 30)).astype(np.float32)
    y = m.run(xs)
    a1 = np.where(xs.astype(np.float64) @ w1.T >= 0, 1.0, -1.0)
    a2 = np.where(a1 @ w2.T < thr, -1.0, 1.0)
    ref = (a2 @ w3.T) * sc
    np.testing.assert_allclose(y, ref, rtol=1e-6)


def test_binary_output_is_unpacked_to_pm1():
    b = X.Builder()
    x = b.act("x", X.F32, [1, 70])
    y = b.act("y", X.BITS, [1, 70])
    b.op("sign", "sign", [x], y, params=X.sign_params())
    b.inputs, b.outputs = [x], [y]
    xs = np.random.default_rng(0).normal(size=(3, 70)).astype(np.float32)
    out = xnorkit.Model(b.build(), max_batch=3).run(xs)
    np.testing.assert_array_equal(out, np.where(xs >= 0, 1.0, -1.0))


def test_engine_matches_reference_oracle(cnn):
    """The C engine and the pure-Python oracle (xnorkit.reference) read the same file alike."""
    reference = pytest.importorskip("xnorkit.reference")
    data, _ = cnn
    x = np.random.default_rng(2).normal(size=(3, 3, 8, 8)).astype(np.float32)
    y = xnorkit.Model(data, max_batch=3).run(x)
    r = reference.run(data, x)[0]
    np.testing.assert_allclose(y, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 1, 4, 3), (3, 5, 2, 9), (1, 3, 1, 1)])
def test_nchw_to_nhwc_matches_numpy(shape):
    from xnorkit import _core

    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(_core.nchw_to_nhwc(x), x.transpose(0, 2, 3, 1))
    with pytest.raises(TypeError):
        _core.nchw_to_nhwc(x[0])  # not 4-D


def residual_graph(rng, case: str):
    """input x [1,6,5,32] f32 -> sign -> bconv2d (float, folded BN) -> add(x, conv) -> output,
    with the add's output placed so that fusing is legal ("fresh"), or not: over the conv's
    packed input ("over_input", dead after the conv in the file's plan), the conv output also
    read later ("shared"), an add with ReLU ("relu")."""
    b = X.Builder()
    h, w, c = 6, 5, 32
    wt = rand_pm1(rng, (c, 3, 3, c))
    sc, bi = (rng.random(c) * 0.1).astype(np.float32), rng.normal(size=c).astype(np.float32)
    x = b.act("x", X.F32, [1, h, w, c])
    t = b.act("conv", X.F32, [1, h, w, c])
    s = b.act("sign", X.BITS, [1, h, w, c])  # last: "over_input" places the add's output from here
    b.op("sign", "sign", [x], s, params=X.sign_params())
    b.op("bconv2d", "conv", [s], t, b.const("conv.weight", wt.reshape(c, -1), X.BITS),
         dict(kind=X.OUT_FLOAT, scale=b.const("conv.scale", sc), bias=b.const("conv.bias", bi)),
         X.conv_params(3, 3, pads=(1, 1, 1, 1), pad_value=1))
    y = b.act("add", X.F32, [1, h, w, c], offset=b.tensors[s]["offset"] if case == "over_input" else None)
    b.op("add", "add", [x, t], y, params=X.eltwise_params(act=1 if case == "relu" else 0))
    outs = [y]
    if case == "shared":
        z = b.act("twice", X.F32, [1, h, w, c])
        b.op("add", "add2", [y, t], z)
        outs = [z]
    b.inputs, b.outputs = [x], outs
    return b.build(), (wt, sc, bi)


@pytest.mark.parametrize("case,fused", [("fresh", True), ("over_input", False), ("shared", False), ("relu", False)])
def test_residual_add_fusion(case, fused):
    """A binary conv and the residual add reading it run as one op only when that is safe; the
    results are identical either way and equal the op chain."""
    rng = np.random.default_rng(3)
    data, (wt, sc, bi) = residual_graph(rng, case)
    xs = rng.normal(size=(2, 6, 5, 32)).astype(np.float32)
    m, m0 = xnorkit.Model(data, max_batch=2), xnorkit.Model(data, max_batch=2, fuse=False)
    assert [o["fused"] for o in m.ops] == [False, False, fused] + [False] * (len(m.ops) - 3)
    assert not any(o["fused"] for o in m0.ops)
    y, y0 = m.run(xs, layout="stored"), m0.run(xs, layout="stored")
    conv = ops.bconv2d(conv_shape(2, 6, 5, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, pack_pm1(wt.reshape(32, -1)), 32,
                       ops.binarize(xs.reshape(-1, 32), None, None), {"kind": "float", "scale": sc, "bias": bi})
    ref = xs.reshape(-1, 32) + conv.reshape(-1, 32)
    if case == "relu":
        ref = np.maximum(ref, 0)
    if case == "shared":
        ref = ref + conv.reshape(-1, 32)
    assert np.array_equal(y.reshape(-1, 32), ref) and np.array_equal(y0, y)


def float_residual_graph(rng, case: str, k: int, act: int):
    """input x [1,7,6,c] f32 and r [1,7,6,oc] f32 -> conv2d (float, k x k, folded BN, act) ->
    add(r, conv) -> output: Bi-Real Net's downsampling shortcut (1x1 conv) and a 3x3 / stem-like
    (c = 3) one. The add's output is fresh ("fresh"), over the conv's input ("over_input", dead
    after the conv in the file's plan, but read while the fused op writes: not fused), or the
    conv output is read again ("shared", not fused)."""
    b = X.Builder()
    h, w, c, oc = 7, 6, (3 if k == 7 else 24), 80
    wt = rng.normal(size=(oc, k, k, c)).astype(np.float32)
    sc, bi = rng.normal(size=oc).astype(np.float32), rng.normal(size=oc).astype(np.float32)
    r = b.act("r", X.F32, [1, h, w, oc])
    t = b.act("conv", X.F32, [1, h, w, oc])
    x = b.act("x", X.F32, [1, h, w, c])  # last: "over_input" places the add's output from here
    b.op("conv2d", "conv", [x], t, b.const("conv.weight", wt),
         dict(kind=X.OUT_FLOAT, act=act, scale=b.const("conv.scale", sc), bias=b.const("conv.bias", bi)),
         X.conv_params(k, k, pads=(k // 2,) * 4))
    y = b.act("add", X.F32, [1, h, w, oc], offset=b.tensors[x]["offset"] if case == "over_input" else None)
    b.op("add", "add", [r, t], y, params=X.eltwise_params())
    outs = [y]
    if case == "shared":
        z = b.act("twice", X.F32, [1, h, w, oc])
        b.op("add", "add2", [y, t], z)
        outs = [z]
    b.inputs, b.outputs = [x, r], outs
    return b.build(), (wt, sc, bi)


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("act", [0, 1, 3])  # none, ReLU (fused into the micro-kernel), hardtanh (a pass)
@pytest.mark.parametrize("case,fused", [("fresh", True), ("over_input", False), ("shared", False)])
def test_float_conv_residual_add_fusion(case, fused, k, act):
    """A float convolution and the residual add reading it run as one op when that is safe;
    the results are bit-identical to the op chain, on every ISA."""
    rng = np.random.default_rng(k * 10 + act)
    data, _ = float_residual_graph(rng, case, k, act)
    c = 3 if k == 7 else 24
    xs = rng.normal(size=(2, 7, 6, c)).astype(np.float32)
    rs = rng.normal(size=(2, 7, 6, 80)).astype(np.float32)
    for isa in xk.available_isas():
        with xk.use_isa(isa):
            m, m0 = xnorkit.Model(data, max_batch=2), xnorkit.Model(data, max_batch=2, fuse=False)
            assert [o["fused"] for o in m.ops][:2] == [False, fused]
            y, y0 = m.run(xs, rs, layout="stored"), m0.run(xs, rs, layout="stored")
        np.testing.assert_array_equal(y.view(np.uint32), y0.view(np.uint32), err_msg=isa)


def test_nchw_input_transposed_into_the_arena():
    """Model.run on NCHW images hands the engine the NCHW array; the binding transposes it
    straight into the arena (xk_model_input_buffer, no temporary NHWC array and no copy). Same
    bits as the stored-layout call, in one call and in chunks of max_batch; a wrong image shape
    is named."""
    rng = np.random.default_rng(5)
    b, _ = binary_cnn(rng, h=9, w=7)
    m = xnorkit.Model(b.build(), max_batch=2)
    spec = m.inputs[0]
    h, w, c = spec["shape"][1:]
    x = rng.normal(size=(5, c, h, w)).astype(np.float32)
    want = m.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), layout="stored")
    got = m.run(x)
    np.testing.assert_array_equal(np.asarray(got).view(np.uint32), np.asarray(want).view(np.uint32))
    np.testing.assert_array_equal(np.asarray(m.run(x[1])).view(np.uint32), np.asarray(want)[1:2].view(np.uint32))
    timings, totals = m.profile(x[:2], repeats=2, warmup=1)
    assert len(totals) == 2 and len(timings) == len(m.ops)
    with pytest.raises(ValueError, match="NCHW"):
        m.run(rng.normal(size=(1, c, w + 1, h)).astype(np.float32))
    with pytest.raises(ValueError, match="input"):
        m.profile()
