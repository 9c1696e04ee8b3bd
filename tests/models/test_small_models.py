"""Our small models: the MNIST binary CNN and the VAD 1-D binary CNN."""

from __future__ import annotations

import pytest
import torch

from xnorkit.models import get_model
from xnorkit.summary import summary


def test_bnn_mnist_cnn_budget_and_precisions():
    """The documented design: one float conv, three binary convs, a binary dense, a float
    classifier; ~15.0 M MACs per image, 98.5 % of them binary."""
    m = get_model("bnn_mnist_cnn").eval()
    prec = [(r.kind, r.input_bits, r.weight_bits) for r in m.layer_precisions()]
    assert prec == [("Conv2d", 32, 32), ("QuantConv2d", 1, 1), ("QuantConv2d", 1, 1), ("QuantConv2d", 1, 1),
                    ("QuantLinear", 1, 1), ("Linear", 32, 32)]
    s = summary(m, (1, 1, 28, 28), print_fn=None)
    assert s.totals.binary_macs == 3_612_672 + 7_225_344 + 3_612_672 + 294_912
    assert s.totals.binary_macs + s.totals.float_macs == 14_973_952
    assert s.totals.binary_macs / (s.totals.binary_macs + s.totals.float_macs) > 0.98
    for r in m.layer_precisions():
        layer = m.get_submodule(r.name)
        if r.kind == "QuantConv2d":
            assert layer.export_spec().pad_value == 1.0
    with pytest.raises(ValueError, match="bnn_mnist_cnn: input_shape .* too small"):
        get_model("bnn_mnist_cnn", input_shape=(1, 7, 7))
    fashion = get_model("bnn_mnist_cnn", input_shape=(3, 32, 32), num_classes=4)
    assert fashion(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_vad_bnn_any_length_and_receptive_field():
    """Dilations 1, 2, 4, 8 with k = 3 after a k = 3 stem: a frame's features depend on the
    33 frames centred on it (±16) and on nothing further away."""
    torch.manual_seed(0)
    m = get_model("vad_bnn").eval()
    for t in (1, 17, 200):
        assert m(torch.randn(3, 40, t)).shape == (3, 2)
    trunk = torch.nn.Sequential(m.stem, m.blocks)
    x = torch.randn(1, 40, 101)
    with torch.no_grad():
        ref = trunk(x)[..., 50]
        far = x.clone()
        far[..., :34] += 5.0   # frames 0..33: more than 16 away from frame 50
        far[..., 67:] -= 5.0   # frames 67..100
        assert torch.equal(trunk(far)[..., 50], ref)
        near = x.clone()
        near[..., 34] += 5.0   # exactly 16 frames away: inside the receptive field
        near[..., 66] -= 5.0
        assert not torch.equal(trunk(near)[..., 50], ref)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        get_model("vad_bnn", kernel_size=4)
    with pytest.raises(ValueError, match=r"input_shape must be \(C, L\)"):
        get_model("vad_bnn", input_shape=(40, 64, 1))


@pytest.mark.slow
def test_bnn_mnist_cnn_learns_mnist():
    """A short CPU run on real MNIST (../shared/datasets): 400 Adam steps of batch 100 on
    inputs in [-1, 1] must already classify the first 2000 test digits well above 95 %."""
    from pathlib import Path

    from xnorkit.data import load_dataset
    from xnorkit.nn import apply_constraints

    root = Path(__file__).resolve().parents[3] / "shared" / "datasets"
    if not (root / "mnist").is_dir():
        pytest.skip(f"MNIST not found under {root}")
    train = load_dataset("mnist", "train", root, download=False)
    test = load_dataset("mnist", "test", root, download=False)

    def prep(images: torch.Tensor) -> torch.Tensor:
        return images.float() / 127.5 - 1.0

    torch.manual_seed(0)
    m = get_model("bnn_mnist_cnn")
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m.train()
    for _ in range(400):
        idx = torch.randint(0, len(train), (100,))
        loss = torch.nn.functional.cross_entropy(m(prep(train.images[idx])), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        apply_constraints(m)
    m.eval()
    with torch.no_grad():
        acc = (m(prep(test.images[:2000])).argmax(1) == test.labels[:2000]).float().mean().item()
    assert acc > 0.95, acc
