"""Golden model files of every released format version stay loadable: each file passes the
reader's full validation, keeps its metadata, and reference.py (and the C engine, when built)
computes the outputs stored next to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xnorkit import reference as ref
from xnorkit.convert import format as xkf

HERE = Path(__file__).parent
FILES = sorted(HERE.glob("v*/*.xk"))


def test_there_are_golden_files_for_the_current_version():
    assert any(p.parent.name == f"v{xkf.VERSION_MAJOR}" for p in FILES)
    assert len(FILES) >= 4


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_file_loads_and_computes_its_outputs(path):
    m = xkf.read(path)
    assert m.version[0] == int(path.parent.name[1:])
    assert m.meta_value("labels").splitlines()[0] == "class0"
    assert m.meta_value("config") == {"golden": path.stem}
    io = np.load(path.with_suffix(".npz"))
    y = ref.run(m, io["x"])[0]
    np.testing.assert_array_equal(y, io["y"])  # the oracle is deterministic


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_file_runs_in_the_engine(path):
    runtime = pytest.importorskip("xnorkit.runtime")
    io = np.load(path.with_suffix(".npz"))
    y = np.asarray(runtime.Model(str(path), max_batch=len(io["x"])).run(io["x"]))
    np.testing.assert_allclose(y, io["y"], rtol=1e-5, atol=1e-5 * np.abs(io["y"]).max())
