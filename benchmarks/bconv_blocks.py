"""Small models of one binary layer shape each, for layer-level A/B runs of the engine.

    .venv/bin/python benchmarks/bconv_blocks.py OUT_DIR
    .venv/bin/python benchmarks/ab_engine.py HEAD WORK OUT_DIR/*.xk --threads 1 --runs 300

Each model is a chain of four Bi-Real blocks (sign -> binary 3x3 convolution -> BatchNorm ->
+ shortcut, the add fused into the convolution by the engine) at one shape, converted with
float non-binary layers; random weights and BatchNorm statistics (seed 0). A whole zoo model
hides a 5% change of one layer shape in the noise of this shared machine; four identical
blocks make it measurable. Shapes: the 3x3 layers of QuickNetSmall (32 channels at 56x56,
64 at 28x28), Bi-Real Net / QuickNet (64 at 56x56, 128 at 28x28, 256 at 14x14, 512 at 7x7),
BinaryAlexNet's 384 channels at 13x13 and one 96-channel case.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from xnorkit.convert.pipeline import convert
from xnorkit.models.birealnet import BiRealBlock

SHAPES = [  # name, channels, spatial size
    ("blk32_56", 32, 56),
    ("blk64_28", 64, 28),
    ("blk64_56", 64, 56),
    ("blk96_28", 96, 28),
    ("blk128_28", 128, 28),
    ("blk256_14", 256, 14),
    ("blk512_7", 512, 7),
    ("blk384_13", 384, 13),
]


def block_model(c: int) -> nn.Module:
    m = nn.Sequential(*[BiRealBlock(c, c, norm="batch", binary_kernels="ste_sign", input_quantizer="approx_sign")
                        for _ in range(4)]).eval()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="folder for the .xk files")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name, c, h in SHAPES:
        data = convert(block_model(c), torch.randn(1, c, h, h), precision="float", verbose=False).data
        (args.out / f"{name}.xk").write_bytes(data)
        print(f"{args.out / name}.xk: {len(data)} bytes")


if __name__ == "__main__":
    main()
