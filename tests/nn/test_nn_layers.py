"""Tests of xnorkit.nn quantized layers.

Generic tests iterate xnorkit.nn.LAYERS and build each layer from its signature (torch
argument names), so a newly registered layer is covered automatically.
"""

import copy
import inspect
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xnorkit import nn as xnn
from xnorkit import quantizers as Q
from xnorkit.quantizers import sign0
from xnorkit.summary import summary

# values for the required constructor arguments, by torch's names
RECIPE = {"in_features": 6, "out_features": 5, "in_channels": 4, "out_channels": 6,
          "kernel_size": 3}


def build(cls, **kw):
    sig = inspect.signature(cls.__init__)
    args = {}
    for name, p in list(sig.parameters.items())[1:]:
        if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD:
            assert name in RECIPE, f"add a value for {cls.__name__}'s argument {name!r} to RECIPE"
            args[name] = RECIPE[name]
    args.update(kw)
    return cls(**args)


def example_input(layer, batch=2, size=7):
    if isinstance(layer, nn.Linear):
        return torch.randn(batch, layer.in_features)
    nd = len(layer.kernel_size)
    return torch.randn(batch, layer.in_channels, *([size] * nd))


def reference_forward(layer, x):
    """Plain torch on sign0-ed input and weight (larq's oracle test)."""
    xq, wq = sign0(x), sign0(layer.weight)
    if isinstance(layer, nn.Linear):
        return F.linear(xq, wq, layer.bias)
    conv = {1: F.conv1d, 2: F.conv2d}[len(layer.kernel_size)]
    pairs = layer.explicit_padding(x.shape)
    xq = F.pad(xq, [v for p in reversed(pairs) for v in p], value=layer.pad_value)
    return conv(xq, wq, layer.bias, layer.stride, 0, layer.dilation, layer.groups)


LAYER_CLASSES = list(xnn.LAYERS.values())
ids = [c.__name__ for c in LAYER_CLASSES]


def test_registry_contents():
    assert {"QuantLinear", "QuantConv1d", "QuantConv2d", "QuantDepthwiseConv2d"} <= set(xnn.LAYERS)
    with pytest.raises(ValueError, match="already registered"):
        xnn.register_layer(type("QuantLinear", (nn.Module,), {}))


# ----------------------------------------------------------------------------- generic

@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=ids)
def test_generic_forward_matches_float_oracle(cls):
    torch.manual_seed(0)
    kw = {} if issubclass(cls, nn.Linear) else {"padding": 1, "pad_value": -1.0}
    layer = build(cls, input_quantizer="ste_sign", weight_quantizer="ste_sign", **kw)
    x = example_input(layer)
    y = layer(x)
    assert torch.allclose(y, reference_forward(layer, x), atol=1e-5)
    assert xnn.is_binary(layer)
    assert torch.equal(layer.quantized_weight(), sign0(layer.weight))


@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=ids)
def test_generic_backward(cls):
    torch.manual_seed(1)
    layer = build(cls, input_quantizer="ste_sign", weight_quantizer="ste_sign", output_scale=True)
    x = example_input(layer).mul_(0.8).requires_grad_()
    layer(x).square().sum().backward()
    for name, p in [("x", x)] + list(layer.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert layer.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    # STE: no gradient to latent weights outside the window
    with torch.no_grad():
        layer.weight[0].fill_(2.0)
    layer.zero_grad()
    layer(x.detach()).sum().backward()
    assert torch.all(layer.weight.grad[0] == 0)


@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=ids)
def test_generic_export_spec(cls):
    layer = build(cls, input_quantizer="ste_sign", weight_quantizer="magnitude_aware_sign",
                  output_scale=0.5, bias=False)
    spec = layer.export_spec()
    assert isinstance(spec, xnn.ExportSpec)
    assert (spec.input_bits, spec.weight_bits, spec.weight_scale) == (1, 1, "per_channel_mean_abs")
    assert spec.output_scale == 0.5 and spec.has_bias is False and spec.pad_value == 0.0
    assert spec.input_values == (-1.0, 1.0) and spec.weight_values is None
    assert spec.input_quantizer == "ste_sign(clip_value=1.0)"
    float_layer = build(cls)
    fspec = float_layer.export_spec()
    assert (fspec.input_bits, fspec.weight_bits, fspec.weight_scale) == (32, 32, "none")
    assert fspec.output_scale is None and fspec.has_bias and not xnn.is_binary(float_layer)
    mixed = build(cls, weight_quantizer="ste_sign")
    assert (mixed.export_spec().input_bits, mixed.export_spec().weight_bits) == (32, 1)
    assert not xnn.is_binary(mixed)


@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=ids)
def test_generic_state_dict_round_trip(cls):
    torch.manual_seed(2)
    a = build(cls, input_quantizer="approx_sign", weight_quantizer="ste_sign", output_scale=True)
    with torch.no_grad():
        a.scale.fill_(0.7)
        a.bias.normal_()
    torch.manual_seed(3)
    b = build(cls, input_quantizer="approx_sign", weight_quantizer="ste_sign", output_scale=True)
    x = example_input(a)
    assert not torch.allclose(a(x), b(x))
    assert set(a.state_dict()) == {"weight", "bias", "scale"}
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))
    buf = io.BytesIO()
    torch.save(a, buf)
    buf.seek(0)
    c = torch.load(buf, weights_only=False)
    assert torch.equal(c(x), a(x)) and c.export_spec() == a.export_spec()
    assert torch.equal(copy.deepcopy(a)(x), a(x))


@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=ids)
def test_generic_summary_row(cls):
    layer = build(cls, input_quantizer="ste_sign", weight_quantizer="ste_sign")
    x = example_input(layer, batch=3)
    s = summary(layer, tuple(x.shape), print_fn=None)
    assert len(s.rows) == 1
    row = s.rows[0]
    out = layer(x)
    assert row.type == cls.__name__ and row.precision == "1/1"
    assert row.output_shape == tuple(out.shape)
    assert row.binary_macs == out.numel() // 3 * layer.weight[0].numel() and row.float_macs == 0
    n_bias = layer.bias.numel()
    assert row.params == layer.weight.numel() + n_bias
    assert row.memory_bytes == (layer.weight.numel() + 32 * n_bias) / 8


@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=ids)
def test_generic_constraints_and_init(cls):
    layer = build(cls, weight_clip=0.05)
    w = layer.weight.detach()
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert w.abs().max() <= bound and w.abs().max() > 0.5 * bound  # glorot uniform
    assert torch.all(layer.bias == 0)
    with torch.no_grad():
        layer.weight.mul_(100)
    assert layer.constrain_() is layer
    assert layer.weight.abs().max() <= 0.05
    assert (layer.weight.abs() == 0.05).any()
    binary = build(cls, weight_quantizer="noop", init_binary_=True)
    assert set(binary.weight.unique().tolist()) <= {-1.0, 1.0}
    binary.reset_parameters()
    assert set(binary.weight.unique().tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=ids)
def test_generic_input_shape_errors(cls):
    layer = build(cls)
    x = example_input(layer)
    bad = x[..., :-1] if isinstance(layer, nn.Linear) else x[:, :-1]
    with pytest.raises(ValueError, match=r"expected input .*got shape"):
        layer(bad)


@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=ids)
def test_generic_float64(cls):
    layer = build(cls, input_quantizer="ste_sign", weight_quantizer="ste_sign",
                  output_scale=True, dtype=torch.float64)
    x = example_input(layer).double().requires_grad_()
    y = layer(x)
    assert y.dtype == torch.float64
    y.sum().backward()
    assert x.grad.dtype == torch.float64 and layer.weight.grad.dtype == torch.float64


# ----------------------------------------------------------------------------- padding

def manual_conv2d(x, w, pads, value, stride=1, dilation=1, groups=1):
    return F.conv2d(F.pad(x, pads, value=value), w, None, stride, 0, dilation, groups)


@pytest.mark.parametrize("pad_value", [0.0, 1.0, -1.0])
@pytest.mark.parametrize("padding,kernel,stride,dilation", [
    (1, 3, 1, 1), (2, 3, 1, 1), ((1, 2), (3, 5), 1, 1), (1, 3, 2, 1), (2, 3, 1, 2),
    ("valid", 3, 1, 1), ("same", 3, 1, 1), ("same", 4, 1, 1), ("same", (2, 3), 1, 1),
    ("same", 3, 2, 1), ("same", 4, 3, 1), ("same", 3, 1, 2),
])
def test_conv2d_pad_value_equals_manual_pad(pad_value, padding, kernel, stride, dilation):
    torch.manual_seed(4)
    layer = xnn.QuantConv2d(3, 5, kernel, stride=stride, padding=padding, dilation=dilation,
                            bias=False, pad_value=pad_value, input_quantizer="ste_sign",
                            weight_quantizer="ste_sign")
    x = torch.randn(2, 3, 9, 8)
    pairs = layer.explicit_padding((9, 8))
    pads = [pairs[1][0], pairs[1][1], pairs[0][0], pairs[0][1]]
    ref = manual_conv2d(sign0(x), sign0(layer.weight), pads, pad_value, stride, dilation)
    assert torch.allclose(layer(x), ref, atol=1e-5)
    if padding == "same":  # TF/Keras rule: ceil(in / stride)
        assert layer(x).shape[-2:] == (math.ceil(9 / stride), math.ceil(8 / stride))


def test_conv2d_pad_minus_one_explicit_example():
    layer = xnn.QuantConv2d(2, 3, 3, padding=1, pad_value=-1, input_quantizer="ste_sign",
                            weight_quantizer="ste_sign")
    x = torch.randn(1, 2, 5, 5)
    manual = F.conv2d(F.pad(sign0(x), (1, 1, 1, 1), value=-1.0), sign0(layer.weight), layer.bias)
    assert torch.allclose(layer(x), manual, atol=1e-6)
    zero = F.conv2d(F.pad(sign0(x), (1, 1, 1, 1), value=0.0), sign0(layer.weight), layer.bias)
    assert not torch.allclose(layer(x), zero)  # the border really differs


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
def test_same_padding_stride1_equals_torch_same():
    torch.manual_seed(5)
    for k in (2, 3, 4, (2, 5)):
        layer = xnn.QuantConv2d(3, 4, k, padding="same", input_quantizer="ste_sign")
        x = torch.randn(1, 3, 6, 7)
        ref = F.conv2d(sign0(x), layer.weight, layer.bias, padding="same")
        assert torch.allclose(layer(x), ref, atol=1e-5)
        layer.pad_value = 1.0  # changing the attribute takes effect (explicit path)
        assert not torch.allclose(layer(x), ref, atol=1e-5)


@pytest.mark.parametrize("pad_value", [0.0, 1.0, -1.0])
def test_conv1d_pad_value(pad_value):
    layer = xnn.QuantConv1d(3, 4, 5, padding="same", pad_value=pad_value,
                            input_quantizer="ste_sign", weight_quantizer="ste_sign", bias=False)
    x = torch.randn(2, 3, 11)
    ref = F.conv1d(F.pad(sign0(x), (2, 2), value=pad_value), sign0(layer.weight))
    assert torch.allclose(layer(x), ref, atol=1e-5)
    assert layer.explicit_padding((11,)) == ((2, 2),)


def test_depthwise_is_grouped_conv():
    layer = xnn.QuantDepthwiseConv2d(4, 3, padding=1, depth_multiplier=3, pad_value=1.0,
                                     input_quantizer="ste_sign", weight_quantizer="ste_sign")
    assert (layer.groups, layer.out_channels, tuple(layer.weight.shape)) == (4, 12, (12, 1, 3, 3))
    assert layer.depth_multiplier == 3
    x = torch.randn(2, 4, 6, 6)
    ref = F.conv2d(F.pad(sign0(x), (1, 1, 1, 1), value=1.0), sign0(layer.weight), layer.bias, groups=4)
    assert torch.allclose(layer(x), ref, atol=1e-5)
    with pytest.raises(ValueError, match="depth_multiplier must be an int >= 1, got 0"):
        xnn.QuantDepthwiseConv2d(4, 3, depth_multiplier=0)


# ----------------------------------------------------------------------------- options

def test_bmxnet_shorthand():
    layer = xnn.QuantConv2d(3, 4, 3, act_bit=1, weight_bit=2)
    assert isinstance(layer.input_quantizer, Q.DoReFa) and layer.input_quantizer.mode == "activations"
    assert layer.weight_quantizer.k_bit == 2 and layer.weight_quantizer.mode == "weights"
    spec = layer.export_spec()
    assert (spec.input_bits, spec.weight_bits) == (1, 2)
    full = xnn.QuantLinear(3, 2, act_bit=32, weight_bit=32)
    assert (full.export_spec().input_bits, full.export_spec().weight_bits) == (32, 32)
    assert torch.equal(full.quantized_weight(), full.weight)
    with pytest.raises(ValueError, match="either act_bit or input_quantizer, not both"):
        xnn.QuantLinear(3, 2, act_bit=1, input_quantizer="ste_sign")
    with pytest.raises(ValueError, match="either weight_bit or weight_quantizer, not both"):
        xnn.QuantConv2d(3, 2, 3, weight_bit=1, weight_quantizer="ste_sign")
    for bad in (0, 33):
        with pytest.raises(ValueError, match=f"act_bit must be in 1..32, got {bad}"):
            xnn.QuantLinear(3, 2, act_bit=bad)
        with pytest.raises(ValueError, match=f"weight_bit must be in 1..32, got {bad}"):
            xnn.QuantConv1d(3, 2, 3, weight_bit=bad)
    with pytest.raises(TypeError, match="act_bit must be an int"):
        xnn.QuantLinear(3, 2, act_bit=1.0)


def test_output_scale_is_learned_scalar():
    torch.manual_seed(6)
    plain = xnn.QuantLinear(4, 3, input_quantizer="ste_sign", weight_quantizer="ste_sign")
    scaled = xnn.QuantLinear(4, 3, input_quantizer="ste_sign", weight_quantizer="ste_sign",
                             output_scale=True)
    scaled.load_state_dict({**plain.state_dict(), "scale": torch.tensor(2.5)})
    x = torch.randn(5, 4)
    assert torch.allclose(scaled(x), 2.5 * plain(x))
    assert scaled.scale.shape == () and scaled.export_spec().output_scale == 2.5
    scaled(x).sum().backward()
    assert torch.allclose(scaled.scale.grad, plain(x).sum())
    assert xnn.QuantLinear(4, 3, output_scale=0.25).scale.item() == 0.25
    with pytest.raises(TypeError, match="output_scale must be a bool or the initial value"):
        xnn.QuantLinear(4, 3, output_scale="yes")


def test_apply_constraints_on_model():
    model = nn.Sequential(xnn.QuantLinear(4, 8, weight_clip=1.0), nn.ReLU(),
                          xnn.QuantLinear(8, 2), nn.Linear(2, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    assert xnn.apply_constraints(model) == 1
    assert model[0].weight.max() == 1.0
    assert model[2].weight.max() == 3.0 and model[3].weight.max() == 3.0
    assert model[0].bias.max() == 3.0  # only the latent weight is clipped


def test_weight_quantizer_variants_and_quantized_weight():
    layer = xnn.QuantConv2d(3, 4, 3, weight_quantizer="magnitude_aware_sign")
    wq = layer.quantized_weight()
    alpha = layer.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(wq, alpha * sign0(layer.weight))
    tern = xnn.QuantLinear(5, 5, weight_quantizer=Q.SteTern(threshold_value=0.2))
    assert tern.export_spec().weight_bits == 2 and tern.export_spec().weight_values == (-1.0, 0.0, 1.0)
    heav = xnn.QuantLinear(5, 5, input_quantizer="ste_heaviside")
    assert heav.export_spec().input_values == (0.0, 1.0)


def test_callable_quantizer_declares_nothing_until_told():
    layer = xnn.QuantLinear(4, 2, weight_quantizer=lambda w: torch.sign(w))
    layer(torch.randn(3, 4))  # trains fine
    with pytest.raises(ValueError, match="declares no precision"):
        layer.export_spec()
    ok = xnn.QuantLinear(4, 2, weight_quantizer=Q.CallableQuantizer(torch.sign, precision=1))
    assert ok.export_spec().weight_bits == 1


def test_argument_errors():
    with pytest.raises(ValueError, match=r"pad_value must be 0, \+1 or -1, got 0.5"):
        xnn.QuantConv2d(3, 4, 3, pad_value=0.5)
    with pytest.raises(ValueError, match="padding must be an int, a tuple of 2 ints, 'same' or 'valid', got 'full'"):
        xnn.QuantConv2d(3, 4, 3, padding="full")
    with pytest.raises(ValueError, match="padding must be an int >= 0"):
        xnn.QuantConv1d(3, 4, 3, padding=(1, 1))
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        xnn.QuantConv2d(3, 4, 3, stride=0)
    with pytest.raises(ValueError, match="weight_clip must be a positive finite number or None, got 0"):
        xnn.QuantLinear(3, 4, weight_clip=0)
    with pytest.raises(ValueError, match="unknown quantizer 'sign'"):
        xnn.QuantLinear(3, 4, input_quantizer="sign")
    with pytest.raises(TypeError, match="init_binary_ must be a bool"):
        xnn.QuantLinear(3, 4, init_binary_=1)
    with pytest.raises(ValueError, match="expected 2 spatial sizes"):
        xnn.QuantConv2d(3, 4, 3).explicit_padding((5,))


def test_is_binary_on_plain_modules():
    assert not xnn.is_binary(nn.Linear(3, 3))
    assert not xnn.is_binary(nn.ReLU())


def test_tiny_binary_mlp_learns():
    """End to end: a binary MLP fits a linearly separable problem with Adam + clipping."""
    torch.manual_seed(7)
    x = torch.randn(256, 16)
    y = (x[:, :8].sum(1) > x[:, 8:].sum(1)).long()
    model = nn.Sequential(
        xnn.QuantLinear(16, 64, weight_quantizer="ste_sign", weight_clip=1.0, bias=False),
        nn.BatchNorm1d(64),
        xnn.QuantLinear(64, 2, input_quantizer="ste_sign", weight_quantizer="ste_sign",
                        weight_clip=1.0, bias=False),
        nn.BatchNorm1d(2),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        xnn.apply_constraints(model)
    model.eval()
    acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.9
    assert all(m.weight.abs().max() <= 1.0 for m in model if isinstance(m, xnn.QuantLinear))


@pytest.mark.parametrize("alias", sorted(Q.QUANTIZERS))
@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=ids)
def test_every_quantizer_in_every_layer(cls, alias):
    torch.manual_seed(8)
    layer = build(cls, input_quantizer=alias, weight_quantizer=alias)
    x = example_input(layer).requires_grad_()
    y = layer(x)
    y.square().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(layer.weight.grad).all()
    q = Q.get_quantizer(alias)
    assert torch.equal(layer.quantized_weight(), q(layer.weight))
    spec = layer.export_spec()
    assert spec.input_bits == spec.weight_bits == q.precision
    assert spec.weight_scale == q.scale_mode
