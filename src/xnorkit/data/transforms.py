"""Batch transforms: they act on a whole uint8 batch (N, C, H, W) on its device at once.

Randomness comes only from the ``torch.Generator`` passed in, so a batch's augmentation
is a pure function of (seed, epoch, step): training resumed from a checkpoint sees the
same augmented batches as an uninterrupted run.

Preprocessing recipes are registered per dataset by name (seed 004's idea):

==================  ============================================================
``default``         pixels to [-1, 1] (x / 127.5 - 1), no augmentation
``unit``            pixels to [0, 1] (seed 000's MNIST scaling)
``resize_and_flip`` zero-pad 4 px to 40x40, random 32x32 crop, random horizontal
                    flip, then [-1, 1]  (seed 004 / larq zoo CIFAR-10 training)
``random_shift``    zero-pad 2 px, random crop back to the input size (no flip),
                    then [-1, 1] (digits must not be mirrored)
``random_flip``     random horizontal flip only, then [-1, 1]
``shift_and_flip``  ``random_shift`` plus a random horizontal flip (clothes, objects)
==================  ============================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

__all__ = [
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomShift",
    "Compose",
    "Preprocess",
    "get_preprocess",
    "list_preprocess",
    "register_preprocess",
]

BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Normalize:
    """uint8 pixels to float32: ``mode='pm1'`` gives x/127.5 - 1, ``'unit'`` gives x/255."""

    mode: str = "pm1"

    def __post_init__(self) -> None:
        if self.mode not in ("pm1", "unit"):
            raise ValueError(f"Normalize mode must be 'pm1' or 'unit', got {self.mode!r}")

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        x = x.float()
        return x / 127.5 - 1.0 if self.mode == "pm1" else x / 255.0


@dataclass(frozen=True)
class RandomCrop:
    """Pad each image by ``padding`` px of value ``fill`` and crop a random ``size`` window.

    All crops of a batch are taken in one gather, no Python loop over samples.
    """

    size: int
    padding: int = 4
    fill: float = 0.0

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.padding
        hp, wp = h + 2 * p, w + 2 * p
        if p:
            padded = x.new_full((n, c, hp, wp), self.fill)
            padded[:, :, p:p + h, p:p + w] = x
            x = padded
        if self.size > hp or self.size > wp:
            raise ValueError(f"RandomCrop size {self.size} larger than padded image {hp}x{wp}")
        oy = torch.randint(0, hp - self.size + 1, (n,), generator=gen).to(x.device)
        ox = torch.randint(0, wp - self.size + 1, (n,), generator=gen).to(x.device)
        ar = torch.arange(self.size, device=x.device)
        rows = (oy[:, None] + ar)[:, None, :, None].expand(n, c, self.size, wp)
        x = torch.gather(x, 2, rows)
        cols = (ox[:, None] + ar)[:, None, None, :].expand(n, c, self.size, self.size)
        return torch.gather(x, 3, cols)


@dataclass(frozen=True)
class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    p: float = 0.5

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        flip = (torch.rand(x.shape[0], generator=gen) < self.p).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(-1), x)


@dataclass(frozen=True)
class Compose:
    """Apply transforms in order."""

    transforms: Sequence[BatchTransform]

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, gen)
        return x


@dataclass(frozen=True)
class Preprocess:
    """A named recipe: ``train`` (with augmentation) and ``eval`` transforms."""

    name: str
    train: BatchTransform
    eval: BatchTransform


_PREPROCESS: dict[tuple[str, str], Callable[[], Preprocess]] = {}


def register_preprocess(dataset: str, name: str):
    """Decorator registering a zero-argument factory of :class:`Preprocess` for a dataset."""

    def deco(fn: Callable[[], Preprocess]):
        _PREPROCESS[(dataset, name)] = fn
        return fn

    return deco


def list_preprocess(dataset: str) -> list[str]:
    """Names of the recipes registered for ``dataset`` (plus the generic ones)."""
    return sorted({n for (d, n) in _PREPROCESS if d in (dataset, "*")})


def get_preprocess(dataset: str, name: str = "default") -> Preprocess:
    """The recipe ``name`` for ``dataset``; dataset-specific recipes win over generic ones.

    Raises:
        ValueError: unknown recipe; the message lists those available for the dataset.
    """
    fn = _PREPROCESS.get((dataset, name)) or _PREPROCESS.get(("*", name))
    if fn is None:
        raise ValueError(f"unknown preprocessing {name!r} for dataset {dataset!r}; known: "
                         f"{', '.join(list_preprocess(dataset))}")
    return fn()


@register_preprocess("*", "default")
def _default() -> Preprocess:
    return Preprocess("default", Normalize("pm1"), Normalize("pm1"))


@register_preprocess("*", "unit")
def _unit() -> Preprocess:
    return Preprocess("unit", Normalize("unit"), Normalize("unit"))


@register_preprocess("cifar10", "resize_and_flip")
def _resize_and_flip() -> Preprocess:
    # TF's resize_with_crop_or_pad pads the uint8 image with 0, i.e. -1 after scaling.
    return Preprocess("resize_and_flip",
                      Compose([RandomCrop(32, padding=4, fill=0.0), RandomHorizontalFlip(0.5),
                               Normalize("pm1")]),
                      Normalize("pm1"))


@dataclass(frozen=True)
class RandomShift:
    """Shift by up to ``pixels`` in each direction (zero fill), keeping the input size."""

    pixels: int = 2

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"RandomShift expects square images, got {tuple(x.shape[-2:])}")
        return RandomCrop(x.shape[-1], padding=self.pixels, fill=0.0)(x, gen)


@register_preprocess("*", "random_shift")
def _random_shift() -> Preprocess:
    return Preprocess("random_shift", Compose([RandomShift(2), Normalize("pm1")]), Normalize("pm1"))


@register_preprocess("*", "random_flip")
def _random_flip() -> Preprocess:
    return Preprocess("random_flip", Compose([RandomHorizontalFlip(0.5), Normalize("pm1")]),
                      Normalize("pm1"))


@register_preprocess("*", "shift_and_flip")
def _shift_and_flip() -> Preprocess:
    return Preprocess("shift_and_flip",
                      Compose([RandomShift(2), RandomHorizontalFlip(0.5), Normalize("pm1")]),
                      Normalize("pm1"))
