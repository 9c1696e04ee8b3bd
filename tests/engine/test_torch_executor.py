"""The torch executor (xnorkit.runtime_torch, what ``xnorkit.Model(..., device="cuda")`` runs),
here on the CPU (``backend="torch"``), against the C engine and the format oracle
xnorkit.reference: every BITS tensor and every integer sum bit for bit, float outputs within
1e-5 relative (docs/format.md §6). Graphs: hand-written ones covering every op kind and
parameter corner (odd channel counts, pad values 0/+1/-1, stride, dilation, inverted bit
pooling, int8 with zero points, depthwise), and models converted from PyTorch (float and int8).
The CUDA and Triton paths are tested in tests/gpu/test_gpu_model.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xnorkit
from xnorkit import reference
from xnorkit.runtime_torch import TorchModel, pack_bool, packed_words, unpack_bool

import xkfile as X

convert_mod = pytest.importorskip("xnorkit.convert.pipeline")


# ----------------------------------------------------------------------------------- graphs
def _pm1(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def _f32(rng, *shape, scale=1.0):
    return (rng.normal(size=shape) * scale).astype(np.float32)


def binary_graph(rng, h=9, w=9) -> bytes:
    """Binary ops in every configuration: float conv -> bits, bconv pad 0 (bits, thresholds +
    flip, C = 65), bit max-pool with invert and bottom/right padding, bconv pad +1 (float stage
    with relu and post scale/bias), bconv pad -1 stride 2 (bits), bconv pad 0 dilation 2 (bits),
    affine + sign with thresholds/flip, bit concat (word-aligned and not), bit flatten, bdense
    to raw integer sums and to bits, unpack, avg-pool without counting padding, global pool,
    reshape, dense, softmax. Outputs: softmax, integer sums, bits."""
    b = X.Builder()
    x = b.act("input", X.F32, [1, h, w, 3], layout=1)

    def bconv(name, src, c, oc, hw, stage, out_dtype, k=3, stride=(1, 1), dil=(1, 1), pads=(1, 1, 1, 1), pv=0):
        oh = (hw[0] + pads[0] + pads[2] - dil[0] * (k - 1) - 1) // stride[0] + 1
        ow = (hw[1] + pads[1] + pads[3] - dil[1] * (k - 1) - 1) // stride[1] + 1
        t = b.act(name, out_dtype, [1, oh, ow, oc])
        wt = b.const(f"{name}.weight", _pm1(rng, (oc, k * k * c)), X.BITS)
        b.op("bconv2d", name, [src], t, wt, stage(oc), X.conv_params(k, k, stride, dil, pads, pad_value=pv))
        return t, (oh, ow)

    def bits_stage(name):
        def f(oc):
            thr = rng.integers(-30, 30, size=oc).astype(np.int32)
            thr[0] = -2**31  # a constant channel
            return dict(kind=X.OUT_BITS, threshold=b.const(f"{name}.thr", thr),
                        flip=b.const(f"{name}.flip", (rng.random(oc) < 0.3).astype(np.uint8)))
        return f

    # float conv with integer data: exact sums in any order, so its bits are comparable exactly
    w0 = rng.integers(-2, 3, size=(65, 3, 3, 3)).astype(np.float32)
    t0 = b.act("conv0", X.BITS, [1, h, w, 65])
    b.op("conv2d", "conv0", [x], t0, b.const("conv0.weight", w0),
         dict(kind=X.OUT_BITS, scale=b.const("conv0.scale", _f32(rng, 65)), bias=b.const("conv0.bias", _f32(rng, 65))),
         X.conv_params(3, 3, pads=(1, 1, 1, 1)))
    t1, hw1 = bconv("bconv1", t0, 65, 70, (h, w), bits_stage("bconv1"), X.BITS, pv=0)
    ph, pw = (hw1[0] + 1) // 2, (hw1[1] + 1) // 2
    t2 = b.act("pool", X.BITS, [1, ph, pw, 70])
    inv = np.where(rng.random(70) < 0.5, -1.0, 1.0)[None]
    b.op("maxpool2d", "pool", [t1], t2, params=X.pool_params(2, 2, (2, 2), pads=(0, 0, 1, 1),
         invert=b.const("pool.invert", inv, X.BITS, shape=[70])))
    t3, hw3 = bconv("bconv2", t2, 70, 32, (ph, pw), lambda oc: dict(
        kind=X.OUT_FLOAT, act=1, scale=b.const("bconv2.scale", _f32(rng, oc, scale=0.1)),
        bias=b.const("bconv2.bias", _f32(rng, oc)), post_scale=b.const("bconv2.ps", _f32(rng, oc)),
        post_bias=b.const("bconv2.pb", _f32(rng, oc))), X.F32, pv=1)
    t4, hw4 = bconv("bconv3", t2, 70, 40, (ph, pw), bits_stage("bconv3"), X.BITS, stride=(2, 2), pv=-1)
    t5, _ = bconv("bconv4", t2, 70, 64, (ph, pw), bits_stage("bconv4"), X.BITS, dil=(2, 2), pads=(2, 2, 2, 2), pv=0)
    t6 = b.act("bn", X.F32, [1, *hw3, 32])
    b.op("affine", "bn", [t3], t6, params=X.affine_params(b.const("bn.scale", _f32(rng, 32)),
                                                           b.const("bn.bias", _f32(rng, 32))))
    t7 = b.act("sign", X.BITS, [1, *hw3, 32])
    thr = _f32(rng, 32)
    thr[0] = -np.inf
    b.op("sign", "sign", [t6], t7, params=X.sign_params(b.const("sign.t", thr),
                                                        b.const("sign.f", (rng.random(32) < 0.5).astype(np.uint8))))
    t8 = b.act("cat_slow", X.BITS, [1, *hw3, 96])  # 32 + 64: the second input starts inside a word
    b.op("concat", "cat_slow", [t7, t5], t8)
    t9 = b.act("cat_fast", X.BITS, [1, *hw3, 96])  # 64 + 32: word-aligned
    b.op("concat", "cat_fast", [t5, t7], t9)
    t10 = b.act("flat", X.BITS, [1, hw4[0] * hw4[1] * 40])
    b.op("flatten", "flat", [t4], t10, params=X.flatten_params(0))
    kf = hw4[0] * hw4[1] * 40
    t11 = b.act("fc_int", X.F32, [1, 20])  # raw integer sums
    b.op("bdense", "fc_int", [t10], t11, b.const("fc_int.weight", _pm1(rng, (20, kf)), X.BITS),
         dict(kind=X.OUT_FLOAT), X.dense_params())
    t12 = b.act("fc_bits", X.BITS, [1, 33])
    b.op("bdense", "fc_bits", [t10], t12, b.const("fc_bits.weight", _pm1(rng, (33, kf)), X.BITS),
         bits_stage("fc_bits")(33), X.dense_params())
    t13 = b.act("unpack", X.F32, [1, *hw3, 96])
    b.op("unpack", "unpack", [t8], t13)
    t14 = b.act("unpack2", X.F32, [1, *hw3, 96])
    b.op("unpack", "unpack2", [t9], t14)
    t15 = b.act("sum", X.F32, [1, *hw3, 96])
    b.op("add", "sum", [t13, t14], t15, params=X.eltwise_params(act=0))
    ah, aw = (hw3[0] - 1) // 2 + 1, (hw3[1] - 1) // 2 + 1
    t16 = b.act("avg", X.F32, [1, ah, aw, 96])
    b.op("avgpool2d", "avg", [t15], t16, params=X.pool_params(3, 3, (2, 2), pads=(1, 1, 1, 1), count_include_pad=0))
    t17 = b.act("gap", X.F32, [1, 1, 1, 96])
    b.op("global_avgpool", "gap", [t16], t17)
    t18 = b.act("reshape", X.F32, [1, 96])
    b.op("reshape", "reshape", [t17], t18)
    t19 = b.act("fc", X.F32, [1, 10])
    b.op("dense", "fc", [t18], t19, b.const("fc.weight", _f32(rng, 10, 96)),
         dict(kind=X.OUT_FLOAT, bias=b.const("fc.bias", _f32(rng, 10))), X.dense_params())
    t20 = b.act("softmax", X.F32, [1, 10])
    b.op("softmax", "softmax", [t19], t20)
    b.inputs, b.outputs = [x], [t20, t11, t12]
    b.add_meta("labels", 1, "\n".join(f"c{i}" for i in range(10)).encode())
    b.add_meta("input_mean", 3, np.array([0.5, 0.25, 0.0], np.float32).tobytes(), count=3)
    return b.build()


def float_graph(rng, h=6, w=6) -> bytes:
    """Float and int8 ops: int8 conv (zero point, prelu), int8 depthwise conv (hardtanh), float
    depthwise conv (leaky), add (relu6), activation, float max-pool with padding, avg-pool
    counting padding, CHW flatten, int8 dense, float conv writing bits (integer data), concat."""
    b = X.Builder()
    x = b.act("input", X.F32, [1, h, w, 4], layout=1)
    t1 = b.act("qconv", X.F32, [1, h, w, 8])
    b.op("conv2d", "qconv", [x], t1, b.const("qconv.weight", rng.integers(-127, 128, size=(8, 3, 3, 4)).astype(np.int8)),
         dict(kind=X.OUT_FLOAT, act=4, scale=b.const("qconv.scale", _f32(rng, 8, scale=1e-3)),
              bias=b.const("qconv.bias", _f32(rng, 8)), alpha=b.const("qconv.alpha", _f32(rng, 8))),
         X.conv_params(3, 3, pads=(1, 1, 1, 1), precision=1, in_scale=0.02, in_zero_point=-3))
    t2 = b.act("qdw", X.F32, [1, h, w, 8])
    b.op("conv2d", "qdw", [t1], t2, b.const("qdw.weight", rng.integers(-127, 128, size=(3, 3, 8)).astype(np.int8)),
         dict(kind=X.OUT_FLOAT, act=3, lo=-0.5, hi=0.75, scale=b.const("qdw.scale", _f32(rng, 8, scale=1e-3))),
         X.conv_params(3, 3, pads=(1, 1, 1, 1), groups=8, precision=1, in_scale=0.03, in_zero_point=5))
    t3 = b.act("dw", X.F32, [1, h, w, 8])
    b.op("conv2d", "dw", [t1], t3, b.const("dw.weight", _f32(rng, 3, 3, 8)),
         dict(kind=X.OUT_FLOAT, act=5, lo=0.1, bias=b.const("dw.bias", _f32(rng, 8))),
         X.conv_params(3, 3, stride=(1, 1), pads=(0, 0, 2, 2), groups=8))
    t4 = b.act("add", X.F32, [1, h, w, 8])
    b.op("add", "add", [t2, t3], t4, params=X.eltwise_params(act=2))
    t5 = b.act("act", X.F32, [1, h, w, 8])
    b.op("activation", "act", [t4], t5, params=X.eltwise_params(act=4, alpha=b.const("act.alpha", _f32(rng, 1))))
    ph = (h + 2 - 3) // 2 + 1
    t6 = b.act("maxpool", X.F32, [1, ph, ph, 8])
    b.op("maxpool2d", "maxpool", [t5], t6, params=X.pool_params(3, 3, (2, 2), pads=(1, 1, 1, 1)))
    t7 = b.act("avgpool", X.F32, [1, ph, ph, 8])
    b.op("avgpool2d", "avgpool", [t6], t7, params=X.pool_params(2, 2, (1, 1), pads=(0, 0, 1, 1), count_include_pad=1))
    t8 = b.act("cat", X.F32, [1, ph, ph, 16])
    b.op("concat", "cat", [t6, t7], t8)
    t9 = b.act("flat", X.F32, [1, ph * ph * 16])
    b.op("flatten", "flat", [t8], t9, params=X.flatten_params(1))
    t10 = b.act("qfc", X.F32, [1, 10])
    b.op("dense", "qfc", [t9], t10, b.const("qfc.weight", rng.integers(-127, 128, size=(10, ph * ph * 16)).astype(np.int8)),
         dict(kind=X.OUT_FLOAT, scale=b.const("qfc.scale", _f32(rng, 10, scale=1e-3))),
         X.dense_params(precision=1, in_scale=0.05, in_zero_point=2))
    t11 = b.act("fbits", X.BITS, [1, h, w, 70])
    b.op("conv2d", "fbits", [x], t11, b.const("fbits.weight", rng.integers(-2, 3, size=(70, 1, 1, 4)).astype(np.float32)),
         dict(kind=X.OUT_BITS), X.conv_params(1, 1))
    b.inputs, b.outputs = [x], [t10, t11]
    return b.build()


def integer_input(rng, shape):
    """Small integers as floats: float convolutions over them are exact in any summation order."""
    return rng.integers(-3, 4, size=shape).astype(np.float32)


@pytest.fixture(scope="module")
def graphs():
    rng = np.random.default_rng(0)
    return {"binary": binary_graph(rng), "float": float_graph(rng)}


# ----------------------------------------------------------------------------------- checks
def assert_same_as_engine(data: bytes, x: np.ndarray, exact: bool = False, **kw):
    """Torch executor on the CPU vs the C engine and vs reference.py, tensor by tensor."""
    c_outs = xnorkit.Model(data, max_batch=len(x)).run(x)
    tm = xnorkit.Model(data, backend="torch", **kw)
    assert isinstance(tm, TorchModel) and tm.kernels == "torch"
    t_outs = tm.run(x)
    c_outs = c_outs if isinstance(c_outs, tuple) else (c_outs,)
    t_outs = t_outs if isinstance(t_outs, tuple) else (t_outs,)
    for spec, c, t in zip(tm.outputs, c_outs, t_outs):
        assert isinstance(t, np.ndarray) and t.dtype == np.float32 and t.shape == c.shape, spec["name"]
        if exact or spec["dtype"] == "bits":
            np.testing.assert_array_equal(t, c, err_msg=spec["name"])
        else:
            np.testing.assert_allclose(t, c, rtol=0, atol=1e-5 * max(np.abs(c).max(), 1e-30), err_msg=spec["name"])
    # every intermediate tensor against the oracle: bits exactly, floats within 1e-5
    stored = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 3, 1) if x.ndim == 4 else x))
    _, env = tm._exec.run([stored.reshape((len(x),) + tuple(tm.inputs[0]["shape"][1:]))], return_all=True)
    _, renv = reference.run(data, x, return_all=True)
    nbits = 0
    for i, r in renv.items():
        t = tm._xk.tensors[i]
        got = env[i].numpy()
        if t.dtype == "bits":
            nbits += 1
            np.testing.assert_array_equal(got, r, err_msg=t.name)
        else:
            np.testing.assert_allclose(got, r, rtol=0, atol=1e-5 * max(np.abs(r).max(), 1e-30), err_msg=t.name)
    return tm, t_outs, nbits


@pytest.mark.parametrize("batch", [1, 3])
def test_binary_graph_matches_engine(graphs, batch):
    rng = np.random.default_rng(batch)
    tm, outs, nbits = assert_same_as_engine(graphs["binary"], integer_input(rng, (batch, 3, 9, 9)))
    assert nbits == 10
    assert [o["kind"] for o in tm.ops].count("bconv2d") == 4
    assert set(np.unique(outs[2])) <= {-1.0, 1.0}


def test_binary_graph_integer_sums_exact(graphs):
    """The bdense output without an output stage holds the raw integer sums: equal, not close."""
    x = integer_input(np.random.default_rng(5), (4, 3, 9, 9))
    _, ints, bits = xnorkit.Model(graphs["binary"], max_batch=4).run(x)
    _, ints_t, bits_t = xnorkit.Model(graphs["binary"], backend="torch").run(x)
    np.testing.assert_array_equal(ints_t, ints)
    np.testing.assert_array_equal(bits_t, bits)
    assert np.all(ints_t == np.round(ints_t))


@pytest.mark.parametrize("batch", [1, 2])
def test_float_and_int8_graph_matches_engine(graphs, batch):
    rng = np.random.default_rng(10 + batch)
    x = rng.normal(size=(batch, 4, 6, 6)).astype(np.float32)
    x[0, 0, 0, :3] = [0.25, 0.75, -0.25]  # x / in_scale = 12.5, 37.5, -12.5 exactly: ties round to even
    x[:, :, 1] = integer_input(rng, (batch, 4, 6))
    assert_same_as_engine(graphs["float"], x)


# ----------------------------------------------------------------------------------- converted models
e2e = pytest.importorskip("test_e2e")


def convert(model, x, **kw):
    return convert_mod.convert(e2e.randomize_bn(model), x[:1], verbose=False, **kw).data


@pytest.mark.parametrize("pad_values", [(0.0, 1.0), (-1.0, 0.0)])
def test_converted_small_bnn(pad_values):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 12, 12)
    _, _, nbits = assert_same_as_engine(convert(e2e.SmallBNN(pad_values=pad_values), x), x.numpy())
    assert nbits >= 5


def test_converted_small_bnn_integer_output_exact():
    """Without the last BatchNorm the output is an exact integer sum plus an exact bias."""
    torch.manual_seed(3)
    model = e2e.SmallBNN()
    model.bn5 = torch.nn.Identity()
    x = torch.randn(16, 3, 12, 12)
    assert_same_as_engine(convert(model, x), x.numpy(), exact=True)


def test_converted_residual_bnn():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 10)
    assert_same_as_engine(convert(e2e.ResidualBNN(), x), x.numpy())


@pytest.mark.parametrize("net", ["SmallBNN", "DepthwiseNet"])
def test_converted_int8(net):
    torch.manual_seed(1)
    x = torch.randn(3, 3, 12, 12)
    data = convert(getattr(e2e, net)(), x, precision="int8", calibration=torch.randn(16, 3, 12, 12))
    tm, _, _ = assert_same_as_engine(data, x.numpy())
    assert "int8" in {o["precision"] for o in tm.ops}


@pytest.mark.parametrize("name", ["binarynet_mlp", "bnn_mnist_cnn"])
def test_converted_zoo(name):
    models = pytest.importorskip("xnorkit.models")
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    assert_same_as_engine(convert(models.get_model(name), x), x.numpy())


# ----------------------------------------------------------------------------------- API
def test_api_matches_cpu_model(graphs):
    data = graphs["binary"]
    cm, tm = xnorkit.Model(data), xnorkit.Model(data, backend="torch")
    assert tm.device == torch.device("cpu") and tm.backend == "torch" and cm.backend == "c"
    for key in ("name", "dtype", "shape", "torch_layout", "count"):
        assert [i[key] for i in tm.inputs] == [i[key] for i in cm.inputs]
        assert [o[key] for o in tm.outputs] == [o[key] for o in cm.outputs]
    for key in ("name", "kind", "precision", "macs", "weight_bytes"):
        assert [o[key] for o in tm.ops] == [o[key] for o in cm.ops], key
    assert tm.info()["format_version"] == cm.info()["format_version"]
    assert tm.info()["kernels"] == "torch" and tm.info()["device"] == "cpu"
    assert tm.labels == cm.labels and tm.meta("nope") is None
    np.testing.assert_array_equal(tm.meta("input_mean"), cm.meta("input_mean"))
    raw = np.random.default_rng(0).random((2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(tm.normalize(raw), cm.normalize(raw))
    assert "device='cpu'" in repr(tm)


def test_torch_inputs_layouts_and_chunks(graphs):
    data = graphs["binary"]
    x = integer_input(np.random.default_rng(4), (5, 3, 9, 9))
    tm = xnorkit.Model(data, backend="torch")
    want = tm.run(x)
    got = tm(torch.from_numpy(x))
    assert all(isinstance(g, torch.Tensor) and g.device.type == "cpu" for g in got)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w)
    stored = tm.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), layout="stored")
    for s, w in zip(stored, want):
        np.testing.assert_array_equal(s, w)
    one = tm.run(x[0])  # unbatched input: batch of one
    assert one[0].shape == (1, 10)
    chunked = xnorkit.Model(data, backend="torch", max_batch=2, num_threads=1).run(x)
    for c, w in zip(chunked, want):
        np.testing.assert_allclose(c, w, rtol=0, atol=1e-6)
    timings, totals = tm.profile(x[:2], repeats=2, warmup=1)
    assert len(timings) == len(tm.ops) and len(totals) == 2 and all(t.seconds >= 0 for t in timings)


def test_error_messages_match_cpu_model(graphs):
    data = graphs["binary"]
    cm, tm = xnorkit.Model(data), xnorkit.Model(data, backend="torch")
    bad = [
        (np.zeros((1, 9, 9, 3), np.float32), {}),  # NHWC given for an NCHW input
        (np.zeros((2, 3, 9), np.float32), {}),
        (np.zeros((0, 3, 9, 9), np.float32), {}),
        (np.zeros((1, 3, 9, 9), np.float32), {"layout": "stored"}),
        (np.zeros((1, 3, 9, 9), np.float32), {"layout": "nhwc"}),
    ]
    for x, kw in bad:
        with pytest.raises(ValueError) as want:
            cm.run(x, **kw)
        with pytest.raises(ValueError) as got:
            tm.run(x, **kw)
        assert str(got.value) == str(want.value)
        with pytest.raises(ValueError) as got_t:
            tm.run(torch.from_numpy(x), **kw)
        assert str(got_t.value) == str(want.value)
    with pytest.raises(ValueError, match=r"takes 1 input\(s\), got 2"):
        tm.run(np.zeros((1, 3, 9, 9), np.float32), np.zeros((1, 3, 9, 9), np.float32))
    with pytest.raises(TypeError, match="real values"):
        tm.run(torch.zeros((1, 3, 9, 9), dtype=torch.complex64))


def test_bad_files_and_options(graphs, tmp_path):
    data = bytearray(graphs["float"])
    data[200] ^= 0xFF
    with pytest.raises(ValueError, match="crc"):
        xnorkit.Model(bytes(data), backend="torch")
    with pytest.raises(FileNotFoundError):
        xnorkit.Model(tmp_path / "missing.xk", backend="torch")
    p = tmp_path / "m.xk"
    p.write_bytes(graphs["float"])
    assert xnorkit.Model(p, backend="torch").path == p
    for dev in ("gpu", "cuda:x", "tpu:0", 3.5):
        with pytest.raises(ValueError, match="device"):
            xnorkit.Model(graphs["float"], device=dev)
    with pytest.raises(ValueError, match="not supported"):
        xnorkit.Model(graphs["float"], device="meta")
    with pytest.raises(ValueError, match="backend must be"):
        xnorkit.Model(graphs["float"], backend="onnx")
    with pytest.raises(ValueError, match="CPU only"):
        xnorkit.Model(graphs["float"], device="cuda", backend="c")
    with pytest.raises(ValueError, match="torch backend only"):
        xnorkit.Model(graphs["float"], kernels="triton")
    with pytest.raises(ValueError, match="kernels must be"):
        xnorkit.Model(graphs["float"], backend="torch", kernels="cuda")
    with pytest.raises(ValueError, match="max_batch"):
        xnorkit.Model(graphs["float"], backend="torch", max_batch=0)
    assert type(xnorkit.Model(graphs["float"], device=torch.device("cpu"))) is xnorkit.Model


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_unavailable_names_what_is_missing(graphs):
    with pytest.raises(RuntimeError, match="CUDA") as err:
        xnorkit.Model(graphs["float"], device="cuda")
    msg = str(err.value)
    assert ("no CUDA support" in msg) or ("no CUDA GPU is visible" in msg), msg
    with pytest.raises(RuntimeError, match="CUDA"):
        xnorkit.Model(graphs["float"], device=torch.device("cuda", 1))


def test_kernels_triton_needs_the_kernels(graphs):
    xg = pytest.importorskip("xnorkit.kernels.gpu")
    if xg.available() and (torch.cuda.is_available() or xg.interpreting()):
        pytest.skip("the GPU kernels can run here (tested in tests/gpu/test_gpu_model.py)")
    with pytest.raises(RuntimeError, match="kernels='triton'"):
        xnorkit.Model(graphs["binary"], backend="torch", kernels="triton")


# ----------------------------------------------------------------------------------- bit helpers
@pytest.mark.parametrize("k", [1, 31, 32, 33, 63, 64, 65, 97, 128, 130])
def test_pack_bool_is_the_file_layout(k):
    from xnorkit.convert import format as xkf

    rng = np.random.default_rng(k)
    x = _pm1(rng, (3, 2, k))
    words = pack_bool(torch.from_numpy(x < 0))
    assert words.dtype == torch.int32 and words.shape == (3, 2, packed_words(k))
    np.testing.assert_array_equal(words.reshape(6, -1).view(torch.uint8).numpy(), xkf.pack_bits(x))
    np.testing.assert_array_equal(unpack_bool(words, k).numpy(), x < 0)
