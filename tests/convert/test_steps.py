"""Threshold folding (seeds §9 item 4): for random XNOR-Net scales, biases, output scales and
BatchNorm statistics -- negative and zero gammas included -- the integer threshold rule equals
PyTorch's float32 sign of the layer for *every* accumulator value; max-pool before and after
the sign agree; float thresholds reproduce sign(BN(x)) on every float tested; BatchNorm's
affine form matches ATen bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xnorkit.convert.ir import Step
from xnorkit.convert.steps import (INT32_MIN, compose_affine, fit_stage, float_thresholds, integer_thresholds,
                                   monotone_direction)


def random_chain(rng, c, with_act=None):
    gamma = rng.normal(size=c).astype(np.float32)
    gamma[0] = 0.0
    gamma[1] = -abs(gamma[1]) - 0.1
    steps = [Step("scale", value=np.abs(rng.normal(size=c)).astype(np.float32) + 0.01),  # XNOR-Net alpha
             Step("bias", value=rng.normal(size=c).astype(np.float32) * 3),
             Step("scale", value=np.array([rng.uniform(0.1, 2)], np.float32)),  # learned output scale
             Step.bn(gamma, rng.normal(size=c).astype(np.float32), rng.normal(size=c).astype(np.float32) * 5,
                     rng.uniform(0.1, 4, c).astype(np.float32), 1e-3)]
    if with_act:
        steps.append(with_act)
    return steps


def torch_layer_sign(steps, acc: np.ndarray) -> np.ndarray:
    """sign0 of the chain as PyTorch modules compute it on a 4-D tensor (NCHW) -> bits."""
    c = steps[0].value.size
    x = torch.from_numpy(acc.astype(np.float32))[:, :, None, None].expand(-1, c, 1, 1).contiguous()
    for s in steps:
        if s.kind == "scale":
            x = x * torch.from_numpy(s.value).reshape(1, -1, 1, 1) if s.value.size > 1 else x * float(s.value[0])
        elif s.kind == "bias":
            x = x + torch.from_numpy(s.value).reshape(1, -1, 1, 1)
        elif s.kind == "bn":
            bn = torch.nn.BatchNorm2d(c, eps=s.eps).eval()
            with torch.no_grad():
                bn.weight.copy_(torch.from_numpy(s.gamma))
                bn.bias.copy_(torch.from_numpy(s.beta))
                bn.running_mean.copy_(torch.from_numpy(s.mean))
                bn.running_var.copy_(torch.from_numpy(s.var))
                x = bn(x)
        elif s.act == "hardtanh":
            x = F.hardtanh(x, s.lo, s.hi)
        elif s.act == "relu":
            x = F.relu(x)
        elif s.act == "prelu":
            x = F.prelu(x, torch.from_numpy(s.alpha))
    return (~(x >= 0)).numpy()[:, :, 0, 0]


@pytest.mark.parametrize("act", [None, Step.activation("hardtanh"), Step.activation("relu"),
                                 Step.activation("prelu", alpha=np.full(24, 0.25, np.float32)),
                                 Step.activation("prelu", alpha=np.linspace(-1, 1, 24).astype(np.float32))])
@pytest.mark.parametrize("k", [1, 9, 64, 577])
def test_integer_thresholds_equal_pytorch_for_every_accumulator(k, act):
    rng = np.random.default_rng(k)
    c = 24
    steps = random_chain(rng, c, act)
    T, flip, ok, _ = integer_thresholds(steps, k, c)
    acc = np.arange(-k, k + 1)[:, None].repeat(c, 1)
    want = torch_layer_sign(steps, acc)
    rule = (acc < T[None, :].astype(np.int64)) ^ flip[None, :].astype(bool)
    assert ok.all()
    np.testing.assert_array_equal(rule, want)
    assert T[0] == INT32_MIN  # gamma = 0: constant channel
    if act is None:
        assert flip[1] == 1  # negative gamma: decreasing
    # max-pool commutes: sign(g(max z)) == pool_{AND or OR by flip}(sign(g(z)))
    z = rng.integers(-k, k + 1, (50, 4, c))
    pooled_first = torch_layer_sign(steps, z.max(axis=1))
    bits = (z < T.astype(np.int64)) ^ flip.astype(bool)
    pooled_after = np.where(flip.astype(bool), bits.any(axis=1), bits.all(axis=1))
    np.testing.assert_array_equal(pooled_first, pooled_after)


def test_non_monotone_chain_is_reported_not_folded():
    c = 4
    steps = [Step("bias", value=np.array([-5, 5, 0.5, -0.5], np.float32)),
             Step.activation("prelu", alpha=np.full(c, -1.0, np.float32)),
             Step("bias", value=np.array([-1, -1, -1, -1], np.float32))]
    assert monotone_direction(steps, c) is None
    T, flip, ok, _ = integer_thresholds(steps, 10, c)
    # |acc + b| - 1 >= 0 is true on both sides of -b: not of the (acc < T) XOR flip form
    assert not ok.all()


def test_float_thresholds_match_pytorch_on_random_and_edge_floats():
    rng = np.random.default_rng(3)
    c = 16
    steps = [Step.bn(*(rng.normal(size=(4, c)).astype(np.float32) * [[1], [1], [3], [0]] + [[0], [0], [0], [1.5]]),
                     eps=1e-5), Step.activation("hardtanh", -1, 1)]
    steps[0].gamma[0] = 0.0
    steps[0].gamma[1] = -0.7
    t, flip = float_thresholds(steps, c)
    xs = np.concatenate([rng.normal(size=(4000, c)) * 10, rng.normal(size=(200, c)) * 1e-3,
                         np.broadcast_to(t, (1, c)), np.nextafter(np.broadcast_to(t, (1, c)), -np.inf),
                         np.nextafter(np.broadcast_to(t, (1, c)), np.inf)]).astype(np.float32)
    xs = np.where(np.isfinite(xs), xs, 0).astype(np.float32)
    bn = torch.nn.BatchNorm1d(c, eps=1e-5).eval()
    s = steps[0]
    with torch.no_grad():
        for p, v in ((bn.weight, s.gamma), (bn.bias, s.beta), (bn.running_mean, s.mean), (bn.running_var, s.var)):
            p.copy_(torch.from_numpy(v))
        want = ~(F.hardtanh(bn(torch.from_numpy(xs))) >= 0).numpy()
    got = ~(xs >= t) ^ flip.astype(bool)
    np.testing.assert_array_equal(got, want)
    assert flip[1] == 1 and np.isneginf(t[0])


def test_bn_affine_matches_aten_bit_for_bit():
    rng = np.random.default_rng(5)
    c = 37
    s = Step.bn(rng.normal(size=c), rng.normal(size=c), rng.normal(size=c), rng.uniform(0.1, 3, c), 1e-5)
    a, b = s.bn_affine()
    x = (rng.normal(size=(64, c)) * 10).astype(np.float32)
    bn = torch.nn.BatchNorm1d(c).eval()
    with torch.no_grad():
        for p, v in ((bn.weight, s.gamma), (bn.bias, s.beta), (bn.running_mean, s.mean), (bn.running_var, s.var)):
            p.copy_(torch.from_numpy(v))
        want = bn(torch.from_numpy(x)).numpy()
    fused = (x.astype(np.float64) * a + b).astype(np.float32)  # one rounding (ATen uses an FMA)
    assert np.abs(fused - want).max() <= np.abs(want).max() * 2e-7
    assert np.mean(fused == want) > 0.999


def test_fit_stage_packs_and_splits():
    c = 3
    st = [Step("scale", value=np.array([2, 3, 4], np.float32)), Step("bias", value=np.array([1, 1, 1], np.float32)),
          Step.activation("relu"), Step("scale", value=np.array([0.5], np.float32)), Step.activation("relu6")]
    stage, rest = fit_stage(st, c)
    assert stage["act"] == "relu" and stage["scale"].tolist() == [2, 3, 4] and stage["bias"].tolist() == [1, 1, 1]
    assert stage["post_scale"].tolist() == [0.5] * 3 and stage["post_bias"] is None
    assert [s.act for s in rest] == ["relu6"]
    sc, bi = compose_affine([Step("bias", value=np.array([1.0], np.float32)),
                             Step("scale", value=np.array([2, -1, 0], np.float32))], c)
    assert sc.tolist() == [2, -1, 0] and bi.tolist() == [2, -1, 0]
