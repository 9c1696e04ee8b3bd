"""Checksummed downloads: success, corrupt mirror, offline, corrupt local file."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from xnorkit.data import DatasetError, RemoteFile, ensure_file, load_dataset
from xnorkit.data.files import download, resolve_root


def _remote(tmp_path, content: bytes, name="f.gz"):
    src = tmp_path / "mirror"
    src.mkdir(exist_ok=True)
    (src / name).write_bytes(content)
    return RemoteFile(name, hashlib.md5(content).hexdigest(), (src.as_uri() + "/",))


def test_download_verifies_and_renames(tmp_path):
    remote = _remote(tmp_path, b"hello world" * 1000)
    dest_dir = tmp_path / "data"
    path = ensure_file(dest_dir, remote)
    assert path.read_bytes() == b"hello world" * 1000
    assert os.listdir(dest_dir) == ["f.gz"]  # no temporary file left behind
    assert oct(path.stat().st_mode & 0o777) != "0o600"  # normal permissions, not mkstemp's


def test_download_with_wrong_checksum_leaves_nothing(tmp_path):
    remote = _remote(tmp_path, b"payload")
    wrong = RemoteFile(remote.name, "0" * 32, remote.urls)
    dest_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match=r"f\.gz.*has md5 .*expected 0{32}"):
        ensure_file(dest_dir, wrong)
    assert not dest_dir.exists() or os.listdir(dest_dir) == []


def test_offline_error_names_file_and_checksum(tmp_path):
    remote = RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                        ("http://127.0.0.1:9/",))  # discard port: connection refused
    with pytest.raises(DatasetError) as err:
        ensure_file(tmp_path, remote)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in msg
    assert "could not be downloaded" in msg
    with pytest.raises(DatasetError, match="downloads are disabled; expected md5 f68b3c2d"):
        ensure_file(tmp_path, remote, download_missing=False)
    assert os.listdir(tmp_path) == []


def test_corrupt_local_file_is_refused(tmp_path):
    remote = _remote(tmp_path, b"good bytes")
    d = tmp_path / "data"
    d.mkdir()
    (d / "f.gz").write_bytes(b"bad bytes!")
    with pytest.raises(DatasetError, match=rf"f\.gz: checksum mismatch: expected md5 {remote.md5}"):
        ensure_file(d, remote)


def test_download_error_for_bad_url(tmp_path):
    with pytest.raises(DatasetError, match="download from file:///nonexistent/x failed"):
        download("file:///nonexistent/x", tmp_path / "x")
    assert os.listdir(tmp_path) == []


def test_mnist_downloads_from_a_mirror_and_loads(data_root, tmp_path, monkeypatch):
    """load_dataset fetches missing MNIST files through the mirror list (a file:// copy)."""
    from xnorkit.data import datasets

    mirror = (data_root / "mnist").as_uri() + "/"
    files = datasets._IDX_FILES["mnist"]
    patched = {split: tuple(RemoteFile(f.name, f.md5, (mirror,), f.size) for f in pair)
               for split, pair in files.items()}
    monkeypatch.setitem(datasets._IDX_FILES, "mnist", patched)
    te = load_dataset("mnist", "test", tmp_path / "root")
    assert len(te) == 10000
    assert sorted(os.listdir(tmp_path / "root" / "mnist")) == ["t10k-images-idx3-ubyte.gz",
                                                               "t10k-labels-idx1-ubyte.gz"]


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("XNORKIT_DATA", str(tmp_path))
    assert resolve_root(None) == tmp_path
    assert resolve_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("XNORKIT_DATA")
    assert resolve_root(None).parts[-3:] == (".cache", "xnorkit", "datasets")


def test_corrupt_mnist_copy_is_refused(data_root, tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(data_root / "mnist" / name, d / name)
    with open(d / "t10k-labels-idx1-ubyte.gz", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz: checksum mismatch: "
                                           r"expected md5 ec29112dd5afa0611ce80d1b7f02629c"):
        load_dataset("mnist", "test", tmp_path, download=False)
