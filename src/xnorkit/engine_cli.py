"""``xnorkit run`` and ``xnorkit bench``: run a converted model with the C engine.

``run`` takes an ``.npy`` input (printing or saving the outputs) or a dataset split (printing
accuracy); ``bench`` measures latency per op and for the whole model at each thread count.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import click
import numpy as np


def _console():
    from rich.console import Console

    return Console()


def _load(path: str, threads: int | None, max_batch: int):
    from xnorkit.runtime import Model

    try:
        return Model(path, num_threads=threads, max_batch=max_batch)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None


def _dataset_inputs(model, dataset: str, split: str, limit: int | None, preprocess: str | None, root: str | None):
    import torch

    from xnorkit.data import get_preprocess, load_dataset

    data = load_dataset(dataset, split, root=root)
    if limit:
        data = data.subset(limit)
    images = data.images
    if preprocess:
        x = get_preprocess(data.name, preprocess).eval(images, torch.Generator())
        x = x.float().numpy()
    elif model.meta("input_mean") is not None or model.meta("input_std") is not None:
        x = model.normalize(images.float().numpy())
    else:
        x = get_preprocess(data.name, "default").eval(images, torch.Generator()).float().numpy()
    return np.ascontiguousarray(x, dtype=np.float32), data.labels.numpy(), data.classes


@click.command("run")
@click.argument("model_path", metavar="MODEL.xk", type=click.Path(exists=True, dir_okay=False))
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False),
              help="A .npy array in the PyTorch model's layout (NCHW images, NC features), batch first.")
@click.option("--dataset", help="Evaluate on a dataset split instead: mnist, fashion_mnist, cifar10.")
@click.option("--split", default="test", show_default=True)
@click.option("--limit", type=int, help="Only the first N samples (class-balanced) of the split.")
@click.option("--preprocess", help="Preprocessing recipe of xnorkit.data (default: the file's input "
              "normalisation, else the dataset's 'default').")
@click.option("--data-root", help="Dataset root (default: $XNORKIT_DATA or ~/.cache/xnorkit/datasets).")
@click.option("--threads", type=int, help="Kernel threads (default: all cores).")
@click.option("--batch", "max_batch", type=int, default=64, show_default=True, help="Samples per engine call.")
@click.option("--output", type=click.Path(dir_okay=False), help="Save the outputs as .npy.")
@click.option("--top", type=int, default=3, show_default=True, help="Classes printed per sample (--input).")
def run(model_path, input_path, dataset, split, limit, preprocess, data_root, threads, max_batch, output, top):
    """Run MODEL.xk on an .npy input or on a dataset split (accuracy)."""
    if bool(input_path) == bool(dataset):
        raise click.UsageError("give exactly one of --input or --dataset")
    con = _console()
    model = _load(model_path, threads, max_batch)
    labels_meta = model.labels
    if input_path:
        x = np.load(input_path)
        t0 = time.perf_counter()
        try:
            y = model.run(x)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        dt = time.perf_counter() - t0
        ys = y if isinstance(y, tuple) else (y,)
        if output:
            np.save(output, ys[0])
        con.print(f"{model_path}: {len(ys[0])} sample(s) in {dt * 1e3:.2f} ms")
        out = ys[0]
        if out.ndim == 2 and out.shape[1] > 1:
            for i, row in enumerate(out[:20]):
                idx = np.argsort(-row)[:top]
                names = [labels_meta[j] if labels_meta and j < len(labels_meta) else str(j) for j in idx]
                con.print(f"  [{i}] " + ", ".join(f"{n}: {row[j]:.4g}" for n, j in zip(names, idx)))
            if len(out) > 20:
                con.print(f"  ... {len(out) - 20} more")
        else:
            con.print(np.array2string(out[:20], precision=4, threshold=200))
        return
    x, labels, classes = _dataset_inputs(model, dataset, split, limit, preprocess, data_root)
    t0 = time.perf_counter()
    y = model.run(x)
    dt = time.perf_counter() - t0
    y = y[0] if isinstance(y, tuple) else y
    if y.ndim != 2 or y.shape[0] != len(labels):
        raise click.ClickException(f"model output shape {y.shape} is not (samples, classes)")
    pred = y.argmax(1)
    acc = float((pred == labels).mean())
    if output:
        np.save(output, y)
    con.print(f"{model_path} on {dataset}/{split}: accuracy {acc * 100:.2f}% "
              f"({int((pred == labels).sum())}/{len(labels)}), {dt:.2f} s, "
              f"{dt / len(labels) * 1e3:.3f} ms/sample (batch {max_batch}, "
              f"{model.info()['num_threads']} thread(s))")


def bench_model(model_path: str, threads_list, batch: int, repeats: int, warmup: int):
    """Per-op and whole-model latency for each thread count. Returns a dict (JSON-able)."""
    from xnorkit import _core
    from xnorkit.runtime import Model

    results = {"model": str(model_path), "batch": batch, "isa": _core.isa_name(_core.get_isa()), "runs": []}
    for t in threads_list:
        model = Model(model_path, num_threads=t, max_batch=batch)
        rng = np.random.default_rng(0)
        xs = [rng.normal(size=(batch, *s["shape"][1:])).astype(np.float32) for s in model.inputs]
        timings, _ = model.profile(*xs, repeats=repeats, warmup=warmup, layout="stored")
        whole = []
        for _ in range(warmup):
            model.run(*xs, layout="stored")
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.run(*xs, layout="stored")
            whole.append(time.perf_counter() - t0)
        results["runs"].append({
            "threads": t,
            "median_s": statistics.median(whole), "min_s": min(whole), "max_s": max(whole),
            "ops": [dict(index=o.index, name=o.name, kind=o.kind, precision=o.precision, seconds=o.seconds,
                         macs=o.macs, fused=bool(model.ops[o.index].get("fused", False))) for o in timings],
        })
    return results


@click.command("bench")
@click.argument("model_path", metavar="MODEL.xk", type=click.Path(exists=True, dir_okay=False))
@click.option("--threads", default="1,2", show_default=True, help="Comma-separated thread counts.")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--repeats", type=int, default=50, show_default=True)
@click.option("--warmup", type=int, default=5, show_default=True)
@click.option("--top", type=int, default=15, show_default=True, help="Slowest ops listed per thread count (0: all).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the results as JSON.")
def bench(model_path, threads, batch, repeats, warmup, top, json_path):
    """Latency of MODEL.xk per op and for the whole model (median, min-max)."""
    from rich.table import Table

    try:
        threads_list = [int(t) for t in threads.split(",") if t.strip()]
    except ValueError:
        raise click.UsageError(f"--threads must be comma-separated integers, got {threads!r}") from None
    if not threads_list or min(threads_list) < 1:
        raise click.UsageError("--threads needs counts >= 1")
    _load(model_path, 1, batch)  # validates the file with a clear message
    res = bench_model(model_path, threads_list, batch, repeats, warmup)
    con = _console()
    con.print(f"{model_path}: batch {batch}, ISA {res['isa']}, {repeats} runs")
    summary = Table("threads", "median ms", "min-max ms")
    for r in res["runs"]:
        summary.add_row(str(r["threads"]), f"{r['median_s'] * 1e3:.3f}",
                        f"{r['min_s'] * 1e3:.3f}-{r['max_s'] * 1e3:.3f}")
    con.print(summary)
    for r in res["runs"]:
        total = sum(o["seconds"] for o in r["ops"]) or 1.0
        ops = sorted(r["ops"], key=lambda o: -o["seconds"])
        if top:
            ops = ops[:top]
        t = Table("#", "op", "kind", "precision", "ms", "%", "GMAC/s", title=f"{r['threads']} thread(s): per op")
        for o in ops:
            rate = o["macs"] * batch / o["seconds"] * 1e-9 if o["seconds"] > 0 and o["macs"] else 0.0
            kind = o["kind"] + (" (fused)" if o.get("fused") else "")  # runs inside the previous op
            t.add_row(str(o["index"]), o["name"][:40], kind, o["precision"], f"{o['seconds'] * 1e3:.3f}",
                      f"{o['seconds'] / total * 100:.1f}", f"{rate:.1f}" if rate else "")
        con.print(t)
    if json_path:
        Path(json_path).write_text(json.dumps(res, indent=1))
        con.print(f"wrote {json_path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
