"""Schedules: Keras formulas at chosen steps, validation, ScheduleLR, serialisation."""

import io
import math
import pickle

import pytest
import torch

from xnorkit.optim import Constant, ExponentialDecay, PolynomialDecay, ScheduleLR, resolve


def test_constant():
    s = Constant(3e-4)
    assert s(0) == s(10**9) == 3e-4


@pytest.mark.parametrize("step, want", [(0, 1e-2), (99, 1e-2), (100, 1e-3), (199, 1e-3),
                                        (250, 1e-4), (1000, 1e-12)])
def test_exponential_staircase(step, want):
    # "x0.1 every 100 epochs" of seed 004 with one step per epoch
    assert ExponentialDecay(1e-2, 100, 0.1)(step) == pytest.approx(want, rel=1e-12)


def test_exponential_continuous_and_fractional_decay_steps():
    s = ExponentialDecay(2.0, 10, 0.25, staircase=False)
    assert s(5) == pytest.approx(2.0 * 0.25 ** 0.5) == 1.0
    assert s(20) == pytest.approx(2.0 / 16)
    # decay_steps = train_samples / batch * epochs need not be an integer
    f = ExponentialDecay(1.0, 2.5, 0.5)
    assert [f(t) for t in (0, 2, 3, 5, 7)] == [1.0, 1.0, 0.5, 0.25, 0.25]


@pytest.mark.parametrize("step, want", [
    (0, 1e-5), (250_000, (1e-5 + 1e-8) / 2), (125_000, 1e-8 + (1e-5 - 1e-8) * 0.75),
    (500_000, 1e-8), (10**7, 1e-8),
])
def test_polynomial_linear_ramp(step, want):
    # bop2ndOrder_CIFAR threshold: 1e-5 -> 1e-8 linearly over 500 epochs of 1000 steps
    assert PolynomialDecay(1e-5, 500_000, 1e-8)(step) == pytest.approx(want, rel=1e-12)


def test_polynomial_increasing_and_power():
    up = PolynomialDecay(1e-7, 100, 1e-2)  # seed 004 ramps sigma upwards
    assert up(50) == pytest.approx((1e-7 + 1e-2) / 2)
    assert up(100) == up(150) == pytest.approx(1e-2)
    sq = PolynomialDecay(1.0, 4, 0.0, power=2)
    assert [sq(t) for t in range(6)] == [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]


@pytest.mark.parametrize("ctor, msg", [
    (lambda: ExponentialDecay(1.0, 0, 0.1), "decay_steps must be > 0"),
    (lambda: ExponentialDecay(1.0, 10, 0.0), "rate must be > 0"),
    (lambda: PolynomialDecay(1.0, -1, 0.0), "decay_steps must be > 0"),
    (lambda: PolynomialDecay(1.0, 10, 0.0, power=0), "power must be > 0"),
    (lambda: Constant(float("inf")), "finite"),
])
def test_bad_schedule_arguments(ctor, msg):
    with pytest.raises(ValueError, match=msg):
        ctor()


def test_bad_steps():
    s = Constant(1.0)
    with pytest.raises(ValueError, match=">= 0"):
        s(-1)
    with pytest.raises(TypeError, match="integer"):
        s(1.5)
    with pytest.raises(TypeError, match="real number"):
        Constant("1e-3")
    assert s(torch.tensor(3)) == 1.0


def test_resolve_numbers_and_callables():
    assert resolve(0.5, 7) == 0.5
    assert resolve(lambda t: t / 2, 7) == 3.5
    with pytest.raises(TypeError, match="lr: schedule .* returned 'x'"):
        resolve(lambda t: "x", 0, "lr")
    with pytest.raises(ValueError, match="finite"):
        resolve(lambda t: math.nan, 0)


def test_pickle_equality_and_weights_only_load():
    scheds = [Constant(1.0), ExponentialDecay(1e-2, 100, 0.1), PolynomialDecay(1e-5, 10, 1e-8, 2.0)]
    assert pickle.loads(pickle.dumps(scheds)) == scheds
    buf = io.BytesIO()
    torch.save({"s": scheds}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["s"]
    assert loaded == scheds and loaded[1](150) == pytest.approx(1e-3)
    assert "ExponentialDecay(initial_value=0.01" in repr(scheds[1])


def test_schedule_lr_sets_lr_to_schedule_value():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=123.0)
    sched = ScheduleLR(opt, ExponentialDecay(0.5, 2, 0.5))
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])  # the LR optimizer update k uses
        w.grad = torch.ones(2)
        opt.step()
        sched.step()
    assert seen == [0.5, 0.5, 0.25, 0.25, 0.125]
    # SGD: w -= lr * 1 for each step
    assert torch.allclose(w.detach(), torch.full((2,), -sum(seen)))


def test_schedule_lr_warmup_from_zero_and_lr_scale():
    w1, w2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w1], "lr_scale": 4.0}, {"params": [w2]}], lr=1.0)
    sched = ScheduleLR(opt, PolynomialDecay(0.0, 4, 1.0))  # 0 -> 1: LambdaLR could not do this
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]
    opt.step()
    sched.step()
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [2.0, 0.5]


def test_schedule_lr_per_group_and_errors():
    w1, w2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w1]}, {"params": [w2]}], lr=1.0)
    ScheduleLR(opt, [Constant(0.1), Constant(0.2)])
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]
    with pytest.raises(ValueError, match="2 schedules for 1 parameter groups"):
        ScheduleLR(torch.optim.SGD([w1], lr=1.0), [Constant(0.1), Constant(0.2)])
    with pytest.raises(TypeError, match="callable"):
        ScheduleLR(torch.optim.SGD([w1], lr=1.0), 0.1)


def test_schedule_lr_state_dict_resume():
    def make():
        w = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([w], lr=1.0)
        return opt, ScheduleLR(opt, ExponentialDecay(1.0, 1, 0.5))

    opt, sched = make()
    for _ in range(3):
        opt.step()
        sched.step()
    opt2, sched2 = make()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for o, s in ((opt, sched), (opt2, sched2)):
        o.step()
        s.step()
    assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"] == 1 / 16
