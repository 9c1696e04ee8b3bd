"""The machine a benchmark ran on, for its results files (shared by the scripts in benchmarks/)."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """'<cpu>, <n> cores'."""
    return f"{cpu_name()}, {os.cpu_count()} cores"
