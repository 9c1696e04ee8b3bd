"""Bop: hand-computed traces (flip / no flip / tie at tau), binarization, errors, schedules.

All numbers are dyadic (powers of two and their sums), so float32 arithmetic is exact and the
traces are compared with torch.equal.
"""

import pytest
import torch
from torch import nn

from xnorkit.optim import Bop, Constant, init_binary_, is_binary_param, mark_binary


def _param(values, dtype=torch.float32):
    return mark_binary(nn.Parameter(torch.tensor(values, dtype=dtype)))


def test_three_step_trace_flip_noflip_tie():
    # tau = 1/4, gamma = 1/2. Columns:
    #  A  w=+1, g=1,1,1          m=.5,.75,.875      flips at step 1 (w*m=.5 > .25), then stays
    #  B  w=-1, g=-1/4,1/4,1/4   m=-.125,.0625,.15625  |w*m| <= .125 < tau: never flips
    #  C  w=-1, g=-1/2,-1/2,0    m=-.25,-.375,-.1875   step 1 w*m == tau exactly: KEEPS -1
    #                                                 (seed 004 set ties to +1); flips at step 2
    #  D  w=0 -> +1, g=-1,-1,1   m=-.5,-.75,.125       w*m < 0, then .125 < tau: stays +1
    #  E  w=-0.0 -> +1, g=1,-1,-1  m=.5,-.25,-.625     flip to -1; tie (w*m=.25) keeps -1; flip to +1
    w = _param([0.3, -0.7, -2.0, 0.0, -0.0])
    opt = Bop([w], threshold=0.25, gamma=0.5)
    grads = [[1.0, -0.25, -0.5, -1.0, 1.0],
             [1.0, 0.25, -0.5, -1.0, -1.0],
             [1.0, 0.25, 0.0, 1.0, -1.0]]
    want_m = [[0.5, -0.125, -0.25, -0.5, 0.5],
              [0.75, 0.0625, -0.375, -0.75, -0.25],
              [0.875, 0.15625, -0.1875, 0.125, -0.625]]
    want_w = [[-1.0, -1.0, -1.0, 1.0, -1.0],
              [-1.0, -1.0, 1.0, 1.0, -1.0],
              [-1.0, -1.0, 1.0, 1.0, 1.0]]
    for g, m, wt in zip(grads, want_m, want_w):
        w.grad = torch.tensor(g)
        opt.step()
        assert torch.equal(opt.state[w]["exp_avg"], torch.tensor(m))
        assert torch.equal(w.detach(), torch.tensor(wt))
    assert opt.param_groups[0]["iterations"] == 3


def test_tie_at_zero_threshold_keeps_weights():
    # tau = 0 and zero gradient: w*m == 0 == tau for every weight, nothing may change
    # (the seed's sign(-sign(w*m - tau)*w) formula would have set every weight to +1).
    w = _param([-1.0, 1.0, -1.0, -1.0])
    opt = Bop([w], threshold=0.0, gamma=1.0)
    for _ in range(3):
        w.grad = torch.zeros(4)
        opt.step()
    assert torch.equal(w.detach(), torch.tensor([-1.0, 1.0, -1.0, -1.0]))


def test_first_step_binarizes_all_params_even_without_grad():
    a = _param([0.2, -0.3, 0.0])
    b = _param([[-5.0, 0.0], [3.0, -1e-30]])
    opt = Bop([a, b], threshold=10.0, gamma=0.5)  # tau too large to flip anything
    a.grad = torch.ones(3)
    opt.step()  # b has no grad but is binarized too
    assert torch.equal(a.detach(), torch.tensor([1.0, -1.0, 1.0]))
    assert torch.equal(b.detach(), torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))
    assert "exp_avg" in opt.state[b] and torch.equal(opt.state[b]["exp_avg"], torch.zeros(2, 2))


def test_init_binary_sets_sign0_and_tags():
    p = nn.Parameter(torch.tensor([0.5, -0.5, 0.0, -0.0]))
    assert not is_binary_param(p)
    init_binary_([p])
    assert is_binary_param(p)
    assert torch.equal(p.detach(), torch.tensor([1.0, -1.0, 1.0, 1.0]))


def test_weights_stay_in_pm1_under_random_gradients():
    torch.manual_seed(0)
    w = _param(torch.randn(64).tolist())
    opt = Bop([w], threshold=1e-3, gamma=0.1)
    flips = 0
    for i in range(20):
        before = w.detach().clone()
        w.grad = torch.randn(64) + 0.5
        opt.step()
        if i > 0:  # step 0 also binarizes; count flips from then on
            flips += int((before != w.detach()).sum())
        assert set(w.detach().unique().tolist()) <= {-1.0, 1.0}
    assert flips > 0


def test_strict_rejects_non_binary_parameter():
    p = nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="non-binary parameter"):
        Bop([p])
    Bop([p], strict=False)  # allowed when asked


def test_strict_rejects_non_binary_in_added_group():
    opt = Bop([_param([1.0])])
    with pytest.raises(ValueError, match="non-binary parameter"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))]})


@pytest.mark.parametrize("kwargs, msg", [
    ({"threshold": -1e-8}, "threshold must be >= 0"),
    ({"gamma": 0.0}, r"gamma must be in \(0, 1\]"),
    ({"gamma": 1.5}, r"gamma must be in \(0, 1\]"),
    ({"gamma": -0.1}, r"gamma must be in \(0, 1\]"),
    ({"threshold": float("nan")}, "finite"),
])
def test_bad_hyperparameters(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        Bop([_param([1.0])], **kwargs)


def test_non_numeric_hyperparameter_is_a_type_error():
    with pytest.raises(TypeError, match="gamma"):
        Bop([_param([1.0])], gamma="fast")


def test_integer_parameter_rejected():
    p = torch.zeros(3, dtype=torch.int32)
    mark_binary(p)
    with pytest.raises(TypeError, match="floating point"):
        Bop([p])


def test_schedule_out_of_domain_raises_at_that_iteration():
    w = _param([1.0, -1.0])
    opt = Bop([w], threshold=0.0, gamma=lambda t: 0.5 if t < 2 else 2.0)
    for _ in range(2):
        w.grad = torch.ones(2)
        opt.step()
    w.grad = torch.ones(2)
    with pytest.raises(ValueError, match="gamma must be in .* at iteration 2"):
        opt.step()


def test_scheduled_gamma_and_threshold_trace():
    # gamma_t = 1/2, 1/4, 1/8; tau_t = 1, 1/4, 1/4 (steps 0, 1, 2); one weight, w=-1, g=-1.
    # m1 = -1/2 (w*m = .5 <= 1: keep)   m2 = -1/2 + 1/4*(-1/2) = -5/8 (w*m = .625 > .25: flip)
    # m3 = -5/8 + 1/8*(-1+5/8) = -43/64 (w=+1, w*m < 0: keep)
    w = _param([-1.0])
    gammas = [0.5, 0.25, 0.125]
    opt = Bop([w], threshold=lambda t: 1.0 if t == 0 else 0.25, gamma=lambda t: gammas[t])
    want = [(-0.5, -1.0), (-0.625, 1.0), (-43 / 64, 1.0)]
    for m, wt in want:
        assert opt.current_hyperparameters()["gamma"] == gammas[opt.param_groups[0]["iterations"]]
        w.grad = torch.tensor([-1.0])
        opt.step()
        assert opt.state[w]["exp_avg"].item() == m
        assert w.item() == wt


def test_schedule_object_and_group_override():
    a, b = _param([1.0]), _param([1.0])
    opt = Bop([{"params": [a]}, {"params": [b], "gamma": Constant(1.0)}], threshold=0.0, gamma=0.5)
    a.grad = torch.tensor([1.0])
    b.grad = torch.tensor([1.0])
    opt.step()
    assert opt.state[a]["exp_avg"].item() == 0.5
    assert opt.state[b]["exp_avg"].item() == 1.0


def test_closure_and_grad_none_skip():
    w = _param([1.0, -1.0])
    opt = Bop([w], threshold=0.0, gamma=1.0)

    def closure():
        w.grad = torch.tensor([1.0, 1.0])
        return torch.tensor(3.0)

    assert opt.step(closure).item() == 3.0
    assert torch.equal(w.detach(), torch.tensor([-1.0, -1.0]))  # w*m = 1 > 0 flips the first
    w.grad = None
    opt.step()  # no gradient: nothing changes, the iteration still counts
    assert torch.equal(w.detach(), torch.tensor([-1.0, -1.0]))
    assert opt.param_groups[0]["iterations"] == 2


def test_sparse_gradient_rejected():
    w = _param([1.0, -1.0])
    opt = Bop([w])
    w.grad = torch.tensor([1.0, 0.0]).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_float64_and_state_dict_round_trip():
    w = _param([0.5, -0.5, 0.25], dtype=torch.float64)
    opt = Bop([w], threshold=0.125, gamma=0.5)
    w.grad = torch.tensor([0.5, 0.25, -1.0], dtype=torch.float64)
    opt.step()
    sd = opt.state_dict()
    w2 = _param(w.detach().tolist(), dtype=torch.float64)
    opt2 = Bop([w2], threshold=0.125, gamma=0.5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["iterations"] == 1
    for o, p in ((opt, w), (opt2, w2)):
        p.grad = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
        o.step()
    assert torch.equal(w, w2)
    assert torch.equal(opt.state[w]["exp_avg"], opt2.state[w2]["exp_avg"])
    assert opt.state[w]["exp_avg"].dtype == torch.float64
