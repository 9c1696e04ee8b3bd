"""XNOR-Net AlexNet (Rastegari, Ordonez, Redmon, Farhadi 2016, "XNOR-Net: ImageNet
Classification Using Binary Convolutional Neural Networks", ECCV, arXiv 1603.05279).

Layer for layer as seed 004 defines it (``CuauSuarez/Bop2ndOrder@conference:
bnn_optimization/models/xnor_batch.py`` / ``xnor.py``; spec seeds.md §7.4 table), which is
larq-zoo's ``XNORNet`` (``larq/zoo: larq_zoo/literature/xnornet.py``) with BN scale on, and
the block order of the released Torch code (``allenai/XNOR-Net``; §4): BN → sign → binary
conv → pool, first and last layers full precision.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._common import ZooModel, binary_conv2d, check_input_shape, conv_out, init_, norm_layer, too_small
from ._registry import register_model

__all__ = ["XNORNet"]


@register_model("xnornet")
class XNORNet(ZooModel):
    r"""XNOR-Net (Rastegari et al. 2016, arXiv 1603.05279) on 224×224 ImageNet inputs::

        conv 96 11×11/4 "same" (float, no bias) → N(ε 1e-5) → ReLU → maxpool 3/2     27×27×96
        N(ε 1e-4) → bconv 256 5×5 → maxpool 3/2                                     13×13×256
        N → bconv 384 3×3      N → bconv 384 3×3      N → bconv 256 3×3 → maxpool 3/2  6×6×256
        N → bconv 4096 6×6 valid       N → bconv 4096 1×1                            1×1×4096
        N(ε 1e-3) → ReLU → flatten → dense classes (float, no bias)

    "bconv" = sign-quantized input (``ste_sign``) and binary weights, no bias, zero padding.
    N = BatchNorm(momentum 0.9, learned β and γ) or, with ``norm="layer"``, LayerNorm over
    channels (seed 004's ``xnornet``). 58,236,928 binary weights.

    The weight quantizer defaults to ``magnitude_aware_sign``: sign(W) times α = mean |W| per
    output filter, the paper's weight approximation W ≈ α·B (larq-zoo's
    ``xnor_weight_scale``), trained with weights clipped to [−1, 1]. The paper's input scale
    β / K is not used (nor was it in the released code, §4). Seed 004 trains ±1 kernels with
    Bop: ``binary_kernels="bop"``. The L2 penalty 5e-7 of the float layers is a training
    setting (weight decay), not part of the model.

    Args:
        num_classes: logits.
        input_shape: (C, H, W); 224×224 gives the 6×6 map the 6×6 convolution expects
            (larger inputs leave s×s > 1×1 and a wider last dense layer).
        norm: ``"batch"`` or ``"layer"``.
        bn_scale: learn BN's γ (seed 004 yes; larq-zoo's XNORNet no).
        binary_kernels: see :data:`xnorkit.models.BINARY_KERNELS`.
    """

    def __init__(self, num_classes: int = 1000, input_shape=(3, 224, 224), *, norm: str = "batch",
                 bn_scale: bool = True, binary_kernels: str = "magnitude_aware_sign"):
        super().__init__()
        c, h, w = check_input_shape(input_shape)
        self.default_input_shape = (c, h, w)
        self.num_classes = int(num_classes)

        def spatial(s: int) -> int:
            s = conv_out(s, 11, 4, 5)           # stem, "same"
            for _ in range(3):                  # three 3/2 valid max-pools
                s = conv_out(s, 3, 2)
            return conv_out(s, 6)               # 6×6 valid binary conv
        hs, ws = spatial(h), spatial(w)
        if hs < 1 or ws < 1:
            raise too_small("xnornet", self.default_input_shape, "the 6x6 valid convolution needs a 6x6 "
                            "map after three max-pools, i.e. inputs of at least 217x217")

        def n(ch: int, eps: float) -> nn.Module:
            return norm_layer(norm, ch, momentum=0.9, eps=eps, scale=bn_scale)

        def bconv(cin: int, cout: int, k: int, padding: str) -> nn.Module:
            return binary_conv2d(cin, cout, k, padding=padding, binary_kernels=binary_kernels,
                                 init="glorot_uniform")

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv1"] = init_(nn.Conv2d(c, 96, 11, stride=4, padding=5, bias=False), "glorot_uniform")
        layers["norm1"], layers["relu1"], layers["pool1"] = n(96, 1e-5), nn.ReLU(), nn.MaxPool2d(3, 2)
        layers["norm2"], layers["conv2"], layers["pool2"] = n(96, 1e-4), bconv(96, 256, 5, "same"), nn.MaxPool2d(3, 2)
        layers["norm3"], layers["conv3"] = n(256, 1e-4), bconv(256, 384, 3, "same")
        layers["norm4"], layers["conv4"] = n(384, 1e-4), bconv(384, 384, 3, "same")
        layers["norm5"], layers["conv5"], layers["pool5"] = n(384, 1e-4), bconv(384, 256, 3, "same"), nn.MaxPool2d(3, 2)
        layers["norm6"], layers["conv6"] = n(256, 1e-4), bconv(256, 4096, 6, "valid")
        layers["norm7"], layers["conv7"] = n(4096, 1e-4), bconv(4096, 4096, 1, "valid")
        layers["norm8"], layers["relu8"] = n(4096, 1e-3), nn.ReLU()
        layers["flatten"] = nn.Flatten()
        layers["fc"] = init_(nn.Linear(4096 * hs * ws, num_classes, bias=False), "glorot_uniform")
        self.layers = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, exact=True)
        return self.layers(x)
