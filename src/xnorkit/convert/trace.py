"""Front end: a PyTorch model -> the converter IR (:mod:`xnorkit.convert.ir`).

The model is traced with ``torch.fx`` (so residual adds and concatenations are seen), with
xnorkit's quantized layers, quantizers and the supported torch layers kept as leaves. The
tracer runs every op on the example input as it records it, so ``forward`` may check shapes
(``x.dim()``, ``x.shape``) and every IR value gets its shape; control flow on tensor *values*
still fails to trace, with a clear error. Every layer is mapped by its *type* and, for
xnorkit layers, by ``layer.export_spec()`` and ``layer.quantized_weight()`` only
(docs/api-contract.md) -- never by names.

What each supported piece becomes:

* ``QuantConv1d/2d``, ``QuantDepthwiseConv2d``, ``QuantLinear``:
  - 1-bit input (values {-1, +1}) and 1-bit weights: ``sign`` + ``bconv2d``/``bdense`` (the
    XNOR-Net scale alpha, the bias and the output scale become output-stage steps);
  - float input (``input_bits = 32``), any weights: ``conv2d``/``dense`` on the effective
    weights (``quantized_weight()``), later int8 or float;
  - 1-bit input, multi-bit weights: ``sign`` + ``unpack`` + ``conv2d``/``dense``.
* ``nn.Conv1d/2d`` (groups 1 or depthwise), ``nn.Linear``: ``conv2d``/``dense``.
* ``nn.BatchNorm1d/2d`` (eval statistics), ``nn.ReLU``, ``ReLU6``, ``Hardtanh``, ``PReLU``,
  ``LeakyReLU``, a scalar ``*``/``+``: ``channelwise`` steps.
* ``nn.MaxPool1d/2d``, ``AvgPool1d/2d``, ``AdaptiveAvgPool1d/2d`` (output 1 or an exact
  divisor), ``x.mean(spatial dims)``, ``nn.Flatten``/``torch.flatten``/``view``/``reshape``
  to (N, -1), ``+`` of two tensors, ``torch.cat`` on channels, ``nn.Softmax`` on channels,
  ``nn.Identity``/``Dropout`` (dropped), sign-type quantizer modules (``sign``).

Anything else raises :class:`~xnorkit.convert.ir.ConversionError` naming the node and
listing what is supported.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import _orig_module_call

from xnorkit.convert.ir import ConversionError, Graph, LayerReport, Node, Step, Value

SUPPORTED = (
    "xnorkit.nn: QuantConv1d, QuantConv2d, QuantDepthwiseConv2d, QuantLinear (binary: 1-bit +-1 inputs and "
    "1-bit weights; float input with any weights; 1-bit input with multi-bit weights); "
    "torch.nn: Conv1d, Conv2d (groups 1 or depthwise), Linear, BatchNorm1d/2d, ReLU, ReLU6, Hardtanh, PReLU, "
    "LeakyReLU, MaxPool1d/2d, AvgPool1d/2d, AdaptiveAvgPool1d/2d, Flatten, Softmax (channels), Identity, "
    "Dropout; sign-type quantizer modules (precision 1, values -1/+1) and NoOp(precision=32); "
    "functions: + (tensors, or a scalar), * scalar, torch.cat (channels), torch.flatten/view/reshape to "
    "(N, -1), relu/relu6/hardtanh/leaky_relu, max/avg/adaptive_avg pool, mean over spatial dims, softmax"
)

_ACT_MODULES = (nn.ReLU6, nn.ReLU, nn.Hardtanh, nn.PReLU, nn.LeakyReLU)
_LEAF_TORCH = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool1d, nn.MaxPool2d,
               nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Softmax,
               nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d) + _ACT_MODULES


def _xnn():
    import xnorkit.nn as xnn

    return xnn


def _quantizer_base():
    from xnorkit.quantizers import NoOp, Quantizer

    return Quantizer, NoOp


class _ValueProxy(torch.fx.Proxy):
    """A proxy that answers shape questions (``dim()``, ``size()``, ``.shape``) with the
    concrete value computed from the example input, so input checks in ``forward`` trace."""

    def _value(self):
        return self.tracer.values[self.node]

    def size(self, dim=None):
        v = self._value()
        return v.size() if dim is None else v.size(dim)

    def dim(self):
        return self._value().dim()

    def numel(self):
        return self._value().numel()

    @property
    def shape(self):
        return self._value().shape

    @property
    def ndim(self):
        return self._value().dim()


class _Tracer(torch.fx.Tracer):
    """fx tracer that keeps xnorkit layers, quantizers and norm layers as leaves and runs every
    traced op on the example inputs as it goes (the values answer shape queries and give the
    shapes of the IR; the graph itself stays symbolic, so value-dependent branching still
    fails to trace)."""

    def __init__(self, example_inputs: tuple[torch.Tensor, ...]):
        super().__init__()
        self.examples = list(example_inputs)
        self.values: dict[torch.fx.Node, Any] = {}
        self._concrete = 0

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self._concrete:  # computing an example value: plain attribute access
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def call_module(self, m, forward, args, kwargs):
        if self._concrete:  # computing an example value: run the module normally
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        xnn = _xnn()
        Quantizer, _ = _quantizer_base()
        if isinstance(m, (xnn.QuantLayerMixin, Quantizer, xnn.ChannelLayerNorm) + _LEAF_TORCH):
            return True  # subclasses of supported torch layers (e.g. Keras-style BatchNorm) too
        return super().is_leaf_module(m, qualname)

    def proxy(self, node: torch.fx.Node) -> torch.fx.Proxy:
        return _ValueProxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, *rest, **kw):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, *rest, **kw)
        node = proxy.node

        def conc(a):
            if not isinstance(a, torch.fx.Node):
                return a
            if a not in self.values and a.op == "get_attr":  # tensor constants fx stores on the root
                self._concrete += 1
                try:
                    v = self.root
                    for part in str(a.target).split("."):
                        v = getattr(v, part)
                finally:
                    self._concrete -= 1
                self.values[a] = v
            return self.values[a]

        cargs = torch.fx.node.map_aggregate(node.args, conc)
        ckwargs = torch.fx.node.map_aggregate(node.kwargs, conc)
        try:
            value = self._concrete_value(kind, target, cargs, ckwargs)
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(f"running {kind} {getattr(target, '__name__', target)} on the example input "
                                  f"failed: {type(exc).__name__}: {exc}") from exc
        self.values[node] = value
        node.meta["xk_value"] = value
        return proxy

    def _concrete_value(self, kind, target, cargs, ckwargs):
        with torch.no_grad():
            if kind == "placeholder":
                if not self.examples:
                    raise ConversionError(f"forward takes more inputs than the {len(self.values)} example inputs given")
                value = self.examples.pop(0)
            elif kind == "get_attr":
                self._concrete += 1
                try:
                    value = self.root
                    for part in str(target).split("."):
                        value = getattr(value, part)
                finally:
                    self._concrete -= 1
            elif kind == "call_function":
                value = target(*cargs, **ckwargs)
            elif kind == "call_method":
                value = getattr(cargs[0], target)(*cargs[1:], **ckwargs)
            elif kind == "call_module":
                self._concrete += 1
                try:
                    value = _orig_module_call(self.root.get_submodule(target), *cargs, **ckwargs)
                finally:
                    self._concrete -= 1
            else:
                value = None
        return value


def _torch_to_ir_shape(shape: tuple[int, ...], where: str) -> tuple[tuple[int, ...], str]:
    """Per-sample PyTorch shape (batch dropped) -> (IR shape with batch 1, torch layout)."""
    if len(shape) == 3:  # C, H, W
        c, h, w = shape
        return (1, h, w, c), "nchw"
    if len(shape) == 2:  # C, L
        c, l = shape
        return (1, 1, l, c), "ncl"
    if len(shape) == 1:
        return (1, shape[0]), "same"
    raise ConversionError(f"{where}: tensors of rank {len(shape) + 1} are not supported (expected (N, C, H, W), "
                          f"(N, C, L) or (N, F))")


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().to(torch.float32).numpy().copy()


class _Builder:
    """Walks the fx graph and emits IR nodes."""

    def __init__(self, model: nn.Module, gm: torch.fx.GraphModule, batch: int):
        self.model = model
        self.gm = gm
        self.batch = batch
        self.g = Graph()
        self.env: dict[str, Any] = {}
        self.modules = dict(model.named_modules())

    # ---------------------------------------------------------------- helpers
    def tshape(self, node: torch.fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("xk_value")
        if not torch.is_tensor(meta):
            raise ConversionError(f"node {node.name} ({node.op} {node.target}): no single tensor output "
                                  f"(tuples and non-tensor results are not supported)")
        shape = tuple(int(s) for s in meta.shape)
        if not shape or shape[0] != self.batch:
            raise ConversionError(f"node {node.name}: output shape {shape} does not keep the batch dimension "
                                  f"{self.batch} first")
        return shape[1:]

    def out_value_shape(self, node: torch.fx.Node) -> tuple[tuple[int, ...], str]:
        return _torch_to_ir_shape(self.tshape(node), f"node {node.name}")

    def val(self, arg: Any, node: torch.fx.Node) -> Value:
        if isinstance(arg, torch.fx.Node):
            v = self.env.get(arg.name)
            if isinstance(v, Value):
                return v
        raise ConversionError(f"node {node.name} ({node.target}): expected a tensor argument, got {arg!r}")

    def emit(self, op: str, name: str, inputs: list[Value], node: torch.fx.Node, dtype: str = "f32",
             shape: tuple[int, ...] | None = None, **attrs) -> Node:
        if shape is None:
            shape, layout = self.out_value_shape(node)
        else:
            layout = inputs[0].torch_layout if len(shape) == len(inputs[0].shape) else "same"
        n = self.g.add(op, name, inputs, shape, dtype, **attrs)
        n.output.torch_layout = layout
        return n

    def channelwise(self, name: str, x: Value, steps: list[Step], node: torch.fx.Node) -> Value:
        for s in steps:
            c = s.channels()
            if c is not None and c != x.channels:
                raise ConversionError(f"{name}: per-channel parameters of length {c} do not match the "
                                      f"{x.channels} channels of its input")
        n = self.g.add("channelwise", name, [x], x.shape, "f32")
        n.output.torch_layout = x.torch_layout
        n.steps = list(steps)
        return n.output

    def report(self, name: str, m: nn.Module | str, became: str, why: str) -> None:
        self.g.report[name] = LayerReport(name, m if isinstance(m, str) else type(m).__name__, became, why)

    def sign(self, name: str, x: Value) -> Value:
        if x.dtype == "bits":
            return x
        n = self.g.add("sign", name + ".input_quantizer", [x], x.shape, "bits")
        n.output.torch_layout = x.torch_layout
        return n.output

    # ---------------------------------------------------------------- run
    def build(self) -> Graph:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                shape, layout = self.out_value_shape(node)
                self.env[node.name] = self.g.add_input(node.name, shape, layout)
            elif node.op == "call_module":
                self.env[node.name] = self.call_module(node)
            elif node.op == "call_function":
                self.env[node.name] = self.call_function(node, node.target, node.args, node.kwargs)
            elif node.op == "call_method":
                self.env[node.name] = self.call_method(node)
            elif node.op == "output":
                outs = node.args[0]
                outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
                for o in outs:
                    self.g.outputs.append(self.val(o, node))
            elif node.op == "get_attr":
                raise ConversionError(f"node {node.name}: the model reads the parameter/buffer {node.target!r} "
                                      f"directly in forward; only layers (modules) may hold weights. "
                                      f"Supported: {SUPPORTED}")
            else:  # pragma: no cover - fx has no other kinds
                raise ConversionError(f"node {node.name}: unsupported fx op {node.op}")
        self.g.validate()
        return self.g

    # ---------------------------------------------------------------- modules
    def call_module(self, node: torch.fx.Node) -> Any:
        name = str(node.target)
        m = self.modules[name]
        xnn = _xnn()
        Quantizer, NoOp = _quantizer_base()
        x = self.val(node.args[0], node) if node.args else None
        if isinstance(m, xnn.QuantLayerMixin):
            return self.quant_layer(node, name, m, x)
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            return self.float_conv(node, name, m, x, _np(m.weight), _np(m.bias), [], "float layer")
        if isinstance(m, nn.Linear):
            return self.float_dense(node, name, m, x, _np(m.weight), _np(m.bias), [], "float layer")
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if m.running_mean is None or m.running_var is None:
                raise ConversionError(f"layer {name} ({type(m).__name__}): track_running_stats=False uses batch "
                                      f"statistics at inference; the converter needs running statistics")
            self.report(name, m, "folded", "per-channel affine (eval BatchNorm)")
            step = Step.bn(_np(m.weight), _np(m.bias), _np(m.running_mean), _np(m.running_var), m.eps)
            return self.channelwise(name, x, [step], node)
        if isinstance(m, _ACT_MODULES):
            return self.channelwise(name, x, [self.act_step_module(m, name)], node)
        if isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)):
            return x
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            return self.pool(node, name, "maxpool2d", x, m.kernel_size, m.stride, m.padding, m.dilation,
                             m.ceil_mode, True, isinstance(m, nn.MaxPool1d))
        if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
            if getattr(m, "divisor_override", None):
                raise ConversionError(f"layer {name} ({type(m).__name__}): divisor_override is not supported")
            return self.pool(node, name, "avgpool2d", x, m.kernel_size, m.stride, m.padding, 1, m.ceil_mode,
                             m.count_include_pad, isinstance(m, nn.AvgPool1d))
        if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            return self.adaptive_avg(node, name, x)
        if isinstance(m, nn.Flatten):
            return self.reshape_like(node, name, x)
        if isinstance(m, nn.Softmax):
            return self.softmax(node, name, x, m.dim)
        if isinstance(m, NoOp) and m.precision == 32:
            return x
        if isinstance(m, Quantizer):
            if m.precision == 1 and tuple(m.values or ()) == (-1.0, 1.0):
                n = self.g.add("sign", name, [x], x.shape, "bits")
                n.output.torch_layout = x.torch_layout
                return n.output
            raise ConversionError(f"layer {name} ({type(m).__name__} {getattr(m, 'description', '')}): only "
                                  f"sign-type quantizers (precision 1, values -1/+1) can stand alone in a converted "
                                  f"model; got precision {m.precision}, values {m.values}")
        raise ConversionError(f"layer {name} ({type(m).__name__}) is not supported. Supported: {SUPPORTED}")

    def act_step_module(self, m: nn.Module, name: str) -> Step:
        if isinstance(m, nn.ReLU6):
            return Step.activation("relu6")
        if isinstance(m, nn.ReLU):
            return Step.activation("relu")
        if isinstance(m, nn.Hardtanh):
            return Step.activation("hardtanh", m.min_val, m.max_val)
        if isinstance(m, nn.PReLU):
            return Step.activation("prelu", alpha=_np(m.weight))
        if isinstance(m, nn.LeakyReLU):
            return Step.activation("leaky", lo=m.negative_slope)
        raise ConversionError(f"layer {name}: unsupported activation {type(m).__name__}")  # pragma: no cover

    # ---------------------------------------------------------------- quantized layers
    def quant_layer(self, node, name: str, m: nn.Module, x: Value) -> Value:
        xnn = _xnn()
        spec = m.export_spec()
        wq = m.quantized_weight().detach().to(torch.float32)
        steps_tail: list[Step] = []
        bias = _np(m.bias) if spec.has_bias else None
        tname = type(m).__name__
        iq = spec.input_quantizer or "none"
        wqd = spec.weight_quantizer or "none"
        if spec.input_bits == 1 and spec.weight_bits == 1:
            if tuple(spec.input_values or ()) != (-1.0, 1.0):
                raise ConversionError(
                    f"layer {name} ({tname}): binary input quantizer {iq} produces values {spec.input_values}; the "
                    f"bit-packed engine needs exactly {{-1, +1}} with sign0 (0 -> +1)")
            if getattr(m, "groups", 1) != 1:
                raise ConversionError(f"layer {name} ({tname}): grouped/depthwise binary convolutions are not "
                                      f"supported (groups={m.groups}); use groups=1 or a float depthwise layer")
            sign_w, alpha = self.split_binary_weight(name, tname, wq, spec)
            steps: list[Step] = []
            if alpha is not None:
                steps.append(Step("scale", value=alpha))
            if bias is not None:
                steps.append(Step("bias", value=bias))
            if spec.output_scale is not None:
                steps.append(Step("scale", value=np.array([spec.output_scale], np.float32)))
            xb = self.sign(name, x)
            why = f"input_bits=1, weight_bits=1 ({iq} / {wqd})"
            self.report(name, m, "binary", why)
            if isinstance(m, nn.Linear):
                n = self.emit("bdense", name, [xb], node)
                n.params["weight"] = sign_w
            else:
                geo = self.conv_geometry(node, name, m, x)
                geo["pad_value"] = int(spec.pad_value)
                n = self.emit("bconv2d", name, [xb], node, **geo)
                n.params["weight"] = self.ohwi(sign_w, m)
            n.steps = steps
            return n.output
        if spec.input_bits not in (1, 32):
            raise ConversionError(f"layer {name} ({tname}): {spec.input_bits}-bit inputs ({iq}) are not supported; "
                                  f"supported: 1-bit (+-1, sign0) or 32-bit (float) inputs")
        if spec.output_scale is not None:
            steps_tail.append(Step("scale", value=np.array([spec.output_scale], np.float32)))
        if spec.input_bits == 1:
            if tuple(spec.input_values or ()) != (-1.0, 1.0):
                raise ConversionError(f"layer {name} ({tname}): 1-bit input quantizer {iq} produces values "
                                      f"{spec.input_values}; expected {{-1, +1}}")
            xb = self.sign(name, x)
            u = self.g.add("unpack", name + ".unpack", [xb], xb.shape, "f32")
            u.output.torch_layout = xb.torch_layout
            x = u.output
            why = f"1-bit input but {spec.weight_bits}-bit weights ({wqd})"
        else:
            why = f"float input (input_bits=32{', ' + str(spec.weight_bits) + '-bit weights' if spec.weight_bits < 32 else ''})"
        if isinstance(m, nn.Linear):
            return self.float_dense(node, name, m, x, wq.numpy(), bias, steps_tail, why)
        if spec.pad_value != 0.0:
            raise ConversionError(f"layer {name} ({tname}): pad_value={spec.pad_value:g} on a non-binary "
                                  f"convolution is not supported (only binary convolutions pad with +-1)")
        return self.float_conv(node, name, m, x, wq.numpy(), bias, steps_tail, why)

    def split_binary_weight(self, name: str, tname: str, wq: torch.Tensor, spec) -> tuple[np.ndarray, np.ndarray | None]:
        """Effective weight -> (+-1 signs, per-output-channel alpha or None), verified exactly."""
        w = wq.numpy().reshape(wq.shape[0], -1)
        sign = np.where(w >= 0, np.float32(1), np.float32(-1))
        if spec.weight_scale == "none":
            if not np.all(np.abs(w) == 1):
                bad = np.unique(np.abs(w)[np.abs(w) != 1])[:4]
                raise ConversionError(
                    f"layer {name} ({tname}): weights are declared 1-bit without a scale ({spec.weight_quantizer}) but "
                    f"quantized_weight() holds magnitudes other than 1 (e.g. {bad.tolist()}); binarize the latent "
                    f"weights (xnorkit.optim.init_binary_) or use a sign weight quantizer")
            alpha = None
        elif spec.weight_scale == "per_channel_mean_abs":
            alpha = np.abs(w).max(axis=1).astype(np.float32)
            if not np.all(np.abs(w) == alpha[:, None]):
                raise ConversionError(f"layer {name} ({tname}): weight_scale per_channel_mean_abs but the magnitudes "
                                      f"of quantized_weight() differ within an output channel")
        else:
            raise ConversionError(f"layer {name} ({tname}): weight_scale {spec.weight_scale!r} is not supported "
                                  f"(none or per_channel_mean_abs)")
        return sign.reshape(wq.shape), alpha

    # ---------------------------------------------------------------- float layers
    def ohwi(self, w: np.ndarray, m: nn.Module) -> np.ndarray:
        """PyTorch conv weight [OC, C/g, KH, KW] or [OC, C/g, L] -> [OC, KH, KW, C/g]."""
        if w.ndim == 3:
            w = w[:, :, None, :]
        return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).astype(np.float32)

    def conv_geometry(self, node, name: str, m: nn.Module, x: Value) -> dict:
        if getattr(m, "padding_mode", "zeros") != "zeros":
            raise ConversionError(f"layer {name} ({type(m).__name__}): padding_mode={m.padding_mode!r} is not "
                                  f"supported (zeros only)")
        if x.dtype not in ("f32", "bits") or len(x.shape) != 4:
            raise ConversionError(f"layer {name}: expected a (N, C, H, W) or (N, C, L) input, got {x.spec()}")
        one_d = len(m.kernel_size) == 1
        in_spatial = (x.shape[2],) if one_d else (x.shape[1], x.shape[2])
        explicit = getattr(m, "explicit_padding", None)
        if callable(explicit):
            pads = explicit(in_spatial)
        elif isinstance(m.padding, str):
            if m.padding == "valid":
                pads = tuple((0, 0) for _ in in_spatial)
            else:  # torch 'same' (stride 1): left = total // 2
                pads = []
                for k, d in zip(m.kernel_size, m.dilation):
                    total = d * (k - 1)
                    pads.append((total // 2, total - total // 2))
                pads = tuple(pads)
        else:
            pads = tuple((p, p) for p in m.padding)
        ks, st, dl = tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation)
        if one_d:
            ks, st, dl, pads = (1,) + ks, (1,) + st, (1,) + dl, ((0, 0),) + tuple(pads)
        return dict(kh=ks[0], kw=ks[1], stride_h=st[0], stride_w=st[1], dil_h=dl[0], dil_w=dl[1],
                    pad_top=pads[0][0], pad_bottom=pads[0][1], pad_left=pads[1][0], pad_right=pads[1][1])

    def float_conv(self, node, name, m, x: Value, w: np.ndarray, bias, tail: list[Step], why: str) -> Value:
        if x.dtype != "f32":
            u = self.g.add("unpack", name + ".unpack", [x], x.shape, "f32")
            u.output.torch_layout = x.torch_layout
            x = u.output
        geo = self.conv_geometry(node, name, m, x)
        cin = x.channels
        if m.groups == 1:
            geo["groups"] = 1
        elif m.groups == cin and w.shape[1] == 1:
            geo["groups"] = cin
        else:
            raise ConversionError(f"layer {name} ({type(m).__name__}): groups={m.groups} with {cin} input channels; "
                                  f"supported: 1 or depthwise (groups = in_channels)")
        n = self.emit("conv2d", name, [x], node, **geo)
        n.params["weight"] = self.ohwi(w, m)
        if bias is not None:
            n.steps.append(Step("bias", value=bias))
        n.steps.extend(tail)
        self.report(name, m, "float", why)
        return n.output

    def float_dense(self, node, name, m, x: Value, w: np.ndarray, bias, tail: list[Step], why: str) -> Value:
        if len(x.shape) != 2:
            raise ConversionError(f"layer {name} ({type(m).__name__}): input {x.spec()} must be (N, features); "
                                  f"flatten before a Linear layer")
        if x.dtype != "f32":
            u = self.g.add("unpack", name + ".unpack", [x], x.shape, "f32")
            x = u.output
        n = self.emit("dense", name, [x], node)
        n.params["weight"] = np.ascontiguousarray(w, dtype=np.float32)
        if bias is not None:
            n.steps.append(Step("bias", value=bias))
        n.steps.extend(tail)
        self.report(name, m, "float", why)
        return n.output

    # ---------------------------------------------------------------- pools and shapes
    def pool(self, node, name, op, x: Value, k, s, p, d, ceil_mode, count_include_pad, one_d) -> Value:
        def pair(v, what):
            if isinstance(v, int):
                v = (v,) * (1 if one_d else 2)
            v = tuple(v)
            return ((1,) + v) if one_d else v

        if s is None or (isinstance(s, (tuple, list)) and len(s) == 0):
            s = k
        kh, kw = pair(k, "kernel")
        sh, sw = pair(s, "stride")
        ph, pw = pair(p, "padding")
        if one_d:
            ph = 0
        if d not in (1, (1,), (1, 1)):
            raise ConversionError(f"{name}: dilated pooling is not supported (dilation={d})")
        if len(x.shape) != 4:
            raise ConversionError(f"{name}: pooling needs an (N, C, H, W) or (N, C, L) input, got {x.spec()}")
        if op == "avgpool2d" and x.dtype == "bits":
            raise ConversionError(f"{name}: average pooling of binary activations is not supported")
        pb, pr = ph, pw
        if ceil_mode:  # the extra windows of ceil_mode are taps past the bottom/right edge
            out_shape, _ = self.out_value_shape(node)
            oh, ow = out_shape[1], out_shape[2]
            pb = max(0, (oh - 1) * sh + kh - (x.shape[1] + 2 * ph)) + ph
            pr = max(0, (ow - 1) * sw + kw - (x.shape[2] + 2 * pw)) + pw
            if (pb > ph or pr > pw) and op == "avgpool2d" and count_include_pad:
                raise ConversionError(f"{name}: ceil_mode=True with count_include_pad=True averages over windows "
                                      f"hanging past the edge with PyTorch's partial divisor; not supported "
                                      f"(use count_include_pad=False)")
            if pb >= kh or pr >= kw:
                raise ConversionError(f"{name}: ceil_mode padding ({pb}, {pr}) reaches the window size")
        n = self.emit(op, name, [x], node, dtype=x.dtype, kh=kh, kw=kw, stride_h=sh, stride_w=sw, pad_top=ph,
                      pad_left=pw, pad_bottom=pb, pad_right=pr, count_include_pad=int(bool(count_include_pad)))
        return n.output

    def adaptive_avg(self, node, name, x: Value) -> Value:
        out = self.tshape(node)
        if len(x.shape) != 4:
            raise ConversionError(f"{name}: adaptive pooling needs a spatial input, got {x.spec()}")
        h, w = x.shape[1], x.shape[2]
        oh, ow = (out[1], out[2]) if len(out) == 3 else (1, out[1])
        if oh == 1 and ow == 1:
            n = self.emit("global_avgpool", name, [x], node)
            return n.output
        if h % oh or w % ow:
            raise ConversionError(f"{name}: adaptive average pooling from {h}x{w} to {oh}x{ow} is not a uniform "
                                  f"pooling; only exact divisors or output 1 are supported")
        kh, kw = h // oh, w // ow
        n = self.emit("avgpool2d", name, [x], node, kh=kh, kw=kw, stride_h=kh, stride_w=kw, pad_top=0, pad_left=0,
                      pad_bottom=0, pad_right=0, count_include_pad=1)
        return n.output

    def reshape_like(self, node, name, x: Value) -> Value:
        out = self.tshape(node)
        count = int(np.prod(x.shape))
        if len(out) == 1 and out[0] == count:
            if len(x.shape) == 2:
                return x
            n = self.emit("flatten", name, [x], node, dtype=x.dtype, shape=(1, count), order=1)
            n.output.torch_layout = "same"
            return n.output
        shape, layout = _torch_to_ir_shape(out, name)
        spatial_in = int(np.prod(x.shape[1:-1])) if len(x.shape) > 2 else 1
        spatial_out = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
        channels_first = {x.torch_layout, layout} <= {"nchw", "ncl"}
        # NHWC keeps spatial positions row-major with channels last, so merging/splitting spatial
        # dims of a channels-first tensor (or adding/removing unit dims) keeps the element order
        if x.channels == shape[-1] and spatial_in == spatial_out and (channels_first or spatial_in == 1):
            if x.dtype != "f32":
                raise ConversionError(f"{name}: reshaping binary activations is not supported")
            n = self.emit("reshape", name, [x], node, shape=shape)
            n.output.torch_layout = layout
            return n.output
        raise ConversionError(f"{name}: reshape from {x.spec()} to per-sample {list(out)} is not supported (only "
                              f"flattening to (N, -1) and adding/removing unit spatial dims)")

    def softmax(self, node, name, x: Value, dim) -> Value:
        rank = len(self.tshape(node)) + 1
        if dim is None or (dim % rank) != 1:
            raise ConversionError(f"{name}: softmax over dim {dim} is not supported (channels, dim=1, only)")
        if x.dtype != "f32":
            raise ConversionError(f"{name}: softmax of binary activations")
        return self.emit("softmax", name, [x], node).output

    # ---------------------------------------------------------------- functions / methods
    def call_method(self, node: torch.fx.Node) -> Any:
        meth = node.target
        args = list(node.args)
        table: dict[str, Callable] = {
            "add": operator.add, "__add__": operator.add, "mul": operator.mul, "relu": F.relu, "relu_": F.relu,
            "softmax": F.softmax, "flatten": torch.flatten, "view": "reshape", "reshape": "reshape",
            "mean": torch.mean, "size": "size", "contiguous": "identity", "sigmoid": None,
        }
        fn = table.get(meth)
        if fn == "identity":
            return self.env[args[0].name]
        if fn == "size":
            return None
        if fn == "reshape":
            return self.reshape_like(node, node.name, self.val(args[0], node))
        if fn is None:
            raise ConversionError(f"node {node.name}: tensor method .{meth}() is not supported. Supported: {SUPPORTED}")
        return self.call_function(node, fn, args, node.kwargs)

    def call_function(self, node: torch.fx.Node, fn, args, kwargs) -> Any:
        name = node.name
        if fn in (operator.add, torch.add, operator.iadd):
            a, b = args[0], args[1]
            if isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node):
                va, vb = self.val(a, node), self.val(b, node)
                if va.shape != vb.shape or va.dtype != "f32" or vb.dtype != "f32":
                    raise ConversionError(f"node {name}: add of {va.spec()} and {vb.spec()}; both must be float "
                                          f"tensors of one shape (no broadcasting)")
                return self.emit("add", name, [va, vb], node, act="none").output
            t, c = (a, b) if isinstance(a, torch.fx.Node) else (b, a)
            if isinstance(c, (int, float)):
                return self.channelwise(name, self.val(t, node), [Step("bias", value=np.array([c], np.float32))], node)
            raise ConversionError(f"node {name}: add with {c!r} is not supported")
        if fn in (operator.mul, torch.mul):
            a, b = args[0], args[1]
            t, c = (a, b) if isinstance(a, torch.fx.Node) else (b, a)
            if isinstance(c, (int, float)):
                return self.channelwise(name, self.val(t, node), [Step("scale", value=np.array([c], np.float32))], node)
            raise ConversionError(f"node {name}: multiplication by {c!r} is not supported (scalars only)")
        if fn in (F.relu, torch.relu):
            return self.channelwise(name, self.val(args[0], node), [Step.activation("relu")], node)
        if fn is F.relu6:
            return self.channelwise(name, self.val(args[0], node), [Step.activation("relu6")], node)
        if fn is F.hardtanh:
            lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
            hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
            return self.channelwise(name, self.val(args[0], node), [Step.activation("hardtanh", lo, hi)], node)
        if fn is F.leaky_relu:
            slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
            return self.channelwise(name, self.val(args[0], node), [Step.activation("leaky", lo=slope)], node)
        if fn in (torch.cat, torch.concat):
            xs = [self.val(a, node) for a in args[0]]
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            rank = len(self.tshape(node)) + 1
            if dim % rank != 1:
                raise ConversionError(f"node {name}: torch.cat along dim {dim}; only the channel dim (1) is supported")
            if len({x.dtype for x in xs}) != 1:
                raise ConversionError(f"node {name}: concatenation of float and binary tensors")
            return self.concat_chain(node, name, xs)
        if fn is torch.flatten:
            return self.reshape_like(node, name, self.val(args[0], node))
        if fn in (F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d):
            x = self.val(args[0], node)
            names = ("kernel_size", "stride", "padding", "dilation" if fn in (F.max_pool1d, F.max_pool2d) else
                     "ceil_mode", "ceil_mode" if fn in (F.max_pool1d, F.max_pool2d) else "count_include_pad")
            vals = {n: a for n, a in zip(names, args[1:])}
            vals.update(kwargs)
            is_max = fn in (F.max_pool1d, F.max_pool2d)
            return self.pool(node, name, "maxpool2d" if is_max else "avgpool2d", x, vals["kernel_size"],
                             vals.get("stride"), vals.get("padding", 0), vals.get("dilation", 1),
                             vals.get("ceil_mode", False), vals.get("count_include_pad", True),
                             fn in (F.max_pool1d, F.avg_pool1d))
        if fn in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d):
            return self.adaptive_avg(node, name, self.val(args[0], node))
        if fn is torch.mean:
            x = self.val(args[0], node)
            dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
            dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
            rank = len(x.shape)
            spatial = {2, 3} if x.torch_layout == "nchw" else ({2} if x.torch_layout == "ncl" else set())
            if not spatial or {d % rank for d in dims} != spatial:
                raise ConversionError(f"node {name}: mean over dims {dims}; only the spatial dims are supported")
            n = self.g.add("global_avgpool", name, [x], (1, 1, 1, x.channels), "f32")
            n.output.torch_layout = x.torch_layout
            out = self.tshape(node)
            if len(out) == 1:
                return self.emit("reshape", name + ".squeeze", [n.output], node, shape=(1, x.channels)).output
            return n.output
        if fn in (F.softmax, torch.softmax):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            return self.softmax(node, name, self.val(args[0], node), dim)
        if fn is getattr:
            return None
        raise ConversionError(f"node {name}: function {getattr(fn, '__name__', fn)} is not supported. "
                              f"Supported: {SUPPORTED}")

    def concat_chain(self, node, name, xs: list[Value]) -> Value:
        if len(xs) == 1:
            return xs[0]
        shape, layout = self.out_value_shape(node)
        while len(xs) > 4:  # chain: concat the first four, then continue
            part = xs[:4]
            c = sum(x.channels for x in part)
            n = self.g.add("concat", name + ".part", part, part[0].shape[:-1] + (c,), part[0].dtype)
            n.output.torch_layout = layout
            xs = [n.output] + xs[4:]
        n = self.g.add("concat", name, xs, shape, xs[0].dtype)
        n.output.torch_layout = layout
        return n.output


def trace(model: nn.Module, example_inputs: torch.Tensor | tuple) -> Graph:
    """Trace ``model`` (in eval mode) into the converter IR.

    Args:
        model: the PyTorch model (xnorkit layers and the supported torch layers).
        example_inputs: one example batch (or a tuple for several inputs) giving the input
            shapes; values do not matter.

    Returns:
        The IR graph with a :class:`~xnorkit.convert.ir.LayerReport` per weight layer.

    Raises:
        ConversionError: a layer, function or shape the converter does not support.
    """
    if torch.is_tensor(example_inputs):
        example_inputs = (example_inputs,)
    example_inputs = tuple(x.detach().to(torch.float32).cpu() for x in example_inputs)
    was_training = model.training
    model.eval()
    try:
        tracer = _Tracer(example_inputs)
        try:
            graph = tracer.trace(model)
        except ConversionError:
            raise
        except Exception as exc:  # fx raises many kinds (TraceError, TypeError from data-dependent code)
            raise ConversionError(f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}. "
                                  f"The converter needs a forward whose control flow depends on shapes only, "
                                  f"not on tensor values") from exc
        gm = torch.fx.GraphModule(model, graph)
        gm.graph.eliminate_dead_code()  # e.g. x[0] computed only for an input check
        batch = int(example_inputs[0].shape[0])
        g = _Builder(model, gm, batch).build()
    finally:
        model.train(was_training)
    return g
