"""Builds and runs the C core's own test (tests/c/test_bgemm.c) for every ISA family:
natively with sanitizers, the AVX-512 kernel through SIMDe's portable AVX-512 (its logic,
bit-exact, on CPUs without AVX-512), and the NEON kernel cross-compiled for AArch64 and run
under qemu-aarch64. CI installs the toolchains (.ci/run); a missing one is a failure there."""

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = [
    "csrc/runtime/error.c",
    "csrc/runtime/threadpool.c",
    "csrc/dispatch/dispatch.c",
    "csrc/ops/bgemm.c",
    "csrc/ref/bgemm-ref.c",
    "csrc/ukernels/bgemm/bgemm-scalar.c",
]
FLAGS = ["-std=c11", "-O2", "-ffp-contract=off", "-Wall", "-Wno-psabi", "-Iinclude", "-Icsrc"]
IN_CI = os.environ.get("CI") == "true"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is missing; .ci/run installs it")
        pytest.skip(f"{tool} not installed (apt-get install it to run this test)")
    return path


def build_and_run(cc, extra_src, defines, out, runner=(), args=(), extra_flags=(), env=None):
    """extra_src: (path, [isa flags]) pairs; ISA flags apply to that file only, as in CMake."""
    defs = [f"-D{d}" for d in defines]
    objs = []
    for i, (src, isa_flags) in enumerate(extra_src):
        obj = out.parent / f"isa{i}.o"
        subprocess.run([cc, *FLAGS, *extra_flags, *isa_flags, *defs, "-c", src, "-o", str(obj)],
                       cwd=ROOT, check=True, capture_output=True, text=True)
        objs.append(str(obj))
    cmd = [cc, *FLAGS, *extra_flags, *defs, *CORE, *objs, "tests/c/test_bgemm.c", "-o", str(out),
           "-lpthread", "-lm"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    res = subprocess.run([*runner, str(out), *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=None if env is None else {**os.environ, **env})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    assert last.endswith(" 0 failed") and int(last.split()[0]) > 500, last
    return res.stdout


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 host build")
def test_native_x86_with_sanitizers(tmp_path):
    cc = need("gcc")
    out = build_and_run(
        cc,
        [("csrc/ukernels/bgemm/bgemm-avx2.c", ["-mavx2", "-mpopcnt"]),
         ("csrc/ukernels/bgemm/bgemm-avx512.c",
          ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vpopcntdq", "-mpopcnt"])],
        ["XK_HAVE_AVX2", "XK_HAVE_AVX512"], tmp_path / "t",
        extra_flags=["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"],
    )
    assert "testing ISA scalar" in out and "testing ISA avx2" in out


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 host build")
def test_native_x86_main_avx2_kernel(tmp_path):
    """AVX2 runs its column-lane kernel for rows up to XK_AVX2_LANES_MAX_KWORDS words (every
    shape of the default test); XK_NO_SMALL_K=1 routes every call to the 256-bit-step kernel."""
    cc = need("gcc")
    out = build_and_run(cc, [("csrc/ukernels/bgemm/bgemm-avx2.c", ["-mavx2", "-mpopcnt"])], ["XK_HAVE_AVX2"],
                        tmp_path / "t", extra_flags=["-g", "-fsanitize=address,undefined"],
                        env={"XK_NO_SMALL_K": "1"})
    assert "testing ISA avx2" in out


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 host build")
def test_avx512_kernel_logic_through_simde(tmp_path):
    cc = need("gcc")
    if not Path("/usr/include/simde/x86/avx512.h").exists():
        if IN_CI:
            pytest.fail("SIMDe headers missing; .ci/run installs libsimde-dev")
        pytest.skip("SIMDe headers (libsimde-dev) not installed")
    out = build_and_run(cc, [("csrc/ukernels/bgemm/bgemm-avx512.c", [])], ["XK_EMULATE_AVX512"],
                        tmp_path / "t512", args=["avx512"])
    assert "testing ISA avx512" in out


def test_neon_under_qemu(tmp_path):
    cc = need("aarch64-linux-gnu-gcc")
    qemu = need("qemu-aarch64")
    out = build_and_run(cc, [("csrc/ukernels/bgemm/bgemm-neon.c", [])], ["XK_HAVE_NEON"], tmp_path / "tneon",
                        runner=[qemu, "-L", "/usr/aarch64-linux-gnu"], args=["neon", "scalar"])
    assert "testing ISA neon" in out


def test_core_builds_for_cortex_m_without_threads(tmp_path):
    """The portable core compiles for a Cortex-M4 (no OS, no threads) with the bare-metal toolchain."""
    cc = need("arm-none-eabi-gcc")
    objs = []
    for src in CORE:
        obj = tmp_path / (Path(src).stem + ".o")
        subprocess.run([cc, "-mcpu=cortex-m4", "-mthumb", "-std=c11", "-Os", "-Wall", "-Werror",
                        "-DXK_NO_THREADS", "-Iinclude", "-Icsrc", "-c", src, "-o", str(obj)],
                       cwd=ROOT, check=True, capture_output=True, text=True)
        objs.append(obj)
    assert all(o.stat().st_size > 0 for o in objs)
