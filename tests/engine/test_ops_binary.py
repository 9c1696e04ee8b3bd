"""Binary operators of the engine (csrc/ops/bconv2d.c, bitops.c) against float references.

Binary results must be bit-exact: the int32 accumulators equal a float64 torch convolution of
the +-1 tensors with the explicit pad value, and the packed outputs equal the thresholded
reference bit for bit (including zero padding bits)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xnorkit.kernels as xk
from xnorkit import _core

from engine_util import (
    conv_ref,
    conv_shape,
    pack_pm1,
    pad_bits_of,
    rand_pm1,
    row_bytes,
    unpack_pm1,
)

ops = _core.ops
ISAS = xk.available_isas()
PAD = {0: 0, 1: 1, -1: -1}


def run_bconv(rng, n, h, w, c, oc, kh, kw, stride, pads, dil, pad_value, tap_layout="dense", out=None):
    x = rand_pm1(rng, (n, h, w, c))
    wt = rand_pm1(rng, (oc, kh, kw, c))
    if tap_layout == "dense":
        wbits, tap_bits = pack_pm1(wt.reshape(oc, -1)), c
    else:
        tap_bits = row_bytes(c) * 8
        wbits = pack_pm1(wt.reshape(oc, kh * kw, c), tap_bits=tap_bits)
    xbits = pack_pm1(x.reshape(-1, c))
    shape = conv_shape(n, h, w, c, oc, kh, kw, stride[0], stride[1], dil[0], dil[1], *pads)
    ref = conv_ref(x, wt, stride, pads, dil, pad_value)
    res = ops.bconv2d(shape, pad_value, wbits, tap_bits, xbits, out or {"kind": "int32"})
    return ref, res


# (n, h, w, c, oc, kh, kw, stride, (t, l, b, r), dil)
SHAPES = [
    (1, 5, 5, 1, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 7, 6, 63, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (3, 6, 7, 65, 70, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (1, 9, 9, 64, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 8, 8, 128, 129, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    (1, 9, 11, 130, 3, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1)),
    (1, 11, 10, 17, 33, 5, 3, (2, 1), (2, 1, 2, 1), (1, 1)),
    (1, 10, 10, 20, 7, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
    (2, 4, 4, 8, 9, 4, 4, (1, 1), (2, 1, 1, 2), (1, 1)),  # asymmetric ("same" with even kernel)
    (1, 1, 1, 3, 2, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),  # every output position is a border
    (1, 13, 13, 200, 65, 3, 3, (2, 2), (0, 0, 0, 0), (1, 1)),  # valid, no correction
    # whole-word taps (C % 64 == 0): the AVX2 column-lane kernel gathers im2col rows itself
    (2, 6, 5, 128, 67, 3, 3, (2, 1), (1, 0, 1, 1), (1, 2)),
    (1, 7, 9, 192, 5, 3, 2, (1, 1), (0, 1, 2, 0), (2, 1)),
    # whole-byte taps (C % 8 == 0, e.g. QuickNetSmall's 32 channels): gathered bytewise
    (2, 7, 6, 32, 33, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 9, 8, 32, 64, 3, 3, (2, 2), (1, 0, 1, 1), (1, 2)),
    (1, 6, 7, 40, 5, 3, 2, (1, 2), (0, 1, 2, 0), (2, 1)),
    (1, 5, 5, 16, 70, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1)),
    # C = 32, 64, 96, 128 with taps * C/32 <= 63: the AVX2 direct path (bconv2d_direct.c); output
    # widths leaving 1, 2, 3 pixels after the groups of 4, channel counts off the blocks of 8
    (2, 7, 9, 32, 13, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 6, 7, 64, 40, 3, 3, (2, 2), (1, 0, 1, 1), (1, 1)),
    (1, 8, 6, 96, 8, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
    (2, 5, 10, 128, 17, 3, 3, (1, 2), (1, 1, 1, 1), (1, 1)),
    (1, 9, 7, 32, 1, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1)),
    (1, 4, 6, 64, 9, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    (1, 8, 8, 64, 16, 5, 5, (1, 1), (2, 1, 2, 3), (1, 1)),  # 50 steps
    (1, 9, 9, 96, 7, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1)),   # 75 steps: the im2col path
    (1, 3, 11, 32, 3, 3, 2, (2, 1), (0, 1, 2, 0), (1, 2)),
    # ... and with oc % 64 == 0 its table-lookup kernel: byte counters widened after 7, 3, 2, 1
    # taps for C = 32, 64, 96, 128 (one and several runs), 1-3 pixels left over, 1-3 blocks of 64
    (2, 7, 9, 32, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 6, 7, 64, 128, 3, 3, (2, 2), (1, 0, 1, 1), (1, 1)),
    (1, 8, 6, 96, 64, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
    (2, 5, 10, 128, 192, 3, 3, (1, 2), (1, 1, 1, 1), (1, 1)),
    (1, 8, 8, 64, 64, 5, 5, (1, 1), (2, 1, 2, 3), (1, 1)),
    (1, 9, 7, 32, 64, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1)),
    (1, 4, 6, 128, 64, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    # wider inputs, table kernel only: a tap of 40 bytes per run; taps in runs of 32 bytes
    (2, 4, 5, 160, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 6, 5, 256, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 5, 7, 512, 128, 3, 3, (2, 1), (1, 0, 1, 1), (1, 1)),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("pad_value", [0, 1, -1])
@pytest.mark.parametrize("case", SHAPES)
def test_bconv2d_int32_exact(isa, pad_value, case):
    rng = np.random.default_rng(hash((case, pad_value)) % 2**32)
    n, h, w, c, oc, kh, kw, stride, pads, dil = case
    with xk.use_isa(isa):
        ref, res = run_bconv(rng, n, h, w, c, oc, kh, kw, stride, pads, dil, pad_value,
                             tap_layout="dense" if c % 2 else "padded")
        assert xk.last_isa() == isa
    np.testing.assert_array_equal(res.reshape(ref.shape), ref.astype(np.int32))


def test_bconv2d_pad_values_differ():
    """The three pad values give three different answers on the border (the test would be
    vacuous if the border were not exercised) and the same answer inside."""
    rng = np.random.default_rng(0)
    outs = {}
    for pv in (0, 1, -1):
        rng = np.random.default_rng(5)
        _, outs[pv] = run_bconv(rng, 1, 6, 6, 40, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), pv)
        outs[pv] = outs[pv].reshape(6, 6, 8)
    assert not np.array_equal(outs[0][0], outs[1][0]) and not np.array_equal(outs[0][0], outs[-1][0])
    np.testing.assert_array_equal(outs[0][1:-1, 1:-1], outs[1][1:-1, 1:-1])
    # pad 0 is the mean of the +1 and -1 pads on every tap, hence on every output
    np.testing.assert_array_equal(2 * outs[0], outs[1] + outs[-1])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c,oc", [(65, 70), (32, 70), (64, 13), (128, 64), (96, 3), (64, 128), (256, 64)])
def test_bconv2d_bits_output(isa, c, oc):
    rng = np.random.default_rng(1)
    n, h, w = 3, 7, 5
    thr = rng.integers(-30, 30, size=oc).astype(np.int32)
    flip = (rng.random(oc) < 0.3).astype(np.uint8)
    with xk.use_isa(isa):
        ref, res = run_bconv(rng, n, h, w, c, oc, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 0,
                             out={"kind": "bits", "threshold": thr, "flip": flip})
    ref_bits = (ref.reshape(-1, oc) < thr) ^ flip.astype(bool)
    got = unpack_pm1(res, oc) < 0
    np.testing.assert_array_equal(got, ref_bits)
    assert not pad_bits_of(res, oc).any(), "padding bits of the packed output must be zero"
    assert res.shape == (n * h * w, row_bytes(oc))


@pytest.mark.parametrize("act", ["none", "relu", "hardtanh", "prelu"])
@pytest.mark.parametrize("c,oc", [(48, 33), (64, 64)])  # im2col; direct table-lookup kernel
def test_bconv2d_float_output_stage(act, c, oc):
    from engine_util import ACT, act_ref

    rng = np.random.default_rng(2)
    scale = rng.normal(size=oc).astype(np.float32)
    bias = rng.normal(size=oc).astype(np.float32)
    post_s = rng.normal(size=oc).astype(np.float32)
    post_b = rng.normal(size=oc).astype(np.float32)
    alpha = rng.random(oc).astype(np.float32)
    stage = {"kind": "float", "scale": scale, "bias": bias, "act": ACT[act], "lo": -2.0, "hi": 3.0,
             "alpha": alpha, "post_scale": post_s, "post_bias": post_b}
    ref, res = run_bconv(rng, 2, 6, 6, c, oc, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 0, out=stage)
    y = ref.reshape(-1, oc).astype(np.float32) * scale + bias
    y = act_ref(y, act, -2.0, 3.0, alpha) * post_s + post_b
    np.testing.assert_allclose(res, y, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("stages", ["sc,bi", "relu,ps,pb", "sc,relu,ps,pb", "bi,relu,ps,pb", "sc,bi,relu,ps,pb",
                                    "sc,bi,relu"])
@pytest.mark.parametrize("c", [32, 64, 128])
@pytest.mark.parametrize("oc", [70, 128])  # the direct path's XOR and table-lookup kernels
def test_bconv2d_float_stage_exact(stages, c, oc):
    """The one-pass output stages round exactly like the op-by-op float32 reference."""
    rng = np.random.default_rng(7)
    want = set(stages.split(","))
    vec = {k: rng.normal(size=oc).astype(np.float32) if k in want else None for k in ("sc", "bi", "ps", "pb")}
    stage = {"kind": "float", "scale": vec["sc"], "bias": vec["bi"], "act": 1 if "relu" in want else 0,
             "post_scale": vec["ps"], "post_bias": vec["pb"]}
    stage = {k: v for k, v in stage.items() if v is not None}
    ref, res = run_bconv(rng, 1, 7, 6, c, oc, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 0, out=stage)
    y = ref.reshape(-1, oc).astype(np.float32)
    if vec["sc"] is not None:
        y = vec["sc"] * y
    if vec["bi"] is not None:
        y = y + vec["bi"]
    if "relu" in want:
        y = np.where(y > 0, y, np.float32(0))
    if vec["ps"] is not None:
        y = y * vec["ps"]
    if vec["pb"] is not None:
        y = y + vec["pb"]
    np.testing.assert_array_equal(res.reshape(y.shape), y)


def test_bconv2d_ignores_input_padding_bits():
    """Garbage in the padding bits of the packed input must not change the result."""
    rng = np.random.default_rng(3)
    for c in (70, 32, 40):
        _check_padding_bits_ignored(rng, c)


def _check_padding_bits_ignored(rng, c):
    n, h, w, oc = 1, 5, 5, 9
    x = rand_pm1(rng, (n, h, w, c))
    wt = rand_pm1(rng, (oc, 3, 3, c))
    xbits = pack_pm1(x.reshape(-1, c))
    dirty = xbits.copy()
    dirty[:, c // 8 + 1:] |= rng.integers(0, 256, size=dirty[:, c // 8 + 1:].shape, dtype=np.uint8)
    dirty[:, c // 8] |= np.uint8(0xFF << (c % 8) & 0xFF)
    for kh, pads in ((3, (1, 1, 1, 1)), (1, (0, 0, 0, 0))):
        wk = wt[:, :kh, :kh]
        wbits = pack_pm1(wk.reshape(oc, -1))
        shape = conv_shape(n, h, w, c, oc, kh, kh, 1, 1, 1, 1, *pads)
        clean = ops.bconv2d(shape, 0, wbits, c, xbits, {"kind": "int32"})
        got = ops.bconv2d(shape, 0, wbits, c, dirty, {"kind": "int32"})
        np.testing.assert_array_equal(got, clean)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
    c=st.sampled_from([1, 2, 7, 8, 24, 32, 63, 64, 65, 96, 127, 128, 129, 192]), oc=st.sampled_from([1, 3, 63, 64, 65, 130]),
    kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
    dil=st.integers(1, 2), pad_value=st.sampled_from([0, 1, -1]), seed=st.integers(0, 2**31),
    pads=st.tuples(*[st.integers(0, 3)] * 4),
)
def test_bconv2d_random_shapes(n, h, w, c, oc, kh, kw, sh, sw, dil, pad_value, seed, pads):
    ekh, ekw = (kh - 1) * dil + 1, (kw - 1) * dil + 1
    pads = (min(pads[0], ekh - 1), min(pads[1], ekw - 1), min(pads[2], ekh - 1), min(pads[3], ekw - 1))
    if h + pads[0] + pads[2] < ekh or w + pads[1] + pads[3] < ekw:
        return
    rng = np.random.default_rng(seed)
    ref, res = run_bconv(rng, n, h, w, c, oc, kh, kw, (sh, sw), pads, (dil, dil), pad_value,
                         tap_layout="dense" if seed % 2 else "padded")
    np.testing.assert_array_equal(res.reshape(ref.shape), ref.astype(np.int32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,k,n_out", [(1, 1, 1), (1, 63, 10), (3, 65, 64), (2, 1000, 130), (1, 4096, 65)])
def test_bdense_exact(isa, n, k, n_out):
    rng = np.random.default_rng(k)
    x = rand_pm1(rng, (n, k))
    w = rand_pm1(rng, (n_out, k))
    thr = rng.integers(-10, 10, size=n_out).astype(np.int32)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    with xk.use_isa(isa):
        res = ops.bdense(n, k, pack_pm1(w), pack_pm1(x), {"kind": "int32"})
        bits = ops.bdense(n, k, pack_pm1(w), pack_pm1(x), {"kind": "bits", "threshold": thr})
        assert xk.last_isa() == isa
    np.testing.assert_array_equal(res, ref.astype(np.int32))
    np.testing.assert_array_equal(unpack_pm1(bits, n_out) < 0, ref < thr)


def test_binarize_sign0_and_thresholds():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 70)).astype(np.float32)
    x[0, :4] = [0.0, -0.0, np.nan, -1e-30]
    bits = ops.binarize(x, None, None)
    np.testing.assert_array_equal(unpack_pm1(bits, 70) < 0, ~(x >= 0))
    t = rng.normal(size=70).astype(np.float32)
    flip = (rng.random(70) < 0.5).astype(np.uint8)
    bits = ops.binarize(x, t, flip)
    np.testing.assert_array_equal(unpack_pm1(bits, 70) < 0, (~(x >= t)) ^ flip.astype(bool))
    assert not pad_bits_of(bits, 70).any()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c", [1, 7, 8, 9, 63, 64, 65, 70, 130, 200, 4200])
@pytest.mark.parametrize("parts", ["t", "flip", "both"])
def test_binarize_thresholds_every_isa(isa, c, parts):
    """Thresholds and flips on every ISA (AVX2: 8 compares per step, masked tails) against
    !(x >= t) ^ flip, with NaN, +-inf, -0 in x and t; bits past c stay zero."""
    rng = np.random.default_rng(c)
    x = rng.normal(size=(7, c)).astype(np.float32)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-38], np.float32)
    x.flat[rng.choice(x.size, size=min(x.size, 12), replace=False)] = rng.choice(specials, size=min(x.size, 12))
    t = rng.normal(size=c).astype(np.float32) if parts != "flip" else None
    if t is not None:
        t[rng.choice(c, size=min(c, 3), replace=False)] = rng.choice(specials, size=min(c, 3))
        x[1] = t  # x equal to its threshold: not below it
    flip = (rng.random(c) < 0.5).astype(np.uint8) if parts != "t" else None
    with xk.use_isa(isa):
        bits = ops.binarize(x, t, flip)
    want = ~(x >= (t if t is not None else np.float32(0)))
    if flip is not None:
        want ^= flip.astype(bool)
    np.testing.assert_array_equal(unpack_pm1(bits, c) < 0, want)
    assert not pad_bits_of(bits, c).any()


@pytest.mark.parametrize("isa", ISAS)
def test_binarize_bad_input(isa):
    """Bad input to the binarize op names what is wrong, on every ISA."""
    x = np.ones((2, 8), np.float32)
    with xk.use_isa(isa):
        with pytest.raises(ValueError, match="empty input"):
            ops.binarize(np.zeros((0, 8), np.float32), np.zeros(8, np.float32), None)
        with pytest.raises(ValueError, match="t too short"):
            ops.binarize(x, np.zeros(3, np.float32), None)
        with pytest.raises(ValueError, match="flip too short"):
            ops.binarize(x, None, np.zeros(3, np.uint8))
        with pytest.raises(ValueError, match="must be 2-D"):
            ops.binarize(np.ones(8, np.float32), np.zeros(8, np.float32), None)


def pool_ref_bits(xpm, k, s, pads, invert=None):
    """max over +-1 ignoring padding; channels with invert use min."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(xpm).permute(0, 3, 1, 2).double()
    t, l, b, r = pads
    mx = F.max_pool2d(F.pad(x, (l, r, t, b), value=-2.0), k, s)
    mn = -F.max_pool2d(F.pad(-x, (l, r, t, b), value=-2.0), k, s)
    y = mx if invert is None else torch.where(torch.from_numpy(invert)[None, :, None, None], mn, mx)
    return y.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("n,h,w,c,k,s,pads", [
    (1, 4, 4, 1, 2, 2, (0, 0, 0, 0)),
    (3, 7, 5, 63, 2, 2, (0, 0, 0, 0)),
    (2, 8, 8, 65, 3, 2, (1, 1, 1, 1)),
    (1, 9, 9, 128, 3, 1, (1, 1, 1, 1)),
])
def test_bmaxpool_is_and_of_bits(n, h, w, c, k, s, pads):
    rng = np.random.default_rng(c)
    # mostly -1 so that the AND is not trivially 0
    x = np.where(rng.random((n, h, w, c)) < 0.8, -1.0, 1.0).astype(np.float32)
    res = ops.bmaxpool2d([n, h, w, c, k, k, s, s, *pads], pack_pm1(x.reshape(-1, c)), None)
    ref = pool_ref_bits(x, k, s, pads)
    np.testing.assert_array_equal(unpack_pm1(res, c), ref.reshape(-1, c))
    assert (ref < 0).any() and (ref > 0).any()
    inv = rng.random(c) < 0.5
    res = ops.bmaxpool2d([n, h, w, c, k, k, s, s, *pads], pack_pm1(x.reshape(-1, c)),
                         pack_pm1(np.where(inv, -1.0, 1.0)[None]).ravel())
    np.testing.assert_array_equal(unpack_pm1(res, c), pool_ref_bits(x, k, s, pads, inv).reshape(-1, c))
    assert not pad_bits_of(res, c).any()


def test_bconcat_bit_offsets():
    rng = np.random.default_rng(6)
    cs = [1, 63, 65, 7, 64]
    parts = [rand_pm1(rng, (5, c)) for c in cs]
    res = ops.bconcat(5, [pack_pm1(p) for p in parts], cs)
    np.testing.assert_array_equal(unpack_pm1(res, sum(cs)), np.concatenate(parts, axis=1))
    assert not pad_bits_of(res, sum(cs)).any()


def test_errors_are_clear():
    rng = np.random.default_rng(7)
    x = pack_pm1(rand_pm1(rng, (9, 8)))
    w = pack_pm1(rand_pm1(rng, (4, 72)))
    with pytest.raises(ValueError, match="kernel 5x5.*larger than padded input 3x3"):
        ops.bconv2d(conv_shape(1, 3, 3, 8, 4, 5, 5), 0, w, 8, x, {"kind": "int32"})
    with pytest.raises(ValueError, match="pad value 2"):
        ops.bconv2d(conv_shape(1, 3, 3, 8, 4, 3, 3), 2, w, 8, x, {"kind": "int32"})
    with pytest.raises(ValueError, match="needs thresholds"):
        ops.bconv2d(conv_shape(1, 3, 3, 8, 4, 3, 3), 0, w, 8, x, {"kind": "bits"})
    with pytest.raises(ValueError, match="cannot hold 9 taps x 8 channels"):
        ops.bconv2d(conv_shape(1, 3, 3, 8, 4, 3, 3), 0, w, 64, x, {"kind": "int32"})


def _rerun_exactness_tests_with(switch: str) -> None:
    """The exactness tests of this file, again in a process with the environment switch set."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, switch: "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", __file__, "-k",
                        "int32_exact or bits_output or random_shapes or stage_exact or padding_bits"],
                       cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout


@pytest.mark.skipif("avx2" not in ISAS, reason="the conv kernel switch is AVX2's")
def test_bconv2d_without_the_conv_kernel():
    """AVX2 convolutions run the nibble-split kernel; XK_NO_CONV_KERNEL=1 (read once per process)
    routes them to the column-lane kernel of the dense layers. The exactness tests above, again
    in a process with the switch set, so both kernels stay tested on every conv shape."""
    _rerun_exactness_tests_with("XK_NO_CONV_KERNEL")


@pytest.mark.skipif("avx2" not in ISAS, reason="the direct path is AVX2's")
def test_bconv2d_without_the_direct_path():
    """Convolutions with C = 32, 64, 96 or 128 run the direct path (bconv2d_direct.c);
    XK_NO_DIRECT_BCONV=1 (read once per process) routes them through im2col and the GEMM kernels.
    The exactness tests above, again in a process with the switch set, so both stay tested."""
    _rerun_exactness_tests_with("XK_NO_DIRECT_BCONV")


@pytest.mark.skipif("avx2" not in ISAS, reason="the direct path is AVX2's")
@pytest.mark.parametrize("oc", [24, 128])  # XOR kernel; table-lookup kernel
def test_bconv2d_direct_path_equals_im2col_float(oc):
    """Float outputs (folded BatchNorm + ReLU + post-BatchNorm, QuickNet's stage) of the direct
    path and of the im2col path are bit-identical: the same float operations in the same order."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, sys; sys.path.insert(0, %r)\n"
        "from test_ops_binary import run_bconv\n"
        "rng = np.random.default_rng(11); oc = %d\n"
        "st = {'kind': 'float', 'scale': rng.normal(size=oc).astype(np.float32), 'bias': rng.normal(size=oc).astype(np.float32),"
        " 'act': 1, 'post_scale': rng.normal(size=oc).astype(np.float32), 'post_bias': rng.normal(size=oc).astype(np.float32)}\n"
        "_, y = run_bconv(rng, 2, 9, 7, 64, oc, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 0, out=st)\n"
        "sys.stdout.buffer.write(np.ascontiguousarray(y, dtype=np.float32).tobytes())\n"
    ) % (str(__import__("pathlib").Path(__file__).parent), oc)
    outs = []
    for off in (False, True):
        env = {k: v for k, v in os.environ.items() if k != "XK_NO_DIRECT_BCONV"}
        if off:
            env["XK_NO_DIRECT_BCONV"] = "1"
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        outs.append(np.frombuffer(r.stdout, dtype=np.float32))
    assert outs[0].size == 2 * 9 * 7 * oc and np.isfinite(outs[0]).all()
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("c", [64, 128, 256, 512])
@pytest.mark.parametrize("pattern", ["all_differ", "all_agree", "random"])
def test_bconv2d_table_kernel_counter_runs_exact(c, pattern):
    """The table kernel's byte counters take at most 4 per step and are widened after at most
    63 steps: with every input bit opposite to its weight bit (or every bit equal, for the
    complement) each step adds 4 to every counter, so a run one step longer would wrap a byte.
    Exact int32 sums and float outputs, on a width leaving 3 pixels per row (groups across
    row ends)."""
    rng = np.random.default_rng(c)
    n, h, w, oc = 2, 5, 7, 64
    if pattern == "random":
        x = rand_pm1(rng, (n, h, w, c))
        wt = rand_pm1(rng, (oc, 3, 3, c))
    else:
        x = -np.ones((n, h, w, c), np.float32)
        wt = np.ones((oc, 3, 3, c), np.float32) * (1 if pattern == "all_differ" else -1)
    shape = conv_shape(n, h, w, c, oc, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1)
    xbits, wbits = pack_pm1(x.reshape(-1, c)), pack_pm1(wt.reshape(oc, -1))
    for pad_value in (0, 1, -1):
        ref = conv_ref(x, wt, (1, 1), (1, 1, 1, 1), (1, 1), pad_value).reshape(-1, oc)
        res = ops.bconv2d(shape, pad_value, wbits, c, xbits, {"kind": "int32"})
        np.testing.assert_array_equal(res.reshape(ref.shape), ref.astype(np.int32))
        scale = rng.normal(size=oc).astype(np.float32)
        yf = ops.bconv2d(shape, pad_value, wbits, c, xbits, {"kind": "float", "scale": scale})
        np.testing.assert_array_equal(yf.reshape(ref.shape), scale * ref.astype(np.float32))


@pytest.mark.parametrize("case", [
    (3, 7, 5, 64, 64, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1)),  # stride > kernel: rows skipped between images
    (2, 9, 6, 128, 128, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (2, 5, 5, 32, 64, 2, 2, (3, 3), (1, 0, 0, 1), (1, 1)),
    (3, 4, 3, 96, 64, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
])
def test_bconv2d_table_kernel_groups_across_rows_and_images(case):
    """The table kernel takes output pixels 4 at a time in output order, across the ends of
    rows and images (widths 3, 5, 6 leave 1-3 pixels per row): exact against the reference."""
    n, h, w, c, oc, kh, kw, stride, pads, dil = case
    for pad_value in (0, -1):
        ref, res = run_bconv(np.random.default_rng(n * h + c), n, h, w, c, oc, kh, kw, stride, pads, dil, pad_value)
        np.testing.assert_array_equal(res.reshape(ref.shape), ref.astype(np.int32))
