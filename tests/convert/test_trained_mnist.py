"""A model trained on real MNIST keeps its test-set accuracy through the converter and the C
engine: the same prediction for every one of the 10,000 test images (issue 5's exactness rule on
trained, not random, weights)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import xnorkit
from xnorkit.convert import convert
from xnorkit.models import get_model


def _root() -> Path:
    for cand in (os.environ.get("XNORKIT_DATA"), Path(__file__).resolve().parents[3] / "shared" / "datasets"):
        if cand and (Path(cand) / "mnist").is_dir():
            return Path(cand)
    pytest.skip("real MNIST not found: set XNORKIT_DATA")


def test_trained_mnist_model_has_identical_test_accuracy_in_the_engine():
    from xnorkit.data import load_dataset

    root = _root()
    train, test = load_dataset("mnist", "train", root, download=False), load_dataset("mnist", "test", root, download=False)
    xtr = train.images[:12000].float().div_(127.5).sub_(1.0)
    ytr = train.labels[:12000]
    xte = test.images.float().div_(127.5).sub_(1.0)
    yte = test.labels
    torch.manual_seed(0)
    model = get_model("binarynet_mlp", hidden_units=128, num_hidden_layers=2, dropout_in=0.0, dropout_hidden=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for i in range(0, len(xtr), 100):
        loss = torch.nn.functional.cross_entropy(model(xtr[i:i + 100]), ytr[i:i + 100])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        xnorkit.nn.apply_constraints(model)
    model.eval()
    with torch.inference_mode():
        torch_pred = torch.cat([model(xte[i:i + 2000]) for i in range(0, len(xte), 2000)]).argmax(1).numpy()
    torch_acc = float((torch_pred == yte.numpy()).mean())
    assert torch_acc > 0.6, f"training went wrong ({torch_acc:.3f})"  # trained (chance: 0.1)

    engine = xnorkit.Model(convert(model, xte[:1], precision="float").data, max_batch=500)
    eng_pred = np.concatenate([np.asarray(engine.run(xte[i:i + 500].numpy())).argmax(1) for i in range(0, len(xte), 500)])
    assert (eng_pred == torch_pred).all(), f"{int((eng_pred != torch_pred).sum())} of 10000 predictions differ"
    assert float((eng_pred == yte.numpy()).mean()) == torch_acc
