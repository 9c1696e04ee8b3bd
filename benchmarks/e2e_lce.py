"""Larq Compute Engine side of benchmarks/e2e.py; runs inside .venv-lce:

    python3 -m venv .venv-lce
    .venv-lce/bin/pip install tensorflow-cpu==2.16.2 tf-keras==2.16.0 larq==0.14.0 larq-zoo==2.4.0 \
        larq-compute-engine==0.16.0 protobuf==3.20.3 numpy==1.26.4
    TF_USE_LEGACY_KERAS=1 .venv-lce/bin/python benchmarks/e2e_lce.py --models QuickNet --threads 1,2

Builds each larq-zoo model (random weights), converts it with ``lce.convert_keras_model`` and
times ``Interpreter(use_indirect_bgemm=True, use_xnnpack=True)`` (LCE's fastest x86 setting) at
batch 1. Prints one JSON line: {"results": {model: {threads: stats}}, "versions": ...}.

With ``--serve`` it reads requests ``<model> <threads> <repeats>`` from stdin, one per line, and
answers each with {"wall": [...], "cpu": [...]}: run times in seconds, wall clock and CPU time
of the calling thread (models are built once); e2e.py uses this
to interleave LCE with the other runtimes, so that load from other processes on the machine
affects all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def binarynet_cifar():
    """BinaryNet CIFAR-10 ConvNet as in larq's documentation example (2x128C3-MP2-2x256C3-MP2-
    2x512C3-MP2-2x1024FC-10), the architecture of xnorkit's ``binarynet``."""
    import larq as lq
    import tensorflow as tf

    kw = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
    layers = tf.keras.layers
    model = tf.keras.models.Sequential([
        lq.layers.QuantConv2D(128, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False,
                              input_shape=(32, 32, 3), padding="same"),
        layers.BatchNormalization(momentum=0.999, scale=False),
        lq.layers.QuantConv2D(128, 3, padding="same", **kw), layers.MaxPool2D(2, 2),
        layers.BatchNormalization(momentum=0.999, scale=False),
        lq.layers.QuantConv2D(256, 3, padding="same", **kw), layers.BatchNormalization(momentum=0.999, scale=False),
        lq.layers.QuantConv2D(256, 3, padding="same", **kw), layers.MaxPool2D(2, 2),
        layers.BatchNormalization(momentum=0.999, scale=False),
        lq.layers.QuantConv2D(512, 3, padding="same", **kw), layers.BatchNormalization(momentum=0.999, scale=False),
        lq.layers.QuantConv2D(512, 3, padding="same", **kw), layers.MaxPool2D(2, 2),
        layers.BatchNormalization(momentum=0.999, scale=False),
        layers.Flatten(),
        lq.layers.QuantDense(1024, **kw), layers.BatchNormalization(momentum=0.999, scale=False),
        lq.layers.QuantDense(1024, **kw), layers.BatchNormalization(momentum=0.999, scale=False),
        lq.layers.QuantDense(10, **kw), layers.BatchNormalization(momentum=0.999, scale=False),
        layers.Activation("softmax"),
    ])
    return model, (32, 32, 3)


def build(name: str):
    import larq_zoo as lqz

    if name == "BinaryNetCIFAR":
        return binarynet_cifar()
    factory = {
        "QuickNetSmall": lqz.sota.QuickNetSmall, "QuickNet": lqz.sota.QuickNet,
        "BiRealNet": lqz.literature.BiRealNet, "BinaryAlexNet": lqz.literature.BinaryAlexNet,
    }[name]
    return factory(weights=None, input_shape=(224, 224, 3)), (224, 224, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="QuickNetSmall,QuickNet,BiRealNet,BinaryAlexNet,BinaryNetCIFAR")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--serve", action="store_true")
    args = ap.parse_args()
    import larq_compute_engine as lce
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    if args.serve:
        import sys

        cache = {}
        for line in sys.stdin:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "quit":
                break
            name, t, reps = parts[0], int(parts[1]), int(parts[2])
            if (name, t) not in cache:
                model, shape = build(name)
                flat = lce.convert_keras_model(model)
                it = Interpreter(flat, num_threads=t, use_reference_bconv=False, use_indirect_bgemm=True, use_xnnpack=True)
                x = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
                for _ in range(args.warmup):
                    it.predict(x)
                cache[(name, t)] = (it, x)
            it, x = cache[(name, t)]
            ts, cs = [], []
            for _ in range(reps):
                c0 = time.thread_time()
                t0 = time.perf_counter()
                it.predict(x)
                ts.append(time.perf_counter() - t0)
                cs.append(time.thread_time() - c0)
            print(json.dumps({"wall": ts, "cpu": cs}), flush=True)
        return

    results = {}
    for name in [m for m in args.models.split(",") if m]:
        model, shape = build(name)
        flat = lce.convert_keras_model(model)
        x = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
        results[name] = {}
        for t in [int(v) for v in args.threads.split(",")]:
            it = Interpreter(flat, num_threads=t, use_reference_bconv=False, use_indirect_bgemm=True, use_xnnpack=True)
            for _ in range(args.warmup):
                it.predict(x)
            ts = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                it.predict(x)
                ts.append(time.perf_counter() - t0)
            results[name][str(t)] = {"median_ms": statistics.median(ts) * 1e3, "min_ms": min(ts) * 1e3,
                                     "max_ms": max(ts) * 1e3, "n": len(ts)}
    import larq
    import tensorflow as tf

    print(json.dumps({"results": results, "versions": {"lce": lce.__version__, "tensorflow": tf.__version__,
                                                       "larq": larq.__version__}}))


if __name__ == "__main__":
    main()
