"""Binary (XNOR-popcount) kernels for CUDA tensors: fused sign+pack and a binary GEMM.

Same conventions as the CPU kernels (``xnorkit.kernels``, docs/kernels.md): bit 1 means -1,
bit 0 means +1, sign(0) = +1, NaN packs as -1; a row of ``k`` values is a little-endian bit
stream padded with zero bits to a multiple of 64 bits. Here a packed row is held as
``packed_words(k) = 2 * ceil(k / 64)`` int32 words (element ``i`` is bit ``i % 32`` of word
``i // 32``), so ``pack(x).view(torch.uint8)`` equals the CPU ``pack(x)`` byte for byte, and
``pack(x, dtype=torch.int64)`` is the same memory as 64-bit words.

The binary dot product of two packed rows is ``k - 2 * popcount(a ^ b)`` over the first ``k``
bits (bits past ``k`` are masked off inside the kernels, so the result is exact whatever the
padding holds). Any M, N and K >= 1 work.

Backends (``backends()``; ``bgemm(..., backend=...)``, ``use_backend()`` or the environment
variable ``XNORKIT_GPU_BACKEND`` force one; the default ``"auto"`` times the available ones once
per device and shape class and keeps the fastest; all are bit-identical):

- ``"triton"``: XOR + popcount in Triton, tiles autotuned; runs on any GPU Triton supports and,
  with ``TRITON_INTERPRET=1`` set before import, on CPU tensors (that is how CI tests it).
- ``"mma_b1"``: tensor-core 1-bit ``mma.sync ... .b1.b1.s32.and.popc`` (sm_80+), compiled on first
  use with ``torch.utils.cpp_extension`` (needs the CUDA toolkit). Hopper dropped the ``.xor``
  form, so it computes popcount(a ^ b) = popcount(a) + popcount(b) - 2 popcount(a & b).
- ``"int8_tc"``: unpacks to ±1 int8 (zero padding) and multiplies with ``torch._int_mm`` on the
  int8 tensor cores: exact, and on GPUs whose int8 peak exceeds their popcount rate the fastest
  choice for large compute-bound products (sm_80+, M > 16).

Example:
    >>> import torch, xnorkit.kernels.gpu as xg
    >>> a = torch.randn(5, 100, device="cuda"); w = torch.randn(7, 100, device="cuda")
    >>> c = xg.bgemm(xg.pack(a), xg.pack(w), 100)
    >>> bool((c == (xg.sign(a) @ xg.sign(w).T).int()).all())
    True
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from typing import Callable, Iterator

import torch

from .reference import bgemm_ref, pack_ref, packed_words, unpack_ref

__all__ = [
    "available",
    "unavailable_reason",
    "backends",
    "backend_status",
    "use_backend",
    "last_backend",
    "packed_words",
    "sign",
    "pack",
    "unpack",
    "bgemm",
    "xnor_linear",
    "xnor_conv2d",
    "use_binary_kernels",
    "binary_kernels_enabled",
    "routes",
    "pack_ref",
    "unpack_ref",
    "bgemm_ref",
]

BACKENDS = ("triton", "mma_b1", "int8_tc")
_ENV_BACKEND = "XNORKIT_GPU_BACKEND"
_OUT_KINDS = {"int32": 0, "float": 1, "bits": 2}

# --------------------------------------------------------------------------- availability
_triton_mod = None
_triton_error: str | None = None


def _load_triton():
    """Import the Triton kernels once; remember why not if that fails."""
    global _triton_mod, _triton_error
    if _triton_mod is None and _triton_error is None:
        try:
            from . import _triton as mod  # noqa: PLC0415

            _triton_mod = mod
        except Exception as exc:  # ImportError, or a Triton too old for the kernels
            _triton_error = f"Triton is not usable ({type(exc).__name__}: {exc}); pip install triton"
    return _triton_mod


def interpreting() -> bool:
    """True when the Triton kernels run in the interpreter (TRITON_INTERPRET=1 at import)."""
    mod = _load_triton()
    return bool(mod is not None and mod.INTERPRET)


def unavailable_reason() -> str | None:
    """None if the kernels can run here, else a sentence saying why not."""
    if _load_triton() is None:
        return _triton_error
    if interpreting():
        return None
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch (set TRITON_INTERPRET=1 to run the kernels on the CPU)"
    return None


def available() -> bool:
    """Whether :func:`pack` and :func:`bgemm` can run (Triton + a CUDA GPU, or interpreter mode)."""
    return unavailable_reason() is None


def _require() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"xnorkit.kernels.gpu: {reason}")


def _check_device(t: torch.Tensor, name: str) -> None:
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and interpreting():
        return
    raise ValueError(
        f"{name}: tensor is on {t.device}; xnorkit.kernels.gpu needs CUDA tensors "
        "(CPU tensors only in Triton interpreter mode; use xnorkit.kernels for the CPU)"
    )


# --------------------------------------------------------------------------- packing
_PACK_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8)


def sign(x: torch.Tensor) -> torch.Tensor:
    """The deployed sign: +1 where x >= 0, -1 elsewhere (NaN -> -1), in x's dtype."""
    return torch.where(x >= 0, 1, -1).to(x.dtype)


def pack(x: torch.Tensor, dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """Fused sign + pack of ``x`` along its last axis.

    Args:
        x: float32/float16/bfloat16/float64/int8 tensor (..., k), k >= 1, any strides.
        dtype: torch.int32 (default) or torch.int64 (a view of the same words).

    Returns:
        (..., packed_words(k)) int32 words (or half as many int64); bit ``i`` of a row is 1 iff
        ``not x[..., i] >= 0``; padding bits are 0.
    """
    _require()
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"pack: expected a torch.Tensor, got {type(x).__name__}")
    _check_device(x, "pack")
    if x.dtype not in _PACK_DTYPES:
        raise TypeError(f"pack: expected one of {[str(d) for d in _PACK_DTYPES]}, got {x.dtype}")
    if x.dim() == 0 or x.numel() == 0:
        raise ValueError(f"pack: expected a non-empty tensor with a last axis, got shape {tuple(x.shape)}")
    if dtype not in (torch.int32, torch.int64):
        raise ValueError(f"pack: dtype must be torch.int32 or torch.int64, got {dtype}")
    k = x.shape[-1]
    mod = _load_triton()
    if mod.INTERPRET and x.dtype == torch.bfloat16:
        x = x.float()  # numpy (the interpreter) has no bfloat16; exact, same signs
    r = x.numel() // k
    rows = _row_layout(x)
    if rows is None:  # leading dims not expressible as two strided levels: copy
        x = x.contiguous()
        rows = _row_layout(x)
    r_inner, stride_o, stride_r = rows
    w = packed_words(k)
    out = torch.empty((r, w), dtype=torch.int32, device=x.device)
    block_r, block_w = (8, 4) if mod.INTERPRET else (16, 8)
    grid = (triton_cdiv(r, block_r), triton_cdiv(w, block_w))
    mod.pack_kernel[grid](
        x, out, r, k, w, r_inner, stride_o, stride_r, x.stride(-1), out.stride(0),
        BLOCK_R=block_r, BLOCK_W=block_w,
    )
    out = out.reshape(*x.shape[:-1], w)
    return out.view(torch.int64) if dtype == torch.int64 else out


def _row_layout(x: torch.Tensor):
    """(rows_inner, stride_outer, stride_inner) so that row r of x.reshape(-1, k) starts at
    (r // rows_inner) * stride_outer + (r % rows_inner) * stride_inner, or None."""
    dims = [(n, st) for n, st in zip(x.shape[:-1], x.stride()[:-1]) if n != 1]
    merged: list[list[int]] = []
    for n, st in reversed(dims):  # merge from the innermost leading dim outwards
        if merged and merged[-1][1] * merged[-1][0] == st:
            merged[-1][0] *= n
        else:
            merged.append([n, st])
    if not merged:
        return (1, 0, 0)
    if len(merged) == 1:
        return (merged[0][0], 0, merged[0][1])
    if len(merged) == 2:
        (n_in, st_in), (_, st_out) = merged
        return (n_in, st_out, st_in)
    return None


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _as_words(bits: torch.Tensor, name: str) -> torch.Tensor:
    """int32 view of packed rows given as int32, int64 or uint8 (CPU-layout bytes)."""
    if not isinstance(bits, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(bits).__name__}")
    if bits.dim() != 2:
        raise ValueError(f"{name}: expected 2-D packed rows (rows, words), got shape {tuple(bits.shape)}")
    if bits.dtype not in (torch.int32, torch.int64, torch.uint8):
        raise TypeError(f"{name}: packed bits must be int32, int64 or uint8, got {bits.dtype}")
    _check_device(bits, name)
    if bits.stride(-1) != 1:
        bits = bits.contiguous()
    if bits.dtype == torch.uint8:
        if bits.shape[1] % 4:
            raise ValueError(f"{name}: uint8 rows must hold a multiple of 4 bytes, got {bits.shape[1]}")
        if bits.stride(0) % 4 or bits.storage_offset() % 4:
            bits = bits.contiguous()
        bits = bits.view(torch.int32)
    elif bits.dtype == torch.int64:
        bits = bits.view(torch.int32) if bits.is_contiguous() else bits.contiguous().view(torch.int32)
    if bits.shape[0] == 0 or bits.shape[1] == 0:
        raise ValueError(f"{name}: empty packed matrix, shape {tuple(bits.shape)}")
    return bits


def _unpack_into(words: torch.Tensor, k: int, dtype: torch.dtype, width: int) -> torch.Tensor:
    r = words.shape[0]
    out = torch.empty((r, width), dtype=dtype, device=words.device)
    mod = _load_triton()
    block_r, block_c = (8, 64) if mod.INTERPRET else (16, 256)
    grid = (triton_cdiv(r, block_r), triton_cdiv(width, block_c))
    mod.unpack_kernel[grid](
        words, out, r, k, width, words.stride(0), out.stride(0), BLOCK_R=block_r, BLOCK_C=block_c
    )
    return out


def unpack(bits: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of :func:`pack` on signs: (rows, words) -> (rows, k) ±1 of ``dtype``."""
    _require()
    words = _as_words(bits, "unpack")
    k = _check_k(k, words.shape[1], "unpack")
    return _unpack_into(words, k, dtype, k)


def _check_k(k, words: int, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        try:
            k = int(k)
        except Exception:  # noqa: BLE001
            raise TypeError(f"{name}: k must be an int, got {type(k).__name__}") from None
    if k < 1:
        raise ValueError(f"{name}: k must be >= 1, got {k}")
    if k > 32 * words:
        raise ValueError(f"{name}: k={k} bits do not fit in rows of {words} int32 words ({32 * words} bits)")
    return k


# --------------------------------------------------------------------------- backends
_state = threading.local()
_backend_override: list[str] = []
_auto_cache: dict[tuple, str] = {}
_mma_status: dict[int, str | None] = {}


def _device_index(t: torch.Tensor) -> int:
    return t.device.index if t.device.index is not None else torch.cuda.current_device()


def backend_status(device: torch.device | int | None = None) -> dict[str, str | None]:
    """For each backend: None if it can run on ``device`` (default: current CUDA device), else why not.

    Probing ``mma_b1`` compiles its CUDA extension on first call (tens of seconds, cached on disk).
    """
    status: dict[str, str | None] = {}
    base = unavailable_reason()
    status["triton"] = base
    if base is not None or interpreting():
        why = base or "needs a CUDA GPU (not available in Triton interpreter mode)"
        status["mma_b1"] = why
        status["int8_tc"] = why
        return status
    dev = torch.device("cuda", device) if isinstance(device, int) else torch.device(device or "cuda")
    idx = dev.index if dev.index is not None else torch.cuda.current_device()
    cc = torch.cuda.get_device_capability(idx)
    if torch.version.hip is not None:
        status["mma_b1"] = "AMD GPU: no 1-bit mma"
        status["int8_tc"] = "AMD GPU: int8 path not validated"
        return status
    status["int8_tc"] = None if (cc >= (8, 0) and hasattr(torch, "_int_mm")) else (
        f"needs sm_80+ and torch._int_mm (device is sm_{cc[0]}{cc[1]})"
    )
    status["mma_b1"] = _mma_probe(idx, cc)
    return status


def _mma_probe(idx: int, cc: tuple[int, int]) -> str | None:
    if idx in _mma_status:
        return _mma_status[idx]
    if cc < (8, 0):
        reason = f"b1 mma with .and.popc needs sm_80+ (device is sm_{cc[0]}{cc[1]})"
    else:
        from . import _mma  # noqa: PLC0415

        reason = _mma.load_error()
    _mma_status[idx] = reason
    return reason


def backends(device=None) -> list[str]:
    """Backends that can run on ``device`` now."""
    return [name for name, why in backend_status(device).items() if why is None]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Force one backend ("triton", "mma_b1", "int8_tc" or "auto") inside a ``with`` block."""
    if name not in BACKENDS + ("auto",):
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS + ('auto',))}")
    _backend_override.append(name)
    try:
        yield name
    finally:
        _backend_override.pop()


def last_backend() -> str | None:
    """The backend that ran the most recent :func:`bgemm` in this thread (None before any)."""
    return getattr(_state, "last", None)


def _requested_backend(arg: str) -> str:
    if arg != "auto":
        return arg
    if _backend_override:
        return _backend_override[-1]
    env = os.environ.get(_ENV_BACKEND, "").strip()
    return env or "auto"


def _bucket(v: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, v))))


def _time_ms(fn: Callable[[], object], reps: int = 3) -> float:
    fn()  # warm-up (autotuning / compilation happen here)
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


# --------------------------------------------------------------------------- GEMM
def _per_column(v, n: int, dtype: torch.dtype, device, name: str):
    if v is None:
        return None
    t = torch.as_tensor(v, device=device)
    if t.shape != (n,):
        raise ValueError(f"bgemm: {name} must have shape ({n},) (one per output column), got {tuple(t.shape)}")
    return t.to(device=device, dtype=dtype).contiguous()


def _run_triton(a, b, k, out_kind, scale, bias, thr, flip, config=None):
    mod = _load_triton()
    m, kw = a.shape
    n = b.shape[0]
    if out_kind == 2:
        out_w = packed_words(n)
        c = torch.zeros((m, out_w), dtype=torch.int32, device=a.device)
    else:
        out_w = 0
        c = torch.empty((m, n), dtype=torch.int32 if out_kind == 0 else torch.float32, device=a.device)
    dummy = c  # never read when the HAS_* flag is off
    args = (
        a, b, c,
        scale if scale is not None else dummy,
        bias if bias is not None else dummy,
        thr if thr is not None else dummy,
        flip if flip is not None else dummy,
        m, n, kw, k, a.stride(0), b.stride(0), c.stride(0), out_w,
    )
    flags = dict(
        OUT=out_kind, HAS_SCALE=scale is not None, HAS_BIAS=bias is not None,
        HAS_FLIP=flip is not None, HW_POPC=not mod.INTERPRET,
    )
    if config is None and not mod.INTERPRET:
        def grid(meta):
            return (triton_cdiv(m, meta["BLOCK_M"]) * triton_cdiv(n, meta["BLOCK_N"]),)

        mod.bgemm_autotuned[grid](*args, **flags)
    else:
        cfg = dict(mod.INTERPRET_CONFIG)
        launch = {}
        if config:
            launch = {key: config[key] for key in ("num_warps", "num_stages") if key in config}
            cfg.update({key: v for key, v in config.items() if key not in launch})
        if cfg["BLOCK_N"] < 32 or cfg["BLOCK_N"] % 32:
            raise ValueError(f"bgemm: BLOCK_N must be a multiple of 32, got {cfg['BLOCK_N']}")
        grid = (triton_cdiv(m, cfg["BLOCK_M"]) * triton_cdiv(n, cfg["BLOCK_N"]),)
        mod.bgemm_kernel[grid](*args, **flags, **cfg, **launch)
    return c


def _epilogue_torch(d: torch.Tensor, out_kind: int, scale, bias, thr, flip) -> torch.Tensor:
    """The fused epilogue of the Triton kernel, in torch, for backends that return int32."""
    if out_kind == 0:
        return d
    if out_kind == 1:
        y = d.to(torch.float32)
        if scale is not None:
            y = y * scale
        if bias is not None:
            y = y + bias
        return y
    neg = d < thr[None, :]
    if flip is not None:
        neg = neg ^ (flip != 0)[None, :]
    return pack(torch.where(neg, -1.0, 1.0).to(torch.float32))


def _run_mma(a, b, k, out_kind, scale, bias, thr, flip):
    from . import _mma  # noqa: PLC0415

    return _epilogue_torch(_mma.bgemm_int32(a, b, k), out_kind, scale, bias, thr, flip)


def _run_int8(a, b, k, out_kind, scale, bias, thr, flip):
    m, n = a.shape[0], b.shape[0]
    width = 64 * triton_cdiv(k, 64)  # multiple of 8; zero columns past k add nothing
    a8 = _unpack_into(a, k, torch.int8, width)
    n_pad = 8 * triton_cdiv(n, 8)
    b8 = _unpack_into(b, k, torch.int8, width)
    if n_pad != n:
        b8 = torch.cat([b8, b8.new_zeros((n_pad - n, width))])
    d = torch._int_mm(a8, b8.t())[:, :n]
    return _epilogue_torch(d, out_kind, scale, bias, thr, flip)


_RUNNERS = {"triton": _run_triton, "mma_b1": _run_mma, "int8_tc": _run_int8}


def bgemm(
    a_bits: torch.Tensor,
    b_bits: torch.Tensor,
    k: int,
    *,
    out: str = "int32",
    scale=None,
    bias=None,
    threshold=None,
    flip=None,
    backend: str = "auto",
) -> torch.Tensor:
    """Binary GEMM on packed rows: ``dot[i, j] = k - 2 * popcount(A[i] ^ B[j])``, fused output stage.

    Args:
        a_bits: (m, words) packed activations: int32 or int64 words, or the CPU kernels' uint8.
        b_bits: (n, words) packed weights, same layout (one row per output column).
        k: number of valid bits per row, 1 <= k <= 32 * words (bits past k are ignored).
        out: "int32" -> dot (m, n) int32; "float" -> ``scale[j] * dot + bias[j]`` (m, n) float32;
            "bits" -> (m, packed_words(n)) int32 words, bit = (dot < threshold[j]) ^ flip[j].
        scale, bias: per-column floats (out="float"; None = 1 / 0).
        threshold: per-column int32 (out="bits", required); flip: per-column 0/1 (optional).
        backend: "auto" (fastest measured), "triton", "mma_b1" or "int8_tc".

    The float epilogue may be contracted to one FMA on the GPU (Triton backend), i.e. within
    1 ulp of the CPU kernels' two roundings; int32 and bits outputs are bit-exact everywhere.
    """
    _require()
    a = _as_words(a_bits, "bgemm: a_bits")
    b = _as_words(b_bits, "bgemm: b_bits")
    if a.device != b.device:
        raise ValueError(f"bgemm: a_bits is on {a.device} but b_bits is on {b.device}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"bgemm: mismatched K: a_bits rows hold {a.shape[1]} int32 words, b_bits rows {b.shape[1]}"
        )
    k = _check_k(k, a.shape[1], "bgemm")
    if out not in _OUT_KINDS:
        raise ValueError(f"bgemm: out must be one of {sorted(_OUT_KINDS)}, got {out!r}")
    out_kind = _OUT_KINDS[out]
    n = b.shape[0]
    scale = _per_column(scale, n, torch.float32, a.device, "scale")
    bias = _per_column(bias, n, torch.float32, a.device, "bias")
    thr = _per_column(threshold, n, torch.int32, a.device, "threshold")
    flip_t = _per_column(flip, n, torch.int32, a.device, "flip")
    if out == "bits":
        if thr is None:
            raise ValueError('bgemm: out="bits" needs threshold (one int32 per output column)')
        if scale is not None or bias is not None:
            raise ValueError('bgemm: scale/bias only apply to out="float"')
    else:
        if thr is not None or flip_t is not None:
            raise ValueError(f'bgemm: threshold/flip only apply to out="bits", not {out!r}')
        if out == "int32" and (scale is not None or bias is not None):
            raise ValueError('bgemm: scale/bias only apply to out="float"')
    if backend not in BACKENDS + ("auto",):
        raise ValueError(f"bgemm: unknown backend {backend!r}; expected one of {', '.join(BACKENDS + ('auto',))}")

    name = _requested_backend(backend)
    if name not in BACKENDS + ("auto",):
        raise ValueError(f"{_ENV_BACKEND}={name!r} is not a backend; expected one of {', '.join(BACKENDS)}")
    call_args = (a, b, k, out_kind, scale, bias, thr, flip_t)
    if name == "auto":
        name = _choose(call_args)
    else:
        why = "" if name == "triton" else backend_status(a.device).get(name)
        if why:
            raise RuntimeError(f"bgemm: backend {name!r} is not available here: {why}")
        if name == "int8_tc" and a.shape[0] <= 16:
            raise ValueError(f"bgemm: backend 'int8_tc' needs m > 16 rows (torch._int_mm), got m={a.shape[0]}")
    _state.last = name
    return _RUNNERS[name](*call_args)


def _choose(call_args) -> str:
    a, b = call_args[0], call_args[1]
    if a.device.type != "cuda":
        return "triton"
    idx = _device_index(a)
    key = (idx, call_args[3], _bucket(a.shape[0]), _bucket(b.shape[0]), _bucket(a.shape[1]))
    hit = _auto_cache.get(key)
    if hit is not None:
        return hit
    cands = [nm for nm in backends(idx) if not (nm == "int8_tc" and a.shape[0] <= 16)]
    if len(cands) == 1:
        best = cands[0]
    else:
        times = {}
        for nm in cands:
            try:
                times[nm] = _time_ms(lambda nm=nm: _RUNNERS[nm](*call_args))
            except Exception as exc:  # a backend that fails here is skipped, not fatal
                warnings.warn(f"xnorkit.kernels.gpu: backend {nm!r} failed while timing: {exc}", stacklevel=3)
        best = min(times, key=times.get) if times else "triton"
    _auto_cache[key] = best
    return best


# --------------------------------------------------------------------------- autograd + layers
from .autograd import binary_kernels_enabled, routes, use_binary_kernels, xnor_conv2d, xnor_linear  # noqa: E402
