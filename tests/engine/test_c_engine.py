"""The engine as plain C: built natively with sanitizers, for AArch64 (run under qemu, NEON
binary kernels) and for a Cortex-M4 without threads, running the same model file as the Python
binding and giving the same outputs."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import xnorkit

from test_runtime import binary_cnn

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"
PORTABLE = [
    "csrc/runtime/error.c", "csrc/runtime/threadpool.c", "csrc/runtime/model.c", "csrc/runtime/crc32.c",
    "csrc/dispatch/dispatch.c", "csrc/ref/bgemm-ref.c", "csrc/ukernels/bgemm/bgemm-scalar.c",
    "csrc/ukernels/fgemm/fgemm-scalar.c", "csrc/ukernels/qgemm/qgemm-scalar.c",
] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc/ops").glob("*.c"))
FLAGS = ["-std=c11", "-O1", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Iinclude", "-Icsrc"]


def need(tool):
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is missing; .ci/run installs it")
        pytest.skip(f"{tool} not installed")
    return path


def build(cc, out, defines=(), isa_files=(), extra=(), link=("-lpthread", "-lm")):
    objs = []
    for i, (src, flags) in enumerate(isa_files):
        obj = out.parent / f"isa{i}.o"
        subprocess.run([cc, *FLAGS, *extra, *flags, *[f"-D{d}" for d in defines], "-c", src, "-o", str(obj)],
                       cwd=ROOT, check=True, capture_output=True, text=True)
        objs.append(str(obj))
    cmd = [cc, *FLAGS, *extra, *[f"-D{d}" for d in defines], *PORTABLE, *objs, "tests/engine/c/run_model.c",
           "-o", str(out), *link]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cengine")
    b, _ = binary_cnn(np.random.default_rng(0))
    data = b.build()
    (d / "m.xk").write_bytes(data)
    x = np.random.default_rng(1).normal(size=(3, 3, 8, 8)).astype(np.float32)
    np.ascontiguousarray(x.transpose(0, 2, 3, 1)).tofile(d / "x.f32")
    ref = xnorkit.Model(data, max_batch=3).run(x)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 4
    (d / "bad.xk").write_bytes(bytes(bad))
    return d, ref


def run(exe, d, runner=(), model="m.xk"):
    res = subprocess.run([*runner, str(exe), str(d / model), str(d / "x.f32"), str(d / "y.f32"), "3"],
                         capture_output=True, text=True, timeout=600)
    return res


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 host")
def test_native_with_sanitizers(model_files, tmp_path):
    d, ref = model_files
    exe = build(need("gcc"), tmp_path / "run_model", defines=["XK_HAVE_AVX2", "XK_HAVE_AVX512"],
                isa_files=[("csrc/ukernels/bgemm/bgemm-avx2.c", ["-mavx2", "-mpopcnt"]),
                           ("csrc/ukernels/fgemm/fgemm-avx2.c", ["-mavx2", "-mfma"]),
                           ("csrc/ukernels/qgemm/qgemm-avx2.c", ["-mavx2", "-mfma"]),
                           ("csrc/ukernels/bgemm/bgemm-avx512.c",
                            ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vpopcntdq", "-mpopcnt"]),
                           ("csrc/ukernels/fgemm/fgemm-avx512.c", ["-mavx512f", "-mfma"]),
                           ("csrc/ukernels/qgemm/qgemm-avx512.c", ["-mavx512f", "-mavx512bw", "-mavx512vnni"])],
                extra=["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"])
    # every ISA this CPU runs: on an AVX-512 host the AVX-512 kernels under the sanitizers too
    for isa in [i for i in ("scalar", "avx2", "avx512") if i in xnorkit.kernels.available_isas()]:
        res = subprocess.run([str(exe), str(d / "m.xk"), str(d / "x.f32"), str(d / "y.f32"), "3"],
                             capture_output=True, text=True, timeout=600, env={**os.environ, "XK_ISA": isa})
        assert res.returncode == 0 and res.stdout.startswith("ok"), res.stdout + res.stderr[-3000:]
        y = np.fromfile(d / "y.f32", dtype=np.float32).reshape(ref.shape)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-7)
    res = run(exe, d, model="bad.xk")
    assert res.returncode == 2 and "checksum mismatch" in res.stdout, res.stdout + res.stderr


@pytest.mark.slow
def test_aarch64_under_qemu(model_files, tmp_path):
    d, ref = model_files
    cc = need("aarch64-linux-gnu-gcc")
    qemu = need("qemu-aarch64")
    exe = build(cc, tmp_path / "run_model_a64", defines=["XK_HAVE_NEON"],
                isa_files=[("csrc/ukernels/bgemm/bgemm-neon.c", [])], extra=["-static"])
    res = run(exe, d, runner=(qemu,))
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stdout + res.stderr[-3000:]
    y = np.fromfile(d / "y.f32", dtype=np.float32).reshape(ref.shape)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-7)


# Functions a microcontroller build never calls (their callers need x86 kernel families).
MCU_UNREACHABLE = {"rows_task"}  # implicit im2col: AVX2 kernels only


def test_cortex_m4_build_without_threads(tmp_path):
    """The portable engine builds for a Cortex-M4 without threads, and no function it can reach
    needs more than 8 KiB of stack (gcc -fstack-usage). The largest today: model loading's graph
    check, 4.6 KiB (tensor lifetimes of up to 512 tensors while sizing); an op's GEMM task 2 KiB."""
    cc = need("arm-none-eabi-gcc")
    frames = {}
    for src in PORTABLE:
        obj = tmp_path / (Path(src).stem + ".o")
        res = subprocess.run([cc, "-mcpu=cortex-m4", "-mthumb", "-std=c11", "-Os", "-Wall", "-Werror",
                              "-DXK_NO_THREADS", "-fstack-usage", "-Iinclude", "-Icsrc", "-c", src, "-o", str(obj)],
                             cwd=ROOT, capture_output=True, text=True)
        assert res.returncode == 0, f"{src}: {res.stderr[-2000:]}"
        for line in obj.with_suffix(".su").read_text().splitlines():
            where, size, kind = line.rsplit("\t", 2)
            frames[f"{Path(src).name}:{where.rsplit(':', 1)[-1]}"] = (int(size), kind)
    assert frames, "no stack usage reported"
    big = {k: v for k, v in frames.items() if v[0] > 8192 and k.split(":")[-1].split(".")[0] not in MCU_UNREACHABLE}
    assert not big, f"stack frames over 8 KiB: {big}"
