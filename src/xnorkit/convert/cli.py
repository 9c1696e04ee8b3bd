"""``xnorkit convert``, ``xnorkit info`` and ``xnorkit export-c`` (registered by xnorkit.cli)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from xnorkit.convert import format as xkf
from xnorkit.convert.ir import ConversionError

__all__ = ["convert", "info", "export_c", "model_summary"]


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from None


def _normalisation(preprocess) -> tuple[list[float], list[float]] | None:
    """(mean, std) of a Preprocess whose eval transform is a plain Normalize."""
    from xnorkit.data.transforms import Normalize

    t = getattr(preprocess, "eval", None)
    if isinstance(t, Normalize):
        return ([127.5], [127.5]) if t.mode == "pm1" else ([0.0], [255.0])
    return None


def _load_source(source: str, input_shape: str | None, num_classes: int | None):
    """(model, example input, config dict or None, dataset info or None) for a checkpoint or zoo:NAME."""
    import torch

    if source.startswith("zoo:"):
        from xnorkit.models import get_model

        kwargs: dict[str, Any] = {}
        if input_shape:
            kwargs["input_shape"] = tuple(int(s) for s in input_shape.split(","))
        if num_classes:
            kwargs["num_classes"] = num_classes
        model = get_model(source[4:], **kwargs).eval()
        return model, model.example_input(1, generator=torch.Generator().manual_seed(0)), None, None
    from xnorkit.train.evaluate import load_trained_model

    model, cfg = load_trained_model(source)
    shape = getattr(model, "default_input_shape", None)
    if input_shape:
        shape = tuple(int(s) for s in input_shape.split(","))
    if not shape:
        raise click.ClickException(f"{source}: the model does not declare its input shape; pass --input-shape C,H,W")
    return model, torch.zeros(1, *shape), cfg.to_dict(), cfg


@click.command("convert")
@click.argument("source", metavar="SOURCE")
@click.argument("output", metavar="OUTPUT.xk", type=click.Path(dir_okay=False))
@click.option("--precision", type=click.Choice(["auto", "int8", "float"]), default="auto", show_default=True,
              help="Non-binary conv/dense layers: int8 (calibrated), float32, or auto (int8 when calibration data "
                   "is available, else float).")
@click.option("--float-layer", "float_layers", multiple=True, metavar="NAME",
              help="Keep this layer (module path) in float32; repeatable.")
@click.option("--calibration-samples", type=int, default=512, show_default=True,
              help="Training samples used to calibrate int8 activations (checkpoints with a local dataset).")
@click.option("--calibration", "calibration_npy", type=click.Path(exists=True, dir_okay=False),
              help="A .npy array of calibration inputs (the model's layout, batch first).")
@click.option("--input-shape", help="Per-sample input shape, e.g. 3,32,32 (zoo models, or to override).")
@click.option("--num-classes", type=int, help="Classes of a zoo model.")
@click.option("--data-dir", help="Dataset folder for calibration and labels (default: the checkpoint's).")
@click.option("--quiet", is_flag=True, help="Do not print the conversion table.")
def convert(source, output, precision, float_layers, calibration_samples, calibration_npy, input_shape, num_classes,
            data_dir, quiet):
    """Convert SOURCE (a model.pt/checkpoint.pt from `xnorkit train`, or zoo:NAME for a zoo model with its
    initial weights) into OUTPUT.xk, printing which layers became binary, int8 or float and why."""
    from xnorkit.convert.pipeline import convert as do_convert

    try:
        model, example, config, cfg = _load_source(source, input_shape, num_classes)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        _fail(exc)
    calib = None
    labels = mean = std = None
    if calibration_npy:
        calib = np.load(calibration_npy).astype(np.float32)
    if cfg is not None:
        try:
            import torch

            from xnorkit.data import get_preprocess, load_dataset
            from xnorkit.data.files import DatasetError
        except ImportError as exc:  # pragma: no cover
            _fail(exc)
        try:

            name = cfg.dataset
            root = data_dir if data_dir is not None else cfg.data_dir
            pre = get_preprocess(name, cfg.hparams.preprocess)
            norm = _normalisation(pre)
            if norm:
                mean, std = norm
            if calib is None and precision != "float" and calibration_samples > 0:
                ds = load_dataset(name, "train", root, download=False).subset(calibration_samples)
                calib = pre.eval(ds.images, torch.Generator()).float()
                labels = list(ds.classes) or None
            else:
                labels = list(load_dataset(name, "test", root, download=False).classes) or None
        except (FileNotFoundError, ValueError, OSError, DatasetError) as exc:
            click.echo(f"note: dataset not available ({exc}); no calibration data or labels", err=True)
    try:
        result = do_convert(model, example, calibration=calib, precision=precision, float_layers=float_layers,
                            labels=labels, input_mean=mean, input_std=std, config=config, verbose=not quiet)
    except ConversionError as exc:
        _fail(exc)
    n = result.save(output)
    click.echo(f"wrote {output}: {n} bytes ({n / max(1, result.model.const_bytes()):.3f}x the tensors)")


def model_summary(m: xkf.XkModel) -> dict:
    """Per-op rows (kind, precision, output, MACs, weight bytes) and totals of a model file."""
    T = m.tensors
    ops, tot = [], {"binary_macs": 0, "int8_macs": 0, "float_macs": 0, "weight_bytes": 0, "float32_weight_bytes": 0}
    for op in m.ops:
        out = T[op.output]
        refs = op.tensor_refs()
        wbytes = sum(T[i].nbytes for i in refs.values())
        macs = 0
        prec = "-"
        if op.kind in ("bconv2d", "conv2d", "bdense", "dense"):
            w = T[op.weights]
            per_out = int(np.prod(w.shape[1:])) if op.kind != "conv2d" or op.params["groups"] == 1 else \
                int(w.shape[0] * w.shape[1])
            if op.kind == "bconv2d":
                per_out = w.shape[1]
            macs = int(np.prod(out.shape[1:])) * per_out
            prec = "binary" if op.kind in ("bconv2d", "bdense") else ("int8" if op.params["precision"] else "float")
            tot[{"binary": "binary_macs", "int8": "int8_macs", "float": "float_macs"}[prec]] += macs
            nweights = int(np.prod(w.shape))
            tot["float32_weight_bytes"] += 4 * nweights + (wbytes - w.nbytes if prec != "binary" else 0)
        else:
            tot["float32_weight_bytes"] += wbytes
        tot["weight_bytes"] += wbytes
        ops.append(dict(name=op.name, kind=op.kind, precision=prec, output=f"{out.dtype}{list(out.shape)}",
                        macs=macs, weight_bytes=wbytes))
    return {"ops": ops, "totals": tot}


@click.command("info")
@click.argument("model_path", metavar="MODEL.xk", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def info(model_path, as_json):
    """Validate MODEL.xk and show its layers, sizes, MACs and metadata."""
    try:
        m = xkf.read(model_path)
    except (xkf.FormatError, OSError) as exc:
        _fail(exc)
    s = model_summary(m)
    ios = {"inputs": [dict(name=m.tensors[i].name, shape=list(m.tensors[i].shape), torch=m.tensors[i].torch_layout)
                      for i in m.inputs],
           "outputs": [dict(name=m.tensors[i].name, shape=list(m.tensors[i].shape), dtype=m.tensors[i].dtype)
                       for i in m.outputs]}
    meta = {k: (v if t in ("utf8",) and len(str(v)) < 200 else f"<{t}, {np.size(v) if t in ('f32', 'i32') else len(str(v))}>")
            for k, (t, v) in m.meta.items() if k not in ("report",)}
    if "input_mean" in m.meta:
        meta["input_mean"] = m.meta_value("input_mean").tolist()
        meta["input_std"] = m.meta_value("input_std").tolist() if "input_std" in m.meta else None
    doc = {"file": str(model_path), "version": f"{m.version[0]}.{m.version[1]}", "file_bytes": m.file_size,
           "tensor_bytes": m.const_bytes(), "arena_bytes_per_sample": m.arena_size, **ios, "metadata": meta, **s}
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    tot = s["totals"]
    con.print(f"[bold]{model_path}[/]: format {doc['version']}, {m.file_size:,} bytes "
              f"(tensors {m.const_bytes():,} B, {m.file_size / max(1, m.const_bytes()):.3f}x), "
              f"arena {m.arena_size:,} B per sample")
    con.print(f"inputs: {ios['inputs']}\noutputs: {ios['outputs']}")
    table = Table(title="ops")
    for c in ("#", "name", "kind", "precision", "output", "MACs", "weights"):
        table.add_column(c, justify="right" if c in ("#", "MACs", "weights") else "left")
    for i, r in enumerate(s["ops"]):
        table.add_row(str(i), r["name"], r["kind"], r["precision"], r["output"], f"{r['macs']:,}" if r["macs"] else "",
                      f"{r['weight_bytes']:,}" if r["weight_bytes"] else "")
    con.print(table)
    f32 = tot["float32_weight_bytes"]
    con.print(f"MACs: binary {tot['binary_macs']:,}, int8 {tot['int8_macs']:,}, float {tot['float_macs']:,}; "
              f"weights {tot['weight_bytes']:,} B vs {f32:,} B as float32 ({f32 / max(1, tot['weight_bytes']):.1f}x)")
    if meta:
        con.print("metadata: " + ", ".join(f"{k}={v}" for k, v in meta.items()))


@click.command("export-c")
@click.argument("model_path", metavar="MODEL.xk", type=click.Path(exists=True, dir_okay=False))
@click.argument("outdir", metavar="OUTDIR", type=click.Path(file_okay=False))
@click.option("--name", default="xk_model", show_default=True, help="C symbol prefix of the model array.")
@click.option("--max-batch", type=int, default=1, show_default=True, help="Batch the static arena is sized for.")
def export_c(model_path, outdir, name, max_batch):
    """Write MODEL.xk as C sources for any C99 compiler: model_data.c/.h (the bytes as a 64-byte
    aligned const array, the arena size), the engine's portable sources, main.c and a Makefile."""
    from xnorkit.convert.export_c import export

    try:
        files = export(model_path, outdir, name=name, max_batch=max_batch)
    except (xkf.FormatError, OSError, ValueError) as exc:
        _fail(exc)
    click.echo(f"wrote {len(files)} files to {outdir} (make -C {outdir}; see {Path(outdir) / 'README.md'})")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(convert())
