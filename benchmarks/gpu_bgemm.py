#!/usr/bin/env python3
"""Binary GEMM on an NVIDIA GPU (xnorkit.kernels.gpu) against cuBLAS float32, TF32, bfloat16 and
int8 (torch._int_mm), plus training throughput of binarynet_mlp and binarynet with and without
the binary forward kernel.

GEMM shapes: square 1024..16384 and batch 1..256 x 4096 x 4096 (M x N x K). Every entry is
timed with CUDA events around the kernel alone (operands already on the GPU; the binary GEMM
with both operands already packed, as between binary layers), median of many runs with min-max;
sign+pack of the activations is timed separately and also reported added to the GEMM. Each
binary backend (triton, mma_b1, int8_tc) is timed and checked for exact equality with the
float32 product of the same ±1 matrices on every shape (exact: |dot| <= K < 2^24). Ratios are
peer time / binary time, measured in the same run.

Fraction of peak: the binary GEMM does 2*M*N*K ops (one XNOR and one popcount-add per bit
pair, as FLOPs count a multiply and an add). The CUDA-core popcount peak is
SMs x SM clock x 16 POPC/clk/SM (CUDA C++ Programming Guide, arithmetic instruction throughput,
cc 7.x-9.0) x 32 bits x 2. The 1-bit tensor-core peak is printed only where NVIDIA publishes it
(A100: 4992 TOPS dense); H100/H200 datasheets list none.

Usage:
    python benchmarks/gpu_bgemm.py [--quick] [--no-train] [--out benchmarks/results]

Needs a CUDA GPU and Triton; exits with status 2 and a message otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SQUARE = [1024, 2048, 4096, 8192, 16384]
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
QUICK_SQUARE = [1024, 4096]
QUICK_BATCHES = [1, 16, 256]
B1_TENSOR_PEAK = {"A100": 4992e12}  # dense binary TOPS from NVIDIA's A100 datasheet
POPC_PER_CLK_PER_SM = 16


def die(msg: str) -> None:
    print(f"gpu_bgemm: {msg}", file=sys.stderr)
    sys.exit(2)


def sm_clock_hz(torch) -> float | None:
    """Max SM clock from nvidia-smi (torch does not expose it)."""
    try:
        idx = torch.cuda.current_device()
        out = subprocess.run(
            ["nvidia-smi", f"--id={idx}", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()
        return float(out.splitlines()[0]) * 1e6
    except Exception:  # noqa: BLE001
        return None


def time_cuda(torch, fn, min_reps=10, budget_s=1.0, max_reps=200):
    """Median, min, max milliseconds of fn() with CUDA events (after warm-up)."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    one = max(start.elapsed_time(end), 1e-3)
    reps = int(min(max_reps, max(min_reps, budget_s * 1e3 / one)))
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return {"median_ms": times[len(times) // 2], "min_ms": times[0], "max_ms": times[-1], "reps": reps}


def gemm_entry(torch, xg, m, n, k, peak_popc):
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(m * 31 + n * 7 + k)
    a = torch.randn(m, k, device=dev, generator=g)
    w = torch.randn(n, k, device=dev, generator=g)
    a_pm = xg.sign(a)
    w_pm = xg.sign(w)
    row = {"m": m, "n": n, "k": k, "peers": {}, "binary": {}}

    # Peers: cuBLAS through torch, on the ±1 matrices.
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = a_pm @ w_pm.T  # exact in float32: integers below 2^24
    row["peers"]["fp32"] = time_cuda(torch, lambda: a_pm @ w_pm.T)
    torch.backends.cuda.matmul.allow_tf32 = True
    row["peers"]["tf32"] = time_cuda(torch, lambda: a_pm @ w_pm.T)
    torch.backends.cuda.matmul.allow_tf32 = False
    a16, w16 = a_pm.bfloat16(), w_pm.bfloat16()
    row["peers"]["bf16"] = time_cuda(torch, lambda: a16 @ w16.T)
    if m > 16 and k % 8 == 0 and n % 8 == 0:
        a8, w8t = a_pm.to(torch.int8), w_pm.to(torch.int8).T
        row["peers"]["int8"] = time_cuda(torch, lambda: torch._int_mm(a8, w8t))
    del a16, w16

    pa, pw = xg.pack(a), xg.pack(w)
    row["pack_ms"] = time_cuda(torch, lambda: xg.pack(a))["median_ms"]
    ok_all = True
    for name in xg.backends():
        if name == "int8_tc" and m <= 16:
            continue
        c = xg.bgemm(pa, pw, k, backend=name)
        ok = bool(torch.equal(c, ref.to(torch.int32)))
        ok_all &= ok
        t = time_cuda(torch, lambda name=name: xg.bgemm(pa, pw, k, backend=name))
        t["exact"] = ok
        t["tops"] = 2.0 * m * n * k / (t["median_ms"] * 1e-3) / 1e12
        if name == "triton" and peak_popc:
            t["frac_popc_peak"] = t["tops"] * 1e12 / peak_popc
        row["binary"][name] = t
    c = xg.bgemm(pa, pw, k)  # auto: picks and caches the fastest
    row["auto"] = xg.last_backend()
    row["exact"] = ok_all and bool(torch.equal(c, ref.to(torch.int32)))
    best = min(row["binary"].values(), key=lambda t: t["median_ms"])
    row["best_ms"] = best["median_ms"]
    row["ratios"] = {p: v["median_ms"] / row["best_ms"] for p, v in row["peers"].items()}
    row["ratios_with_pack"] = {p: v["median_ms"] / (row["best_ms"] + row["pack_ms"]) for p, v in row["peers"].items()}
    del a, w, a_pm, w_pm, ref, pa, pw
    torch.cuda.empty_cache()
    return row


def train_entry(torch, xg, name, batch, steps):
    """images/s of one training step (forward+backward+Adam), float-simulated vs binary forward."""
    from xnorkit.models import get_model  # noqa: PLC0415

    torch.manual_seed(0)
    model = get_model(name).cuda()
    shape = tuple(model.default_input_shape)
    x = torch.randn(batch, *shape, device="cuda")
    y = torch.randint(0, 10, (batch,), device="cuda")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    with xg.use_binary_kernels():
        routed = [n for n, m in model.named_modules() if xg.routes(m, x if isinstance(m, torch.nn.Conv2d) else x[:1])]
    out = {"model": name, "batch": batch, "binary_layers": routed}
    for mode in ("float", "binary"):
        ctx = xg.use_binary_kernels(mode == "binary")
        with ctx:
            t = time_cuda(torch, step, min_reps=steps, budget_s=2.0, max_reps=steps * 4)
        out[mode] = {**t, "images_per_s": batch / (t["median_ms"] * 1e-3)}
    out["speedup"] = out["binary"]["images_per_s"] / out["float"]["images_per_s"]
    # Same forward on both paths (exactness of the integer sums is tested in tests/gpu).
    return out


def fmt_ms(t):
    return f"{t['median_ms']:.3f} ({t['min_ms']:.3f}-{t['max_ms']:.3f})"


def render(meta, rows, train_rows) -> str:
    lines = [
        "# Binary GEMM on the GPU vs cuBLAS (measured)",
        "",
        f"Device: {meta['device']} ({meta['sms']} SMs, sm_{meta['cc']}), SM clock {meta['clock_mhz']} MHz, "
        f"torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}; {meta['date']}.",
        f"Binary backends available: {', '.join(meta['backends'])}. "
        f"CUDA-core popcount peak: {meta['popc_peak_tops']} binary TOPS; 1-bit tensor-core peak: {meta['b1_peak_tops']}.",
        "",
        "Times in ms: median (min-max) of CUDA-event timings. Binary = fastest backend, operands packed;"
        " ratio = peer / binary (with pack: / (binary + sign+pack of A)). Exact = every backend equals the"
        " float32 product bit for bit.",
        "",
        "| M x N x K | fp32 | tf32 | bf16 | int8 | binary (backend) | pack A | x fp32 | x tf32 | x bf16 | x int8 |"
        " x fp32 w/ pack | binary TOPS | popc-peak frac (triton) | exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["peers"]
        best_name = min(r["binary"], key=lambda nm: r["binary"][nm]["median_ms"])
        b = r["binary"][best_name]
        frac = r["binary"].get("triton", {}).get("frac_popc_peak")
        ratio = lambda key: f"{r['ratios'][key]:.2f}" if key in r["ratios"] else "-"  # noqa: E731
        lines.append(
            f"| {r['m']}x{r['n']}x{r['k']} | {fmt_ms(p['fp32'])} | {fmt_ms(p['tf32'])} | {fmt_ms(p['bf16'])} | "
            f"{fmt_ms(p['int8']) if 'int8' in p else '-'} | {fmt_ms(b)} ({best_name}) | {r['pack_ms']:.3f} | "
            f"{ratio('fp32')} | {ratio('tf32')} | {ratio('bf16')} | {ratio('int8')} | "
            f"{r['ratios_with_pack']['fp32']:.2f} | {b['tops']:.1f} | {f'{frac:.2f}' if frac else '-'} | "
            f"{'yes' if r['exact'] else 'NO'} |"
        )
    lines += ["", "Per backend (median ms): " + "; ".join(
        f"{r['m']}x{r['n']}x{r['k']}: " + ", ".join(f"{nm} {t['median_ms']:.3f}" for nm, t in r["binary"].items())
        for r in rows)]
    if train_rows:
        lines += ["", "## Training throughput (forward+backward+Adam step, synthetic data)", "",
                  "| model | batch | float-simulated forward (img/s) | binary forward (img/s) | speedup |",
                  "|---|---|---|---|---|"]
        for t in train_rows:
            if "error" in t:
                lines.append(f"| {t['model']} | {t['batch']} | - | - | {t['error']} |")
                continue
            lines.append(f"| {t['model']} ({len(t.get('binary_layers', []))} layers on the kernel) | {t['batch']} | "
                         f"{t['float']['images_per_s']:.0f} | {t['binary']['images_per_s']:.0f} | {t['speedup']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    sq = [r for r in rows if r["m"] == r["n"] == r["k"]]
    bt = [r for r in rows if not (r["m"] == r["n"] == r["k"])]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, sel, xkey, title in ((axes[0], sq, "m", "square N^3"), (axes[1], bt, "m", "M x 4096 x 4096")):
        if not sel:
            continue
        xs = [r[xkey] for r in sel]
        for peer in ("fp32", "tf32", "bf16", "int8"):
            ys = [r["ratios"].get(peer) for r in sel]
            if any(v is not None for v in ys):
                ax.plot(xs, [v if v is not None else float("nan") for v in ys], marker="o", label=f"vs {peer}")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xkey.upper())
        ax.set_ylabel("speedup of binary GEMM (peer time / binary time)")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few shapes only")
    ap.add_argument("--no-train", action="store_true", help="skip the training-throughput part")
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()

    try:
        import torch
    except ImportError:
        die("PyTorch is not installed")
    if not torch.cuda.is_available():
        die("no CUDA GPU is visible to PyTorch; this benchmark measures GPU kernels and has nothing to "
            "run here (the kernels' correctness runs on the CPU in tests/gpu through TRITON_INTERPRET=1)")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        die("TRITON_INTERPRET is set; unset it to time compiled kernels")
    try:
        import triton
        import xnorkit.kernels.gpu as xg
    except ImportError as exc:
        die(f"cannot import the GPU kernels ({exc}); pip install triton")
    if not xg.available():
        die(f"GPU kernels unavailable: {xg.unavailable_reason()}")

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    clock = sm_clock_hz(torch)
    peak_popc = props.multi_processor_count * clock * POPC_PER_CLK_PER_SM * 32 * 2 if clock else None
    b1_peak = next((v for key, v in B1_TENSOR_PEAK.items() if key in props.name), None)
    meta = {
        "device": props.name, "sms": props.multi_processor_count, "cc": f"{props.major}{props.minor}",
        "clock_mhz": f"{clock / 1e6:.0f}" if clock else "unknown", "torch": torch.__version__,
        "triton": triton.__version__, "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d"),
        "host": platform.node(), "backends": xg.backends(),
        "popc_peak_tops": f"{peak_popc / 1e12:.0f}" if peak_popc else "unknown",
        "b1_peak_tops": f"{b1_peak / 1e12:.0f} TOPS" if b1_peak else "not published for this GPU",
    }
    print(f"{meta['device']}: backends {meta['backends']}", flush=True)

    shapes = [(s, s, s) for s in (QUICK_SQUARE if args.quick else SQUARE)]
    shapes += [(b, 4096, 4096) for b in (QUICK_BATCHES if args.quick else BATCHES)]
    rows = []
    for m, n, k in shapes:
        r = gemm_entry(torch, xg, m, n, k, peak_popc)
        rows.append(r)
        print(f"{m}x{n}x{k}: binary {r['best_ms']:.3f} ms ({r['auto']} auto), "
              + ", ".join(f"x{p} {v:.2f}" for p, v in r["ratios"].items())
              + ("" if r["exact"] else "  MISMATCH"), flush=True)

    train_rows = []
    if not args.no_train:
        for name, batch in (("binarynet_mlp", 4096), ("binarynet_mlp", 256), ("binarynet", 256)):
            try:
                t = train_entry(torch, xg, name, batch, args.train_steps)
            except Exception as exc:  # noqa: BLE001  (model zoo not available, OOM, ...)
                t = {"model": name, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:200]}
            train_rows.append(t)
            print(t if "error" in t else f"train {name} b{batch}: x{t['speedup']:.2f}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    text = render(meta, rows, train_rows)
    (args.out / "gpu_bgemm.md").write_text(text)
    (args.out / "gpu_bgemm.json").write_text(json.dumps({"meta": meta, "gemm": rows, "train": train_rows}, indent=1))
    plot(rows, args.out / "gpu_bgemm.png")
    print(text)
    if not all(r["exact"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
