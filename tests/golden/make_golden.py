"""Writes the golden model files of the current format version into tests/golden/v<major>/.

Run once when a format version is released (``python tests/golden/make_golden.py``); the files
are then committed and never regenerated: tests/golden/test_golden.py checks that every
version's files keep loading and computing the stored outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import xnorkit.nn as xnn
from xnorkit import reference as ref
from xnorkit.convert import convert
from xnorkit.convert import format as xkf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "convert"))
from _util import randomize_bn  # noqa: E402

BIN = dict(input_quantizer="ste_sign", weight_quantizer="ste_sign")


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.b1 = xnn.QuantConv2d(8, 8, 3, padding=1, bias=False, **BIN)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.AvgPool2d(2)
        self.short = nn.Conv2d(8, 8, 1, groups=8)
        self.b2 = xnn.QuantConv2d(8, 8, 3, stride=2, padding=1, pad_value=-1.0, bias=False, **BIN)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.bn0(self.stem(x))
        x = x + self.bn1(self.b1(x))
        y = torch.cat([self.bn2(self.b2(x)), torch.relu(self.short(self.pool(x)))], dim=1)
        return torch.softmax(self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1)), dim=1)


def models():
    torch.manual_seed(2026)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                        xnn.QuantConv2d(8, 16, 3, padding=1, bias=False, **BIN), nn.MaxPool2d(2), nn.BatchNorm2d(16),
                        xnn.QuantConv2d(16, 16, 3, padding=1, pad_value=1.0, bias=False, **BIN), nn.BatchNorm2d(16),
                        nn.Flatten(), xnn.QuantLinear(16 * 4 * 4, 10, **BIN), nn.BatchNorm1d(10))
    vad = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.BatchNorm1d(8),
                        xnn.QuantConv1d(8, 8, 3, padding=2, dilation=2, pad_value=1.0, bias=False, **BIN),
                        nn.BatchNorm1d(8), nn.PReLU(8), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 2))
    calib = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    return {
        "binary_cnn": (randomize_bn(cnn.eval(), 1), torch.randn(2, 3, 8, 8), {"precision": "float"}),
        "binary_cnn_int8": (cnn, calib[:2], {"calibration": calib}),
        "residual_concat": (randomize_bn(Residual().eval(), 2), torch.randn(2, 3, 8, 8), {"precision": "float"}),
        "conv1d": (randomize_bn(vad.eval(), 3), torch.randn(2, 4, 12), {"precision": "float"}),
    }


def main() -> None:
    out = Path(__file__).parent / f"v{xkf.VERSION_MAJOR}"
    out.mkdir(exist_ok=True)
    for name, (model, x, kw) in models().items():
        conv = convert(model, x, labels=[f"class{i}" for i in range(4)], input_mean=[0.5], input_std=[0.25],
                       config={"golden": name}, **kw)
        conv.save(out / f"{name}.xk")
        y = ref.run(conv.model, x.numpy())[0]
        np.savez(out / f"{name}.npz", x=x.numpy(), y=y)
        print(name, (out / f"{name}.xk").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
