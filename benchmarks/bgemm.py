#!/usr/bin/env python3
"""Binary GEMM (xnorkit C core) against float32, bfloat16 and int8 GEMMs on this CPU.

Same shapes, same run, 1 and 2 threads. Each thread count runs in its own worker process so
that every library (OpenBLAS under numpy, PyTorch's OpenMP, xnorkit's pool) is limited to the
same number of threads. Reports medians with min-max, binary MACs/s and MACs per cycle (the
clock is measured in the same run with a dependent-add chain), and ratios to each peer.

The binary GEMM is timed as deployed between binary layers: activations already packed
(1 bit each), weights pre-packed into the kernel's panel layout, int32 output into a buffer that
exists (the C core's call, as the engine makes it); the Python API call `xnorkit.kernels.bgemm`
(argument checks, output allocation) is timed too and shown in its own column. Activation
packing is measured separately (GB/s of float32 read).

Usage: python benchmarks/bgemm.py [--quick] [--threads 1 2] [--out benchmarks/results] [--name bgemm]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

from _host import cpu_flags, cpu_name

# Every runtime here shares the process (and its 2 cores) with torch: libgomp's worker threads
# otherwise keep spinning after each torch call and take the core another runtime's helper
# thread needs. Passive waiting makes them sleep between calls (a thread wake per torch call).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SHAPES = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
          (4096, 4096, 4096), (1, 4096, 4096), (1, 1000, 4096)]
QUICK_SHAPES = [(256, 256, 256), (512, 512, 512), (1, 1000, 4096)]
PEERS = ["numpy_f32", "torch_f32", "torch_bf16", "int8"]
# Without bf16 hardware (AVX-512 BF16 / AMX) torch's bf16 GEMM runs at ~0.7 GMAC/s: not above 2048^3.
BF16_HW = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
BF16_MAX_MACS = None if BF16_HW else 2048**3
TIME_BUDGET = 2.0  # seconds of timing per (shape, implementation), at least 3 reps


def timeit(fn, budget=TIME_BUDGET, min_reps=3, max_reps=200):
    fn()  # warm-up (allocations, lazy panels, thread start)
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    reps = int(max(min_reps, min(max_reps, budget / max(first, 1e-9))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median": times[len(times) // 2], "min": times[0], "max": times[-1], "reps": reps}


def worker(threads: int, shapes, quick: bool) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    import xnorkit.kernels as xk
    from xnorkit import _core

    xk.set_num_threads(threads)
    rng = np.random.default_rng(0)
    out = {"threads": threads, "isa": xk.current_isa(), "ghz": _core.calibrate_ghz(), "rows": []}

    for m, n, k in shapes:
        row = {"shape": [m, n, k]}
        a = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        # --- binary: packed activations x pre-packed weights -> int32
        a_bits, pw = xk.pack(a), xk.pack_weights(xk.pack(w), k)
        got = xk.bgemm(a_bits, pw)
        ref = (np.where(a >= 0, 1, -1).astype(np.float32) @ np.where(w >= 0, 1, -1).astype(np.float32).T)
        assert np.array_equal(got, ref.astype(np.int32)), f"binary GEMM wrong at {m}x{n}x{k}"
        # timed as the engine calls it between layers: the C core on buffers that already exist (the
        # Python API's checks and output allocation, ~2-3 us a call, are timed apart: "binary_api")
        c = np.empty((m, n), dtype=np.int32)
        panel, rb = pw.panel(), xk.packed_row_bytes(k)
        a_flat, c_bytes = a_bits.reshape(-1), c.reshape(-1).view(np.uint8)
        core = lambda: _core.bgemm(m, n, k, a_flat, rb, panel, 0, None, None, None, None, c_bytes, n)  # noqa: E731
        core()
        assert np.array_equal(c, got), f"binary GEMM (core call) wrong at {m}x{n}x{k}"
        row["binary"] = timeit(core)
        row["binary_isa"] = xk.last_isa()
        row["binary_api"] = timeit(lambda: xk.bgemm(a_bits, pw))
        # --- peers
        wt = np.ascontiguousarray(w.T)
        row["numpy_f32"] = timeit(lambda: a @ wt)
        ta, tw = torch.from_numpy(a), torch.from_numpy(wt)
        with torch.inference_mode():
            row["torch_f32"] = timeit(lambda: torch.mm(ta, tw))
            if BF16_MAX_MACS is None or m * n * k <= BF16_MAX_MACS:
                ba, bw = ta.to(torch.bfloat16), tw.to(torch.bfloat16)
                row["torch_bf16"] = timeit(lambda: torch.mm(ba, bw), budget=TIME_BUDGET, min_reps=2)
            row["int8"] = int8_peer(torch, a, w)
        out["rows"].append(row)
        print(f"  [{threads} thread(s)] {m}x{n}x{k}: binary {row['binary']['median']*1e3:.3f} ms", file=sys.stderr)

    # packing throughput: float32 64 x 4096 -> bits
    x = rng.standard_normal((64, 4096), dtype=np.float32)
    t = timeit(lambda: xk.pack(x), budget=0.5)
    out["pack"] = {"shape": [64, 4096], **t, "gbps": x.nbytes / t["median"] / 1e9}
    return out


def int8_peer(torch, a, w):
    """torch's quantized Linear (fbgemm/onednn int8 GEMM, uint8 activations x int8 weights)."""
    import torch.ao.nn.quantized as nnq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n, k = w.shape
        lin = nnq.Linear(k, n, dtype=torch.qint8)
        wq = torch.quantize_per_tensor(torch.from_numpy(w), float(abs(w).max()) / 127, 0, torch.qint8)
        lin.set_weight_bias(wq, None)
        xq = torch.quantize_per_tensor(torch.from_numpy(a), float(abs(a).max()) / 127, 128, torch.quint8)
        return timeit(lambda: lin(xq))


def render(results: list[dict], quick: bool) -> str:
    lines = []
    r0 = results[0]
    lines.append("# Binary GEMM vs float32 / bfloat16 / int8 GEMM\n")
    lines.append(f"Machine: {cpu_name()}, {os.cpu_count()} cores; measured clock "
                 + ", ".join(f"{r['ghz']:.2f} GHz ({r['threads']}T run)" for r in results)
                 + f"; binary ISA: {r0['isa']}; {time.strftime('%Y-%m-%d')}; "
                 f"python {platform.python_version()}, numpy (OpenBLAS) and torch {__import__('torch').__version__}."
                 + (" QUICK run (subset of shapes)." if quick else "") + "\n")
    lines.append("Times are medians over repeated calls (min-max in brackets). Binary GEMM: packed activations x "
                 "pre-packed weights -> int32 into an existing buffer (the C core's call, as between binary layers "
                 "in the engine); the Python API call, with its checks and output allocation, in its own column. MACs/cycle = binary MACs "
                 "per second / measured clock / threads. Ratios: peer median time / binary median time "
                 "(same run, same thread count). "
                 + ("This CPU has bf16 instructions (AVX-512 BF16 / AMX): bf16 runs on every shape.\n" if BF16_HW else
                    "bf16 is not run above 2048^3 (no bf16 hardware here: a 4096^3 call takes minutes).\n"))
    if min(r["ghz"] for r in results) < 2.0:
        lines.append("**The measured clock is far below this CPU's ~3 GHz**: the clock is timed with a chain of "
                     "dependent adds, so a low figure means the virtual machine got only part of a core while it "
                     "ran (an overcommitted host). Absolute times are inflated and the MACs/cycle column is not "
                     "meaningful for this run; the ratios compare runtimes measured in the same run and remain "
                     "valid.\n")
    for r in results:
        t = r["threads"]
        lines.append(f"\n## {t} thread{'s' if t > 1 else ''}\n")
        lines.append("| M x N x K | binary (ms) | GMAC/s | MACs/cycle/core | xnorkit.kernels.bgemm() (ms) | numpy f32 (ms) "
                     "| torch f32 (ms) | torch bf16 (ms) | int8 (ms) | vs numpy | vs torch f32 | vs bf16 | vs int8 |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for row in r["rows"]:
            m, n, k = row["shape"]
            b = row["binary"]
            macs = m * n * k
            gmacs = macs / b["median"] / 1e9
            cells = [f"{m}x{n}x{k}", fmt(b), f"{gmacs:.0f}", f"{gmacs / r['ghz'] / t:.0f}",
                     fmt(row["binary_api"]) if "binary_api" in row else "-"]
            ratios = []
            for p in PEERS:
                if p in row:
                    cells.append(fmt(row[p]))
                    ratios.append(f"{row[p]['median'] / b['median']:.1f}x")
                else:
                    cells.append("not run")
                    ratios.append("-")
            lines.append("| " + " | ".join(cells + ratios) + " |")
        p = r["pack"]
        lines.append(f"\nPacking float32 {p['shape'][0]}x{p['shape'][1]} -> bits: {p['median']*1e6:.1f} us "
                     f"[{p['min']*1e6:.1f}-{p['max']*1e6:.1f}], {p['gbps']:.1f} GB/s of float32 read.\n")
    return "\n".join(lines) + "\n"


def fmt(t):
    return f"{t['median']*1e3:.3f} [{t['min']*1e3:.3f}-{t['max']*1e3:.3f}]"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 4.5), squeeze=False)
    for ax, r in zip(axes[0], results):
        labels = ["x".join(map(str, row["shape"])) for row in r["rows"]]
        impls = ["binary"] + PEERS
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            vals = [row["shape"][0] * row["shape"][1] * row["shape"][2] / row[impl]["median"] / 1e9
                    if impl in row else 0 for row in r["rows"]]
            ax.bar([x + i * width for x in range(len(labels))], vals, width, label=impl)
        ax.set_yscale("log")
        ax.set_xticks([x + 0.4 for x in range(len(labels))], labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("GMAC/s (log)")
        ax.set_title(f"{r['threads']} thread(s), binary ISA {r['isa']}")
        ax.legend(fontsize=8)
    fig.suptitle(f"Binary GEMM vs peers on {cpu_name()}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="small subset of shapes (smoke run)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--name", help="base name of the results files (default bgemm, or bgemm_quick with --quick)")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.worker:
        print(json.dumps(worker(args.worker, shapes, args.quick)))
        return
    results = []
    for t in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t),
                   XK_NUM_THREADS=str(t))
        cmd = [sys.executable, __file__, "--worker", str(t)] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(proc.stdout))
    md = render(results, args.quick)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or ("bgemm_quick" if args.quick else "bgemm")
    tmp = args.out / f".{name}.md.tmp"
    tmp.write_text(md)
    os.replace(tmp, args.out / f"{name}.md")
    (args.out / f"{name}.json").write_text(json.dumps({"machine": cpu_name(), "results": results}, indent=1))
    plot(results, args.out / f"{name}.png")
    print(f"wrote {args.out / (name + '.md')} and {name}.png", file=sys.stderr)


if __name__ == "__main__":
    main()
