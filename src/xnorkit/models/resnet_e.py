"""Binary ResNet-E (Bethge, Yang, Bornstein, Meinel 2019, "Back to Simplicity: How to Train
Accurate BNNs from Scratch?", arXiv 1906.08637).

Layer for layer as larq-zoo defines it (``larq/zoo: larq_zoo/literature/resnet_e.py``,
``BinaryResNetE18Factory``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._common import (
    ZooModel,
    batch_norm,
    binary_conv2d,
    check_input_shape,
    global_avg_pool,
    init_,
    pad_same_avgpool2x2,
)
from ._registry import register_model

__all__ = ["BinaryResNetE", "ResNetEBlock", "RESNET_E_SPECS"]

#: num_layers -> (basic blocks per stage, stage widths), as larq-zoo's ``spec``.
RESNET_E_SPECS = {
    18: ((2, 2, 2, 2), (64, 128, 256, 512)),
    34: ((3, 4, 6, 3), (64, 128, 256, 512)),
}


def _bn(ch: int) -> nn.Module:
    return batch_norm(ch, momentum=0.9, eps=1e-5)


class ResNetEBlock(nn.Module):
    """y = BN(bconv3×3(x)) + shortcut(x), one binary conv per shortcut (ResNet-E splits each
    basic block in two). When the width changes: stride-2 binary conv, and the shortcut is
    AvgPool 2/2 → 1×1 float conv → BN. Binary convs: ``ste_sign`` inputs and weights
    with clip value 1.25, weights clipped to [−1.25, 1.25], zero padding."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, binary_kernels: str,
                 clip_value: float):
        super().__init__()
        self.conv = binary_conv2d(in_channels, out_channels, 3, stride, input_clip=clip_value,
                                  binary_kernels=binary_kernels, clip_value=clip_value, init="glorot_normal")
        self.norm = _bn(out_channels)
        if in_channels != out_channels or stride != 1:
            # larq-zoo: AvgPool2D(2, 2) "valid" whenever the width changes. We pool exactly when
            # the conv strides, and "same" (= valid on even sizes) so that odd sizes, where the
            # "same" binary conv rounds up, also add up (they fail in larq-zoo).
            self.shortcut = nn.Sequential(
                pad_same_avgpool2x2() if stride == 2 else nn.Identity(),
                init_(nn.Conv2d(in_channels, out_channels, 1, bias=False), "glorot_normal"),
                _bn(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x)) + self.shortcut(x)


class BinaryResNetE(ZooModel):
    r"""Binary ResNet-E (Bethge et al. 2019, arXiv 1906.08637)::

        stem (H ≥ 50): conv 64 7×7/2 (float) → BN → ReLU → maxpool 3/2 "same" → BN
        stem (H < 50, CIFAR): conv 64 3×3 (float) only
        4 stages × 2·blocks residual blocks (one binary 3×3 conv each; stride 2 at the first
        block of stages 2-4)
        ReLU → global average pool → dense classes (float, with bias)

    All BNs: momentum 0.9, ε 1e-5. ``binary_resnet_e18`` has 16 binary convolutions.

    Args:
        num_classes: logits.
        input_shape: (C, H, W); H < 50 selects the CIFAR stem, as larq-zoo does.
        num_layers: 18 or 34.
        initial_filters: stem width (64).
        filters: stage widths; None takes larq-zoo's (64, 128, 256, 512).
        binary_kernels: see :data:`xnorkit.models.BINARY_KERNELS`.
        clip_value: STE window and weight clip (1.25).
    """

    def __init__(self, num_classes: int = 1000, input_shape=(3, 224, 224), *, num_layers: int = 18,
                 initial_filters: int = 64, filters: Sequence[int] | None = None,
                 binary_kernels: str = "ste_sign", clip_value: float = 1.25):
        super().__init__()
        c, h, w = check_input_shape(input_shape)
        if num_layers not in RESNET_E_SPECS:
            raise ValueError(f"num_layers must be one of {sorted(RESNET_E_SPECS)}, got {num_layers}")
        self.default_input_shape = (c, h, w)
        self.num_classes = int(num_classes)
        if h < 50:
            self.stem = nn.Sequential(init_(nn.Conv2d(c, initial_filters, 3, padding=1, bias=False), "he_normal"))
        else:
            self.stem = nn.Sequential(
                init_(nn.Conv2d(c, initial_filters, 7, stride=2, padding=3, bias=False), "he_normal"),
                _bn(initial_filters), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1), _bn(initial_filters))
        depths, widths = RESNET_E_SPECS[num_layers]
        if filters is not None:
            if len(filters) != len(depths):
                raise ValueError(f"filters must give {len(depths)} stage widths, got {tuple(filters)}")
            widths = tuple(filters)
        blocks, width = [], initial_filters
        for stage, (n, out) in enumerate(zip(depths, widths)):
            for i in range(2 * n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(ResNetEBlock(width, out, stride, binary_kernels=binary_kernels,
                                           clip_value=clip_value))
                width = out
        self.blocks = nn.Sequential(*blocks)
        self.act = nn.ReLU()
        self.fc = init_(nn.Linear(width, num_classes), "glorot_normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.fc(global_avg_pool(self.act(self.blocks(self.stem(x)))))


@register_model("binary_resnet_e18")
def binary_resnet_e18(**kwargs) -> BinaryResNetE:
    """Binary ResNet-E 18. Options: :class:`BinaryResNetE`."""
    return BinaryResNetE(**{"num_layers": 18, **kwargs})
