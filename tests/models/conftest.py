"""Fixtures for the model-zoo tests (helpers live in ``zoo_util.py``)."""

from __future__ import annotations

import pytest

from zoo_util import cached_small


@pytest.fixture
def small_model():
    """``small_model(name)``: the session-wide small instance of model ``name``."""
    return cached_small
