"""Is batch-1 binary GEMM bound by reading its weights? The binary GEMM 1 x N x K (N x K bits of
weights) and the int8 peer of benchmarks/bgemm.py (torch's quantized Linear, N x K bytes) beside a
plain streaming read of the same numbers of bytes, in one process, round after round.

    .venv/bin/python benchmarks/batch1_bound.py [--rounds 25] [--out BASE]

A batch-1 GEMM does K MACs per weight it reads, so once the kernel runs at the speed of memory
the ratio between the two is the ratio of the times to stream their weights (8x fewer bytes for
the binary one, but the int8 weights may come from a slower level: DRAM instead of L3). Prints
and writes BASE.md / BASE.json (default benchmarks/results/batch1_bound): per shape the medians
[min-max] over rounds of each time, the weights' GB/s, and the stream ratio (the bound on
"binary vs int8" at batch 1 on this machine). 1 thread. Needs gcc.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from _host import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
SHAPES = [(1, 4096, 4096), (1, 1000, 4096)]


def best_of(fn, reps: int) -> float:
    """Median seconds of one call over reps calls (after one untimed call)."""
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--reps", type=int, default=200, help="calls per timing")
    ap.add_argument("--out", default=str(HERE / "results" / "batch1_bound"))
    args = ap.parse_args()
    if args.rounds < 1 or args.reps < 1:
        ap.error("--rounds and --reps must be >= 1")
    cc = shutil.which("gcc")
    if not cc:
        print("error: gcc not found", file=sys.stderr)
        return 2
    import numpy as np
    import torch
    import torch.ao.nn.quantized as nnq

    import xnorkit.kernels as xk
    from xnorkit import _core

    torch.set_num_threads(1)
    xk.set_num_threads(1)
    tmp = tempfile.mkdtemp()
    lib = Path(tmp) / "stream_read.so"
    subprocess.run([cc, "-O2", "-march=native", "-shared", "-fPIC", str(HERE / "stream_read.c"), "-o", str(lib)],
                   check=True)
    sr = ctypes.CDLL(str(lib)).xk_stream_read
    sr.restype, sr.argtypes = ctypes.c_uint64, [ctypes.c_void_p, ctypes.c_size_t]

    def stream(nbytes: int):
        buf = np.zeros(nbytes + 64, dtype=np.uint8)
        off = (-buf.ctypes.data) % 64
        view = buf[off:off + nbytes]
        view[:] = np.arange(nbytes, dtype=np.uint64).astype(np.uint8)
        ptr, n = view.ctypes.data, (nbytes // 128) * 128
        return (lambda: sr(ptr, n)), buf

    rng = np.random.default_rng(0)
    rows = []
    for m, n, k in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        a_bits, pw = xk.pack(a), xk.pack_weights(xk.pack(w), k)
        panel, rb = pw.panel(), xk.packed_row_bytes(k)
        c = np.empty((m, n), dtype=np.int32)
        a_flat, c_bytes = a_bits.reshape(-1), c.reshape(-1).view(np.uint8)
        binary = lambda: _core.bgemm(m, n, k, a_flat, rb, panel, 0, None, None, None, None, c_bytes, n)  # noqa: E731
        binary()
        assert np.array_equal(c, xk.bgemm(a_bits, pw))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lin = nnq.Linear(k, n, dtype=torch.qint8)
            lin.set_weight_bias(torch.quantize_per_tensor(torch.from_numpy(w), float(abs(w).max()) / 127, 0,
                                                          torch.qint8), None)
            xq = torch.quantize_per_tensor(torch.from_numpy(a), float(abs(a).max()) / 127, 128, torch.quint8)
        int8 = lambda: lin(xq)  # noqa: E731
        bin_bytes, int8_bytes = n * rb, n * k
        sbin, keep1 = stream(bin_bytes)
        sint8, keep2 = stream(int8_bytes)
        t = {"binary": [], "stream_binary_bytes": [], "int8": [], "stream_int8_bytes": []}
        with torch.inference_mode():
            for _ in range(args.rounds):
                t["binary"].append(best_of(binary, args.reps))
                t["stream_binary_bytes"].append(best_of(sbin, args.reps))
                t["int8"].append(best_of(int8, max(5, args.reps // 8)))
                t["stream_int8_bytes"].append(best_of(sint8, max(5, args.reps // 8)))
        del keep1, keep2
        rows.append({"shape": [m, n, k], "binary_weight_bytes": bin_bytes, "int8_weight_bytes": int8_bytes,
                     "isa": xk.last_isa() if hasattr(xk, "last_isa") else None,
                     **{key: {"median": statistics.median(v), "min": min(v), "max": max(v), "rounds": v}
                        for key, v in t.items()}})
    shutil.rmtree(tmp, ignore_errors=True)
    out = {"machine": machine(), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
           "rounds": args.rounds, "reps": args.reps, "rows": rows}
    md = render(out)
    print(md)
    base = Path(args.out)
    base.parent.mkdir(parents=True, exist_ok=True)
    tmpmd = base.with_name(base.name + ".md.tmp")
    tmpmd.write_text(md)
    os.replace(tmpmd, base.with_suffix(".md"))
    base.with_suffix(".json").write_text(json.dumps(out, indent=1))
    return 0


def us(s: dict) -> str:
    return f"{s['median'] * 1e6:.1f} [{s['min'] * 1e6:.1f}-{s['max'] * 1e6:.1f}]"


def render(out: dict) -> str:
    lines = ["# Batch-1 GEMM against a plain read of its weights\n",
             f"Machine: {out['machine']}; {out['date']}; torch {out['torch']}; 1 thread; "
             f"`benchmarks/batch1_bound.py --rounds {out['rounds']} --reps {out['reps']}`.\n",
             "Each round times, one after the other: the binary GEMM (the C core's call on existing buffers, as in "
             "benchmarks/bgemm.py), a streaming read of as many bytes as its weight panel (benchmarks/stream_read.c), "
             "the int8 peer (torch quantized Linear, uint8 x int8) and a streaming read of its N x K weight bytes. "
             "Times in us: median [min-max] over the rounds of each round's median call. GB/s: weight bytes / median "
             "time. The stream ratio (int8-sized read / binary-sized read) bounds what the binary kernel can gain "
             "over the int8 one once both run at the speed of memory.\n",
             "| M x N x K | binary | read of its weights | binary GB/s | int8 | read of its weights | int8 GB/s "
             "| binary vs int8 | stream ratio (bound) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        m, n, k = r["shape"]
        b, sb, i8, si = r["binary"], r["stream_binary_bytes"], r["int8"], r["stream_int8_bytes"]
        lines.append(f"| {m}x{n}x{k} | {us(b)} | {us(sb)} | {r['binary_weight_bytes'] / b['median'] / 1e9:.0f} | "
                     f"{us(i8)} | {us(si)} | {r['int8_weight_bytes'] / i8['median'] / 1e9:.0f} | "
                     f"{i8['median'] / b['median']:.1f}x | {si['median'] / sb['median']:.1f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
