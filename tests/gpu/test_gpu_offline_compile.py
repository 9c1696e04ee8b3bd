"""The Triton kernels compile for real NVIDIA targets (sm_80, sm_90) on a machine without a GPU,
through Triton's bundled ptxas: no register spills, and the GEMM's inner loop is popcount-bound
(few SASS instructions per POPC). Runs in a subprocess because the interpreter mode set by
conftest replaces the compiler."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="Triton is not installed")


def _run(args, timeout):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "xnorkit.kernels.gpu.offline_check", "--json", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )
    if proc.returncode != 0:
        if "bundled cuobjdump was not found" in proc.stderr or "ptxas" in proc.stderr and "not found" in proc.stderr:
            pytest.skip("Triton's NVIDIA toolchain (ptxas/cuobjdump) is not bundled on this platform")
        raise AssertionError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_good(rows):
    assert rows
    for r in rows:
        assert r["stack"] == 0 and r["local"] == 0, r  # no spills
        if r["kernel"] == "bgemm":
            assert r["sass_popc"] > 0, r  # hardware popcount, not the SWAR fallback
            assert r["instr_per_popc"] is not None and r["instr_per_popc"] <= 6.0, r


def test_compiles_for_sm90_without_spills():
    _assert_good(_run(["--arch", "90", "--quick"], timeout=240))


@pytest.mark.slow
def test_every_autotune_config_compiles_for_sm80_and_sm90():
    rows = _run(["--arch", "80", "--arch", "90", "--all"], timeout=900)
    _assert_good(rows)
    assert {r["arch"] for r in rows} == {80, 90}


def _mma_rows(op):
    import shutil

    if not any(shutil.which(c) for c in ("clang", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14")):
        pytest.skip("clang (NVPTX target) is not installed; needed to compile the CUDA device code offline")
    return _run(["--mma", op, "--arch", "80", "--arch", "90"], timeout=240)


@pytest.mark.slow
def test_b1_mma_kernel_is_native_and_popc_on_sm80_and_sm90():
    for r in _mma_rows("and"):
        assert r["bmma"] == {"BMMA.168256.AND.POPC": 8}, r  # native tensor-core instruction
        assert r["calls"] == 0 and not r["spills"], r


@pytest.mark.slow
def test_xor_popc_is_emulated_on_hopper():
    # The reason the kernel uses AND: on sm_90 ptxas turns .xor.popc into calls to a routine.
    rows = {r["arch"]: r for r in _mma_rows("xor")}
    assert rows[80]["bmma"] == {"BMMA.168256.XOR.POPC": 8}
    assert rows[90]["calls"] > 0 and "BMMA.168256.XOR.POPC" not in rows[90]["bmma"]
