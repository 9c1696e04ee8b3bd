"""Fixtures for xnorkit.data tests: the real dataset root (skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def dataset_root() -> Path | None:
    """``$XNORKIT_DATA``, else ``<repo>/../shared/datasets``, when that folder exists."""
    env = os.environ.get("XNORKIT_DATA")
    cand = Path(env) if env else REPO.parent / "shared" / "datasets"
    return cand if cand.is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = dataset_root()
    if root is None:
        pytest.skip("real datasets not found: set XNORKIT_DATA or provide ../shared/datasets "
                    "next to the repository")
    return root
