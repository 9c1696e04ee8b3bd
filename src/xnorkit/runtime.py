"""Run a converted model (``.xk``) with the C engine.

Example:
    >>> import xnorkit
    >>> model = xnorkit.Model("model.xk", num_threads=2)      # doctest: +SKIP
    >>> logits = model(images)            # numpy or torch, NCHW as the PyTorch model takes it
    >>> model.info()["ops"][0]["precision"]                  # doctest: +SKIP
    'float'

The file is validated completely when it is opened (checksums, bounds of every table and tensor,
every op's shapes and parameters, the execution order and the activation plan); a bad file
raises ``ValueError`` naming the problem before anything runs. The engine reads the file bytes in
place and does all its work in one arena allocated here once; nothing is allocated per run.

Inputs are taken in the layout the PyTorch model uses (``NCHW`` images, ``NCL`` sequences,
``NC`` features) and transposed to the engine's NHWC internally; outputs come back the same way.
Batches larger than ``max_batch`` are run in chunks.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    from xnorkit import _core
except ImportError as exc:  # pragma: no cover - only without the build
    raise ImportError(
        "xnorkit.runtime needs the compiled extension xnorkit._core; install the package with "
        "`pip install -e .` (it builds the C engine with CMake)"
    ) from exc

__all__ = ["Model", "OpTiming"]

_META_UTF8, _META_JSON, _META_F32, _META_I32 = 1, 2, 3, 4


@dataclass
class OpTiming:
    """Median latency of one op over the profiled runs."""

    index: int
    name: str
    kind: str
    precision: str
    seconds: float
    macs: int


def input_plan(shape: tuple[int, ...], spec: dict, layout: str) -> tuple[bool, tuple[int, ...] | None]:
    """How an input of ``shape`` becomes the stored layout of graph input ``spec``: (add a batch
    axis?, axis permutation or None). Raises ValueError naming the expected shape. Shared by the
    C-engine Model and the torch executor (xnorkit.runtime_torch), so both say the same."""
    shape = tuple(int(d) for d in shape)
    stored = spec["shape"]  # stored, batch 1
    torch_layout = spec["torch_layout"] if layout == "torch" else "same"
    add_batch, perm = False, None
    if torch_layout == "nchw":
        want = (stored[3], stored[1], stored[2])
        if len(shape) == 3:
            add_batch, shape = True, (1,) + shape
        if len(shape) != 4 or tuple(shape[1:]) != want:
            raise ValueError(f"input '{spec['name']}': expected (N, {want[0]}, {want[1]}, {want[2]}) (NCHW), got {shape}")
        perm = (0, 2, 3, 1)
    elif torch_layout == "ncl":
        want = (stored[3], stored[2])
        if len(shape) == 2:
            add_batch, shape = True, (1,) + shape
        if len(shape) != 3 or tuple(shape[1:]) != want:
            raise ValueError(f"input '{spec['name']}': expected (N, {want[0]}, {want[1]}) (NCL), got {shape}")
        perm = (0, 2, 1)
    else:
        want = tuple(stored[1:])
        if len(shape) == len(stored) - 1:
            add_batch, shape = True, (1,) + shape
        if tuple(shape[1:]) != want:
            raise ValueError(f"input '{spec['name']}': expected (N, {', '.join(map(str, want))}), got {shape}")
    if shape[0] < 1:
        raise ValueError(f"input '{spec['name']}': empty batch")
    return add_batch, perm


def _read_aligned(path: Path) -> np.ndarray:
    size = path.stat().st_size
    # 64-byte aligned buffer: the engine reads the file's structs and blobs in place
    raw = np.empty(size + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64
    buf = raw[start:start + size]
    with open(path, "rb") as f:
        n = f.readinto(memoryview(buf))
    if n != size:
        raise ValueError(f"{path}: read {n} of {size} bytes")
    return buf


def _wants_torch(device: Any, backend: str) -> bool:
    """Whether Model(..., device, backend) runs on the torch executor (xnorkit.runtime_torch)."""
    if backend not in ("auto", "c", "torch"):
        raise ValueError(f"backend must be 'auto', 'c' or 'torch', got {backend!r}")
    is_cpu = device is None or (isinstance(device, str) and device.strip() in ("cpu", "cpu:0")) or (
        type(device).__name__ == "device" and getattr(device, "type", None) == "cpu" and device.index in (None, 0))
    if backend == "c" and not is_cpu:
        raise ValueError(f"backend='c' (the C engine) runs on the CPU only, got device={device!r}")
    return backend == "torch" or not is_cpu


class Model:
    """A converted model run by the C engine (or, with ``device="cuda"``, by torch on the GPU).

    Args:
        source: path of a ``.xk`` file, or its bytes.
        num_threads: threads used by the kernels while this model runs (``None``: the
            ``XK_NUM_THREADS`` environment variable, else every core).
        max_batch: largest batch one engine call processes (the arena holds activations for
            this many samples); larger inputs are split. ``None``: 8 on the C engine, the whole
            batch on a device.
        device: ``"cpu"`` (default: the C engine), ``"cuda"``, ``"cuda:N"`` or a torch.device:
            any non-CPU device returns a :class:`xnorkit.runtime_torch.TorchModel`, the same
            file executed with torch ops and the binary GPU kernels (docs/gpu.md).
        backend: ``"auto"`` (C engine on the CPU, torch elsewhere), ``"c"`` or ``"torch"``
            (``device="cpu", backend="torch"`` runs the torch executor on the CPU).
        kernels: torch backend only: binary GEMM ``"auto"``, ``"triton"`` or ``"torch"``.
        fuse: C engine: run a binary convolution and the residual add that reads it as one op
            (same results; ``False`` runs every op as the file lists it, e.g. to profile the
            adds on their own).
    """

    def __new__(cls, source: Any = None, num_threads: int | None = None, max_batch: int | None = None, *,
                device: Any = "cpu", backend: str = "auto", kernels: str = "auto", fuse: bool = True):
        if cls is Model and _wants_torch(device, backend):
            from xnorkit.runtime_torch import TorchModel  # noqa: PLC0415  (imports torch)

            return super().__new__(TorchModel)
        return super().__new__(cls)

    def __init__(self, source: str | os.PathLike | bytes | bytearray | memoryview, num_threads: int | None = None,
                 max_batch: int | None = None, *, device: Any = "cpu", backend: str = "auto", kernels: str = "auto",
                 fuse: bool = True):
        if kernels != "auto":
            raise ValueError(f"kernels={kernels!r} applies to the torch backend only (device='cuda' or backend='torch')")
        self.device, self.backend = "cpu", "c"
        if max_batch is None:
            max_batch = 8
        if isinstance(source, (bytes, bytearray, memoryview)):
            src = np.frombuffer(bytes(source), dtype=np.uint8)
            raw = np.empty(src.size + 64, dtype=np.uint8)
            start = (-raw.ctypes.data) % 64
            data = raw[start:start + src.size]
            data[:] = src
            self.path = None
        else:
            self.path = Path(source)
            if not self.path.is_file():
                raise FileNotFoundError(f"model file not found: {self.path}")
            data = _read_aligned(self.path)
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.num_threads = num_threads
        self._data = data
        threads = num_threads or _core.get_num_threads()
        try:
            self._engine = _core.Engine(data, max_batch, threads, fuse)
        except ValueError as exc:
            where = f"{self.path}: " if self.path else ""
            raise ValueError(f"{where}{exc}") from None
        self._info = self._engine.info()
        self.max_batch = max_batch

    # ------------------------------------------------------------------ properties
    @property
    def inputs(self) -> list[dict]:
        return self._info["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self._info["outputs"]

    @property
    def ops(self) -> list[dict]:
        return self._info["ops"]

    def meta(self, key: str) -> Any:
        """Metadata value by key (str for text, parsed JSON, or a numpy array); None if absent."""
        m = self._engine.meta(key)
        if m is None:
            return None
        t, b = m["type"], m["bytes"]
        if t == _META_UTF8:
            return b.decode("utf-8")
        if t == _META_JSON:
            import json

            return json.loads(b.decode("utf-8"))
        return np.frombuffer(b, dtype=np.float32 if t == _META_F32 else np.int32).copy()

    @property
    def labels(self) -> list[str] | None:
        text = self.meta("labels")
        return text.splitlines() if text else None

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Apply the input normalisation stored in the file ((raw - mean) / std per channel,
        channel axis 1 as in PyTorch); identity if the file stores none."""
        mean, std = self.meta("input_mean"), self.meta("input_std")
        x = np.asarray(raw, dtype=np.float32)
        if mean is None and std is None:
            return x
        shape = [1, -1] + [1] * (x.ndim - 2)
        if mean is not None:
            x = x - mean.reshape(shape)
        if std is not None:
            x = x / std.reshape(shape)
        return x.astype(np.float32)

    def info(self) -> dict:
        """Inputs, outputs, ops (name, kind, precision, output shape, MACs, weight bytes),
        format version and memory: the arena holds weights re-packed for the kernels,
        activations for max_batch samples and scratch."""
        d = dict(self._info)
        d["file_bytes"] = int(self._data.size)
        d["num_threads"] = self.num_threads or _core.get_num_threads()
        return d

    # ------------------------------------------------------------------ running
    def _to_stored(self, x: np.ndarray, spec: dict, layout: str) -> tuple[np.ndarray, bool]:
        """The input as the engine takes it, and whether it is an NCHW image batch that the
        engine transposes itself (in C, straight into its arena: no temporary NHWC array)."""
        x = np.asarray(x, dtype=np.float32)
        add_batch, perm = input_plan(x.shape, spec, layout)
        if add_batch:
            x = x[None]
        if perm == (0, 2, 3, 1):  # images: one pass in C (numpy's strided copy is ~10x slower)
            return np.ascontiguousarray(x), True
        if perm is not None:
            x = x.transpose(*perm)
        return np.ascontiguousarray(x, dtype=np.float32), False

    @staticmethod
    def _from_stored(y: np.ndarray, spec: dict, layout: str) -> np.ndarray:
        if layout != "torch":
            return y
        if spec["torch_layout"] == "nchw" and y.ndim == 4:
            return np.ascontiguousarray(y.transpose(0, 3, 1, 2))
        if spec["torch_layout"] == "ncl" and y.ndim == 4:
            return np.ascontiguousarray(y[:, 0].transpose(0, 2, 1))
        return y

    def run(self, *inputs: Any, layout: str = "torch") -> Any:
        """Run the model on a batch.

        Args:
            *inputs: one array per graph input (numpy or torch; a torch input gives torch
                outputs), with the batch as the first axis.
            layout: ``"torch"`` (default): inputs/outputs in the PyTorch model's layout (NCHW
                images); ``"stored"``: the engine's NHWC layout, no transposes.

        Returns:
            The output (or a tuple of outputs for multi-output models), float32.
        """
        if layout not in ("torch", "stored"):
            raise ValueError(f"layout must be 'torch' or 'stored', got {layout!r}")
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the model takes {len(self.inputs)} input(s), got {len(inputs)}")
        is_torch = False
        arrays = []
        for x in inputs:
            if type(x).__module__.startswith("torch"):
                is_torch = True
                x = x.detach().cpu().numpy()
            arrays.append(x)
        stored, nchw = zip(*[self._to_stored(x, spec, layout) for x, spec in zip(arrays, self.inputs)])
        nchw = list(nchw)
        n = stored[0].shape[0]
        if any(s.shape[0] != n for s in stored):
            raise ValueError("all inputs must have the same batch size")
        chunks: list[list[np.ndarray]] = []
        if self.num_threads:
            _core.set_num_threads(self.num_threads)
        for start in range(0, n, self.max_batch):
            part = [np.ascontiguousarray(s[start:start + self.max_batch]) for s in stored]
            chunks.append(self._engine.run(part, part[0].shape[0], False, nchw))
        outs = [np.concatenate([c[i] for c in chunks]) if len(chunks) > 1 else chunks[0][i]
                for i in range(len(self.outputs))]
        outs = [self._from_stored(y, spec, layout) for y, spec in zip(outs, self.outputs)]
        if is_torch:
            import torch

            outs = [torch.from_numpy(y) for y in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    __call__ = run

    def profile(self, *inputs: Any, repeats: int = 20, warmup: int = 3, layout: str = "torch") -> tuple[list[OpTiming], list[float]]:
        """Per-op latency (median over `repeats` runs) and the whole-run wall times.

        The engine calls a timing hook before and after each op; the whole-run times include
        the input/output copies. The inputs must fit in one engine call (batch <= max_batch)."""
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the model takes {len(self.inputs)} input(s), got {len(inputs)}")
        stored, nchw = zip(*[self._to_stored(np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x), spec,
                                             layout) for x, spec in zip(inputs, self.inputs)])
        stored, nchw = list(stored), list(nchw)
        n = stored[0].shape[0]
        if n > self.max_batch:
            raise ValueError(f"profile: batch {n} > max_batch {self.max_batch}")
        if self.num_threads:
            _core.set_num_threads(self.num_threads)
        for _ in range(warmup):
            self._engine.run(stored, n, False, nchw)
        per_op, totals = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self._engine.run(stored, n, True, nchw)
            totals.append(time.perf_counter() - t0)
            per_op.append(self._engine.last_times())
        med = np.median(np.asarray(per_op), axis=0)
        timings = [OpTiming(i, op["name"], op["kind"], op["precision"], float(med[i]), int(op["macs"]))
                   for i, op in enumerate(self.ops)]
        return timings, totals

    def __repr__(self) -> str:
        src = str(self.path) if self.path else "<bytes>"
        return f"xnorkit.Model({src!r}, ops={len(self.ops)}, inputs={[i['shape'] for i in self.inputs]})"


def load(path: str | os.PathLike, **kwargs: Any) -> Model:
    """Alias of ``Model(path, **kwargs)``."""
    return Model(path, **kwargs)


