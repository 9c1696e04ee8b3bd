"""Lowering: a legalized, planned IR graph -> :class:`xnorkit.convert.format.XkModel`.

After the pipeline every IR node is one op of docs/format.md §4; this module only assigns
tensor-table indices and lays the node attributes and arrays out as the file's fields.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from xnorkit.convert import format as xkf
from xnorkit.convert.format import NONE
from xnorkit.convert.ir import ConversionError, Graph, Node, Value


class _Tables:
    def __init__(self, g: Graph):
        self.g = g
        self.tensors: list[xkf.Tensor] = []
        self.index: dict[int, int] = {}

    def act(self, v: Value) -> int:
        if id(v) not in self.index:
            if v not in self.g.arena:
                raise ConversionError(f"lowering: value {v.name} has no arena slot (run plan_memory first)")
            off, _ = self.g.arena[v]
            self.index[id(v)] = len(self.tensors)
            self.tensors.append(xkf.Tensor(v.name, v.dtype, "arena", v.shape, v.torch_layout, off))
        return self.index[id(v)]

    def const(self, name: str, dtype: str, data: np.ndarray, shape: tuple[int, ...] | None = None) -> int:
        data = np.asarray(data)
        if dtype == "bits":
            t = xkf.Tensor(name, "bits", "const", tuple(shape), data=np.ascontiguousarray(data, dtype=np.uint8))
        else:
            arr = np.ascontiguousarray(data, dtype=xkf.DTYPE_NUMPY[dtype])
            t = xkf.Tensor(name, dtype, "const", tuple(shape or arr.shape), data=arr.reshape(shape or arr.shape))
        self.tensors.append(t)
        return len(self.tensors) - 1

    def opt_f32(self, node: Node, key: str, n: int) -> int:
        if key not in node.params or node.params[key] is None:
            return NONE
        a = np.asarray(node.params[key], np.float32).reshape(-1)
        if a.size == 1 and n > 1 and key != "act_alpha":
            a = np.full(n, a[0], np.float32)
        return self.const(f"{node.name}.{key}", "f32", a, (a.size,))


def _stage(t: _Tables, n: Node, oc: int, binary: bool) -> dict[str, Any]:
    out = n.attrs.get("out", "float")
    st: dict[str, Any] = {"kind": out}
    if out == "bits" and binary:
        st["threshold"] = t.const(f"{n.name}.threshold", "i32", n.params["threshold"], (oc,))
        flip = np.asarray(n.params["flip"], np.uint8)
        if flip.any():
            st["flip"] = t.const(f"{n.name}.flip", "u8", flip, (oc,))
        return st
    st.update(act=n.attrs.get("act", "none"), act_lo=float(n.attrs.get("act_lo", 0.0)),
              act_hi=float(n.attrs.get("act_hi", 0.0)))
    for key in ("scale", "bias", "post_scale", "post_bias", "act_alpha"):
        st[key] = t.opt_f32(n, key, oc)
    return st


def _conv_params(n: Node) -> dict[str, Any]:
    a = n.attrs
    p = {k: int(a[k]) for k in ("kh", "kw", "stride_h", "stride_w", "dil_h", "dil_w", "pad_top", "pad_left",
                                "pad_bottom", "pad_right")}
    p["pad_value"] = int(a.get("pad_value", 0))
    p["groups"] = int(a.get("groups", 1))
    return p


def _quant_params(n: Node) -> dict[str, Any]:
    if n.attrs.get("precision", "f32") == "i8":
        return {"precision": xkf.PREC["i8"], "in_scale": float(n.attrs["in_scale"]),
                "in_zero_point": int(n.attrs["in_zero_point"])}
    return {"precision": 0, "in_scale": 0.0, "in_zero_point": 0}


def lower(g: Graph) -> xkf.XkModel:
    """Build the file model (tensor/op tables, io, metadata) from a planned graph."""
    t = _Tables(g)
    for v in g.inputs:
        t.act(v)
    ops: list[xkf.Op] = []
    for n in g.nodes:
        ins = [t.act(v) for v in n.inputs]
        out = t.act(n.output)
        k = n.op
        op = xkf.Op(k, n.name, ins, out)
        if k in ("bconv2d", "bdense"):
            w = n.params["weight"]
            oc = n.output.channels
            op.weights = t.const(f"{n.name}.weight", "bits", w, (oc, int(n.attrs["k"])))
            op.out = {**op.out, **_stage(t, n, oc, True)}
            op.params.update(_conv_params(n) if k == "bconv2d" else {"precision": 0})
        elif k in ("conv2d", "dense"):
            w = n.params["weight"]
            oc = n.output.channels
            i8 = n.attrs.get("precision", "f32") == "i8"
            dt = "i8" if i8 else "f32"
            if k == "conv2d" and n.attrs.get("groups", 1) > 1:
                w = np.ascontiguousarray(w[..., 0].transpose(1, 2, 0))  # [OC,KH,KW,1] -> [KH,KW,OC]
            op.weights = t.const(f"{n.name}.weight", dt, w, w.shape)
            op.out = {**op.out, **_stage(t, n, oc, False)}
            op.params.update(_conv_params(n) if k == "conv2d" else {})
            op.params.update(_quant_params(n))
        elif k == "sign":
            c = n.output.channels
            if "threshold" in n.params:
                op.params["threshold"] = t.const(f"{n.name}.threshold", "f32", n.params["threshold"], (c,))
                flip = np.asarray(n.params["flip"], np.uint8)
                if flip.any():
                    op.params["flip"] = t.const(f"{n.name}.flip", "u8", flip, (c,))
        elif k in ("maxpool2d", "avgpool2d"):
            op.params.update({key: int(n.attrs[key]) for key in ("kh", "kw", "stride_h", "stride_w", "pad_top",
                                                                   "pad_left", "pad_bottom", "pad_right")})
            op.params["count_include_pad"] = int(n.attrs.get("count_include_pad", 1))
            inv = n.params.get("invert")
            if inv is not None and np.any(inv):
                c = n.output.channels
                op.params["invert"] = t.const(f"{n.name}.invert", "bits", xkf.pack_bits(np.where(inv, -1.0, 1.0)[None]),
                                              (c,))
        elif k in ("add", "activation"):
            op.params["act"] = xkf.ACT[n.attrs.get("act", "none")]
            op.params["act_lo"] = float(n.attrs.get("act_lo", 0.0))
            op.params["act_hi"] = float(n.attrs.get("act_hi", 0.0))
            op.params["act_alpha"] = t.opt_f32(n, "act_alpha", n.output.channels)
        elif k == "affine":
            c = n.output.channels
            op.params["scale"] = t.opt_f32(n, "scale", c)
            op.params["bias"] = t.opt_f32(n, "bias", c)
        elif k == "flatten":
            op.params["order"] = int(n.attrs.get("order", 1))
        elif k in ("unpack", "global_avgpool", "concat", "reshape", "softmax"):
            pass
        else:
            raise ConversionError(f"lowering: node {n.name} has op {k!r}, which has no file form (a pass is missing)")
        ops.append(op)
    outputs = [t.act(v) for v in g.outputs]
    meta: dict[str, tuple[str, Any]] = {}
    for key, val in g.metadata.items():
        if key in ("input_mean", "input_std"):
            meta[key] = ("f32", np.asarray(val, np.float32).reshape(-1))
        elif key in ("config", "report"):
            meta[key] = ("json", json.loads(json.dumps(val, default=str)))
        elif key == "labels":
            meta[key] = ("utf8", "\n".join(map(str, val)) if not isinstance(val, str) else val)
        else:
            meta[key] = ("utf8", str(val))
    return xkf.XkModel(t.tensors, ops, [t.index[id(v)] for v in g.inputs], outputs, meta, g.arena_size)
