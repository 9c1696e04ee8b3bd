"""BinaryNet latent-weight helpers: Glorot LR scale, param groups, clipping."""

import math

import pytest
import torch
from torch import nn

from xnorkit.optim import (
    ExponentialDecay,
    ScheduleLR,
    binarynet_param_groups,
    clip_latent_weights_,
    glorot_fans,
    glorot_lr_scale,
    mark_binary,
)


def test_glorot_scale_dense_and_conv(layers):
    # BinaryNet MNIST first layer 784 -> 4096: 1/sqrt(1.5/4880)
    assert glorot_lr_scale(nn.Linear(784, 4096)) == pytest.approx(math.sqrt(4880 / 1.5))
    # conv: fan_in = kh*kw*cin = 27, fan_out = kh*kw*cout = 1152
    conv = layers.Conv2d(3, 128, 3)
    assert glorot_fans(conv) == (27, 1152)
    assert glorot_lr_scale(conv) == pytest.approx(1 / math.sqrt(1.5 / (27 + 1152)))
    assert glorot_fans(nn.Conv1d(4, 6, 5).weight) == (20, 30)
    # grouped/depthwise conv: the weight's per-group input dimension is the fan-in
    assert glorot_fans(nn.Conv2d(8, 8, 3, groups=8)) == (9, 72)


def test_glorot_errors():
    with pytest.raises(ValueError, match=">= 2 dims"):
        glorot_lr_scale(torch.zeros(5))
    with pytest.raises(TypeError, match="no 'weight' tensor"):
        glorot_lr_scale(nn.ReLU())


def test_binarynet_param_groups(layers):
    net = layers.make_net()
    groups = binarynet_param_groups(net, lr=1e-3)
    by_name = {g["name"]: g for g in groups}
    assert list(by_name) == ["0.weight", "3.weight", "float"]
    assert by_name["0.weight"]["lr"] == pytest.approx(1e-3 * math.sqrt(14 / 1.5))
    assert by_name["3.weight"]["lr_scale"] == pytest.approx(math.sqrt(13 / 1.5))
    assert by_name["float"]["lr"] == 1e-3 and by_name["float"]["lr_scale"] == 1.0
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    unscaled = binarynet_param_groups(net, lr=1e-3, scale=False)
    assert all(g["lr"] == 1e-3 for g in unscaled)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        binarynet_param_groups(net, lr=0)


def test_scaled_adam_step_matches_binarynet_rule(layers):
    # Adam's first step moves each weight by lr * sign(g) (for |g| >> eps); BinaryNet scales
    # the update of a binary layer by its Glorot coefficient.
    net = layers.make_net()
    opt = torch.optim.Adam(binarynet_param_groups(net, lr=1e-3))
    sched = ScheduleLR(opt, ExponentialDecay(1e-3, 1, 0.5))  # keeps lr_scale under schedules
    before = net[0].weight.detach().clone()
    net(torch.randn(8, 6)).sum().backward()
    g = net[0].weight.grad.clone()
    opt.step()
    sched.step()
    step = net[0].weight.detach() - before
    mask = g.abs() > 1e-4
    torch.testing.assert_close(step[mask], -1e-3 * math.sqrt(14 / 1.5) * g.sign()[mask],
                               rtol=1e-3, atol=0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-3 * math.sqrt(14 / 1.5))


def test_clip_latent_weights_only_binary(layers):
    net = layers.make_net()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(10.0)
    float_before = net[2].weight.detach().clone()
    assert clip_latent_weights_(net, 0.5) == 2
    assert net[0].weight.abs().max() == 0.5 and net[3].weight.abs().max() == 0.5
    assert torch.equal(net[2].weight, float_before)
    extra = mark_binary(nn.Parameter(torch.tensor([3.0, -3.0])))
    net.register_parameter("extra", extra)
    clip_latent_weights_(net)
    assert torch.equal(extra.detach(), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="positive"):
        clip_latent_weights_(net, 0.0)
