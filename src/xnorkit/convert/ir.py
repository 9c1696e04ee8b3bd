"""The converter's small graph IR.

A :class:`Graph` is a list of :class:`Node` in execution order over :class:`Value` edges.
Values carry their per-sample shape in the deployed layout (NHWC for images, ``[1, 1, L, C]``
for conv1d signals, ``[1, F]`` for features; the batch dimension is always stored as 1) and
their element type: ``"f32"`` or ``"bits"`` (packed binary, see docs/format.md).

Node kinds (``Node.op``) are the format's ops (docs/format.md §4) plus one IR-only kind,
``"channelwise"``: a chain of per-channel float steps (BatchNorm, scale, bias, activation)
that the passes fuse into the neighbouring ops' output stages or sign thresholds.

Per-channel float steps (:class:`Step`) are kept symbolic until lowering, so the threshold
passes can evaluate them exactly as PyTorch does:

* ``Step("bn", gamma=, beta=, mean=, var=, eps=)`` eval-mode BatchNorm;
* ``Step("scale", value=)`` multiply (a per-channel vector or a 1-element vector);
* ``Step("bias", value=)`` add;
* ``Step("act", kind=, lo=, hi=, alpha=)`` with kind one of :data:`ACTS`.

:meth:`Graph.dump` gives a stable textual form used by the golden before/after pass tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

DTYPES = ("f32", "bits")
TORCH_LAYOUTS = ("same", "nchw", "ncl")
ACTS = ("none", "relu", "relu6", "hardtanh", "prelu", "leaky")

#: Ops that have an output stage (docs/format.md §4.1).
GEMM_OPS = ("bconv2d", "bdense", "conv2d", "dense")
#: Every op kind the IR may contain.
OPS = GEMM_OPS + (
    "sign",
    "unpack",
    "maxpool2d",
    "avgpool2d",
    "global_avgpool",
    "add",
    "concat",
    "flatten",
    "reshape",
    "activation",
    "affine",
    "softmax",
    "channelwise",
)


class ConversionError(ValueError):
    """A model, layer or file the converter cannot handle; the message names it."""


@dataclass
class Step:
    """One per-channel float operation of an output stage or a channelwise node."""

    kind: str
    value: np.ndarray | None = None
    gamma: np.ndarray | None = None
    beta: np.ndarray | None = None
    mean: np.ndarray | None = None
    var: np.ndarray | None = None
    eps: float = 0.0
    act: str = "none"
    lo: float = -1.0
    hi: float = 1.0
    alpha: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("bn", "scale", "bias", "act"):
            raise ValueError(f"Step kind {self.kind!r}; expected bn, scale, bias or act")
        if self.kind == "act" and self.act not in ACTS:
            raise ValueError(f"activation {self.act!r}; expected one of {', '.join(ACTS)}")
        for name in ("value", "gamma", "beta", "mean", "var", "alpha"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, np.ascontiguousarray(np.asarray(v, dtype=np.float32).reshape(-1)))

    @staticmethod
    def bn(gamma, beta, mean, var, eps: float) -> "Step":
        """Eval-mode BatchNorm (gamma/beta None for affine=False)."""
        n = len(np.asarray(mean).reshape(-1))
        g = np.ones(n, np.float32) if gamma is None else gamma
        b = np.zeros(n, np.float32) if beta is None else beta
        return Step("bn", gamma=g, beta=b, mean=mean, var=var, eps=float(eps))

    @staticmethod
    def activation(kind: str, lo: float = -1.0, hi: float = 1.0, alpha=None) -> "Step":
        """An activation step (``kind`` in :data:`ACTS`)."""
        return Step("act", act=kind, lo=float(lo), hi=float(hi), alpha=alpha)

    def channels(self) -> int | None:
        """Channel count this step is tied to (None if it broadcasts)."""
        for v in (self.value, self.mean, self.alpha):
            if v is not None and v.size > 1:
                return int(v.size)
        return None

    def bn_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(alpha, beta) float32 such that PyTorch's CPU eval BatchNorm is fma(x, alpha, beta).

        ATen computes ``alpha = gamma * (1 / sqrt(var + eps))`` and ``beta = bias - mean *
        alpha`` (the latter fused), all in float32; test_passes checks this against torch.
        """
        assert self.kind == "bn"
        f32 = np.float32
        inv = f32(1) / np.sqrt(self.var + f32(self.eps))
        alpha = (self.gamma * inv).astype(f32)
        beta = (self.beta.astype(np.float64) - self.mean.astype(np.float64) * alpha.astype(np.float64)).astype(f32)
        return alpha, beta

    def describe(self) -> str:
        if self.kind == "bn":
            return f"bn(eps={self.eps:g}, gamma={_arr(self.gamma)}, beta={_arr(self.beta)}, mean={_arr(self.mean)}, var={_arr(self.var)})"
        if self.kind in ("scale", "bias"):
            return f"{self.kind}({_arr(self.value)})"
        extra = ""
        if self.act == "hardtanh":
            extra = f", lo={self.lo:g}, hi={self.hi:g}"
        elif self.act == "leaky":
            extra = f", slope={self.lo:g}"
        elif self.act == "prelu":
            extra = f", alpha={_arr(self.alpha)}"
        return f"act({self.act}{extra})"


@dataclass(eq=False)
class Value:
    """An activation tensor (an edge of the graph)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "f32"
    torch_layout: str = "same"
    #: Calibration range (min, max) of the float values, filled by the calibration step.
    range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        if self.dtype not in DTYPES:
            raise ValueError(f"value {self.name}: dtype {self.dtype!r}; expected f32 or bits")
        if not 1 <= len(self.shape) <= 4 or self.shape[0] != 1 or min(self.shape) < 1:
            raise ValueError(f"value {self.name}: shape {self.shape}; expected 1-4 positive dims with batch 1 first")

    @property
    def channels(self) -> int:
        return self.shape[-1]

    def spec(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


@dataclass(eq=False)
class Node:
    """One op. ``params`` hold constant arrays, ``attrs`` scalars and small settings."""

    op: str
    name: str
    inputs: list[Value]
    output: Value
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    #: Output stage steps of GEMM ops and of channelwise nodes (applied in order).
    steps: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"node {self.name}: unknown op {self.op!r}")


@dataclass
class LayerReport:
    """One row of the conversion table: what a PyTorch layer became and why."""

    name: str
    layer_type: str
    became: str  # "binary" | "int8" | "float" | "folded" | "-"
    why: str
    weight_bytes: int = 0
    notes: list[str] = field(default_factory=list)


class Graph:
    """Nodes in execution order, graph inputs/outputs, metadata and the conversion report."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.metadata: dict[str, Any] = {}
        self.report: dict[str, LayerReport] = {}
        #: Arena plan, filled by the plan_memory pass: value -> (offset, size) for batch 1.
        self.arena: dict[Value, tuple[int, int]] = {}
        self.arena_size: int = 0
        self._names: set[str] = set()

    # -------------------------------------------------------------- building
    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def value(self, base: str, shape: Iterable[int], dtype: str = "f32", torch_layout: str = "same") -> Value:
        return Value(self.unique(base), tuple(shape), dtype, torch_layout)

    def add_input(self, base: str, shape, torch_layout: str = "same") -> Value:
        v = self.value(base, shape, "f32", torch_layout)
        self.inputs.append(v)
        return v

    def add(self, op: str, name: str, inputs: list[Value], out_shape, out_dtype: str = "f32", **attrs) -> Node:
        out = self.value(name or op, out_shape, out_dtype)
        node = Node(op, name, list(inputs), out, attrs=dict(attrs))
        self.nodes.append(node)
        return node

    # -------------------------------------------------------------- queries
    def producer(self, v: Value) -> Node | None:
        for n in self.nodes:
            if n.output is v:
                return n
        return None

    def consumers(self, v: Value) -> list[Node]:
        return [n for n in self.nodes if any(i is v for i in n.inputs)]

    def uses(self, v: Value) -> int:
        """Number of places reading v (node inputs and graph outputs)."""
        return sum(1 for n in self.nodes for i in n.inputs if i is v) + sum(1 for o in self.outputs if o is v)

    def replace_uses(self, old: Value, new: Value) -> None:
        for n in self.nodes:
            n.inputs = [new if i is old else i for i in n.inputs]
        self.outputs = [new if o is old else o for o in self.outputs]

    def remove(self, node: Node) -> None:
        self.nodes = [n for n in self.nodes if n is not node]

    def values(self) -> list[Value]:
        seen: dict[int, Value] = {}
        for v in self.inputs:
            seen.setdefault(id(v), v)
        for n in self.nodes:
            for v in n.inputs:
                seen.setdefault(id(v), v)
            seen.setdefault(id(n.output), n.output)
        return list(seen.values())

    def note(self, layer: str, text: str) -> None:
        if layer in self.report:
            self.report[layer].notes.append(text)

    def validate(self) -> None:
        """Check that nodes are in execution order and every value is written once."""
        written = {id(v) for v in self.inputs}
        for n in self.nodes:
            for v in n.inputs:
                if id(v) not in written:
                    raise ConversionError(f"IR: node {n.name} ({n.op}) reads {v.name} before it is written")
            if id(n.output) in written:
                raise ConversionError(f"IR: value {n.output.name} written twice (by {n.name})")
            written.add(id(n.output))
        for o in self.outputs:
            if id(o) not in written:
                raise ConversionError(f"IR: graph output {o.name} is never written")

    # -------------------------------------------------------------- text
    def dump(self) -> str:
        """Stable text of the graph (values, attributes, small arrays in full, others hashed)."""
        lines = []
        for v in self.inputs:
            lines.append(f"input %{v.name}: {v.spec()} torch={v.torch_layout}")
        for n in self.nodes:
            ins = ", ".join("%" + v.name for v in n.inputs)
            attrs = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(n.attrs.items()) if not k.startswith("_"))
            lines.append(f"%{n.output.name}: {n.output.spec()} = {n.op}({ins}){' ' + attrs if attrs else ''}  # {n.name}")
            for k in sorted(n.params):
                lines.append(f"    {k}: {_arr(n.params[k])}")
            for s in n.steps:
                lines.append(f"    step {s.describe()}")
        for v in self.outputs:
            lines.append(f"output %{v.name}")
        if self.arena:
            for v, (off, size) in sorted(self.arena.items(), key=lambda kv: (kv[1][0], kv[0].name)):
                lines.append(f"arena %{v.name} @{off} +{size}")
            lines.append(f"arena_size {self.arena_size}")
        return "\n".join(lines) + "\n"

    def copy(self) -> "Graph":
        """Deep copy (values and nodes are new objects; arrays are copied)."""
        g = Graph()
        vmap: dict[int, Value] = {}

        def cv(v: Value) -> Value:
            if id(v) not in vmap:
                vmap[id(v)] = dataclasses.replace(v)
            return vmap[id(v)]

        g.inputs = [cv(v) for v in self.inputs]
        for n in self.nodes:
            g.nodes.append(
                Node(
                    n.op,
                    n.name,
                    [cv(v) for v in n.inputs],
                    cv(n.output),
                    attrs=dict(n.attrs),
                    params={k: np.array(a, copy=True) for k, a in n.params.items()},
                    steps=[dataclasses.replace(s) for s in n.steps],
                )
            )
        g.outputs = [cv(v) for v in self.outputs]
        g.metadata = dict(self.metadata)
        g.report = {k: dataclasses.replace(r, notes=list(r.notes)) for k, r in self.report.items()}
        g.arena = {cv(v): p for v, p in self.arena.items()}
        g.arena_size = self.arena_size
        g._names = set(self._names)
        return g


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "(" + ",".join(_fmt(x) for x in v) + ")"
    return str(v)


def _arr(a: np.ndarray | None) -> str:
    if a is None:
        return "none"
    a = np.asarray(a)
    head = f"{a.dtype}{list(a.shape)}"
    if a.size <= 8:
        if a.dtype.kind == "f":
            body = ",".join(f"{float(x):.9g}" for x in a.reshape(-1))
        else:
            body = ",".join(str(int(x)) for x in a.reshape(-1))
        return f"{head}[{body}]"
    digest = hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:10]
    return f"{head}#{digest}"
