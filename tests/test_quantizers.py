"""Tests of xnorkit.quantizers.

The generic tests iterate QUANTIZERS (every registered quantizer with its default
arguments) plus VARIANTS, so a newly registered quantizer is covered automatically.
"""

import copy
import io
import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from xnorkit import quantizers as Q
from xnorkit.quantizers import QUANTIZERS, get_quantizer, sign0

VARIANTS = [
    Q.SteSign(0.5), Q.SteSign(None), Q.MagnitudeAwareSign(None), Q.SwishSign(2.0),
    Q.SteTern(ternary_weight_networks=True), Q.SteTern(threshold_value=0.3),
    Q.NoOp(precision=32), Q.SteHeaviside(2.0),
    *[Q.DoReFa(k, m) for k in (1, 2, 3, 8, 16, 32) for m in ("activations", "weights")],
]


def all_quantizers():
    return [cls() for cls in QUANTIZERS.values()] + VARIANTS


def qid(q):
    return q.description


ALL = all_quantizers()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP stalls on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# sample inputs including zeros, window edges and large values
EDGE = torch.tensor([-3.0, -1.5, -1.0, -0.75, -0.5, -0.25, -0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 3.0])


def grad_at(fn, values, upstream=None, dtype=torch.float32):
    x = torch.tensor(values, dtype=dtype, requires_grad=True)
    y = fn(x)
    y.backward(torch.ones_like(y) if upstream is None else torch.tensor(upstream, dtype=dtype))
    return y.detach(), x.grad


def check_in_values(q, x, y):
    vals = q.values
    if isinstance(q, Q.MagnitudeAwareSign):
        alpha = x.abs().mean(dim=tuple(range(1, x.dim())), keepdim=True) if x.dim() >= 2 else x.abs().mean()
        ok = torch.isclose(y, alpha) | torch.isclose(y, -alpha)
        assert bool(ok.all())
        return
    if vals is None:
        return
    allowed = torch.tensor(vals, dtype=y.dtype)
    close = torch.isclose(y.reshape(-1, 1), allowed.reshape(1, -1), rtol=0, atol=1e-6).any(dim=1)
    assert bool(close.all()), f"{q.description}: outputs {y.unique().tolist()} not in {vals}"


# ----------------------------------------------------------------------------- registry

def test_registry_aliases_equal_function_names():
    assert set(QUANTIZERS) >= {"ste_sign", "approx_sign", "swish_sign", "magnitude_aware_sign",
                               "ste_heaviside", "ste_tern", "dorefa", "leaky_sign",
                               "bmxnet_sign", "noop"}
    for alias, cls in QUANTIZERS.items():
        assert cls.function.__name__ == alias
        assert cls.alias == alias
        assert getattr(Q, alias) is cls.function
        assert isinstance(get_quantizer(alias), cls)
        assert isinstance(get_quantizer(cls.function), cls)  # a registered function maps back
        assert isinstance(get_quantizer(cls), cls)  # a class is instantiated with defaults


def test_get_quantizer_forms_and_errors():
    assert get_quantizer(None) is None
    m = Q.SteSign(0.3)
    assert get_quantizer(m) is m
    with pytest.raises(ValueError, match=r"unknown quantizer 'ste_sgn'.*ste_sign"):
        get_quantizer("ste_sgn")
    with pytest.raises(TypeError, match="expected None, an alias string"):
        get_quantizer(3)
    with pytest.raises(TypeError, match="nn.Module subclass"):
        get_quantizer(int)
    wrapped = get_quantizer(torch.tanh)
    assert isinstance(wrapped, Q.CallableQuantizer) and wrapped.precision is None
    assert torch.equal(wrapped(EDGE), torch.tanh(EDGE))


def test_register_duplicate_alias_rejected():
    class Dup(Q.Quantizer):
        function = staticmethod(Q.ste_sign)

    with pytest.raises(ValueError, match="already registered"):
        Q.register_quantizer(Dup)
    assert QUANTIZERS["ste_sign"] is Q.SteSign


def test_noop_alias_is_binary_tag():
    assert get_quantizer("noop").precision == 1
    assert Q.NoOp(precision=32).precision == 32


# ----------------------------------------------------------------------------- generic

@pytest.mark.parametrize("q", ALL, ids=qid)
def test_generic_forward(q):
    torch.manual_seed(0)
    for x in (torch.randn(6, 5), torch.randn(3, 2, 3, 3) * 2, EDGE.clone()):
        y = q(x)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all()
        check_in_values(q, x, y)
    assert isinstance(q.precision, int) and 1 <= q.precision <= 32
    assert q.scale_mode in ("none", "per_channel_mean_abs")
    assert q.description.startswith(q.alias + "(")


@pytest.mark.parametrize("q", ALL, ids=qid)
def test_generic_backward_finite(q):
    torch.manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        x = torch.cat([torch.randn(40, dtype=dtype) * 2, EDGE.to(dtype)]).reshape(6, 9).requires_grad_()
        y = q(x)
        g = torch.randn_like(y)
        y.backward(g)
        assert x.grad is not None and x.grad.dtype == dtype
        assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("q", ALL, ids=qid)
def test_generic_module_equals_function(q):
    x = torch.randn(4, 7)
    args = {} if isinstance(q, Q.CallableQuantizer) else q._args()
    if isinstance(q, Q.NoOp):
        args = {}
    assert torch.equal(q(x), type(q).function(x, **args))


@pytest.mark.parametrize("q", ALL, ids=qid)
def test_generic_state_dict_and_pickle_round_trip(q):
    assert q.state_dict() == {}
    fresh = type(q)(**({} if isinstance(q, Q.CallableQuantizer) else q._args()))
    fresh.load_state_dict(q.state_dict())
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    clone = copy.deepcopy(q)
    x = torch.randn(5, 3)
    for other in (fresh, loaded, clone, pickle.loads(pickle.dumps(q))):
        assert other.description == q.description and other.precision == q.precision
        assert torch.equal(other(x), q(x))


@pytest.mark.parametrize("q", ALL, ids=qid)
def test_generic_rejects_integer_tensor(q):
    with pytest.raises(TypeError, match="floating-point tensor"):
        q(torch.ones(3, dtype=torch.int64))


finite_f32 = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=7),
                        elements=st.floats(-1e6, 1e6, width=32, allow_subnormal=True))


@settings(max_examples=40, deadline=None)
@given(finite_f32)
def test_property_outputs_in_declared_set(arr):
    x = torch.from_numpy(arr.copy())
    for q in ALL:
        y = q(x)
        assert torch.isfinite(y).all()
        if isinstance(q, Q.MagnitudeAwareSign) and x.abs().max() == 0:
            continue
        check_in_values(q, x, y)


@settings(max_examples=40, deadline=None)
@given(finite_f32)
def test_property_sign_types_idempotent_and_match_sign0(arr):
    x = torch.from_numpy(arr.copy())
    s0 = torch.where(x >= 0, 1.0, -1.0)
    for q in ALL:
        if q.values == (-1.0, 1.0):
            assert torch.equal(q(x), s0), q.description
            assert torch.equal(q(q(x)), q(x)), q.description
    for q in (Q.LeakySign(), Q.SteTern(), Q.DoReFa(3, "activations"), Q.NoOp()):
        assert torch.equal(q(q(x)), q(x)), q.description


@settings(max_examples=30, deadline=None)
@given(finite_f32)
@example(np.array([0.1, -0.1, 0.5, 3.0], dtype=np.float32))  # float32(0.1) > 0.1: outside the 0.1 window
def test_property_ste_sign_gradient_is_window(arr):
    x = torch.from_numpy(arr.copy())
    for c in (1.0, 0.5, 0.1, 3.0):
        _, g = grad_at(lambda t: Q.ste_sign(t, c), x.tolist())
        # the window is |x| <= c with c the real number, not c rounded to float32 (0.1f > 0.1)
        assert torch.equal(g, (x.double().abs() <= c).float())


@pytest.mark.parametrize("k", range(1, 7))
@pytest.mark.parametrize("mode", ["activations", "weights"])
def test_dorefa_level_count(k, mode):
    x = torch.linspace(-0.5, 1.5, 20001) if mode == "activations" else torch.linspace(-3, 3, 20001)
    y = Q.dorefa(x, k, mode)
    assert y.unique().numel() == 2 ** k
    check_in_values(Q.DoReFa(k, mode), x, y)


# ----------------------------------------------------------------------------- exact values

def test_sign0_convention():
    x = torch.tensor([-0.0, 0.0, 1e-45, -1e-45, -2.0, 5.0, float("inf"), float("-inf")])
    assert sign0(x).tolist() == [1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0]
    assert sign0(x.double()).dtype == torch.float64


def test_ste_sign_values():
    y, g = grad_at(Q.ste_sign, [-1.5, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 1.5])
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1, 1]
    assert g.tolist() == [0, 1, 1, 1, 1, 1, 1, 0]  # window includes |x| == 1
    _, g = grad_at(lambda t: Q.ste_sign(t, clip_value=0.5), [0.5, 0.75, -0.5, -0.51])
    assert g.tolist() == [1, 0, 1, 0]
    _, g = grad_at(lambda t: Q.ste_sign(t, clip_value=None), [5.0, -9.0, 0.0])
    assert g.tolist() == [1, 1, 1]
    _, g = grad_at(Q.ste_sign, [0.5, 2.0, -0.5], upstream=[3.0, 4.0, -2.0])
    assert g.tolist() == [3.0, 0.0, -2.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("c", [1.0, 0.1, 0.5, 1e-3, 7.3])
def test_fused_window_is_inclusive_at_the_edge(dtype, c):
    cd = torch.tensor(c, dtype=dtype)
    inf = torch.tensor(math.inf, dtype=dtype)
    pts = torch.stack([cd, torch.nextafter(cd, inf), torch.nextafter(cd, -inf),
                       torch.nextafter(torch.nextafter(cd, inf), inf)])
    pts = torch.cat([pts, -pts, torch.tensor([0.0], dtype=dtype)])
    g = torch.ones_like(pts)
    fused = Q._window_grad(g, pts, c)
    ref = (pts.double().abs() <= c).to(dtype)
    assert torch.equal(fused, ref)


def test_approx_sign_values():
    y, g = grad_at(Q.approx_sign, [-1.5, -1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1, 1, 1]
    assert g.tolist() == [0, 0, 1, 2, 1.5, 1, 0.5, 0, 0]


def test_swish_sign_gradient_is_derivative_of_signswish():
    for beta in (5.0, 1.0, 10.0):
        pts = [-2.0, -0.7, -0.1, 0.0, 0.2, 0.5, 1.3]
        y, g = grad_at(lambda t: Q.swish_sign(t, beta), pts, dtype=torch.float64)
        x = torch.tensor(pts, dtype=torch.float64, requires_grad=True)
        s = torch.sigmoid(beta * x)
        (2 * s * (1 + beta * x * (1 - s)) - 1).sum().backward()
        assert torch.allclose(g, x.grad, atol=1e-12)
        assert g[3].item() == pytest.approx(beta)
        assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    _, g = grad_at(Q.swish_sign, [1e4, -1e4, 3e38])
    assert torch.isfinite(g).all() and g.abs().max() < 1e-6


def test_magnitude_aware_sign_forward_and_xnor_net_gradient():
    w = torch.tensor([[0.5, -1.5, 0.0], [-0.2, -0.4, 0.6]], requires_grad=True)
    y = Q.magnitude_aware_sign(w)
    a0, a1 = (0.5 + 1.5 + 0.0) / 3, (0.2 + 0.4 + 0.6) / 3
    assert torch.allclose(y, torch.tensor([[a0, -a0, a0], [-a1, -a1, a1]]))
    up = torch.tensor([[1.0, 2.0, -1.0], [3.0, -2.0, 0.5]])
    y.backward(up)
    inside = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    alpha = torch.tensor([[a0], [a1]])
    assert torch.allclose(w.grad, up * (1 / 3 + alpha * inside))
    # conv weights: one alpha per output channel (dim 0)
    w4 = torch.randn(4, 3, 2, 2)
    y4 = Q.magnitude_aware_sign(w4)
    assert torch.allclose(y4.abs().amax(dim=(1, 2, 3)), w4.abs().mean(dim=(1, 2, 3)))
    assert Q.MagnitudeAwareSign().scale_mode == "per_channel_mean_abs"


def test_ste_heaviside_values():
    y, g = grad_at(Q.ste_heaviside, [-1.5, -0.1, -0.0, 0.0, 0.3, 1.0, 1.2])
    assert y.tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert g.tolist() == [0, 1, 1, 1, 1, 1, 0]


def test_ste_tern_values():
    y, g = grad_at(lambda t: Q.ste_tern(t, threshold_value=0.3), [-2.0, -0.3, -0.29, 0.0, 0.29, 0.3, 0.9])
    assert y.tolist() == [-1, -1, 0, 0, 0, 1, 1]  # |x| == threshold maps to +-1
    assert g.tolist() == [0, 1, 1, 1, 1, 1, 1]
    x = torch.tensor([1.0, -1.0, 0.5, 0.1])  # TWN: threshold 0.7 * mean|x| = 0.4375
    y = Q.ste_tern(x, ternary_weight_networks=True)
    assert y.tolist() == [1, -1, 1, 0]


def test_dorefa_values():
    y, g = grad_at(lambda t: Q.dorefa(t, 2, "activations"), [-1.0, 0.1, 0.2, 0.5, 0.9, 2.0])
    assert torch.allclose(y, torch.tensor([0, 0, 1 / 3, 2 / 3, 1, 1]))  # 0.5*3 = 1.5 rounds up
    assert g.tolist() == [1] * 6  # BMXNet: no clip mask for k > 1
    y, g = grad_at(lambda t: Q.dorefa(t, 1, "activations"), [-0.6, -0.5, 0.0, 0.5, 0.6])
    assert y.tolist() == [-1, -1, 1, 1, 1] and g.tolist() == [0, 1, 1, 1, 0]
    y, g = grad_at(lambda t: Q.dorefa(t, 32, "activations"), [-1.0, 0.123, 1.5])
    assert torch.allclose(y, torch.tensor([0.0, 0.123, 1.0])) and g.tolist() == [1, 1, 1]
    w = torch.tensor([-2.0, -0.3, 0.0, 0.4, 1.0])
    t = torch.tanh(w)
    expected = 2 * torch.floor((t / (2 * t.abs().max()) + 0.5) * 3 + 0.5) / 3 - 1
    y, g = grad_at(lambda v: Q.dorefa(v, 2, "weights"), w.tolist())
    assert torch.allclose(y, expected) and g.tolist() == [1] * 5
    assert y[0].item() == -1.0
    y, g = grad_at(lambda v: Q.dorefa(v, 1, "weights"), [-0.0, -3.0, 2.0])
    assert y.tolist() == [1, -1, 1] and g.tolist() == [1, 1, 1]
    assert torch.equal(Q.dorefa(w, 32, "weights"), w)
    assert torch.equal(Q.dorefa(torch.zeros(3), 3, "weights"), torch.zeros(3) + 2 * 4 / 7 - 1)


def test_leaky_sign_values():
    y, g = grad_at(Q.leaky_sign, [-2.0, -0.0, 0.0, 0.5, 3.0], upstream=[3.0, -5.0, 0.5, -0.25, 2.0])
    assert y.tolist() == [-1, 0, 0, 1, 1]
    assert g.tolist() == [1.0, -1.0, 0.5, -0.25, 1.0]  # gradient value clipped, not masked by |x|


def test_bmxnet_sign_values():
    y, g = grad_at(Q.bmxnet_sign, [-0.6, -0.5, 0.0, 0.5, 0.6])
    assert y.tolist() == [-1, -1, 1, 1, 1] and g.tolist() == [0, 1, 1, 1, 0]


def test_noop_values():
    y, g = grad_at(Q.noop, [-2.0, 0.25, 7.0], upstream=[3.0, -1.0, 9.0])
    assert y.tolist() == [-2.0, 0.25, 7.0] and g.tolist() == [3.0, -1.0, 9.0]


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("k", [0, 33, -1])
def test_bit_width_out_of_range(k):
    with pytest.raises(ValueError, match=rf"k_bit must be in 1..32, got {k}"):
        Q.dorefa(torch.zeros(2), k)
    with pytest.raises(ValueError, match="1..32"):
        Q.DoReFa(k)
    with pytest.raises(ValueError, match="1..32"):
        Q.NoOp(precision=k)


def test_argument_errors():
    with pytest.raises(TypeError, match="k_bit must be an int"):
        Q.DoReFa(2.0)
    with pytest.raises(TypeError, match="k_bit must be an int"):
        Q.DoReFa(True)
    with pytest.raises(ValueError, match="mode must be one of"):
        Q.DoReFa(2, "acts")
    with pytest.raises(ValueError, match="clip_value must be a positive finite number, got 0"):
        Q.ste_sign(torch.zeros(2), 0)
    with pytest.raises(ValueError, match="clip_value"):
        Q.SteSign(-1.0)
    with pytest.raises(ValueError, match="beta"):
        Q.SwishSign(0.0)
    with pytest.raises(ValueError, match="threshold_value"):
        Q.SteTern(threshold_value=-0.1)
    with pytest.raises(TypeError, match="expected a torch.Tensor, got list"):
        Q.ste_sign([1.0, 2.0])
    with pytest.raises(TypeError, match="fn must be callable"):
        Q.CallableQuantizer(3)
