"""Keep freed host memory for reuse during CPU training (glibc only).

A training step allocates and frees the same large tensors every time (a quantized layer adds
the binarized weight and its gradient: 4 MiB each for a 1024x1024 layer). With glibc's
defaults a freed block of that size is soon handed back to the kernel (unmapped, or trimmed
off the heap top), so the next step takes a page fault for every 4 KiB page again; on virtual
machines that cost ~15% of a small Linear step, and much more on a busy host. PyTorch's CPU
performance guide therefore recommends an allocator that keeps memory (jemalloc / tcmalloc via
LD_PRELOAD); this module gets the same effect from glibc itself with two ``mallopt`` settings:

* ``M_MMAP_THRESHOLD``: blocks below it come from the heap, not from fresh ``mmap`` calls;
* ``M_TRIM_THRESHOLD``: free memory at the heap top is returned to the kernel only above it.

The settings are process-wide: memory the process frees stays mapped (up to the trim
threshold) instead of shrinking the resident size. ``xnorkit train`` applies them on CPU runs
unless ``XNORKIT_MALLOC_TUNING=0``; library users call :func:`keep_freed_memory` themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

_applied: dict | None = None


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20) -> dict | None:
    """Set glibc's mmap and trim thresholds so freed tensors are reused without page faults.

    Returns the settings applied ({"mmap_threshold": ..., "trim_threshold": ...}), or None where
    the C library is not glibc (nothing is changed there). Raises ValueError for thresholds
    glibc does not accept (``mallopt(3)``: the mmap threshold is at most 32 MiB x sizeof(long)).
    """
    global _applied
    for name, v in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not 0 < int(v) < 2**31:
            raise ValueError(f"{name} must be in 1..2**31-1 bytes (a C int for mallopt), got {v}")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    libc = ctypes.CDLL(name)
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)):
        raise ValueError(f"glibc rejected M_MMAP_THRESHOLD={mmap_threshold} (its maximum is 32 MiB x sizeof(long))")
    if not mallopt(M_TRIM_THRESHOLD, int(trim_threshold)):
        raise ValueError(f"glibc rejected M_TRIM_THRESHOLD={trim_threshold}")
    _applied = {"mmap_threshold": int(mmap_threshold), "trim_threshold": int(trim_threshold)}
    return dict(_applied)


def tuning_enabled() -> bool:
    """False when the environment says XNORKIT_MALLOC_TUNING=0 (or off/false/no)."""
    return os.environ.get("XNORKIT_MALLOC_TUNING", "1").strip().lower() not in ("0", "off", "false", "no")


def applied() -> dict | None:
    """The settings applied in this process by keep_freed_memory, or None."""
    return dict(_applied) if _applied else None
