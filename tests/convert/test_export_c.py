"""export-c end to end: the exported project builds with the system C compiler (C99) and its
main.c gives the outputs of reference.py; it also builds as a library for a Cortex-M4 without
threads and, under qemu, runs on AArch64 with the NEON kernels."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

import xnorkit.nn as xnn
from xnorkit import reference as ref
from xnorkit.convert import convert
from xnorkit.convert.export_c import engine_sources, export

from _util import randomize_bn

BIN = dict(input_quantizer="ste_sign", weight_quantizer="ste_sign")
IN_CI = os.environ.get("CI") == "true"


def need(tool):
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is missing")
        pytest.skip(f"{tool} not installed")
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                      xnn.QuantConv2d(8, 16, 3, padding=1, bias=False, **BIN), nn.MaxPool2d(2), nn.BatchNorm2d(16),
                      xnn.QuantConv2d(16, 16, 3, padding=1, pad_value=1.0, bias=False, **BIN), nn.BatchNorm2d(16),
                      nn.Flatten(), xnn.QuantLinear(16 * 4 * 4, 10, **BIN), nn.BatchNorm1d(10))
    randomize_bn(m.eval(), seed=1)
    x = torch.randn(3, 3, 8, 8)
    conv = convert(m, x, precision="float")
    conv.save(d / "m.xk")
    export(d / "m.xk", d / "c", max_batch=3)
    np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1)).tofile(d / "c" / "in.f32")
    want = ref.run(conv.model, x.numpy())[0]
    return d / "c", want


def _check(outdir, want):
    y = np.fromfile(outdir / "out.f32", dtype=np.float32).reshape(want.shape)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_sources_are_the_portable_engine_only():
    names = [p.name for p in engine_sources()]
    assert "model.c" in names and "bgemm-scalar.c" in names and "bgemm-neon.c" in names
    assert not any("avx" in n for n in names)
    assert "xk_engine.h" in names and "xk_format.h" in names


def test_host_build_with_c99_equals_reference(project):
    outdir, want = project
    cc = need("gcc")
    res = subprocess.run(["make", "-s", "-j2", f"CC={cc}", "OPT=-O1"], cwd=outdir, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    res = subprocess.run(["./xk_main", "in.f32", "out.f32"], cwd=outdir, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stdout + res.stderr
    _check(outdir, want)
    res = subprocess.run(["./xk_main"], cwd=outdir, capture_output=True, text=True, timeout=120)  # zeros input
    assert res.returncode == 0 and len(res.stdout.splitlines()[0].split()) == want.shape[1]
    # the input is read into the engine's arena: more samples than max_batch (3), or a partial
    # sample, is refused with a message (nothing silently dropped)
    x = np.fromfile(outdir / "in.f32", dtype=np.float32)
    for bad in (np.concatenate([x, x[: x.size // 3]]), x[:-1]):
        bad.tofile(outdir / "bad.f32")
        res = subprocess.run(["./xk_main", "bad.f32"], cwd=outdir, capture_output=True, text=True, timeout=120)
        assert res.returncode == 1 and "samples of" in res.stdout, res.stdout + res.stderr
    subprocess.run(["make", "-s", "clean"], cwd=outdir, check=True)


def test_cortex_m4_library_without_threads(project, tmp_path):
    outdir, _ = project
    cc = need("arm-none-eabi-gcc")
    work = tmp_path / "m4"
    shutil.copytree(outdir, work)
    res = subprocess.run(["make", "-s", "-j2", "lib", f"CC={cc}", "AR=arm-none-eabi-ar", "THREADS=0",
                          "TARGET_FLAGS=-mcpu=cortex-m4 -mthumb", "OPT=-Os"], cwd=work, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (work / "libxk_model.a").stat().st_size > 1000


@pytest.mark.slow
def test_aarch64_neon_under_qemu(project, tmp_path):
    outdir, want = project
    cc = need("aarch64-linux-gnu-gcc")
    qemu = need("qemu-aarch64")
    work = tmp_path / "a64"
    shutil.copytree(outdir, work)
    res = subprocess.run(["make", "-s", "-j2", f"CC={cc}", "ARCH=aarch64", "LDFLAGS=-static", "OPT=-O1"], cwd=work,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    res = subprocess.run([qemu, "./xk_main", "in.f32", "out.f32"], cwd=work, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stdout + res.stderr
    _check(work, want)
