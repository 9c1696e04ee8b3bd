"""The conversion pipeline: trace -> passes (in this order, for these reasons) -> lower -> file.

``PIPELINE`` is the visible ordered list of passes (each a module in
:mod:`xnorkit.convert.passes` with its own golden before/after test):

1. ``fuse_output_stage`` -- first, so every conv/dense carries its whole per-channel chain
   (bias, scale, BatchNorm, activation) and the threshold passes see the chain in one place.
2. ``fold_thresholds`` -- before anything changes arithmetic: the signs after binary layers
   become exact integer thresholds (evaluated on PyTorch's float32 chain), keeping activations
   packed between binary layers; max-pools and flattens on the way move to bits.
3. ``fold_float_sign`` -- the remaining signs after float arithmetic become float thresholds,
   or bits written directly by a float/int8 conv.
4. ``flatten_order`` -- after the folds (which decide what is bits): flatten in HWC order and
   permute the following dense weights (required for bits).
5. ``quantize_int8`` -- after the flatten permutation (it quantizes the final weights) and
   before legalization (it prepends the dequantization scale to the chain).
6. ``legalize_stages`` -- compose the remaining chains into the format's output stages; after
   it each node is one file op.
7. ``bitpack_weights`` -- binary weights to 1 bit each.
8. ``cleanup`` -- drop dead ops, merge duplicate signs.
9. ``plan_memory`` -- last: the arena needs the final ops and dtypes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from xnorkit.convert import format as xkf
from xnorkit.convert.ir import ConversionError, Graph
from xnorkit.convert.lower import lower
from xnorkit.convert.passes import get_pass
from xnorkit.convert.trace import trace

PIPELINE: tuple[str, ...] = (
    "fuse_output_stage",
    "fold_thresholds",
    "fold_float_sign",
    "flatten_order",
    "quantize_int8",
    "legalize_stages",
    "bitpack_weights",
    "cleanup",
    "plan_memory",
)

PRECISIONS = ("auto", "int8", "float")


@dataclass
class ConvertOptions:
    """Settings the passes read.

    Attributes:
        precision: non-binary conv/dense layers: "auto" (int8 with calibration data, else
            float), "int8" (calibration required) or "float".
        float_layers: module paths of layers to keep float32 regardless.
        ranges: calibrated input range (min, max) per module path (filled by :func:`calibrate`).
    """

    precision: str = "auto"
    float_layers: tuple[str, ...] = ()
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")


@dataclass
class Conversion:
    """Result of :func:`convert`: the final IR, the file model and its bytes."""

    graph: Graph
    model: xkf.XkModel
    data: bytes

    def save(self, path: str | os.PathLike) -> int:
        """Write the file atomically; returns its size in bytes."""
        return xkf.write(path, self.data)

    def report_rows(self) -> list[dict[str, Any]]:
        """One dict per converted layer: name, type, became, why, weight_bytes, notes."""
        sizes: dict[str, int] = {}
        for op in self.model.ops:
            sizes[op.name] = sizes.get(op.name, 0) + sum(self.model.tensors[i].nbytes
                                                         for i in op.tensor_refs().values())
        rows = []
        for r in self.graph.report.values():
            rows.append(dict(name=r.name, type=r.layer_type, became=r.became, why=r.why,
                             weight_bytes=sizes.get(r.name, 0), notes=list(r.notes)))
        return rows

    def print_report(self, console=None) -> None:
        """Print the table of which layers became binary, int8 or float, and why."""
        print_report(self.report_rows(), self.model, console)


def print_report(rows: list[dict], model: xkf.XkModel, console=None) -> None:
    """Render the conversion table (rich when available) followed by size totals."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="xnorkit convert: what each layer became")
    for col in ("layer", "type", "became", "why", "weights"):
        table.add_column(col, overflow="fold")
    colors = {"binary": "green", "int8": "yellow", "float": "red", "folded": "cyan"}
    for r in rows:
        why = r["why"] + "".join(f"; {n}" for n in r["notes"])
        became = f"[{colors.get(r['became'], 'white')}]{r['became']}[/]"
        table.add_row(r["name"], r["type"], became, why, _human(r["weight_bytes"]) if r["weight_bytes"] else "")
    console.print(table)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["became"]] = counts.get(r["became"], 0) + 1
    console.print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())) +
                  f"; constants {_human(model.const_bytes())}, arena {_human(model.arena_size)} per sample")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _batches(data: Any) -> Iterable[torch.Tensor]:
    if torch.is_tensor(data) or isinstance(data, np.ndarray):
        yield torch.as_tensor(data, dtype=torch.float32)
        return
    for item in data:
        if isinstance(item, (tuple, list)):  # (x, y) batches from a loader
            item = item[0]
        yield torch.as_tensor(item, dtype=torch.float32)


def calibrate(model: nn.Module, data: Any, max_batches: int = 64) -> dict[str, tuple[float, float]]:
    """Record the (min, max) of the input of every conv/linear layer over calibration data.

    Args:
        model: the PyTorch model (run in eval mode, restored afterwards).
        data: a tensor/array batch, or an iterable of batches (or of (x, y) pairs).
        max_batches: stop after this many batches.

    Returns:
        module path -> (min, max) of the float input that layer receives.
    """
    ranges: dict[str, list[float]] = {}
    hooks = []

    def hook(name):
        def fn(mod, args):
            x = args[0].detach()
            lo, hi = float(x.min()), float(x.max())
            r = ranges.setdefault(name, [lo, hi])
            r[0], r[1] = min(r[0], lo), max(r[1], hi)
        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_pre_hook(hook(name)))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i, x in enumerate(_batches(data)):
                if i >= max_batches:
                    break
                model(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return {k: (v[0], v[1]) for k, v in ranges.items()}


def run_passes(g: Graph, opts: ConvertOptions, names: Sequence[str] = PIPELINE) -> Graph:
    """Run the named passes in order (the full :data:`PIPELINE` by default)."""
    for name in names:
        g = get_pass(name).run(g, opts)
        g.validate()
    return g


def convert(model: nn.Module, example_input: torch.Tensor | np.ndarray, *, calibration: Any = None,
            precision: str = "auto", float_layers: Sequence[str] = (), labels: Sequence[str] | None = None,
            input_mean: Sequence[float] | None = None, input_std: Sequence[float] | None = None,
            config: dict | None = None, verbose: bool = True) -> Conversion:
    """Convert a PyTorch model into a ``.xk`` model.

    Args:
        model: built from xnorkit layers and the supported torch layers
            (:data:`xnorkit.convert.trace.SUPPORTED`).
        example_input: one input batch in the model's layout (shapes only).
        calibration: sample data for int8 calibration (a batch or an iterable of batches).
        precision: "auto" | "int8" | "float" for the non-binary conv/dense layers.
        float_layers: module paths to keep in float32.
        labels: class labels stored in the metadata.
        input_mean, input_std: input normalisation stored in the metadata.
        config: training configuration stored as JSON metadata.
        verbose: print the table of which layers became binary, int8 or float and why (on by
            default: a layer silently left in float is the most common surprise).

    Returns:
        A :class:`Conversion` (``.save(path)``, ``.print_report()``).

    Raises:
        ConversionError: unsupported layer/function/shape, or int8 without calibration data.
    """
    if isinstance(example_input, (tuple, list)):
        x = tuple(torch.as_tensor(e, dtype=torch.float32) for e in example_input)
    else:
        x = torch.as_tensor(example_input, dtype=torch.float32)
    known = {n for n, _ in model.named_modules()}
    unknown = [n for n in float_layers if n not in known]
    if unknown:
        raise ConversionError(f"float_layers: no module named {', '.join(map(repr, unknown))} in the model")
    opts = ConvertOptions(precision=precision, float_layers=tuple(float_layers))
    if calibration is not None:
        opts.ranges = calibrate(model, calibration)
    g = trace(model, x)
    g = run_passes(g, opts)
    from xnorkit import __version__

    g.metadata["producer"] = f"xnorkit {__version__}"
    if labels is not None:
        g.metadata["labels"] = list(labels)
    if input_mean is not None:
        g.metadata["input_mean"] = list(map(float, input_mean))
    if input_std is not None:
        g.metadata["input_std"] = list(map(float, input_std))
    if config is not None:
        g.metadata["config"] = config
    g.metadata["report"] = [dict(name=r.name, type=r.layer_type, became=r.became, why=r.why, notes=r.notes)
                            for r in g.report.values()]
    fm = lower(g)
    data = xkf.encode(fm)
    result = Conversion(g, xkf.decode(data), data)
    if verbose:
        result.print_report()
    return result
