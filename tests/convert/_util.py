"""Helpers shared by the converter tests: random BatchNorm statistics, PyTorch's binary
activations captured at every binary layer, and comparisons against reference.py."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xnorkit import reference as ref
from xnorkit.convert import format as xkf


def randomize_bn(model: nn.Module, seed: int = 0, zero_gamma: bool = True) -> nn.Module:
    """Random eval statistics and affine parameters for every BatchNorm, including negative
    and zero gammas (the flip and constant cases of the threshold folding)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 2)
                m.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.2)
                if m.weight is not None:
                    m.weight.copy_(torch.randn(c, generator=g))
                    if zero_gamma and c > 2:
                        m.weight[0] = 0.0
                        m.weight[1] = -abs(float(m.weight[1])) - 0.1
                if m.bias is not None:
                    m.bias.copy_(torch.randn(c, generator=g))
    return model


def torch_binary_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """The +-1 input of every binary layer, as PyTorch computes it (module path -> array)."""
    import xnorkit.nn as xnn

    out: dict[str, np.ndarray] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, xnn.QuantLayerMixin) and xnn.is_binary(m):
            def hook(mod, args, res, name=name):
                out[name] = res.detach().numpy().copy()
            hooks.append(m.input_quantizer.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return out


def _to_torch_order(model: xkf.XkModel, op_index: int, env: dict, act: np.ndarray) -> np.ndarray:
    """The input of a binary op in PyTorch's layout (undoing the HWC flatten order)."""
    t = model.tensors[model.ops[op_index].inputs[0]]
    producer = next((op for op in model.ops if op.output == model.ops[op_index].inputs[0]), None)
    while producer is not None and producer.kind in ("sign", "unpack"):  # elementwise: keep walking up
        producer = next((op for op in model.ops if op.output == producer.inputs[0]), None)
    if producer is not None and producer.kind == "flatten" and producer.params["order"] == 0:
        src = model.tensors[producer.inputs[0]]
        _, h, w, c = src.shape
        n = act.shape[0]
        return act.reshape(n, h, w, c).transpose(0, 3, 1, 2).reshape(n, -1)
    return ref.to_torch(act, t)


def compare(model: nn.Module, conv, x: torch.Tensor, rtol: float = 1e-5):
    """Run PyTorch and reference.py; return (max relative float error, {layer: mismatching bits})."""
    with torch.no_grad():
        want = model.eval()(x).numpy()
    outs, env = ref.run(conv.model, x.numpy(), return_all=True)
    got = outs[0]
    scale = max(float(np.abs(want).max()), 1e-30)
    rel = float(np.abs(got - want).max()) / scale
    tb = torch_binary_inputs(model, x)
    mism = {}
    for j, op in enumerate(conv.model.ops):
        if op.kind in ("bconv2d", "bdense") and op.name in tb:
            mine = _to_torch_order(conv.model, j, env, env[op.inputs[0]])
            theirs = tb[op.name].reshape(mine.shape)
            mism[op.name] = int(np.sum(mine != theirs))
    return rel, mism
