"""xnor_linear / xnor_conv2d: forward equals the float simulation exactly (integer sums), and
the gradients through an STE quantizer equal the float simulation's bit for bit."""

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICE, gpu_module

xg = gpu_module()


class _Ste(torch.autograd.Function):
    """sign0 forward, hard-tanh STE backward (the ste_sign rule), local so the test stands alone."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


def _latent(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * 1.5
    x[torch.rand(*shape, generator=g) < 0.05] = 0.0
    return x.to(DEVICE)


def _both(fn_bin, fn_float, *latents, upstream_seed=0):
    """Run the same graph twice (binary kernel / float op) and return outputs and grads."""
    results = []
    for fn in (fn_bin, fn_float):
        leaves = [t.clone().requires_grad_(True) for t in latents]
        y = fn(*[_Ste.apply(t) for t in leaves])
        g = torch.Generator().manual_seed(upstream_seed)
        up = torch.randn(y.shape, generator=g).to(DEVICE)
        (y * up).sum().backward()
        results.append((y.detach(), [t.grad for t in leaves]))
    return results


@pytest.mark.parametrize("shape,k,n", [((1,), 1, 3), ((5,), 63, 7), ((4,), 65, 9), ((2, 3), 97, 5), ((17,), 64, 1)])
def test_xnor_linear_equals_float_simulation(shape, k, n):
    x = _latent(*shape, k, seed=k)
    w = _latent(n, k, seed=k + 1)
    (yb, gb), (yf, gf) = _both(xg.xnor_linear, F.linear, x, w, upstream_seed=n)
    assert yb.shape == yf.shape == (*shape, n)
    assert torch.equal(yb, yf)
    for a, b in zip(gb, gf):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(6,), (2, 3)])
def test_xnor_linear_with_bias_equals_float_simulation(shape):
    x = _latent(*shape, 70, seed=40)
    w = _latent(5, 70, seed=41)
    b = _latent(5, seed=42)
    results = []
    for fn in (xg.xnor_linear, F.linear):
        xl, wl, bl = (t.clone().requires_grad_(True) for t in (x, w, b))
        y = fn(_Ste.apply(xl), _Ste.apply(wl), bl)
        (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)).sum().backward()
        results.append((y.detach(), xl.grad, wl.grad, bl.grad))
    (y_b, *g_b), (y_f, *g_f) = results
    torch.testing.assert_close(y_b, y_f, rtol=1e-6, atol=1e-5)  # see the conv test below
    for a, b_ in zip(g_b, g_f):
        assert torch.equal(a, b_)


@pytest.mark.parametrize("k,dilation", [(3, 1), (2, 1), (4, 1), (3, 2), ((2, 3), 1)])
def test_xnor_conv2d_same_and_bias_equal_float_simulation(k, dilation):
    kh, kw = (k, k) if isinstance(k, int) else k
    x = _latent(2, 3, 6, 5, seed=50 + kh)
    w = _latent(4, 3, kh, kw, seed=51 + kw)
    b = _latent(4, seed=52)
    results = []
    for fn in (xg.xnor_conv2d, F.conv2d):
        xl, wl, bl = (t.clone().requires_grad_(True) for t in (x, w, b))
        y = fn(_Ste.apply(xl), _Ste.apply(wl), bl, 1, "same", dilation)
        (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)).sum().backward()
        y0 = fn(_Ste.apply(x), _Ste.apply(w), None, 1, "same", dilation)
        results.append((y0, y.detach(), xl.grad, wl.grad, bl.grad))
    (s_b, y_b, *g_b), (s_f, y_f, *g_f) = results
    assert torch.equal(s_b, s_f)  # the integer sums, bit for bit
    # With a bias the float op rounds partial sums in its own order; the binary path adds the
    # bias to the exact sum once. Equal up to float32 rounding, never more.
    torch.testing.assert_close(y_b, y_f, rtol=1e-6, atol=1e-5)
    for a, b_ in zip(g_b, g_f):
        assert torch.equal(a, b_)  # gradients identical


def test_xnor_linear_dtype_and_errors():
    x = torch.ones(3, 10, device=DEVICE, dtype=torch.float64)
    w = -torch.ones(4, 10, device=DEVICE, dtype=torch.float64)
    y = xg.xnor_linear(x, w)
    assert y.dtype == torch.float64 and torch.equal(y, torch.full((3, 4), -10.0, dtype=torch.float64, device=DEVICE))
    with pytest.raises(ValueError, match="K=10 features but w has K=11"):
        xg.xnor_linear(x, torch.ones(4, 11, device=DEVICE, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"w \(N, K\)"):
        xg.xnor_linear(x, torch.ones(10, device=DEVICE))


CONV_CASES = [
    # (C, O, kernel, stride, padding, dilation, groups, H, W)
    (3, 4, 3, 1, 0, 1, 1, 6, 5),
    (5, 2, 3, 1, 1, 1, 1, 5, 5),
    (4, 6, (3, 2), (2, 1), (1, 2), 1, 1, 7, 6),
    (2, 3, 3, 1, 2, 2, 1, 6, 6),
    (6, 4, 1, 1, 0, 1, 2, 4, 3),
    (70, 3, 2, 2, 1, 1, 1, 5, 4),  # C > 64: two words per pixel
]


@pytest.mark.parametrize("c,o,ks,stride,padding,dilation,groups,h,w", CONV_CASES)
def test_xnor_conv2d_zero_padding_equals_float_simulation(c, o, ks, stride, padding, dilation, groups, h, w):
    kh, kw = (ks, ks) if isinstance(ks, int) else ks
    x = _latent(2, c, h, w, seed=c + h)
    wt = _latent(o, c // groups, kh, kw, seed=o + kh)
    conv_b = lambda a, b: xg.xnor_conv2d(a, b, None, stride, padding, dilation, groups)  # noqa: E731
    conv_f = lambda a, b: F.conv2d(a, b, None, stride, padding, dilation, groups)  # noqa: E731
    (yb, gb), (yf, gf) = _both(conv_b, conv_f, x, wt, upstream_seed=c)
    assert yb.shape == yf.shape
    assert torch.equal(yb, yf)
    for a, b in zip(gb, gf):
        assert torch.equal(a, b)


@pytest.mark.parametrize("pad_value", [1.0, -1.0])
def test_xnor_conv2d_signed_padding_equals_explicit_pad(pad_value):
    x = _latent(2, 3, 5, 4, seed=30)
    wt = _latent(4, 3, 3, 3, seed=31)
    conv_b = lambda a, b: xg.xnor_conv2d(a, b, None, 1, 1, pad_value=pad_value)  # noqa: E731
    conv_f = lambda a, b: F.conv2d(F.pad(a, (1, 1, 1, 1), value=pad_value), b)  # noqa: E731
    (yb, gb), (yf, gf) = _both(conv_b, conv_f, x, wt, upstream_seed=5)
    assert torch.equal(yb, yf)
    for a, b in zip(gb, gf):
        assert torch.equal(a, b)
    # and it differs from zero padding at the border (the test could fail)
    y0 = xg.xnor_conv2d(_Ste.apply(x), _Ste.apply(wt), None, 1, 1)
    assert not torch.equal(y0, yb)


def test_xnor_conv2d_errors():
    x = torch.ones(1, 4, 5, 5, device=DEVICE)
    w = torch.ones(2, 4, 3, 3, device=DEVICE)
    with pytest.raises(ValueError, match="pad_value must be 0, \\+1 or -1"):
        xg.xnor_conv2d(x, w, pad_value=0.5)
    with pytest.raises(ValueError, match="needs stride 1"):
        xg.xnor_conv2d(x, w, padding="same", stride=2)
    with pytest.raises(ValueError, match="padding must be"):
        xg.xnor_conv2d(x, w, padding="full")
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        xg.xnor_conv2d(x, w, torch.ones(3, device=DEVICE))
    with pytest.raises(ValueError, match="groups=3"):
        xg.xnor_conv2d(x, w, groups=3)
    with pytest.raises(ValueError, match="larger than the padded input"):
        xg.xnor_conv2d(torch.ones(1, 4, 2, 2, device=DEVICE), w)


def test_use_binary_kernels_switch():
    t = torch.ones(2, device=DEVICE)
    assert not xg.binary_kernels_enabled(t)
    with xg.use_binary_kernels():
        assert xg.binary_kernels_enabled(t) == (DEVICE == "cuda")
        with xg.use_binary_kernels(force=True):
            assert xg.binary_kernels_enabled(t)
            with xg.use_binary_kernels(False):
                assert not xg.binary_kernels_enabled(t)
            assert xg.binary_kernels_enabled(t)
    assert not xg.binary_kernels_enabled(t)


def test_routes_only_sign_type_binary_layers():
    class SteSign(torch.nn.Module):
        pass

    class SteHeaviside(torch.nn.Module):
        pass

    class Layer(torch.nn.Module):
        def __init__(self, iq, wq):
            super().__init__()
            self.input_quantizer, self.weight_quantizer = iq, wq

    t = torch.ones(1, device=DEVICE)
    good = Layer(SteSign(), SteSign())
    assert not xg.routes(good, t)  # not enabled
    with xg.use_binary_kernels(force=True):
        assert xg.routes(good, t)
        assert not xg.routes(Layer(None, SteSign()), t)  # float input
        assert not xg.routes(Layer(SteHeaviside(), SteSign()), t)  # {0, 1}, not ±1
