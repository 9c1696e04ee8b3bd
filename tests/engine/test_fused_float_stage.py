"""The float output stage applied inside the AVX2 micro-kernels (fgemm.h xk_fstage) and the
one-row GEMV kernel of batch-1 dense layers: bit-identical to the plain sums put through the
stage in float32 (one rounding per operation, no FMA), on every stage combination the kernels
fuse, with NaN, -0 and ReLU ties, and on the direct (stem), 1x1 and im2col conv paths."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import xnorkit.kernels as xk
from xnorkit import _core

from engine_util import ACT, conv_shape, pad_bits_of, unpack_pm1

ops = _core.ops
ISAS = xk.available_isas()
PARTS = ("scale", "bias", "relu", "post_scale", "post_bias")
# every subset of the stage's parts (the kernels take each part or not)
COMBOS = [c for r in range(len(PARTS) + 1) for c in itertools.combinations(PARTS, r)]


def stage_of(parts, n, rng):
    d = {"kind": "float"}
    for p in parts:
        if p == "relu":
            d["act"] = ACT["relu"]
        else:
            v = rng.normal(size=n).astype(np.float32)
            v[::7] = 0.0  # zero scales / biases: -0 and +0 results
            d[p] = v
    return d


def stage_ref(y, d):
    """xk_out_value in float32: sc * acc, + bias, relu as v > 0 ? v : 0, * ps, + pb."""
    v = y.astype(np.float32).copy()
    with np.errstate(invalid="ignore", over="ignore"):
        if "scale" in d:
            v = (d["scale"] * v).astype(np.float32)
        if "bias" in d:
            v = (v + d["bias"]).astype(np.float32)
        if d.get("act") == ACT["relu"]:
            v = np.where(v > 0, v, np.float32(0.0)).astype(np.float32)
        if "post_scale" in d:
            v = (v * d["post_scale"]).astype(np.float32)
        if "post_bias" in d:
            v = (v + d["post_bias"]).astype(np.float32)
    return v


def assert_bits_equal(got, want, msg=""):
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=msg)


CONVS = [  # (n, h, w, c, oc, kh, kw, stride, pads): direct stem path, 1x1 direct input, im2col
    (1, 19, 17, 3, 64, 7, 7, 2, (3, 3, 3, 3)),
    (2, 7, 9, 3, 48, 3, 3, 1, (1, 1, 1, 1)),
    (1, 7, 7, 40, 80, 1, 1, 1, (0, 0, 0, 0)),
    (1, 9, 5, 10, 32, 3, 3, 2, (1, 0, 1, 2)),
    (1, 5, 5, 8, 17, 3, 3, 1, (1, 1, 1, 1)),  # a partial last column block: not fused
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CONVS)
def test_conv2d_fused_stage_bit_exact(case, isa):
    n, h, w, c, oc, kh, kw, s, pads = case
    rng = np.random.default_rng(h * 7 + c)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    x.reshape(-1)[5] = np.nan  # NaN reaches some outputs: ReLU maps it to +0
    wt = rng.normal(size=(oc, kh, kw, c)).astype(np.float32)
    shape = conv_shape(n, h, w, c, oc, kh, kw, s, s, 1, 1, *pads)
    with xk.use_isa(isa):
        plain = ops.conv2d(shape, wt, x, {"kind": "float"}, 1)
        for parts in COMBOS:
            d = stage_of(parts, oc, rng)
            assert_bits_equal(ops.conv2d(shape, wt, x, d, 1), stage_ref(plain, d), f"{isa} {parts}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k,n_out", [(512, 1000), (37, 64), (5, 16), (64, 130), (300, 33)])
def test_dense_rows_bit_exact_and_one_row_equals_tile_row(isa, k, n_out):
    """Batch 1 (the GEMV kernel), batch 7 (6-row tiles + a 1-row tail) and each row of a batch
    alone give the same bits; the stage matches stage_ref."""
    rng = np.random.default_rng(k + n_out)
    x = rng.normal(size=(7, k)).astype(np.float32)
    w = rng.normal(size=(n_out, k)).astype(np.float32)
    with xk.use_isa(isa):
        plain = ops.dense(w, x, {"kind": "float"})
        for r in range(7):
            assert_bits_equal(ops.dense(w, x[r:r + 1], {"kind": "float"})[0], plain[r], f"row {r}")
        for parts in COMBOS:
            d = stage_of(parts, n_out, rng)
            want = stage_ref(plain, d)
            assert_bits_equal(ops.dense(w, x, d), want, f"{isa} {parts}")
            assert_bits_equal(ops.dense(w, x[3:4], d)[0], want[3], f"{isa} {parts} batch 1")


def test_dense_one_row_matches_float64():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 512)).astype(np.float32)
    w = rng.normal(size=(1000, 512)).astype(np.float32)
    for isa in ISAS:
        with xk.use_isa(isa):
            got = ops.dense(w, x, {"kind": "float"})
        np.testing.assert_allclose(got, x.astype(np.float64) @ w.T, rtol=1e-5, atol=1e-4 * np.sqrt(512))


def bits_ref(staged: np.ndarray) -> np.ndarray:
    """Packed signs of the staged float output: bit = !(v >= 0) (NaN sets it, -0 does not)."""
    with np.errstate(invalid="ignore"):
        return ~(staged >= 0)


BITS_COMBOS = [c for c in COMBOS if len(c) <= 2 or c == PARTS]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CONVS)
def test_conv2d_bits_output_matches_staged_float(case, isa):
    """Bits output of a float convolution (BinaryNet's first layer feeding a binary one): the
    stage inside the micro-kernels and the signs packed 8 at a time where the blocks are whole,
    the portable path elsewhere; the same bits as the sign of the float output, padding zero."""
    n, h, w, c, oc, kh, kw, s, pads = case
    rng = np.random.default_rng(h * 5 + oc)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    x.reshape(-1)[5] = np.nan
    wt = rng.normal(size=(oc, kh, kw, c)).astype(np.float32)
    shape = conv_shape(n, h, w, c, oc, kh, kw, s, s, 1, 1, *pads)
    with xk.use_isa(isa):
        plain = ops.conv2d(shape, wt, x, {"kind": "float"}, 1)
        for parts in BITS_COMBOS:
            d = stage_of(parts, oc, rng)
            got = ops.conv2d(shape, wt, x, dict(d, kind="bits"), 1)
            want = bits_ref(stage_ref(plain, d)).reshape(-1, oc)
            np.testing.assert_array_equal(unpack_pm1(got, oc).reshape(-1, oc) < 0, want, f"{isa} {parts}")
            assert not pad_bits_of(got.reshape(-1, got.shape[-1]), oc).any()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rows,k,n_out", [(1, 300, 128), (7, 37, 64), (13, 64, 130), (6, 5, 16)])
def test_dense_bits_output_matches_staged_float(isa, rows, k, n_out):
    rng = np.random.default_rng(rows * 3 + k)
    x = rng.normal(size=(rows, k)).astype(np.float32)
    w = rng.normal(size=(n_out, k)).astype(np.float32)
    with xk.use_isa(isa):
        plain = ops.dense(w, x, {"kind": "float"})
        for parts in BITS_COMBOS:
            d = stage_of(parts, n_out, rng)
            got = ops.dense(w, x, dict(d, kind="bits"))
            np.testing.assert_array_equal(unpack_pm1(got, n_out) < 0, bits_ref(stage_ref(plain, d)), f"{isa} {parts}")
            assert not pad_bits_of(got, n_out).any()
