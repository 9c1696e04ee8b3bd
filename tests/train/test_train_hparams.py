"""Hyperparameter sets, overrides, schedules, losses, run naming and atomic files."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from xnorkit.train import (
    HParams,
    apply_overrides,
    get_hparams,
    list_hparams,
    parse_overrides,
    schedule_value,
    squared_hinge,
)
from xnorkit.train.checkpoint import (
    atomic_save,
    atomic_write_json,
    latest_run_dir,
    load_checkpoint,
    new_run_dir,
    run_name,
)
from xnorkit.train.hparams import make_schedule
from xnorkit.train.losses import get_loss


def test_parse_overrides_types():
    got = parse_overrides(["epochs=5,learning_rate=1e-3,glorot_lr_scale=true", "adam_betas=(0.8,0.99)",
                           "preprocess=resize_and_flip,learning_rate_end=none,model.n=[1,2]"])
    assert got == {"epochs": 5, "learning_rate": 1e-3, "glorot_lr_scale": True,
                   "adam_betas": [0.8, 0.99], "preprocess": "resize_and_flip",
                   "learning_rate_end": None, "model.n": [1, 2]}
    with pytest.raises(ValueError, match="expected key=value, got 'epochs'"):
        parse_overrides("epochs")


def test_apply_overrides_checks_keys_and_types():
    hp = HParams(model={"n_hidden": 512})
    out = apply_overrides(hp, {"epochs": 3, "learning_rate": 1, "n_hidden": 64, "model.dropout": 0.1,
                               "adam_betas": [0.5, 0.9]})
    assert out.epochs == 3 and out.learning_rate == 1.0 and isinstance(out.learning_rate, float)
    assert out.model == {"n_hidden": 64, "dropout": 0.1} and out.adam_betas == (0.5, 0.9)
    assert hp.model == {"n_hidden": 512}  # the original is untouched
    with pytest.raises(ValueError, match="unknown key 'epoch'; known: .*epochs.*model.n_hidden"):
        apply_overrides(hp, {"epoch": 3})
    with pytest.raises(ValueError, match="hparams.epochs: expected an integer, got 2.5"):
        apply_overrides(hp, {"epochs": 2.5})
    with pytest.raises(ValueError, match="hparams.glorot_lr_scale: expected true/false"):
        apply_overrides(hp, {"glorot_lr_scale": 1})
    with pytest.raises(ValueError, match="hparams.loss: expected cross_entropy or squared_hinge"):
        apply_overrides(hp, {"loss": "hinge"})


def test_hparams_validation_and_round_trip():
    with pytest.raises(ValueError, match="hparams.optimizer: expected adam"):
        HParams(optimizer="lamb")
    with pytest.raises(ValueError, match="hparams.gamma_end: expected a value"):
        HParams(gamma_schedule="linear")
    hp = HParams(epochs=7, adam_betas=(0.8, 0.9), model={"a": 1})
    d = json.loads(json.dumps(hp.to_dict()))
    assert HParams.from_dict(d) == hp
    with pytest.raises(ValueError, match=r"unknown hparams keys \['bogus'\]"):
        HParams.from_dict({**d, "bogus": 1})


def test_registered_sets():
    sets = list_hparams("binarynet_batch")
    for name in ("bop", "bop2ndOrder", "bop2ndOrder_unbiased", "bop_sec52", "bop2ndOrder_CIFAR",
                 "bop2ndOrder_unbiased_CIFAR", "bop2ndOrder_testExp", "bop_testPoly"):
        assert name in sets
    cifar = get_hparams("binarynet_batch", "bop2ndOrder_CIFAR")
    assert (cifar.optimizer, cifar.epochs, cifar.batch_size) == ("bop2ndorder", 500, 50)
    assert (cifar.threshold, cifar.threshold_end, cifar.gamma, cifar.gamma_end,
            cifar.sigma, cifar.sigma_end) == (1e-5, 1e-8, 1e-2, 1e-5, 1e-7, 1e-2)
    assert get_hparams("binarynet_batch", "bop2ndOrder_unbiased_CIFAR").bop_correction == "code"
    assert get_hparams("binarynet_batch", "bop2ndOrder").threshold == 1e-5
    assert get_hparams("binarynet_layernorm", "bop2ndOrder").threshold == 1e-6
    paper = get_hparams("binarynet_mlp", "binarynet")
    assert (paper.loss, paper.learning_rate, paper.learning_rate_end, paper.batch_size,
            paper.validation_size, paper.glorot_lr_scale) == ("squared_hinge", 3e-3, 3e-7, 100,
                                                              10000, True)
    # Each call returns a fresh copy.
    a = get_hparams("binarynet_batch", "bop")
    a.model["x"] = 1
    assert "x" not in get_hparams("binarynet_batch", "bop").model
    with pytest.raises(ValueError, match="unknown hparams set 'nope' for model 'binarynet_batch'"):
        get_hparams("binarynet_batch", "nope")
    assert get_hparams("some_custom_model") == HParams()


def test_schedules():
    spe = 10
    hp = HParams(epochs=4, learning_rate=1e-2, learning_rate_schedule="exponential",
                 learning_rate_end=1e-4)
    # BinaryNet: x (1e-4/1e-2)^(1/4) per epoch, constant within an epoch.
    assert schedule_value(hp, "learning_rate", 0, spe) == pytest.approx(1e-2)
    assert schedule_value(hp, "learning_rate", 9, spe) == pytest.approx(1e-2)
    assert schedule_value(hp, "learning_rate", 10, spe) == pytest.approx(1e-2 * 0.01 ** 0.25)
    assert schedule_value(hp, "learning_rate", 40, spe) == pytest.approx(1e-4)
    lin = HParams(epochs=100, gamma=1e-2, gamma_schedule="linear", gamma_end=1e-5)
    assert schedule_value(lin, "gamma", 500, spe) == pytest.approx((1e-2 + 1e-5) / 2)
    assert schedule_value(lin, "gamma", 5000, spe) == pytest.approx(1e-5)
    st = HParams(epochs=300, threshold=1e-6, threshold_schedule="step", threshold_decay=0.1,
                 decay_epochs=100)
    assert schedule_value(st, "threshold", 999, spe) == pytest.approx(1e-6)
    assert schedule_value(st, "threshold", 1000, spe) == pytest.approx(1e-7)
    assert schedule_value(st, "threshold", 2000, spe) == pytest.approx(1e-8)
    cos = HParams(epochs=2, learning_rate=1.0, learning_rate_schedule="cosine")
    assert schedule_value(cos, "learning_rate", 10, spe) == pytest.approx(0.5)
    assert schedule_value(cos, "learning_rate", 20, spe) == pytest.approx(0.0, abs=1e-12)
    # Schedules are picklable (they live in optimizer state dicts).
    import pickle

    s = make_schedule(lin, "gamma", spe)
    assert pickle.loads(pickle.dumps(s))(500) == s(500)


def test_squared_hinge_by_hand():
    y = torch.tensor([[0.5, -2.0, 0.0], [2.0, 0.3, -0.4]])
    t = torch.tensor([0, 1])
    # targets +-1: row 0: (+1,-1,-1), row 1: (-1,+1,-1)
    terms = [(1 - 0.5) ** 2, 0.0, 1.0, (1 + 2.0) ** 2, (1 - 0.3) ** 2, (1 - 0.4) ** 2]
    assert squared_hinge(y, t).item() == pytest.approx(sum(terms) / 6)
    # Not the square of the mean hinge (seed 002's bug).
    assert squared_hinge(y, t).item() != pytest.approx((sum(math.sqrt(v) for v in terms) / 6) ** 2)
    with pytest.raises(ValueError, match="unknown loss 'l2'"):
        get_loss("l2")


def test_run_names_and_auto_increment(tmp_path):
    name = run_name("binarynet_mlp", "mnist", "ours", {"model.n_hidden": 1024, "learning_rate": 0.003})
    assert name == "binarynet_mlp-mnist-ours-learning_rate0.003-n_hidden1024"
    long = run_name("m", "d", "s", {f"key{i}": "v" * 20 for i in range(10)})
    assert len(long) <= 120
    assert long != run_name("m", "d", "s", {f"key{i}": "w" * 20 for i in range(10)})
    a = new_run_dir(tmp_path, name)
    b = new_run_dir(tmp_path, name)
    assert (a.name, b.name) == (f"{name}-1", f"{name}-2")
    assert latest_run_dir(tmp_path, name) == b
    assert latest_run_dir(tmp_path, "other") is None


def test_atomic_writes_leave_old_file_on_failure(tmp_path):
    path = tmp_path / "ck.pt"
    atomic_save({"model": {"w": torch.ones(2)}, "config": {}}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"model": Boom(), "config": {}}, path)
    assert os.listdir(tmp_path) == ["ck.pt"]  # no temporary file left
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    atomic_write_json({"a": 1}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match=r"none\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")
