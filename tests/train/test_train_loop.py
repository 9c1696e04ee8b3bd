"""The training loop on real MNIST subsets: smoke run, outputs, exact resume, stops, DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from xnorkit.nn import QuantLinear
from xnorkit.train import HParams, RunConfig, evaluate_file, fit

REPO = Path(__file__).resolve().parents[2]


def TinyBinaryLinear(i: int, o: int, binary_input: bool = True) -> nn.Module:
    """A BinaryNet dense layer from xnorkit.nn: sign weights, sign inputs, clip to [-1, 1]."""
    return QuantLinear(i, o, bias=False, input_quantizer="ste_sign" if binary_input else None,
                       weight_quantizer="ste_sign", weight_clip=1.0)


def tiny_bnn(dropout: float = 0.2, bn: bool = True) -> nn.Module:
    """784 -> 64 -> 10 binary MLP. ``bn=False`` has no cross-sample statistics (for the
    data-parallel equivalence test): LayerNorm, and a float output layer."""
    torch.manual_seed(0)
    layers = [nn.Flatten(), TinyBinaryLinear(784, 64, binary_input=False),
              nn.BatchNorm1d(64) if bn else nn.LayerNorm(64), nn.Dropout(dropout)]
    if bn:
        layers += [TinyBinaryLinear(64, 10), nn.BatchNorm1d(10)]
    else:
        layers += [nn.Hardtanh(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def _cfg(tmp_path, data_root, **kw) -> RunConfig:
    hp = kw.pop("hparams", None) or HParams(epochs=2, batch_size=50, learning_rate=1e-2,
                                            loss="squared_hinge", glorot_lr_scale=True,
                                            preprocess="random_shift")
    base = dict(model="tiny_bnn", dataset="mnist", hparams=hp, data_dir=str(data_root),
                log_dir=str(tmp_path / "runs"), train_subset=600, test_subset=300, log_every=4,
                progress=False, threads=1)
    base.update(kw)
    return RunConfig(**base)


def test_smoke_one_epoch_outputs(tmp_path, data_root):
    cfg = _cfg(tmp_path, data_root, hparams=HParams(epochs=1, batch_size=50, learning_rate=1e-2,
                                                    loss="squared_hinge", glorot_lr_scale=True))
    m = fit(cfg, tiny_bnn)
    run = Path(m["run_dir"])
    assert run.name == "tiny_bnn-mnist-default-1"
    assert m["finished"] and m["epochs_completed"] == 1 and m["global_step"] == 12
    assert m["test_accuracy"] > 0.5  # well above chance (0.1) after 12 steps on real digits
    for f in ("config.json", "checkpoint.pt", "model.pt", "metrics.json"):
        assert (run / f).is_file(), f
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test_accuracy"] == m["test_accuracy"]
    assert saved["hardware"]["cpu_count"] == os.cpu_count()
    assert json.loads((run / "config.json").read_text())["config"]["hparams"]["loss"] == "squared_hinge"
    # Latent weights were clipped to [-1, 1] (BinaryNet), binarized weights are +-1.
    model = torch.load(run / "model.pt", weights_only=False)["model"]
    assert float(model["1.weight"].abs().max()) <= 1.0
    # TensorBoard: scalars and histograms were written.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(run), size_guidance={"histograms": 0, "scalars": 0})
    ev.Reload()
    tags = ev.Tags()
    for tag in ("train/loss", "train/flip_ratio", "hparams/learning_rate", "test/accuracy"):
        assert tag in tags["scalars"], tag
    flips = [e.value for e in ev.Scalars("train/flip_ratio")]
    assert all(0.0 <= f <= 1.0 for f in flips) and max(flips) > 0
    for tag in ("weights/1/latent", "weights/1/quantized", "activations/4/input",
                "activations/4/quantized"):
        assert tag in tags["histograms"], tag
    # A second run with the same config gets the next number.
    m2 = fit(cfg, tiny_bnn)
    assert Path(m2["run_dir"]).name == "tiny_bnn-mnist-default-2"
    # evaluate_file reproduces the final test accuracy.
    res = evaluate_file(run / "model.pt", data_dir=str(data_root), subset=300,
                        model_factory=tiny_bnn)
    assert res["accuracy"] == pytest.approx(m["test_accuracy"])


def test_resume_is_exact_to_the_step(tmp_path, data_root):
    """N steps straight == N/2 steps, stop, resume, N/2 steps (dropout, BN, schedules)."""
    hp = HParams(epochs=2, batch_size=50, learning_rate=1e-2, learning_rate_schedule="exponential",
                 learning_rate_end=1e-3, loss="squared_hinge", glorot_lr_scale=True,
                 preprocess="random_shift")
    straight = fit(_cfg(tmp_path, data_root, hparams=hp, run_dir=str(tmp_path / "a")), tiny_bnn)
    first = fit(_cfg(tmp_path, data_root, hparams=hp, run_dir=str(tmp_path / "b"), max_steps=7),
                tiny_bnn)
    assert not first["finished"] and first["stopped_by"] == "max_steps" and first["global_step"] == 7
    resumed = fit(_cfg(tmp_path, data_root, hparams=hp, run_dir=str(tmp_path / "b"), resume=True),
                  tiny_bnn)
    assert resumed["finished"] and resumed["global_step"] == straight["global_step"] == 24
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["train_loss"] for h in straight["history"]] == [h["train_loss"] for h in resumed["history"]]
    assert straight["test_accuracy"] == resumed["test_accuracy"]


def test_resume_refuses_changed_hparams(tmp_path, data_root):
    fit(_cfg(tmp_path, data_root, run_dir=str(tmp_path / "r"), max_steps=2), tiny_bnn)
    hp = HParams(epochs=2, batch_size=50, learning_rate=5e-3, loss="squared_hinge",
                 glorot_lr_scale=True, preprocess="random_shift")
    with pytest.raises(ValueError, match=r"cannot resume: .*hparams.learning_rate"):
        fit(_cfg(tmp_path, data_root, hparams=hp, run_dir=str(tmp_path / "r"), resume=True),
            tiny_bnn)


def test_resume_by_name_and_time_limit(tmp_path, data_root):
    cfg = _cfg(tmp_path, data_root, time_limit=1e-9)
    m = fit(cfg, tiny_bnn)
    assert m["stopped_by"] == "time_limit" and m["global_step"] == 1
    cfg2 = _cfg(tmp_path, data_root, resume=True)
    m2 = fit(cfg2, tiny_bnn)
    assert m2["run_dir"] == m["run_dir"] and m2["finished"] and m2["global_step"] == 24


def test_bop_routing_flips_binary_weights(tmp_path, data_root):
    hp = HParams(epochs=1, batch_size=50, optimizer="bop", threshold=1e-8, gamma=1e-3,
                 learning_rate=1e-2)
    m = fit(_cfg(tmp_path, data_root, hparams=hp), tiny_bnn)
    w = torch.load(Path(m["run_dir"]) / "model.pt", weights_only=False)["model"]["1.weight"]
    assert set(w.unique().tolist()) == {-1.0, 1.0}  # Bop keeps the weights binary
    assert m["test_accuracy"] > 0.3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_match_single_process(tmp_path, data_root):
    """2 CPU processes (gloo) with half batches == 1 process with the whole batch."""
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_train_loop import _cfg, tiny_bnn
        from pathlib import Path
        from xnorkit.train import HParams, fit
        hp = HParams(epochs=1, batch_size=50, optimizer="sgd", learning_rate=0.2)
        fit(_cfg(Path(sys.argv[1]), sys.argv[2], hparams=hp, run_dir=sys.argv[3]),
            lambda: tiny_bnn(dropout=0.0, bn=False))
    """))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script),
           str(tmp_path), str(data_root), str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["world_size"] == 2 and ddp["finished"] and ddp["global_step"] == 12
    hp = HParams(epochs=1, batch_size=50, optimizer="sgd", learning_rate=0.2)
    single = fit(_cfg(tmp_path, data_root, hparams=hp, run_dir=str(tmp_path / "single")),
                 lambda: tiny_bnn(dropout=0.0, bn=False))
    a = torch.load(tmp_path / "ddp" / "model.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "single" / "model.pt", weights_only=False)["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), (k, float((a[k] - b[k]).abs().max()))
    assert single["test_accuracy"] > 0.4  # it learns (chance is 0.1)
    assert ddp["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=2 / 300)
