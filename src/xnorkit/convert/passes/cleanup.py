"""Pass ``cleanup``: drop ops whose results nobody reads and merge duplicate signs.

Two ``sign`` ops on the same input with the same thresholds (e.g. two binary layers reading
one float tensor) compute the same bits; the second one is removed.
"""

from __future__ import annotations

import numpy as np

from xnorkit.convert.ir import Graph

NAME = "cleanup"


def _same_params(a, b) -> bool:
    if set(a.params) != set(b.params):
        return False
    return all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def run(g: Graph, ctx=None) -> Graph:
    changed = True
    while changed:
        changed = False
        signs = {}
        for n in list(g.nodes):
            if n.op == "sign":
                key = id(n.inputs[0])
                prev = signs.get(key)
                if prev is not None and _same_params(prev, n):
                    g.replace_uses(n.output, prev.output)
                    g.remove(n)
                    changed = True
                    continue
                signs.setdefault(key, n)
        for n in list(g.nodes):
            if g.uses(n.output) == 0:
                g.remove(n)
                changed = True
    return g
