"""The .xk format: C/Python layout agreement, bit-order probe, round trips, and the reader's
rejection of corrupted, truncated and inconsistent files (docs/format.md §1, §7)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from xnorkit.convert import format as xkf

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------- a tiny model
def tiny_model(bias: bool = True) -> xkf.XkModel:
    """input f32 [1,4,4,3] -> sign -> bconv2d 3x3 pad 0 (bits out) -> maxpool 2 -> flatten ->
    bdense (float out) ; everything hand-written, independent of the converter."""
    rng = np.random.default_rng(0)
    T = [
        xkf.Tensor("x", "f32", "arena", (1, 4, 4, 3), "nchw", 0),
        xkf.Tensor("s", "bits", "arena", (1, 4, 4, 3), offset=256),
        xkf.Tensor("c", "bits", "arena", (1, 4, 4, 5), offset=0),
        xkf.Tensor("p", "bits", "arena", (1, 2, 2, 5), offset=384),
        xkf.Tensor("f", "bits", "arena", (1, 20), offset=0),
        xkf.Tensor("y", "f32", "arena", (1, 2), offset=64),
    ]
    w = np.where(rng.random((5, 27)) < 0.5, -1.0, 1.0)
    T.append(xkf.Tensor("conv.weight", "bits", "const", (5, 27), data=xkf.pack_bits(w)))
    T.append(xkf.Tensor("conv.threshold", "i32", "const", (5,), data=np.array([0, 3, -2, -(2**31), 1], np.int32)))
    T.append(xkf.Tensor("conv.flip", "u8", "const", (5,), data=np.array([0, 1, 0, 1, 0], np.uint8)))
    T.append(xkf.Tensor("pool.invert", "bits", "const", (5,), data=xkf.pack_bits(np.array([[1, -1, 1, -1, 1.0]]))))
    wd = np.where(rng.random((2, 20)) < 0.5, -1.0, 1.0)
    T.append(xkf.Tensor("fc.weight", "bits", "const", (2, 20), data=xkf.pack_bits(wd)))
    T.append(xkf.Tensor("fc.scale", "f32", "const", (2,), data=np.array([0.5, -2.0], np.float32)))
    T.append(xkf.Tensor("fc.bias", "f32", "const", (2,), data=np.array([0.25, 1.0], np.float32)))
    conv = dict(kh=3, kw=3, stride_h=1, stride_w=1, dil_h=1, dil_w=1, pad_top=1, pad_left=1, pad_bottom=1,
                pad_right=1, pad_value=0, groups=1)
    ops = [
        xkf.Op("sign", "conv.input_quantizer", [0], 1),
        xkf.Op("bconv2d", "conv", [1], 2, 6, {"kind": "bits", "threshold": 7, "flip": 8}, conv),
        xkf.Op("maxpool2d", "pool", [2], 3, params=dict(kh=2, kw=2, stride_h=2, stride_w=2, invert=9)),
        xkf.Op("flatten", "flat", [3], 4, params=dict(order=0)),
        xkf.Op("bdense", "fc", [4], 5, 10, {"kind": "float", "scale": 11, "bias": 12 if bias else -1}),
    ]
    meta = {"labels": ("utf8", "yes\nno"), "input_mean": ("f32", np.array([0.5], np.float32)),
            "config": ("json", {"lr": 0.01, "model": "tiny"})}
    return xkf.XkModel(T, ops, [0], [5], meta, arena_size=448)


@pytest.fixture(scope="module")
def tiny_bytes() -> bytes:
    return xkf.encode(tiny_model())


def _recrc(buf: bytearray) -> bytes:
    """Recompute both checksums so that a test reaches the semantic checks."""
    struct.pack_into("<I", buf, 120, zlib.crc32(bytes(buf[128:])) & 0xFFFFFFFF)
    struct.pack_into("<I", buf, 124, zlib.crc32(bytes(buf[:124])) & 0xFFFFFFFF)
    return bytes(buf)


# ----------------------------------------------------------------------------------- layout
def test_struct_sizes_and_constants_match_the_c_header(tmp_path):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    prog = tmp_path / "probe.c"
    prog.write_text(r"""
#include <stdio.h>
#include <stddef.h>
#include "xnorkit/xk_format.h"
int main(void) {
  printf("%zu %zu %zu %zu %zu %zu\n", sizeof(xkf_header), sizeof(xkf_tensor), sizeof(xkf_output_stage),
         sizeof(xkf_op_params), sizeof(xkf_op), sizeof(xkf_meta));
  printf("%zu %zu %zu %zu %zu %zu\n", offsetof(xkf_header, file_size), offsetof(xkf_header, arena_size),
         offsetof(xkf_header, tensor_count), offsetof(xkf_header, crc32), offsetof(xkf_header, header_crc32),
         offsetof(xkf_header, data_offset));
  printf("%zu %zu %zu %zu\n", offsetof(xkf_tensor, row_bytes), offsetof(xkf_tensor, offset),
         offsetof(xkf_op, out), offsetof(xkf_op, p));
  printf("%u %u %u %u %u\n", XKF_VERSION_MAJOR, XKF_ALIGN, XKF_FLAGS_REQUIRED, XKF_MAGIC_U32,
         (unsigned)XKF_PACKED_ROW_BYTES(65));
  printf("%d %d %d %d %d %d\n", XKF_OP_BCONV2D, XKF_OP_SIGN, XKF_OP_FLATTEN, XKF_OP_SOFTMAX, XKF_DTYPE_BITS,
         XKF_ACT_LEAKY);
  printf("%zu %zu %zu\n", offsetof(xkf_conv_params, pad_value), offsetof(xkf_conv_params, in_scale),
         offsetof(xkf_pool_params, invert));
  return 0;
}
""")
    exe = tmp_path / "probe"
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", "-I", str(ROOT / "include"), str(prog), "-o", str(exe)],
                   check=True)
    lines = [list(map(int, line.split())) for line in subprocess.check_output([str(exe)], text=True).splitlines()]
    assert lines[0] == [xkf.HEADER_SIZE, xkf.TENSOR_SIZE, xkf.STAGE_SIZE, xkf.PARAMS_SIZE, xkf.OP_SIZE,
                        xkf.META_SIZE]
    # offsets of the fields the Python reader unpacks, in HEADER_FMT order
    fields = re.findall(r"(\d*s|[a-zA-Z])", xkf.HEADER_FMT[1:])
    offs = [struct.calcsize("<" + "".join(fields[:i])) for i in range(len(fields))]
    # 0 magic .. 5 file_size, 6 arena_size, 13 data_offset, 15 tensor_count, 21 crc32, 22 header_crc32
    assert lines[1] == [offs[5], offs[6], offs[15], offs[21], offs[22], offs[13]] == [16, 24, 96, 120, 124, 80]
    assert lines[2] == [24, 32, 32, 80]
    assert lines[3] == [xkf.VERSION_MAJOR, xkf.ALIGN, xkf.FLAGS_REQUIRED, struct.unpack("<I", xkf.MAGIC)[0],
                        xkf.packed_row_bytes(65)]
    assert lines[4] == [xkf.OP["bconv2d"], xkf.OP["sign"], xkf.OP["flatten"], xkf.OP["softmax"], xkf.DTYPE["bits"],
                        xkf.ACT["leaky"]]
    conv_names = [n for n, _, _ in xkf.PARAM_FIELDS["conv2d"]]
    pool_names = [n for n, _, _ in xkf.PARAM_FIELDS["maxpool2d"]]
    assert lines[5] == [4 * conv_names.index("pad_value"), 4 * conv_names.index("in_scale"),
                        4 * pool_names.index("invert")]


def test_one_hot_bit_order_probe():
    """Element i of a row is bit i % 8 of byte i / 8, bit 1 means -1, rows pad to 64 bits."""
    for k in (1, 7, 8, 63, 64, 65, 130):
        assert xkf.packed_row_bytes(k) == 8 * ((k + 63) // 64)
        for i in range(k):
            row = np.ones(k)
            row[i] = -1.0
            b = xkf.pack_bits(row[None])[0]
            assert b.size == xkf.packed_row_bytes(k)
            assert [j for j in range(b.size * 8) if b[j // 8] >> (j % 8) & 1] == [i]
            assert np.array_equal(xkf.unpack_bits(b[None], k)[0], row)
    # sign0: 0 packs as +1, NaN as -1
    assert xkf.pack_bits(np.array([[0.0, -0.0, np.nan, -1e-30]]))[0, 0] == 0b1100


# ----------------------------------------------------------------------------------- round trip
def test_round_trip_keeps_every_field(tiny_bytes):
    m = xkf.decode(tiny_bytes)
    ref = tiny_model()
    assert [t.name for t in m.tensors] == [t.name for t in ref.tensors]
    for a, b in zip(m.tensors, ref.tensors):
        assert (a.dtype, a.storage, a.shape, a.torch_layout) == (b.dtype, b.storage, b.shape, b.torch_layout)
        if b.storage == "const":
            assert np.array_equal(a.data, b.data) and a.offset % 64 == 0
        else:
            assert a.offset == b.offset
    assert [(o.kind, o.name, o.inputs, o.output, o.weights) for o in m.ops] == \
           [(o.kind, o.name, o.inputs, o.output, o.weights) for o in ref.ops]
    assert m.ops[1].params["pad_value"] == 0 and m.ops[1].out["kind"] == "bits" and m.ops[1].out["flip"] == 8
    assert m.ops[4].out["scale"] == 11 and m.ops[4].out["kind"] == "float"
    assert m.meta_value("labels") == "yes\nno" and m.meta_value("config") == {"lr": 0.01, "model": "tiny"}
    assert np.array_equal(m.meta_value("input_mean"), [0.5])
    assert m.arena_size == 448 and m.version == (1, 0)
    assert xkf.encode(m) == tiny_bytes  # deterministic


def test_write_is_atomic(tmp_path, tiny_bytes, monkeypatch):
    p = tmp_path / "m.xk"
    assert xkf.write(p, tiny_bytes) == len(tiny_bytes)
    assert p.read_bytes() == tiny_bytes and xkf.read(p).ops[1].name == "conv"
    assert [q.name for q in tmp_path.iterdir()] == ["m.xk"]

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(xkf.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        xkf.write(p, b"XNRK" + b"\0" * 200)
    assert p.read_bytes() == tiny_bytes  # the old file is intact, no temporary left behind
    assert [q.name for q in tmp_path.iterdir()] == ["m.xk"]


# ----------------------------------------------------------------------------------- rejection
def test_truncated_files_are_rejected(tiny_bytes):
    for n in (0, 10, 127, 128, len(tiny_bytes) // 2, len(tiny_bytes) - 1):
        with pytest.raises(xkf.FormatError, match="bytes"):
            xkf.decode(tiny_bytes[:n])


def test_every_flipped_byte_is_detected(tiny_bytes):
    rng = np.random.default_rng(0)
    for pos in list(range(0, 128, 3)) + list(rng.integers(128, len(tiny_bytes), 60)):
        bad = bytearray(tiny_bytes)
        bad[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(xkf.FormatError):
            xkf.decode(bytes(bad))


@pytest.mark.parametrize("edit, message", [
    (lambda b: b.__setitem__(slice(0, 4), b"XNRX"), "magic"),
    (lambda b: struct.pack_into("<H", b, 4, 2), "version_major"),
    (lambda b: struct.pack_into("<I", b, 12, 0x7), "flags"),
    (lambda b: struct.pack_into("<I", b, 12, 0x1F), "unknown bits"),
])
def test_header_fields_are_checked(tiny_bytes, edit, message):
    bad = bytearray(tiny_bytes)
    edit(bad)
    struct.pack_into("<I", bad, 124, zlib.crc32(bytes(bad[:124])) & 0xFFFFFFFF)
    with pytest.raises(xkf.FormatError, match=message):
        xkf.decode(bytes(bad))


def _tensor_off(m_bytes: bytes, i: int) -> int:
    return struct.unpack_from("<Q", m_bytes, 32)[0] + i * xkf.TENSOR_SIZE


def _op_off(m_bytes: bytes, j: int) -> int:
    return struct.unpack_from("<Q", m_bytes, 40)[0] + j * xkf.OP_SIZE


@pytest.mark.parametrize("case, message", [
    ("unknown_op", r"op 1 .*kind: unknown op kind 99"),
    ("bad_input_index", r"op 1 .*inputs: 77 is not an activation tensor index"),
    ("weight_not_const", r"weights: 3 is not a constant tensor index"),
    ("pad_value", r"pad_value must be 0, \+1 or -1, got 2"),
    ("zero_stride", r"stride_h must be >= 1"),
    ("tensor_dtype", r"tensor 0 \(x\)\.dtype: unknown value 9"),
    ("tensor_size", r"tensor 6 \(conv.weight\)\.size: expected 40 bytes"),
    ("blob_misaligned", r"tensor 6 \(conv.weight\): offset .* is not a multiple of 64"),
    ("arena_overflow", r"tensor 3 \(p\): arena range .* exceeds arena_size"),
    ("arena_overlap", r"tensors .* are live at the same time but overlap"),
    ("read_before_write", r"op 0 .*reads tensor 2 \(c\) before any op writes it"),
    ("threshold_len", r"out.threshold tensor conv.threshold must have 5 elements"),
    ("flip_values", r"flip values must be 0 or 1"),
    ("output_shape", r"output \[1, 4, 4, 5\]: expected spatial size 2x4"),
    ("reserved_param", r"reserved parameter words must be 0"),
])
def test_semantic_checks_name_the_problem(tiny_bytes, case, message):
    b = bytearray(tiny_bytes)
    if case == "unknown_op":
        struct.pack_into("<H", b, _op_off(b, 1), 99)
    elif case == "bad_input_index":
        struct.pack_into("<i", b, _op_off(b, 1) + 8, 77)
    elif case == "weight_not_const":
        struct.pack_into("<i", b, _op_off(b, 1) + 28, 3)
    elif case == "pad_value":
        struct.pack_into("<i", b, _op_off(b, 1) + 80 + 40, 2)
    elif case == "zero_stride":
        struct.pack_into("<I", b, _op_off(b, 1) + 80 + 8, 0)
    elif case == "tensor_dtype":
        b[_tensor_off(b, 0) + 4] = 9
    elif case == "tensor_size":
        struct.pack_into("<Q", b, _tensor_off(b, 6) + 40, 41)
    elif case == "blob_misaligned":
        off = struct.unpack_from("<Q", b, _tensor_off(b, 6) + 32)[0]
        struct.pack_into("<Q", b, _tensor_off(b, 6) + 32, off + 8)
    elif case == "arena_overflow":
        struct.pack_into("<Q", b, _tensor_off(b, 3) + 32, 448)
    elif case == "arena_overlap":
        struct.pack_into("<Q", b, _tensor_off(b, 1) + 32, 0)  # s overlaps x, both live at op 0
    elif case == "read_before_write":
        struct.pack_into("<i", b, _op_off(b, 0) + 8, 2)
    elif case == "threshold_len":
        b2 = tiny_model()
        b2.tensors[7] = xkf.Tensor("conv.threshold", "i32", "const", (4,), data=np.zeros(4, np.int32))
        with pytest.raises(xkf.FormatError, match=message):
            xkf.encode(b2)
        return
    elif case == "flip_values":
        b2 = tiny_model()
        b2.tensors[8].data = np.array([0, 2, 0, 1, 0], np.uint8)
        with pytest.raises(xkf.FormatError, match=message):
            xkf.encode(b2)
        return
    elif case == "output_shape":
        b2 = tiny_model()
        b2.ops[2].params["stride_h"] = 1
        with pytest.raises(xkf.FormatError, match=r"output \[1, 2, 2, 5\]: expected \[1, 3, 2, 5\]"):
            xkf.encode(b2)
        struct.pack_into("<I", b, _op_off(b, 1) + 80 + 8, 2)  # conv stride 2: 2x2 expected
    elif case == "reserved_param":
        struct.pack_into("<I", b, _op_off(b, 1) + 80 + 60, 7)
    with pytest.raises(xkf.FormatError, match=message):
        xkf.decode(_recrc(b))


def test_read_names_the_file(tmp_path, tiny_bytes):
    p = tmp_path / "broken.xk"
    p.write_bytes(tiny_bytes[:-3])
    with pytest.raises(xkf.FormatError, match=r"broken\.xk: header\.file_size"):
        xkf.read(p)


def test_file_overhead_is_small_for_real_sizes():
    """Tables and alignment padding are a fixed cost: with ~300 KB of weights the file is within
    5% of the sum of its tensors, and binary weights take 1 bit each."""
    k, n = 4608, 512
    w = np.where(np.random.default_rng(1).random((n, k)) < 0.5, -1.0, 1.0)
    T = [xkf.Tensor("x", "f32", "arena", (1, k), offset=0),
         xkf.Tensor("s", "bits", "arena", (1, k), offset=k * 4),
         xkf.Tensor("y", "f32", "arena", (1, n), offset=0),
         xkf.Tensor("fc.weight", "bits", "const", (n, k), data=xkf.pack_bits(w)),
         xkf.Tensor("fc.scale", "f32", "const", (n,), data=np.ones(n, np.float32)),
         xkf.Tensor("fc.bias", "f32", "const", (n,), data=np.zeros(n, np.float32))]
    ops = [xkf.Op("sign", "fc.input_quantizer", [0], 1),
           xkf.Op("bdense", "fc", [1], 2, 3, {"kind": "float", "scale": 4, "bias": 5})]
    data = xkf.encode(xkf.XkModel(T, ops, [0], [2], arena_size=k * 4 + 640))
    m = xkf.decode(data)
    assert m.tensors[3].nbytes == n * k // 8
    assert m.const_bytes() < len(data) <= 1.05 * m.const_bytes()
