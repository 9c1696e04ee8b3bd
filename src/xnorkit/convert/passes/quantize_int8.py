"""Pass ``quantize_int8``: non-binary conv/dense layers to int8 (or left float, and why).

Policy (``ctx.precision``): ``"int8"`` quantizes every non-binary conv/dense (calibration data
required), ``"float"`` keeps them float32, ``"auto"`` (default) quantizes when calibration data
was given and keeps float otherwise; layers named in ``ctx.float_layers`` always stay float.

Scheme (docs/format.md §4.4): weights symmetric per output channel,
``w_scale[c] = max|w[c]| / 127``, ``q = rne(w / w_scale)`` in [-127, 127]; the input
asymmetric per tensor from the calibrated range [lo, hi] (widened to contain 0 so that zero
padding is exact): ``in_scale = (hi - lo) / 255``, ``zero_point = rne(-128 - lo / in_scale)``.
The dequantization ``in_scale * w_scale[c]`` becomes the first step of the output stage.
"""

from __future__ import annotations

import numpy as np

from xnorkit.convert.ir import ConversionError, Graph, Step

NAME = "quantize_int8"


def input_quant(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero_point) for a calibrated range (always containing 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ConversionError(f"calibration range [{lo}, {hi}] is not finite")
    if hi == lo:
        return 1.0, 0
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(np.rint(-128.0 - lo / scale), -128, 127))
    return scale, zp


def weight_quant(w: np.ndarray, axis_oc: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8: (q int8 same shape, w_scale float32 [OC])."""
    wm = np.moveaxis(w.astype(np.float64), axis_oc, 0)
    oc = wm.shape[0]
    amax = np.abs(wm.reshape(oc, -1)).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(wm / scale.astype(np.float64).reshape((oc,) + (1,) * (wm.ndim - 1))), -127, 127)
    return np.moveaxis(q, 0, axis_oc).astype(np.int8), scale


def run(g: Graph, ctx=None) -> Graph:
    precision = getattr(ctx, "precision", "auto")
    float_layers = set(getattr(ctx, "float_layers", ()) or ())
    ranges = getattr(ctx, "ranges", None) or {}
    for n in g.nodes:
        if n.op not in ("conv2d", "dense") or n.attrs.get("precision", "f32") != "f32":
            continue
        rep = g.report.get(n.name)
        if n.name in float_layers:
            if rep:
                rep.became, rep.why = "float", rep.why + "; kept float as requested"
            continue
        if precision == "float":
            if rep:
                rep.became, rep.why = "float", rep.why + "; non-binary layers kept float (precision=float)"
            continue
        rng = ranges.get(n.name)
        src = g.producer(n.inputs[0])
        if src is not None and src.op == "unpack":
            rng = (-1.0, 1.0)
        if rng is None:
            if precision == "int8":
                raise ConversionError(f"layer {n.name}: int8 needs the calibrated range of its input; pass "
                                      f"calibration data (none was recorded for this layer)")
            if rep:
                rep.became, rep.why = "float", rep.why + "; no calibration data for int8"
            continue
        in_scale, zp = input_quant(*rng)
        q, ws = weight_quant(n.params["weight"], 0)  # IR weights are [OC, ...] (depthwise too)
        n.params["weight"] = q
        n.attrs.update(precision="i8", in_scale=in_scale, in_zero_point=zp)
        deq = (np.float64(in_scale) * ws.astype(np.float64)).astype(np.float32)
        n.steps.insert(0, Step("scale", value=deq))
        if rep:
            rep.became = "int8"
            rep.why += f"; int8 (input range [{rng[0]:.4g}, {rng[1]:.4g}] -> scale {in_scale:.4g}, zero point {zp})"
    return g
