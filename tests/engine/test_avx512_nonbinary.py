"""The AVX-512 kernels of the non-binary ops are bit-identical to the AVX2 ones.

Float (csrc/ukernels/fgemm/fgemm-avx512.c): the AVX2 6 x 16 tile over two panel blocks at once, on
the direct stem path and the GEMM path of conv2d / dense; every output column is the same FMA
chain in k order and the output stage the same operations. Int8 (csrc/ukernels/qgemm/
qgemm-avx512.c, AVX-512 VNNI): vpdpwssd over two blocks, exact int32 like AVX2's vpmaddwd + vpaddd.
Output channel counts around the 16- and 32-column blocks (a last block alone or partial), row
counts around the tiles, every output kind, 1 and 2 threads. Runs where the CPU has AVX-512 (the
kernels are plain intrinsics; there is no emulated build of these ops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import xnorkit.kernels as xk
from xnorkit import _core

from engine_util import conv_shape

ops = _core.ops
pytestmark = pytest.mark.skipif(not {"avx2", "avx512"} <= set(xk.available_isas()),
                                reason="needs a CPU with AVX2 and AVX-512")
CPUINFO = Path("/proc/cpuinfo")
VNNI = CPUINFO.exists() and "avx512_vnni" in CPUINFO.read_text()

OCS = [1, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 80, 100, 130]


def outputs(rng, oc):
    sc, bi = rng.normal(size=oc).astype(np.float32), rng.normal(size=oc).astype(np.float32)
    sc[::5] = 0.0
    return {
        "plain": {"kind": "float"},
        "stage": {"kind": "float", "scale": sc, "bias": bi, "act": 1,
                  "post_scale": rng.normal(size=oc).astype(np.float32),
                  "post_bias": rng.normal(size=oc).astype(np.float32)},
        "hardtanh": {"kind": "float", "scale": sc, "bias": bi, "act": 3},
        "bits": {"kind": "bits", "scale": sc, "bias": bi},
    }


def both(fn, threads):
    got = {}
    for isa in ("avx2", "avx512"):
        with xk.use_isa(isa):
            prev = _core.get_num_threads()
            _core.set_num_threads(threads)
            try:
                got[isa] = np.asarray(fn())
            finally:
                _core.set_num_threads(prev)
    return got["avx2"], got["avx512"]


def assert_same_bits(a, b, msg):
    assert a.dtype == b.dtype and a.shape == b.shape, msg
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=msg)


CONVS = [  # (n, h, w, c, kh, kw, stride, pads): direct stem path (c <= 4), im2col, 1x1 input read directly
    (1, 23, 19, 3, 7, 7, 2, (3, 3, 3, 3)),
    (2, 13, 14, 3, 3, 3, 1, (1, 0, 1, 2)),
    (1, 31, 29, 3, 11, 11, 4, (2, 1, 0, 3)),
    (1, 9, 11, 24, 3, 3, 1, (1, 1, 1, 1)),
    (2, 7, 5, 40, 1, 1, 1, (0, 0, 0, 0)),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CONVS, ids=[f"c{c[3]}-k{c[4]}-s{c[6]}" for c in CONVS])
def test_conv2d_avx512_bit_identical_to_avx2(case, threads):
    n, h, w, c, kh, kw, s, pads = case
    rng = np.random.default_rng(h * 31 + c)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    x.reshape(-1)[3] = np.nan
    x.reshape(-1)[7] = -0.0
    for oc in OCS:
        wt = rng.normal(size=(oc, kh, kw, c)).astype(np.float32)
        shape = conv_shape(n, h, w, c, oc, kh, kw, s, s, 1, 1, *pads)
        for name, out in outputs(rng, oc).items():
            a, b = both(lambda: ops.conv2d(shape, wt, x, out, 1), threads)
            assert_same_bits(a, b, f"oc={oc} {name} threads={threads}")


@pytest.mark.parametrize("rows", [1, 2, 5, 6, 7, 12, 13, 50])
def test_dense_avx512_bit_identical_to_avx2(rows):
    rng = np.random.default_rng(rows)
    for oc in OCS:
        k = int(rng.integers(1, 300))
        w = rng.normal(size=(oc, k)).astype(np.float32)
        x = rng.normal(size=(rows, k)).astype(np.float32)
        for name, out in outputs(rng, oc).items():
            a, b = both(lambda: ops.dense(w, x, out), 1 + rows % 2)
            assert_same_bits(a, b, f"rows={rows} oc={oc} k={k} {name}")


def int8_outputs(rng, oc):
    out = outputs(rng, oc)
    out["int32"] = {"kind": "int32"}
    return out


@pytest.mark.skipif(not VNNI, reason="the int8 AVX-512 kernels need AVX-512 VNNI")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CONVS, ids=[f"c{c[3]}-k{c[4]}-s{c[6]}" for c in CONVS])
def test_qconv2d_avx512_identical_to_avx2(case, threads):
    n, h, w, c, kh, kw, s, pads = case
    rng = np.random.default_rng(h * 17 + c)
    x = (rng.normal(size=(n, h, w, c)) * 3).astype(np.float32)
    x.reshape(-1)[::11] = 1e6  # clamped to 127
    for oc in OCS:
        wq = rng.integers(-128, 128, size=(oc, kh, kw, c)).astype(np.int8)
        wq.reshape(-1)[::5] = -128
        shape = conv_shape(n, h, w, c, oc, kh, kw, s, s, 1, 1, *pads)
        for name, out in int8_outputs(rng, oc).items():
            a, b = both(lambda: ops.qconv2d(shape, wq, x, 0.025, -9, out, 1), threads)
            assert_same_bits(a, b, f"oc={oc} {name} threads={threads}")


@pytest.mark.skipif(not VNNI, reason="the int8 AVX-512 kernels need AVX-512 VNNI")
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 9, 50])
def test_qdense_avx512_identical_to_avx2(rows):
    rng = np.random.default_rng(rows + 100)
    for oc in OCS:
        k = int(rng.integers(1, 300))
        w = rng.integers(-128, 128, size=(oc, k)).astype(np.int8)
        x = (rng.normal(size=(rows, k)) * 4).astype(np.float32)
        for name, out in int8_outputs(rng, oc).items():
            a, b = both(lambda: ops.qdense(w, x, 0.05, 3, out), 1 + rows % 2)
            assert_same_bits(a, b, f"rows={rows} oc={oc} k={k} {name}")
