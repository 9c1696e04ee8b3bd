"""Reader, validator and writer of the ``.xk`` model file (docs/format.md, version 1).

The constants and struct layouts mirror ``include/xnorkit/xk_format.h`` (a test compiles the
header and compares sizes and values). :func:`encode` turns an :class:`XkModel` into bytes,
:func:`write` stores it atomically (temporary file + ``os.replace``), :func:`decode` /
:func:`read` parse and validate a file completely -- every check of docs/format.md §7 -- and
raise :class:`FormatError` naming the field, the expected and the actual value before anything
could run.

Example:
    >>> m = read("model.xk")                     # doctest: +SKIP
    >>> [op.kind_name for op in m.ops][:3]       # doctest: +SKIP
    ['conv2d', 'bconv2d', 'maxpool2d']
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------- constants
MAGIC = b"XNRK"
VERSION_MAJOR = 1
VERSION_MINOR = 0
ALIGN = 64
MAX_INPUTS = 4
NONE = -1

FLAG_LITTLE_ENDIAN = 0x1
FLAG_BIT1_IS_MINUS1 = 0x2
FLAG_PACK_LSB_FIRST = 0x4
FLAG_ROWS_PAD64 = 0x8
FLAGS_REQUIRED = 0xF
FLAGS_KNOWN = 0xF

DTYPE = {"f32": 1, "i8": 2, "i32": 3, "u8": 4, "bits": 5}
DTYPE_NAME = {v: k for k, v in DTYPE.items()}
DTYPE_NUMPY = {"f32": np.float32, "i8": np.int8, "i32": np.int32, "u8": np.uint8, "bits": np.uint8}
STORAGE = {"const": 1, "arena": 2}
STORAGE_NAME = {v: k for k, v in STORAGE.items()}
TORCH_LAYOUT = {"same": 0, "nchw": 1, "ncl": 2}
TORCH_LAYOUT_NAME = {v: k for k, v in TORCH_LAYOUT.items()}

OP = {
    "bconv2d": 1,
    "bdense": 2,
    "conv2d": 3,
    "dense": 4,
    "sign": 5,
    "unpack": 6,
    "maxpool2d": 7,
    "avgpool2d": 8,
    "global_avgpool": 9,
    "add": 10,
    "concat": 11,
    "flatten": 12,
    "reshape": 13,
    "activation": 14,
    "affine": 15,
    "softmax": 16,
}
OP_NAME = {v: k for k, v in OP.items()}
OUT = {"int32": 0, "float": 1, "bits": 2}
OUT_NAME = {v: k for k, v in OUT.items()}
ACT = {"none": 0, "relu": 1, "relu6": 2, "hardtanh": 3, "prelu": 4, "leaky": 5}
ACT_NAME = {v: k for k, v in ACT.items()}
PREC = {"f32": 0, "i8": 1}
PREC_NAME = {v: k for k, v in PREC.items()}
META = {"utf8": 1, "json": 2, "f32": 3, "i32": 4}
META_NAME = {v: k for k, v in META.items()}

HEADER_FMT = "<4sHHII" "QQ" "QQQQ" "QQ" "QQ" "IIIIII" "II"
TENSOR_FMT = "<IBBBB4III" "QQQQ"
OP_HEAD_FMT = "<HHI4iii"
STAGE_FMT = "<IIffiiiiiiiI"
META_FMT = "<IIQQQ"
HEADER_SIZE = struct.calcsize(HEADER_FMT)
TENSOR_SIZE = struct.calcsize(TENSOR_FMT)
STAGE_SIZE = struct.calcsize(STAGE_FMT)
PARAMS_SIZE = 64
OP_SIZE = struct.calcsize(OP_HEAD_FMT) + STAGE_SIZE + PARAMS_SIZE + 16
META_SIZE = struct.calcsize(META_FMT)
assert (HEADER_SIZE, TENSOR_SIZE, STAGE_SIZE, OP_SIZE, META_SIZE) == (128, 64, 48, 160, 32)

#: Output stage fields (order of xkf_output_stage) -- the tensor-index ones default to NONE.
STAGE_FIELDS = ("kind", "act", "act_lo", "act_hi", "scale", "bias", "act_alpha", "post_scale", "post_bias",
                "threshold", "flip")
STAGE_TENSORS = ("scale", "bias", "act_alpha", "post_scale", "post_bias", "threshold", "flip")

#: Per-kind parameter fields: (name, struct char, default); 16 4-byte slots, rest reserved.
_CONV = [("kh", "I", 1), ("kw", "I", 1), ("stride_h", "I", 1), ("stride_w", "I", 1), ("dil_h", "I", 1),
         ("dil_w", "I", 1), ("pad_top", "I", 0), ("pad_left", "I", 0), ("pad_bottom", "I", 0),
         ("pad_right", "I", 0), ("pad_value", "i", 0), ("groups", "I", 1), ("precision", "I", 0),
         ("in_scale", "f", 0.0), ("in_zero_point", "i", 0)]
_DENSE = [("precision", "I", 0), ("in_scale", "f", 0.0), ("in_zero_point", "i", 0)]
_SIGN = [("threshold", "i", NONE), ("flip", "i", NONE)]
_POOL = [("kh", "I", 1), ("kw", "I", 1), ("stride_h", "I", 1), ("stride_w", "I", 1), ("pad_top", "I", 0),
         ("pad_left", "I", 0), ("pad_bottom", "I", 0), ("pad_right", "I", 0), ("count_include_pad", "I", 1),
         ("invert", "i", NONE)]
_ELTWISE = [("act", "I", 0), ("act_lo", "f", -1.0), ("act_hi", "f", 1.0), ("act_alpha", "i", NONE)]
_AFFINE = [("scale", "i", NONE), ("bias", "i", NONE)]
_FLATTEN = [("order", "I", 0)]
PARAM_FIELDS: dict[str, list[tuple[str, str, Any]]] = {
    "bconv2d": _CONV, "conv2d": _CONV, "bdense": _DENSE, "dense": _DENSE, "sign": _SIGN,
    "maxpool2d": _POOL, "avgpool2d": _POOL, "add": _ELTWISE, "activation": _ELTWISE,
    "affine": _AFFINE, "flatten": _FLATTEN,
}
#: Parameter fields that hold tensor indices.
PARAM_TENSORS = {"threshold", "flip", "invert", "act_alpha", "scale", "bias"}


class FormatError(ValueError):
    """A malformed ``.xk`` file; the message names the part, field, expected and actual value."""


def packed_row_bytes(k: int) -> int:
    """Bytes of one packed row of k binary elements (a multiple of 8)."""
    return (int(k) + 63) // 64 * 8


def align(n: int, a: int = ALIGN) -> int:
    """n rounded up to a multiple of a."""
    return (n + a - 1) // a * a


def pack_bits(x: np.ndarray) -> np.ndarray:
    """Pack along the last axis: bit = !(x >= 0) (bit 1 = -1), LSB first, rows padded to 64 bits.

    Args:
        x: array of shape [..., k] (any real dtype; NaN packs as 1).

    Returns:
        uint8 array of shape [prod(...), packed_row_bytes(k)].
    """
    x = np.asarray(x)
    k = x.shape[-1]
    bits = ~(x.reshape(-1, k) >= 0)
    rb = packed_row_bytes(k)
    padded = np.zeros((bits.shape[0], rb * 8), dtype=bool)
    padded[:, :k] = bits
    return np.packbits(padded, axis=1, bitorder="little")


def unpack_bits(b: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: uint8 [rows, row_bytes] -> float32 +-1 [rows, k]."""
    b = np.asarray(b, dtype=np.uint8)
    bits = np.unpackbits(b.reshape(b.shape[0], -1), axis=1, bitorder="little")[:, :k]
    return (1.0 - 2.0 * bits).astype(np.float32)


# ---------------------------------------------------------------------------------------- model
@dataclass
class Tensor:
    """One entry of the tensor table. ``data`` holds constants (BITS: uint8 [rows, row_bytes])."""

    name: str
    dtype: str
    storage: str
    shape: tuple[int, ...]
    torch_layout: str = "same"
    offset: int = 0
    data: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def row_bytes(self) -> int:
        return packed_row_bytes(self.shape[-1]) if self.dtype == "bits" else 0

    @property
    def count(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor (for activations: batch 1)."""
        if self.dtype == "bits":
            return int(np.prod(self.shape[:-1])) * self.row_bytes
        return self.count * np.dtype(DTYPE_NUMPY[self.dtype]).itemsize


@dataclass
class Op:
    """One entry of the op table; ``out`` and ``params`` are dicts keyed by field name."""

    kind: str
    name: str
    inputs: list[int]
    output: int
    weights: int = NONE
    out: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stage = {"kind": "int32", "act": "none", "act_lo": 0.0, "act_hi": 0.0, **{k: NONE for k in STAGE_TENSORS}}
        stage.update(self.out)
        self.out = stage
        params = {n: d for n, _, d in PARAM_FIELDS.get(self.kind, [])}
        params.update(self.params)
        self.params = params

    def tensor_refs(self) -> dict[str, int]:
        """Constant tensors this op references, by role."""
        refs = {}
        if self.weights != NONE:
            refs["weights"] = self.weights
        if self.kind in ("bconv2d", "bdense", "conv2d", "dense"):
            refs.update({k: self.out[k] for k in STAGE_TENSORS if self.out[k] != NONE})
        for k in PARAM_TENSORS:
            if k in self.params and self.params[k] != NONE:
                refs[k] = self.params[k]
        return refs


@dataclass
class XkModel:
    """A parsed or to-be-written model file."""

    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    meta: dict[str, tuple[str, Any]] = field(default_factory=dict)
    arena_size: int = 0
    version: tuple[int, int] = (VERSION_MAJOR, VERSION_MINOR)
    file_size: int = 0

    def tensor(self, i: int) -> Tensor:
        return self.tensors[i]

    def meta_value(self, key: str, default: Any = None) -> Any:
        return self.meta[key][1] if key in self.meta else default

    def const_bytes(self) -> int:
        """Sum of the sizes of the constant tensors."""
        return sum(t.nbytes for t in self.tensors if t.storage == "const")


# ---------------------------------------------------------------------------------------- encode
def _pack_params(kind: str, params: dict[str, Any]) -> bytes:
    fields = PARAM_FIELDS.get(kind, [])
    fmt = "<" + "".join(c for _, c, _ in fields) + "I" * (16 - len(fields))
    vals = [params[n] if c != "f" else float(params[n]) for n, c, _ in fields] + [0] * (16 - len(fields))
    return struct.pack(fmt, *vals)


def _unpack_params(kind: str, raw: bytes, where: str) -> dict[str, Any]:
    fields = PARAM_FIELDS.get(kind, [])
    fmt = "<" + "".join(c for _, c, _ in fields) + "I" * (16 - len(fields))
    vals = struct.unpack(fmt, raw)
    reserved = vals[len(fields):]
    if any(reserved):
        raise FormatError(f"{where}: reserved parameter words must be 0, got {list(reserved)}")
    return {n: v for (n, _, _), v in zip(fields, vals)}


def encode(model: XkModel) -> bytes:
    """Serialize a model (tensor data, ops, metadata, arena plan) to the bytes of a ``.xk`` file.

    Constant tensor offsets are assigned here (64-byte aligned blobs in table order); arena
    offsets must already be set. The result is validated with :func:`decode` before returning.
    """
    strings = bytearray(b"\0")
    string_at: dict[str, int] = {"": 0}

    def s(text: str) -> int:
        if text not in string_at:
            string_at[text] = len(strings)
            strings.extend(text.encode("utf-8") + b"\0")
        return string_at[text]

    for t in model.tensors:
        s(t.name)
    for op in model.ops:
        s(op.name)
    meta_items = sorted(model.meta.items())
    for k, _ in meta_items:
        s(k)

    nt, no, nio, nm = len(model.tensors), len(model.ops), len(model.inputs) + len(model.outputs), len(meta_items)
    tensor_off = align(HEADER_SIZE)
    op_off = align(tensor_off + nt * TENSOR_SIZE)
    io_off = align(op_off + no * OP_SIZE)
    meta_off = align(io_off + 4 * nio)
    str_off = align(meta_off + nm * META_SIZE)
    data_off = align(str_off + len(strings))

    blobs: list[tuple[int, bytes]] = []
    pos = data_off
    const_offsets = {}
    for i, t in enumerate(model.tensors):
        if t.storage != "const":
            continue
        if t.data is None:
            raise FormatError(f"tensor {i} ({t.name}): constant without data")
        raw = _tensor_bytes(t, i)
        const_offsets[i] = pos
        blobs.append((pos, raw))
        pos = align(pos + len(raw))
    meta_entries = []
    for k, (typ, val) in meta_items:
        raw, count = _meta_bytes(k, typ, val)
        meta_entries.append((s(k), META[typ], count, pos, len(raw)))
        blobs.append((pos, raw))
        pos = align(pos + len(raw))
    file_size = max(pos, data_off)
    if blobs:  # no padding after the last blob
        last_pos, last_raw = blobs[-1]
        file_size = last_pos + len(last_raw)

    buf = bytearray(file_size)
    for i, t in enumerate(model.tensors):
        off = const_offsets.get(i, t.offset)
        shape = list(t.shape) + [1] * (4 - t.ndim)
        struct.pack_into(TENSOR_FMT, buf, tensor_off + i * TENSOR_SIZE, s(t.name), DTYPE[t.dtype], STORAGE[t.storage],
                         t.ndim, TORCH_LAYOUT[t.torch_layout], *shape, t.row_bytes, 0, off, t.nbytes, 0, 0)
    for j, op in enumerate(model.ops):
        base = op_off + j * OP_SIZE
        ins = list(op.inputs) + [NONE] * (MAX_INPUTS - len(op.inputs))
        struct.pack_into(OP_HEAD_FMT, buf, base, OP[op.kind], len(op.inputs), s(op.name), *ins, op.output, op.weights)
        o = op.out
        struct.pack_into(STAGE_FMT, buf, base + 32, OUT[o["kind"]] if isinstance(o["kind"], str) else o["kind"],
                         ACT[o["act"]] if isinstance(o["act"], str) else o["act"], float(o["act_lo"]),
                         float(o["act_hi"]), *[o[k] for k in STAGE_TENSORS], 0)
        buf[base + 80: base + 144] = _pack_params(op.kind, op.params)
    struct.pack_into(f"<{nio}i", buf, io_off, *model.inputs, *model.outputs)
    for e, entry in enumerate(meta_entries):
        struct.pack_into(META_FMT, buf, meta_off + e * META_SIZE, *entry)
    buf[str_off: str_off + len(strings)] = strings
    for p, raw in blobs:
        buf[p: p + len(raw)] = raw
    crc = zlib.crc32(bytes(buf[HEADER_SIZE:])) & 0xFFFFFFFF
    header = struct.pack(HEADER_FMT, MAGIC, VERSION_MAJOR, VERSION_MINOR, HEADER_SIZE, FLAGS_REQUIRED, file_size,
                         model.arena_size, tensor_off, op_off, io_off, meta_off, str_off, len(strings), data_off,
                         file_size - data_off, nt, no, len(model.inputs), len(model.outputs), nm, 0, crc, 0)
    hcrc = zlib.crc32(header[:124]) & 0xFFFFFFFF
    buf[:HEADER_SIZE] = header[:124] + struct.pack("<I", hcrc)
    out = bytes(buf)
    decode(out)  # never hand out a file our own reader rejects
    return out


def _tensor_bytes(t: Tensor, i: int) -> bytes:
    a = np.asarray(t.data)
    if t.dtype == "bits":
        rows = int(np.prod(t.shape[:-1]))
        if a.dtype != np.uint8 or a.shape != (rows, t.row_bytes):
            raise FormatError(f"tensor {i} ({t.name}): BITS data must be uint8 [{rows}, {t.row_bytes}], got "
                              f"{a.dtype} {list(a.shape)}")
    else:
        want = np.dtype(DTYPE_NUMPY[t.dtype])
        if a.dtype != want or a.size != t.count:
            raise FormatError(f"tensor {i} ({t.name}): data must be {want} with {t.count} elements, got "
                              f"{a.dtype} with {a.size}")
    return np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def _meta_bytes(key: str, typ: str, val: Any) -> tuple[bytes, int]:
    if typ == "utf8":
        raw = str(val).encode("utf-8")
        return raw, len(raw)
    if typ == "json":
        raw = json.dumps(val, sort_keys=True, default=str).encode("utf-8")
        return raw, len(raw)
    if typ in ("f32", "i32"):
        a = np.ascontiguousarray(np.asarray(val, dtype="<f4" if typ == "f32" else "<i4").reshape(-1))
        return a.tobytes(), a.size
    raise FormatError(f"metadata {key!r}: unknown type {typ!r}; expected one of {', '.join(META)}")


def write(path: str | os.PathLike, model: XkModel | bytes) -> int:
    """Write a model atomically (temporary file in the same folder, fsync, ``os.replace``).

    Returns:
        The number of bytes written.
    """
    data = model if isinstance(model, (bytes, bytearray)) else encode(model)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".xk", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(data)


# ---------------------------------------------------------------------------------------- decode
def read(path: str | os.PathLike) -> XkModel:
    """Read and fully validate a ``.xk`` file (see :func:`decode`)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return decode(data)
    except FormatError as exc:
        raise FormatError(f"{os.fspath(path)}: {exc}") from None


def decode(data: bytes) -> XkModel:
    """Parse and validate the bytes of a ``.xk`` file.

    Raises:
        FormatError: on the first problem found (docs/format.md §7), naming it.
    """
    data = bytes(data)
    n = len(data)
    if n < HEADER_SIZE:
        raise FormatError(f"file has {n} bytes, shorter than the {HEADER_SIZE}-byte header")
    h = struct.unpack_from(HEADER_FMT, data, 0)
    (magic, vmaj, vmin, hsize, flags, file_size, arena_size, tensor_off, op_off, io_off, meta_off, str_off, str_size,
     data_off, data_size, nt, no, nin, nout, nm, reserved, crc, hcrc) = h
    if magic != MAGIC:
        raise FormatError(f"header.magic: expected {MAGIC!r}, got {magic!r} (not an xnorkit model file)")
    if vmaj != VERSION_MAJOR:
        raise FormatError(f"header.version_major: this reader supports {VERSION_MAJOR}, file has {vmaj}.{vmin}")
    if hsize != HEADER_SIZE:
        raise FormatError(f"header.header_size: expected {HEADER_SIZE}, got {hsize}")
    got_hcrc = zlib.crc32(data[:124]) & 0xFFFFFFFF
    if got_hcrc != hcrc:
        raise FormatError(f"header.header_crc32: stored {hcrc:#010x}, computed {got_hcrc:#010x} (header corrupted)")
    if flags & ~FLAGS_KNOWN:
        raise FormatError(f"header.flags: unknown bits {flags & ~FLAGS_KNOWN:#x}")
    if flags & FLAGS_REQUIRED != FLAGS_REQUIRED:
        raise FormatError(f"header.flags: expected all of {FLAGS_REQUIRED:#x} (little-endian, bit 1 = -1, LSB-first "
                          f"packing, 64-bit row padding), got {flags:#x}")
    if file_size != n:
        raise FormatError(f"header.file_size: header says {file_size} bytes, file has {n} (truncated or extended)")
    got_crc = zlib.crc32(data[HEADER_SIZE:]) & 0xFFFFFFFF
    if got_crc != crc:
        raise FormatError(f"header.crc32: stored {crc:#010x}, computed {got_crc:#010x} (file corrupted)")
    if reserved:
        raise FormatError(f"header.reserved: expected 0, got {reserved}")
    if no < 1 or nin < 1 or nout < 1:
        raise FormatError(f"header counts: op_count={no}, input_count={nin}, output_count={nout}; each must be >= 1")
    if arena_size % ALIGN:
        raise FormatError(f"header.arena_size: {arena_size} is not a multiple of {ALIGN}")
    if data_off % ALIGN or data_off > n or data_size != n - data_off:
        raise FormatError(f"header.data_offset/data_size: {data_off}/{data_size} do not describe the end of a "
                          f"{n}-byte file with 64-byte alignment")
    parts = [("tensor table", tensor_off, nt * TENSOR_SIZE), ("op table", op_off, no * OP_SIZE),
             ("io table", io_off, 4 * (nin + nout)), ("metadata table", meta_off, nm * META_SIZE),
             ("string table", str_off, str_size)]
    for pname, off, size in parts:
        if off % ALIGN:
            raise FormatError(f"{pname}: offset {off} is not a multiple of {ALIGN}")
        if off < HEADER_SIZE or off + size > data_off:
            raise FormatError(f"{pname}: [{off}, {off + size}) lies outside [{HEADER_SIZE}, data_offset={data_off})")
    spans = sorted((off, off + size, pname) for pname, off, size in parts if size)
    for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            raise FormatError(f"{an} [{a0}, {a1}) overlaps {bn} [{b0}, {b1})")
    if str_size < 1 or data[str_off + str_size - 1] != 0 or data[str_off] != 0:
        raise FormatError("string table: must start and end with a NUL byte")
    strtab = data[str_off: str_off + str_size]

    def string(off: int, where: str) -> str:
        if off >= str_size:
            raise FormatError(f"{where}: string offset {off} outside the {str_size}-byte string table")
        end = strtab.index(b"\0", off)
        try:
            return strtab[off:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{where}: string at {off} is not UTF-8 ({exc})") from None

    blob_spans: list[tuple[int, int, str]] = []

    def blob(off: int, size: int, where: str) -> None:
        if off % ALIGN:
            raise FormatError(f"{where}: offset {off} is not a multiple of {ALIGN}")
        if off < data_off or off + size > n:
            raise FormatError(f"{where}: blob [{off}, {off + size}) outside the data area [{data_off}, {n})")
        blob_spans.append((off, off + size, where))

    tensors: list[Tensor] = []
    for i in range(nt):
        (name_off, dt, st, ndim, tl, s0, s1, s2, s3, row_bytes, r0, off, size, r1, r2) = struct.unpack_from(
            TENSOR_FMT, data, tensor_off + i * TENSOR_SIZE)
        where = f"tensor {i}"
        name = string(name_off, where + ".name")
        where = f"tensor {i} ({name})"
        if dt not in DTYPE_NAME:
            raise FormatError(f"{where}.dtype: unknown value {dt}; expected one of {sorted(DTYPE_NAME)}")
        if st not in STORAGE_NAME:
            raise FormatError(f"{where}.storage: unknown value {st}; expected 1 (const) or 2 (arena)")
        if not 1 <= ndim <= 4:
            raise FormatError(f"{where}.ndim: expected 1..4, got {ndim}")
        if tl not in TORCH_LAYOUT_NAME:
            raise FormatError(f"{where}.torch_layout: unknown value {tl}")
        dims = (s0, s1, s2, s3)
        if any(d == 0 for d in dims[:ndim]) or any(d != 1 for d in dims[ndim:]):
            raise FormatError(f"{where}.shape: {list(dims)} with ndim {ndim}; dims must be >= 1 and unused ones 1")
        if r0 or r1 or r2:
            raise FormatError(f"{where}: reserved fields must be 0")
        t = Tensor(name, DTYPE_NAME[dt], STORAGE_NAME[st], tuple(dims[:ndim]), TORCH_LAYOUT_NAME[tl], off)
        if row_bytes != t.row_bytes:
            raise FormatError(f"{where}.row_bytes: expected {t.row_bytes} for shape {list(t.shape)}, got {row_bytes}")
        if size != t.nbytes:
            raise FormatError(f"{where}.size: expected {t.nbytes} bytes for {t.dtype} {list(t.shape)}, got {size}")
        if t.storage == "const":
            if tl:
                raise FormatError(f"{where}.torch_layout: must be 0 for a constant, got {tl}")
            blob(off, size, where)
            raw = np.frombuffer(data, dtype=np.dtype(DTYPE_NUMPY[t.dtype]).newbyteorder("<"), count=size //
                                np.dtype(DTYPE_NUMPY[t.dtype]).itemsize, offset=off)
            if t.dtype == "bits":
                t.data = raw.reshape(int(np.prod(t.shape[:-1])), t.row_bytes)
            else:
                t.data = raw.reshape(t.shape).astype(DTYPE_NUMPY[t.dtype])
        else:
            if t.dtype not in ("f32", "bits"):
                raise FormatError(f"{where}.dtype: activations must be f32 or bits, got {t.dtype}")
            if t.shape[0] != 1:
                raise FormatError(f"{where}.shape[0]: activations store batch 1, got {t.shape[0]}")
            if off % ALIGN or off + size > arena_size:
                raise FormatError(f"{where}: arena range [{off}, {off + size}) is misaligned or exceeds "
                                  f"arena_size {arena_size}")
        tensors.append(t)

    ios = list(struct.unpack_from(f"<{nin + nout}i", data, io_off))
    for j, ti in enumerate(ios):
        role = f"io table: {'input' if j < nin else 'output'} {j if j < nin else j - nin}"
        if not 0 <= ti < nt or tensors[ti].storage != "arena":
            raise FormatError(f"{role}: tensor index {ti} is not an activation tensor (0..{nt - 1})")
    inputs, outputs = ios[:nin], ios[nin:]
    for ti in inputs:
        if tensors[ti].dtype != "f32":
            raise FormatError(f"io table: graph input {tensors[ti].name} must be f32, got {tensors[ti].dtype}")

    meta: dict[str, tuple[str, Any]] = {}
    for e in range(nm):
        key_off, typ, count, off, size = struct.unpack_from(META_FMT, data, meta_off + e * META_SIZE)
        key = string(key_off, f"metadata {e}.key")
        where = f"metadata {e} ({key!r})"
        if typ not in META_NAME:
            raise FormatError(f"{where}.type: unknown value {typ}")
        if key in meta:
            raise FormatError(f"{where}: duplicate key")
        blob(off, size, where)
        raw = data[off: off + size]
        tname = META_NAME[typ]
        if tname in ("utf8", "json"):
            if count != size:
                raise FormatError(f"{where}.count: expected {size} (bytes), got {count}")
            try:
                text = raw.decode("utf-8")
                val: Any = json.loads(text) if tname == "json" else text
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise FormatError(f"{where}: invalid {tname} value ({exc})") from None
        else:
            if size != 4 * count:
                raise FormatError(f"{where}.size: expected {4 * count} bytes for {count} elements, got {size}")
            val = np.frombuffer(raw, dtype="<f4" if tname == "f32" else "<i4").astype(
                np.float32 if tname == "f32" else np.int32)
        meta[key] = (tname, val)

    spans = sorted(blob_spans)
    for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            raise FormatError(f"{an} blob [{a0}, {a1}) overlaps {bn} blob [{b0}, {b1})")

    ops: list[Op] = []
    for j in range(no):
        base = op_off + j * OP_SIZE
        kind, nins, name_off, i0, i1, i2, i3, out, weights = struct.unpack_from(OP_HEAD_FMT, data, base)
        name = string(name_off, f"op {j}.name")
        where = f"op {j} ({name})"
        if kind not in OP_NAME:
            raise FormatError(f"{where}.kind: unknown op kind {kind}; expected 1..{len(OP)}")
        kname = OP_NAME[kind]
        where = f"op {j} ({kname} {name})"
        if not 1 <= nins <= MAX_INPUTS:
            raise FormatError(f"{where}.num_inputs: expected 1..{MAX_INPUTS}, got {nins}")
        ins = [i0, i1, i2, i3]
        if any(x != NONE for x in ins[nins:]):
            raise FormatError(f"{where}.inputs: unused entries must be -1, got {ins}")
        stage_vals = struct.unpack_from(STAGE_FMT, data, base + 32)
        if stage_vals[-1]:
            raise FormatError(f"{where}.out.reserved: expected 0")
        stage = dict(zip(STAGE_FIELDS, stage_vals[:-1]))
        if stage["kind"] not in OUT_NAME:
            raise FormatError(f"{where}.out.kind: unknown value {stage['kind']}; expected 0, 1 or 2")
        if stage["act"] not in ACT_NAME:
            raise FormatError(f"{where}.out.act: unknown activation {stage['act']}; expected 0..{len(ACT) - 1}")
        stage["kind"] = OUT_NAME[stage["kind"]]
        stage["act"] = ACT_NAME[stage["act"]]
        params = _unpack_params(kname, data[base + 80: base + 144], where + ".params")
        if any(struct.unpack_from("<4I", data, base + 144)):
            raise FormatError(f"{where}.reserved: expected 0")
        ops.append(Op(kname, name, ins[:nins], out, weights, stage, params))

    model = XkModel(tensors, ops, inputs, outputs, meta, arena_size, (vmaj, vmin), n)
    _validate_graph(model)
    return model


# ---------------------------------------------------------------------------------------- graph checks
def conv_out_size(size: int, k: int, stride: int, dil: int, pad0: int, pad1: int) -> int:
    """Output length of a conv/pool axis (floor), or 0 when the window does not fit."""
    span = dil * (k - 1) + 1
    full = size + pad0 + pad1
    return 0 if full < span else (full - span) // stride + 1


def _validate_graph(m: XkModel) -> None:
    """Check each op's tensors, shapes and parameters, and the execution order."""
    T = m.tensors
    written = set(m.inputs)
    if len(set(m.inputs)) != len(m.inputs):
        raise FormatError("io table: a graph input is listed twice")
    for j, op in enumerate(m.ops):
        where = f"op {j} ({op.kind} {op.name})"
        for x in op.inputs:
            if not 0 <= x < len(T) or T[x].storage != "arena":
                raise FormatError(f"{where}.inputs: {x} is not an activation tensor index")
            if x not in written:
                raise FormatError(f"{where}: reads tensor {x} ({T[x].name}) before any op writes it")
        if not 0 <= op.output < len(T) or T[op.output].storage != "arena":
            raise FormatError(f"{where}.output: {op.output} is not an activation tensor index")
        if op.output in written:
            raise FormatError(f"{where}.output: tensor {op.output} ({T[op.output].name}) is written twice")
        if op.output in op.inputs:
            raise FormatError(f"{where}.output: aliases an input")
        for role, ti in op.tensor_refs().items():
            if not 0 <= ti < len(T) or T[ti].storage != "const":
                raise FormatError(f"{where}.{role}: {ti} is not a constant tensor index")
        _check_op(m, op, where)
        written.add(op.output)
    for o in m.outputs:
        if o not in written:
            raise FormatError(f"io table: graph output tensor {o} ({T[o].name}) is never written")
    # arena: live ranges of tensors that overlap in time must not overlap in memory
    first = {i: -1 for i in m.inputs}
    last = {}
    for j, op in enumerate(m.ops):
        first.setdefault(op.output, j)
        last[op.output] = max(last.get(op.output, j), j)
        for x in op.inputs:
            last[x] = max(last.get(x, j), j)
    for o in m.outputs:
        last[o] = len(m.ops)
    for i in m.inputs:
        last[i] = max(last.get(i, -1), 0)
    live = sorted(first)
    for a_i, a in enumerate(live):
        ta = T[a]
        for b in live[a_i + 1:]:
            tb = T[b]
            if first[a] <= last.get(b, first[b]) and first[b] <= last.get(a, first[a]):
                if ta.offset < tb.offset + tb.nbytes and tb.offset < ta.offset + ta.nbytes:
                    raise FormatError(f"arena plan: tensors {a} ({ta.name}) and {b} ({tb.name}) are live at the "
                                      f"same time but overlap in memory")


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise FormatError(f"{where}: {msg}")


def _const(m: XkModel, ti: int, dtype: str, count: int | None, where: str, role: str, allow_one: bool = False):
    _need(ti != NONE, where, f"{role} tensor is required")
    t = m.tensors[ti]
    _need(t.dtype == dtype, where, f"{role} tensor {t.name} must be {dtype}, got {t.dtype}")
    if count is not None:
        ok = t.count == count or (allow_one and t.count == 1)
        _need(ok, where, f"{role} tensor {t.name} must have {count} elements, got {t.count}")
    return t


def _check_stage(m: XkModel, op: Op, oc: int, binary: bool, where: str) -> None:
    o = op.out
    _need(o["kind"] in ("float", "bits"), where, f"out.kind must be float or bits, got {o['kind']}")
    out_t = m.tensors[op.output]
    _need(out_t.dtype == ("bits" if o["kind"] == "bits" else "f32"), where,
          f"output tensor dtype {out_t.dtype} does not match out.kind {o['kind']}")
    if o["kind"] == "bits" and binary:
        _const(m, o["threshold"], "i32", oc, where, "out.threshold")
        if o["flip"] != NONE:
            t = _const(m, o["flip"], "u8", oc, where, "out.flip")
            _need(bool(np.all(t.data <= 1)), where, "out.flip values must be 0 or 1")
        for k in ("scale", "bias", "act_alpha", "post_scale", "post_bias"):
            _need(o[k] == NONE, where, f"out.{k} must be -1 for a binary op with bits output")
        _need(o["act"] == "none", where, "out.act must be none for a binary op with bits output")
        return
    for k in ("scale", "bias", "post_scale", "post_bias"):
        if o[k] != NONE:
            _const(m, o[k], "f32", oc, where, f"out.{k}")
    _need(o["threshold"] == NONE and o["flip"] == NONE, where, "out.threshold/flip are only for bits output of binary ops")
    if o["act"] == "prelu":
        _const(m, o["act_alpha"], "f32", oc, where, "out.act_alpha", allow_one=True)
    else:
        _need(o["act_alpha"] == NONE, where, "out.act_alpha is only for prelu")
    if o["act"] == "hardtanh":
        _need(o["act_lo"] <= o["act_hi"], where, f"hardtanh bounds lo={o['act_lo']} > hi={o['act_hi']}")


def _check_act(m: XkModel, p: dict, c: int, where: str) -> None:
    _need(p["act"] in ACT_NAME, where, f"params.act: unknown activation {p['act']}")
    if ACT_NAME[p["act"]] == "prelu":
        _const(m, p["act_alpha"], "f32", c, where, "params.act_alpha", allow_one=True)
    else:
        _need(p["act_alpha"] == NONE, where, "params.act_alpha is only for prelu")


def _check_op(m: XkModel, op: Op, where: str) -> None:
    T = m.tensors
    ins = [T[i] for i in op.inputs]
    out = T[op.output]
    k = op.kind
    n_in = {"add": (2, 2), "concat": (2, MAX_INPUTS)}.get(k, (1, 1))
    _need(n_in[0] <= len(ins) <= n_in[1], where, f"expects {n_in[0]}..{n_in[1]} inputs, got {len(ins)}")
    x = ins[0]
    if k not in ("bconv2d", "bdense", "conv2d", "dense"):
        _need(op.weights == NONE, where, "weights must be -1 for this op")
        _need(all(op.out[f] == NONE for f in STAGE_TENSORS) and op.out["kind"] == "int32" and op.out["act"] == "none",
              where, "output stage must be empty for this op")
    if k in ("bconv2d", "conv2d"):
        p = op.params
        _need(x.ndim == 4 and out.ndim == 4, where, f"input and output must be 4-D NHWC, got {list(x.shape)} -> "
                                                   f"{list(out.shape)}")
        for f in ("kh", "kw", "stride_h", "stride_w", "dil_h", "dil_w", "groups"):
            _need(p[f] >= 1, where, f"params.{f} must be >= 1, got {p[f]}")
        _, H, W, C = x.shape
        oh = conv_out_size(H, p["kh"], p["stride_h"], p["dil_h"], p["pad_top"], p["pad_bottom"])
        ow = conv_out_size(W, p["kw"], p["stride_w"], p["dil_w"], p["pad_left"], p["pad_right"])
        oc = out.shape[3]
        _need((out.shape[1], out.shape[2]) == (oh, ow) and oh > 0 and ow > 0, where,
              f"output {list(out.shape)}: expected spatial size {oh}x{ow} from input {list(x.shape)}")
        if k == "bconv2d":
            _need(x.dtype == "bits", where, f"input must be bits, got {x.dtype}")
            _need(p["pad_value"] in (0, 1, -1), where, f"params.pad_value must be 0, +1 or -1, got {p['pad_value']}")
            _need(p["groups"] == 1 and p["precision"] == 0, where, "params.groups must be 1 and precision 0")
            w = _const(m, op.weights, "bits", None, where, "weights")
            _need(w.shape == (oc, p["kh"] * p["kw"] * C), where,
                  f"weights shape {list(w.shape)}: expected [{oc}, {p['kh'] * p['kw'] * C}]")
            _check_stage(m, op, oc, True, where)
        else:
            _need(x.dtype == "f32", where, f"input must be f32, got {x.dtype}")
            _need(p["pad_value"] == 0, where, f"params.pad_value must be 0 for conv2d, got {p['pad_value']}")
            _need(p["precision"] in PREC_NAME, where, f"params.precision: unknown value {p['precision']}")
            g = p["groups"]
            wdt = "f32" if p["precision"] == 0 else "i8"
            w = _const(m, op.weights, wdt, None, where, "weights")
            if g == 1:
                want = (oc, p["kh"], p["kw"], C)
            else:
                _need(g == C and oc % C == 0, where, f"params.groups={g}: only 1 or C={C} (depthwise) with OC a "
                                                     f"multiple of C (OC={oc})")
                want = (p["kh"], p["kw"], oc)
            _need(w.shape == want, where, f"weights shape {list(w.shape)}: expected {list(want)}")
            _check_quant(p, where)
            _check_stage(m, op, oc, False, where)
    elif k in ("bdense", "dense"):
        _need(x.ndim == 2 and out.ndim == 2, where, f"input and output must be 2-D, got {list(x.shape)} -> "
                                                   f"{list(out.shape)}")
        kk, oc = x.shape[1], out.shape[1]
        if k == "bdense":
            _need(x.dtype == "bits", where, f"input must be bits, got {x.dtype}")
            _need(op.params["precision"] == 0, where, "params.precision must be 0")
            w = _const(m, op.weights, "bits", None, where, "weights")
            _check_stage(m, op, oc, True, where)
        else:
            _need(x.dtype == "f32", where, f"input must be f32, got {x.dtype}")
            _need(op.params["precision"] in PREC_NAME, where, f"params.precision: unknown {op.params['precision']}")
            w = _const(m, op.weights, "f32" if op.params["precision"] == 0 else "i8", None, where, "weights")
            _check_quant(op.params, where)
            _check_stage(m, op, oc, False, where)
        _need(w.shape == (oc, kk), where, f"weights shape {list(w.shape)}: expected [{oc}, {kk}]")
    elif k == "sign":
        _need(x.dtype == "f32" and out.dtype == "bits" and x.shape == out.shape, where,
              f"expects f32 -> bits of the same shape, got {x.dtype}{list(x.shape)} -> {out.dtype}{list(out.shape)}")
        c = x.shape[-1]
        if op.params["threshold"] != NONE:
            _const(m, op.params["threshold"], "f32", c, where, "params.threshold")
        if op.params["flip"] != NONE:
            t = _const(m, op.params["flip"], "u8", c, where, "params.flip")
            _need(bool(np.all(t.data <= 1)), where, "params.flip values must be 0 or 1")
    elif k == "unpack":
        _need(x.dtype == "bits" and out.dtype == "f32" and x.shape == out.shape, where,
              "expects bits -> f32 of the same shape")
    elif k in ("maxpool2d", "avgpool2d"):
        p = op.params
        _need(x.ndim == 4 and out.ndim == 4, where, "input and output must be 4-D NHWC")
        for f in ("kh", "kw", "stride_h", "stride_w"):
            _need(p[f] >= 1, where, f"params.{f} must be >= 1, got {p[f]}")
        _need(p["pad_top"] < p["kh"] and p["pad_bottom"] < p["kh"] and p["pad_left"] < p["kw"] and
              p["pad_right"] < p["kw"], where, "padding must be smaller than the window")
        _need(p["count_include_pad"] in (0, 1), where, "params.count_include_pad must be 0 or 1")
        _, H, W, C = x.shape
        oh = conv_out_size(H, p["kh"], p["stride_h"], 1, p["pad_top"], p["pad_bottom"])
        ow = conv_out_size(W, p["kw"], p["stride_w"], 1, p["pad_left"], p["pad_right"])
        _need(out.shape == (1, oh, ow, C) and oh > 0 and ow > 0, where,
              f"output {list(out.shape)}: expected [1, {oh}, {ow}, {C}]")
        _need(out.dtype == x.dtype, where, "output dtype must equal the input dtype")
        if k == "avgpool2d":
            _need(x.dtype == "f32", where, "avgpool2d needs f32 input")
        if p["invert"] != NONE:
            _need(k == "maxpool2d" and x.dtype == "bits", where, "params.invert is only for maxpool2d on bits")
            _const(m, p["invert"], "bits", C, where, "params.invert")
    elif k == "global_avgpool":
        _need(x.dtype == "f32" and x.ndim == 4 and out.shape == (1, 1, 1, x.shape[3]) and out.dtype == "f32", where,
              f"expects f32 [1,H,W,C] -> [1,1,1,C], got {list(x.shape)} -> {list(out.shape)}")
    elif k in ("add", "activation"):
        for t in ins:
            _need(t.dtype == "f32" and t.shape == out.shape, where,
                  f"inputs and output must be f32 of one shape, got {t.dtype}{list(t.shape)} vs {list(out.shape)}")
        _need(out.dtype == "f32", where, "output must be f32")
        _check_act(m, op.params, out.shape[-1], where)
    elif k == "concat":
        _need(all(t.dtype == out.dtype for t in ins), where, "inputs and output must share one dtype")
        _need(all(t.shape[:-1] == out.shape[:-1] for t in ins) and sum(t.shape[-1] for t in ins) == out.shape[-1],
              where, f"output {list(out.shape)} is not the channel concatenation of {[list(t.shape) for t in ins]}")
    elif k == "flatten":
        _need(x.ndim == 4 and out.shape == (1, x.count) and out.dtype == x.dtype, where,
              f"expects [1,H,W,C] -> [1,H*W*C] of one dtype, got {list(x.shape)} -> {list(out.shape)}")
        _need(op.params["order"] in (0, 1), where, f"params.order must be 0 or 1, got {op.params['order']}")
        _need(op.params["order"] == 0 or x.dtype == "f32", where, "CHW order (1) needs f32 input")
    elif k == "reshape":
        _need(x.dtype == "f32" and out.dtype == "f32" and x.count == out.count, where,
              f"expects f32 with equal element counts, got {list(x.shape)} -> {list(out.shape)}")
    elif k == "affine":
        _need(x.dtype == "f32" and out.dtype == "f32" and x.shape == out.shape, where, "expects f32 -> f32, one shape")
        for f in ("scale", "bias"):
            if op.params[f] != NONE:
                _const(m, op.params[f], "f32", x.shape[-1], where, f"params.{f}")
    elif k == "softmax":
        _need(x.dtype == "f32" and out.dtype == "f32" and x.shape == out.shape, where, "expects f32 -> f32, one shape")


def _check_quant(p: dict, where: str) -> None:
    if p["precision"] == PREC["i8"]:
        s = p["in_scale"]
        _need(np.isfinite(s) and s > 0, where, f"params.in_scale must be positive and finite, got {s}")
        _need(-128 <= p["in_zero_point"] <= 127, where, f"params.in_zero_point must be in [-128, 127], got "
                                                        f"{p['in_zero_point']}")
    else:
        _need(p["in_scale"] == 0.0 and p["in_zero_point"] == 0, where, "params.in_scale/in_zero_point must be 0 for f32")
