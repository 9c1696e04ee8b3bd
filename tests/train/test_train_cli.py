"""``xnorkit train`` / ``xnorkit evaluate`` end to end on real MNIST subsets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from xnorkit.cli import main
from xnorkit.train.cli import parse_duration

SMALL = ["--epochs", "1", "--train-subset", "500", "--test-subset", "200", "--threads", "1",
         "--no-progress", "--histogram-every", "0"]


def _run(args, env=None):
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_help_lists_the_options():
    res = _run(["train", "--help"])
    assert res.exit_code == 0
    for opt in ("--dataset", "--hparams-set", "--hparams", "--epochs", "--log-dir", "--resume",
                "--device", "--data-dir", "--seed", "--binary", "--batch_norm", "--n_hidden",
                "--lr", "--time-limit", "Examples:"):
        assert opt in res.output, opt
    assert _run(["evaluate", "--help"]).exit_code == 0


def test_list_hparams():
    res = _run(["train", "binarynet_batch", "--list-hparams"])
    assert res.exit_code == 0
    assert "bop2ndOrder_CIFAR" in res.output and "bop_sec52" in res.output


def test_seed000_flags_take_effect_and_evaluate(tmp_path, data_root):
    log = tmp_path / "runs"
    res = _run(["train", "binarynet_mlp", "--dataset", "mnist", "--data-dir", str(data_root),
                "--hparams-set", "seed000", "--n_hidden", "48", "--lr", "0.005", "--batch_norm",
                "--reg", "0", "--batch_size", "50", "--log_dir", str(log), *SMALL])
    assert res.exit_code == 0, res.output
    runs = list(log.iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert run.name == ("binarynet_mlp-mnist-seed000-batch_norm=T-batch_size50-epochs1-"
                        "hidden_units48-l10-learning_rate0.005-1").replace("=", "")
    cfg = json.loads((run / "config.json").read_text())["config"]
    hp = cfg["hparams"]
    assert hp["learning_rate"] == 0.005 and hp["l1"] == 0 and hp["batch_size"] == 50
    assert hp["model"]["hidden_units"] == 48 and hp["model"]["batch_norm"] is True
    state = torch.load(run / "model.pt", weights_only=False)["model"]
    assert state["layers.fc1.weight"].shape == (48, 784)
    assert any(k.startswith("layers.bn1.") for k in state)  # --batch_norm built the BN layers
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 10 and metrics["test_accuracy"] > 0.3  # chance: 0.1
    # evaluate: same accuracy as the run's final evaluation.
    ev = _run(["evaluate", str(run), "--data-dir", str(data_root), "--subset", "200", "--json"])
    assert ev.exit_code == 0, ev.output
    got = json.loads(ev.output)
    assert got["accuracy"] == pytest.approx(metrics["test_accuracy"]) and got["count"] == 200
    # --no-binary builds the full-precision MLP (no quantized layer at all).
    res = _run(["train", "binarynet_mlp", "--dataset", "mnist", "--data-dir", str(data_root),
                "--no-binary", "--n_hidden", "16", "--log-dir", str(log), *SMALL])
    assert res.exit_code == 0, res.output
    run2 = next(p for p in log.iterdir() if "binaryF" in p.name)
    from xnorkit.train import load_trained_model

    model, _ = load_trained_model(run2 / "model.pt")
    assert not any(hasattr(m, "export_spec") for m in model.modules())


def test_bad_input_gives_clear_errors(tmp_path, data_root):
    res = CliRunner().invoke(main, ["train", "binarynet_mlp", "--dataset", "mnist",
                                    "--hparams", "epoch=3", "--log-dir", str(tmp_path)])
    assert res.exit_code != 0 and "unknown key 'epoch'" in res.output
    res = CliRunner().invoke(main, ["train", "binarynet_mlp", "--dataset", "mnist",
                                    "--data-dir", str(tmp_path / "empty"), "--no-download",
                                    "--log-dir", str(tmp_path)])
    assert res.exit_code != 0
    assert "train-images-idx3-ubyte.gz" in res.output and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in res.output
    res = CliRunner().invoke(main, ["train", "no_such_model", "--dataset", "mnist",
                                    "--data-dir", str(data_root), "--log-dir", str(tmp_path)])
    assert res.exit_code != 0 and "unknown model 'no_such_model'" in res.output
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path)])
    assert res.exit_code != 0 and "no model.pt or checkpoint.pt" in res.output
    # seed 000's --xnor needs the GPU kernels: on the CPU it is refused before any run directory
    res = CliRunner().invoke(main, ["train", "binarynet_mlp", "--dataset", "mnist", "--xnor",
                                    "--data-dir", str(data_root), "--log-dir", str(tmp_path / "x")])
    assert res.exit_code != 0 and "--xnor" in res.output and "CUDA device" in res.output
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_parse_duration():
    assert parse_duration("540") == 540 and parse_duration("9m") == 540
    assert parse_duration("1h30m") == 5400 and parse_duration("2.5s") == 2.5
    import click

    with pytest.raises(click.BadParameter, match="expected a duration"):
        parse_duration("ten minutes")


def test_cnn_channels_last_on_fashion_mnist(tmp_path, data_root):
    """A zoo CNN in NHWC memory format trains and evaluates on Fashion-MNIST."""
    res = _run(["train", "bnn_mnist_cnn", "--dataset", "fashion_mnist", "--data-dir", str(data_root),
                "--hparams", "channels_last=true,model.channels=[8,16,16],model.hidden=32,"
                             "preprocess=random_shift,learning_rate=0.01,batch_size=25",
                "--log-dir", str(tmp_path), *SMALL])
    assert res.exit_code == 0, res.output
    run = next(tmp_path.iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] and metrics["test_accuracy"] > 0.4  # chance: 0.1
    saved = json.loads((run / "config.json").read_text())["config"]["hparams"]["model"]
    assert saved["input_shape"] == [1, 28, 28] and saved["num_classes"] == 10
    ev = _run(["evaluate", str(run / "checkpoint.pt"), "--data-dir", str(data_root), "--subset", "200",
               "--json"])
    assert json.loads(ev.output)["accuracy"] == pytest.approx(metrics["test_accuracy"])
