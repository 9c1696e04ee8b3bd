"""A small, independent writer of .xk files (docs/format.md) for the engine tests.

It writes exactly the structs of include/xnorkit/xk_format.h with `struct`, so the engine's
parser is tested against the specification rather than against the converter's writer, and it
can write deliberately broken files (every field is reachable) with valid checksums."""

from __future__ import annotations

import struct
import zlib

import numpy as np

F32, I8, I32, U8, BITS = 1, 2, 3, 4, 5
CONST, ARENA = 1, 2
OP = dict(bconv2d=1, bdense=2, conv2d=3, dense=4, sign=5, unpack=6, maxpool2d=7, avgpool2d=8,
          global_avgpool=9, add=10, concat=11, flatten=12, reshape=13, activation=14, affine=15, softmax=16)
OUT_INT32, OUT_FLOAT, OUT_BITS = 0, 1, 2
NONE = -1

HEADER = struct.Struct("<4sHHIIQQQQQQQQQQIIIIIIII")
TENSOR = struct.Struct("<IBBBB4IIIQQQQ")
OPS = struct.Struct("<HHI4iii")
STAGE = struct.Struct("<IIffiiiiiiiI")
META = struct.Struct("<IIQQQ")
assert HEADER.size == 128 and TENSOR.size == 64 and STAGE.size == 48 and META.size == 32


def row_bytes(k: int) -> int:
    return (k + 63) // 64 * 8


def pack_bits(x: np.ndarray) -> np.ndarray:
    """+-1 (or bool 'is negative') along the last axis -> rows of row_bytes(k) bytes."""
    x = np.asarray(x)
    neg = x if x.dtype == bool else x < 0
    k = neg.shape[-1]
    rows = neg.reshape(-1, k)
    padded = np.zeros((rows.shape[0], row_bytes(k) * 8), dtype=np.uint8)
    padded[:, :k] = rows
    return np.packbits(padded, axis=1, bitorder="little")


def conv_params(kh, kw, stride=(1, 1), dil=(1, 1), pads=(0, 0, 0, 0), pad_value=0, groups=1, precision=0,
                in_scale=0.0, in_zero_point=0) -> bytes:
    return struct.pack("<10IiIIfiI", kh, kw, stride[0], stride[1], dil[0], dil[1], *pads, pad_value, groups,
                       precision, in_scale, in_zero_point, 0)


def dense_params(precision=0, in_scale=0.0, in_zero_point=0) -> bytes:
    return struct.pack("<Ifi13I", precision, in_scale, in_zero_point, *[0] * 13)


def sign_params(threshold=NONE, flip=NONE) -> bytes:
    return struct.pack("<ii14I", threshold, flip, *[0] * 14)


def pool_params(kh, kw, stride, pads=(0, 0, 0, 0), count_include_pad=0, invert=NONE) -> bytes:
    return struct.pack("<9Ii6I", kh, kw, stride[0], stride[1], *pads, count_include_pad, invert, *[0] * 6)


def eltwise_params(act=0, lo=0.0, hi=0.0, alpha=NONE) -> bytes:
    return struct.pack("<Iffi12I", act, lo, hi, alpha, *[0] * 12)


def affine_params(scale=NONE, bias=NONE) -> bytes:
    return struct.pack("<ii14I", scale, bias, *[0] * 14)


def flatten_params(order=0) -> bytes:
    return struct.pack("<I15I", order, *[0] * 15)


class Builder:
    def __init__(self):
        self.tensors: list[dict] = []
        self.ops: list[bytes] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.meta: list[tuple] = []
        self.strings = bytearray(b"\0")
        self.blobs: list[bytes] = []
        self.arena = 0

    def string(self, s: str) -> int:
        off = len(self.strings)
        self.strings += s.encode() + b"\0"
        return off

    def _tensor(self, name, dtype, storage, shape, size, blob=None, layout=0, offset=None):
        shape = list(shape)
        rb = row_bytes(shape[-1]) if dtype == BITS else 0
        t = dict(name=self.string(name), dtype=dtype, storage=storage, ndim=len(shape), layout=layout,
                 shape=shape + [1] * (4 - len(shape)), row_bytes=rb, size=size, blob=blob, offset=offset)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, name, array, dtype=None, shape=None) -> int:
        """F32/I8/I32/U8 from the array's dtype; dtype=BITS packs +-1 values (last axis)."""
        a = np.asarray(array)
        if dtype == BITS:
            blob = pack_bits(a).tobytes()
            return self._tensor(name, BITS, CONST, shape or a.shape, len(blob), blob)
        dt = {np.dtype(np.float32): F32, np.dtype(np.int8): I8, np.dtype(np.int32): I32, np.dtype(np.uint8): U8}[a.dtype]
        blob = np.ascontiguousarray(a).tobytes()
        return self._tensor(name, dt, CONST, shape or a.shape, len(blob), blob)

    def act(self, name, dtype, shape, layout=0, offset=None) -> int:
        """An arena tensor: at the next free offset, or at `offset` (to share memory on purpose)."""
        shape = list(shape)
        if dtype == BITS:
            rows = int(np.prod(shape[:-1]))
            size = rows * row_bytes(shape[-1])
        else:
            size = int(np.prod(shape)) * 4
        if offset is None:
            off = self.arena
            self.arena += (size + 63) // 64 * 64
        else:
            off = offset
            self.arena = max(self.arena, (off + size + 63) // 64 * 64)
        return self._tensor(name, dtype, ARENA, shape, size, layout=layout, offset=off)

    def op(self, kind, name, inputs, output, weights=NONE, stage=None, params=b"") -> int:
        ins = list(inputs) + [NONE] * (4 - len(inputs))
        st = dict(kind=0, act=0, lo=0.0, hi=0.0, scale=NONE, bias=NONE, alpha=NONE, post_scale=NONE,
                  post_bias=NONE, threshold=NONE, flip=NONE)
        if stage:
            st.update(stage)
        body = OPS.pack(OP[kind], len(inputs), self.string(name), *ins, output, weights)
        body += STAGE.pack(st["kind"], st["act"], st["lo"], st["hi"], st["scale"], st["bias"], st["alpha"],
                           st["post_scale"], st["post_bias"], st["threshold"], st["flip"], 0)
        body += params.ljust(64, b"\0") + b"\0" * 16
        assert len(body) == 160
        self.ops.append(body)
        return len(self.ops) - 1

    def add_meta(self, key, mtype, value: bytes, count=None):
        self.meta.append((self.string(key), mtype, len(value) if count is None else count, value))

    def build(self, corrupt=None) -> bytes:
        """corrupt: optional callable(parts dict) applied before the checksums are written."""
        al = lambda n: (n + 63) // 64 * 64  # noqa: E731
        off = 128
        t_off = off
        off = al(off + 64 * len(self.tensors))
        o_off = off
        off = al(off + 160 * len(self.ops))
        io_off = off
        off = al(off + 4 * (len(self.inputs) + len(self.outputs)))
        m_off = off
        off = al(off + 32 * len(self.meta))
        s_off = off
        off = al(off + len(self.strings))
        data_off = off
        blobs = bytearray()
        for t in self.tensors:
            if t["storage"] == CONST:
                t["offset"] = data_off + len(blobs)
                blobs += t["blob"]
                blobs += b"\0" * (al(len(blobs)) - len(blobs))
        metas = []
        for key, mtype, count, value in self.meta:
            metas.append((key, mtype, count, data_off + len(blobs), len(value)))
            blobs += value
            blobs += b"\0" * (al(len(blobs)) - len(blobs))
        size = data_off + len(blobs)
        buf = bytearray(size)
        for i, t in enumerate(self.tensors):
            buf[t_off + 64 * i:t_off + 64 * (i + 1)] = TENSOR.pack(
                t["name"], t["dtype"], t["storage"], t["ndim"], t["layout"], *t["shape"], t["row_bytes"], 0,
                t["offset"], t["size"], 0, 0)
        for i, o in enumerate(self.ops):
            buf[o_off + 160 * i:o_off + 160 * (i + 1)] = o
        io = self.inputs + self.outputs
        buf[io_off:io_off + 4 * len(io)] = struct.pack(f"<{len(io)}i", *io)
        for i, m in enumerate(metas):
            buf[m_off + 32 * i:m_off + 32 * (i + 1)] = META.pack(*m)
        buf[s_off:s_off + len(self.strings)] = self.strings
        buf[data_off:] = blobs
        hdr = dict(magic=b"XNRK", major=1, minor=0, header_size=128, flags=0xF, file_size=size,
                   arena_size=al(self.arena), t_off=t_off, o_off=o_off, io_off=io_off, m_off=m_off, s_off=s_off,
                   s_size=len(self.strings), data_off=data_off, data_size=size - data_off,
                   nt=len(self.tensors), no=len(self.ops), ni=len(self.inputs), nout=len(self.outputs),
                   nm=len(self.meta), reserved=0)
        if corrupt:
            corrupt(hdr, buf)
        buf[:128] = HEADER.pack(hdr["magic"], hdr["major"], hdr["minor"], hdr["header_size"], hdr["flags"],
                                hdr["file_size"], hdr["arena_size"], hdr["t_off"], hdr["o_off"], hdr["io_off"],
                                hdr["m_off"], hdr["s_off"], hdr["s_size"], hdr["data_off"], hdr["data_size"],
                                hdr["nt"], hdr["no"], hdr["ni"], hdr["nout"], hdr["nm"], hdr["reserved"], 0, 0)
        return finalize(buf)


def finalize(buf: bytearray) -> bytes:
    """Recompute both checksums (so that a deliberately bad field is found by the deeper checks)."""
    buf = bytearray(buf)
    struct.pack_into("<I", buf, 120, zlib.crc32(bytes(buf[128:])) & 0xFFFFFFFF)
    struct.pack_into("<I", buf, 124, zlib.crc32(bytes(buf[:124])) & 0xFFFFFFFF)
    return bytes(buf)


def tensor_offset(buf: bytes, index: int) -> int:
    return struct.unpack_from("<Q", buf, 32)[0] + 64 * index


def op_offset(buf: bytes, index: int) -> int:
    return struct.unpack_from("<Q", buf, 40)[0] + 160 * index
