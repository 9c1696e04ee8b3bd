"""QuickNet (Bannink, Hillier, Geiger, de Bruin, Overweel, Neeven, Helwegen 2021, "Larq Compute
Engine: Design, Benchmark, and Deploy State-of-the-Art Binarized Neural Networks", MLSys,
arXiv 2011.09398): small, fast, accurate BNNs designed for Larq Compute Engine.

Layer for layer as larq-zoo v1.0 defines them (``larq/zoo: larq_zoo/sota/quicknet.py``,
``QuickNetFactory`` / ``QuickNetSmallFactory`` / ``QuickNetLargeFactory``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._common import (
    ZooModel,
    batch_norm,
    binary_conv2d,
    blurpool,
    check_input_shape,
    global_avg_pool,
    init_,
)
from ._registry import register_model

__all__ = ["QuickNet", "QuickNetBlock", "QuickNetTransition", "quicknet_small", "quicknet", "quicknet_large"]


class QuickNetBlock(nn.Module):
    """x + BN(ReLU(bconv3×3(x))): the residual block. The binary conv has ``ste_sign``
    inputs and weights with clip value 1.25, weights clipped to [−1.25, 1.25], and pads its ±1
    input with **+1** (larq ``pad_values=1.0``, cheap in the bit domain); the ReLU is the
    conv's own activation, applied before the BatchNorm(momentum 0.9, ε 1e-5)."""

    def __init__(self, channels: int, *, binary_kernels: str, clip_value: float):
        super().__init__()
        self.conv = binary_conv2d(channels, channels, 3, pad_value=1.0, input_clip=clip_value,
                                  binary_kernels=binary_kernels, clip_value=clip_value, init="glorot_normal")
        self.act = nn.ReLU()
        self.norm = batch_norm(channels, momentum=0.9, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.act(self.conv(x)))


class QuickNetTransition(nn.Sequential):
    """Pointwise transition block: ReLU → maxpool 2×2 stride 1 (valid) → blur-pool (fixed
    depthwise 3×3 binomial, stride 2) → 1×1 float conv → BN(momentum 0.9, ε 1e-5). All float."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(stride, 1)
        self.blur = blurpool(in_channels, stride)
        self.conv = init_(nn.Conv2d(in_channels, out_channels, 1, bias=False), "glorot_normal")
        self.norm = batch_norm(out_channels, momentum=0.9, eps=1e-5)


class QuickNetStem(nn.Sequential):
    """Float stem, /4: conv 3×3/2 (F/4 channels, he-normal) → BN → ReLU → depthwise 3×3/2
    → BN(center=False, scale=False) → 1×1 conv to F → BN. BNs use Keras' defaults (momentum
    0.99, ε 1e-3)."""

    def __init__(self, in_channels: int, filters: int):
        super().__init__()
        if filters % 4:
            raise ValueError(f"QuickNet's stem needs section_filters[0] divisible by 4, got {filters}")
        f4 = filters // 4
        self.conv1 = init_(nn.Conv2d(in_channels, f4, 3, stride=2, padding=1, bias=False), "he_normal")
        self.norm1 = batch_norm(f4)
        self.act1 = nn.ReLU()
        self.dwconv = init_(nn.Conv2d(f4, f4, 3, stride=2, padding=1, groups=f4, bias=False), "glorot_uniform")
        self.norm2 = batch_norm(f4, center=False, scale=False)
        self.conv2 = init_(nn.Conv2d(f4, filters, 1, bias=False), "he_normal")
        self.norm3 = batch_norm(filters)


class QuickNet(ZooModel):
    r"""QuickNet (Bannink et al. 2021, arXiv 2011.09398), larq-zoo v1.0 layers::

        stem (float, /4)
        for each section s: [transition to section_filters[s] (float, /2) if the width
                             changes] + section_blocks[s] × residual block (binary 3×3)
        ReLU → global average pool → dense classes (float, with bias)

    ``quicknet``: blocks (4, 4, 4, 4), filters (64, 128, 256, 512); ``quicknet_small``:
    filters (32, 64, 256, 512); ``quicknet_large``: blocks (6, 8, 12, 6). Only the 3×3
    convolutions of the residual blocks are binary; stem, transitions and head stay float.

    Args:
        num_classes: logits.
        input_shape: (C, H, W); any size ≥ 32×32 (the network downsamples 32×).
        section_blocks / section_filters: residual blocks and width per section.
        binary_kernels: see :data:`xnorkit.models.BINARY_KERNELS`.
        clip_value: STE window of the input/weight sign and weight clip (1.25).
    """

    def __init__(self, num_classes: int = 1000, input_shape=(3, 224, 224), *,
                 section_blocks: Sequence[int] = (4, 4, 4, 4), section_filters: Sequence[int] = (64, 128, 256, 512),
                 binary_kernels: str = "ste_sign", clip_value: float = 1.25):
        super().__init__()
        c, h, w = check_input_shape(input_shape)
        if len(section_blocks) != len(section_filters) or not section_blocks:
            raise ValueError(f"section_blocks {tuple(section_blocks)} and section_filters "
                             f"{tuple(section_filters)} must be non-empty and of equal length")
        self.default_input_shape = (c, h, w)
        self.num_classes = int(num_classes)
        self.section_blocks, self.section_filters = tuple(section_blocks), tuple(section_filters)
        self.stem = QuickNetStem(c, section_filters[0])
        layers: list[nn.Module] = []
        width = section_filters[0]
        for n_blocks, filters in zip(section_blocks, section_filters):
            for _ in range(n_blocks):
                if filters != width:
                    layers.append(QuickNetTransition(width, filters, stride=2))
                    width = filters
                layers.append(QuickNetBlock(width, binary_kernels=binary_kernels, clip_value=clip_value))
        self.body = nn.Sequential(*layers)
        self.act = nn.ReLU()
        self.fc = init_(nn.Linear(width, num_classes), "glorot_normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.fc(global_avg_pool(self.act(self.body(self.stem(x)))))


@register_model("quicknet_small")
def quicknet_small(**kwargs) -> QuickNet:
    """QuickNetSmall: section filters (32, 64, 256, 512), 4 blocks each. Options: :class:`QuickNet`."""
    return QuickNet(**{"section_filters": (32, 64, 256, 512), **kwargs})


@register_model("quicknet")
def quicknet(**kwargs) -> QuickNet:
    """QuickNet: section filters (64, 128, 256, 512), 4 blocks each. Options: :class:`QuickNet`."""
    return QuickNet(**kwargs)


@register_model("quicknet_large")
def quicknet_large(**kwargs) -> QuickNet:
    """QuickNetLarge: section blocks (6, 8, 12, 6), filters (64, 128, 256, 512).
    Options: :class:`QuickNet`."""
    return QuickNet(**{"section_blocks": (6, 8, 12, 6), **kwargs})
