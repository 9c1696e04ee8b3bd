"""Parameter counts of the full-size models against published or derived numbers.

Models are built on the meta device (no memory, no initialization work), so counting the
62 M-parameter networks costs nothing. Two counting conventions appear in the sources:

* ``keras_total``: what Keras' ``count_params()`` / larq's older ``summary`` report: every
  weight, including BatchNorm's moving mean and variance (PyTorch buffers) and frozen weights.
  PyTorch has no parameter for a Keras ``scale=False`` gamma, nor does Keras.
* ``larq_fused``: what larq's newer ``summary`` reports (and larq-zoo's QuickNet v1.0 tables):
  every non-BatchNorm weight plus 2·C per BatchNorm layer, whatever its center/scale flags
  (the per-channel multiplier and offset BN folds into). That this convention reproduces all
  three QuickNet numbers and the BinaryDenseNet28 summary exactly is what pins the layers.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xnorkit.models import get_model


def build_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return get_model(name, **kwargs)


def _bns(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def keras_total(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters()) + sum(2 * bn.num_features for bn in _bns(model))


def larq_fused(model: nn.Module) -> int:
    bn_ids = {id(m) for m in _bns(model)}
    own = sum(p.numel() for m in model.modules() if id(m) not in bn_ids for p in m.parameters(recurse=False))
    return own + sum(2 * bn.num_features for bn in _bns(model))


# --------------------------------------------------------------------- binary weight counts


@pytest.mark.parametrize("name, kwargs, binary_weights, source", [
    # spec seeds.md §3.3: 3·128·9 + 128²·9 + 128·256·9 + 256²·9 + 256·512·9 + 512²·9
    # + 8192·1024 + 1024² + 1024·10 (derived from the Theano cifar10.py layer list)
    ("binarynet", {}, 14_022_016, "seeds.md §3.3 / §9 item 7"),
    # seeds.md §7.4: VALID first conv -> 3·3·512 = 4608 flattened features instead of 8192
    ("binarynet", {"first_conv_padding": "valid"}, 10_352_000, "seeds.md §7.4 / §9 item 7"),
    ("binarynet_batch", {}, 10_352_000, "seeds.md §7.4"),
    ("binarynet_layernorm", {}, 10_352_000, "seeds.md §7.4"),
    # seeds.md §3.2: 784·4096 + 2·4096² + 4096·10
    ("binarynet_mlp", {}, 36_806_656, "seeds.md §3.2 / §9 item 7"),
    # seeds.md §7.4: 16 binary 3×3 convs: 4·64²·9 + (64·128 + 3·128²)·9 + (128·256 + 3·256²)·9
    # + (256·512 + 3·512²)·9
    ("birealnet18", {}, 10_985_472, "seeds.md §7.4 / §9 item 7"),
    # same 16 convolutions in ResNet-E 18 (larq-zoo resnet_e.py)
    ("binary_resnet_e18", {}, 10_985_472, "derived from larq_zoo/literature/resnet_e.py"),
    # larq-zoo tests/snapshots/model_summaries/BinaryDenseNet28_576.txt: "# 1-bit" total
    ("binary_densenet28", {}, 4_202_496, "larq/zoo BinaryDenseNet28_576.txt summary"),
    # 96·256·25 + 256·384·9 + 384²·9 + 384·256·9 + 256·4096·36 + 4096²
    ("xnornet", {}, 58_236_928, "derived from seeds.md §7.4 table"),
])
def test_binary_weight_count(name, kwargs, binary_weights, source):
    assert build_meta(name, **kwargs).binary_weight_count() == binary_weights, source


@pytest.mark.parametrize("name, kwargs, n_binary_layers, n_binary_weight_layers", [
    ("binarynet", {}, 8, 9),             # the first conv has binary weights, real inputs
    ("binarynet_batch", {}, 8, 9),
    ("binarynet_mlp", {}, 3, 4),          # fc1 sees real pixels
    ("binarynet_mlp", {"binarize_first": False, "binarize_last": False}, 2, 2),
    ("binarynet_mlp", {"binary": False}, 0, 0),
    ("xnornet", {}, 6, 6),                # first conv and last dense are float
    ("birealnet18", {}, 16, 16),
    ("binary_alexnet", {}, 7, 8),         # the first conv sees real pixels
    ("quicknet_small", {}, 16, 16),
    ("quicknet", {}, 16, 16),
    ("quicknet_large", {}, 32, 32),       # 6 + 8 + 12 + 6 residual blocks
    ("binary_resnet_e18", {}, 16, 16),
    ("binary_densenet28", {}, 23, 23),    # 6 + 6 + 6 + 5 dense layers
    ("bnn_mnist_cnn", {}, 4, 4),
    ("vad_bnn", {}, 4, 4),
])
def test_which_layers_are_binary(name, kwargs, n_binary_layers, n_binary_weight_layers):
    m = build_meta(name, **kwargs)
    assert len(m.binary_layer_names()) == n_binary_layers
    assert sum(r.weight_bits == 1 for r in m.layer_precisions()) == n_binary_weight_layers


# --------------------------------------------------------------------- published totals


@pytest.mark.parametrize("name, kwargs, total, source", [
    # larq-zoo literature/binary_alex_net.py docstring (and larq/docs docs/zoo/index.md):
    # "61 859 192"
    ("binary_alexnet", {}, 61_859_192, "larq_zoo/literature/binary_alex_net.py"),
    # larq-zoo literature/resnet_e.py docstring: "Parameters: 11 699 368"
    ("binary_resnet_e18", {}, 11_699_368, "larq_zoo/literature/resnet_e.py"),
    # larq-zoo literature/birealnet.py docstring "11 699 112": larq-zoo's BiRealNet has the
    # same layers as seed 004's (only the kernel quantizer differs, which has no weights)
    ("birealnet18", {}, 11_699_112, "larq_zoo/literature/birealnet.py"),
    # larq/docs docs/zoo/index.md table: BinaryDenseNet28 "5 150 504"
    ("binary_densenet28", {}, 5_150_504, "larq/docs docs/zoo/index.md"),
    # larq-zoo literature/xnornet.py docstring "62 396 768" (its BNs have scale=False;
    # seed 004's have scale=True, 9 664 more)
    ("xnornet", {"bn_scale": False}, 62_396_768, "larq_zoo/literature/xnornet.py"),
    ("xnornet", {}, 62_396_768 + 9_664, "seed 004 xnor_batch.py: BN scale=True"),
])
def test_keras_total_matches_larq_zoo(name, kwargs, total, source):
    assert keras_total(build_meta(name, **kwargs)) == total, source


@pytest.mark.parametrize("name, total, source", [
    # larq-zoo sota/quicknet.py (v1.0) docstring tables: "Parameters 12 655 688 / 13 234 088 /
    # 23 342 248"
    ("quicknet_small", 12_655_688, "larq_zoo/sota/quicknet.py QuickNetSmall"),
    ("quicknet", 13_234_088, "larq_zoo/sota/quicknet.py QuickNet"),
    ("quicknet_large", 23_342_248, "larq_zoo/sota/quicknet.py QuickNetLarge"),
    # larq-zoo tests/snapshots/model_summaries/BinaryDenseNet28_576.txt: 4 202 496 1-bit +
    # 929 000 32-bit ("Total params 5.13 M")
    ("binary_densenet28", 4_202_496 + 929_000, "larq/zoo BinaryDenseNet28_576.txt summary"),
])
def test_larq_summary_total_matches_larq_zoo(name, total, source):
    m = build_meta(name)
    assert larq_fused(m) == total, source


def test_quicknet_conventions_differ_only_by_bn_statistics():
    """The published QuickNet numbers are not Keras totals: those also count the moving
    statistics of the 38 affine BatchNorms (the stem's non-affine BN counts 2·C either way)."""
    m = build_meta("quicknet")
    affine_stats = sum(2 * bn.num_features for bn in _bns(m) if bn.weight is not None)
    assert keras_total(m) - larq_fused(m) == affine_stats == 9_632
    assert keras_total(m) == 13_243_720


def test_binarynet_seed004_keras_total():
    """Derived: 10 352 000 binary weights + 9 Keras BatchNorm(scale=False) layers with beta,
    moving mean and moving variance (3 · 3850 channels); LayerNorm has gamma and beta."""
    assert keras_total(build_meta("binarynet_batch")) == 10_352_000 + 3 * 3850
    assert keras_total(build_meta("binarynet_layernorm")) == 10_352_000 + 2 * 3850


def test_bnn_mnist_cnn_budget():
    """The MNIST CNN's documented size: 423 936 binary weights."""
    m = build_meta("bnn_mnist_cnn")
    assert m.binary_weight_count() == 18_432 + 36_864 + 73_728 + 294_912 == 423_936
