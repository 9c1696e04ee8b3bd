"""Convert trained PyTorch BNNs into ``.xk`` model files (docs/format.md).

>>> from xnorkit.convert import convert                       # doctest: +SKIP
>>> result = convert(model, example_batch, calibration=batches)  # doctest: +SKIP
>>> result.print_report(); result.save("model.xk")            # doctest: +SKIP

Modules: :mod:`.trace` (PyTorch -> IR), :mod:`.ir`, :mod:`.passes` (one pass per file),
:mod:`.pipeline` (the ordered pass list), :mod:`.lower` (IR -> file tables), :mod:`.format`
(writer, reader, validator), :mod:`.export_c` (C sources for microcontrollers),
:mod:`.cli` (``xnorkit convert | info | export-c``).
"""

from xnorkit.convert.format import FormatError, XkModel, read, write
from xnorkit.convert.ir import ConversionError, Graph
from xnorkit.convert.pipeline import PIPELINE, Conversion, ConvertOptions, calibrate, convert, run_passes
from xnorkit.convert.trace import trace

__all__ = [
    "convert",
    "calibrate",
    "trace",
    "run_passes",
    "PIPELINE",
    "Conversion",
    "ConvertOptions",
    "ConversionError",
    "FormatError",
    "Graph",
    "XkModel",
    "read",
    "write",
]
