"""Contract tests every registered model gets automatically (timm-style registry tests):
forward shape, gradients reaching the first layer through every binary layer, state_dict
round trip, declared input shape and layer precisions, summary, clear input errors."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from xnorkit.models import ZooModel, get_model, list_models
from xnorkit.nn import is_binary
from xnorkit.summary import summary

from zoo_util import HEAVY, NUM_CLASSES, small_kwargs

ALL = list_models()


def _marks(name: str):
    return pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name


FAST = [_marks(n) for n in ALL]


def test_every_model_is_a_zoo_model(small_model):
    for name in ALL:
        if name in HEAVY:
            continue
        m = small_model(name)
        assert isinstance(m, ZooModel), name
        assert m.num_classes == NUM_CLASSES, name
        assert isinstance(m.default_input_shape, tuple) and len(m.default_input_shape) in (2, 3), name
        assert all(isinstance(s, int) and s > 0 for s in m.default_input_shape), name


@pytest.mark.parametrize("name", FAST)
def test_forward_shape_and_backward_reaches_first_layer(name, small_model):
    m = small_model(name)
    m.train()
    m.zero_grad(set_to_none=True)
    # batch 4: BatchNorm over a batch of 2 maps every channel to ±1 and passes no gradient
    x = m.example_input(4, generator=torch.Generator().manual_seed(1))
    y = m(x)
    assert y.shape == (4, NUM_CLASSES)
    assert torch.isfinite(y).all()
    # A loss weighting every logit of every sample differently: a loss that is constant over
    # the batch would pass no gradient through the output BatchNorm.
    (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(4))).sum().backward()
    trainable = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"{name}: parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    first_name, first = next((n, mod) for n, mod in m.named_modules()
                             if isinstance(getattr(mod, "weight", None), nn.Parameter) and mod.weight.dim() > 1)
    assert first.weight.grad.abs().sum() > 0, f"{name}: no gradient reached the first layer {first_name}"
    for bname in m.binary_layer_names():
        assert m.get_submodule(bname).weight.grad.abs().sum() > 0, f"{name}.{bname} got a zero gradient"


@pytest.mark.parametrize("name", FAST)
def test_state_dict_round_trip(name, small_model):
    m = small_model(name)
    m.train()
    with torch.no_grad():  # move the BN running statistics away from their init
        m(m.example_input(4, generator=torch.Generator().manual_seed(2)))
    m.eval()
    x = m.example_input(2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = m(x)
        assert torch.equal(m(x), y), "eval mode must be deterministic"
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    # A copy with every parameter and buffer scrambled: loading must restore all of them.
    other = copy.deepcopy(m)
    with torch.no_grad():
        for t in list(other.parameters()) + [b for b in other.buffers() if b.is_floating_point()]:
            t.copy_(torch.randn_like(t))
        assert not torch.equal(other(x), y)
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        assert torch.equal(other(x), y)


@pytest.mark.parametrize("name", FAST)
def test_layer_precisions_follow_export_specs(name, small_model):
    m = small_model(name)
    rows = m.layer_precisions()
    assert rows, name
    binary = m.binary_layer_names()
    assert binary, f"{name} has no XNOR-popcount layer"
    assert binary == [r.name for r in rows if r.binary]
    for r in rows:
        layer = m.get_submodule(r.name)
        if callable(getattr(layer, "export_spec", None)):
            spec = layer.export_spec()
            assert (r.input_bits, r.weight_bits) == (spec.input_bits, spec.weight_bits)
            assert r.binary == is_binary(layer)
        else:
            assert (r.input_bits, r.weight_bits) == (32, 32) and not r.binary
    assert m.binary_weight_count() == sum(r.weight_count for r in rows if r.weight_bits == 1)
    assert m.binary_weight_count() > 0


@pytest.mark.parametrize("name", FAST)
def test_summary_has_binary_macs(name, small_model):
    m = small_model(name)
    m.eval()
    s = summary(m, (1, *m.default_input_shape), print_fn=None)
    binary_rows = {r.name for r in s.rows if r.binary_macs > 0}
    assert binary_rows == set(m.binary_layer_names())
    assert s.totals.binary_macs > 0


@pytest.mark.parametrize("name", [n for n in ALL if n not in HEAVY])
def test_wrong_channel_count_is_a_clear_error(name, small_model):
    m = small_model(name)
    shape = list(m.default_input_shape)
    shape[0] += 1
    with pytest.raises(ValueError, match=r"expects .*got"):
        m(torch.zeros(2, *shape))


@pytest.mark.parametrize("name", ALL)
def test_bop_kernels_are_tagged_one_bit_without_clip(name):
    """``binary_kernels="bop"``: identity quantizer tagged 1-bit (larq NoOpQuantizer(1)), no
    latent clip, on every binary-weight layer (built on the meta device: no values needed)."""
    with torch.device("meta"):
        m = get_model(name, binary_kernels="bop")
        d = get_model(name)
    bop = [m.get_submodule(r.name) for r in m.layer_precisions() if r.weight_bits == 1]
    default = [d.get_submodule(r.name) for r in d.layer_precisions() if r.weight_bits == 1]
    assert bop and len(bop) == len(default)
    for layer in bop:
        assert type(layer.weight_quantizer).__name__ == "NoOp" and layer.weight_quantizer.precision == 1
        assert layer.weight_clip is None
    assert all(layer.weight_clip is not None for layer in default)


@pytest.mark.parametrize("name", ["bnn_mnist_cnn", "vad_bnn", "binarynet_mlp", "birealnet18", "quicknet_small"])
def test_bop_kernels_start_at_pm1_and_latent_ones_inside_the_clip(name, small_model):
    torch.manual_seed(0)
    m = get_model(name, binary_kernels="bop", **small_kwargs(name))
    for r in m.layer_precisions():
        if r.weight_bits == 1:
            assert set(m.get_submodule(r.name).weight.detach().unique().tolist()) <= {-1.0, 1.0}
    d = small_model(name)
    for r in d.layer_precisions():
        if r.weight_bits == 1:
            layer = d.get_submodule(r.name)
            assert layer.weight.detach().abs().max() <= layer.weight_clip


def test_unknown_binary_kernels_is_rejected():
    with pytest.raises(ValueError, match="binary_kernels must be one of 'ste_sign'"):
        get_model("bnn_mnist_cnn", binary_kernels="sign")


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_full_size_forward_backward(name):
    """Every model at its default size and input shape (ImageNet networks at 224x224)."""
    torch.manual_seed(0)
    m = get_model(name).train()
    y = m(m.example_input(2, generator=torch.Generator().manual_seed(1)))
    assert y.shape == (2, m.num_classes) and torch.isfinite(y).all()
    (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(4))).sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
