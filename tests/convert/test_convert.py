"""End to end: PyTorch models -> convert -> reference.py, equal to the PyTorch eval model bit for
bit on every binary activation and within 1e-5 relative on float outputs; int8 within its
quantization bound; clear errors for what is not supported; the conversion report."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

import xnorkit.nn as xnn
from xnorkit import reference as ref
from xnorkit.convert import ConversionError, convert
from xnorkit.convert import format as xkf
from xnorkit.quantizers import SteSign

from _util import compare, randomize_bn

BIN = dict(input_quantizer="ste_sign", weight_quantizer="ste_sign")
XNOR = dict(input_quantizer="ste_sign", weight_quantizer="magnitude_aware_sign")


def check_exact(model, x, **kw):
    conv = convert(model, x, precision="float", **kw)
    rel, mism = compare(model, conv, x)
    assert rel <= 1e-5, rel
    assert mism and all(v == 0 for v in mism.values()), mism
    return conv


def test_mixed_cnn_all_pad_values_scales_and_pools():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardtanh(),
        xnn.QuantConv2d(16, 24, 3, padding=1, pad_value=0.0, bias=True, **BIN), nn.MaxPool2d(2), nn.BatchNorm2d(24),
        xnn.QuantConv2d(24, 24, 3, padding="same", pad_value=1.0, bias=False, output_scale=True, **XNOR),
        nn.BatchNorm2d(24),
        xnn.QuantConv2d(24, 32, 3, stride=2, padding="same", pad_value=-1.0, bias=False, **BIN), nn.BatchNorm2d(32),
        nn.Flatten(), xnn.QuantLinear(32 * 2 * 2, 40, **BIN), nn.BatchNorm1d(40),
        xnn.QuantLinear(40, 10, bias=True, **XNOR), nn.BatchNorm1d(10), nn.Softmax(dim=1))
    randomize_bn(m, seed=1)
    with torch.no_grad():
        m[6].scale.fill_(0.37)
    x = torch.randn(5, 3, 8, 8)
    conv = check_exact(m, x)
    kinds = [op.kind for op in conv.model.ops]
    assert kinds.count("bconv2d") == 3 and kinds.count("bdense") == 2
    # activations stay packed between binary layers: the float first layer writes bits itself
    assert kinds.count("sign") == 0 and conv.model.tensors[conv.model.ops[0].output].dtype == "bits"
    pool = next(op for op in conv.model.ops if op.kind == "maxpool2d")
    assert conv.model.tensors[pool.output].dtype == "bits" and pool.params["invert"] != -1  # negative gammas
    # binary layers: 1 bit per weight
    for op in conv.model.ops:
        if op.kind in ("bconv2d", "bdense"):
            w = conv.model.tensors[op.weights]
            assert w.nbytes == w.shape[0] * xkf.packed_row_bytes(w.shape[1])


def test_residual_birealnet_style_with_downsample_and_global_pool():
    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv = xnn.QuantConv2d(cin, cout, 3, stride=stride, padding=1, bias=False,
                                        input_quantizer="approx_sign", weight_quantizer="ste_sign")
            self.bn = nn.BatchNorm2d(cout)
            self.short = nn.Identity() if stride == 1 else nn.Sequential(
                nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False), nn.Conv2d(cin, cout, 1, bias=False),
                nn.BatchNorm2d(cout))

        def forward(self, x):
            return self.bn(self.conv(x)) + self.short(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
            self.blocks = nn.Sequential(Block(8, 8, 1), Block(8, 16, 2), Block(16, 16, 1))
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            x = F.relu(self.blocks(self.stem(x)))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(1)
    m = randomize_bn(Net().eval(), seed=2)
    x = torch.randn(3, 3, 9, 7)  # odd sizes: ceil_mode pooling and asymmetric borders
    conv = check_exact(m, x)
    assert [op.kind for op in conv.model.ops].count("add") == 3


def test_concat_depthwise_prelu_and_float_signs():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(4, 8, 3, padding=1, groups=4)
            self.bn = nn.BatchNorm2d(8)
            self.prelu = nn.PReLU(8)
            self.b1 = xnn.QuantConv2d(8, 6, 3, padding=1, pad_value=1.0, bias=False, **BIN)
            self.bn1 = nn.BatchNorm2d(6)
            self.b2 = xnn.QuantConv2d(14, 6, 1, bias=False, **BIN)
            self.bn2 = nn.BatchNorm2d(6)
            self.head = nn.Conv2d(6, 3, 1)

        def forward(self, x):
            y = self.prelu(self.bn(self.dw(x)))
            z = torch.cat([y, F.leaky_relu(self.bn1(self.b1(y)), 0.1)], dim=1)
            return F.relu6(self.head(self.bn2(self.b2(z))) * 2.0 + 0.5)

    torch.manual_seed(2)
    m = randomize_bn(Net().eval(), seed=3)
    with torch.no_grad():
        m.prelu.weight.uniform_(0.05, 0.5)
    x = torch.randn(2, 4, 6, 6)
    conv = check_exact(m, x)
    kinds = [op.kind for op in conv.model.ops]
    assert "concat" in kinds and kinds.count("sign") == 2
    dw = next(op for op in conv.model.ops if op.name == "dw")
    assert dw.params["groups"] == 4 and conv.model.tensors[dw.weights].shape == (3, 3, 8)


def test_conv1d_dilated_residual_and_mean_over_time():
    class Vad(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv1d(5, 8, 3, padding=1)
            self.bn0 = nn.BatchNorm1d(8)
            self.convs = nn.ModuleList(xnn.QuantConv1d(8, 8, 3, padding=d, dilation=d, pad_value=1.0, bias=False,
                                                       **BIN) for d in (1, 2, 4))
            self.bns = nn.ModuleList(nn.BatchNorm1d(8) for _ in range(3))
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            x = self.bn0(self.stem(x))
            for c, b in zip(self.convs, self.bns):
                x = x + b(c(x))
            return self.fc(x.mean(dim=2))

    torch.manual_seed(3)
    m = randomize_bn(Vad().eval(), seed=4)
    x = torch.randn(4, 5, 19)
    conv = check_exact(m, x)
    t_in = conv.model.tensors[conv.model.inputs[0]]
    assert t_in.shape == (1, 1, 19, 5) and t_in.torch_layout == "ncl"


def test_mlp_with_standalone_sign_and_multibit_weights():
    torch.manual_seed(4)
    m = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(12), SteSign(), xnn.QuantLinear(12, 16, bias=False, **BIN),
                      nn.BatchNorm1d(16), xnn.QuantLinear(16, 8, input_quantizer="ste_sign", weight_quantizer="ste_tern"),
                      nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    randomize_bn(m, seed=5)
    x = torch.randn(6, 3, 2, 2)
    conv = check_exact(m, x)
    kinds = [op.kind for op in conv.model.ops]
    assert kinds[:3] == ["flatten", "sign", "bdense"] and "unpack" in kinds
    sign = conv.model.ops[1]
    assert sign.params["threshold"] != -1  # the BatchNorm before the standalone sign became thresholds
    rep = {r["name"]: r for r in conv.report_rows()}
    assert rep["3"]["became"] == "binary" and rep["5"]["became"] == "float" and "2-bit weights" in rep["5"]["why"]
    assert "float thresholds" in rep["1"]["why"]


def test_int8_first_and_last_layers_within_the_quantization_bound():
    torch.manual_seed(5)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                      xnn.QuantConv2d(8, 8, 3, padding=1, bias=False, **BIN), nn.BatchNorm2d(8),
                      nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    randomize_bn(m, seed=6, zero_gamma=False)
    calib = torch.randn(64, 3, 4, 4)
    conv = convert(m, calib[:1], calibration=calib)
    rows = {r["name"]: r for r in conv.report_rows()}
    assert rows["0"]["became"] == "int8" and rows["5"]["became"] == "int8" and rows["2"]["became"] == "binary"
    first = next(op for op in conv.model.ops if op.name == "0")
    assert first.params["precision"] == xkf.PREC["i8"] and conv.model.tensors[first.weights].dtype == "i8"
    # first layer alone: |int8 - float| <= sum_k (|x||dw| + |w||dx| + |dx||dw|) * |scale| per channel
    one = nn.Sequential(m[0])
    c1 = convert(one, calib[:1], calibration=calib)
    op = c1.model.ops[0]
    x = calib[:8]
    got = ref.run(c1.model, x.numpy())[0]
    want = one(x).detach().numpy()
    s_in = op.params["in_scale"]
    w = m[0].weight.detach().numpy()
    w_scale = np.abs(w).reshape(8, -1).max(1) / 127
    k = w[0].size
    bound = k * (float(x.abs().max()) * w_scale / 2 + np.abs(w).reshape(8, -1).max(1) * s_in / 2 + s_in * w_scale / 4)
    err = np.abs(got - want).max(axis=(0, 2, 3))
    assert np.all(err <= bound * 1.01 + 1e-6), (err, bound)
    assert np.all(err > 0)  # it really is quantized
    # the whole model stays close and the binary layer input is still the exact sign of PyTorch's int8-free path
    # when the first layer is kept float on request
    exact = convert(m, calib[:1], calibration=calib, float_layers=["0"])
    rows = {r["name"]: r for r in exact.report_rows()}
    assert rows["0"]["became"] == "float" and "requested" in rows["0"]["why"] and rows["5"]["became"] == "int8"


@pytest.mark.parametrize("layer, message", [
    (nn.Upsample(scale_factor=2), "Upsample"),
    (nn.GELU(), "GELU"),
    (xnn.ChannelLayerNorm(4), "ChannelLayerNorm"),
])
def test_unsupported_layers_are_named_with_the_supported_list(layer, message):
    m = nn.Sequential(nn.Conv2d(3, 4, 1), layer)
    with pytest.raises(ConversionError, match=message) as exc:
        convert(m, torch.randn(1, 3, 4, 4))
    assert "Supported:" in str(exc.value) or "not supported" in str(exc.value)


def test_value_dependent_control_flow_is_a_clear_error():
    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(ConversionError, match="could not trace Branchy.*shapes only"):
        convert(Branchy(), torch.randn(1, 3))


def test_quantizer_values_and_weights_are_checked():
    m = nn.Sequential(xnn.QuantConv2d(3, 4, 1, input_quantizer="ste_heaviside", weight_quantizer="ste_sign"))
    with pytest.raises(ConversionError, match=r"values \(0.0, 1.0\).*exactly \{-1, \+1\}"):
        convert(m, torch.randn(1, 3, 4, 4))
    m = nn.Sequential(xnn.QuantConv2d(3, 4, 1, input_quantizer="ste_sign", weight_quantizer="noop"))
    with pytest.raises(ConversionError, match="magnitudes other than 1"):
        convert(m, torch.randn(1, 3, 4, 4))
    with pytest.raises(ConversionError, match="float_layers: no module named 'nope'"):
        convert(m, torch.randn(1, 3, 4, 4), float_layers=["nope"])


def test_report_table_names_every_layer(capsys):
    torch.manual_seed(6)
    m = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),
                                   xnn.QuantConv2d(4, 4, 3, bias=False, **BIN), nn.BatchNorm2d(4),
                                   xnn.QuantConv2d(4, 4, 1, bias=False, **BIN)).eval())
    conv = convert(m, torch.randn(1, 3, 6, 6))
    buf = io.StringIO()
    conv.print_report(Console(file=buf, width=200))
    text = buf.getvalue()
    for want in ("binary", "float", "folded", "no calibration data", "integer thresholds", "input_bits=1"):
        assert want in text, want
    meta = conv.model.meta_value("report")
    assert [r["became"] for r in meta] == ["float", "folded", "binary", "folded", "binary"]
    assert conv.model.meta_value("producer").startswith("xnorkit ")


def test_model_training_mode_is_restored_and_file_saves(tmp_path):
    m = nn.Sequential(xnn.QuantLinear(4, 2, **BIN))
    m.train()
    conv = convert(m, torch.randn(1, 4), labels=["a", "b"], input_mean=[0.5], input_std=[2.0], config={"lr": 1})
    assert m.training
    n = conv.save(tmp_path / "m.xk")
    back = xkf.read(tmp_path / "m.xk")
    assert n == back.file_size and back.meta_value("labels") == "a\nb" and back.meta_value("config") == {"lr": 1}
    assert back.meta_value("input_std").tolist() == [2.0]


def test_every_conversion_prints_its_table_unless_asked_not_to(capsys):
    m = nn.Sequential(nn.Linear(4, 3), xnn.QuantLinear(3, 2, **BIN))
    convert(m, torch.randn(1, 4))
    out = capsys.readouterr().out
    assert "what each layer became" in out and "binary" in out and "float" in out
    convert(m, torch.randn(1, 4), verbose=False)
    assert capsys.readouterr().out == ""
