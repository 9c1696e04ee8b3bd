"""benchmarks/gpu_bgemm.py: exits cleanly without a GPU, and its report/plot code works on
synthetic timings (the measuring part needs a CUDA GPU)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_bgemm.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_bgemm_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_exits_with_message_without_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "no CUDA GPU" in proc.stderr


def _t(ms):
    return {"median_ms": ms, "min_ms": ms * 0.9, "max_ms": ms * 1.2, "reps": 10}


def test_render_and_plot_on_synthetic_rows(tmp_path):
    mod = _load()
    rows = []
    for m, n, k in [(1024, 1024, 1024), (8192, 8192, 8192), (1, 4096, 4096), (256, 4096, 4096)]:
        peers = {"fp32": _t(4.0), "tf32": _t(1.0), "bf16": _t(0.5)}
        if m > 16:
            peers["int8"] = _t(0.3)
        binary = {"triton": {**_t(0.8), "exact": True, "tops": 100.0, "frac_popc_peak": 0.4}}
        best = 0.8
        rows.append({"m": m, "n": n, "k": k, "peers": peers, "binary": binary, "pack_ms": 0.1, "auto": "triton",
                     "exact": True, "best_ms": best, "ratios": {p: v["median_ms"] / best for p, v in peers.items()},
                     "ratios_with_pack": {p: v["median_ms"] / (best + 0.1) for p, v in peers.items()}})
    meta = {"device": "Fake GPU", "sms": 1, "cc": "90", "clock_mhz": "1000", "torch": "x", "triton": "y",
            "cuda": "z", "date": "today", "backends": ["triton"], "popc_peak_tops": "1", "b1_peak_tops": "n/a"}
    train = [{"model": "binarynet_mlp", "batch": 4096, "float": {"images_per_s": 100.0},
              "binary": {"images_per_s": 150.0}, "speedup": 1.5},
             {"model": "binarynet", "batch": 256, "error": "ImportError: no zoo"}]
    text = mod.render(meta, rows, train)
    assert "| 8192x8192x8192 |" in text and "5.00" in text  # fp32 ratio 4.0 / 0.8
    assert "| 1x4096x4096 |" in text and "| binarynet | 256 | - | - | ImportError" in text
    pytest.importorskip("matplotlib")
    mod.plot(rows, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
