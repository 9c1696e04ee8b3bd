"""Training metrics specific to binary networks.

:class:`FlipRatio` measures how many binary weights change sign per optimizer step, the
quantity Helwegen et al. (2019, arXiv 1906.02107) use to describe Bop's dynamics: with
Bop it is the fraction of weights flipped; with latent-weight training (BinaryNet,
Courbariaux et al. 2016) it is the fraction of latent weights that crossed zero. A weight's
sign is sign0 (bit 1 means -1, 0 counts as +1), the convention of the deployed kernels.

Example::

    tracker = FlipRatio(model)      # snapshot of the current signs
    opt.step()
    r = tracker.update()            # flips since the snapshot; then a new snapshot
    r.total, r.per_layer["fc1.weight"], r.as_dict()   # as_dict() for loggers
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
from torch import nn

__all__ = ["FlipRatio", "FlipStats", "flip_count"]


def _neg_bits(t: torch.Tensor) -> torch.Tensor:
    """sign0 bits of ``t`` as bool (True means -1), detached, on the tensor's device."""
    return t.detach() < 0


def flip_count(before: torch.Tensor, after: torch.Tensor) -> int:
    """Number of entries whose sign0 differs between ``before`` and ``after``.

    Raises:
        ValueError: the shapes differ.
    """
    if before.shape != after.shape:
        raise ValueError(f"flip_count: shapes differ: {tuple(before.shape)} vs {tuple(after.shape)}")
    return int((_neg_bits(before) != _neg_bits(after)).sum())


@dataclass(frozen=True)
class FlipStats:
    """Sign changes over one interval.

    Attributes:
        total: flipped / numel over all tracked tensors (0.0 when nothing is tracked).
        per_layer: name -> fraction of that tensor's entries that flipped.
        flipped: number of flipped entries over all tensors.
        numel: number of tracked entries.
    """

    total: float
    per_layer: dict[str, float] = field(default_factory=dict)
    flipped: int = 0
    numel: int = 0

    def as_dict(self, prefix: str = "flip_ratio/") -> dict[str, float]:
        """Flat ``{prefix + "total": ..., prefix + name: ...}`` for loggers."""
        out = {f"{prefix}total": self.total}
        out.update({f"{prefix}{k}": v for k, v in self.per_layer.items()})
        return out


class FlipRatio:
    """Fraction of binary weights whose sign changed since the previous snapshot.

    The tracker stores one bool per weight (the sign0 bit), so it costs numel bytes per
    tracked tensor and one comparison per update.

    Args:
        params: a model (its binary weights, found as by
            :func:`xnorkit.optim.named_binary_parameters`: layers whose
            ``export_spec().weight_bits == 1`` or tensors tagged with
            :func:`xnorkit.optim.mark_binary`), a mapping name -> tensor, or an iterable of
            ``(name, tensor)`` pairs.

    Raises:
        TypeError: ``params`` is none of the above.
        ValueError: duplicate names.
    """

    def __init__(self, params: nn.Module | Mapping[str, torch.Tensor]
                 | Iterable[tuple[str, torch.Tensor]]) -> None:
        if isinstance(params, nn.Module):
            from xnorkit.optim import named_binary_parameters

            named = named_binary_parameters(params)
        elif isinstance(params, Mapping):
            named = list(params.items())
        elif isinstance(params, torch.Tensor):
            raise TypeError("FlipRatio: pass a model, a dict name -> tensor or (name, tensor) "
                            "pairs, not a bare tensor")
        else:
            named = list(params)
        names = set()
        for item in named:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor)):
                raise TypeError(f"FlipRatio: expected (name, tensor) pairs, got {item!r}")
            if item[0] in names:
                raise ValueError(f"FlipRatio: duplicate name {item[0]!r}")
            names.add(item[0])
        self.tensors: list[tuple[str, torch.Tensor]] = named
        self.reset()

    @property
    def numel(self) -> int:
        """Number of tracked binary weights."""
        return sum(t.numel() for _, t in self.tensors)

    def reset(self) -> None:
        """Take a new snapshot of the signs."""
        with torch.no_grad():
            self._bits = [_neg_bits(t) for _, t in self.tensors]

    def peek(self) -> FlipStats:
        """Flips since the last snapshot, without taking a new one."""
        return self._measure(update=False)

    def update(self) -> FlipStats:
        """Flips since the last snapshot; then snapshot the current signs."""
        return self._measure(update=True)

    def _measure(self, update: bool) -> FlipStats:
        per_layer: dict[str, float] = {}
        flipped = numel = 0
        with torch.no_grad():
            for i, ((name, t), before) in enumerate(zip(self.tensors, self._bits)):
                if t.shape != before.shape:
                    raise ValueError(f"FlipRatio: {name!r} changed shape from {tuple(before.shape)} "
                                     f"to {tuple(t.shape)}")
                now = _neg_bits(t)
                n_flip = int((now != before).sum())
                per_layer[name] = n_flip / t.numel() if t.numel() else 0.0
                flipped += n_flip
                numel += t.numel()
                if update:
                    self._bits[i] = now
        total = flipped / numel if numel else 0.0
        return FlipStats(total=total, per_layer=per_layer, flipped=flipped, numel=numel)
