"""Small BNNs of our own design for fast CPU training and microcontroller deployment.

* ``bnn_mnist_cnn``: a binary CNN for 28×28 grayscale digits/clothes (MNIST, Fashion-MNIST),
  sized to train to ≥ 99.3 % MNIST test accuracy in minutes on a CPU.
* ``vad_bnn``: a binary 1-D convolution network over audio feature frames (e.g. 40 log-mel
  bands × 64 frames), the seed of the voice-activity-detection work (seed 000's intent, spec
  seeds.md §2.6).

Design rules (both follow the practice of BinaryNet, XNOR-Net, Bi-Real Net and QuickNet):
the first layer sees real inputs and stays float (deployable as int8), the layers in the
middle are binary (sign-quantized inputs, ±1 weights) each followed by BatchNorm so the
converter folds BN into an integer threshold, max-pooling sits between the binary
convolution and its BN (pooling commutes with a monotone BN + sign, §1.4), and the classifier
reads real values so the logits keep their resolution. Binary convolutions pad with +1, which
costs nothing in the bit domain.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._common import (
    ZooModel,
    batch_norm,
    binary_conv1d,
    binary_conv2d,
    binary_linear,
    check_input_shape,
    global_avg_pool,
    init_,
    pool_out,
    too_small,
)
from ._registry import register_model

__all__ = ["BNNMnistCNN", "VadBNN"]


@register_model("bnn_mnist_cnn")
class BNNMnistCNN(ZooModel):
    r"""Binary CNN for MNIST-sized images::

        conv c1 3×3 (float) → maxpool 2 → BN                              14×14×c1
        bconv c2 3×3 → BN                                                  14×14×c2
        bconv c2 3×3 → maxpool 2 → BN                                      7×7×c2
        bconv c3 3×3 → maxpool 2 → BN                                      3×3×c3
        flatten → bdense ``hidden`` → BN → dense classes (float, reads the BN output)

    With the defaults (c = 32, 64, 128; hidden 256) it has 423,936 binary weights and about
    15.0 M multiply-accumulates per image, 98.5 % of them binary. BNs use momentum 0.9 (Keras
    convention), ε 1e-5. "bconv"/"bdense" = ``ste_sign`` inputs and binary weights.

    Args:
        num_classes: logits.
        input_shape: (C, H, W); at least 8×8.
        channels: (c1, c2, c3).
        hidden: width of the binary dense layer.
        binary_kernels: see :data:`xnorkit.models.BINARY_KERNELS`.
    """

    def __init__(self, num_classes: int = 10, input_shape=(1, 28, 28), *, channels: Sequence[int] = (32, 64, 128),
                 hidden: int = 256, binary_kernels: str = "ste_sign"):
        super().__init__()
        c, h, w = check_input_shape(input_shape)
        if len(channels) != 3:
            raise ValueError(f"channels must be (c1, c2, c3), got {tuple(channels)}")
        self.default_input_shape = (c, h, w)
        self.num_classes = int(num_classes)
        c1, c2, c3 = channels
        hs, ws = h, w
        for _ in range(3):
            hs, ws = pool_out(hs, 2, 2), pool_out(ws, 2, 2)
        if hs < 1 or ws < 1:
            raise too_small("bnn_mnist_cnn", self.default_input_shape, "three 2x2 max-pools need at least 8x8")

        def bn(ch: int, dims: int = 2) -> nn.Module:
            return batch_norm(ch, momentum=0.9, eps=1e-5, dims=dims)

        def bconv(cin: int, cout: int) -> nn.Module:
            return binary_conv2d(cin, cout, 3, pad_value=1.0, binary_kernels=binary_kernels, init="glorot_normal")

        self.features = nn.Sequential(
            init_(nn.Conv2d(c, c1, 3, padding=1, bias=False), "he_normal"), nn.MaxPool2d(2), bn(c1),
            bconv(c1, c2), bn(c2),
            bconv(c2, c2), nn.MaxPool2d(2), bn(c2),
            bconv(c2, c3), nn.MaxPool2d(2), bn(c3),
            nn.Flatten())
        self.classifier = nn.Sequential(
            binary_linear(c3 * hs * ws, hidden, binary_kernels=binary_kernels), bn(hidden, 1),
            init_(nn.Linear(hidden, num_classes), "glorot_uniform"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, exact=True)
        return self.classifier(self.features(x))


class VadBlock(nn.Module):
    """x + BN(bconv1d(x)): a dilated binary 1-D convolution on a real residual stream."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, binary_kernels: str):
        super().__init__()
        self.conv = binary_conv1d(channels, channels, kernel_size, dilation=dilation, pad_value=1.0,
                                  binary_kernels=binary_kernels, init="glorot_normal")
        self.norm = batch_norm(channels, momentum=0.9, eps=1e-5, dims=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.conv(x))


@register_model("vad_bnn")
class VadBNN(ZooModel):
    r"""Tiny binary temporal CNN for voice activity detection on feature frames (N, F, T)::

        conv1d ``channels`` k (float, real features) → BN
        for d in dilations: x + BN(bconv1d k, dilation d (x))      (Bi-Real-style residual)
        mean over time → dense classes (float)

    With the defaults (40 features, 64 channels, k = 3, dilations 1, 2, 4, 8) the receptive
    field is 33 frames, 49,152 binary and 7,680 float conv weights. The output is one set of
    logits per window (speech / non-speech for ``num_classes=2``); slide the window for
    frame-level decisions. Any T ≥ 1 works.

    Args:
        num_classes: logits (2: non-speech, speech).
        input_shape: (F, T): feature bands and the nominal window length in frames.
        channels: width of the residual stream.
        kernel_size: temporal kernel of every convolution.
        dilations: one binary block per entry.
        binary_kernels: see :data:`xnorkit.models.BINARY_KERNELS`.
    """

    def __init__(self, num_classes: int = 2, input_shape=(40, 64), *, channels: int = 64, kernel_size: int = 3,
                 dilations: Sequence[int] = (1, 2, 4, 8), binary_kernels: str = "ste_sign"):
        super().__init__()
        f, t = check_input_shape(input_shape, 2)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length padding), got {kernel_size}")
        self.default_input_shape = (f, t)
        self.num_classes = int(num_classes)
        self.stem = nn.Sequential(
            init_(nn.Conv1d(f, channels, kernel_size, padding=kernel_size // 2, bias=False), "he_normal"),
            batch_norm(channels, momentum=0.9, eps=1e-5, dims=1))
        self.blocks = nn.Sequential(*(VadBlock(channels, kernel_size, d, binary_kernels) for d in dilations))
        self.fc = init_(nn.Linear(channels, num_classes), "glorot_uniform")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.fc(global_avg_pool(self.blocks(self.stem(x))))
