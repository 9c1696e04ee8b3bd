"""The zoo's shared building blocks: Keras-style BatchNorm, initializers, shape arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xnorkit.models._common import (
    BatchNorm1d,
    batch_norm,
    binary_conv2d,
    binary_linear,
    conv_out,
    init_,
    pad_same_avgpool2x2,
    pool_out,
    weight_quantizer,
)


@pytest.mark.parametrize("center, scale", [(True, True), (True, False), (False, True), (False, False)])
def test_batch_norm_center_scale_flags(center, scale):
    bn = batch_norm(6, momentum=0.9, eps=1e-3, center=center, scale=scale)
    assert bn.momentum == pytest.approx(0.1) and bn.eps == 1e-3
    assert (bn.weight is not None, bn.bias is not None) == (scale, center)
    assert {"weight", "bias"} & set(bn.state_dict()) == {n for n, on in (("weight", scale), ("bias", center)) if on}
    with torch.no_grad():
        if scale:
            bn.weight.fill_(2.0)
        if center:
            bn.bias.fill_(0.5)
    x = torch.randn(4, 6, 3, 3)
    y = bn(x)  # training mode: batch statistics
    mu = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    want = (x - mu) / torch.sqrt(var + 1e-3) * (2.0 if scale else 1.0) + (0.5 if center else 0.0)
    assert torch.allclose(y, want, atol=1e-5)
    # Keras momentum 0.9: moving = 0.9 * moving + 0.1 * batch (PyTorch's running var is unbiased)
    assert torch.allclose(bn.running_mean, 0.1 * mu.flatten(), atol=1e-6)
    bn.reset_parameters()
    assert torch.equal(bn.running_mean, torch.zeros(6))
    if scale:
        assert torch.equal(bn.weight, torch.ones(6))


def test_batch_norm_1d_and_errors():
    assert isinstance(batch_norm(5, dims=1), BatchNorm1d)
    assert isinstance(batch_norm(5, dims=1), nn.BatchNorm1d)  # converters see a torch BatchNorm
    with pytest.raises(ValueError, match="momentum must be in"):
        batch_norm(5, momentum=1.0)


def test_weight_quantizer_choices():
    wq, clip = weight_quantizer("ste_sign", 1.25)
    assert type(wq).__name__ == "SteSign" and wq.clip_value == 1.25 and clip == 1.25
    wq, clip = weight_quantizer("magnitude_aware_sign")
    assert wq.scale_mode == "per_channel_mean_abs" and clip == 1.0
    wq, clip = weight_quantizer("bop")
    assert type(wq).__name__ == "NoOp" and wq.precision == 1 and clip is None
    with pytest.raises(ValueError, match="binary_kernels must be one of 'ste_sign', 'magnitude_aware_sign', 'bop'"):
        weight_quantizer("xnor")


def test_binary_layer_helpers_declare_their_precision():
    conv = binary_conv2d(3, 8, 3, 2, pad_value=-1.0, input_quantizer=None)
    spec = conv.export_spec()
    assert (spec.input_bits, spec.weight_bits, spec.pad_value) == (32, 1, -1.0)
    assert conv.padding == "same" and conv.explicit_padding((8, 8)) == ((0, 1), (0, 1))
    dense = binary_linear(10, 4, binary_kernels="bop", output_scale=0.25)
    assert set(dense.weight.unique().tolist()) <= {-1.0, 1.0} and dense.scale.item() == 0.25
    dense.reset_parameters()  # the layer's own reset keeps Bop kernels at ±1
    assert set(dense.weight.unique().tolist()) <= {-1.0, 1.0}


def test_initializers_match_keras():
    torch.manual_seed(0)
    w = nn.Linear(300, 200)
    init_(w, "glorot_uniform")
    bound = math.sqrt(6 / 500)
    assert w.weight.abs().max() <= bound and w.weight.abs().max() > 0.95 * bound
    assert torch.equal(w.bias, torch.zeros(200))
    c = nn.Conv2d(64, 128, 3)
    init_(c, "he_normal")  # truncated normal, std sqrt(2 / fan_in) after truncation at 2 sigma
    assert c.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    assert c.weight.abs().max() <= 2 * math.sqrt(2 / (64 * 9)) / 0.87962566103423978
    init_(c, "glorot_normal")
    assert c.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9 + 128 * 9)), rel=0.05)
    init_(c, "uniform1")
    assert c.weight.abs().max() <= 1 and c.weight.abs().max() > 0.99
    with pytest.raises(ValueError, match="init must be one of"):
        init_(c, "orthogonal")


@pytest.mark.parametrize("size", [1, 2, 5, 6, 7, 13, 14, 55, 56, 112, 224])
def test_shape_arithmetic_matches_torch(size):
    x = torch.zeros(1, 1, size, size)
    for k, s, p in [(3, 1, 1), (3, 2, 1), (7, 2, 3), (11, 4, 5), (1, 1, 0)]:
        if size + 2 * p >= k:
            assert F.conv2d(x, torch.zeros(1, 1, k, k), stride=s, padding=p).shape[-1] == conv_out(size, k, s, p)
    for k, s, p, ceil in [(2, 2, 0, False), (3, 2, 0, False), (3, 2, 1, False), (2, 2, 0, True), (3, 2, 0, True)]:
        if size + 2 * p >= k:
            got = F.max_pool2d(x, k, s, p, ceil_mode=ceil).shape[-1]
            assert got == pool_out(size, k, s, p, ceil), (size, k, s, p, ceil)
    # "same" sizes: ceil(size / stride) for odd windows with symmetric k // 2 padding
    assert conv_out(size, 11, 4, 5) == -(-size // 4)


def test_same_avgpool_matches_keras_on_odd_sizes():
    """Keras AvgPool2D(2, 2, "same") on 3x3: 2x2 output, edge windows average only the taps
    inside the image."""
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    y = pad_same_avgpool2x2()(x)
    assert torch.equal(y, torch.tensor([[[[2.0, 3.5], [6.5, 8.0]]]]))
