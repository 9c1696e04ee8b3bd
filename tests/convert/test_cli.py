"""``xnorkit convert``, ``xnorkit info`` and ``xnorkit export-c`` through the real CLI entry point."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from xnorkit.cli import main
from xnorkit.convert import format as xkf


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    out = d / "m.xk"
    res = CliRunner().invoke(main, ["convert", "zoo:bnn_mnist_cnn", str(out), "--precision", "float"])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_convert_zoo_model_prints_the_table(converted):
    out, text = converted
    assert "what each layer became" in text and "binary" in text and "wrote" in text
    m = xkf.read(out)
    assert [op.kind for op in m.ops].count("bconv2d") >= 2


def test_info_table_and_json(converted):
    out, _ = converted
    r = CliRunner().invoke(main, ["info", str(out)])
    assert r.exit_code == 0, r.output
    assert "bconv2d" in r.output and "MACs" in r.output and "format 1.0" in r.output
    r = CliRunner().invoke(main, ["info", str(out), "--json"])
    doc = json.loads(r.output)
    m = xkf.read(out)
    assert len(doc["ops"]) == len(m.ops) and doc["file_bytes"] == m.file_size
    binary = [o for o in doc["ops"] if o["precision"] == "binary"]
    assert binary and all(o["macs"] > 0 for o in binary)
    assert doc["totals"]["binary_macs"] == sum(o["macs"] for o in binary)
    assert doc["totals"]["float32_weight_bytes"] > 10 * sum(o["weight_bytes"] for o in binary) / 2


def test_info_rejects_a_corrupted_file(converted, tmp_path):
    out, _ = converted
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x10
    bad = tmp_path / "bad.xk"
    bad.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["info", str(bad)])
    assert r.exit_code != 0 and "crc32" in r.output and "bad.xk" in r.output


def test_convert_errors_are_clean(tmp_path):
    r = CliRunner().invoke(main, ["convert", str(tmp_path / "missing.pt"), str(tmp_path / "o.xk")])
    assert r.exit_code != 0 and "not found" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["convert", "zoo:binarynet_layernorm", str(tmp_path / "o.xk"),
                                  "--input-shape", "3,16,16"])
    assert r.exit_code != 0 and "ChannelLayerNorm" in r.output
    assert not (tmp_path / "o.xk").exists()


def test_export_c_writes_the_project(converted, tmp_path):
    out, _ = converted
    r = CliRunner().invoke(main, ["export-c", str(out), str(tmp_path / "c"), "--name", "mnist"])
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "c").iterdir()}
    assert {"model_data.c", "model_data.h", "main.c", "Makefile", "README.md", "xnorkit"} <= names
    h = (tmp_path / "c" / "model_data.h").read_text()
    assert f"#define MNIST_DATA_SIZE {out.stat().st_size}u" in h and "MNIST_ARENA_SIZE" in h
    r = CliRunner().invoke(main, ["export-c", str(out), str(tmp_path / "d"), "--name", "1bad"])
    assert r.exit_code != 0 and "not a C identifier" in r.output


@pytest.mark.parametrize("target", ["host", "aarch64", "cortex-m4"])
def test_exported_project_builds_and_matches_the_engine(converted, tmp_path, target):
    """The exported C project as a user builds it (its own Makefile): on the host and for AArch64
    (run under qemu) it reproduces xnorkit.Model's output; for Cortex-M4 the static library
    builds without threads."""
    import shutil
    import subprocess

    import numpy as np

    import xnorkit

    tools = {"host": ["make"], "aarch64": ["make", "aarch64-linux-gnu-gcc", "qemu-aarch64"],
             "cortex-m4": ["make", "arm-none-eabi-gcc"]}[target]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    out, _ = converted
    proj = tmp_path / "c"
    r = CliRunner().invoke(main, ["export-c", str(out), str(proj)])
    assert r.exit_code == 0, r.output
    args = {"host": [], "aarch64": ["CC=aarch64-linux-gnu-gcc", "ARCH=aarch64", "LDFLAGS=-static"],
            "cortex-m4": ["lib", "CC=arm-none-eabi-gcc", "THREADS=0", "TARGET_FLAGS=-mcpu=cortex-m4 -mthumb"]}[target]
    b = subprocess.run(["make", "-j2", *args], cwd=proj, capture_output=True, text=True)
    assert b.returncode == 0, b.stdout[-2000:] + b.stderr[-2000:]
    if target == "cortex-m4":
        assert list(proj.glob("*.a")), "no static library"
        return
    x = np.random.default_rng(0).normal(size=(1, 1, 28, 28)).astype(np.float32)
    np.transpose(x, (0, 2, 3, 1)).tofile(tmp_path / "in.f32")  # the engine's stored layout: NHWC
    runner = ["qemu-aarch64"] if target == "aarch64" else []
    res = subprocess.run([*runner, str(proj / "xk_main"), str(tmp_path / "in.f32"), str(tmp_path / "out.f32")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    got = np.fromfile(tmp_path / "out.f32", np.float32)
    want = np.asarray(xnorkit.Model(out).run(x), np.float32).ravel()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


DATA = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "datasets"


def test_convert_a_checkpoint_with_calibration_labels_and_normalisation(tmp_path):
    """A model.pt as `xnorkit train` writes it: int8 first/last layers calibrated on the real
    MNIST training images, class labels and the input normalisation in the metadata."""
    import torch

    from xnorkit.models import get_model
    from xnorkit.train.hparams import get_hparams
    from xnorkit.train.trainer import RunConfig

    if not (DATA / "mnist").is_dir():
        pytest.skip("shared MNIST not available")
    hp = get_hparams("bnn_mnist_cnn")
    hp.model = dict(channels=(8, 8, 16))
    cfg = RunConfig(model="bnn_mnist_cnn", dataset="mnist", hparams=hp, data_dir=str(DATA), download=False)
    model = get_model("bnn_mnist_cnn", **hp.model)
    torch.save({"format": "xnorkit-model", "config": cfg.to_dict(), "model": model.state_dict()}, tmp_path / "model.pt")
    out = tmp_path / "m.xk"
    r = CliRunner().invoke(main, ["convert", str(tmp_path / "model.pt"), str(out), "--calibration-samples", "64"])
    assert r.exit_code == 0, r.output
    m = xkf.read(out)
    assert "int8" in r.output
    assert any(op.params.get("precision") == xkf.PREC["i8"] for op in m.ops if op.kind in ("conv2d", "dense"))
    assert m.meta_value("labels").splitlines() == [str(i) for i in range(10)]
    assert m.meta_value("input_mean").tolist() == [127.5] and m.meta_value("config")["model"] == "bnn_mnist_cnn"
