"""Bit packing and binary (XNOR-popcount) GEMM on the CPU, backed by the C core.

Conventions (docs/kernels.md): bit 1 means -1 and bit 0 means +1, sign(0) = +1; a row of ``k``
values packs into ``packed_row_bytes(k)`` bytes (a little-endian bit stream padded with zero
bits to a multiple of 64), and the binary dot product of two packed rows is
``k - 2 * popcount(a ^ b)``.

Example:
    >>> import numpy as np, xnorkit.kernels as xk
    >>> a = np.sign(np.random.randn(4, 100)).astype(np.float32)
    >>> w = np.sign(np.random.randn(8, 100)).astype(np.float32)
    >>> c = xk.bgemm(xk.pack(a), xk.pack_weights(xk.pack(w), k=100))
    >>> bool((c == a @ w.T).all())
    True

The kernels for every instruction set compiled in (``available_isas()``) give bit-identical
results; ``use_isa("scalar")`` forces one and ``last_isa()`` tells which one ran. The
``XK_ISA`` environment variable forces one for the whole process.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import numpy as np

try:
    from xnorkit import _core
except ImportError as exc:  # pragma: no cover - exercised only without the build
    raise ImportError(
        "xnorkit.kernels needs the compiled extension xnorkit._core; install the package with "
        "`pip install -e .` (it builds the C core with CMake)"
    ) from exc

__all__ = [
    "ISAS",
    "available_isas",
    "best_isa",
    "current_isa",
    "use_isa",
    "last_isa",
    "set_num_threads",
    "get_num_threads",
    "num_threads",
    "packed_row_bytes",
    "pack",
    "unpack",
    "PackedWeights",
    "pack_weights",
    "bgemm",
]

ISAS = ("scalar", "avx2", "avx512", "neon")
_OUT_KINDS = {"int32": 0, "float": 1, "bits": 2}


def _isa_id(name: str) -> int:
    if name not in ISAS:
        raise ValueError(f"unknown ISA {name!r}; expected one of {', '.join(ISAS)}")
    return ISAS.index(name)


def available_isas() -> list[str]:
    """ISAs whose kernels are compiled into this build and run on this CPU."""
    return [n for i, n in enumerate(ISAS) if _core.isa_available(i)]


def best_isa() -> str:
    """The fastest available ISA (what runs unless XK_ISA or use_isa() says otherwise)."""
    return ISAS[_core.isa_best()]


def current_isa() -> str:
    """The ISA that the next kernel call will use."""
    return ISAS[_core.get_isa()]


def last_isa() -> str | None:
    """The ISA that ran the most recent kernel call in this thread (None before any call)."""
    i = _core.last_isa()
    return ISAS[i] if 0 <= i < len(ISAS) else None


def _select(name: str) -> None:
    if name not in available_isas():
        raise RuntimeError(
            f"ISA {name!r} is not available on this CPU/build; available: {', '.join(available_isas())}"
        )
    _core.set_isa(_isa_id(name))


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[str]:
    """Force the kernels of one ISA inside a ``with`` block (process-wide).

    Raises:
        ValueError: unknown ISA name.
        RuntimeError: the ISA is not available on this CPU or not compiled in.
    """
    _isa_id(name)
    previous = current_isa()
    _select(name)
    try:
        yield name
    finally:
        _core.set_isa(_isa_id(previous))


def set_num_threads(n: int) -> None:
    """Threads used by the kernels (the calling thread included)."""
    if int(n) < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    return _core.get_num_threads()


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[int]:
    """Temporarily use ``n`` kernel threads."""
    previous = get_num_threads()
    set_num_threads(n)
    try:
        yield n
    finally:
        set_num_threads(previous)


def packed_row_bytes(k: int) -> int:
    """Bytes of one packed row of ``k`` bits: ceil(k / 64) * 8."""
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return _core.packed_row_bytes(int(k))


# --------------------------------------------------------------------------- helpers
def _to_numpy(x, name: str):
    """Returns (array, was_torch). Torch CPU tensors are viewed without copying."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        if x.device.type != "cpu":
            raise ValueError(
                f"{name}: tensor is on {x.device}; xnorkit.kernels runs on the CPU "
                "(use xnorkit.kernels.gpu for CUDA tensors)"
            )
        if not x.is_contiguous():
            raise ValueError(f"{name}: tensor is not contiguous; call .contiguous() first")
        return x.detach().numpy(), True
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name}: array is not C-contiguous; use np.ascontiguousarray() first")
    return x, False


def _wrap(arr: np.ndarray, as_torch: bool):
    if as_torch:
        import torch

        return torch.from_numpy(arr)
    return arr


def _empty(shape, dtype=np.uint8) -> np.ndarray:
    """np.empty, which is at least 16-byte aligned; the C core needs 8 for packed rows."""
    return np.empty(shape, dtype=dtype)


def _aligned(arr: np.ndarray, align: int = 8) -> np.ndarray:
    if arr.ctypes.data % align == 0:
        return arr
    return arr.copy()  # a fresh allocation is aligned


# --------------------------------------------------------------------------- packing
def pack(x):
    """Pack the signs of ``x`` along its last axis into bits.

    Args:
        x: float32 or int8 array/tensor of shape (..., k), C-contiguous, k >= 1.

    Returns:
        uint8 array (tensor for tensor input) of shape (..., packed_row_bytes(k)); bit i of a
        row is 1 iff element i < 0 (NaN counts as negative; 0 and -0.0 as positive).
    """
    arr, as_torch = _to_numpy(x, "pack")
    if arr.dtype not in (np.float32, np.int8):
        raise TypeError(f"pack: expected float32 or int8, got {arr.dtype}")
    if arr.ndim == 0 or arr.size == 0:
        raise ValueError(f"pack: expected a non-empty array with a last axis, got shape {arr.shape}")
    k = arr.shape[-1]
    rows = arr.size // k
    out = _empty((*arr.shape[:-1], packed_row_bytes(k)))
    flat = arr.reshape(rows, k)
    (_core.pack_f32 if arr.dtype == np.float32 else _core.pack_i8)(flat, out.reshape(-1))
    return _wrap(out, as_torch)


def unpack(bits, k: int):
    """Inverse of :func:`pack` on signs: (..., packed_row_bytes(k)) uint8 -> (..., k) float32 ±1."""
    arr, as_torch = _to_numpy(bits, "unpack")
    if arr.dtype != np.uint8:
        raise TypeError(f"unpack: expected uint8 bits, got {arr.dtype}")
    rb = packed_row_bytes(k)
    if arr.ndim == 0 or arr.shape[-1] != rb:
        raise ValueError(f"unpack: last axis must be packed_row_bytes({k}) = {rb}, got shape {arr.shape}")
    rows = arr.size // rb
    out = np.empty((*arr.shape[:-1], k), dtype=np.float32)
    _core.unpack_f32(arr.reshape(-1), rows, k, out.reshape(-1))
    return _wrap(out, as_torch)


# --------------------------------------------------------------------------- GEMM
class PackedWeights:
    """Binary weights (n rows of k bits) pre-packed into the micro-kernel's panel layout.

    Panels are built lazily for each ISA that uses them and cached, so one object serves
    every ISA. Build it once per layer and reuse it across calls.
    """

    def __init__(self, bits, k: int):
        arr, _ = _to_numpy(bits, "weights")
        if arr.dtype != np.uint8 or arr.ndim != 2:
            raise ValueError(f"weights: expected 2-D uint8 packed bits (n, row_bytes), got {arr.dtype} {arr.shape}")
        self.k = int(k)
        rb = packed_row_bytes(self.k)
        if arr.shape[1] != rb:
            raise ValueError(
                f"weights: rows hold {arr.shape[1]} bytes but k={self.k} needs packed_row_bytes(k)={rb}"
            )
        if arr.shape[0] == 0:
            raise ValueError("weights: no rows (n = 0)")
        self.n = arr.shape[0]
        self.bits = np.ascontiguousarray(arr)
        self._panels: dict[int, np.ndarray] = {}

    def panel(self, isa: str | None = None) -> np.ndarray:
        i = _isa_id(isa or current_isa())
        if i not in self._panels:
            p = np.empty(_core.panel_size(i, self.n, self.k), dtype=np.uint8)
            _core.pack_panel(i, self.bits.reshape(-1), self.n, self.k, p)
            self._panels[i] = p
        return self._panels[i]

    def __repr__(self) -> str:
        return f"PackedWeights(n={self.n}, k={self.k})"


def pack_weights(bits, k: int) -> PackedWeights:
    """Pre-pack binary weights (output of :func:`pack`, shape (n, packed_row_bytes(k)))."""
    return PackedWeights(bits, k)


def _per_channel(v, n: int, dtype, name: str):
    if v is None:
        return None
    arr = np.ascontiguousarray(np.asarray(v.detach().numpy() if hasattr(v, "detach") else v), dtype=dtype)
    if arr.shape != (n,):
        raise ValueError(f"bgemm: {name} must have shape ({n},) (one per output column), got {arr.shape}")
    return arr


def bgemm(a_bits, b, k: int | None = None, *, out: str = "int32", scale=None, bias=None, threshold=None, flip=None):
    """Binary GEMM: ``dot[i, j] = k - 2 * popcount(A[i] ^ B[j])`` with a fused output stage.

    Args:
        a_bits: packed activations, uint8 (m, packed_row_bytes(k)).
        b: :class:`PackedWeights`, or packed weight bits uint8 (n, packed_row_bytes(k)).
        k: number of valid bits per row (required when ``b`` is raw bits; must match).
        out: "int32" -> dot; "float" -> scale[j] * dot + bias[j] (float32);
            "bits" -> packed (m, packed_row_bytes(n)) with bit = (dot < threshold[j]) ^ flip[j].
        scale, bias: per-column float32 (out="float"; None = 1 / 0).
        threshold: per-column int32 (out="bits", required); flip: per-column 0/1 (optional).

    Returns:
        numpy array (or torch tensor if ``a_bits`` is a tensor).
    """
    arr, as_torch = _to_numpy(a_bits, "a_bits")
    if not isinstance(b, PackedWeights):
        if k is None:
            raise ValueError("bgemm: k is required when b is raw packed bits")
        b = PackedWeights(b, k)
    elif k is not None and int(k) != b.k:
        raise ValueError(f"bgemm: k={k} does not match the packed weights' k={b.k}")
    k, n = b.k, b.n
    rb = packed_row_bytes(k)
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise ValueError(f"bgemm: a_bits must be 2-D uint8 packed bits (m, {rb}), got {arr.dtype} {arr.shape}")
    if arr.shape[1] != rb:
        raise ValueError(f"bgemm: mismatched K: a_bits rows hold {arr.shape[1]} bytes, weights have k={k} ({rb} bytes)")
    m = arr.shape[0]
    if m == 0:
        raise ValueError("bgemm: a_bits has no rows (m = 0)")
    if out not in _OUT_KINDS:
        raise ValueError(f"bgemm: out must be one of {sorted(_OUT_KINDS)}, got {out!r}")
    arr = _aligned(arr)
    scale = _per_channel(scale, n, np.float32, "scale")
    bias = _per_channel(bias, n, np.float32, "bias")
    threshold = _per_channel(threshold, n, np.int32, "threshold")
    flip = _per_channel(flip, n, np.uint8, "flip")
    if out == "bits":
        if threshold is None:
            raise ValueError('bgemm: out="bits" needs threshold (one int32 per output column)')
        c = _empty((m, packed_row_bytes(n)))
        ldc = packed_row_bytes(n)
    else:
        if threshold is not None or flip is not None:
            raise ValueError(f'bgemm: threshold/flip only apply to out="bits", not {out!r}')
        if out == "int32" and (scale is not None or bias is not None):
            raise ValueError('bgemm: scale/bias only apply to out="float"')
        c = _empty((m, n), np.int32 if out == "int32" else np.float32)
        ldc = n
    _core.bgemm(m, n, k, arr.reshape(-1), rb, b.panel(), _OUT_KINDS[out], scale, bias, threshold, flip,
                c.reshape(-1).view(np.uint8), ldc)
    return _wrap(c, as_torch)


def _check_env_isa() -> None:
    forced = os.environ.get("XK_ISA", "").strip()
    if forced and forced != "auto":
        _isa_id(forced)
        if forced not in available_isas():
            raise RuntimeError(
                f"XK_ISA={forced} is not available on this CPU/build; available: {', '.join(available_isas())}"
            )


_check_env_isa()
