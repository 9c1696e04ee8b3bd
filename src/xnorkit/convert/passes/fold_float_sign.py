"""Pass ``fold_float_sign``: a sign after float arithmetic becomes a float threshold or a bits
output.

* ``channelwise -> sign`` (e.g. BatchNorm then the next binary layer's input quantizer, when
  the BatchNorm follows a float op): the monotone chain folds into per-channel float32
  thresholds found by bisection over float32 values, so ``!(x >= t) XOR flip`` equals
  PyTorch's float32 ``sign0(chain(x))`` for every finite x
  (:func:`xnorkit.convert.steps.float_thresholds`).
* ``conv2d/dense -> sign`` with an output stage that fits docs/format.md §4.1: the float/int8
  op writes bits directly (``bit = !(y >= 0)``), skipping a float round trip through memory.
"""

from __future__ import annotations

from xnorkit.convert.ir import Graph
from xnorkit.convert.steps import fit_stage, float_thresholds

NAME = "fold_float_sign"


def run(g: Graph, ctx=None) -> Graph:
    changed = True
    while changed:
        changed = False
        for sign in [n for n in g.nodes if n.op == "sign"]:
            x = sign.inputs[0]
            if x.dtype != "f32" or "threshold" in sign.params:
                continue
            p = g.producer(x)
            if p is None or g.uses(x) != 1:
                continue
            if p.op == "channelwise":
                res = float_thresholds(p.steps, x.channels)
                if res is None:
                    continue
                sign.params["threshold"], sign.params["flip"] = res
                sign.inputs = [p.inputs[0]]
                g.remove(p)
                if p.name in g.report:
                    g.report[p.name].why = f"folded into the float thresholds of {sign.name}"
                changed = True
            elif p.op in ("conv2d", "dense") and p.attrs.get("out", "float") == "float":
                _, rest = fit_stage(p.steps, x.channels)
                if rest:
                    continue
                p.attrs["out"] = "bits"
                p.output.dtype = "bits"
                g.replace_uses(sign.output, p.output)
                g.remove(sign)
                g.note(p.name, "bits out: sign of the output stage fused")
                changed = True
    return g
