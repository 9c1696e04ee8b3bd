"""The model registry: ``register_model``, ``get_model``, ``list_models``.

A registry entry is a factory function (usually a class) whose keyword arguments are the
model's options. ``get_model(name, **kwargs)`` calls it; unknown options fail with the
factory's own ``TypeError`` (``xnorkit.train`` turns that into a message naming the model).
The design follows timm's ``register_model`` / ``create_model``, without its module
bookkeeping: one dict, one decorator.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, TypeVar

from torch import nn

__all__ = ["register_model", "get_model", "list_models", "model_entrypoint"]

F = TypeVar("F", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[F], F]:
    """Decorator: register ``factory`` under ``name``.

    Args:
        name: the registry name (lower case letters, digits and ``_``).

    Raises:
        ValueError: ``name`` is malformed or already taken.
        TypeError: the decorated object is not callable.

    Example::

        @register_model("tiny_bnn")
        class TinyBNN(ZooModel):
            ...
    """
    if not isinstance(name, str) or not name or not all(c.isalnum() or c == "_" for c in name) \
            or name != name.lower():
        raise ValueError(f"model names are non-empty lower-case identifiers, got {name!r}")
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered (by {_MODELS[name]!r})")

    def deco(factory: F) -> F:
        if not callable(factory):
            raise TypeError(f"register_model({name!r}) needs a callable, got {type(factory).__name__}")
        _MODELS[name] = factory
        return factory

    return deco


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name``.

    Raises:
        ValueError: no such model; the message lists the known names (and close matches).
    """
    try:
        return _MODELS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), _MODELS, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(_MODELS))}") \
            from None


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs`` (its documented options).

    Returns:
        an ``nn.Module`` returning logits (no softmax) of shape (N, num_classes).

    Raises:
        ValueError: unknown model name, or an option value the model rejects.
        TypeError: an option the model does not have.
    """
    return model_entrypoint(name)(**kwargs)


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern`` (``"quicknet*"``)."""
    names = sorted(_MODELS)
    if pattern is None:
        return names
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]
