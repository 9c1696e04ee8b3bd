"""Float and int8 operators of the engine (csrc/ops/fconv.c, qconv.c, elementwise.c) against
torch / numpy references on awkward shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import xnorkit.kernels as xk
from xnorkit import _core

from engine_util import ACT, act_ref, conv_ref, conv_shape, pack_pm1, unpack_pm1

ops = _core.ops
ISAS = xk.available_isas()

CONV_CASES = [  # (n, h, w, c, oc, kh, kw, stride, (t, l, b, r), dil)
    (1, 5, 5, 1, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (3, 9, 7, 3, 65, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (1, 15, 15, 3, 64, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1)),
    (2, 8, 8, 63, 17, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    (1, 9, 9, 65, 130, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1)),
    (1, 10, 12, 5, 7, 3, 5, (1, 2), (2, 2, 2, 2), (2, 1)),
    (2, 30, 30, 3, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),  # many tiles: threads split rows
]


@pytest.mark.parametrize("nslots", [1, 2])
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_torch(case, isa, nslots):
    n, h, w, c, oc, kh, kw, stride, pads, dil = case
    rng = np.random.default_rng(h * 31 + c)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    wt = rng.normal(size=(oc, kh, kw, c)).astype(np.float32)
    bias = rng.normal(size=oc).astype(np.float32)
    ref = conv_ref(x, wt, stride, pads, dil).reshape(-1, oc) + bias
    shape = conv_shape(n, h, w, c, oc, kh, kw, *stride, *dil, *pads)
    with xk.use_isa(isa):
        res = ops.conv2d(shape, wt, x, {"kind": "float", "bias": bias}, nslots)
    np.testing.assert_allclose(res, ref, rtol=1e-5, atol=1e-4 * np.sqrt(kh * kw * c))


def test_conv2d_bits_output_is_sign0_of_stage():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    wt = rng.normal(size=(70, 3, 3, 3)).astype(np.float32)
    scale = rng.normal(size=70).astype(np.float32)
    bias = rng.normal(size=70).astype(np.float32)
    stage = {"kind": "float", "scale": scale, "bias": bias}
    y = ops.conv2d(conv_shape(2, 6, 6, 3, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1), wt, x, stage, 1)
    stage["kind"] = "bits"
    b = ops.conv2d(conv_shape(2, 6, 6, 3, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1), wt, x, stage, 1)
    np.testing.assert_array_equal(unpack_pm1(b, 70) < 0, ~(y >= 0))


@pytest.mark.parametrize("mult", [1, 2])
@pytest.mark.parametrize("stride,pads", [((1, 1), (1, 1, 1, 1)), ((2, 2), (1, 1, 1, 1)), ((2, 2), (0, 0, 1, 1))])
def test_dwconv2d_matches_torch(mult, stride, pads):
    rng = np.random.default_rng(mult)
    n, h, w, c = 2, 9, 8, 19
    oc = c * mult
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    w_t = rng.normal(size=(oc, 1, 3, 3)).astype(np.float32)  # torch depthwise layout
    xt = F.pad(torch.from_numpy(x).permute(0, 3, 1, 2).double(), (pads[1], pads[3], pads[0], pads[2]))
    ref = F.conv2d(xt, torch.from_numpy(w_t).double(), stride=stride, groups=c).permute(0, 2, 3, 1).numpy()
    w_hwo = np.ascontiguousarray(w_t[:, 0].transpose(1, 2, 0))
    scale = rng.normal(size=oc).astype(np.float32)
    res = ops.dwconv2d(conv_shape(n, h, w, c, oc, 3, 3, *stride, 1, 1, *pads), w_hwo, x,
                       {"kind": "float", "scale": scale, "act": ACT["relu"]})
    np.testing.assert_allclose(res, np.maximum(ref.reshape(-1, oc) * scale, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,k,n_out", [(1, 1, 1), (3, 63, 65), (1, 512, 1000), (2, 17, 10)])
def test_dense_matches_numpy(isa, n, k, n_out):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(n, k)).astype(np.float32)
    w = rng.normal(size=(n_out, k)).astype(np.float32)
    with xk.use_isa(isa):
        res = ops.dense(w, x, {"kind": "float"})
    np.testing.assert_allclose(res, x.astype(np.float64) @ w.T, rtol=1e-5, atol=1e-4 * np.sqrt(k))


# ---------------------------------------------------------------- int8
def quantize_ref(x, scale, zp):
    q = np.round(x * np.float32(1.0 / np.float32(scale))) + zp  # np.round: half to even
    return np.clip(q, -128, 127).astype(np.int32)


def test_quantize_rounds_half_to_even():
    for x, want in [(0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (1000.0, 127), (-1000.0, -128)]:
        assert _core.ops.quantize1(x, 1.0, 0) == want, x
    assert _core.ops.quantize1(0.0, 0.1, -5) == -5


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CONV_CASES[:6])
def test_qconv2d_exact_integer_accumulator(case, isa):
    """int32 output = sum (q_x - zp) * w exactly, zero-point-padded borders contribute 0."""
    n, h, w, c, oc, kh, kw, stride, pads, dil = case
    rng = np.random.default_rng(c + oc)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32) * 2
    wq = rng.integers(-127, 128, size=(oc, kh, kw, c)).astype(np.int8)
    scale, zp = 0.02, 7
    xq = (quantize_ref(x, scale, zp) - zp).astype(np.float64)
    ref = conv_ref(xq, wq.astype(np.float64), stride, pads, dil).reshape(-1, oc)
    shape = conv_shape(n, h, w, c, oc, kh, kw, *stride, *dil, *pads)
    with xk.use_isa(isa):
        acc = ops.qconv2d(shape, wq, x, scale, zp, {"kind": "int32"}, 2)
        ws = rng.random(oc).astype(np.float32) * 0.01
        y = ops.qconv2d(shape, wq, x, scale, zp, {"kind": "float", "scale": (ws * scale).astype(np.float32)}, 1)
    np.testing.assert_array_equal(acc, ref.astype(np.int32))
    np.testing.assert_allclose(y, ref * (ws * np.float32(scale)).astype(np.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mult", [1, 2])
def test_qdwconv2d_exact(mult):
    rng = np.random.default_rng(mult)
    n, h, w, c = 2, 9, 8, 19
    oc = c * mult
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    wq = rng.integers(-128, 128, size=(3, 3, oc)).astype(np.int8)
    scale, zp = 0.03, -4
    xq = (quantize_ref(x, scale, zp) - zp).astype(np.float64)
    xt = F.pad(torch.from_numpy(xq).permute(0, 3, 1, 2), (1, 1, 1, 1))
    w_t = torch.from_numpy(wq.astype(np.float64).transpose(2, 0, 1)[:, None])
    ref = F.conv2d(xt, w_t, stride=2, groups=c).permute(0, 2, 3, 1).reshape(-1, oc).numpy()
    s = rng.random(oc).astype(np.float32)
    res = ops.qdwconv2d(conv_shape(n, h, w, c, oc, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1), wq, x, scale, zp,
                        {"kind": "float", "scale": s})
    np.testing.assert_array_equal(res, (ref.astype(np.float32) * s))


@pytest.mark.parametrize("isa", ISAS)
def test_qdense_exact(isa):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 301)).astype(np.float32)
    w = rng.integers(-128, 128, size=(70, 301)).astype(np.int8)
    xq = (quantize_ref(x, 0.05, -3) + 3).astype(np.int64)
    with xk.use_isa(isa):
        acc = ops.qdense(w, x, 0.05, -3, {"kind": "int32"})
    np.testing.assert_array_equal(acc, xq @ w.T.astype(np.int64))


def test_int8_argument_errors():
    w = np.zeros((2, 4), np.int8)
    x = np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match="scale .* positive"):
        ops.qdense(w, x, 0.0, 0, {"kind": "float"})
    with pytest.raises(ValueError, match="zero point 300"):
        ops.qdense(w, x, 1.0, 300, {"kind": "float"})


# ---------------------------------------------------------------- pools and elementwise
@pytest.mark.parametrize("k,s,pads", [(2, 2, (0, 0, 0, 0)), (3, 2, (1, 1, 1, 1)), (3, 1, (1, 1, 1, 1)), (2, 1, (0, 0, 0, 0))])
def test_pools_match_torch(k, s, pads):
    rng = np.random.default_rng(k * 10 + s)
    n, h, w, c = 3, 9, 7, 65
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    p = pads[0]
    shape = [n, h, w, c, k, k, s, s, *pads]
    mx = F.max_pool2d(xt, k, s, padding=p).permute(0, 2, 3, 1).reshape(-1, c).numpy()
    np.testing.assert_array_equal(ops.pool2d(shape, x, 0, 0), mx)
    for inc in (0, 1):
        av = F.avg_pool2d(xt, k, s, padding=p, count_include_pad=bool(inc)).permute(0, 2, 3, 1).reshape(-1, c).numpy()
        np.testing.assert_allclose(ops.pool2d(shape, x, 1, inc), av, rtol=1e-6, atol=1e-6)


def test_global_avgpool_add_concat_softmax_affine():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5, 5, 63)).astype(np.float32)
    np.testing.assert_allclose(ops.global_avgpool(x, 3, 25, 63), x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    a, b = x.ravel(), rng.normal(size=x.size).astype(np.float32)
    np.testing.assert_array_equal(ops.add(a, b, {}, 63), a + b)
    np.testing.assert_array_equal(ops.add(a, b, {"act": ACT["relu"]}, 63), np.maximum(a + b, 0))
    alpha = rng.random(63).astype(np.float32)
    got = ops.add(a, b, {"act": ACT["prelu"], "alpha": alpha}, 63).reshape(-1, 63)
    s_ = (a + b).reshape(-1, 63)
    np.testing.assert_array_equal(got, np.where(s_ >= 0, s_, alpha * s_))
    p, q = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 65)).astype(np.float32)
    np.testing.assert_array_equal(ops.concat(4, [p, q], [3, 65]), np.concatenate([p, q], 1))
    z = rng.normal(size=(3, 10)).astype(np.float32) * 20
    np.testing.assert_allclose(ops.softmax(z, 10), torch.softmax(torch.from_numpy(z), 1).numpy(), rtol=1e-5, atol=1e-7)
    s, t = rng.normal(size=63).astype(np.float32), rng.normal(size=63).astype(np.float32)
    np.testing.assert_allclose(ops.affine(x, 63, s, t), (x * s + t).reshape(-1, 63), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("act", ["relu", "relu6", "hardtanh", "prelu", "leaky"])
def test_activations(act):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 13)).astype(np.float32) * 5
    alpha = rng.random(13).astype(np.float32)
    d = {"act": ACT[act], "lo": -0.5 if act != "leaky" else 0.1, "hi": 2.0, "alpha": alpha}
    ref = act_ref(x, act, d["lo"], d["hi"], alpha)
    np.testing.assert_allclose(ops.activation(x, 13, d), ref, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown activation"):
        ops.activation(x, 13, {"act": 99})


def test_conv_tasks_any_threads_and_slots():
    """Tile tasks run in the workspace slot of the worker that claims them, with at most one
    worker per slot: float, int8 (im2col) and binary convolutions give the same bits for any
    thread count and slot count (a worker above the slot count would write past the workspace)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 23, 19, 8)).astype(np.float32)  # C > 4: im2col, 19 tiles of 48 rows
    shape = conv_shape(2, 23, 19, 8, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1)
    wt = rng.normal(size=(40, 3, 3, 8)).astype(np.float32)
    wq = rng.integers(-128, 128, size=(40, 3, 3, 8)).astype(np.int8)
    # binary: direct XOR kernel, direct table-lookup kernel, im2col
    bshapes = {(c, oc): conv_shape(2, 17, 13, c, oc, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1)
               for c, oc in ((64, 24), (64, 64), (288, 24))}
    bx = {k: ops.binarize(rng.normal(size=(2 * 17 * 13, k[0])).astype(np.float32), None, None) for k in bshapes}
    bw = {k: pack_pm1(np.where(rng.random((k[1], 9 * k[0])) < 0.5, -1.0, 1.0)) for k in bshapes}

    def run_all(nslots):
        out = [ops.conv2d(shape, wt, x, {"kind": "float"}, nslots),
               ops.qconv2d(shape, wq, x, 0.02, 3, {"kind": "int32"}, nslots)]
        out += [ops.bconv2d(bshapes[k], 1, bw[k], k[0], bx[k], {"kind": "int32"}) for k in bshapes]
        return out

    prev = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        want = run_all(1)
        for threads in (2, 3, 4):
            _core.set_num_threads(threads)
            for nslots in (1, 2, 3):
                for got, ref in zip(run_all(nslots), want):
                    np.testing.assert_array_equal(got, ref, err_msg=f"{threads} threads, {nslots} slots")
    finally:
        _core.set_num_threads(prev)
