"""The converter's passes, one per module; each exposes ``NAME`` and ``run(graph, ctx)``.

The order they run in, and why, is :data:`xnorkit.convert.pipeline.PIPELINE`. Each pass can
be run alone by name (:func:`get_pass`), which is what its golden before/after test does.
"""

from __future__ import annotations

from types import ModuleType

from . import (bitpack_weights, cleanup, flatten_order, fold_float_sign, fold_thresholds, fuse_output_stage,
               legalize_stages, plan_memory, quantize_int8)

PASSES: dict[str, ModuleType] = {m.NAME: m for m in (
    fuse_output_stage, fold_thresholds, fold_float_sign, flatten_order, quantize_int8, legalize_stages,
    bitpack_weights, cleanup, plan_memory)}


def get_pass(name: str) -> ModuleType:
    """The pass module registered as ``name``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    if name not in PASSES:
        raise KeyError(f"unknown pass {name!r}; known: {', '.join(PASSES)}")
    return PASSES[name]
