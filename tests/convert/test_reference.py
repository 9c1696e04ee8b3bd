"""reference.py against independent naive loops: binary conv with pad 0 / +1 / -1 (odd and
even channel counts, strides, dilations), thresholds and flips, bit max-pool with inverted
channels, int8 quantization, and the output stage order."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from xnorkit import reference as ref
from xnorkit.convert import format as xkf


def naive_bconv(x, w, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, pad_value):
    """x [N,H,W,C] +-1, w [OC,KH,KW,C] +-1 -> exact dot over taps (pad 0: valid taps only)."""
    n, h, wd, c = x.shape
    oc = w.shape[0]
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, oh, ow, oc), np.int64)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for o in range(oc):
                    acc = 0
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = oy * sh - pt + ky * dh, ox * sw - pl + kx * dw
                            if 0 <= iy < h and 0 <= ix < wd:
                                acc += int(np.dot(x[b, iy, ix], w[o, ky, kx]))
                            else:
                                acc += int(pad_value * w[o, ky, kx].sum())
                    out[b, oy, ox, o] = acc
    return out


def conv_model(n_in, c, oc, geo, pad_value, w, out_kind, threshold=None, flip=None):
    _, h, wd, _ = n_in
    oh = xkf.conv_out_size(h, geo["kh"], geo["stride_h"], geo["dil_h"], geo["pad_top"], geo["pad_bottom"])
    ow = xkf.conv_out_size(wd, geo["kw"], geo["stride_w"], geo["dil_w"], geo["pad_left"], geo["pad_right"])
    x = xkf.Tensor("x", "f32", "arena", (1, h, wd, c), offset=0)
    s = xkf.Tensor("s", "bits", "arena", (1, h, wd, c), offset=xkf.align(h * wd * c * 4))
    y = xkf.Tensor("y", "bits" if out_kind == "bits" else "f32", "arena", (1, oh, ow, oc), offset=0)
    T = [x, s, y, xkf.Tensor("w", "bits", "const", (oc, geo["kh"] * geo["kw"] * c),
                             data=xkf.pack_bits(w.reshape(oc, -1)))]
    stage = {"kind": out_kind}
    if out_kind == "bits":
        T.append(xkf.Tensor("t", "i32", "const", (oc,), data=threshold.astype(np.int32)))
        T.append(xkf.Tensor("f", "u8", "const", (oc,), data=flip.astype(np.uint8)))
        stage.update(threshold=4, flip=5)
    ops = [xkf.Op("sign", "q", [0], 1), xkf.Op("bconv2d", "conv", [1], 2, 3, stage, dict(geo, pad_value=pad_value))]
    y.offset = xkf.align(s.offset + s.nbytes)
    return xkf.decode(xkf.encode(xkf.XkModel(T, ops, [0], [2], arena_size=xkf.align(y.offset + y.nbytes))))


@settings(max_examples=25, deadline=None)
@given(c=st.sampled_from([1, 2, 3, 8, 63, 64, 65]), oc=st.integers(1, 5), k=st.sampled_from([(1, 1), (3, 3), (2, 3)]),
       s=st.integers(1, 2), d=st.integers(1, 2), p=st.integers(0, 2), pad_value=st.sampled_from([0, 1, -1]),
       hw=st.sampled_from([(1, 1), (4, 5), (6, 3)]), seed=st.integers(0, 2**31 - 1))
def test_binary_conv_accumulator_matches_naive_loops(c, oc, k, s, d, p, pad_value, hw, seed):
    rng = np.random.default_rng(seed)
    kh, kw = k
    h, wd = hw
    if (h + 2 * p) < d * (kh - 1) + 1 or (wd + 2 * p) < d * (kw - 1) + 1:
        return
    geo = dict(kh=kh, kw=kw, stride_h=s, stride_w=s, dil_h=d, dil_w=d, pad_top=p, pad_left=p, pad_bottom=p,
               pad_right=min(p, 1), groups=1)
    if wd + p + geo["pad_right"] < d * (kw - 1) + 1:
        return
    x = np.where(rng.random((2, h, wd, c)) < 0.5, -1.0, 1.0).astype(np.float32)
    w = np.where(rng.random((oc, kh, kw, c)) < 0.5, -1.0, 1.0)
    m = conv_model((2, h, wd, c), c, oc, geo, pad_value, w, "float")
    got = ref.run(m, x, torch_layout=False)[0]
    want = naive_bconv(x, w, kh, kw, s, s, d, d, p, p, p, geo["pad_right"], pad_value)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    # thresholds and flips on the same accumulators: bit = (acc < T) XOR flip
    T = rng.integers(-kh * kw * c, kh * kw * c + 1, oc)
    fl = rng.integers(0, 2, oc)
    mb = conv_model((2, h, wd, c), c, oc, geo, pad_value, w, "bits", T, fl)
    bits = ref.run(mb, x, torch_layout=False)[0]
    np.testing.assert_array_equal(bits < 0, (want < T) ^ fl.astype(bool))


def test_input_sign_and_nan():
    geo = dict(kh=1, kw=1, stride_h=1, stride_w=1, dil_h=1, dil_w=1, pad_top=0, pad_left=0, pad_bottom=0,
               pad_right=0, groups=1)
    m = conv_model((1, 1, 1, 4), 4, 1, geo, 0, np.ones((1, 1, 1, 4)), "float")
    x = np.array([[[[0.0, -0.0, np.nan, -1e-30]]]], np.float32)
    # sign0: 0 and -0 -> +1, NaN and negatives -> -1
    assert ref.run(m, x, torch_layout=False)[0].item() == 0.0


def test_output_stage_order_and_rounding():
    """y = post_scale * act(scale * acc + bias) + post_bias, one float32 rounding per step."""
    op = xkf.Op("bdense", "fc", [0], 1, 2, {"kind": "float", "scale": 3, "bias": 4, "act": "hardtanh",
                                             "act_lo": -0.5, "act_hi": 2.0, "post_scale": 5, "post_bias": 6})
    vals = [np.float32(0.1), np.float32(1 / 3), np.float32(-0.7), np.float32(3.0), np.float32(0.05)]
    T = [None, None, None] + [xkf.Tensor(n, "f32", "const", (1,), data=np.array([v], np.float32))
                              for n, v in zip(["s", "b", "ps", "pb"], vals[:4])]
    m = xkf.XkModel(T, [op], [], [])
    acc = np.array([[7], [-7], [0], [100]])
    got = ref.output_stage(m, op, acc, True)
    f = np.float32
    for a, g in zip(acc[:, 0], got[:, 0]):
        y = f(f(a) * vals[0])
        y = f(y + vals[1])
        y = min(max(y, f(-0.5)), f(2.0))
        y = f(f(y * vals[2]) + vals[3])
        assert g == y


def test_quantize_input_rounds_half_to_even_and_clamps():
    q = ref.quantize_input(np.array([0.5, 1.5, 2.5, -0.5, 1000.0, -1000.0, np.nan], np.float32), 1.0, 3)
    assert q.tolist() == [0, 2, 2, 0, 124, -131, -131]


def test_bit_maxpool_and_or():
    # pool over 2 taps: channel 0 (AND of bits = max over +-1), channel 1 inverted (OR = min)
    x = xkf.Tensor("x", "bits", "arena", (1, 1, 2, 2), offset=0)
    y = xkf.Tensor("y", "bits", "arena", (1, 1, 1, 2), offset=64)
    inv = xkf.Tensor("inv", "bits", "const", (2,), data=xkf.pack_bits(np.array([[1.0, -1.0]])))
    op = xkf.Op("maxpool2d", "pool", [0], 1, params=dict(kh=1, kw=2, stride_h=1, stride_w=2, invert=2))
    m = xkf.XkModel([x, y, inv], [op], [0], [1])
    for a in ([1, 1], [1, -1], [-1, 1], [-1, -1]):
        for b in ([1, 1], [1, -1], [-1, 1], [-1, -1]):
            xin = np.array([[[[a[0], b[0]], [a[1], b[1]]]]], np.float32)
            out = ref._run_op(m, op, [xin])
            assert out[0, 0, 0, 0] == max(a[0], a[1]) and out[0, 0, 0, 1] == min(b[0], b[1])
