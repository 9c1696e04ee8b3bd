"""Optimizers for binary neural networks.

Two ways to train binary weights:

1. **Bop-type optimizers** (no latent weights): :class:`Bop` (Helwegen et al. 2019,
   arXiv 1906.02107) and :class:`Bop2ndOrder` (Suarez-Ramirez et al. 2021,
   arXiv 2104.05124) keep the weights in {-1, +1} and flip a weight when the moving
   average of its gradient pushes against its sign by more than a threshold tau.
2. **Latent weights** (BinaryNet, Courbariaux et al. 2016): Adam on real-valued weights
   that are binarized in the forward pass, with BinaryNet's per-layer Glorot LR scale
   (:func:`glorot_lr_scale`, :func:`binarynet_param_groups`) and clipping to [-1, 1]
   (:func:`clip_latent_weights_`).

Binary weights are the weights of layers whose ``export_spec().weight_bits == 1`` (or
tensors tagged with :func:`mark_binary`); they are never recognised by name or shape.
:func:`make_optimizer` routes them to the binary optimizer and every other parameter
(BatchNorm, biases, float layers) to Adam, in one :class:`CaseOptimizer` (after Larq's)::

    opt = make_optimizer(model, binary="bop", binary_kwargs={"threshold": 1e-8, "gamma": 1e-4},
                         float="adam", float_kwargs={"lr": 1e-2})
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, path)

Hyperparameters (tau, gamma, sigma, learning rates) may be schedules of the optimizer step:
:class:`Constant`, :class:`ExponentialDecay`, :class:`PolynomialDecay` or any callable;
:class:`ScheduleLR` drives a torch optimizer's learning rate from one.
"""

from .binary import (
    BINARY_ATTR,
    binary_layers,
    binary_parameters,
    init_binary_,
    is_binary_param,
    layer_weight_bits,
    mark_binary,
    named_binary_parameters,
    sign0_,
)
from .bop import CORRECTIONS, Bop, Bop2ndOrder
from .case import OPTIMIZERS, CaseOptimizer, make_optimizer
from .latent import binarynet_param_groups, clip_latent_weights_, glorot_fans, glorot_lr_scale
from .schedules import (
    Constant,
    ExponentialDecay,
    HyperParameter,
    PolynomialDecay,
    Schedule,
    ScheduleLR,
    resolve,
)

__all__ = [
    "Bop",
    "Bop2ndOrder",
    "CORRECTIONS",
    "CaseOptimizer",
    "make_optimizer",
    "OPTIMIZERS",
    "BINARY_ATTR",
    "mark_binary",
    "is_binary_param",
    "layer_weight_bits",
    "binary_layers",
    "named_binary_parameters",
    "binary_parameters",
    "sign0_",
    "init_binary_",
    "glorot_fans",
    "glorot_lr_scale",
    "binarynet_param_groups",
    "clip_latent_weights_",
    "Schedule",
    "Constant",
    "ExponentialDecay",
    "PolynomialDecay",
    "ScheduleLR",
    "HyperParameter",
    "resolve",
]
