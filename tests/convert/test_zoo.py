"""Every registered zoo model converts and, in reference.py, equals the PyTorch eval model bit for
bit on every binary layer's input and within 1e-5 relative on the logits -- with random BatchNorm
statistics (negative and zero gammas), for sign and scaled (XNOR-Net) binary kernels. Reduced
widths/resolutions keep the default run fast; the full-size variants are marked slow."""

from __future__ import annotations

import pytest
import torch

from xnorkit.convert import ConversionError, convert
from xnorkit.models import get_model, list_models

from _util import compare, randomize_bn

SMALL = {
    "binarynet_mlp": dict(hidden_units=96, input_shape=(1, 12, 12)),
    "binarynet": dict(filters=16, input_shape=(3, 16, 16)),
    "binarynet_batch": dict(filters=16, input_shape=(3, 16, 16)),
    "binarynet_layernorm": dict(filters=16, input_shape=(3, 16, 16)),
    "xnornet": dict(input_shape=(3, 224, 224)),
    "birealnet18": dict(filters=16, input_shape=(3, 32, 32)),
    "binary_alexnet": dict(input_shape=(3, 64, 64)),
    "quicknet_small": dict(input_shape=(3, 32, 32)),
    "quicknet": dict(input_shape=(3, 32, 32)),
    "quicknet_large": dict(input_shape=(3, 32, 32)),
    "binary_resnet_e18": dict(initial_filters=16, input_shape=(3, 32, 32)),
    "binary_densenet28": dict(initial_filters=16, growth_rate=16, input_shape=(3, 32, 32)),
    "bnn_mnist_cnn": dict(channels=(8, 16, 16)),
    "vad_bnn": dict(),
}
FAST = {"binarynet_mlp", "binarynet", "birealnet18", "bnn_mnist_cnn", "vad_bnn"}
UNSUPPORTED = {"binarynet_layernorm": "ChannelLayerNorm"}


def _params(kernels: str):
    out = []
    for name in list_models():
        marks = [] if name in FAST and kernels == "ste_sign" else [pytest.mark.slow]
        out.append(pytest.param(name, kernels, marks=marks, id=f"{name}-{kernels}"))
    return out


@pytest.mark.parametrize("name, kernels", _params("ste_sign") + _params("magnitude_aware_sign"))
def test_zoo_model_converts_bit_exact(name, kernels):
    kwargs = dict(SMALL.get(name, {}))
    try:
        model = get_model(name, binary_kernels=kernels, **kwargs)
    except TypeError:  # a model without some reduced-size option: its defaults
        model = get_model(name, binary_kernels=kernels)
    model = randomize_bn(model.eval(), seed=len(name))
    x = model.example_input(2, generator=torch.Generator().manual_seed(0))
    if name in UNSUPPORTED:
        with pytest.raises(ConversionError, match=UNSUPPORTED[name]):
            convert(model, x, precision="float")
        return
    conv = convert(model, x, precision="float")
    rel, mism = compare(model, conv, x)
    assert rel <= 1e-5, rel
    assert len(mism) == len(model.binary_layer_names())
    assert all(v == 0 for v in mism.values()), mism
    rows = {r["name"]: r["became"] for r in conv.report_rows()}
    assert {n for n, b in rows.items() if b == "binary"} == set(model.binary_layer_names())


def test_all_models_are_listed_here():
    assert set(SMALL) == set(list_models())
