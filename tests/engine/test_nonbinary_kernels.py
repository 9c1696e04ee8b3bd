"""The vectorized kernels of the non-binary ops (depthwise float / int8 convolution, max / average
pooling, the int8 input quantizer: csrc/ukernels/fgemm/fgemm-avx2.c row kernels) against the
portable path (XK_ISA=scalar) and against torch / integer references, on awkward shapes: channel
counts that are not multiples of the vector width, C = 1 and 3, strides 2 and 4, asymmetric
padding, dilation, 1x1 spatial inputs, NaN and out-of-range inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import xnorkit.kernels as xk
from xnorkit import _core

from engine_util import conv_shape

ops = _core.ops
ISAS = xk.available_isas()

DW_CASES = [  # (n, h, w, c, k, stride, (t, l, b, r), dil)
    (1, 1, 1, 3, 3, 1, (1, 1, 1, 1), 1),      # 1x1 spatial: only the centre tap is inside
    (2, 9, 8, 19, 3, 2, (1, 1, 1, 1), 1),
    (1, 12, 11, 1, 3, 1, (1, 1, 1, 1), 1),
    (1, 13, 13, 37, 5, 4, (2, 1, 0, 2), 1),   # stride 4, asymmetric padding, 32 + 5 channels
    (1, 10, 10, 64, 3, 2, (0, 0, 1, 1), 1),
    (1, 11, 9, 16, 3, 1, (2, 2, 2, 2), 2),    # dilation 2
    (1, 7, 7, 8, 2, 2, (0, 0, 0, 0), 1),
    (2, 6, 5, 33, 3, 1, (1, 1, 1, 1), 1),
    (1, 8, 9, 30, 3, 1, (1, 1, 1, 1), 1),     # a partial fourth vector (24 + 6 channels)
    (1, 9, 8, 12, 3, 1, (1, 1, 1, 1), 1),     # a partial second vector
    # <= 16 channels: four pixels at a time inside the image (QuickNet's 8-channel stride-2 stem)
    (2, 14, 19, 8, 3, 2, (1, 1, 1, 1), 1),
    (1, 9, 23, 5, 3, 1, (0, 2, 0, 1), 1),
    (1, 8, 17, 16, 5, 1, (2, 2, 2, 2), 1),
]


def dw_ref(x, w_hwc, stride, pads, dil):
    c = x.shape[3]
    xt = F.pad(torch.from_numpy(x).permute(0, 3, 1, 2).double(), (pads[1], pads[3], pads[0], pads[2]))
    wt = torch.from_numpy(w_hwc.astype(np.float64).transpose(2, 0, 1)[:, None])
    return F.conv2d(xt, wt, stride=stride, dilation=dil, groups=c).permute(0, 2, 3, 1).reshape(-1, c).numpy()


@pytest.mark.parametrize("case", DW_CASES)
def test_dwconv2d_every_isa_matches_torch_and_scalar(case):
    n, h, w, c, k, s, pads, dil = case
    rng = np.random.default_rng(c * 7 + k)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    wt = rng.normal(size=(k, k, c)).astype(np.float32)
    scale, bias = rng.normal(size=c).astype(np.float32), rng.normal(size=c).astype(np.float32)
    shape = conv_shape(n, h, w, c, c, k, k, s, s, dil, dil, *pads)
    ref = np.maximum(dw_ref(x, wt, s, pads, dil) * scale + bias, 0)
    got = {}
    for isa in ISAS:
        with xk.use_isa(isa):
            got[isa] = ops.dwconv2d(shape, wt, x, {"kind": "float", "scale": scale, "bias": bias, "act": 1})
        np.testing.assert_allclose(got[isa], ref, rtol=1e-5, atol=1e-5 * k)
    for isa in ISAS:  # FMA vs separate multiply-add: within rounding of each other
        np.testing.assert_allclose(got[isa], got["scalar"], rtol=1e-6, atol=1e-6 * k)


def quantize_ref(x, scale, zp):
    with np.errstate(invalid="ignore"):
        v = np.clip(x * np.float32(1.0 / np.float32(scale)), -512, 512)
    v = np.where(np.isnan(v), -512, v)
    return np.clip(np.round(v) + zp, -128, 127).astype(np.int32)


@pytest.mark.parametrize("case", DW_CASES)
def test_qdwconv2d_exact_on_every_isa(case):
    n, h, w, c, k, s, pads, dil = case
    rng = np.random.default_rng(c * 5 + k)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32) * 3
    wq = rng.integers(-128, 128, size=(k, k, c)).astype(np.int8)
    scale, zp = 0.025, -9
    xq = (quantize_ref(x, scale, zp) - zp).astype(np.float64)
    ref = dw_ref(xq, wq, s, pads, dil)
    shape = conv_shape(n, h, w, c, c, k, k, s, s, dil, dil, *pads)
    for isa in ISAS:
        with xk.use_isa(isa):
            res = ops.qdwconv2d(shape, wq, x, scale, zp, {"kind": "float"})
        np.testing.assert_array_equal(res, ref.astype(np.float32), err_msg=isa)


@pytest.mark.parametrize("count", [1, 7, 8, 9, 31, 203])
def test_int8_quantizer_identical_on_every_isa(count):
    """NaN, +-inf, huge values, exact halves: the vectorized quantizer of the int8 ops rounds and
    clamps exactly like the portable one (checked through an exact int32 1x1 convolution)."""
    rng = np.random.default_rng(count)
    x = (rng.normal(size=count) * 3).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.5, 1.5, 2.5, -0.5, -2.5, 0.0, -0.0], np.float32)
    x[: min(count, special.size)] = special[: min(count, special.size)]
    scale, zp = 0.5, 3  # x / 0.5 puts exact halves at 0.25, 0.75, ...
    x[min(count, special.size):] = np.float32(0.25) * np.round(x[min(count, special.size):] * 4)
    xin = x.reshape(1, 1, count, 1)
    wq = np.ones((1, 1, 1, 1), np.int8)
    shape = conv_shape(1, 1, count, 1, 1, 1, 1)
    want = quantize_ref(x, scale, zp) - zp
    for isa in ISAS:
        with xk.use_isa(isa):
            acc = ops.qconv2d(shape, wq, xin, scale, zp, {"kind": "int32"}, 1)
            dw = ops.qdwconv2d(shape, wq.reshape(1, 1, 1), xin, scale, zp, {"kind": "float"})
        np.testing.assert_array_equal(acc.ravel(), want, err_msg=isa)
        np.testing.assert_array_equal(dw.ravel(), want.astype(np.float32), err_msg=isa)
        assert ops.quantize1(float(x[0]), scale, zp) == want[0] + zp


POOL_CASES = [  # (n, h, w, c, k, stride, pads)
    (1, 1, 1, 3, 3, 2, (1, 1, 1, 1)),
    (2, 9, 7, 65, 3, 2, (1, 1, 1, 1)),
    (1, 12, 12, 64, 3, 2, (1, 1, 1, 1)),
    (1, 8, 9, 5, 2, 2, (0, 0, 0, 0)),
    (1, 13, 11, 17, 4, 4, (0, 0, 0, 0)),
    (1, 6, 6, 8, 3, 1, (1, 1, 1, 1)),
    (1, 10, 10, 1, 3, 2, (0, 0, 1, 1)),
    # blocks of 32 channels (four chains at a time) and their tails
    (1, 9, 10, 32, 3, 1, (1, 1, 1, 1)),
    (2, 7, 8, 104, 3, 2, (0, 1, 1, 0)),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_pools_identical_on_every_isa_and_match_torch(case):
    n, h, w, c, k, s, pads = case
    rng = np.random.default_rng(h * c + k)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    x.ravel()[rng.choice(x.size, size=max(1, x.size // 50), replace=False)] = np.nan  # NaN propagates
    x.ravel()[rng.choice(x.size, size=max(1, x.size // 10), replace=False)] = 0.0
    x.ravel()[rng.choice(x.size, size=max(1, x.size // 10), replace=False)] = -0.0  # ties of +-0: the first tap wins
    x.ravel()[rng.choice(x.size, size=max(1, x.size // 40), replace=False)] = np.inf
    x.ravel()[rng.choice(x.size, size=max(1, x.size // 40), replace=False)] = -np.inf
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    shape = [n, h, w, c, k, k, s, s, *pads]
    p = pads[0]
    sym = pads[0] == pads[2] and pads[1] == pads[3] and pads[0] == pads[1]
    out = {}
    for isa in ISAS:
        with xk.use_isa(isa):
            out[isa] = [ops.pool2d(shape, x, 0, 0), ops.pool2d(shape, x, 1, 0), ops.pool2d(shape, x, 1, 1)]
    for isa in ISAS:
        for a, b in zip(out[isa], out["scalar"]):
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32), err_msg=isa)  # the same bits
    if sym:
        mx = F.max_pool2d(xt, k, s, padding=p).permute(0, 2, 3, 1).reshape(-1, c).numpy()
        np.testing.assert_array_equal(out["scalar"][0], mx)
        for inc in (0, 1):
            av = F.avg_pool2d(xt, k, s, padding=p, count_include_pad=bool(inc)).permute(0, 2, 3, 1).reshape(-1, c)
            np.testing.assert_allclose(out["scalar"][1 + inc], av.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rows,c", [(1, 1), (3, 7), (5, 64), (56 * 56, 64), (28 * 28, 131), (2, 40000)])
@pytest.mark.parametrize("threads", [1, 2])
def test_add_every_isa_exact(rows, c, threads):
    """The residual add (AVX2 blocks, split over threads above a size threshold, activation fused
    per block): exactly a + b then the activation, on every ISA."""
    rng = np.random.default_rng(rows + c)
    a = rng.normal(size=(rows, c)).astype(np.float32)
    b = rng.normal(size=(rows, c)).astype(np.float32)
    alpha = rng.normal(size=c).astype(np.float32)
    s = a + b
    want = {"none": s, "relu": np.maximum(s, 0), "prelu": np.where(s >= 0, s, alpha * s)}
    prev = _core.get_num_threads()
    try:
        _core.set_num_threads(threads)
        for isa in ISAS:
            with xk.use_isa(isa):
                for name, act in [("none", {}), ("relu", {"act": 1}), ("prelu", {"act": 4, "alpha": alpha})]:
                    got = ops.add(a, b, act, c).reshape(rows, c)
                    np.testing.assert_array_equal(got, want[name], err_msg=f"{isa} {name}")
    finally:
        _core.set_num_threads(prev)
