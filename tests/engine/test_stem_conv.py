"""The direct (implicit-GEMM) convolution path for inputs with few channels (C <= 4: the 3-channel
stems; csrc/ops/fconv.c, csrc/ops/qconv.c, the xk_fconv / xk_qconv micro-kernels in
csrc/ukernels/*/…-avx2.c) against the im2col path of the same ISA (XK_NO_DIRECT_CONV=1; float:
bit-identical, same FMA order), the portable path (XK_ISA=scalar) and torch / exact integer
references: C = 1..4, kernels 1..11 (square and not), strides 1..4, asymmetric padding,
dilation, images smaller than the kernel, odd output channel counts, batch 2, every output kind."""

from __future__ import annotations

import numpy as np
import pytest

import xnorkit.kernels as xk
from xnorkit import _core

from engine_util import conv_ref, conv_shape, unpack_pm1

ops = _core.ops
ISAS = xk.available_isas()
AVX2 = "avx2" in ISAS

CASES = [  # (n, h, w, c, oc, kh, kw, (sh, sw), (t, l, b, r), (dh, dw))
    (2, 13, 11, 1, 5, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1)),
    (1, 17, 19, 2, 17, 3, 3, (1, 1), (1, 0, 2, 1), (1, 1)),
    (2, 20, 23, 3, 64, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1)),     # birealnet18 stem, small image
    (1, 31, 29, 3, 65, 11, 11, (4, 4), (2, 1, 0, 3), (1, 1)),   # alexnet conv1 kernel, odd oc
    (1, 16, 18, 4, 5, 5, 3, (3, 2), (2, 2, 1, 0), (2, 3)),      # dilation: one segment per tap
    (2, 12, 12, 3, 16, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),     # quicknet stem
    (1, 9, 10, 1, 33, 4, 4, (1, 3), (0, 3, 3, 0), (1, 2)),
    (1, 8, 8, 2, 1, 2, 2, (2, 2), (0, 0, 0, 0), (1, 1)),
    (1, 5, 5, 3, 64, 7, 7, (1, 1), (3, 3, 3, 3), (1, 1)),       # image smaller than the kernel
    (1, 1, 1, 4, 17, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 6, 40, 3, 24, 1, 9, (1, 4), (0, 4, 0, 4), (1, 1)),      # kh != kw
    (1, 14, 15, 3, 7, 6, 5, (3, 1), (0, 2, 5, 1), (2, 1)),      # dilation in h only
    # large reductions (K = 324, 297: panels of 20 KB per 16 channels), dilation
    (2, 25, 23, 4, 32, 9, 9, (2, 2), (4, 4, 4, 4), (1, 1)),
    (1, 40, 33, 3, 48, 11, 9, (3, 3), (2, 2, 2, 2), (2, 1)),
]
IDS = [f"c{c[3]}-oc{c[4]}-k{c[5]}x{c[6]}-s{c[7][0]}{c[7][1]}-d{c[9][0]}{c[9][1]}" for c in CASES]


def run_isa(monkeypatch, isa, direct, fn):
    if direct:
        monkeypatch.delenv("XK_NO_DIRECT_CONV", raising=False)
    else:
        monkeypatch.setenv("XK_NO_DIRECT_CONV", "1")
    with xk.use_isa(isa):
        return fn()


def quantize_ref(x, scale, zp):
    v = np.clip(x * np.float32(1.0 / np.float32(scale)), -512, 512)
    return np.clip(np.round(v) + zp, -128, 127).astype(np.int32)


def stages(rng, oc):
    scale = rng.normal(size=oc).astype(np.float32)
    bias = rng.normal(size=oc).astype(np.float32)
    return {
        "plain": {"kind": "float"},
        "stage": {"kind": "float", "scale": scale, "bias": bias, "act": 1,
                  "post_scale": rng.normal(size=oc).astype(np.float32)},
        "bits": {"kind": "bits", "scale": scale, "bias": bias},
    }


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float_direct_conv(case, monkeypatch):
    n, h, w, c, oc, kh, kw, stride, pads, dil = case
    rng = np.random.default_rng(h * 131 + oc * 7 + kh)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    wt = rng.normal(size=(oc, kh, kw, c)).astype(np.float32)
    shape = conv_shape(n, h, w, c, oc, kh, kw, *stride, *dil, *pads)
    ref = conv_ref(x, wt, stride, pads, dil).reshape(-1, oc)
    tol = 1e-4 * np.sqrt(kh * kw * c)
    for name, st in stages(rng, oc).items():
        conv = lambda: ops.conv2d(shape, wt, x, st, 2)  # noqa: E731
        scalar = run_isa(monkeypatch, "scalar", True, conv)
        if name == "plain":
            np.testing.assert_allclose(scalar, ref, rtol=1e-5, atol=tol)
        if not AVX2:
            continue
        direct = run_isa(monkeypatch, "avx2", True, conv)
        im2col = run_isa(monkeypatch, "avx2", False, conv)
        np.testing.assert_array_equal(direct, im2col, err_msg=name)  # same FMA order: bit-identical
        if name == "bits":
            y = run_isa(monkeypatch, "avx2", True, lambda: ops.conv2d(shape, wt, x, dict(st, kind="float"), 1))
            np.testing.assert_array_equal(unpack_pm1(direct, oc) < 0, ~(y >= 0))
        else:
            np.testing.assert_allclose(direct, scalar, rtol=1e-5, atol=tol)
        if name == "plain":
            np.testing.assert_allclose(direct, ref, rtol=1e-5, atol=tol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_int8_direct_conv_exact(case, monkeypatch):
    n, h, w, c, oc, kh, kw, stride, pads, dil = case
    rng = np.random.default_rng(h * 17 + oc * 3 + kw)
    x = (rng.normal(size=(n, h, w, c)) * 3).astype(np.float32)
    x.ravel()[:: 7] = 1e6  # clamped to 127
    wq = rng.integers(-128, 128, size=(oc, kh, kw, c)).astype(np.int8)
    wq.ravel()[:: 5] = -128
    scale, zp = 0.025, -9
    shape = conv_shape(n, h, w, c, oc, kh, kw, *stride, *dil, *pads)
    xq = (quantize_ref(x, scale, zp) - zp).astype(np.float64)
    ref = np.rint(conv_ref(xq, wq.astype(np.float64), stride, pads, dil).reshape(-1, oc)).astype(np.int64)
    st = stages(rng, oc)
    for kind, stage in [("int32", {"kind": "int32"}), ("stage", st["stage"]), ("bits", st["bits"])]:
        conv = lambda: ops.qconv2d(shape, wq, x, scale, zp, stage, 2)  # noqa: E731
        got = {"scalar": run_isa(monkeypatch, "scalar", True, conv)}
        if AVX2:
            got["direct"] = run_isa(monkeypatch, "avx2", True, conv)
            got["im2col"] = run_isa(monkeypatch, "avx2", False, conv)
        for k, v in got.items():
            np.testing.assert_array_equal(v, got["scalar"], err_msg=f"{kind} {k}")
        if kind == "int32":
            np.testing.assert_array_equal(got["scalar"], ref)


@pytest.mark.skipif(not AVX2, reason="needs AVX2")
@pytest.mark.parametrize("int8", [False, True])
def test_direct_conv_two_threads(int8, monkeypatch):
    """Two threads split the output tiles of the direct path: the same result as one thread."""
    rng = np.random.default_rng(int8)
    n, h, w, c, oc = 2, 37, 41, 3, 40
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    shape = conv_shape(n, h, w, c, oc, 5, 5, 2, 2, 1, 1, 2, 1, 2, 3)
    monkeypatch.delenv("XK_NO_DIRECT_CONV", raising=False)
    if int8:
        wq = rng.integers(-128, 128, size=(oc, 5, 5, c)).astype(np.int8)
        conv = lambda: ops.qconv2d(shape, wq, x, 0.02, 3, {"kind": "int32"}, 2)  # noqa: E731
    else:
        wt = rng.normal(size=(oc, 5, 5, c)).astype(np.float32)
        conv = lambda: ops.conv2d(shape, wt, x, {"kind": "float"}, 2)  # noqa: E731
    prev = _core.get_num_threads() if hasattr(_core, "get_num_threads") else 1
    with xk.use_isa("avx2"):
        try:
            _core.set_num_threads(1)
            one = conv()
            _core.set_num_threads(2)
            two = conv()
        finally:
            _core.set_num_threads(prev)
    np.testing.assert_array_equal(one, two)
