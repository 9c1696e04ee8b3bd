"""Binary QuantLinear / QuantConv2d under xnorkit.kernels.gpu.use_binary_kernels(): the packed
kernel really runs, the integer sums equal the float simulation bit for bit and the gradients
of every parameter are identical; non-±1 layers stay on the float path."""

import pytest
import torch
from conftest import DEVICE, gpu_module

xg = gpu_module()
nn_ = pytest.importorskip("xnorkit.nn")


@pytest.fixture
def spy(monkeypatch):
    calls = []
    real = xg.autograd.bgemm

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(xg.autograd, "bgemm", counting)
    return calls


def _run(model, x, binary):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # same dropout masks on both paths
    xl = x.clone().requires_grad_(True)
    with xg.use_binary_kernels(binary, force=True):
        y = model(xl)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    (y * g).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return y.detach(), xl.grad, grads


def _compare(model, x, spy, exact_out=True):
    yf, gxf, gf = _run(model, x, False)
    assert not spy
    yb, gxb, gb = _run(model, x, True)
    assert spy, "the binary kernel did not run"
    if exact_out:
        assert torch.equal(yb, yf)
    else:
        torch.testing.assert_close(yb, yf, rtol=1e-6, atol=1e-5)
    assert torch.equal(gxb, gxf)
    assert gb.keys() == gf.keys() and gb
    for name in gf:
        assert torch.equal(gb[name], gf[name]), name


@pytest.mark.parametrize("bias", [False, True])
def test_quant_linear(spy, bias):
    torch.manual_seed(0)
    layer = nn_.QuantLinear(65, 7, bias=bias, input_quantizer="ste_sign", weight_quantizer="ste_sign").to(DEVICE)
    if bias:
        torch.nn.init.normal_(layer.bias)
    _compare(layer, torch.randn(5, 65, device=DEVICE), spy, exact_out=not bias)


@pytest.mark.parametrize("padding,pad_value", [(1, 0.0), (1, 1.0), (1, -1.0), ("same", 0.0), (0, 0.0)])
def test_quant_conv2d(spy, padding, pad_value):
    torch.manual_seed(1)
    layer = nn_.QuantConv2d(3, 4, 3, padding=padding, pad_value=pad_value, bias=False,
                            input_quantizer="ste_sign", weight_quantizer="ste_sign").to(DEVICE)
    _compare(layer, torch.randn(2, 3, 5, 6, device=DEVICE), spy)


def test_small_binarynet_block(spy):
    torch.manual_seed(2)
    model = torch.nn.Sequential(
        nn_.QuantConv2d(3, 8, 3, padding=1, bias=False, input_quantizer="ste_sign", weight_quantizer="ste_sign"),
        torch.nn.BatchNorm2d(8),
        nn_.QuantConv2d(8, 8, 3, padding=1, bias=False, input_quantizer="ste_sign", weight_quantizer="ste_sign"),
        torch.nn.Flatten(),
        nn_.QuantLinear(8 * 4 * 4, 10, input_quantizer="ste_sign", weight_quantizer="ste_sign"),
    ).to(DEVICE)
    _compare(model, torch.randn(3, 3, 4, 4, device=DEVICE), spy, exact_out=False)


@pytest.mark.parametrize("iq,wq", [(None, "ste_sign"), ("leaky_sign", "ste_sign"), ("ste_sign", "magnitude_aware_sign"),
                                   ("ste_heaviside", "ste_sign")])
def test_non_pm1_layers_stay_on_the_float_path(spy, iq, wq):
    layer = nn_.QuantLinear(10, 3, input_quantizer=iq, weight_quantizer=wq).to(DEVICE)
    with xg.use_binary_kernels(force=True):
        layer(torch.randn(2, 10, device=DEVICE))
    assert not spy


def test_binarynet_mlp_training_step_identical(spy):
    models = pytest.importorskip("xnorkit.models")
    torch.manual_seed(3)
    model = models.get_model("binarynet_mlp", hidden_units=96).to(DEVICE)  # small: interpreter
    x = torch.randn(4, *model.default_input_shape, device=DEVICE)
    _compare(model, x, spy, exact_out=False)
    assert len(spy) >= 3  # fc2, fc3, fc_out


def test_binarynet_training_step_identical(spy):
    models = pytest.importorskip("xnorkit.models")
    torch.manual_seed(4)
    model = models.get_model("binarynet", filters=4, dense_units=16, input_shape=(3, 8, 8)).to(DEVICE)
    x = torch.randn(2, *model.default_input_shape, device=DEVICE)
    _compare(model, x, spy, exact_out=False)
    assert len(spy) >= 8  # conv2..conv6, fc7..fc9
