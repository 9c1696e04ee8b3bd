"""Pass ``fuse_output_stage``: merge per-channel chains into the op that produces their input.

A ``channelwise`` node (BatchNorm, bias, scale, activation) whose input is read by nothing
else is appended to its producer's step chain when the producer is a conv/dense op or another
channelwise node; a lone activation after an ``add`` becomes the add's activation. Afterwards
every conv/dense op carries the whole per-channel chain up to the next non-per-channel op, which
is what the threshold passes and the output-stage lowering need. The chain is kept symbolic
(no arithmetic happens here), so nothing about PyTorch's rounding is lost.
"""

from __future__ import annotations

from xnorkit.convert.ir import GEMM_OPS, Graph

NAME = "fuse_output_stage"


def run(g: Graph, ctx=None) -> Graph:
    changed = True
    while changed:
        changed = False
        for node in list(g.nodes):
            if node.op != "channelwise":
                continue
            x = node.inputs[0]
            p = g.producer(x)
            if p is None or g.uses(x) != 1 or p.output.dtype != "f32":
                continue
            if p.op in GEMM_OPS or p.op == "channelwise":
                p.steps.extend(node.steps)
            elif p.op == "add" and p.attrs.get("act", "none") == "none" and len(node.steps) == 1 \
                    and node.steps[0].kind == "act":
                s = node.steps[0]
                p.attrs.update(act=s.act, act_lo=s.lo, act_hi=s.hi)
                if s.alpha is not None:
                    p.params["act_alpha"] = s.alpha
            else:
                continue
            for layer in g.report.values():
                if layer.name == node.name and layer.became == "folded":
                    layer.why = f"per-channel affine fused into the output stage of {p.name}"
            g.replace_uses(node.output, x)
            g.remove(node)
            changed = True
    return g
