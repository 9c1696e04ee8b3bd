"""Pass ``legalize_stages``: symbolic step chains -> the format's output stages and ops.

* a conv/dense with float output keeps the prefix of its chain that fits
  ``post_scale * act(scale * acc + bias) + post_bias`` (consecutive affine steps composed in
  float64, rounded once to float32); what does not fit becomes separate ops;
* every remaining ``channelwise`` node becomes ``affine`` and ``activation`` nodes.

After this pass each IR node maps to exactly one op of the file.
"""

from __future__ import annotations

from xnorkit.convert.ir import GEMM_OPS, Graph, Node, Step
from xnorkit.convert.steps import compose_affine, fit_stage

NAME = "legalize_stages"

_STAGE_ARRAYS = ("scale", "bias", "post_scale", "post_bias", "act_alpha")


def _apply_stage(n: Node, stage: dict) -> None:
    for k in _STAGE_ARRAYS:
        if stage.get(k) is not None:
            n.params[k] = stage[k]
    n.attrs.update(act=stage["act"], act_lo=stage["act_lo"], act_hi=stage["act_hi"])


def _split_channelwise(g: Graph, node: Node) -> None:
    """Replace a channelwise node by affine/activation nodes (in place in the node list)."""
    x = node.inputs[0]
    c = x.channels
    groups: list[list[Step]] = []
    for s in node.steps:
        if s.kind == "act" or not groups or groups[-1][0].kind == "act":
            groups.append([s])
        else:
            groups[-1].append(s)
    new: list[Node] = []
    cur = x
    for i, grp in enumerate(groups):
        last = i == len(groups) - 1
        out = node.output if last else g.value(f"{node.name}.{i}", x.shape, "f32", x.torch_layout)
        if grp[0].kind == "act":
            s = grp[0]
            n = Node("activation", node.name, [cur], out, attrs=dict(act=s.act, act_lo=s.lo, act_hi=s.hi))
            if s.alpha is not None:
                n.params["act_alpha"] = s.alpha
        else:
            sc, bi = compose_affine(grp, c)
            n = Node("affine", node.name, [cur], out)
            if any(s.kind in ("scale", "bn") for s in grp):
                n.params["scale"] = sc.astype("float32")
            if any(s.kind in ("bias", "bn") for s in grp):
                n.params["bias"] = bi.astype("float32")
        new.append(n)
        cur = out
    if not new:  # empty chain: identity
        g.replace_uses(node.output, x)
        g.remove(node)
        return
    i = g.nodes.index(node)
    g.nodes[i: i + 1] = new


def run(g: Graph, ctx=None) -> Graph:
    for n in list(g.nodes):
        if n.op not in GEMM_OPS or (n.op in ("bconv2d", "bdense") and n.attrs.get("out") == "bits"):
            continue
        stage, rest = fit_stage(n.steps, n.output.channels)
        _apply_stage(n, stage)
        n.steps = []
        if rest:
            if n.attrs.get("out") == "bits":  # fold_float_sign only fuses chains that fit
                raise AssertionError(f"{n.name}: bits output with an unfitted chain")
            out = n.output
            mid = g.value(n.name + ".stage", out.shape, "f32", out.torch_layout)
            n.output = mid
            cw = Node("channelwise", n.name + ".rest", [mid], out, steps=rest)
            g.nodes.insert(g.nodes.index(n) + 1, cw)
    for n in list(g.nodes):
        if n.op == "channelwise":
            _split_channelwise(g, n)
    return g
