"""IDX and CIFAR-10 readers: synthetic edge cases and the real files."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import struct

import numpy as np
import pytest
import torch

from xnorkit.data import DatasetError, load_dataset, parse_idx, read_idx
from xnorkit.data import cifar
from xnorkit.data.datasets import get_dataset_info, list_datasets


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                        (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)])
def test_idx_round_trip_every_type(dtype, code, tmp_path):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    raw = _idx_bytes(arr, code)
    out = parse_idx(raw)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    p = tmp_path / "a.idx.gz"
    p.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(p), arr)
    q = tmp_path / "a.idx"
    q.write_bytes(raw)
    np.testing.assert_array_equal(read_idx(q), arr)


def test_idx_errors_name_file_and_sizes(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw = _idx_bytes(arr, 0x08)
    with pytest.raises(DatasetError, match=r"f\.idx: IDX size mismatch .* expected 24 bytes, got 23"):
        parse_idx(raw[:-1], "f.idx")
    with pytest.raises(DatasetError, match="unknown IDX type code 0x07"):
        parse_idx(bytes([0, 0, 7, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(DatasetError, match="not an IDX file"):
        parse_idx(b"\x01\x00\x08\x01\x00\x00\x00\x00")
    with pytest.raises(DatasetError, match="header truncated"):
        parse_idx(bytes([0, 0, 8, 3, 0, 0]))
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(raw)[:-6])
    with pytest.raises(DatasetError, match=r"bad\.gz: corrupt gzip"):
        read_idx(bad)
    with pytest.raises(DatasetError, match="file not found"):
        read_idx(tmp_path / "missing.gz")


def _encode_packed(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The packing of the shared folder (README §3), written independently for the test."""
    px = images.astype(np.int16)
    planes = np.stack([px[:, 0] - px[:, 1], px[:, 1], px[:, 2] - px[:, 1]]) % 256  # (3,N,32,32)
    p = np.zeros((3, len(labels), 33, 33), np.int16)
    p[:, :, 1:, 1:] = planes
    res = (p[:, :, 1:, 1:] - p[:, :, 1:, :-1] - p[:, :, :-1, 1:] + p[:, :, :-1, :-1]) % 256
    return labels.astype(np.uint8).tobytes() + res.astype(np.uint8).tobytes()


def test_cifar_packed_decoding_inverts_the_encoder():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (cifar.RECORDS, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, cifar.RECORDS, dtype=np.uint8)
    got_images, got_labels = cifar.decode_packed(_encode_packed(images, labels))
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    # The official record layout: label byte, then R, G, B planes.
    rec = cifar.records_bytes(images[:2], labels[:2])
    assert rec[0] == labels[0] and rec[1:1025] == images[0, 0].tobytes()
    assert rec[3073] == labels[1]
    back_i, back_l = cifar.parse_bin_batch(rec)
    np.testing.assert_array_equal(back_i, images[:2])


def test_cifar_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a positive multiple of the 3073-byte record"):
        cifar.parse_bin_batch(b"\x00" * 3072, "x.bin")
    with pytest.raises(DatasetError, match="label 12 out of range"):
        cifar.parse_bin_batch(b"\x0c" + b"\x00" * 3072, "x.bin")
    with pytest.raises(DatasetError, match="payload is 5 bytes"):
        cifar.decode_packed(b"12345", "y.xz")
    p = tmp_path / "test_batch.xz"
    p.write_bytes(lzma.compress(b"abc"))
    with pytest.raises(DatasetError, match=r"test_batch\.xz: file md5 .* expected 0077cbf9"):
        cifar.read_packed_batch(p, cifar.PACKED_MD5["test_batch"])
    p.write_bytes(b"not xz")
    with pytest.raises(DatasetError, match="corrupt xz stream"):
        cifar.read_packed_batch(p)


def test_registry_and_aliases():
    assert list_datasets() == ["cifar10", "fashion_mnist", "mnist"]
    assert get_dataset_info("Fashion-MNIST").name == "fashion_mnist"
    assert get_dataset_info("cifar-10").input_shape == (3, 32, 32)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; known: cifar10, fashion_mnist, mnist"):
        get_dataset_info("svhn")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_dataset("mnist", "val", "/nonexistent")


# ------------------------------------------------------------------- real data

def test_mnist_real(data_root):
    tr = load_dataset("mnist", "train", data_root)
    te = load_dataset("mnist", "test", data_root)
    assert tr.images.shape == (60000, 1, 28, 28) and tr.images.dtype == torch.uint8
    assert te.images.shape == (10000, 1, 28, 28) and te.labels.dtype == torch.int64
    assert tr.labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert te.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert int(te.images.max()) == 255 and int(te.images.min()) == 0
    assert tr.num_classes == 10 and tr.input_shape == (1, 28, 28)


def test_fashion_mnist_real(data_root):
    te = load_dataset("fashion_mnist", "test", data_root)
    assert te.images.shape == (10000, 1, 28, 28)
    assert te.labels.bincount().tolist() == [1000] * 10
    assert te.classes[9] == "Ankle boot"


def test_cifar10_packed_real_matches_official_md5(data_root):
    """Decoded test batch re-encoded as official records has the official MD5."""
    images, labels = cifar.read_packed_batch(data_root / "cifar10" / "test_batch.xz",
                                             cifar.PACKED_MD5["test_batch"])
    assert hashlib.md5(cifar.records_bytes(images, labels)).hexdigest() == cifar.BIN_MD5["test_batch"]
    te = load_dataset("cifar10", "test", data_root)
    assert te.images.shape == (10000, 3, 32, 32)
    assert te.labels.bincount().tolist() == [1000] * 10
    assert torch.equal(te.images, torch.from_numpy(images))


def test_cifar10_official_bin_files_are_read(data_root, tmp_path):
    """A root holding official .bin batches (written from the decoded data) reads the same."""
    images, labels = cifar.read_packed_batch(data_root / "cifar10" / "test_batch.xz")
    d = tmp_path / "cifar10" / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    (d / "test_batch.bin").write_bytes(cifar.records_bytes(images, labels))
    te = load_dataset("cifar10", "test", tmp_path, download=False)
    assert torch.equal(te.images, torch.from_numpy(images))
    # A corrupted official file is refused with its name and the official checksum.
    raw = bytearray((d / "test_batch.bin").read_bytes())
    raw[100] ^= 1
    (d / "test_batch.bin").write_bytes(bytes(raw))
    other = tmp_path / "other"
    (other / "cifar10").mkdir(parents=True)
    (other / "cifar10" / "test_batch.bin").write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"test_batch\.bin: file md5 .*expected 803d5f7f4d78ea53de84dbe85f74fb6d"):
        load_dataset("cifar10", "test", other, download=False)
