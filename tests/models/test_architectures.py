"""Layer-level checks of each architecture against its published definition.

Sources are cited per test: the spec (../shared/spec/seeds.md), the BinaryNet Theano code
(MatthieuCourbariaux/BinaryNet), seed 004 (CuauSuarez/Bop2ndOrder@conference) and larq-zoo
(larq/zoo: larq_zoo/literature/*.py, larq_zoo/sota/quicknet.py). Structure is checked on the
meta device where no forward pass is needed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xnorkit import quantizers as q
from xnorkit.models import get_model
from xnorkit.models._common import BatchNorm1d, BatchNorm2d
from xnorkit.nn import ChannelLayerNorm, QuantConv2d, QuantLinear


def meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return get_model(name, **kw)


def torch_momentum(keras_momentum: float) -> float:
    return pytest.approx(1.0 - keras_momentum)


def norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, ChannelLayerNorm))]


def quant_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]


# ----------------------------------------------------------------------------- BinaryNet


def test_binarynet_paper_layers():
    """Theano cifar10.py: pad=1 binary convs, Lasagne biases, BN alpha 0.1 / eps 1e-4 with
    beta and gamma, binary_tanh_unit = sign with hard-tanh STE, weights U(-H, H), H = 1."""
    m = get_model("binarynet", filters=8, dense_units=16)
    layers = quant_layers(m)
    assert len(layers) == 9
    assert layers[0].input_quantizer is None and isinstance(layers[0].weight_quantizer, q.SteSign)
    for layer in layers[1:]:
        assert isinstance(layer.input_quantizer, q.SteSign) and layer.input_quantizer.clip_value == 1.0
    for layer in layers:
        assert layer.bias is not None and layer.weight_clip == 1.0
        assert layer.weight.abs().max() <= 1.0 and layer.weight.abs().max() > 0.5  # U(-1, 1)
        assert layer.export_spec().pad_value == 0.0
    assert [conv.padding for conv in layers[:6]] == ["same"] * 6
    for bn in norms(m):
        assert isinstance(bn, (BatchNorm1d, BatchNorm2d))
        assert bn.momentum == pytest.approx(0.1) and bn.eps == 1e-4
        assert bn.weight is not None and bn.bias is not None
    assert m.layers.fc7.in_features == 4 * 8 * 4 * 4  # 32 -> 16 -> 8 -> 4


@pytest.mark.parametrize("padding, flat", [("same", 512 * 4 * 4), ("valid", 512 * 3 * 3)])
def test_binarynet_first_conv_padding(padding, flat):
    """spec §3.3 vs §7.4: 32x32 feature maps (8192 features) vs seed 004's VALID first conv
    (30 -> 15 -> 7 -> 3, 4608 features)."""
    m = meta("binarynet", first_conv_padding=padding)
    assert m.layers.conv1.padding == padding
    assert m.layers.fc7.in_features == flat


def test_binarynet_small_forward_valid_feature_maps():
    m = get_model("binarynet", first_conv_padding="valid", filters=4, dense_units=8).eval()
    sizes = {}
    for name in ("conv1", "pool2", "pool4", "pool6"):
        getattr(m.layers, name).register_forward_hook(lambda mod, i, o, n=name: sizes.__setitem__(n, o.shape[-1]))
    with torch.no_grad():
        assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert sizes == {"conv1": 30, "pool2": 15, "pool4": 7, "pool6": 3}


def test_binarynet_batch_is_seed004():
    """seed 004 binarynet_batch.py: no biases, BatchNormalization(scale=False) with Keras'
    defaults (momentum 0.99, eps 1e-3), VALID first conv, ste_sign kernels + weight_clip."""
    m = meta("binarynet_batch")
    assert m.layers.conv1.padding == "valid"
    for layer in quant_layers(m):
        assert layer.bias is None and layer.weight_clip == 1.0
    bns = norms(m)
    assert len(bns) == 9
    for bn in bns:
        assert bn.weight is None and bn.bias is not None and not bn.scale and bn.center
        assert bn.momentum == torch_momentum(0.99) and bn.eps == 1e-3


def test_binarynet_layernorm_is_seed004():
    """seed 004 binarynet.py: Keras LayerNormalization() (channels only, eps 1e-3) after each
    of the 9 layers, including on the logits."""
    m = meta("binarynet_layernorm")
    lns = norms(m)
    assert len(lns) == 9 and all(isinstance(n, ChannelLayerNorm) and n.eps == 1e-3 for n in lns)
    assert lns[-1].num_channels == 10


def test_binarynet_layernorm_normalizes_channels_per_position():
    m = get_model("binarynet_layernorm", filters=4, dense_units=8).eval()
    out = {}
    m.layers.norm1.register_forward_hook(lambda mod, i, o: out.update(x=i[0], y=o))
    with torch.no_grad():
        m(torch.randn(2, 3, 32, 32))
    x, y = out["x"], out["y"]  # (2, 4, 30, 30): statistics over the 4 channels at each position
    mu, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    assert torch.allclose(y, (x - mu) / torch.sqrt(var + 1e-3), atol=1e-5)


def test_binarynet_rejects_too_small_inputs():
    with pytest.raises(ValueError, match="binarynet: input_shape .* too small"):
        get_model("binarynet", input_shape=(3, 7, 7))
    with pytest.raises(ValueError, match=r"first_conv_padding must be one of 'same', 'valid'"):
        get_model("binarynet", first_conv_padding="full")
    with pytest.raises(ValueError, match="norm must be one of"):
        get_model("binarynet", norm="group")


def test_binarynet_cnn_needs_its_exact_input_shape():
    m = get_model("binarynet", filters=4, dense_units=8)
    with pytest.raises(ValueError, match=r"expects input \(N, 3, 32, 32\)"):
        m(torch.zeros(1, 3, 28, 28))


# ----------------------------------------------------------------------------- MLP


def test_binarynet_mlp_paper_layers():
    """Theano mnist.py: dropout 0.2 in, 3 x [binary dense 4096 -> BN -> sign -> dropout 0.5],
    binary dense 10 -> BN; BN alpha 0.1, eps 1e-4."""
    m = meta("binarynet_mlp")
    names = [n for n, _ in m.layers.named_children()]
    assert names == ["drop_in", "fc1", "bn1", "drop1", "fc2", "bn2", "drop2", "fc3", "bn3", "drop3",
                     "fc_out", "bn_out"]
    assert m.layers.drop_in.p == 0.2 and m.layers.drop1.p == 0.5
    assert m.layers.fc1.input_quantizer is None and isinstance(m.layers.fc1.weight_quantizer, q.SteSign)
    assert isinstance(m.layers.fc_out.input_quantizer, q.SteSign)
    assert (m.layers.fc1.in_features, m.layers.fc1.out_features) == (784, 4096)
    assert m.layers.bn1.momentum == pytest.approx(0.1) and m.layers.bn1.eps == 1e-4


def test_binarynet_mlp_seed000_head_variant():
    """Seed 000 HEAD --binary --batch_norm (spec §2.5): real fc1 and output layers, binary
    fc2/fc3, BN without affine, no biases, no BN on the logits (the train set 'seed000')."""
    m = meta("binarynet_mlp", hidden_units=512, binarize_first=False, binarize_last=False, bn_affine=False,
             output_batch_norm=False, bias=False, dropout_in=0.0, dropout_hidden=0.2)
    L = m.layers
    assert type(L.fc1) is nn.Linear and type(L.fc_out) is nn.Linear
    assert isinstance(L.fc2, QuantLinear) and isinstance(L.fc3, QuantLinear)
    assert m.binary_layer_names() == ["layers.fc2", "layers.fc3"]
    assert L.bn1.weight is None and L.bn1.bias is None
    assert not hasattr(L, "bn_out") and not hasattr(L, "drop_in")
    assert all(getattr(L, f).bias is None for f in ("fc1", "fc2", "fc3", "fc_out"))


def test_binarynet_mlp_full_precision_and_output_scale():
    fp = meta("binarynet_mlp", binary=False)
    assert not quant_layers(fp) and sum(isinstance(x, nn.ReLU) for x in fp.modules()) == 3
    m = get_model("binarynet_mlp", hidden_units=16, output_scale=0.05)
    assert m.layers.fc_out.scale.item() == pytest.approx(0.05)
    with pytest.raises(ValueError, match="output_scale applies to a binary output layer"):
        get_model("binarynet_mlp", hidden_units=16, binarize_last=False, output_scale=True)
    flat = get_model("binarynet_mlp", hidden_units=16).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(flat(x), flat(x.flatten(1)))
    with pytest.raises(ValueError, match="binarynet_mlp expects"):
        flat(torch.randn(3, 100))


# ----------------------------------------------------------------------------- XNOR-Net


def test_xnornet_layer_order_and_norms():
    """seed 004 xnor_batch.py (spec §7.4): float 11x11/4 conv -> BN(eps 1e-5) -> ReLU -> pool,
    then BN(1e-4) -> binary conv blocks, last BN eps 1e-3 -> ReLU -> float dense, no bias."""
    m = meta("xnornet")
    kinds = [type(x).__name__ for x in m.layers]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d",
                     "BatchNorm2d", "QuantConv2d", "MaxPool2d",
                     "BatchNorm2d", "QuantConv2d", "BatchNorm2d", "QuantConv2d",
                     "BatchNorm2d", "QuantConv2d", "MaxPool2d",
                     "BatchNorm2d", "QuantConv2d", "BatchNorm2d", "QuantConv2d",
                     "BatchNorm2d", "ReLU", "Flatten", "Linear"]
    eps = [bn.eps for bn in norms(m)]
    assert eps == [1e-5] + [1e-4] * 6 + [1e-3]
    assert all(bn.momentum == torch_momentum(0.9) and bn.weight is not None for bn in norms(m))
    assert m.layers.fc.bias is None and m.layers.fc.in_features == 4096
    assert [c.kernel_size for c in quant_layers(m)] == [(5, 5), (3, 3), (3, 3), (3, 3), (6, 6), (1, 1)]
    assert m.layers.conv6.padding == "valid"


def test_xnornet_weight_scale_is_declared():
    """XNOR-Net's alpha = mean |W| per output filter: the export spec declares it."""
    spec = meta("xnornet").layers.conv2.export_spec()
    assert spec.weight_bits == 1 and spec.input_bits == 1 and spec.weight_scale == "per_channel_mean_abs"
    assert meta("xnornet", binary_kernels="ste_sign").layers.conv2.export_spec().weight_scale == "none"
    ln = meta("xnornet", norm="layer")
    assert len(norms(ln)) == 8 and all(isinstance(n, ChannelLayerNorm) for n in norms(ln))


def test_xnornet_forward_224():
    torch.manual_seed(0)
    m = get_model("xnornet", num_classes=5).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 224, 224)).shape == (1, 5)
    with pytest.raises(ValueError, match="xnornet: input_shape .* too small"):
        get_model("xnornet", input_shape=(3, 200, 200))


# ----------------------------------------------------------------------------- Bi-Real


def test_birealnet_blocks():
    """seed 004 birealnet_batch.py: approx_sign inputs, BN momentum 0.8, shortcut
    AvgPool(2, same) -> 1x1 float conv -> BN when the width doubles, stride-2 binary conv."""
    m = meta("birealnet18")
    convs = quant_layers(m)
    assert len(convs) == 16
    assert all(isinstance(c.input_quantizer, q.ApproxSign) for c in convs)
    assert all(isinstance(c.weight_quantizer, q.MagnitudeAwareSign) for c in convs)
    assert [c.stride for c in convs].count((2, 2)) == 3
    down = [b for b in m.blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(down) == 3
    for b in down:
        pool, conv, bn = b.shortcut
        assert isinstance(pool, nn.AvgPool2d) and pool.ceil_mode and not pool.count_include_pad
        assert type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.bias is None
        assert bn.momentum == torch_momentum(0.8)
    # TF "same" on the stride-2 binary conv: the extra padding row/col goes bottom/right
    assert down[0].conv.explicit_padding((56, 56)) == ((0, 1), (0, 1))
    assert meta("birealnet18", binary_kernels="bop").blocks[0].conv.weight_quantizer.precision == 1


# ----------------------------------------------------------------------------- Binary AlexNet


def test_binary_alexnet_layers():
    """larq-zoo binary_alex_net.py: binary convs (first one on real input), BN(scale=False,
    momentum 0.9) after the pool, binary dense blocks, no biases."""
    m = meta("binary_alexnet")
    layers = quant_layers(m)
    assert [type(x).__name__ for x in layers] == ["QuantConv2d"] * 5 + ["QuantLinear"] * 3
    assert layers[0].input_quantizer is None and layers[0].stride == (4, 4)
    assert all(x.bias is None and x.weight_clip == 1.0 for x in layers)
    assert [x.out_channels for x in layers[:5]] == [64, 192, 384, 384, 256]
    assert layers[5].in_features == 256 * 6 * 6
    for bn in norms(m):
        assert bn.weight is None and bn.momentum == torch_momentum(0.9) and bn.eps == 1e-3
    assert [n for n, _ in m.layers.named_children()][:3] == ["conv1", "pool1", "norm1"]
    with pytest.raises(ValueError, match="binary_alexnet: input_shape .* too small"):
        get_model("binary_alexnet", input_shape=(3, 56, 56))
    get_model("binary_alexnet", input_shape=(3, 57, 57), dense_units=8)


# ----------------------------------------------------------------------------- QuickNet


def test_quicknet_binary_blocks():
    """larq-zoo sota/quicknet.py: SteSign(clip_value=1.25) on inputs and kernels, WeightClip
    1.25, pad_values=1.0, activation relu before BN(momentum 0.9, eps 1e-5)."""
    m = meta("quicknet")
    blocks = [b for b in m.body if type(b).__name__ == "QuickNetBlock"]
    assert len(blocks) == 16
    for b in blocks:
        c = b.conv
        assert c.input_quantizer.clip_value == 1.25 and c.weight_quantizer.clip_value == 1.25
        assert c.weight_clip == 1.25 and c.export_spec().pad_value == 1.0 and c.bias is None
        assert [type(x).__name__ for x in b.children()] == ["QuantConv2d", "ReLU", "BatchNorm2d"]
        assert b.norm.momentum == torch_momentum(0.9) and b.norm.eps == 1e-5


def test_quicknet_stem_and_transitions():
    """Stem: conv 3x3/2 (F/4) -> BN -> ReLU -> depthwise 3x3/2 -> BN(center=False, scale=False)
    -> 1x1 conv -> BN, Keras default BNs. Transition: ReLU -> maxpool 2/1 -> blurpool -> 1x1."""
    m = meta("quicknet")
    s = m.stem
    assert (s.conv1.out_channels, s.conv1.stride) == (16, (2, 2))
    assert s.dwconv.groups == 16 and s.dwconv.stride == (2, 2)
    assert s.norm2.weight is None and s.norm2.bias is None
    assert s.norm1.momentum == torch_momentum(0.99) and s.norm1.eps == 1e-3
    kinds = [type(b).__name__ for b in m.body]
    idx = [i for i, k in enumerate(kinds) if k == "QuickNetTransition"]
    assert idx == [4, 9, 14]  # before the first block of sections 2, 3, 4
    t = m.body[4]
    assert [type(x).__name__ for x in t.children()] == ["ReLU", "MaxPool2d", "Conv2d", "Conv2d", "BatchNorm2d"]
    assert t.pool.kernel_size == 2 and t.pool.stride == 1
    assert not t.blur.weight.requires_grad and t.blur.stride == (2, 2) and t.blur.groups == 64
    assert [b.conv.in_channels for b in m.body if type(b).__name__ == "QuickNetTransition"] == [64, 128, 256]
    small = meta("quicknet_small")
    assert small.stem.conv2.out_channels == 32
    assert [b.conv.out_channels for b in small.body if type(b).__name__ == "QuickNetTransition"] == [64, 256, 512]
    assert meta("quicknet_large").section_blocks == (6, 8, 12, 6)


def test_blurpool_kernel():
    """Zhang 2019 binomial filter [1, 2, 1] x [1, 2, 1] / 16: keeps constants, halves size."""
    m = get_model("quicknet", input_shape=(3, 32, 32), section_filters=(8, 16, 32, 64))
    blur = m.body[4].blur
    k = blur.weight[0, 0]
    assert torch.equal(k, torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]) / 16)
    with torch.no_grad():
        y = blur(torch.full((1, 8, 9, 9), 3.0))
    assert y.shape == (1, 8, 5, 5) and torch.allclose(y[..., 1:-1, 1:-1], torch.tensor(3.0))
    assert "body.4.blur.weight" in m.state_dict()


# ----------------------------------------------------------------------------- ResNet-E / DenseNet


def test_resnet_e18_stems_and_shortcuts():
    """larq-zoo resnet_e.py: 7x7/2 -> BN -> ReLU -> maxpool 3/2 -> BN for H >= 50, a single
    3x3 conv below; SteSign(1.25); AvgPool -> 1x1 conv -> BN(0.9, 1e-5) shortcuts."""
    big, cifar = meta("binary_resnet_e18"), meta("binary_resnet_e18", input_shape=(3, 32, 32))
    assert [type(x).__name__ for x in big.stem] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "BatchNorm2d"]
    assert [type(x).__name__ for x in cifar.stem] == ["Conv2d"] and cifar.stem[0].kernel_size == (3, 3)
    convs = quant_layers(big)
    assert all(c.input_quantizer.clip_value == 1.25 and c.weight_clip == 1.25 for c in convs)
    down = [b for b in big.blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(down) == 3 and all(b.conv.stride == (2, 2) for b in down)
    assert all(bn.momentum == torch_momentum(0.9) and bn.eps == 1e-5 for bn in norms(big))


def test_densenet28_transitions():
    """larq-zoo densenet.py + BinaryDenseNet28_576 summary: transitions to 160, 192, 256
    channels (round(C // reduction / 32) * 32), 576 features at the head, clip 1.3."""
    m = meta("binary_densenet28")
    trans = [b for b in m.body if isinstance(b, nn.Sequential)]
    assert [t[-1].out_channels for t in trans] == [160, 192, 256]
    assert [t[-1].in_channels for t in trans] == [448, 544, 576]
    assert all(isinstance(t[1], nn.MaxPool2d) for t in trans)
    assert m.fc.in_features == 576
    convs = quant_layers(m)
    assert all(c.input_quantizer.clip_value == 1.3 and c.weight_clip == 1.3 for c in convs)
    assert all(c.out_channels == 64 for c in convs)
    dil = meta("binary_densenet28", dilation_rate=(1, 1, 2, 4))
    trans = [b for b in dil.body if isinstance(b, nn.Sequential)]
    assert [isinstance(t[1], nn.MaxPool2d) for t in trans] == [True, False, False]
    assert [c.dilation for c in quant_layers(dil)][-1] == (4, 4)
