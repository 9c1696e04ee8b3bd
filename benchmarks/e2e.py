"""End-to-end latency of converted zoo models: the xnorkit C engine vs PyTorch float32 eager,
onnxruntime (float model) and, when its venv exists, Larq Compute Engine.

    .venv/bin/python benchmarks/e2e.py                       # all models, threads 1 and 2
    .venv/bin/python benchmarks/e2e.py --models binarynet --repeats 20 --quick

For each model (random weights, eval mode, batch 1):
  * xnorkit: the model converted by ``xnorkit.convert`` and run by ``xnorkit.Model``, twice:
    non-binary layers (stem, shortcuts, classifier) in float32 ("xnorkit", the configuration that
    matches PyTorch to 1e-5), and in int8 ("xnorkit int8": the converter's default when given
    calibration data; calibrated here on 8 random inputs);
  * PyTorch eager: the same PyTorch model (binarization simulated in float32: how the model
    runs in PyTorch), and its float twin (the float network of the same architecture), under
    ``torch.inference_mode()`` with ``torch.set_num_threads``;
  * onnxruntime: the float twin of the model (every quantizer replaced by the identity:
    the float network of the same architecture) exported to ONNX, CPU provider, intra-op
    threads set, graph optimizations on;
  * LCE: the larq-zoo model of the same architecture converted by larq-compute-engine 0.16 and
    run with ``Interpreter(use_indirect_bgemm=True, use_xnnpack=True)`` in ``.venv-lce``
    (benchmarks/e2e_lce.py; skipped with a note when that venv is missing).

Runtimes are measured in interleaved rounds (each runs a chunk of 5 timed runs per round, after
one untimed run and 50 ms idle, so that the previous runtime's spinning worker threads have
stopped; each round starts with the next runtime). Every timing is the median over ``--repeats`` runs (min-max in brackets);
ratios are peer median / xnorkit median measured in the same run at the same thread count.
Writes benchmarks/results/e2e.md, e2e.json and the per-layer breakdown plot e2e_layers.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _host import machine

# Every runtime here shares the process (and its 2 cores) with torch: libgomp's worker threads
# otherwise keep spinning after each torch call and take the core another runtime's helper
# thread needs. Passive waiting makes them sleep between calls (a thread wake per torch call).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# name -> (input shape without batch, LCE zoo name, the issue's LCE 1-thread figure in ms)
MODELS = {
    "binarynet": ((3, 32, 32), "BinaryNetCIFAR", 5.9),
    "birealnet18": ((3, 224, 224), "BiRealNet", 25.1),
    "quicknet": ((3, 224, 224), "QuickNet", 24.0),
    "quicknet_small": ((3, 224, 224), "QuickNetSmall", 15.5),
    "binary_alexnet": ((3, 224, 224), "BinaryAlexNet", 13.5),
    "binarynet_mlp": ((1, 28, 28), None, None),
}


def stats(ts: list[float], cpu: list[float] | None = None) -> dict:
    d = {"median_ms": statistics.median(ts) * 1e3, "min_ms": min(ts) * 1e3, "max_ms": max(ts) * 1e3, "n": len(ts)}
    if cpu:
        d["cpu"] = {"median_ms": statistics.median(cpu) * 1e3, "min_ms": min(cpu) * 1e3, "max_ms": max(cpu) * 1e3,
                    "n": len(cpu)}
    return d


def timeit(fn, repeats: int, warmup: int, budget_s: float) -> list[float]:
    for _ in range(warmup):
        fn()
    ts: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(ts) < repeats and (len(ts) < 5 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def float_twin(model: torch.nn.Module) -> torch.nn.Module:
    """The same architecture with every quantizer replaced by the identity."""
    import copy

    from xnorkit.quantizers import Quantizer

    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Quantizer):
                setattr(parent, name, torch.nn.Identity())
    return twin.eval()


class LceWorker:
    """benchmarks/e2e_lce.py --serve in .venv-lce: builds each larq-zoo model once and times
    requests, so that LCE runs interleave with the in-process runtimes."""

    def __init__(self, warmup: int):
        py = ROOT / ".venv-lce" / "bin" / "python"
        if not py.exists():
            raise FileNotFoundError(".venv-lce not found (see benchmarks/e2e_lce.py for the install command)")
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.p = subprocess.Popen([str(py), str(ROOT / "benchmarks" / "e2e_lce.py"), "--serve", "--warmup", str(warmup)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  env=env)
        self.version = None

    def times(self, model: str, threads: int, n: int) -> tuple[list[float], list[float]]:
        """(wall times, calling-thread CPU times) of n runs."""
        self.p.stdin.write(f"{model} {threads} {n}\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("the LCE worker exited (run benchmarks/e2e_lce.py by hand to see why)")
        d = json.loads(line)
        return d["wall"], d["cpu"]

    def close(self) -> None:
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
            self.p.wait(timeout=30)
        except Exception:
            self.p.kill()


def timed(fn, n: int) -> tuple[list[float], list[float]]:
    """Wall times and CPU times of the calling thread (at 1 thread every runtime here computes
    in the calling thread, so the CPU time is the latency without interference from other
    processes on a shared machine)."""
    ts, cs = [], []
    for _ in range(n):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.thread_time() - c0)
    return ts, cs


def make_ort(model, x: torch.Tensor, threads: int, tmp: Path):
    import onnxruntime as ort

    path = tmp / "model.onnx"
    if not path.exists():
        with torch.inference_mode():
            torch.onnx.export(model, (x,), str(path), opset_version=17, input_names=["x"], output_names=["y"],
                              dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    xs = x.numpy()
    return lambda: sess.run(None, {"x": xs})


SETTLE_S = 0.05  # idle seconds before each turn (see measure)


def measure(runners: dict, repeats: int, warmup: int, budget: float, chunk: int = 5, settle: float = SETTLE_S) -> dict:
    """Interleaved rounds: each runner runs `chunk` + 1 times per round, the first run untimed,
    until every runner has `repeats` samples or the budget is spent (at least 5 samples each).

    The untimed run per chunk: on this shared virtual machine the first runs after the process
    has waited (here: for the LCE worker's chunk) are often much slower, whichever runtime comes
    next; every runtime gets the same one-run warm-up after the switch.

    `settle` seconds of idle before every turn, and each round starts one runner later than the
    last: multi-threaded runtimes keep their worker threads spinning after a run (the LCE
    worker's 2-thread interpreter burned about 30 ms of CPU after its chunk, onnxruntime spins
    by default), which took a core from whichever runtime came next in a fixed order."""
    for name, r in runners.items():
        r(warmup) if name == "lce" else timed(r, warmup)
    ts: dict[str, list[float]] = {k: [] for k in runners}
    cs: dict[str, list[float]] = {k: [] for k in runners}
    rounds: dict[str, list[float | None]] = {k: [] for k in runners}  # per round: the chunk's median (ms)
    names = list(runners)
    t_end = time.perf_counter() + budget
    rnd = 0
    while any(len(v) < repeats for v in ts.values()):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            r = runners[name]
            if len(ts[name]) < repeats:
                time.sleep(settle)
                w, c = r(chunk + 1) if name == "lce" else timed(r, chunk + 1)
                ts[name] += w[1:]
                cs[name] += c[1:]
                rounds[name].append(statistics.median(w[1:]) * 1e3)
            else:
                rounds[name].append(None)
        rnd += 1
        if time.perf_counter() > t_end and all(len(v) >= 5 for v in ts.values()):
            break
    return {k: {**stats(v, cs[k]), "rounds_ms": rounds[k]} for k, v in ts.items()}


def convert_model(model, x: torch.Tensor, precision: str) -> bytes:
    from xnorkit.convert.pipeline import convert

    calib = torch.randn(8, *x.shape[1:]) if precision == "int8" else None
    return convert(model, x, precision=precision, calibration=calib).data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--budget", type=float, default=20.0, help="max seconds per measurement (at least 5 runs)")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 variant")
    ap.add_argument("--no-lce", action="store_true")
    ap.add_argument("--quick", action="store_true", help="few repeats (smoke run)")
    ap.add_argument("--out", default=str(RESULTS / "e2e"))
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.budget = 5, 1, 5.0
    names = [m for m in args.models.split(",") if m]
    for n in names:
        if n not in MODELS:
            ap.error(f"unknown model {n!r}; known: {', '.join(MODELS)}")
    threads = [int(t) for t in args.threads.split(",")]

    import xnorkit
    from xnorkit import _core
    from xnorkit.models import get_model

    torch.manual_seed(0)
    out: dict = {"machine": machine(), "date": datetime.date.today().isoformat(), "isa": _core.isa_name(_core.get_isa()),
                 "torch": torch.__version__, "models": {}}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        out["onnxruntime"] = None
    lce = None
    if not args.no_lce:
        try:
            lce = LceWorker(args.warmup)
            out["lce_versions"] = "larq-compute-engine 0.16.0, tensorflow-cpu 2.16.2, larq 0.14.0, larq-zoo 2.4.0"
        except Exception as exc:
            out["lce_error"] = str(exc)
            print(f"LCE not measured: {exc}", flush=True)
    for name in names:
        shape, _, _ = MODELS[name]
        print(f"== {name}", flush=True)
        model = get_model(name).eval()
        x = torch.randn(1, *shape)
        rec: dict = {"input": [1, *shape], "threads": {}}
        try:
            data = convert_model(model, x, "float")
            data8 = None if args.no_int8 else convert_model(model, x, "int8")
            rec["file_bytes"] = len(data)
            rec["file_bytes_int8"] = len(data8) if data8 else None
            eng = xnorkit.Model(data)
            rec["ops"] = len(eng.ops)
            rec["binary_macs"] = sum(o["macs"] for o in eng.ops if o["precision"] == "binary")
            rec["other_macs"] = sum(o["macs"] for o in eng.ops if o["precision"] in ("float", "int8"))
        except Exception as exc:  # conversion failure is reported, not fatal
            rec["error"] = f"conversion failed: {type(exc).__name__}: {exc}"
            print("  " + rec["error"], flush=True)
            data = data8 = None
        twin = float_twin(model)
        lce_name = MODELS[name][1]
        with tempfile.TemporaryDirectory() as tmpd:
            for t in threads:
                runners: dict = {}
                eng = None
                xs = np.ascontiguousarray(x.numpy())
                if data is not None:
                    eng = xnorkit.Model(data, num_threads=t, max_batch=1)
                    runners["xnorkit"] = lambda eng=eng, xs=xs: eng.run(xs)
                if data8 is not None:
                    try:
                        eng8 = xnorkit.Model(data8, num_threads=t, max_batch=1)
                        runners["xnorkit_int8"] = lambda eng8=eng8, xs=xs: eng8.run(xs)
                    except ValueError as exc:
                        rec.setdefault("notes", []).append(f"int8 model not run: {exc}"[:300])
                        data8 = None

                def torch_run(t=t):
                    torch.set_num_threads(t)
                    with torch.inference_mode():
                        model(x)

                def torch_float_run(t=t):
                    torch.set_num_threads(t)
                    with torch.inference_mode():
                        twin(x)

                runners["torch"] = torch_run
                runners["torch_float"] = torch_float_run
                try:
                    runners["onnxruntime"] = make_ort(twin, x, t, Path(tmpd))
                except Exception as exc:
                    rec.setdefault("notes", []).append(f"onnxruntime: {type(exc).__name__}: {exc}"[:300])
                if lce is not None and lce_name:
                    runners["lce"] = lambda n, t=t, ln=lce_name: lce.times(ln, t, n)
                r = measure(runners, args.repeats, args.warmup, args.budget)
                if eng is not None and t == threads[0]:
                    timings, _ = eng.profile(xs, repeats=max(5, min(args.repeats, 20)), warmup=2)
                    rec["layers"] = [dict(name=o.name, kind=o.kind, precision=o.precision, ms=o.seconds * 1e3,
                                          macs=o.macs) for o in timings]
                rec["threads"][str(t)] = r
                print("  " + f"{t}T " + ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in r.items()), flush=True)
        out["models"][name] = rec
    if lce is not None:
        lce.close()
    write_results(out, Path(args.out))
    return 0


def fmt(s: dict | None) -> str:
    if not s:
        return "-"
    return f"{s['median_ms']:.2f} [{s['min_ms']:.2f}-{s['max_ms']:.2f}]"


def ratio(peer: dict | None, ours: dict | None) -> str:
    if not peer or not ours:
        return "-"
    return f"{peer['median_ms'] / ours['median_ms']:.1f}x"


def paired(peer: dict | None, ours: dict | None) -> list[float]:
    """Per-round ratios peer / ours (chunk medians of the same round, adjacent in time)."""
    if not peer or not ours:
        return []
    return [p / o for p, o in zip(peer.get("rounds_ms", []), ours.get("rounds_ms", [])) if p and o]


def ratio_paired(peer: dict | None, ours: dict | None) -> str:
    """Median [quartiles] of the per-round ratios: a host phase that slows one round slows both
    runtimes of that round, so this moves less between runs than the ratio of the medians."""
    rs = paired(peer, ours)
    if len(rs) < 3:
        return "-"
    q = statistics.quantiles(rs, n=4)
    return f"{statistics.median(rs):.1f}x [{q[0]:.1f}-{q[2]:.1f}]"


def write_results(out: dict, base: Path) -> None:
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".json").write_text(json.dumps(out, indent=1))
    lines = [
        "# End-to-end latency: xnorkit engine vs PyTorch, onnxruntime and Larq Compute Engine",
        "",
        f"Machine: {out['machine']}; xnorkit ISA: {out['isa']}; {out['date']}; torch {out['torch']}, "
        f"onnxruntime {out['onnxruntime']}. Batch 1, random weights, eval mode. xnorkit: non-binary layers "
        "in float32; xnorkit int8: the same model with int8 non-binary layers (calibrated on random data).",
        "",
        "Times in ms: median [min-max] over the repeated runs; ratios = peer median / xnorkit median in the same "
        "run and thread count. The runtimes take turns in rounds of 5 timed runs each, every turn after one "
        "untimed run (the first run after a switch is often slow on this shared machine); "
        f"{SETTLE_S * 1e3:.0f} ms idle before every turn and each round starts with the next runtime, because "
        "multi-threaded runtimes keep their worker threads spinning for a while after a run (LCE's 2-thread "
        "worker used about 30 ms of CPU after its turn), taking a core from the runtime that followed in a fixed "
        "order. All runtimes share one process; torch's OpenMP threads wait passively "
        f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}) so they do not spin on the core another runtime's "
        "thread needs. PyTorch BNN: the model itself in float32 eager (binarization simulated); "
        "float twin: the same architecture with every quantizer removed (a float network), in PyTorch eager and "
        "exported to ONNX for onnxruntime. "
        "LCE: larq-zoo model converted by larq-compute-engine, `Interpreter(use_indirect_bgemm=True, "
        "use_xnnpack=True)`. Paired columns: the median [quartiles] over rounds of the ratio of the two runtimes' "
        "chunk medians in the same round (the turns of one round are adjacent in time, so a slow phase of the "
        "shared host weighs on both; the ratio of the overall medians can move by a third between runs here).",
        "",
    ]
    if out.get("lce_error"):
        lines += [f"LCE was not measured in this run ({out['lce_error'][:200]}). "
                  "The issue's LCE figures for this machine (1 thread) are quoted in the last column for reference.", ""]
    else:
        lines += [f"LCE: {out.get('lce_versions', '')}; BinaryNetCIFAR is built with larq layers (not in larq-zoo).", ""]
    threads = sorted({int(t) for m in out["models"].values() for t in m.get("threads", {})})
    for t in threads:
        lines += [f"## {t} thread{'s' if t > 1 else ''}", "",
                  "| model | xnorkit | xnorkit int8 | PyTorch BNN | PyTorch float twin | onnxruntime float twin | LCE | "
                  "vs PyTorch BNN | vs PyTorch float | vs ORT | vs LCE | int8 vs LCE | LCE (issue, 1T) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        paired_rows = []
        for name, m in out["models"].items():
            r = m.get("threads", {}).get(str(t), {})
            lce_s = r.get("lce")
            issue = MODELS[name][2]
            ours = r.get("xnorkit")
            lines.append(f"| {name} | {fmt(ours)} | {fmt(r.get('xnorkit_int8'))} | {fmt(r.get('torch'))} | "
                         f"{fmt(r.get('torch_float'))} | {fmt(r.get('onnxruntime'))} | {fmt(lce_s)} | "
                         f"{ratio(r.get('torch'), ours)} | {ratio(r.get('torch_float'), ours)} | "
                         f"{ratio(r.get('onnxruntime'), ours)} | {ratio(lce_s, ours)} | "
                         f"{ratio(lce_s, r.get('xnorkit_int8'))} | "
                         f"{issue if issue else '-'}" + (f" ({issue / ours['median_ms']:.1f}x)" if issue and ours and t == 1 else "")
                         + " |")
            i8 = r.get("xnorkit_int8")
            paired_rows.append(f"| {name} | {ratio_paired(lce_s, ours)} | {ratio_paired(lce_s, i8)} | "
                               f"{ratio_paired(r.get('torch'), ours)} | {ratio_paired(r.get('torch'), i8)} |")
        lines += ["", f"Paired per-round ratios, {t} thread{'s' if t > 1 else ''}:", "",
                  "| model | vs LCE | int8 vs LCE | vs PyTorch BNN | int8 vs PyTorch BNN |", "|---|---|---|---|---|"]
        lines += paired_rows
        lines.append("")
    if any("cpu" in (m.get("threads", {}).get("1", {}).get("xnorkit") or {}) for m in out["models"].values()):
        lines += ["## 1 thread, CPU time of the calling thread", "",
                  "The same runs measured with `time.thread_time()`: at 1 thread every runtime computes in the calling "
                  "thread, so this is the latency without the interference of other processes on a shared machine "
                  "(the wall times above include time the thread spent descheduled).", "",
                  "| model | xnorkit | xnorkit int8 | PyTorch BNN | PyTorch float twin | onnxruntime float twin | LCE | "
                  "vs PyTorch BNN | vs PyTorch float | vs ORT | vs LCE | int8 vs LCE |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in out["models"].items():
            r = {k: v.get("cpu") for k, v in m.get("threads", {}).get("1", {}).items() if isinstance(v, dict)}
            ours = r.get("xnorkit")
            lines.append(f"| {name} | {fmt(ours)} | {fmt(r.get('xnorkit_int8'))} | {fmt(r.get('torch'))} | "
                         f"{fmt(r.get('torch_float'))} | {fmt(r.get('onnxruntime'))} | {fmt(r.get('lce'))} | "
                         f"{ratio(r.get('torch'), ours)} | {ratio(r.get('torch_float'), ours)} | "
                         f"{ratio(r.get('onnxruntime'), ours)} | {ratio(r.get('lce'), ours)} | "
                         f"{ratio(r.get('lce'), r.get('xnorkit_int8'))} |")
        lines.append("")
    lines += ["## Models", "", "| model | file bytes | ops | binary MACs | float/int8 MACs | notes |", "|---|---|---|---|---|---|"]
    for name, m in out["models"].items():
        notes = "; ".join(([m["error"]] if m.get("error") else []) + m.get("notes", []))
        lines.append(f"| {name} | {m.get('file_bytes', '-')} | {m.get('ops', '-')} | {m.get('binary_macs', 0) / 1e6:.1f} M | "
                     f"{m.get('other_macs', 0) / 1e6:.1f} M | {notes} |")
    lines += ["", "Per-layer breakdown (1 thread, xnorkit): e2e_layers.png; raw numbers in e2e.json.", ""]
    base.with_suffix(".md").write_text("\n".join(lines))
    plot_layers(out, base.parent / (base.name + "_layers.png"))
    print(f"wrote {base.with_suffix('.md')}, {base.with_suffix('.json')}")


def plot_layers(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [(n, m) for n, m in out["models"].items() if m.get("layers")]
    if not models:
        return
    colors = {"binary": "#1f77b4", "float": "#ff7f0e", "int8": "#2ca02c", "-": "#999999"}
    fig, axes = plt.subplots(len(models), 1, figsize=(12, 2.6 * len(models)), squeeze=False)
    for ax, (name, m) in zip(axes[:, 0], models):
        layers = m["layers"]
        ms = [l["ms"] for l in layers]
        ax.bar(range(len(ms)), ms, color=[colors.get(l["precision"], "#999999") for l in layers])
        total = sum(ms)
        by = {}
        for l in layers:
            k = l["precision"] if l["precision"] != "-" else "other"
            by[k] = by.get(k, 0.0) + l["ms"]
        share = ", ".join(f"{k} {v:.2f} ms ({v / total * 100:.0f}%)" for k, v in sorted(by.items(), key=lambda kv: -kv[1]))
        ax.set_title(f"{name}: {total:.2f} ms in ops — {share}", fontsize=9)
        ax.set_ylabel("ms")
        ax.set_xticks(range(len(ms)))
        ax.set_xticklabels([f"{i}:{l['kind']}" for i, l in enumerate(layers)], rotation=90, fontsize=6)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    fig.legend(handles, ["binary", "float", "int8", "other"], loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
