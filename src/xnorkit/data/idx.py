"""Reader for the IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

Layout (big-endian): two zero bytes, one type byte, one byte with the number of
dimensions ``d``, then ``d`` unsigned 32-bit sizes, then the data in C order. Type bytes:
0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from xnorkit.data.files import DatasetError

__all__ = ["read_idx", "parse_idx", "IDX_DTYPES"]

IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one (uncompressed) IDX file into a native-endian array.

    Args:
        data: the whole file content.
        name: used in error messages (the file path).

    Raises:
        DatasetError: bad magic, unknown type code, or a size that disagrees with the header.
    """
    if len(data) < 4:
        raise DatasetError(f"{name}: IDX header truncated: {len(data)} bytes, need at least 4")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(
            f"{name}: not an IDX file: magic starts with 0x{data[0]:02x}{data[1]:02x}, expected 0x0000"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DatasetError(f"{name}: unknown IDX type code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise DatasetError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{name}: IDX header truncated: {len(data)} bytes, need {header}")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", ndim, 4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(
            f"{name}: IDX size mismatch for shape {shape} of {dtype.name}: expected {expected} "
            f"bytes, got {len(data)}"
        )
    arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected by its magic bytes) or plain.

    Raises:
        DatasetError: the file is missing, a broken gzip stream, or not valid IDX.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt gzip stream: {exc}") from exc
    return parse_idx(raw, str(path))
