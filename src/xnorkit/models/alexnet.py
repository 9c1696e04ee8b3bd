"""Binary AlexNet: BinaryNet's binarization (Hubara, Courbariaux, Soudry, El-Yaniv, Bengio
2016, "Binarized Neural Networks", NIPS) applied to AlexNet (Krizhevsky et al. 2012).

Layer for layer as larq-zoo defines it (``larq/zoo: larq_zoo/literature/binary_alex_net.py``;
the same network is plumerai/rethinking-bnn-optimization's ``binary_alexnet``, spec seeds.md
§7.4).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._common import ZooModel, binary_conv2d, binary_linear, check_input_shape, conv_out, norm_layer, too_small
from ._registry import register_model

__all__ = ["BinaryAlexNet"]


@register_model("binary_alexnet")
class BinaryAlexNet(ZooModel):
    r"""Binary AlexNet (Hubara et al. 2016) on 224×224 inputs::

        bconv 64 11×11/4 "same" (real input) → maxpool 3/2 → N                     27×27×64
        bconv 192 5×5 → maxpool 3/2 → N                                             13×13×192
        bconv 384 3×3 → N     bconv 384 3×3 → N     bconv 256 3×3 → maxpool 3/2 → N   6×6×256
        flatten → bdense 4096 → N → bdense 4096 → N → bdense classes → N

    Every layer has binary weights (``ste_sign`` + clip to [−1, 1]) and, except the first,
    sign-quantized inputs; no biases; zero padding. N = BatchNorm(momentum 0.9, ε 1e-3,
    scale=False: learned β only). 61,859,192 Keras weights (larq-zoo's published count).

    Args:
        num_classes: logits.
        input_shape: (C, H, W); at least 57×57 (three 3/2 max-pools after the stride-4 conv).
        inflation_ratio: width multiplier of the first four convolutions (larq-zoo option).
        dense_units: width of the two hidden dense layers (4096 in larq-zoo).
        binary_kernels: see :data:`xnorkit.models.BINARY_KERNELS`.
    """

    def __init__(self, num_classes: int = 1000, input_shape=(3, 224, 224), *, inflation_ratio: int = 1,
                 dense_units: int = 4096, binary_kernels: str = "ste_sign"):
        super().__init__()
        c, h, w = check_input_shape(input_shape)
        self.default_input_shape = (c, h, w)
        self.num_classes = int(num_classes)

        def spatial(s: int) -> int:
            s = conv_out(conv_out(s, 11, 4, 5), 3, 2)
            return conv_out(conv_out(s, 3, 2), 3, 2)
        hs, ws = spatial(h), spatial(w)
        if hs < 1 or ws < 1:
            raise too_small("binary_alexnet", self.default_input_shape, "needs at least 57x57 for the "
                            "stride-4 conv and three 3/2 max-pools")

        def n(ch: int, dims: int = 2) -> nn.Module:
            return norm_layer("batch", ch, momentum=0.9, eps=1e-3, scale=False, dims=dims)

        def bconv(cin: int, cout: int, k: int, stride: int = 1, first: bool = False) -> nn.Module:
            return binary_conv2d(cin, cout, k, stride, input_quantizer=None if first else "ste_sign",
                                 binary_kernels=binary_kernels, init="glorot_uniform")

        def bdense(cin: int, cout: int) -> nn.Module:
            return binary_linear(cin, cout, binary_kernels=binary_kernels, init="glorot_uniform")

        r = inflation_ratio
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv1"], layers["pool1"], layers["norm1"] = bconv(c, 64 * r, 11, 4, first=True), nn.MaxPool2d(3, 2), n(64 * r)
        layers["conv2"], layers["pool2"], layers["norm2"] = bconv(64 * r, 192 * r, 5), nn.MaxPool2d(3, 2), n(192 * r)
        layers["conv3"], layers["norm3"] = bconv(192 * r, 384 * r, 3), n(384 * r)
        layers["conv4"], layers["norm4"] = bconv(384 * r, 384 * r, 3), n(384 * r)
        layers["conv5"], layers["pool5"], layers["norm5"] = bconv(384 * r, 256, 3), nn.MaxPool2d(3, 2), n(256)
        layers["flatten"] = nn.Flatten()
        d = dense_units
        layers["fc6"], layers["norm6"] = bdense(256 * hs * ws, d), n(d, 1)
        layers["fc7"], layers["norm7"] = bdense(d, d), n(d, 1)
        layers["fc8"], layers["norm8"] = bdense(d, num_classes), n(num_classes, 1)
        self.layers = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, exact=True)
        return self.layers(x)
