"""Small layers that follow the xnorkit.nn contract (export_spec().weight_bits), so the
optimizer tests do not depend on xnorkit.nn while it is being written."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def _ste_sign0(w):
    # forward sign0(w) (+1 for 0), backward identity
    return w + (torch.where(w < 0, -1.0, 1.0).to(w.dtype) - w).detach()


class SpecLinear(nn.Linear):
    def __init__(self, i, o, weight_bits=1, bias=True):
        super().__init__(i, o, bias=bias)
        self.weight_bits = weight_bits

    def export_spec(self):
        return SimpleNamespace(input_bits=1, weight_bits=self.weight_bits)

    def quantized_weight(self):
        return _ste_sign0(self.weight) if self.weight_bits == 1 else self.weight

    def forward(self, x):
        return F.linear(x, self.quantized_weight(), self.bias)


class SpecConv2d(nn.Conv2d):
    def __init__(self, cin, cout, k, weight_bits=1, **kw):
        super().__init__(cin, cout, k, **kw)
        self.weight_bits = weight_bits

    def export_spec(self):
        return SimpleNamespace(input_bits=1, weight_bits=self.weight_bits)

    def quantized_weight(self):
        return _ste_sign0(self.weight) if self.weight_bits == 1 else self.weight

    def forward(self, x):
        return self._conv_forward(x, self.quantized_weight(), self.bias)


def make_net(seed=0, dtype=torch.float32):
    """binary linear -> BN -> float linear (8 bits) -> binary linear, plus a float head."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        SpecLinear(6, 8),
        nn.BatchNorm1d(8),
        SpecLinear(8, 8, weight_bits=8),
        SpecLinear(8, 5, bias=False),
        nn.Linear(5, 3),
    )
    return net.to(dtype)


@pytest.fixture
def layers():
    return SimpleNamespace(Linear=SpecLinear, Conv2d=SpecConv2d, make_net=make_net)
