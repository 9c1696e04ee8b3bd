"""Dataset files on disk: where they live, checksums, and downloads.

The dataset root is found in this order: an explicit ``root`` argument (the CLI's
``--data-dir``), the ``XNORKIT_DATA`` environment variable, then
``~/.cache/xnorkit/datasets``. Every file is checked against its published MD5 before
it is read. A missing file is downloaded (when a URL is known and the machine is
online) to a temporary name, verified, and only then renamed into place, so a
half-downloaded or corrupt file never sits under the final name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

__all__ = [
    "DatasetError",
    "RemoteFile",
    "default_root",
    "resolve_root",
    "md5sum",
    "verify_file",
    "download",
    "ensure_file",
    "atomic_write_bytes",
    "temp_file_for",
]

ENV_VAR = "XNORKIT_DATA"
_CHUNK = 1 << 20


class DatasetError(RuntimeError):
    """A dataset file is absent, corrupt or malformed; the message names the file."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name on disk, its MD5, and where to fetch it.

    Attributes:
        name: file name relative to the dataset folder (e.g. ``train-images-idx3-ubyte.gz``).
        md5: published MD5 of the file, lower-case hex.
        urls: mirrors tried in order when the file is missing.
        size: expected size in bytes, or None when unknown (used only in messages).
    """

    name: str
    md5: str
    urls: Sequence[str] = field(default_factory=tuple)
    size: int | None = None


def temp_file_for(dest: str | os.PathLike, suffix: str = ".tmp") -> tuple[int, str]:
    """``(fd, path)`` of a new temporary file beside ``dest``, for a later ``os.replace``.

    Unlike a bare ``mkstemp`` (mode 0600) the file gets the usual permissions (0666 minus
    the umask), so the renamed result looks like any other file the user writes.
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)
    return fd, tmp


def default_root() -> Path:
    """The dataset root when none is given: ``$XNORKIT_DATA`` or ``~/.cache/xnorkit/datasets``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "xnorkit" / "datasets"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the dataset root (argument, then ``XNORKIT_DATA``, then the cache folder)."""
    return Path(root).expanduser() if root is not None else default_root()


def md5sum(path: str | os.PathLike) -> str:
    """MD5 of a file, lower-case hex, read in 1 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str | os.PathLike, md5: str) -> None:
    """Raise DatasetError unless ``path`` exists and has MD5 ``md5``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (expected md5 {md5})")
    got = md5sum(path)
    if got != md5.lower():
        raise DatasetError(
            f"{path}: checksum mismatch: expected md5 {md5}, got {got} "
            f"({path.stat().st_size} bytes); the file is corrupt or a different version; "
            "delete it to download it again"
        )


def download(url: str, dest: str | os.PathLike, md5: str | None = None, *,
             timeout: float = 30.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``md5`` before the rename.

    The bytes go to a temporary file in the destination folder; only a complete file with
    the right checksum is renamed to ``dest``. ``file://`` URLs work too.

    Raises:
        DatasetError: on a network error or a checksum mismatch (``dest`` is left untouched).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_for(dest, ".part")
    h = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = resp.headers.get("Content-Length")
                    bar = None
                    if progress:
                        from tqdm.auto import tqdm

                        bar = tqdm(total=int(total) if total else None, unit="B",
                                   unit_scale=True, desc=f"download {dest.name}", leave=False)
                    try:
                        for chunk in iter(lambda: resp.read(_CHUNK), b""):
                            out.write(chunk)
                            h.update(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                    finally:
                        if bar is not None:
                            bar.close()
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise DatasetError(f"{dest}: download from {url} failed: {exc}") from exc
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if md5 is not None and got != md5.lower():
            raise DatasetError(
                f"{dest}: download from {url} has md5 {got}, expected {md5}; not saved"
            )
        os.replace(tmp, dest)
        tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def ensure_file(folder: str | os.PathLike, remote: RemoteFile, *, download_missing: bool = True,
                verify: bool = True, urls: Iterable[str] | None = None) -> Path:
    """Return the path of a verified dataset file, downloading it when missing.

    Args:
        folder: the dataset's folder (e.g. ``<root>/mnist``).
        remote: the file's name, MD5 and mirrors.
        download_missing: try the mirrors when the file is absent.
        verify: check the MD5 of an existing file (cheap: ~20 ms for MNIST).
        urls: mirrors to use instead of ``remote.urls`` (tests point this at ``file://``).

    Raises:
        DatasetError: naming the file and its expected MD5 when it is corrupt, or absent and
            could not be downloaded (offline, no mirror, or every mirror failed).
    """
    path = Path(folder) / remote.name
    if path.is_file():
        if verify:
            verify_file(path, remote.md5)
        return path
    mirrors = list(remote.urls if urls is None else urls)
    if not download_missing or not mirrors:
        why = "downloads are disabled" if mirrors else "no download URL is known"
        raise DatasetError(
            f"{path}: file not found and {why}; expected md5 {remote.md5}. Put the file there, "
            f"or point --data-dir / ${ENV_VAR} at a folder that has it"
        )
    errors = []
    for base in mirrors:
        url = base if base.endswith(remote.name) else base.rstrip("/") + "/" + remote.name
        try:
            return download(url, path, remote.md5)
        except DatasetError as exc:
            errors.append(str(exc))
    raise DatasetError(
        f"{path}: file not found and could not be downloaded (offline?); expected md5 "
        f"{remote.md5}. Tried:\n  " + "\n  ".join(errors)
        + f"\nPut the file there, or point --data-dir / ${ENV_VAR} at a folder that has it"
    )


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_for(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

