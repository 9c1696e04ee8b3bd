"""Bop2ndOrder: biased trace, ties, 'code' == biased with tau*gamma/sqrt(sigma), 'adam' values."""

import math

import pytest
import torch
from torch import nn

from xnorkit.optim import Bop2ndOrder, PolynomialDecay, mark_binary


def _param(values, dtype=torch.float32):
    return mark_binary(nn.Parameter(torch.tensor(values, dtype=dtype)))


def test_biased_three_step_trace():
    # tau = 3/4, gamma = 1/2, sigma = 1/4, eps = 0. At step 1 every score is
    # w*sign(g)*gamma/sqrt(sigma) = +-1. Columns (w after sign0):
    #  E1 w=+1, g=1,1,1   m=.5,.75,.875   v=.25,.4375,.578125   score 1 > tau: flip; then < 0
    #  E2 w=-1, g=1,-3,0  m=.5,-1.25,-.625 v=.25,2.4375,1.828125 step 2: 1.25/sqrt(2.4375)=.8006: flip
    #  E3 w=+1, g=-1,2,0  m=-.5,.75,.375  v=.25,1.1875,.890625  step 2: .75/sqrt(1.1875)=.688: keep
    w = _param([0.9, -0.4, 0.0])
    opt = Bop2ndOrder([w], threshold=0.75, gamma=0.5, sigma=0.25, eps=0.0)
    grads = [[1.0, 1.0, -1.0], [1.0, -3.0, 2.0], [1.0, 0.0, 0.0]]
    want_m = [[0.5, 0.5, -0.5], [0.75, -1.25, 0.75], [0.875, -0.625, 0.375]]
    want_v = [[0.25, 0.25, 0.25], [0.4375, 2.4375, 1.1875], [0.578125, 1.828125, 0.890625]]
    want_w = [[-1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]]
    for g, m, v, wt in zip(grads, want_m, want_v, want_w):
        w.grad = torch.tensor(g)
        opt.step()
        assert torch.equal(opt.state[w]["exp_avg"], torch.tensor(m))
        assert torch.equal(opt.state[w]["exp_avg_sq"], torch.tensor(v))
        assert torch.equal(w.detach(), torch.tensor(wt))


@pytest.mark.parametrize("correction", ["none", "code", "adam"])
def test_tie_at_threshold_keeps_weight(correction):
    # gamma = 1/2, sigma = 1/4, g = +-1: m_hat / sqrt(v_hat) = sign(g) exactly for every
    # correction (none: .5/.5; code: (m/.5)/sqrt(v/.25); adam: (m/.5)/sqrt(v/.25)), so with
    # tau = 1 each weight pushing against its gradient sits exactly on the threshold.
    w = _param([-1.0, 1.0, 1.0])
    opt = Bop2ndOrder([w], threshold=1.0, gamma=0.5, sigma=0.25, eps=0.0, correction=correction)
    w.grad = torch.tensor([-1.0, 1.0, -1.0])
    opt.step()
    assert torch.equal(w.detach(), torch.tensor([-1.0, 1.0, 1.0]))
    # just below the threshold the same state flips the first two
    w2 = _param([-1.0, 1.0, 1.0])
    opt2 = Bop2ndOrder([w2], threshold=0.96875, gamma=0.5, sigma=0.25, eps=0.0,
                       correction=correction)
    w2.grad = torch.tensor([-1.0, 1.0, -1.0])
    opt2.step()
    assert torch.equal(w2.detach(), torch.tensor([1.0, -1.0, 1.0]))


def test_zero_gradient_with_eps_never_flips():
    w = _param([1.0, -1.0])
    opt = Bop2ndOrder([w], threshold=0.0, gamma=0.5, sigma=0.5)
    for _ in range(3):
        w.grad = torch.zeros(2)
        opt.step()
    assert torch.equal(w.detach(), torch.tensor([1.0, -1.0]))


@pytest.mark.parametrize("eps", [0.0, 1e-10, 1e-3])
def test_code_correction_equals_biased_with_effective_threshold(eps):
    # Spec seeds.md §7.3: with constant hyperparameters, flip iff
    #   w (m/gamma) / (sqrt(v/sigma) + eps) > tau
    # <=> w m / (sqrt(v) + eps sqrt(sigma)) > tau * gamma / sqrt(sigma)
    tau, gamma, sigma = 0.5, 0.05, 0.01
    gen = torch.Generator().manual_seed(7)
    init = torch.randn(400, generator=gen, dtype=torch.float64)
    grads = [torch.randn(400, generator=gen, dtype=torch.float64) + 0.3 for _ in range(40)]
    a = _param(init.tolist(), torch.float64)
    b = _param(init.tolist(), torch.float64)
    code = Bop2ndOrder([a], threshold=tau, gamma=gamma, sigma=sigma, eps=eps, correction="code")
    biased = Bop2ndOrder([b], threshold=tau * gamma / math.sqrt(sigma), gamma=gamma, sigma=sigma,
                         eps=eps * math.sqrt(sigma), correction="none")
    flips = 0
    for g in grads:
        before = a.detach().clone()
        a.grad, b.grad = g.clone(), g.clone()
        code.step()
        biased.step()
        assert torch.equal(a, b)
        flips += int((before != a.detach()).sum())
    assert 0 < flips  # the comparison is not vacuous
    # and the rescaling matters: the biased rule with the *same* tau behaves differently
    c = _param(init.tolist(), torch.float64)
    plain = Bop2ndOrder([c], threshold=tau, gamma=gamma, sigma=sigma, eps=eps, correction="none")
    for g in grads:
        c.grad = g.clone()
        plain.step()
    assert not torch.equal(a, c)


def test_adam_correction_values_hand_computed():
    # gamma = 1/2, sigma = 1/4, g = 1 then 3:
    # m = .5, 1.75   1 - (1-gamma)^t = .5, .75    -> m_hat = 1, 7/3
    # v = .25, 2.4375   1 - (1-sigma)^t = .25, .4375 -> v_hat = 1, 39/7
    w = _param([-1.0])
    opt = Bop2ndOrder([w], threshold=100.0, gamma=0.5, sigma=0.25, eps=0.0, correction="adam")
    want = [(1.0, 1.0, 0.5, 0.75), (7 / 3, 39 / 7, 0.25, 0.5625)]
    for g, (m_hat, v_hat, gp, sp) in zip([1.0, 3.0], want):
        w.grad = torch.tensor([g])
        opt.step()
        st = opt.state[w]
        assert st["gamma_prod"] == gp and st["sigma_prod"] == sp
        assert st["exp_avg"].item() / (1 - gp) == pytest.approx(m_hat, rel=1e-7)
        assert st["exp_avg_sq"].item() / (1 - sp) == pytest.approx(v_hat, rel=1e-7)


@pytest.mark.parametrize("scheduled", [False, True])
def test_adam_correction_is_unbiased_for_constant_gradient(scheduled):
    # For a constant gradient g, the corrected moments equal g and g^2 at every step, also
    # when gamma and sigma follow a schedule (the correction keeps prod(1 - gamma_s)).
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(50, generator=gen, dtype=torch.float64)
    w = _param(torch.sign(g).tolist(), torch.float64)
    gamma = PolynomialDecay(1e-2, 20, 1e-4) if scheduled else 1e-3
    sigma = PolynomialDecay(1e-3, 20, 1e-1) if scheduled else 1e-2
    opt = Bop2ndOrder([w], threshold=1e9, gamma=gamma, sigma=sigma, correction="adam")
    for t in range(1, 31):
        w.grad = g.clone()
        opt.step()
        st = opt.state[w]
        torch.testing.assert_close(st["exp_avg"] / (1 - st["gamma_prod"]), g, rtol=1e-9, atol=0)
        torch.testing.assert_close(st["exp_avg_sq"] / (1 - st["sigma_prod"]), g * g,
                                   rtol=1e-9, atol=0)
        if not scheduled:
            assert st["gamma_prod"] == pytest.approx((1 - 1e-3) ** t, rel=1e-12)
            assert st["sigma_prod"] == pytest.approx((1 - 1e-2) ** t, rel=1e-12)


def test_adam_correction_flips_where_biased_does_not():
    # w = sign(g): the gradient pushes every weight towards the other sign. Corrected score
    # = |g| / (|g| + eps) ~ 1 > tau; biased score at step 1 = gamma / sqrt(sigma) = 0.01.
    g = torch.tensor([0.5, -2.0, 1e-3])
    a, b = _param(torch.sign(g).tolist()), _param(torch.sign(g).tolist())
    adam = Bop2ndOrder([a], threshold=0.9, gamma=1e-3, sigma=1e-2, correction="adam")
    none = Bop2ndOrder([b], threshold=0.9, gamma=1e-3, sigma=1e-2, correction="none")
    a.grad, b.grad = g.clone(), g.clone()
    adam.step()
    none.step()
    assert torch.equal(a.detach(), -torch.sign(g))
    assert torch.equal(b.detach(), torch.sign(g))


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"correction": "unbiased"}, ValueError, "correction must be one of none, code, adam"),
    ({"sigma": 0.0}, ValueError, r"sigma must be in \(0, 1\]"),
    ({"sigma": 1.01}, ValueError, r"sigma must be in \(0, 1\]"),
    ({"gamma": 2.0}, ValueError, r"gamma must be in \(0, 1\]"),
    ({"threshold": -1.0}, ValueError, "threshold must be >= 0"),
    ({"eps": -1e-10}, ValueError, "eps must be a number >= 0"),
    ({"eps": lambda t: 0.0}, ValueError, "eps must be a number >= 0"),
])
def test_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        Bop2ndOrder([_param([1.0])], **kwargs)


def test_non_binary_parameter_rejected():
    with pytest.raises(ValueError, match="Bop2ndOrder on a non-binary parameter"):
        Bop2ndOrder([nn.Parameter(torch.zeros(2))])


def test_state_dict_resume_with_schedules_and_adam_correction():
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(30, generator=gen) for _ in range(8)]
    kw = dict(threshold=PolynomialDecay(1e-3, 6, 1e-1), gamma=PolynomialDecay(1e-1, 6, 1e-2),
              sigma=0.1, correction="adam")

    def run(steps, w, opt):
        for g in steps:
            w.grad = g.clone()
            opt.step()

    w = _param(torch.randn(30, generator=gen).tolist())
    w_init = w.detach().clone()
    opt = Bop2ndOrder([w], **kw)
    run(grads, w, opt)

    v = _param(w_init.tolist())
    o1 = Bop2ndOrder([v], **kw)
    run(grads[:4], v, o1)
    sd = o1.state_dict()
    v2 = _param(v.detach().tolist())
    o2 = Bop2ndOrder([v2], threshold=1.0, gamma=0.5, sigma=0.5, correction="none")  # overwritten
    o2.load_state_dict(sd)
    assert o2.param_groups[0]["correction"] == "adam"
    run(grads[4:], v2, o2)
    assert torch.equal(w, v2)
    for k in ("exp_avg", "exp_avg_sq", "gamma_prod", "sigma_prod"):
        a, b = opt.state[w][k], o2.state[v2][k]
        assert (torch.equal(a, b) if torch.is_tensor(a) else a == b), k
