"""Model summary: per-layer bit widths, parameters, binary vs float MACs and memory.

>>> import torch
>>> from xnorkit import nn as xnn
>>> from xnorkit.summary import summary
>>> model = torch.nn.Sequential(
...     xnn.QuantConv2d(1, 8, 3, padding="same", weight_quantizer="ste_sign", bias=False),
...     torch.nn.BatchNorm2d(8, affine=False),
...     torch.nn.Flatten(),
...     xnn.QuantLinear(8 * 28 * 28, 10, input_quantizer="ste_sign", weight_quantizer="ste_sign"))
>>> s = summary(model, (1, 1, 28, 28), print_fn=None)
>>> [r.precision for r in s.rows]
['32/1', '-', '-', '1/1']
>>> s.totals.binary_macs
62720

Which modules get a row: every module that declares an export spec (the :mod:`xnorkit.nn`
layers; their quantizer children are part of the row), and every other leaf module, one row
per call, in call order. MACs are multiply-accumulates per example (the batch dimension of
``input_shape`` is divided out), counted for linear and (non-transposed) convolution layers:
binary when the layer declares 1-bit inputs and 1-bit weights (:func:`xnorkit.nn.is_binary`),
float otherwise. Memory counts each quantized layer's weight at its declared bit width (plus
one 32-bit alpha per output channel for XNOR-Net scaling) and every other parameter at 32
bits; the float size counts every parameter at 32 bits. Folding BatchNorm into thresholds
at conversion is not modelled, and buffers (running statistics) are not counted.

Modelled on larq's ``larq.models.summary``.
"""

from __future__ import annotations

import io
import sys
import types
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["SummaryRow", "SummaryTotals", "ModelSummary", "summary"]


@dataclass(frozen=True)
class SummaryRow:
    """One called layer.

    Attributes:
        name: qualified module name (``""`` for the root module).
        type: class name.
        output_shape: shape of the output (with the batch dim), a list of shapes for tuple
            outputs, or None for non-tensor outputs.
        input_bits: declared input precision (None for layers without an export spec).
        weight_bits: declared weight precision (None likewise).
        precision: ``"input_bits/weight_bits"`` ("1/1", "32/1", ...); "32/32" for float
            linear/convolution layers; "?/?" when a quantizer declares no precision; "-" for
            other layers.
        params: number of parameters of the layer (its children included).
        binary_macs: 1-bit x 1-bit multiply-accumulates per example.
        float_macs: other multiply-accumulates per example.
        memory_bytes: deployed size of the layer's parameters in bytes.
    """

    name: str
    type: str
    output_shape: tuple | list | None
    input_bits: int | None
    weight_bits: int | None
    precision: str
    params: int
    binary_macs: int
    float_macs: int
    memory_bytes: float


@dataclass(frozen=True)
class SummaryTotals:
    """Whole-model totals (parameters counted once even when a layer is called twice).

    Attributes:
        params: all parameters.
        trainable_params: parameters with ``requires_grad``.
        binary_params: weights of layers declaring 1-bit weights.
        binary_macs: sum over the rows.
        float_macs: sum over the rows.
        float_size_bytes: every parameter at 32 bits.
        deployed_size_bytes: weights at their declared bits, the rest at 32 bits.
        compression_ratio: float_size_bytes / deployed_size_bytes (1.0 for an empty model).
    """

    params: int
    trainable_params: int
    binary_params: int
    binary_macs: int
    float_macs: int
    float_size_bytes: float
    deployed_size_bytes: float
    compression_ratio: float


@dataclass
class ModelSummary:
    """The result of :func:`summary`: ``rows`` and ``totals``; ``str()`` renders the table."""

    rows: list[SummaryRow] = field(default_factory=list)
    totals: SummaryTotals | None = None
    title: str = "Model"

    def table(self, width: int = 120) -> str:
        """The summary as a text table (rendered with rich, no colour codes)."""
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"{self.title} summary", show_footer=True)
        tot = self.totals
        t.add_column("Layer", footer="Total")
        t.add_column("Type")
        t.add_column("Output shape")
        t.add_column("Bits (in/w)", justify="center")
        t.add_column("# Params", justify="right", footer=f"{tot.params:,}" if tot else "")
        t.add_column("Binary MACs", justify="right", footer=f"{tot.binary_macs:,}" if tot else "")
        t.add_column("Float MACs", justify="right", footer=f"{tot.float_macs:,}" if tot else "")
        t.add_column("Memory", justify="right",
                     footer=_fmt_bytes(tot.deployed_size_bytes) if tot else "")
        for r in self.rows:
            t.add_row(r.name or "(root)", r.type, _fmt_shape(r.output_shape), r.precision,
                      f"{r.params:,}", f"{r.binary_macs:,}", f"{r.float_macs:,}",
                      _fmt_bytes(r.memory_bytes))
        buf = io.StringIO()
        console = Console(file=buf, width=width, color_system=None, force_terminal=False,
                          highlight=False)
        console.print(t)
        if tot is not None:
            console.print(
                f"Params: {tot.params:,} (trainable {tot.trainable_params:,}, binary weights "
                f"{tot.binary_params:,})\n"
                f"MACs per example: binary {tot.binary_macs:,}, float {tot.float_macs:,}\n"
                f"Float-32 model size: {_fmt_bytes(tot.float_size_bytes)}\n"
                f"Deployed size: {_fmt_bytes(tot.deployed_size_bytes)}\n"
                f"Compression ratio: {tot.compression_ratio:.2f}x")
        return buf.getvalue()

    def __str__(self) -> str:
        return self.table()


def _fmt_bytes(n: float) -> str:
    if n < 1024:
        return f"{n:g} B"
    if n < 1024 ** 2:
        return f"{n / 1024:.2f} KiB"
    return f"{n / 1024 ** 2:.2f} MiB"


def _fmt_shape(s) -> str:
    if s is None:
        return "-"
    if isinstance(s, list):
        return ", ".join(_fmt_shape(x) for x in s)
    return "(" + ", ".join(str(d) for d in s) + ")"


def _out_shape(out):
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)):
        shapes = [tuple(o.shape) for o in out if isinstance(o, torch.Tensor)]
        return shapes or None
    return None


def _spec_bits(module: nn.Module):
    """(input_bits, weight_bits, weight_scale) from export_spec, None if undeclared/absent."""
    fn = getattr(module, "export_spec", None)
    if not callable(fn):
        return None
    try:
        spec = fn()
    except ValueError:  # a quantizer without a declared precision
        return (None, None, "none")
    return (int(spec.input_bits), int(spec.weight_bits), getattr(spec, "weight_scale", "none"))


def _is_mac_layer(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    return isinstance(m, nn.modules.conv._ConvNd) and not m.transposed


def _param_bits(model: nn.Module) -> tuple[dict[int, float], set[int]]:
    """Deployed bits per parameter id, and the ids of binary weights."""
    bits: dict[int, float] = {}
    binary: set[int] = set()
    for m in model.modules():
        sb = _spec_bits(m)
        if sb is None:
            continue
        _, wbits, scale = sb
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor):
            continue
        b = float((wbits if wbits is not None else 32) * w.numel())
        if scale == "per_channel_mean_abs":
            b += 32.0 * (w.shape[0] if w.dim() >= 2 else 1)
        bits[id(w)] = b
        if wbits == 1:
            binary.add(id(w))
    return bits, binary


def summary(model: nn.Module, input_shape: Sequence[int],
            print_fn: Callable[[str], object] | None = print) -> ModelSummary:
    """Run one forward pass and tabulate every layer.

    The model runs in eval mode under ``torch.no_grad()`` on a zero input of ``input_shape``
    (dtype and device of the model's first floating-point parameter); each module's training
    flag is restored afterwards.

    Args:
        model: the model.
        input_shape: the full input shape including the batch dimension, e.g. (1, 3, 32, 32).
            MACs are reported per example.
        print_fn: called with the rendered table; None to print nothing.

    Returns:
        :class:`ModelSummary` with ``rows`` and ``totals``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``input_shape`` is not a non-empty sequence of positive ints.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"summary: model must be an nn.Module, got {type(model).__name__}")
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if not (isinstance(input_shape, (tuple, list)) and len(input_shape) > 0
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)):
        raise ValueError(f"summary: input_shape must be a non-empty sequence of positive ints "
                         f"(batch first), got {input_shape!r}")
    batch = input_shape[0]

    # which modules get rows: declared layers, and leaves outside them
    chosen: list[tuple[str, nn.Module]] = []
    inside: set[int] = set()
    for name, m in model.named_modules():
        if id(m) in inside:
            continue
        declared = callable(getattr(m, "export_spec", None))
        if declared or not any(True for _ in m.children()):
            chosen.append((name, m))
        if declared:
            inside.update(id(c) for c in m.modules())

    param_bits, binary_ids = _param_bits(model)
    rows: list[SummaryRow] = []

    def make_hook(name: str):
        def hook(m, args, out):
            sb = _spec_bits(m)
            params = sum(p.numel() for p in m.parameters())
            macs = 0
            if _is_mac_layer(m) and isinstance(out, torch.Tensor):
                macs = (out.numel() // batch) * m.weight[0].numel()
            if sb is not None:
                ib, wb, _ = sb
                precision = "?/?" if ib is None else f"{ib}/{wb}"
                binary = ib == 1 and wb == 1
            else:
                ib = wb = None
                precision = "32/32" if _is_mac_layer(m) else "-"
                binary = False
            mem = sum(param_bits.get(id(p), 32.0 * p.numel()) for p in m.parameters()) / 8.0
            rows.append(SummaryRow(name=name, type=type(m).__name__, output_shape=_out_shape(out),
                                   input_bits=ib, weight_bits=wb, precision=precision,
                                   params=params, binary_macs=macs if binary else 0,
                                   float_macs=0 if binary else macs, memory_bytes=mem))
        return hook

    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = first.dtype if first is not None else torch.get_default_dtype()
    device = first.device if first is not None else torch.device("cpu")
    x = torch.zeros(tuple(input_shape), dtype=dtype, device=device)

    modes = {id(m): m.training for m in model.modules()}
    handles = [m.register_forward_hook(make_hook(n)) for n, m in chosen]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m in model.modules():
            m.training = modes[id(m)]

    params = list({id(p): p for p in model.parameters()}.values())
    float_bytes = sum(32.0 * p.numel() for p in params) / 8.0
    deployed_bytes = sum(param_bits.get(id(p), 32.0 * p.numel()) for p in params) / 8.0
    totals = SummaryTotals(
        params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        binary_params=sum(p.numel() for p in params if id(p) in binary_ids),
        binary_macs=sum(r.binary_macs for r in rows),
        float_macs=sum(r.float_macs for r in rows),
        float_size_bytes=float_bytes,
        deployed_size_bytes=deployed_bytes,
        compression_ratio=float_bytes / deployed_bytes if deployed_bytes > 0 else 1.0,
    )
    result = ModelSummary(rows=rows, totals=totals, title=type(model).__name__)
    if print_fn is not None:
        print_fn(result.table())
    return result


class _CallableModule(types.ModuleType):
    """``xnorkit.summary`` is both this module and (lazily, in xnorkit/__init__.py) the
    function; once the module is imported, Python binds the package attribute to the module.
    Making the module callable keeps ``xnorkit.summary(model, shape)`` working either way."""

    def __call__(self, *args, **kwargs):
        return summary(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
