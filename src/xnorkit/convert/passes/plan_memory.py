"""Pass ``plan_memory``: one static activation arena from tensor lifetimes.

A tensor is live from the op that writes it (graph inputs: from the start) to the last op
that reads it (graph outputs: to the end). Tensors are placed largest first, each at the
lowest 64-byte aligned offset that does not overlap a placed tensor with an overlapping
lifetime (greedy best-fit by size, as TFLite Micro's greedy planner). An op's output never
shares memory with its inputs. The plan is for batch 1; batch N scales every offset by N
(docs/format.md §3).

Residual adds: the engine runs a binary convolution with float output and the add right after
it that is its only reader as one op (the add fused into the convolution's output stage), which
writes the add's output while the convolution's input is still being read. The plan keeps that
input live through the add, so the two never share memory (the input is packed bits: 1/32 of
the float tensors around it).
"""

from __future__ import annotations

import numpy as np

from xnorkit.convert.format import ALIGN, align, packed_row_bytes
from xnorkit.convert.ir import Graph, Value

NAME = "plan_memory"


def value_bytes(v: Value) -> int:
    """Bytes of an activation for batch 1 (bits: rows of packed_row_bytes(C))."""
    if v.dtype == "bits":
        return int(np.prod(v.shape[:-1])) * packed_row_bytes(v.shape[-1])
    return int(np.prod(v.shape)) * 4


def last_readers(g: Graph) -> dict[Value, int]:
    """Index of the last node reading each value (values never read are absent)."""
    return {v: i for i, n in enumerate(g.nodes) for v in n.inputs}


def fusable_add(g: Graph, i: int, readers: dict[Value, int] | None = None) -> bool:
    """Whether node i (a binary convolution) and node i + 1 (a residual add) run as one op in the
    engine: float output read only by that add (activation none), not a graph output.
    `readers`: last_readers(g), when the caller has it."""
    n = g.nodes[i]
    if n.op != "bconv2d" or n.output.dtype != "f32" or i + 1 >= len(g.nodes) or n.output in g.outputs:
        return False
    a = g.nodes[i + 1]
    if a.op != "add" or a.attrs.get("act", "none") != "none" or a.inputs.count(n.output) != 1:
        return False
    return (readers if readers is not None else last_readers(g)).get(n.output) == i + 1


def lifetimes(g: Graph) -> dict[Value, tuple[int, int]]:
    first: dict[Value, int] = {v: -1 for v in g.inputs}
    last: dict[Value, int] = {v: -1 for v in g.inputs}
    readers = last_readers(g)
    for i, n in enumerate(g.nodes):
        first.setdefault(n.output, i)
        last.setdefault(n.output, i)
        reads_until = i + 1 if fusable_add(g, i, readers) else i  # the fused add still reads the conv's input
        for v in n.inputs:
            last[v] = max(last.get(v, reads_until), reads_until)
    for v in g.outputs:
        last[v] = len(g.nodes)
    return {v: (first[v], last[v]) for v in first}


def run(g: Graph, ctx=None) -> Graph:
    life = lifetimes(g)
    order = sorted(life, key=lambda v: (-value_bytes(v), life[v][0], v.name))
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    plan: dict[Value, tuple[int, int]] = {}
    for v in order:
        size = value_bytes(v)
        f, l = life[v]
        busy = sorted((o, e) for o, e, pf, pl in placed if pf <= l and f <= pl)
        off = 0
        for o, e in busy:
            if off + size <= o:
                break
            off = max(off, align(e, ALIGN))
        plan[v] = (off, size)
        placed.append((off, off + size, f, l))
    g.arena = plan
    g.arena_size = align(max((o + s for o, s in plan.values()), default=0), ALIGN)
    return g
