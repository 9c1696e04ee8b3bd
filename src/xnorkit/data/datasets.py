"""Datasets held in memory as uint8 tensors: MNIST, Fashion-MNIST and CIFAR-10.

A whole split is decoded once into one ``uint8`` tensor of shape (N, C, H, W) plus an
``int64`` label tensor; batches are then sliced from it (on the training device) and
converted to float by the batch transforms of :mod:`xnorkit.data.transforms`. There is
no per-sample Python pipeline, so a CPU epoch of MNIST costs milliseconds of data work.

Example:
    >>> train = load_dataset("mnist", "train")            # doctest: +SKIP
    >>> train.images.shape, train.labels.shape            # doctest: +SKIP
    (torch.Size([60000, 1, 28, 28]), torch.Size([60000]))
"""

from __future__ import annotations

import os
import tarfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from xnorkit.data import cifar
from xnorkit.data.files import (
    DatasetError,
    RemoteFile,
    atomic_write_bytes,
    ensure_file,
    resolve_root,
)
from xnorkit.data.idx import read_idx

__all__ = [
    "ArrayDataset",
    "DatasetInfo",
    "get_dataset_info",
    "list_datasets",
    "load_dataset",
    "split_validation",
]


@dataclass
class ArrayDataset:
    """A dataset split held as tensors.

    Attributes:
        name: registered dataset name (``mnist``, ``fashion_mnist``, ``cifar10``).
        split: ``train``, ``test`` or ``validation``.
        images: uint8 tensor (N, C, H, W).
        labels: int64 tensor (N,).
        classes: class names, index = label.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"{self.name}/{self.split}: images must be (N, C, H, W), got "
                             f"shape {tuple(self.images.shape)}")
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.name}/{self.split}: {self.images.shape[0]} images but "
                             f"{self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.labels.max()) + 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, n: int | None = None, *, indices: Sequence[int] | torch.Tensor | None = None,
               stratified: bool = True) -> "ArrayDataset":
        """A smaller dataset: ``indices``, or ``n`` samples (class-balanced when ``stratified``).

        The stratified choice takes the first samples of each class in dataset order, so it
        is deterministic and keeps every class present even for small ``n``.
        """
        if indices is None:
            if n is None or n >= len(self):
                return self
            if n <= 0:
                raise ValueError(f"subset size must be positive, got {n}")
            if stratified:
                idx = _stratified_indices(self.labels, n)
            else:
                idx = torch.arange(n)
        else:
            idx = torch.as_tensor(indices, dtype=torch.long)
        return replace(self, images=self.images[idx], labels=self.labels[idx])

    def to(self, device: torch.device | str) -> "ArrayDataset":
        """The same data on ``device`` (images stay uint8: 4x less memory than float)."""
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))


def _stratified_indices(labels: torch.Tensor, n: int) -> torch.Tensor:
    classes = torch.unique(labels)
    per = [torch.nonzero(labels == c).flatten() for c in classes]
    take, k = [], 0
    while len(take) < n:
        for p in per:
            if k < len(p) and len(take) < n:
                take.append(int(p[k]))
        k += 1
    return torch.tensor(sorted(take), dtype=torch.long)


def split_validation(train: ArrayDataset, size: int) -> tuple[ArrayDataset, ArrayDataset]:
    """Hold out the last ``size`` training samples as a validation split (BinaryNet's split)."""
    if not 0 < size < len(train):
        raise ValueError(f"validation size must be in 1..{len(train) - 1}, got {size}")
    cut = len(train) - size
    return (replace(train, images=train.images[:cut], labels=train.labels[:cut]),
            replace(train, split="validation", images=train.images[cut:],
                    labels=train.labels[cut:]))


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a registered dataset."""

    name: str
    folder: str
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    sizes: dict
    loader: Callable[[Path, str, bool, bool], tuple[np.ndarray, np.ndarray]]
    aliases: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------- IDX datasets

_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

_IDX_FILES = {
    "mnist": {
        "train": (RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                             _MNIST_MIRRORS, 9912422),
                  RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                             _MNIST_MIRRORS, 28881)),
        "test": (RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                            _MNIST_MIRRORS, 1648877),
                 RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                            _MNIST_MIRRORS, 4542)),
    },
    "fashion_mnist": {
        "train": (RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                             _FASHION_MIRRORS, 26421880),
                  RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                             _FASHION_MIRRORS, 29515)),
        "test": (RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                            _FASHION_MIRRORS, 4422102),
                 RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                            _FASHION_MIRRORS, 5148)),
    },
}


def _idx_loader(name: str, folder: str):
    def load(root: Path, split: str, download: bool, verify: bool):
        img_file, lbl_file = _IDX_FILES[name][split]
        d = root / folder
        img_path = ensure_file(d, img_file, download_missing=download, verify=verify)
        lbl_path = ensure_file(d, lbl_file, download_missing=download, verify=verify)
        images, labels = read_idx(img_path), read_idx(lbl_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DatasetError(f"{img_path}: expected uint8 images of shape (N, H, W), got "
                               f"{images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DatasetError(f"{lbl_path}: expected {len(images)} labels (one per image in "
                               f"{img_path.name}), got shape {labels.shape}")
        if labels.max() > 9:
            raise DatasetError(f"{lbl_path}: label {int(labels.max())} out of range 0..9")
        return images[:, None], labels

    return load


# ------------------------------------------------------------------------------- CIFAR-10

_CIFAR_TARBALL = RemoteFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                            ("https://www.cs.toronto.edu/~kriz/",), 170052171)
_CIFAR_BIN_DIR = "cifar-10-batches-bin"


def _extract_cifar_tarball(folder: Path, download: bool, verify: bool) -> None:
    """Download (if needed) the official tarball and extract its six .bin files atomically."""
    tar_path = ensure_file(folder, _CIFAR_TARBALL, download_missing=download, verify=verify)
    out = folder / _CIFAR_BIN_DIR
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar.getmembers():
            base = os.path.basename(member.name)
            stem = base[:-4] if base.endswith(".bin") else None
            if stem not in cifar.BIN_MD5 or not member.isfile():
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            cifar._check_md5(data, cifar.BIN_MD5[stem], f"{tar_path}:{member.name}", "member")
            atomic_write_bytes(out / base, data)


def _cifar_batch(folder: Path, batch: str, download: bool, verify: bool):
    for cand in (folder / _CIFAR_BIN_DIR / f"{batch}.bin", folder / f"{batch}.bin"):
        if cand.is_file():
            return cifar.read_bin_batch(cand, cifar.BIN_MD5[batch] if verify else None)
    packed = folder / f"{batch}.xz"
    if packed.is_file():
        return cifar.read_packed_batch(
            packed, cifar.PACKED_MD5[batch] if verify else None,
            cifar.BIN_MD5[batch] if verify else None)
    if not download:
        raise DatasetError(
            f"{folder / _CIFAR_BIN_DIR / (batch + '.bin')}: file not found (nor the packed "
            f"{packed.name}) and downloads are disabled; expected md5 {cifar.BIN_MD5[batch]}")
    _extract_cifar_tarball(folder, download, verify)
    return cifar.read_bin_batch(folder / _CIFAR_BIN_DIR / f"{batch}.bin",
                                cifar.BIN_MD5[batch] if verify else None)


def _cifar_loader(root: Path, split: str, download: bool, verify: bool):
    folder = root / "cifar10"
    batches = cifar.TRAIN_BATCHES if split == "train" else cifar.TEST_BATCHES
    parts = [_cifar_batch(folder, b, download, verify) for b in batches]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


# ------------------------------------------------------------------------------- registry

_DATASETS: dict[str, DatasetInfo] = {}
_ALIASES: dict[str, str] = {}


def _register(info: DatasetInfo) -> None:
    _DATASETS[info.name] = info
    for a in (info.name, *info.aliases):
        _ALIASES[a] = info.name


_register(DatasetInfo("mnist", "mnist", (1, 28, 28), tuple(str(i) for i in range(10)),
                      {"train": 60000, "test": 10000}, _idx_loader("mnist", "mnist")))
_register(DatasetInfo(
    "fashion_mnist", "fashion-mnist", (1, 28, 28),
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
     "Bag", "Ankle boot"),
    {"train": 60000, "test": 10000}, _idx_loader("fashion_mnist", "fashion-mnist"),
    aliases=("fashion-mnist", "fmnist")))
_register(DatasetInfo(
    "cifar10", "cifar10", (3, 32, 32),
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    {"train": 50000, "test": 10000}, _cifar_loader, aliases=("cifar-10", "cifar_10")))


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    return sorted(_DATASETS)


def get_dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (aliases such as ``fashion-mnist`` accepted).

    Raises:
        ValueError: unknown name; the message lists the known datasets.
    """
    key = _ALIASES.get(name.lower())
    if key is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return _DATASETS[key]


_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_CACHE_LOCK = threading.Lock()


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None, *,
                 download: bool = True, verify: bool = True) -> ArrayDataset:
    """Load one split of a registered dataset into memory.

    Args:
        name: ``mnist``, ``fashion_mnist`` or ``cifar10`` (or an alias).
        split: ``train`` or ``test``.
        root: dataset root; default ``$XNORKIT_DATA`` or ``~/.cache/xnorkit/datasets``.
            Layout: ``<root>/mnist/*.gz``, ``<root>/fashion-mnist/*.gz``, ``<root>/cifar10/``
            holding the official ``.bin`` batches (directly or in ``cifar-10-batches-bin/``)
            or the packed ``.xz`` copy.
        download: fetch missing files from the official mirrors (checksum-verified).
        verify: check every file's MD5 (a corrupt file raises DatasetError naming it).

    Returns:
        An :class:`ArrayDataset` with uint8 images (N, C, H, W) and int64 labels. Decoded
        splits are cached for the life of the process; treat the tensors as read-only.
    """
    info = get_dataset_info(name)
    if split not in info.sizes:
        raise ValueError(f"{info.name}: unknown split {split!r}; known: {', '.join(info.sizes)}")
    root_path = resolve_root(root)
    key = (info.name, split, str(root_path.resolve()))
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is None:
        images, labels = info.loader(root_path, split, download, verify)
        if images.shape[1:] != info.input_shape:
            raise DatasetError(f"{root_path / info.folder}: {split} images have shape "
                               f"{images.shape[1:]}, expected {info.input_shape}")
        cached = (torch.from_numpy(np.ascontiguousarray(images)),
                  torch.from_numpy(labels.astype(np.int64)))
        with _CACHE_LOCK:
            _CACHE[key] = cached
    return ArrayDataset(info.name, split, cached[0], cached[1], info.classes)
