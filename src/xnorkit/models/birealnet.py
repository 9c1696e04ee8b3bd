"""Bi-Real Net 18 (Liu, Wu, Luo, Yang, Liu, Cheng 2018, "Bi-Real Net: Enhancing the
Performance of 1-bit CNNs With Improved Representational Capability and Advanced Training
Algorithm", ECCV, arXiv 1808.00278).

Layer for layer as seed 004 defines it (``CuauSuarez/Bop2ndOrder@conference:
bnn_optimization/models/birealnet_batch.py`` / ``birealnet.py``; spec seeds.md §7.4), which
has the same layers as larq-zoo's ``BiRealNet`` (``larq/zoo:
larq_zoo/literature/birealnet.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from ._common import (
    ZooModel,
    binary_conv2d,
    check_input_shape,
    global_avg_pool,
    init_,
    norm_layer,
    pad_same_avgpool2x2,
)
from ._registry import register_model

__all__ = ["BiRealNet18", "BiRealBlock"]


class BiRealBlock(nn.Module):
    """y = N(bconv3×3(x)) + shortcut(x): one binary convolution per residual connection, so
    the real-valued stream bypasses every sign (the Bi-Real idea). When the channel count
    doubles, the binary conv has stride 2 and the shortcut is AvgPool 2/2 ("same") → 1×1 float
    conv → N."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str, binary_kernels: str,
                 input_quantizer: str):
        super().__init__()
        down = in_channels != out_channels
        self.conv = binary_conv2d(in_channels, out_channels, 3, stride=2 if down else 1,
                                  input_quantizer=input_quantizer, binary_kernels=binary_kernels,
                                  init="glorot_normal")
        self.norm = norm_layer(norm, out_channels, momentum=0.8)
        if down:
            self.shortcut = nn.Sequential(
                pad_same_avgpool2x2(),
                init_(nn.Conv2d(in_channels, out_channels, 1, bias=False), "glorot_normal"),
                norm_layer(norm, out_channels, momentum=0.8))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x)) + self.shortcut(x)


@register_model("birealnet18")
class BiRealNet18(ZooModel):
    r"""Bi-Real Net 18 (Liu et al. 2018, arXiv 1808.00278)::

        stem: conv 64 7×7/2 "same" (float, no bias) → N → maxpool 3/2 "same"        56×56×64
        4 × block(64)
        3 × [block(2c, stride 2, avgpool + 1×1 float shortcut) + 3 × block(2c)]
              → 128 @ 28×28, 256 @ 14×14, 512 @ 7×7
        global average pool → dense classes (float, with bias)

    16 binary 3×3 convolutions with ``approx_sign`` inputs (Bi-Real's piecewise-polynomial
    STE), 10,985,472 binary weights; no activation function between blocks (the residual
    stream stays real). N = BatchNorm(momentum 0.8, ε 1e-3) or LayerNorm over channels
    (``norm="layer"``, seed 004's ``birealnet``). Binary convolutions pad with 0.

    Args:
        num_classes: logits.
        input_shape: (C, H, W); any size ≥ 32×32 (the network downsamples 32×).
        filters: stem width (64).
        norm: ``"batch"`` or ``"layer"``.
        binary_kernels: ``"magnitude_aware_sign"`` (default; the paper's magnitude-aware
            sign, larq-zoo), ``"ste_sign"``, or ``"bop"`` (seed 004: ±1 kernels trained by Bop).
    """

    def __init__(self, num_classes: int = 1000, input_shape=(3, 224, 224), *, filters: int = 64,
                 norm: str = "batch", binary_kernels: str = "magnitude_aware_sign",
                 input_quantizer: str = "approx_sign"):
        super().__init__()
        c, h, w = check_input_shape(input_shape)
        self.default_input_shape = (c, h, w)
        self.num_classes = int(num_classes)
        self.stem = nn.Sequential(
            init_(nn.Conv2d(c, filters, 7, stride=2, padding=3, bias=False), "glorot_normal"),
            norm_layer(norm, filters, momentum=0.8),
            nn.MaxPool2d(3, 2, padding=1))
        blocks, cin = [], filters
        for cout in [filters] * 4 + [2 * filters] * 4 + [4 * filters] * 4 + [8 * filters] * 4:
            blocks.append(BiRealBlock(cin, cout, norm=norm, binary_kernels=binary_kernels,
                                      input_quantizer=input_quantizer))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = init_(nn.Linear(cin, num_classes), "glorot_uniform")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.fc(global_avg_pool(self.blocks(self.stem(x))))
