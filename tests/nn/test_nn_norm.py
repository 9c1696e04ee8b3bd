"""ChannelLayerNorm: Keras' LayerNormalization() (axis=-1 on NHWC) for NCHW tensors."""

import pytest
import torch
from torch import nn

from xnorkit.nn import ChannelLayerNorm


@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (3, 5, 7), (4, 5)])
def test_normalizes_over_channels_only(shape):
    torch.manual_seed(0)
    ln = ChannelLayerNorm(5)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2)
        ln.bias.normal_()
    x = torch.randn(*shape) * 3 + 1
    mu = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    view = (1, 5) + (1,) * (x.dim() - 2)
    ref = (x - mu) / torch.sqrt(var + 1e-3) * ln.weight.view(view) + ln.bias.view(view)
    y = ln(x)
    assert y.shape == x.shape
    assert torch.allclose(y, ref, atol=1e-5)
    # equals torch's LayerNorm applied channels-last
    t = nn.LayerNorm(5, eps=1e-3)
    t.load_state_dict(ln.state_dict())
    assert torch.allclose(y, t(x.movedim(1, -1)).movedim(-1, 1), atol=1e-6)


def test_defaults_and_no_affine():
    ln = ChannelLayerNorm(3)
    assert ln.eps == 1e-3  # Keras default
    assert set(ln.state_dict()) == {"weight", "bias"}
    plain = ChannelLayerNorm(3, elementwise_affine=False)
    assert list(plain.parameters()) == []
    x = torch.randn(2, 3, 4, 4)
    y = plain(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 4, 4), atol=1e-5)
    nobias = ChannelLayerNorm(3, bias=False)
    assert nobias.bias is None and nobias.weight is not None
    x.requires_grad_()
    ChannelLayerNorm(3)(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_errors():
    with pytest.raises(ValueError, match=r"expected input \(N, C, ...\) with C=3, got shape \(2, 4, 5\)"):
        ChannelLayerNorm(3)(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="num_channels must be an int >= 1"):
        ChannelLayerNorm(0)
    with pytest.raises(ValueError, match="eps must be a positive number"):
        ChannelLayerNorm(3, eps=0)
