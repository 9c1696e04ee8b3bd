"""CIFAR-10 readers: the official binary batches and the losslessly packed copy.

Official binary version (``cifar-10-binary.tar.gz``): six files ``data_batch_1.bin`` ..
``data_batch_5.bin`` and ``test_batch.bin``, each 10,000 records of one label byte
followed by 3,072 pixel bytes (the 32x32 R plane, then G, then B, row-major).

Packed copy (the project's shared dataset folder, ``<name>.xz``): one xz stream whose
content is the 10,000 label bytes, then 3 planes x 10,000 images x 32 x 32 residual
bytes. The planes are (R-G, G, B-G) mod 256 and each holds the 2-D difference
``p[i,j] - p[i,j-1] - p[i-1,j] + p[i-1,j-1]`` mod 256 (``p`` = 0 outside the image), so
decoding is a 2-D cumulative sum mod 256 followed by adding G back to the first and
third planes. The decoded records are byte-identical to the official ``.bin`` files.
"""

from __future__ import annotations

import hashlib
import lzma
import os
from pathlib import Path

import numpy as np

from xnorkit.data.files import DatasetError

__all__ = [
    "RECORDS",
    "RECORD_BYTES",
    "TRAIN_BATCHES",
    "TEST_BATCHES",
    "BIN_MD5",
    "PACKED_MD5",
    "parse_bin_batch",
    "decode_packed",
    "records_bytes",
    "read_bin_batch",
    "read_packed_batch",
]

RECORDS = 10_000
RECORD_BYTES = 1 + 3 * 32 * 32
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)

# Official MD5s of the files inside cifar-10-binary.tar.gz.
BIN_MD5 = {
    "data_batch_1": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
# MD5s of the packed .xz files of the shared dataset folder.
PACKED_MD5 = {
    "data_batch_1": "5e8ae88d568b5594258117099e0e8943",
    "data_batch_2": "7b7f9fa8635c97c7871d4cf034a87cd8",
    "data_batch_3": "eb5097cf7112915617f02b7dcec11a57",
    "data_batch_4": "5808103cf22d65ca5325096e8949a8c5",
    "data_batch_5": "3f4ac8efbbd82d7865787d38ac16b92b",
    "test_batch": "0077cbf90347b799d208f9532c4cbbba",
}


def parse_bin_batch(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Split official binary-batch bytes into (images uint8 [N,3,32,32], labels uint8 [N]).

    Raises:
        DatasetError: the size is not a whole number of 3,073-byte records, or a label > 9.
    """
    if len(data) == 0 or len(data) % RECORD_BYTES:
        raise DatasetError(
            f"{name}: CIFAR-10 batch size {len(data)} bytes is not a positive multiple of the "
            f"{RECORD_BYTES}-byte record (expected {RECORDS * RECORD_BYTES})"
        )
    rec = np.frombuffer(data, np.uint8).reshape(-1, RECORD_BYTES)
    labels = rec[:, 0].copy()
    if labels.max() > 9:
        raise DatasetError(f"{name}: label {int(labels.max())} out of range 0..9")
    images = rec[:, 1:].reshape(-1, 3, 32, 32).copy()
    return images, labels


def decode_packed(payload: bytes, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Decode the (already decompressed) packed payload into (images [N,3,32,32], labels [N]).

    Raises:
        DatasetError: the payload does not hold exactly 10,000 records.
    """
    if len(payload) != RECORDS * RECORD_BYTES:
        raise DatasetError(
            f"{name}: packed CIFAR-10 payload is {len(payload)} bytes, expected "
            f"{RECORDS * RECORD_BYTES}"
        )
    labels = np.frombuffer(payload, np.uint8, RECORDS).copy()
    if labels.max() > 9:
        raise DatasetError(f"{name}: label {int(labels.max())} out of range 0..9")
    residual = np.frombuffer(payload, np.uint8, offset=RECORDS).reshape(3, RECORDS, 32, 32)
    # Inverse of the 2-D difference: cumulative sums along columns then rows, in uint8 so
    # every addition wraps modulo 256 exactly like the encoder's subtraction.
    planes = np.cumsum(residual, axis=3, dtype=np.uint8)
    np.cumsum(planes, axis=2, dtype=np.uint8, out=planes)
    green = planes[1]
    images = np.empty((RECORDS, 3, 32, 32), np.uint8)
    np.add(planes[0], green, out=images[:, 0])  # (R - G) + G, mod 256
    images[:, 1] = green
    np.add(planes[2], green, out=images[:, 2])  # (B - G) + G, mod 256
    return images, labels


def records_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The official binary-batch bytes for (images [N,3,32,32], labels [N])."""
    rec = np.empty((len(labels), RECORD_BYTES), np.uint8)
    rec[:, 0] = labels
    rec[:, 1:] = images.reshape(len(labels), -1)
    return rec.tobytes()


def _check_md5(data: bytes, expected: str | None, name: str, what: str) -> None:
    if expected is None:
        return
    got = hashlib.md5(data).hexdigest()
    if got != expected:
        raise DatasetError(f"{name}: {what} md5 {got}, expected {expected}; the file is corrupt")


def read_bin_batch(path: str | os.PathLike, md5: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one official ``.bin`` batch, checking its MD5 when given."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found (expected md5 {md5})") from exc
    _check_md5(data, md5, str(path), "file")
    return parse_bin_batch(data, str(path))


def read_packed_batch(path: str | os.PathLike, md5: str | None = None,
                      decoded_md5: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one packed ``.xz`` batch of the shared folder.

    Args:
        path: the ``.xz`` file.
        md5: expected MD5 of the ``.xz`` file itself (checked first).
        decoded_md5: expected MD5 of the decoded official ``.bin`` bytes (checked after
            decoding, so the pixels are proven identical to the official release).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found (expected md5 {md5})") from exc
    _check_md5(raw, md5, str(path), "file")
    try:
        payload = lzma.decompress(raw)
    except lzma.LZMAError as exc:
        raise DatasetError(f"{path}: corrupt xz stream: {exc}") from exc
    images, labels = decode_packed(payload, str(path))
    if decoded_md5 is not None:
        _check_md5(records_bytes(images, labels), decoded_md5, str(path), "decoded batch")
    return images, labels
