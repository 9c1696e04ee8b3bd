"""Corrupted, truncated and inconsistent model files are rejected before anything runs, with a
message naming the problem (docs/format.md §7)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import xnorkit

import xkfile as X
from engine_util import rand_pm1


def small_model(**over):
    """x f32 [1,6,6,8] -> sign -> bconv 3x3 (pad 0) -> bits -> unpack -> out."""
    rng = np.random.default_rng(0)
    b = X.Builder()
    x = b.act("x", X.F32, [1, 6, 6, 8], layout=1)
    s = b.act("s", X.BITS, [1, 6, 6, 8])
    b.op("sign", "sign", [x], s, params=X.sign_params())
    c = b.act("c", X.BITS, [1, 6, 6, 16])
    w = b.const("conv.weight", rand_pm1(rng, (16, 72)), X.BITS)
    thr = b.const("conv.thr", np.zeros(16, np.int32))
    b.op("bconv2d", "conv", [s], c, w, over.get("stage", dict(kind=X.OUT_BITS, threshold=thr)),
         over.get("params", X.conv_params(3, 3, pads=(1, 1, 1, 1), pad_value=over.get("pad_value", 0))))
    y = b.act("y", X.F32, [1, 6, 6, 16], layout=1)
    b.op("unpack", "unpack", [c], y)
    b.inputs, b.outputs = [x], [y]
    return b


def load(data):
    return xnorkit.Model(bytes(data))


def test_valid_model_runs():
    y = load(small_model().build()).run(np.ones((1, 8, 6, 6), np.float32))
    assert y.shape == (1, 16, 6, 6)


def test_truncated_files_rejected():
    data = small_model().build()
    for cut in (0, 10, 127, 128, 500, len(data) - 1):
        with pytest.raises(ValueError, match="truncated"):
            load(data[:cut])


def test_trailing_bytes_rejected():
    with pytest.raises(ValueError, match="trailing data"):
        load(small_model().build() + b"\0" * 64)


def test_every_flipped_byte_is_caught():
    data = small_model().build()
    rng = np.random.default_rng(1)
    for pos in list(range(0, 128, 7)) + list(rng.integers(128, len(data), size=60)):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(ValueError):
            load(bad)


def test_checksum_messages():
    data = bytearray(small_model().build())
    data[-1] ^= 1
    with pytest.raises(ValueError, match=r"checksum mismatch \(crc32"):
        load(data)
    data = bytearray(small_model().build())
    data[20] ^= 1  # file_size, header checksum no longer matches
    with pytest.raises(ValueError, match="header checksum mismatch"):
        load(data)


def header_field(name, value):
    def corrupt(hdr, buf):
        hdr[name] = value
    return corrupt


@pytest.mark.parametrize("field,value,msg", [
    ("magic", b"NOPE", "magic"),
    ("major", 2, "unsupported format version 2.0"),
    ("header_size", 64, "header_size is 64"),
    ("flags", 0x7, "flags 0x7"),
    ("flags", 0x1F, "flags 0x1f"),
    ("no", 0, "empty graph"),
    ("arena_size", 65, "arena_size 65 is not a multiple of 64"),
    ("t_off", 100, "tensor table offset 100 is not a multiple of 64"),
    ("s_size", 0, "string table is empty"),
    ("nt", 10_000, "tensor table .* outside the table area"),
])
def test_bad_header_fields(field, value, msg):
    with pytest.raises(ValueError, match=msg):
        load(small_model().build(corrupt=header_field(field, value)))


def patch(data, offset, fmt, value):
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return X.finalize(buf)


def test_bad_tensor_fields():
    data = small_model().build()
    t = lambda i: X.tensor_offset(data, i)  # noqa: E731
    cases = [
        (patch(data, t(0) + 4, "<B", 9), "unknown dtype 9"),
        (patch(data, t(0) + 5, "<B", 3), "unknown storage 3"),
        (patch(data, t(0) + 6, "<B", 5), "ndim 5 outside 1..4"),
        (patch(data, t(0) + 12, "<I", 0), "dimension 1 is zero"),
        (patch(data, t(0) + 40, "<Q", 12345), "size 12345 bytes, expected"),
        (patch(data, t(1) + 24, "<I", 16), "row_bytes 16, expected 8"),
        (patch(data, t(0) + 32, "<Q", 1 << 20), "past arena_size"),
        (patch(data, t(0) + 32, "<Q", 32), "offset 32 is not a multiple of 64"),
        (patch(data, t(3) + 32, "<Q", 1 << 40), "outside the data area"),
        (patch(data, t(0) + 0, "<I", 1 << 30), "name offset .* outside the string table"),
        (patch(patch(data, t(0) + 8, "<I", 2), t(0) + 40, "<Q", 2304), "activation batch dimension is 2"),
    ]
    for bad, msg in cases:
        with pytest.raises(ValueError, match=msg):
            load(bad)


def test_bad_op_fields():
    data = small_model().build()
    o = lambda i: X.op_offset(data, i)  # noqa: E731
    cases = [
        (patch(data, o(0), "<H", 99), "unknown kind 99"),
        (patch(data, o(1) + 8, "<i", 40), "input tensor index 40 out of range"),
        (patch(data, o(2) + 24, "<i", 1), "output must be F32"),
        (patch(data, o(1) + 28, "<i", 4), "weights tensor 4 has dtype 3, expected 5"),
        (patch(data, o(1) + 2, "<H", 2), "unused input slot|takes 1 input"),
        (patch(data, o(1) + 32, "<I", 7), "output kind 7 not supported"),
        (patch(data, o(1) + 68, "<i", -1), "needs a threshold tensor"),
        (patch(data, o(1) + 36, "<I", 9), "unknown activation 9"),
        (patch(data, o(1) + 80 + 8, "<I", 0), "stride .* must all be >= 1"),
        (patch(data, o(1) + 80 + 24, "<I", 3), "padding .* must be smaller than the kernel"),
        (patch(data, o(1) + 80 + 40, "<i", 2), r"pad_value 2 not in \{0, \+1, -1\}"),
        (patch(data, o(1) + 80 + 44, "<I", 2), "groups 2"),
        (patch(data, o(1) + 80 + 0, "<I", 5), "output is 6x6, the geometry gives 4x6"),
        (patch(data, o(1) + 68, "<i", 1), "threshold tensor 1 is an activation"),
        (patch(data, o(0) + 32, "<I", 1), "output stage set on an op that has none"),
    ]
    for bad, msg in cases:
        with pytest.raises(ValueError, match=msg):
            load(bad)


def relu_chain(order=(0, 1), second_output=None):
    b = X.Builder()
    x = b.act("x", X.F32, [1, 10])
    h = b.act("h", X.F32, [1, 10])
    y = b.act("y", X.F32, [1, 10])
    defs = [("a", [x], h), ("b", [h], y if second_output is None else second_output)]
    for i in order:
        name, ins, out = defs[i]
        b.op("activation", name, ins, out if out != "h" else h, params=X.eltwise_params(act=1))
    b.inputs, b.outputs = [x], [y]
    return b


def test_execution_order_checks():
    assert load(relu_chain().build()).run(np.arange(-5, 5, dtype=np.float32)[None]).min() == 0
    with pytest.raises(ValueError, match="op 0 'b' reads tensor 1 'h' before any op writes it"):
        load(relu_chain(order=(1, 0)).build())
    b = relu_chain(second_output=1)  # 'b' writes 'h' again
    with pytest.raises(ValueError, match="writes tensor 1 'h', which is already written"):
        load(b.build())


def test_overlapping_plan():
    data = small_model().build()
    # move tensor 'c' onto 's' while both are live (s is read by the op writing c)
    s_off = struct.unpack_from("<Q", data, X.tensor_offset(data, 1) + 32)[0]
    bad = patch(data, X.tensor_offset(data, 2) + 32, "<Q", s_off)
    with pytest.raises(ValueError, match="arena plan: live tensors"):
        load(bad)


def test_activation_plan_may_reuse_dead_memory():
    """x is dead after 'sign', so 'c' may take its place (x: 1152 bytes, c: 288)."""
    data = small_model().build()
    x_off = struct.unpack_from("<Q", data, X.tensor_offset(data, 0) + 32)[0]
    ok = patch(data, X.tensor_offset(data, 2) + 32, "<Q", x_off)
    y = load(ok).run(np.ones((1, 8, 6, 6), np.float32))
    ref = load(data).run(np.ones((1, 8, 6, 6), np.float32))
    np.testing.assert_array_equal(y, ref)


def test_arena_size_and_errors_from_c_api():
    from xnorkit import _core

    data = np.frombuffer(small_model().build(), dtype=np.uint8).copy()
    n1 = _core.model_arena_size(data, 1, 1)
    n4 = _core.model_arena_size(data, 4, 1)
    assert n4 > n1 > 0
    with pytest.raises(ValueError, match="truncated"):
        _core.model_arena_size(data[:200].copy(), 1, 1)


def test_missing_file_and_bad_options(tmp_path):
    with pytest.raises(FileNotFoundError):
        xnorkit.Model(tmp_path / "nope.xk")
    p = tmp_path / "m.xk"
    p.write_bytes(small_model().build()[:300])
    with pytest.raises(ValueError, match=r"m\.xk: model file truncated"):
        xnorkit.Model(p)
    with pytest.raises(ValueError, match="max_batch"):
        xnorkit.Model(small_model().build(), max_batch=0)
