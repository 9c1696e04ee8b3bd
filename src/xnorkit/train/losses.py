"""Training losses: cross-entropy and BinaryNet's squared hinge."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["squared_hinge", "cross_entropy", "get_loss"]


def squared_hinge(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BinaryNet's squared hinge loss (Courbariaux et al. 2016, arXiv:1602.02830).

    With targets t in {-1, +1} (one-hot mapped to +-1) and outputs y of shape (N, C):

        L = mean over n and c of max(0, 1 - t[n, c] * y[n, c]) ** 2

    i.e. the mean of squared hinges, not the square of the mean hinge (seed 002's bug).

    Args:
        logits: (N, C) float outputs.
        target: (N,) integer class labels.
    """
    if logits.dim() != 2:
        raise ValueError(f"squared_hinge: logits must be (N, C), got shape {tuple(logits.shape)}")
    t = F.one_hot(target, logits.shape[1]).to(logits.dtype) * 2 - 1
    return torch.clamp(1 - t * logits, min=0).square().mean()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy, mean over the batch."""
    return F.cross_entropy(logits, target)


_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": cross_entropy,
    "squared_hinge": squared_hinge,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function registered as ``name``.

    Raises:
        ValueError: unknown name; the message lists the known losses.
    """
    try:
        return _LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(_LOSSES)}") from None
