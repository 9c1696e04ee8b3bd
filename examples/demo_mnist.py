#!/usr/bin/env python3
"""The main demo: train a binary MNIST network briefly, convert it to a .xk file, run the MNIST
test set through the C engine, and report accuracy (PyTorch vs engine), model size (float vs
deployed) and speed (PyTorch float32 eager vs the engine, batch 1 and batch 100).

Run with `make demo` (creates .venv first). Data: $XNORKIT_DATA (default ../shared/datasets
beside the checkout, else ~/.cache/xnorkit/datasets, downloaded with checksums).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import xnorkit
from xnorkit.data import load_dataset
from xnorkit.models import get_model


def default_data_root() -> str | None:
    if os.environ.get("XNORKIT_DATA"):
        return os.environ["XNORKIT_DATA"]
    shared = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    return str(shared) if shared.is_dir() else None


def normalize(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(127.5).sub_(1.0)  # [0, 255] -> [-1, 1]


def median_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--data-dir", default=default_data_root())
    ap.add_argument("--out", type=Path, default=None, help="where to keep model.xk (default: a temp dir)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)

    train = load_dataset("mnist", "train", args.data_dir)
    test = load_dataset("mnist", "test", args.data_dir)
    xtr, ytr = normalize(train.images), train.labels
    xte, yte = normalize(test.images), test.labels

    # BinaryNet MLP: binary weights everywhere, binary activations between the hidden layers.
    model = get_model("binarynet_mlp", hidden_units=args.hidden, num_hidden_layers=3, dropout_in=0.0,
                      dropout_hidden=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = args.epochs * (len(xtr) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    print(f"[1/4] training binarynet_mlp (3 x {args.hidden} binary) on MNIST, {args.epochs} epoch(s)")
    t0 = time.perf_counter()
    model.train()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr) - args.batch_size + 1, args.batch_size):
            idx = perm[i:i + args.batch_size]
            loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            xnorkit.nn.apply_constraints(model)
        print(f"      epoch {epoch + 1}: loss {loss.item():.3f}")
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.inference_mode():
        torch_logits = torch.cat([model(xte[i:i + 1000]) for i in range(0, len(xte), 1000)])
    torch_correct = int((torch_logits.argmax(1) == yte).sum())
    torch_acc = torch_correct / len(yte)

    out_dir = args.out or Path(tempfile.mkdtemp(prefix="xnorkit-demo-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.xk"
    print(f"[2/4] converting to {path}")
    from xnorkit.convert import convert

    # precision="float": the first layer (real pixels x binary weights) stays float32 so the
    # engine reproduces PyTorch; "auto" would make it int8 (4x smaller, not bit-exact).
    conversion = convert(model, xte[:1], precision="float", labels=[str(i) for i in range(10)],
                         input_mean=[127.5], input_std=[127.5])
    conversion.save(path)

    print("[3/4] running the 10,000 test images through the C engine")
    engine = xnorkit.Model(path, max_batch=100)
    engine_logits = np.concatenate([np.asarray(engine.run(xte[i:i + 100])) for i in range(0, len(xte), 100)])
    engine_correct = int((engine_logits.argmax(1) == yte.numpy()).sum())
    engine_acc = engine_correct / len(yte)
    same_pred = float((engine_logits.argmax(1) == torch_logits.argmax(1).numpy()).mean())
    rel = np.abs(engine_logits - torch_logits.numpy()).max() / max(1e-12, np.abs(torch_logits.numpy()).max())

    print("[4/4] timing")
    x1, x100 = xte[:1], xte[:100]
    with torch.inference_mode():
        t_torch1 = median_time(lambda: model(x1), 200)
        t_torch100 = median_time(lambda: model(x100), 30)
    t_eng1 = median_time(lambda: engine.run(x1), 200)
    t_eng100 = median_time(lambda: engine.run(x100), 30)

    float_bytes = sum(p.numel() * 4 for p in model.parameters()) + sum(b.numel() * 4 for b in model.buffers())
    xk_bytes = path.stat().st_size
    from xnorkit.nn import is_binary

    binary_weights = sum(m.weight.numel() for m in model.modules() if hasattr(m, "export_spec") and is_binary(m))
    print()
    print(f"  training time           {train_s:8.1f} s  ({args.epochs} epochs, 2 CPU threads)")
    print(f"  test accuracy  PyTorch  {torch_acc * 100:8.2f} %")
    print(f"  test accuracy  engine   {engine_acc * 100:8.2f} %   (same prediction on {same_pred * 100:.2f} % "
          f"of images; max |logit diff| / max |logit| = {rel:.1e})")
    print(f"  model size     float32  {float_bytes / 1e6:8.2f} MB")
    print(f"  model size     .xk      {xk_bytes / 1e6:8.3f} MB   ({float_bytes / xk_bytes:.1f}x smaller; the first "
          f"layer stays float32 for exactness)")
    print(f"  binary layers  {binary_weights:,} weights: {binary_weights * 4 / 1e6:.2f} MB float32 -> "
          f"{binary_weights / 8 / 1e6:.3f} MB at 1 bit each (32x)")
    print(f"  latency batch 1         PyTorch f32 {t_torch1 * 1e3:7.3f} ms   engine {t_eng1 * 1e3:7.3f} ms"
          f"   ({t_torch1 / t_eng1:.1f}x)")
    print(f"  latency batch 100       PyTorch f32 {t_torch100 * 1e3:7.3f} ms   engine {t_eng100 * 1e3:7.3f} ms"
          f"   ({t_torch100 / t_eng100:.1f}x)")
    if engine_correct != torch_correct:
        print("  NOTE: engine and PyTorch accuracy differ (float rounding at a sign threshold)")


if __name__ == "__main__":
    main()
