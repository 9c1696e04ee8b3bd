"""BinaryNet (Courbariaux, Hubara, Soudry, El-Yaniv, Bengio 2016, "Binarized Neural Networks:
Training Deep Neural Networks with Weights and Activations Constrained to +1 or −1",
arXiv 1602.02830) and the variants of it in the seed projects.

Registered models:

* ``binarynet_mlp``: the MNIST MLP of the paper's Theano code
  (``MatthieuCourbariaux/BinaryNet: Train-time/mnist.py``, spec seeds.md §3.2), with switches
  that also give seed 000's MLP (``AngusG/tensorflow-xnor-bnn``, §2.5).
* ``binarynet``: the paper's CIFAR-10 ConvNet ``2×128C3–MP2–2×256C3–MP2–2×512C3–MP2–2×1024FC–10``
  (``Train-time/cifar10.py``, §3.3), padded first convolution; ``first_conv_padding="valid"``
  gives seed 004's first layer (§7.4).
* ``binarynet_batch`` / ``binarynet_layernorm``: seed 004's two CIFAR-10 BinaryNets
  (``CuauSuarez/Bop2ndOrder@conference: bnn_optimization/models/binarynet_batch.py`` and
  ``binarynet.py``, §7.4): VALID first convolution, no biases, BatchNorm(scale=False) or
  LayerNorm over channels.

In every BinaryNet the sign activation is the *next* layer's input quantizer (``ste_sign``:
forward sign0, backward the hard-tanh STE 1{|x| ≤ 1}, which is the Theano
``binary_tanh_unit``), and the weights are binarized by the layer's weight quantizer.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from ._common import (
    ZooModel,
    binary_conv2d,
    binary_linear,
    check_choice,
    check_input_shape,
    conv_out,
    init_,
    norm_layer,
    too_small,
)
from ._registry import register_model

__all__ = ["BinaryNetMLP", "BinaryNetCNN", "binarynet", "binarynet_batch", "binarynet_layernorm"]


@register_model("binarynet_mlp")
class BinaryNetMLP(ZooModel):
    r"""BinaryNet's MNIST MLP (Courbariaux et al. 2016, arXiv 1602.02830, §3 / Table 1).

    With the defaults (the paper's Theano ``mnist.py``)::

        input 784 → dropout 0.2
          → 3 × [Dense 4096 (binary weights, bias) → BN → sign → dropout 0.5]
          → Dense 10 (binary weights) → BN                      36,806,656 binary weights

    BN is Lasagne's with moving-average factor α = 0.1 (Keras momentum 0.9) and ε = 1e-4, with
    learned β and γ. The first layer binarizes its weights but sees real pixels. The sign is
    sign0 with the hard-tanh STE; binary weights start U(−1, 1) as in the Theano code.

    Dropout sits after BN, before the next layer's sign, so a dropped unit reads as
    sign0(0) = +1 during training (Theano dropped the ±1 value to 0). Eval is unaffected.

    Seed 000 (AngusG/tensorflow-xnor-bnn, spec §2.5) is the same network with other switches,
    e.g. its HEAD version with ``--binary --batch_norm``::

        get_model("binarynet_mlp", hidden_units=512, binarize_first=False, binarize_last=False,
                  bn_affine=False, output_batch_norm=False, bias=False,
                  dropout_in=0.0, dropout_hidden=0.2)

    (``--first`` ↔ ``binarize_first``, ``--last`` ↔ ``binarize_last`` plus ``output_scale``,
    ``--binary`` ↔ ``binary``, ``--batch_norm`` ↔ ``batch_norm``, ``--n_hidden`` ↔
    ``hidden_units``; keep_prob 0.8 ↔ dropout 0.2 after each hidden layer.)

    Args:
        num_classes: logits.
        input_shape: per-sample input shape; it is flattened, so (1, 28, 28) and (784,) are
            the same network.
        hidden_units: width of each hidden layer (paper 4096, seed 000 512).
        num_hidden_layers: number of hidden layers (≥ 1).
        dropout_in: dropout on the input pixels (0 disables).
        dropout_hidden: dropout after each hidden layer (0 disables).
        binary: False builds the full-precision baseline (Dense → BN → ReLU), as seed 000
            without ``--binary``.
        binarize_first: the first layer's weights are binary (its input is always real).
        binarize_last: the output layer has binary inputs and weights; otherwise it is a
            float layer reading the last hidden layer's real-valued (BN) output.
        batch_norm: BN after each hidden layer.
        bn_affine: learn BN's β and γ (seed 000's BN has neither).
        output_batch_norm: BN on the logits (paper: yes).
        bn_momentum: Keras-convention momentum of BN's moving averages (Lasagne α = 1 − m).
        bn_eps: BN epsilon.
        bias: dense layers have biases (Lasagne's default; seed 000 has none).
        output_scale: learned scalar on the logits of the binary output layer (Tang et al.
            2017, seed 000 ``--last``); needs ``binary`` and ``binarize_last``.
        binary_kernels: see :data:`xnorkit.models.BINARY_KERNELS`.
    """

    def __init__(self, num_classes: int = 10, input_shape=(1, 28, 28), *, hidden_units: int = 4096,
                 num_hidden_layers: int = 3, dropout_in: float = 0.2, dropout_hidden: float = 0.5,
                 binary: bool = True, binarize_first: bool = True, binarize_last: bool = True,
                 batch_norm: bool = True, bn_affine: bool = True, output_batch_norm: bool = True,
                 bn_momentum: float = 0.9, bn_eps: float = 1e-4, bias: bool = True,
                 output_scale: bool = False, binary_kernels: str = "ste_sign"):
        super().__init__()
        try:
            ndim = len(input_shape)
        except TypeError:
            ndim = 3
        shape = check_input_shape(input_shape, ndim if ndim in (1, 3) else 3)
        if num_hidden_layers < 1 or hidden_units < 1 or num_classes < 1:
            raise ValueError(f"binarynet_mlp needs num_hidden_layers, hidden_units and num_classes >= 1, got "
                             f"{num_hidden_layers}, {hidden_units}, {num_classes}")
        for what, p in (("dropout_in", dropout_in), ("dropout_hidden", dropout_hidden)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{what} must be in [0, 1), got {p}")
        if output_scale and not (binary and binarize_last):
            raise ValueError("output_scale applies to a binary output layer: it needs binary=True and "
                             "binarize_last=True")
        self.default_input_shape = shape
        self.num_classes = int(num_classes)
        self.in_features = math.prod(shape)

        def bn(n: int) -> nn.Module:
            return norm_layer("batch", n, momentum=bn_momentum, eps=bn_eps, center=bn_affine,
                              scale=bn_affine, dims=1)

        def dense(n_in: int, n_out: int, *, binary_weights: bool, binary_input: bool, scale: bool = False):
            if binary_weights:
                return binary_linear(n_in, n_out, input_quantizer="ste_sign" if binary_input else None,
                                     binary_kernels=binary_kernels, bias=bias, output_scale=scale,
                                     init="uniform1")
            return init_(nn.Linear(n_in, n_out, bias=bias), "glorot_uniform")

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if dropout_in > 0:
            layers["drop_in"] = nn.Dropout(dropout_in)
        width = self.in_features
        for i in range(1, num_hidden_layers + 1):
            first = i == 1
            layers[f"fc{i}"] = dense(width, hidden_units, binary_weights=binary and (binarize_first or not first),
                                     binary_input=binary and not first)
            if batch_norm:
                layers[f"bn{i}"] = bn(hidden_units)
            if not binary:
                layers[f"relu{i}"] = nn.ReLU()
            if dropout_hidden > 0:
                layers[f"drop{i}"] = nn.Dropout(dropout_hidden)
            width = hidden_units
        last = binary and binarize_last
        layers["fc_out"] = dense(width, num_classes, binary_weights=last, binary_input=last, scale=output_scale)
        if output_batch_norm:
            layers["bn_out"] = bn(num_classes)
        self.layers = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x[0].numel() != self.in_features:
            raise ValueError(f"binarynet_mlp expects (N, {', '.join(map(str, self.default_input_shape))}) "
                             f"or (N, {self.in_features}) inputs, got {tuple(x.shape)}")
        return self.layers(x.flatten(1))


FIRST_CONV_PADDINGS = ("same", "valid")


class BinaryNetCNN(ZooModel):
    r"""The BinaryNet CIFAR-10 ConvNet (Courbariaux et al. 2016, arXiv 1602.02830, §3; spec
    seeds.md §3.3 and §7.4) with every option the three registered variants differ in.

    Layers (f = ``filters``, all convolutions k×k stride 1 with binary weights, N = the norm)::

        conv f (real input) → N
        conv f → maxpool 2 → N        conv 2f → N        conv 2f → maxpool 2 → N
        conv 4f → N                   conv 4f → maxpool 2 → N
        flatten → dense ``dense_units`` → N → dense ``dense_units`` → N → dense classes → N

    Every layer after the first has sign-quantized inputs (its sign is the previous block's
    activation). "same" convolutions pad the ±1 input with 0 (Lasagne's pad=1 and larq's
    ``padding="same"`` both do).

    Args:
        num_classes: logits.
        input_shape: (C, H, W); three 2×2 max-pools must leave at least 1×1.
        filters / dense_units / kernel_size: widths (128, 1024, 3 in all seeds).
        first_conv_padding: ``"same"`` (paper, 32×32 feature maps) or ``"valid"`` (seed 004:
            30×30, then 15, 7, 3 → 4608 flattened features).
        norm: ``"batch"`` or ``"layer"`` (Keras LayerNormalization over channels only).
        bn_momentum / bn_eps / bn_center / bn_scale: BatchNorm settings, Keras convention.
        ln_eps: LayerNorm epsilon.
        bias: biases in conv/dense layers (Lasagne yes, seed 004 no).
        binary_kernels: see :data:`xnorkit.models.BINARY_KERNELS`.
        init: binary weight initializer (``"uniform1"`` = BinaryNet's U(−1, 1),
            ``"glorot_uniform"`` = Keras default).
    """

    def __init__(self, num_classes: int = 10, input_shape=(3, 32, 32), *, filters: int = 128,
                 dense_units: int = 1024, kernel_size: int = 3, first_conv_padding: str = "same",
                 norm: str = "batch", bn_momentum: float = 0.9, bn_eps: float = 1e-4, bn_center: bool = True,
                 bn_scale: bool = True, ln_eps: float = 1e-3, bias: bool = True,
                 binary_kernels: str = "ste_sign", init: str = "uniform1"):
        super().__init__()
        check_choice("first_conv_padding", first_conv_padding, FIRST_CONV_PADDINGS)
        c, h, w = check_input_shape(input_shape)
        self.default_input_shape = (c, h, w)
        self.num_classes = int(num_classes)
        k = kernel_size
        hs, ws = (h, w) if first_conv_padding == "same" else (conv_out(h, k), conv_out(w, k))
        for _ in range(3):
            hs, ws = hs // 2, ws // 2
        if hs < 1 or ws < 1:
            raise too_small("binarynet", self.default_input_shape, "three 2x2 max-pools need at least 8x8 "
                            "feature maps after the first convolution")

        def n(ch: int, dims: int = 2) -> nn.Module:
            return norm_layer(norm, ch, momentum=bn_momentum, eps=bn_eps, center=bn_center, scale=bn_scale,
                              dims=dims, ln_eps=ln_eps)

        def conv(cin: int, cout: int, *, first: bool = False) -> nn.Module:
            return binary_conv2d(cin, cout, k, padding=first_conv_padding if first else "same", pad_value=0.0,
                                 input_quantizer=None if first else "ste_sign",
                                 binary_kernels=binary_kernels, bias=bias, init=init)

        def dense(cin: int, cout: int) -> nn.Module:
            return binary_linear(cin, cout, binary_kernels=binary_kernels, bias=bias, init=init)

        f = filters
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv1"], layers["norm1"] = conv(c, f, first=True), n(f)
        layers["conv2"], layers["pool2"], layers["norm2"] = conv(f, f), nn.MaxPool2d(2, 2), n(f)
        layers["conv3"], layers["norm3"] = conv(f, 2 * f), n(2 * f)
        layers["conv4"], layers["pool4"], layers["norm4"] = conv(2 * f, 2 * f), nn.MaxPool2d(2, 2), n(2 * f)
        layers["conv5"], layers["norm5"] = conv(2 * f, 4 * f), n(4 * f)
        layers["conv6"], layers["pool6"], layers["norm6"] = conv(4 * f, 4 * f), nn.MaxPool2d(2, 2), n(4 * f)
        layers["flatten"] = nn.Flatten()
        layers["fc7"], layers["norm7"] = dense(4 * f * hs * ws, dense_units), n(dense_units, 1)
        layers["fc8"], layers["norm8"] = dense(dense_units, dense_units), n(dense_units, 1)
        layers["fc9"], layers["norm9"] = dense(dense_units, num_classes), n(num_classes, 1)
        self.layers = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, exact=True)
        return self.layers(x)


@register_model("binarynet")
def binarynet(**kwargs) -> BinaryNetCNN:
    """The paper's CIFAR-10 BinaryNet (Theano ``cifar10.py``; spec §3.3): padded first
    convolution, biases, BN with α = 0.1 and ε = 1e-4, U(−1, 1) binary weights.
    14,022,016 binary weights. Options: :class:`BinaryNetCNN`; ``first_conv_padding="valid"``
    gives seed 004's first layer (10,352,000 binary weights)."""
    return BinaryNetCNN(**kwargs)


_SEED004 = dict(first_conv_padding="valid", bias=False, init="glorot_uniform")


@register_model("binarynet_batch")
def binarynet_batch(**kwargs) -> BinaryNetCNN:
    """Seed 004's ``binarynet_batch`` (spec §7.4): VALID first convolution, no biases, Keras
    ``BatchNormalization(scale=False)`` (momentum 0.99, ε 1e-3, learned β, γ fixed to 1),
    Glorot-uniform init. Bop runs use ``binary_kernels="bop"``. Options: :class:`BinaryNetCNN`."""
    return BinaryNetCNN(**{**_SEED004, "norm": "batch", "bn_momentum": 0.99, "bn_eps": 1e-3,
                           "bn_scale": False, **kwargs})


@register_model("binarynet_layernorm")
def binarynet_layernorm(**kwargs) -> BinaryNetCNN:
    """Seed 004's ``binarynet`` (spec §7.4): as ``binarynet_batch`` with Keras'
    ``LayerNormalization()`` (over channels only at each position, ε 1e-3, learned γ and β)
    in place of every BatchNorm. Options: :class:`BinaryNetCNN`."""
    return BinaryNetCNN(**{**_SEED004, "norm": "layer", "ln_eps": 1e-3, **kwargs})
