"""Pass ``flatten_order``: flatten NHWC activations in HWC order and permute the next weights.

PyTorch flattens NCHW tensors in (C, H, W) order, the engine's activations are NHWC. Instead
of transposing at run time, a flatten whose consumers are all dense layers (possibly through
a sign) flattens in HWC order (a plain copy; for bits the only order the format allows) and the
columns of those dense weights -- and a sign's per-feature thresholds -- are permuted to match.
Otherwise a float flatten keeps the CHW order (the engine transposes).
"""

from __future__ import annotations

import numpy as np

from xnorkit.convert.ir import ConversionError, Graph, Node

NAME = "flatten_order"


def _perm(h: int, w: int, c: int) -> np.ndarray:
    """perm[i] = CHW index of HWC index i."""
    s = np.arange(h * w)
    ch = np.arange(c)
    return (ch[None, :] * (h * w) + s[:, None]).reshape(-1)


def _targets(g: Graph, v) -> list[tuple[Node, str]] | None:
    """Nodes/params to permute for value v, or None when some consumer cannot be permuted."""
    if any(o is v for o in g.outputs):
        return None
    out = []
    for c in g.consumers(v):
        if c.op in ("dense", "bdense"):
            out.append((c, "weight"))
        elif c.op in ("sign", "unpack"):
            if c.op == "sign":
                for key in ("threshold", "flip"):
                    if key in c.params and np.asarray(c.params[key]).size > 1:
                        out.append((c, key))
            more = _targets(g, c.output)
            if more is None:
                return None
            out.extend(more)
        else:
            return None
    return out


def run(g: Graph, ctx=None) -> Graph:
    for f in [n for n in g.nodes if n.op == "flatten"]:
        if f.attrs.get("order", 1) == 0:
            continue
        _, h, w, c = f.inputs[0].shape
        if h * w == 1:
            f.attrs["order"] = 0
            continue
        targets = _targets(g, f.output)
        if targets is None:
            if f.output.dtype == "bits":
                raise ConversionError(f"{f.name}: binary activations flattened in PyTorch's CHW order feed "
                                      f"something other than dense layers; cannot permute")
            continue
        perm = _perm(h, w, c)
        for node, key in targets:
            a = node.params[key]
            node.params[key] = np.ascontiguousarray(a[..., perm]) if a.ndim == 2 else np.ascontiguousarray(a[perm])
        f.attrs["order"] = 0
    return g
