"""The machine a benchmark ran on, for its results files (shared by the scripts in benchmarks/)."""

from __future__ import annotations

import os
import platform


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo with its family / model numbers and widest binary-kernel ISA
    (virtual machines often report only "AMD EPYC": the family tells Zen 3 (25) from Zen 5 (26)),
    else what `platform` knows."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break
                k, _, v = line.partition(":")
                info[k.strip()] = v.strip()
    except OSError:
        pass
    if "model name" not in info:
        return platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    isa = ("AVX-512 VPOPCNTDQ" if "avx512_vpopcntdq" in flags else "AVX2" if "avx2" in flags
           else "NEON" if "asimd" in flags else "")
    extra = [f"family {info['cpu family']}, model {info['model']}"] if "cpu family" in info else []
    return f"{info['model name']} ({'; '.join(extra + ([isa] if isa else []))})" if extra or isa else info["model name"]


def machine() -> str:
    """'<cpu>, <n> cores'."""
    return f"{cpu_name()}, {os.cpu_count()} cores"
