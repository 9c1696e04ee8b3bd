"""Helpers for the model-zoo tests: one small instance of every registered model.

The generic tests run each model's own code at a small input its architecture supports and,
for the ImageNet networks, a quarter of their width (their cost is in the weights: a
512-channel 3×3 layer has 2.4 M), with 7 classes, so every registered model is exercised on
the 2-core CI machine in seconds. Full-size instances are covered by the parameter-count tests
(built on the meta device) and by the slow full-size forward/backward test. Models not listed in ``SMALL_KWARGS`` are tested
at their ``default_input_shape``, so a newly registered model is covered automatically.
"""

from __future__ import annotations

import torch

from xnorkit.models import get_model

#: Cheaper-than-default construction options per model (any registered model not listed
#: here is built with its defaults).
SMALL_KWARGS: dict[str, dict] = {
    "binarynet_mlp": dict(hidden_units=256),
    "binarynet": dict(filters=16, dense_units=64),
    "binarynet_batch": dict(filters=16, dense_units=64),
    "binarynet_layernorm": dict(filters=16, dense_units=64),
    "binary_alexnet": dict(input_shape=(3, 64, 64), dense_units=256),
    # 32x-downsampling networks at a quarter of their width: 32x32 leaves a 1x1 map; 50x50
    # still selects the ImageNet stem of ResNet-E / DenseNet (H >= 50) and gives odd sizes
    # (where TF "same" pads asymmetrically).
    "birealnet18": dict(input_shape=(3, 32, 32), filters=16),
    "quicknet_small": dict(input_shape=(3, 32, 32), section_filters=(8, 16, 64, 128)),
    "quicknet": dict(input_shape=(3, 32, 32), section_filters=(16, 32, 64, 128)),
    "quicknet_large": dict(input_shape=(3, 32, 32), section_filters=(16, 32, 64, 128)),
    "binary_resnet_e18": dict(input_shape=(3, 50, 50), initial_filters=16, filters=(16, 32, 64, 128)),
    "binary_densenet28": dict(input_shape=(3, 50, 50), initial_filters=16, growth_rate=16),
    # XNOR-Net's 6x6 valid convolution needs >= 217x217 inputs: only the defaults work.
    "xnornet": dict(),
}

#: Models whose generic tests take seconds even when small (62 M-parameter XNOR-Net).
HEAVY = {"xnornet"}

NUM_CLASSES = 7

_CACHE: dict[str, torch.nn.Module] = {}


def small_kwargs(name: str) -> dict:
    return {"num_classes": NUM_CLASSES, **SMALL_KWARGS.get(name, {})}


def build_small(name: str) -> torch.nn.Module:
    """A fresh small instance (deterministic weights)."""
    torch.manual_seed(0)
    return get_model(name, **small_kwargs(name))


def cached_small(name: str) -> torch.nn.Module:
    """The session-wide small instance of ``name`` (built on first use)."""
    if name not in _CACHE:
        _CACHE[name] = build_small(name)
    return _CACHE[name]
