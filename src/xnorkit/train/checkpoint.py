"""Atomic checkpoint and JSON writing, and run-directory naming.

Every file goes to a temporary name in the destination folder, is flushed and fsync'ed,
and only then renamed over the final name (``os.replace`` is atomic on POSIX and
Windows), so a crash at any moment leaves either the previous complete file or the new
complete file, never a truncated one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from xnorkit.data.files import temp_file_for

__all__ = [
    "atomic_save",
    "atomic_write_json",
    "load_checkpoint",
    "run_name",
    "new_run_dir",
    "latest_run_dir",
    "CHECKPOINT",
    "FINAL_MODEL",
    "CONFIG",
    "METRICS",
]

CHECKPOINT = "checkpoint.pt"
FINAL_MODEL = "model.pt"
CONFIG = "config.json"
METRICS = "metrics.json"


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_for(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through a temporary file and an atomic rename."""
    _atomic(Path(path), lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON through a temporary file and an atomic rename."""
    data = (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode()
    _atomic(Path(path), lambda f: f.write(data))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`atomic_save`.

    Raises:
        FileNotFoundError / ValueError: naming the file when it is absent or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for a damaged zip
        raise ValueError(f"{path}: not a readable checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path}: not an xnorkit checkpoint (expected a dict with 'model' "
                         f"and 'config', got {type(ckpt).__name__})")
    return ckpt


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, bool):
        return "T" if v else "F"
    if isinstance(v, (list, tuple)):
        return "x".join(_fmt(x) for x in v)
    return str(v)


def run_name(model: str, dataset: str, hparams_set: str, overrides: dict[str, Any]) -> str:
    """A directory name derived from the config, e.g. ``binarynet_mlp-mnist-ours-lr0.01``.

    Overrides are appended as ``key<value>`` sorted by key, model arguments without their
    ``model.`` prefix (seed 000 built its log folder
    names from its flags the same way); names longer than 120 characters are shortened with
    a hash so that different configs never collide.
    """
    parts = [model, dataset, hparams_set]
    for k in sorted(overrides, key=lambda k: k.replace("model.", "")):
        key = k.replace("model.", "")
        parts.append(f"{key}{_fmt(overrides[k])}")
    name = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", "-".join(parts))
    if len(name) > 120:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:100]}-{digest}"
    return name


def _numbered(parent: Path, name: str) -> list[tuple[int, Path]]:
    out = []
    if parent.is_dir():
        pat = re.compile(re.escape(name) + r"-(\d+)$")
        for p in parent.iterdir():
            m = pat.match(p.name)
            if m and p.is_dir():
                out.append((int(m.group(1)), p))
    return sorted(out)


def latest_run_dir(parent: str | os.PathLike, name: str) -> Path | None:
    """The highest-numbered existing ``<parent>/<name>-<N>``, or None."""
    runs = _numbered(Path(parent), name)
    return runs[-1][1] if runs else None


def new_run_dir(parent: str | os.PathLike, name: str) -> Path:
    """Create and return ``<parent>/<name>-<N>`` with N one more than the highest existing.

    Creation uses ``mkdir`` without ``exist_ok``, so two processes racing for the same
    number cannot both get it: the loser retries with the next number.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    runs = _numbered(parent, name)
    n = runs[-1][0] + 1 if runs else 1
    while True:
        path = parent / f"{name}-{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
