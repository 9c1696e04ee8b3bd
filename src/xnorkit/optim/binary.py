"""Which parameters are binary weights, and how they are tagged.

Routing never guesses from names or shapes (seed 004's parent matched variable names, a
bug the spec lists in §7.8). A parameter is *binary* when either

1. it is the ``weight`` of a layer whose export spec says so:
   ``layer.export_spec().weight_bits == 1`` (the :mod:`xnorkit.nn` contract; any module
   with an ``export_spec()`` method returning an object with ``weight_bits`` qualifies), or
2. it was tagged explicitly with :func:`mark_binary`.

:func:`named_binary_parameters` / :func:`binary_parameters` find case 1 in a model and tag
what they find, so the tag is the single thing the optimizers check: :class:`Bop` refuses
(``strict=True``) any parameter that is not tagged. The tag is a plain attribute on the
``Parameter`` object; it survives ``model.to(...)`` and ``torch.save`` of the parameter,
but not ``copy.deepcopy`` — call :func:`binary_parameters` on the copy (as
:func:`xnorkit.optim.make_optimizer` does) to tag it again.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
from torch import nn

__all__ = [
    "BINARY_ATTR",
    "mark_binary",
    "is_binary_param",
    "layer_weight_bits",
    "binary_layers",
    "named_binary_parameters",
    "binary_parameters",
    "sign0_",
    "init_binary_",
]

#: Name of the attribute that tags a ``Parameter`` as a binary weight.
BINARY_ATTR = "_xnorkit_binary"


def mark_binary(param: torch.Tensor) -> torch.Tensor:
    """Tag ``param`` as a binary weight (values in {-1, +1}) and return it.

    Raises:
        TypeError: ``param`` is not a tensor.
    """
    if not isinstance(param, torch.Tensor):
        raise TypeError(f"mark_binary expects a torch.Tensor / nn.Parameter, got {type(param).__name__}")
    setattr(param, BINARY_ATTR, True)
    return param


def is_binary_param(param: torch.Tensor) -> bool:
    """True when ``param`` carries the binary tag set by :func:`mark_binary`."""
    return bool(getattr(param, BINARY_ATTR, False))


def layer_weight_bits(module: nn.Module) -> int | None:
    """The weight precision a layer declares through ``export_spec().weight_bits``.

    Duck-typed on the :mod:`xnorkit.nn` contract so any layer that declares its export
    spec is understood. Returns None for modules without ``export_spec``.
    """
    spec_fn = getattr(module, "export_spec", None)
    if not callable(spec_fn):
        return None
    spec = spec_fn()
    bits = getattr(spec, "weight_bits", None)
    if bits is None:
        raise TypeError(f"{type(module).__name__}.export_spec() returned {spec!r} without a "
                        "'weight_bits' field (see docs/api-contract.md)")
    return int(bits)


def binary_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every submodule whose export spec has ``weight_bits == 1``.

    Raises:
        TypeError: a layer declares binary weights but has no ``weight`` Parameter.
    """
    out = []
    for name, module in model.named_modules():
        if layer_weight_bits(module) == 1:
            weight = getattr(module, "weight", None)
            if not isinstance(weight, nn.Parameter):
                raise TypeError(f"layer {name or type(module).__name__!r} declares weight_bits == 1 "
                                f"but has no 'weight' nn.Parameter (got {type(weight).__name__})")
            out.append((name, module))
    return out


def named_binary_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, param)`` for every binary weight of ``model``, tagging each one.

    Binary weights are the ``weight`` of each layer in :func:`binary_layers` plus any
    parameter already tagged with :func:`mark_binary`. Shared parameters appear once.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    layer_weights = {id(m.weight) for _, m in binary_layers(model)}
    out = []
    for name, p in model.named_parameters():  # deduplicates shared parameters
        if id(p) in layer_weights or is_binary_param(p):
            mark_binary(p)
            out.append((name, p))
    return out


def binary_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The binary weights of ``model`` (see :func:`named_binary_parameters`), tagged."""
    return [p for _, p in named_binary_parameters(model)]


@torch.no_grad()
def sign0_(tensor: torch.Tensor) -> torch.Tensor:
    """In place: x <- sign0(x), i.e. +1 where x >= 0 (including -0.0) and -1 where x < 0."""
    if not tensor.is_floating_point():
        raise TypeError(f"sign0_ needs a floating-point tensor, got {tensor.dtype}")
    neg = tensor < 0
    tensor.fill_(1.0).masked_fill_(neg, -1.0)
    return tensor


def _iter_params(params) -> Iterator[torch.Tensor]:
    if isinstance(params, nn.Module):
        yield from binary_parameters(params)
        return
    if isinstance(params, torch.Tensor):
        yield params
        return
    for p in params:
        if isinstance(p, dict):  # a param group
            yield from _iter_params(p["params"])
        elif isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], torch.Tensor):
            yield p[1]  # (name, param)
        elif isinstance(p, torch.Tensor):
            yield p
        else:
            raise TypeError(f"expected parameters, got an element of type {type(p).__name__}")


@torch.no_grad()
def init_binary_(params: nn.Module | torch.Tensor | Iterable) -> list[torch.Tensor]:
    """Set binary weights to sign0 of their current values (+1 for 0) and tag them.

    Bop's weights live in {-1, +1} (Helwegen et al. 2019, arXiv 1906.02107); Bop does this
    itself at its first step, but calling it at model construction makes the first forward
    pass already binary (seed 004 ran its first pass on real-valued kernels, spec §7.8).

    Args:
        params: a model (its :func:`binary_parameters` are used), one tensor, or an
            iterable of tensors / ``(name, tensor)`` pairs / param-group dicts.

    Returns:
        The tensors that were binarized.
    """
    done = []
    for p in _iter_params(params):
        if not p.is_floating_point():
            raise TypeError(f"init_binary_: binary weights must be floating point, got {p.dtype}")
        sign0_(p)
        mark_binary(p)
        done.append(p)
    return done
