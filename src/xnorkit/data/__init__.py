"""Datasets for xnorkit: readers, download with checksums, batch transforms, loaders.

- :func:`load_dataset` reads MNIST / Fashion-MNIST (IDX gz) and CIFAR-10 (official binary
  batches, or the project's packed copy) into uint8 tensors, verifying every file's MD5
  and downloading missing files when online.
- :mod:`xnorkit.data.transforms` holds batch transforms and per-dataset recipes
  (``default``, ``resize_and_flip``, ...).
- :class:`BatchLoader` iterates deterministic, resumable, data-parallel mini-batches.
"""

from xnorkit.data.datasets import (
    ArrayDataset,
    DatasetInfo,
    get_dataset_info,
    list_datasets,
    load_dataset,
    split_validation,
)
from xnorkit.data.files import DatasetError, RemoteFile, default_root, ensure_file, md5sum
from xnorkit.data.idx import parse_idx, read_idx
from xnorkit.data.loader import BatchLoader, seeded_generator
from xnorkit.data.transforms import (
    Compose,
    Normalize,
    Preprocess,
    RandomCrop,
    RandomHorizontalFlip,
    RandomShift,
    get_preprocess,
    list_preprocess,
    register_preprocess,
)

__all__ = [
    "ArrayDataset",
    "BatchLoader",
    "Compose",
    "DatasetError",
    "DatasetInfo",
    "Normalize",
    "Preprocess",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomShift",
    "RemoteFile",
    "default_root",
    "ensure_file",
    "get_dataset_info",
    "get_preprocess",
    "list_datasets",
    "list_preprocess",
    "load_dataset",
    "md5sum",
    "parse_idx",
    "read_idx",
    "register_preprocess",
    "seeded_generator",
    "split_validation",
]
