"""xnorkit: train, convert, run and deploy binary neural networks.

Submodules are imported lazily so that ``import xnorkit`` stays cheap and the
training library works without the compiled extension (``xnorkit._core``).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "quantizers",
    "nn",
    "optim",
    "models",
    "data",
    "train",
    "convert",
    "kernels",
    "reference",
    "runtime",
    "runtime_torch",
    "metrics",
}

_ATTRS = {
    # name -> (module, attribute)
    "summary": ("xnorkit.summary", "summary"),
    "Model": ("xnorkit.runtime", "Model"),
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"xnorkit.{name}")
    if name in _ATTRS:
        mod, attr = _ATTRS[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'xnorkit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBMODULES | set(_ATTRS))
