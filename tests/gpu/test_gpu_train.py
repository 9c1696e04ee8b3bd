"""Seed 000's ``--xnor``: training with the binary layers' forward pass on the packed-bit GPU
kernels gives the run the float simulation gives (CUDA only; the CPU refusal is tested in
tests/train/test_train_cli.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _data_root() -> Path:
    root = os.environ.get("XNORKIT_DATA")
    if not root or not (Path(root) / "mnist").exists():
        pytest.skip("set XNORKIT_DATA to the datasets folder (MNIST)")
    return Path(root)


def test_xnor_training_matches_float_simulation(tmp_path):
    pytest.importorskip("triton", reason="Triton is not installed")
    from xnorkit.kernels.gpu import unavailable_reason

    if unavailable_reason() is not None:
        pytest.skip(unavailable_reason())
    from xnorkit.train import RunConfig, fit
    from xnorkit.train.hparams import get_hparams

    metrics = {}
    for xnor in (False, True):
        hp = get_hparams("binarynet_mlp", "ours")
        hp = hp.replace(epochs=1, batch_size=256, model={**hp.model, "hidden_units": 256})
        cfg = RunConfig(model="binarynet_mlp", dataset="mnist", hparams=hp, hparams_set="ours",
                        device="cuda", data_dir=str(_data_root()),
                        run_dir=str(tmp_path / f"xnor{int(xnor)}"), train_subset=2048, test_subset=512,
                        progress=False, tensorboard=False, xnor=xnor)
        metrics[xnor] = fit(cfg)
        assert json.loads((tmp_path / f"xnor{int(xnor)}" / "metrics.json").read_text())["finished"]
    # Same seed, same batches: the integer sums are equal, so the runs agree (up to the
    # nondeterminism of cuBLAS reductions in the float layers).
    assert abs(metrics[True]["test_accuracy"] - metrics[False]["test_accuracy"]) <= 0.01
    assert abs(metrics[True]["train_loss"] - metrics[False]["train_loss"]) <= 0.02 * metrics[False]["train_loss"]
