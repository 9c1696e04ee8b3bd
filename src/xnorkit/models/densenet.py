"""BinaryDenseNet (Bethge, Yang, Bornstein, Meinel 2019, "Back to Simplicity: How to Train
Accurate BNNs from Scratch?", arXiv 1906.08637).

Layer for layer as larq-zoo defines it (``larq/zoo: larq_zoo/literature/densenet.py``,
``BinaryDenseNetFactory`` / ``BinaryDenseNet28Factory``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._common import ZooModel, batch_norm, binary_conv2d, check_input_shape, global_avg_pool, init_
from ._registry import register_model

__all__ = ["BinaryDenseNet", "DenseLayer", "binary_densenet28"]


def _bn(ch: int) -> nn.Module:
    return batch_norm(ch, momentum=0.9, eps=1e-5)


class DenseLayer(nn.Module):
    """concat(x, bconv3×3(BN(x))): ``growth_rate`` new binary features per layer. The binary
    conv has ``ste_sign`` inputs and weights with clip value 1.3, weights clipped to
    [−1.3, 1.3], zero padding, optional dilation."""

    def __init__(self, in_channels: int, growth_rate: int, dilation: int, *, binary_kernels: str,
                 clip_value: float):
        super().__init__()
        self.norm = _bn(in_channels)
        self.conv = binary_conv2d(in_channels, growth_rate, 3, dilation=dilation, input_clip=clip_value,
                                  binary_kernels=binary_kernels, clip_value=clip_value, init="glorot_normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.norm(x))], dim=1)


class BinaryDenseNet(ZooModel):
    r"""BinaryDenseNet (Bethge et al. 2019, arXiv 1906.08637)::

        stem (H ≥ 50): conv 64 7×7/2 (float) → BN → ReLU → maxpool 3/2 "same"
        stem (H < 50, CIFAR): conv 64 3×3 (float) only
        for each block b: layers[b] × dense layer (BN → binary 3×3 conv, concat)
          between blocks: BN → maxpool 2/2 (unless the next block is dilated) → ReLU
                          → 1×1 float conv to round(C // reduction[b] / 32)·32 channels
        BN → ReLU → global average pool → dense classes (float, he-normal, with bias)

    All BNs: momentum 0.9, ε 1e-5. ``binary_densenet28``: layers (6, 6, 6, 5), reduction
    (2.7, 2.7, 2.2), growth 64: 23 binary convolutions, 4,202,496 binary weights.

    Args:
        num_classes: logits.
        input_shape: (C, H, W); H < 50 selects the CIFAR stem, as larq-zoo does.
        layers / reduction / dilation_rate: the variant's block depths, transition
            reductions and per-block dilations.
        initial_filters / growth_rate: 64 / 64.
        binary_kernels: see :data:`xnorkit.models.BINARY_KERNELS`.
        clip_value: STE window and weight clip (1.3).
    """

    def __init__(self, num_classes: int = 1000, input_shape=(3, 224, 224), *,
                 layers: Sequence[int] = (6, 6, 6, 5), reduction: Sequence[float] = (2.7, 2.7, 2.2),
                 dilation_rate: Sequence[int] = (1, 1, 1, 1), initial_filters: int = 64, growth_rate: int = 64,
                 binary_kernels: str = "ste_sign", clip_value: float = 1.3):
        super().__init__()
        c, h, w = check_input_shape(input_shape)
        if len(reduction) != len(layers) - 1 or len(dilation_rate) != len(layers):
            raise ValueError(f"need len(reduction) == len(layers) - 1 and len(dilation_rate) == len(layers); "
                             f"got layers={tuple(layers)}, reduction={tuple(reduction)}, "
                             f"dilation_rate={tuple(dilation_rate)}")
        self.default_input_shape = (c, h, w)
        self.num_classes = int(num_classes)
        if h < 50:
            self.stem = nn.Sequential(init_(nn.Conv2d(c, initial_filters, 3, padding=1, bias=False), "he_normal"))
        else:
            self.stem = nn.Sequential(
                init_(nn.Conv2d(c, initial_filters, 7, stride=2, padding=3, bias=False), "he_normal"),
                _bn(initial_filters), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1))
        body: list[nn.Module] = []
        width = initial_filters
        for b, n_layers in enumerate(layers):
            for _ in range(n_layers):
                body.append(DenseLayer(width, growth_rate, dilation_rate[b], binary_kernels=binary_kernels,
                                       clip_value=clip_value))
                width += growth_rate
            if b < len(layers) - 1:
                # larq-zoo: round(C // reduction / 32) * 32, with Python's float floor division
                out = round(width // reduction[b] / 32) * 32
                if out < 1:
                    raise ValueError(f"binary densenet: transition {b + 1} would have {out} channels "
                                     f"({width} // {reduction[b]} rounded to a multiple of 32)")
                trans: list[nn.Module] = [_bn(width)]
                if dilation_rate[b + 1] == 1:
                    trans.append(nn.MaxPool2d(2, 2))
                trans += [nn.ReLU(), init_(nn.Conv2d(width, out, 1, bias=False), "he_normal")]
                body.append(nn.Sequential(*trans))
                width = out
        self.body = nn.Sequential(*body)
        self.head_norm = _bn(width)
        self.act = nn.ReLU()
        self.fc = init_(nn.Linear(width, num_classes), "he_normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.fc(global_avg_pool(self.act(self.head_norm(self.body(self.stem(x))))))


@register_model("binary_densenet28")
def binary_densenet28(**kwargs) -> BinaryDenseNet:
    """BinaryDenseNet 28: layers (6, 6, 6, 5), reduction (2.7, 2.7, 2.2), no dilation.
    Options: :class:`BinaryDenseNet`."""
    return BinaryDenseNet(**{"layers": (6, 6, 6, 5), "reduction": (2.7, 2.7, 2.2),
                             "dilation_rate": (1, 1, 1, 1), **kwargs})
