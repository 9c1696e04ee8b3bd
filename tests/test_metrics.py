"""xnorkit.metrics.FlipRatio: fraction of binary weights whose sign0 changed."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from xnorkit.metrics import FlipRatio, FlipStats, flip_count
from xnorkit.optim import Bop, mark_binary


class _BinLinear(nn.Linear):
    def export_spec(self):
        return SimpleNamespace(input_bits=1, weight_bits=1)


def test_flip_values_per_layer_and_total():
    a = torch.tensor([1.0, -1.0, 1.0, -1.0])
    b = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    fr = FlipRatio({"a": a, "b": b})
    assert fr.numel == 10 and fr._bits[0].dtype == torch.bool
    a[0], a[1] = -1.0, 1.0      # 2 of 4 flipped
    b[2, 1] = -0.5              # 1 of 6 flipped
    r = fr.update()
    assert r.per_layer == {"a": 0.5, "b": pytest.approx(1 / 6)}
    assert (r.flipped, r.numel, r.total) == (3, 10, 0.3)
    assert r.as_dict() == {"flip_ratio/total": 0.3, "flip_ratio/a": 0.5,
                           "flip_ratio/b": pytest.approx(1 / 6)}
    assert fr.update().total == 0.0  # nothing changed since the last update


def test_peek_does_not_resnapshot_and_reset_does():
    t = torch.tensor([1.0, 1.0])
    fr = FlipRatio([("t", t)])
    t[0] = -1.0
    assert fr.peek().total == 0.5 and fr.peek().total == 0.5
    fr.reset()
    assert fr.peek().total == 0.0


def test_sign0_convention_for_zeros():
    t = torch.tensor([0.0, 0.0, 2.0])
    fr = FlipRatio({"t": t})
    t[0] = -0.0     # sign0(-0.0) = +1: not a flip
    t[1] = -1e-9    # crosses zero: a flip
    t[2] = 0.0      # +2 -> 0 keeps sign0 = +1
    assert fr.update().flipped == 1
    assert flip_count(torch.tensor([0.0, -0.0, 1.0]), torch.tensor([-0.0, 0.0, -1.0])) == 1


def test_model_with_bop_counts_the_optimizer_flips():
    torch.manual_seed(0)
    net = nn.Sequential(_BinLinear(8, 16), nn.BatchNorm1d(16), _BinLinear(16, 4))
    tracker = FlipRatio(net)  # binary weights only: 8*16 + 16*4
    assert tracker.numel == 192 and [n for n, _ in tracker.tensors] == ["0.weight", "2.weight"]
    opt = Bop([net[0].weight, net[2].weight], threshold=0.0, gamma=1.0)
    net(torch.randn(32, 8)).square().sum().backward()
    w0 = [net[0].weight.detach().clone(), net[2].weight.detach().clone()]
    opt.step()
    expect = sum(int(((a < 0) != (p.detach() < 0)).sum())
                 for a, p in zip(w0, [net[0].weight, net[2].weight]))
    r = tracker.update()
    assert r.flipped == expect > 0
    assert r.total == pytest.approx(expect / 192)


def test_errors():
    with pytest.raises(TypeError, match="not a bare tensor"):
        FlipRatio(torch.zeros(3))
    with pytest.raises(ValueError, match="duplicate name 'x'"):
        FlipRatio([("x", torch.zeros(1)), ("x", torch.zeros(2))])
    with pytest.raises(TypeError, match=r"expected \(name, tensor\) pairs"):
        FlipRatio([torch.zeros(1)])
    with pytest.raises(ValueError, match="shapes differ"):
        flip_count(torch.zeros(2), torch.zeros(3))
    p = mark_binary(nn.Parameter(torch.ones(4)))
    fr = FlipRatio({"p": p})
    p.data = torch.ones(5)
    with pytest.raises(ValueError, match="'p' changed shape"):
        fr.update()


def test_empty_tracker():
    r = FlipRatio(nn.Linear(2, 2)).update()
    assert r == FlipStats(total=0.0, per_layer={}, flipped=0, numel=0)
