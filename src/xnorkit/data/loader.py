"""Deterministic, resumable mini-batch iteration over an in-memory :class:`ArrayDataset`.

The order of epoch ``e`` is ``randperm(N)`` drawn from a generator seeded with
(seed, e); the augmentation of step ``s`` uses a generator seeded with
(seed, e, s, rank). Nothing depends on how many batches were drawn before, so
``loader.epoch(e, start=s)`` resumes an interrupted epoch exactly at step ``s``.

Under data-parallel training the *global* batch ``batch_size`` is split evenly over
``world_size`` ranks: rank ``r`` gets the ``r``-th slice of every global batch, so the
union of the ranks' batches is exactly the single-process batch.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from xnorkit.data.datasets import ArrayDataset
from xnorkit.data.transforms import BatchTransform

__all__ = ["BatchLoader", "seeded_generator"]


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from a tuple of integers (well mixed, stable)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2)
    g = torch.Generator()
    g.manual_seed(int(state[0]) << 32 | int(state[1]))
    return g


class BatchLoader:
    """Yields ``(x, y)`` batches: ``x`` float (after ``transform``), ``y`` int64, on ``device``.

    Args:
        dataset: the split, uint8 images.
        batch_size: global batch size (summed over ranks).
        transform: batch transform (uint8 batch, generator) -> float batch.
        shuffle: draw a new order every epoch (training) or keep dataset order (evaluation).
        drop_last: skip the final incomplete batch (training).
        seed: base seed of the order and of the augmentation.
        rank, world_size: data-parallel position; ``batch_size`` must divide by ``world_size``.
        device: where batches are produced; the whole split is moved there once.
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, transform: BatchTransform, *,
                 shuffle: bool, drop_last: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu") -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} "
                             "data-parallel processes")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.dataset = dataset.to(device)
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size
        self.transform = transform
        self.shuffle = shuffle
        self.drop_last = drop_last and len(dataset) >= batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)

    def __len__(self) -> int:
        """Number of (global) batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """Sample indices of ``epoch`` (a permutation when shuffling)."""
        n = len(self.dataset)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=seeded_generator(self.seed, epoch, 0x5EED))

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate the batches of ``epoch`` from step ``start`` on."""
        order = self.order(epoch).to(self.device)
        n = len(order)
        for step in range(start, len(self)):
            lo = step * self.batch_size
            hi = min(lo + self.batch_size, n)
            # Split this global batch evenly (as far as possible) over the ranks.
            size = hi - lo
            r_lo = lo + (size * self.rank) // self.world_size
            r_hi = lo + (size * (self.rank + 1)) // self.world_size
            idx = order[r_lo:r_hi]
            gen = seeded_generator(self.seed, epoch, step, self.rank)
            x = self.transform(self.dataset.images[idx], gen)
            yield x, self.dataset.labels[idx]

    def __iter__(self):
        return self.epoch(0)
