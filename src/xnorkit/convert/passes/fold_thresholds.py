"""Pass ``fold_thresholds``: a sign after a binary layer becomes integer thresholds.

For every ``sign`` whose input comes -- through single-use max-pools, flattens and channelwise
chains -- from a binary conv/dense with float output, the whole per-channel chain between the
integer accumulator and the sign (XNOR-Net scale, bias, output scale, BatchNorm, monotone
activations) is evaluated exactly as PyTorch evaluates it, on every accumulator value in
[-K, K] (:func:`xnorkit.convert.steps.integer_thresholds`), giving per-channel
``bit = (acc < T) XOR flip``: flip for decreasing channels (negative scale), a constant for
flat ones (zero scale). The binary layer then writes packed bits, max-pools on the way run on
bits (AND; OR for flipped channels, seeds §1.4) and the flatten moves bits, so activations stay
packed between binary layers. Chains that are not representable (a non-monotone activation)
or per-feature parameters after a flatten leave the graph unchanged (the sign then stays a
separate float op, reported).
"""

from __future__ import annotations

import numpy as np

from xnorkit.convert.ir import Graph, Node
from xnorkit.convert.steps import integer_thresholds

NAME = "fold_thresholds"


def _reduction(node: Node) -> int:
    w = node.params["weight"]
    return int(np.prod(w.shape[1:]))


def _find_chain(g: Graph, sign: Node):
    """Walk up from the sign; returns (binary producer, path nodes from producer downwards) or None."""
    path: list[Node] = []
    v = sign.inputs[0]
    while True:
        p = g.producer(v)
        if p is None or g.uses(v) != 1 or v.dtype != "f32":
            return None
        if p.op in ("bconv2d", "bdense"):
            return p, path[::-1]
        if p.op in ("maxpool2d", "flatten", "channelwise"):
            path.append(p)
            v = p.inputs[0]
            continue
        return None


def run(g: Graph, ctx=None) -> Graph:
    for sign in [n for n in g.nodes if n.op == "sign"]:
        if "threshold" in sign.params or sign.inputs[0].dtype != "f32":
            continue
        found = _find_chain(g, sign)
        if found is None:
            continue
        prod, path = found
        steps = list(prod.steps)
        spatial_flattened = False
        ok = True
        for n in path:
            if n.op == "flatten":
                spatial = int(np.prod(n.inputs[0].shape[1:-1]))
                if spatial > 1:
                    spatial_flattened = True
            elif n.op == "channelwise":
                if spatial_flattened and any(s.channels() is not None for s in n.steps):
                    ok = False  # per-feature parameters after a spatial flatten: not per channel
                steps.extend(n.steps)
        if spatial_flattened and not all(c.op == "bdense" for c in g.consumers(sign.output)):
            ok = False  # a bit flatten must be HWC order: only dense consumers can be permuted
        if not ok:
            continue
        channels = prod.output.channels
        T, flip, representable, boundary = integer_thresholds(steps, _reduction(prod), channels)
        if not representable.all():
            g.note(prod.name, f"sign after {prod.name} kept in float: the chain is not monotone in "
                              f"{int((~representable).sum())} channels")
            continue
        prod.params["threshold"] = T
        prod.params["flip"] = flip
        prod.attrs["out"] = "bits"
        prod.steps = []
        prod.output.dtype = "bits"
        for n in path:
            if n.op == "channelwise":
                g.replace_uses(n.output, n.inputs[0])
                g.remove(n)
                if n.name in g.report:
                    g.report[n.name].why = f"folded into the integer thresholds of {prod.name}"
            else:
                n.output.dtype = "bits"
                if n.op == "maxpool2d":
                    n.params["invert"] = flip.astype(bool)
        g.replace_uses(sign.output, sign.inputs[0])
        g.remove(sign)
        n_const = int(np.sum(T == np.iinfo(np.int32).min))
        n_flip = int(np.sum(flip[T != np.iinfo(np.int32).min]))
        text = f"bits out: integer thresholds over {len(steps)} folded steps"
        if n_flip:
            text += f", {n_flip} flipped (negative scale)"
        if n_const:
            text += f", {n_const} constant (zero scale)"
        if boundary:
            text += f", {boundary} within float32 rounding of an integer (PyTorch's float32 result used)"
        g.note(prod.name, text)
    return g
