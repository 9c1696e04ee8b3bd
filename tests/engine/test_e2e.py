"""End to end: PyTorch model -> xnorkit.convert -> .xk -> C engine, against the PyTorch eval
model (float outputs within 1e-5 relative of the output's max magnitude, docs/format.md §6) and
against the format's oracle xnorkit.reference (exact on binary-only paths)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import xnorkit

convert_mod = pytest.importorskip("xnorkit.convert.pipeline")
xnn = pytest.importorskip("xnorkit.nn")
reference = pytest.importorskip("xnorkit.reference")


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial eval statistics so the folded thresholds are exercised (incl. negative gamma)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 2)
            m.running_var.copy_(torch.rand(n, generator=g) * 3 + 0.2)
            if m.weight is not None:
                m.weight.data.copy_(torch.randn(n, generator=g))
            if m.bias is not None:
                m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


def bconv(cin, cout, k=3, stride=1, padding=1, pad_value=0.0):
    return xnn.QuantConv2d(cin, cout, k, stride=stride, padding=padding, bias=False, pad_value=pad_value,
                           input_quantizer="ste_sign", weight_quantizer="ste_sign")


class SmallBNN(nn.Module):
    """float conv -> BN -> [sign] bconv(pad 0) -> maxpool -> BN -> bconv(pad +1, stride 2) -> BN ->
    bconv 1x1 (pad -1 irrelevant) -> BN -> flatten -> binary dense -> BN -> dense."""

    def __init__(self, c=3, hw=12, pad_values=(0.0, 1.0)):
        super().__init__()
        self.conv0 = nn.Conv2d(c, 64, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(64)
        self.conv1 = bconv(64, 65, pad_value=pad_values[0])
        self.pool = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(65)
        self.conv2 = bconv(65, 70, stride=2, pad_value=pad_values[1])
        self.bn2 = nn.BatchNorm2d(70)
        self.conv3 = bconv(70, 32, k=1, padding=0)
        self.bn3 = nn.BatchNorm2d(32)
        s = hw // 4
        self.fc1 = xnn.QuantLinear(32 * s * s, 100, bias=False, input_quantizer="ste_sign", weight_quantizer="ste_sign")
        self.bn4 = nn.BatchNorm1d(100)
        self.fc2 = xnn.QuantLinear(100, 10, input_quantizer="ste_sign", weight_quantizer="ste_sign")
        self.bn5 = nn.BatchNorm1d(10)

    def forward(self, x):
        x = self.bn0(self.conv0(x))
        x = self.bn1(self.pool(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        x = self.bn3(self.conv3(x))
        x = self.bn4(self.fc1(torch.flatten(x, 1)))
        return self.bn5(self.fc2(x))


class ResidualBNN(nn.Module):
    """Bi-Real style float residual stream around binary convs, with avg-pool + 1x1 float shortcut,
    PReLU, concat and global average pooling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(32)
        self.c1 = bconv(32, 32)
        self.b1 = nn.BatchNorm2d(32)
        self.c2 = bconv(32, 64, stride=2, pad_value=1.0)
        self.b2 = nn.BatchNorm2d(64)
        self.short = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64))
        self.act = nn.PReLU(64)
        self.c3 = bconv(64, 16)
        self.b3 = nn.BatchNorm2d(16)
        self.head = nn.Linear(80, 10)

    def forward(self, x):
        x = self.bn0(self.stem(x))
        x = x + self.b1(self.c1(x))
        y = self.b2(self.c2(x)) + self.short(x)
        y = self.act(y)
        z = torch.cat([y, self.b3(self.c3(y))], dim=1)
        return self.head(z.mean(dim=(2, 3)))


def check(model, x, rtol=1e-5):
    model = randomize_bn(model)
    conv = convert_mod.convert(model, x, precision="float")
    eng = xnorkit.Model(conv.data, max_batch=len(x))
    y = eng.run(x.numpy())
    with torch.no_grad():
        yt = model(x).numpy()
    yr = reference.run(conv.data, x.numpy())[0]
    scale = np.abs(yt).max()
    np.testing.assert_allclose(y, yr, rtol=0, atol=1e-5 * np.abs(yr).max())
    np.testing.assert_allclose(y, yt, rtol=0, atol=rtol * scale)
    return conv, eng, y


@pytest.mark.parametrize("pad_values", [(0.0, 1.0), (-1.0, 0.0)])
@pytest.mark.parametrize("batch", [1, 3])
def test_small_bnn_matches_pytorch(pad_values, batch):
    torch.manual_seed(batch)
    model = SmallBNN(pad_values=pad_values)
    conv, eng, _ = check(model, torch.randn(batch, 3, 12, 12))
    kinds = [o["kind"] for o in eng.ops]
    assert kinds.count("bconv2d") == 3 and kinds.count("bdense") == 2, kinds


def test_residual_bnn_matches_pytorch():
    torch.manual_seed(0)
    check(ResidualBNN(), torch.randn(2, 3, 10, 10))


def test_binary_activations_bit_exact():
    """Every bits tensor the engine writes equals PyTorch's sign: check through a model whose
    output is a binary dense on the signs (integers are exact), for many inputs."""
    torch.manual_seed(3)
    model = randomize_bn(SmallBNN())
    model.bn5 = nn.Identity()
    x = torch.randn(64, 3, 12, 12)
    conv = convert_mod.convert(model, x[:1], precision="float")
    y = xnorkit.Model(conv.data, max_batch=64).run(x.numpy())
    with torch.no_grad():
        yt = model(x).numpy()
    np.testing.assert_array_equal(y, yt)  # fc2 accumulates +-1 products: exact integers plus an exact bias


SHAPES = {"binarynet_mlp": (1, 28, 28), "bnn_mnist_cnn": (1, 28, 28), "binarynet": (3, 32, 32), "vad_bnn": None}
FAST = ["binarynet_mlp", "bnn_mnist_cnn", "binarynet"]
SLOW = ["birealnet18", "quicknet_small", "quicknet", "binary_alexnet", "binary_resnet_e18", "binary_densenet28", "xnornet"]


def zoo_check(name):
    models = pytest.importorskip("xnorkit.models")
    torch.manual_seed(0)
    model = randomize_bn(models.get_model(name))
    x = torch.randn(1, *SHAPES.get(name, (3, 224, 224)))
    try:
        conv = convert_mod.convert(model, x, precision="float")
    except convert_mod.ConversionError as exc:
        pytest.xfail(f"converter: {exc}"[:300])
    y = xnorkit.Model(conv.data).run(x.numpy())
    with torch.no_grad():
        yt = model(x).numpy()
    np.testing.assert_allclose(y, yt, rtol=0, atol=1e-5 * np.abs(yt).max())


@pytest.mark.parametrize("name", FAST)
def test_zoo_model_matches_pytorch(name):
    zoo_check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_zoo_model_matches_pytorch_224(name):
    zoo_check(name)


class DepthwiseNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.b = bconv(16, 32, pad_value=1.0)
        self.bn3 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.bn2(self.dw(x))
        x = self.bn3(self.b(x))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("net", [SmallBNN, DepthwiseNet])
def test_int8_conversion_matches_reference(net):
    """int8 non-binary layers (incl. depthwise): the engine computes what the format specifies
    (the oracle quantizes and accumulates exactly the same way)."""
    torch.manual_seed(1)
    model = randomize_bn(net())
    x = torch.randn(3, 3, 12, 12)
    conv = convert_mod.convert(model, x, precision="int8", calibration=torch.randn(16, 3, 12, 12))
    precisions = {o["kind"] + ":" + o["precision"] for o in xnorkit.Model(conv.data).ops}
    assert "conv2d:int8" in precisions, precisions
    y = xnorkit.Model(conv.data, max_batch=3).run(x.numpy())
    yr = reference.run(conv.data, x.numpy())[0]
    np.testing.assert_allclose(y, yr, rtol=0, atol=1e-5 * np.abs(yr).max())
