"""Pass ``bitpack_weights``: binary weights (+-1 floats) -> packed bits, one bit per weight.

Weight rows are the OHWI-flattened filters (docs/format.md §4.2): bit index
(ky * KW + kx) * C + ci, little-endian, rows padded to 64 bits; bit 1 means -1.
"""

from __future__ import annotations

import numpy as np

from xnorkit.convert.format import pack_bits
from xnorkit.convert.ir import Graph

NAME = "bitpack_weights"


def run(g: Graph, ctx=None) -> Graph:
    for n in g.nodes:
        if n.op not in ("bconv2d", "bdense") or n.params["weight"].dtype == np.uint8:
            continue
        w = n.params["weight"]
        oc = w.shape[0]
        flat = w.reshape(oc, -1)
        if not np.all(np.abs(flat) == 1):
            raise AssertionError(f"{n.name}: binary weights must be +-1 before packing")
        n.params["weight"] = pack_bits(flat)
        n.attrs["k"] = flat.shape[1]
    return g
