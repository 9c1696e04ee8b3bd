"""Routing: binary weights to Bop, the rest to Adam; one object; exact resume."""

import copy
import functools
import io

import pytest
import torch
from torch import nn

from xnorkit.optim import (
    Bop,
    Bop2ndOrder,
    CaseOptimizer,
    ExponentialDecay,
    PolynomialDecay,
    binary_parameters,
    is_binary_param,
    make_optimizer,
    mark_binary,
    named_binary_parameters,
)


def _ids(opt):
    return [id(p) for g in opt.param_groups for p in g["params"]]


def test_binary_parameters_use_export_spec_only(layers):
    net = layers.make_net()
    names = [n for n, _ in named_binary_parameters(net)]
    # layer 2 declares weight_bits == 8; biases, BN and the plain Linear are float
    assert names == ["0.weight", "3.weight"]
    assert all(is_binary_param(p) for p in binary_parameters(net))
    assert not is_binary_param(net[2].weight) and not is_binary_param(net[0].bias)


def test_make_optimizer_claims_each_parameter_exactly_once(layers):
    net = layers.make_net()
    opt = make_optimizer(net, binary="bop", binary_kwargs={"threshold": 1e-6, "gamma": 1e-3},
                         float="adam", float_kwargs={"lr": 1e-2})
    bop, adam = opt.slots
    assert isinstance(bop, Bop) and isinstance(adam, torch.optim.Adam)
    assert sorted(_ids(bop)) == sorted(id(p) for p in binary_parameters(net))
    all_ids = _ids(bop) + _ids(adam)
    assert len(all_ids) == len(set(all_ids)) == len(list(net.parameters()))
    assert [g["kind"] for g in opt.param_groups] == ["binary", "float"]
    assert opt.optimizer_for(net[0].weight) is bop and opt.optimizer_for(net[1].weight) is adam
    assert opt.assignment == {n: (0 if n in ("0.weight", "3.weight") else 1)
                              for n, _ in net.named_parameters()}
    # init_binary: binary weights are +-1 before any step, float weights untouched
    assert set(net[0].weight.unique().tolist()) <= {-1.0, 1.0}
    assert len(net[2].weight.unique()) > 2


def test_step_updates_both_sides(layers):
    net = layers.make_net()
    opt = make_optimizer(net, binary="bop", binary_kwargs={"threshold": 0.0, "gamma": 1.0},
                         float_kwargs={"lr": 1e-2})
    w_float = net[2].weight.detach().clone()
    w_bin = net[0].weight.detach().clone()
    x = torch.randn(16, 6)
    opt.zero_grad()
    net(x).square().sum().backward()
    g = net[0].weight.grad.clone()
    opt.step()
    assert not torch.equal(net[2].weight, w_float)
    # gamma = 1, tau = 0: m = g, flip exactly where w * g > 0
    assert torch.equal(net[0].weight.detach(), torch.where(w_bin * g > 0, -w_bin, w_bin))
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_case_optimizer_conflicts_and_unclaimed():
    a = mark_binary(nn.Parameter(torch.ones(2)))
    b = nn.Parameter(torch.zeros(2))
    adam = functools.partial(torch.optim.Adam, lr=1e-3)
    with pytest.raises(ValueError, match=r"'params\[0\]' .* claimed by cases \[0, 1\]"):
        CaseOptimizer([a, b], (is_binary_param, Bop), (lambda p: p.dim() == 1, adam))
    with pytest.raises(ValueError, match=r"'params\[1\]' .* claimed by no case"):
        CaseOptimizer([a, b], (is_binary_param, Bop))
    with pytest.raises(ValueError, match="more than once"):
        CaseOptimizer([a, a], (is_binary_param, Bop))
    with pytest.raises(TypeError, match="case 0 must be a"):
        CaseOptimizer([a], is_binary_param)
    with pytest.raises(TypeError, match="expected a torch.optim.Optimizer"):
        CaseOptimizer([a], (is_binary_param, lambda ps: "nope"))
    ok = CaseOptimizer([("a", a), ("b", b)], (is_binary_param, Bop), default_optimizer=adam)
    assert ok.assignment == {"a": 0, "b": 1}


def test_empty_case_has_no_optimizer():
    b = nn.Parameter(torch.zeros(2))
    opt = CaseOptimizer([b], (is_binary_param, Bop),
                        default_optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    assert opt.slots[0] is None and len(opt.optimizers) == 1
    b.grad = torch.ones(2)
    opt.step()
    assert torch.allclose(b.detach(), torch.full((2,), -0.1))


def test_bop_without_binary_weights_is_an_error():
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    with pytest.raises(ValueError, match="no binary weights"):
        make_optimizer(net, binary="bop")
    opt = make_optimizer(net, binary="bop", require_binary=False)
    assert opt.slots[0] is None


def test_bop_on_float_params_is_an_error(layers):
    net = layers.make_net()
    with pytest.raises(ValueError, match="Bop on a non-binary parameter"):
        Bop(net.parameters())
    with pytest.raises(ValueError, match="only trains binary weights"):
        make_optimizer(net, float="bop")


@pytest.mark.parametrize("kwargs, msg", [
    ({"binary": "lion"}, "unknown binary optimizer 'lion'"),
    ({"float": "rmsprop"}, "unknown float optimizer 'rmsprop'"),
    ({"binary": "bop", "glorot_lr_scale": True}, "latent-weight training"),
    ({"binary": "adam", "clip_latent": -1.0}, "clip_latent must be a positive number"),
    ({"binary": "bop", "binary_kwargs": {"gamma": 3.0}}, r"gamma must be in \(0, 1\]"),
])
def test_make_optimizer_bad_arguments(layers, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        make_optimizer(layers.make_net(), **kwargs)


def test_latent_mode_glorot_scale_and_clip(layers):
    net = layers.make_net()
    opt = make_optimizer(net, binary="adam", binary_kwargs={"lr": 0.01}, float_kwargs={"lr": 0.02},
                         glorot_lr_scale=True, clip_latent=1.0)
    latent = [g for g in opt.param_groups if g["kind"] == "latent"]
    assert [g["lr"] for g in latent] == pytest.approx([0.01 * ((6 + 8) / 1.5) ** 0.5,
                                                       0.01 * ((8 + 5) / 1.5) ** 0.5])
    assert [g["lr"] for g in opt.param_groups if g["kind"] == "float"] == [0.02]
    with torch.no_grad():
        net[0].weight.mul_(5.0)
    x = torch.randn(16, 6)
    net(x).sum().backward()
    opt.step()
    assert net[0].weight.abs().max() <= 1.0 and net[3].weight.abs().max() <= 1.0
    assert len(net[0].weight.unique()) > 2  # latent weights stay real-valued


def test_scheduled_lr_is_stepped_with_the_case_optimizer(layers):
    net = layers.make_net()
    opt = make_optimizer(net, binary="bop", float_kwargs={"lr": ExponentialDecay(0.1, 1, 0.5)})
    adam = opt.slots[1]
    lrs = []
    for _ in range(3):
        lrs.append(adam.param_groups[0]["lr"])
        net(torch.randn(4, 6)).sum().backward()
        opt.step()
        opt.zero_grad()
    assert lrs == [0.1, 0.05, 0.025]
    assert len(opt.state_dict()["schedulers"]) == 1


def _train(net, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()


CONFIGS = {
    "bop-schedules": dict(binary="bop",
                          binary_kwargs={"threshold": ExponentialDecay(1e-4, 3, 0.1),
                                         "gamma": PolynomialDecay(0.1, 8, 0.01)},
                          float_kwargs={"lr": PolynomialDecay(1e-2, 8, 1e-3)}),
    "bop2-adam-corr": dict(binary="bop2ndorder",
                           binary_kwargs={"threshold": 0.5, "gamma": 0.05, "sigma": 0.1,
                                          "correction": "adam"},
                           float="adamw", float_kwargs={"lr": 1e-2}),
    "latent": dict(binary="adam", binary_kwargs={"lr": 1e-2}, glorot_lr_scale=True,
                   clip_latent=1.0, float="sgd", float_kwargs={"lr": 1e-2, "momentum": 0.9}),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_round_trip_resumes_identically(layers, name):
    cfg = CONFIGS[name]
    gen = torch.Generator().manual_seed(5)
    batches = [(torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen))
               for _ in range(8)]
    ref = layers.make_net(seed=1)
    ref_opt = make_optimizer(ref, **cfg)
    _train(ref, ref_opt, batches)

    net = layers.make_net(seed=1)
    opt = make_optimizer(net, **cfg)
    _train(net, opt, batches[:4])
    buf = io.BytesIO()
    torch.save({"model": net.state_dict(), "optim": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)  # schedules are allow-listed

    resumed = layers.make_net(seed=2)  # different init, overwritten by the checkpoint
    resumed.load_state_dict(ckpt["model"])
    ropt = make_optimizer(resumed, **cfg)
    ropt.load_state_dict(ckpt["optim"])
    _train(resumed, ropt, batches[4:])

    for (n, a), b in zip(ref.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n
    def signs(m):
        return [p.detach() < 0 for p in binary_parameters(m)]

    flips = sum(int((a != b).sum()) for a, b in zip(signs(ref), signs(layers.make_net(seed=1))))
    assert flips > 0  # some binary weights changed sign during the run
    assert [g.get("iterations") for g in ref_opt.param_groups] == \
           [g.get("iterations") for g in ropt.param_groups]


def test_load_state_dict_layout_mismatch(layers):
    net = layers.make_net()
    opt = make_optimizer(net, binary="bop")
    sd = opt.state_dict()
    float_only = make_optimizer(nn.Linear(2, 2), binary="bop", require_binary=False)
    with pytest.raises(ValueError, match="slot 0 is used in the checkpoint"):
        float_only.load_state_dict(sd)
    other = make_optimizer(layers.make_net(), binary="bop",
                           float_kwargs={"lr": ExponentialDecay(1.0, 1, 0.5)})
    with pytest.raises(ValueError, match="0 schedulers, this optimizer has 1"):
        other.load_state_dict(sd)
    with pytest.raises(ValueError, match="expected a dict with 'optimizers'"):
        opt.load_state_dict({"state": {}})


def test_deepcopy_drops_tag_but_make_optimizer_retags(layers):
    net = layers.make_net()
    make_optimizer(net)
    clone = copy.deepcopy(net)
    opt = make_optimizer(clone)
    assert isinstance(opt.slots[0], Bop) and is_binary_param(clone[0].weight)


def test_bop2ndorder_routing_and_custom_factory(layers):
    net = layers.make_net()
    opt = make_optimizer(net, binary="bop2ndorder", binary_kwargs={"correction": "code"},
                         float=lambda ps: torch.optim.RMSprop(ps, lr=1e-3))
    assert isinstance(opt.slots[0], Bop2ndOrder)
    assert opt.slots[0].param_groups[0]["correction"] == "code"
    assert isinstance(opt.slots[1], torch.optim.RMSprop)
    assert "Bop2ndOrder (2 tensors)" in repr(opt)


def test_with_xnorkit_nn_layers_if_available():
    xnn = pytest.importorskip("xnorkit.nn")
    if not hasattr(xnn, "QuantLinear"):
        pytest.skip("xnorkit.nn.QuantLinear not written yet")
    net = nn.Sequential(
        xnn.QuantLinear(6, 8, input_quantizer=None, weight_quantizer="ste_sign"),
        nn.BatchNorm1d(8),
        xnn.QuantLinear(8, 3, input_quantizer="ste_sign", weight_quantizer="ste_sign"),
    )
    opt = make_optimizer(net, binary="bop")
    assert sorted(_ids(opt.slots[0])) == sorted([id(net[0].weight), id(net[2].weight)])
    net(torch.randn(4, 6)).sum().backward()
    opt.step()
    assert set(net[0].weight.unique().tolist()) <= {-1.0, 1.0}


def test_init_binary_on_a_model_touches_binary_weights_only(layers):
    from xnorkit.optim import init_binary_

    net = layers.make_net()
    float_w = net[2].weight.detach().clone()
    done = init_binary_(net)
    assert [id(p) for p in done] == [id(net[0].weight), id(net[3].weight)]
    assert set(net[3].weight.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(net[2].weight, float_w)


def test_layer_declaring_binary_weights_without_weight_param():
    from types import SimpleNamespace

    class Odd(nn.Module):
        def export_spec(self):
            return SimpleNamespace(weight_bits=1)

    with pytest.raises(TypeError, match="declares weight_bits == 1 but has no 'weight'"):
        binary_parameters(nn.Sequential(Odd()))

    class NoBits(nn.Module):
        def export_spec(self):
            return object()

    with pytest.raises(TypeError, match="without a 'weight_bits' field"):
        binary_parameters(nn.Sequential(NoBits()))
