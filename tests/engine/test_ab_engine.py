"""benchmarks/ab_engine.py: two engine builds in one process, alternating (slow: compiles the
engine twice)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xkfile as X

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("git") is None, reason="needs gcc and git")
def test_ab_engine_runs_two_builds(tmp_path):
    b = X.Builder()
    x = b.act("x", X.F32, [1, 4, 4, 8])
    y = b.act("y", X.F32, [1, 4, 4, 8])
    b.op("activation", "relu", [x], y, params=X.eltwise_params(act=1))
    b.inputs, b.outputs = [x], [y]
    model = tmp_path / "m.xk"
    model.write_bytes(b.build())
    out = tmp_path / "ab"
    for _ in range(2):  # --out appends a section per run
        r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab_engine.py"), "WORK", "WORK", str(model),
                            "--runs", "6", "--threads", "1,2", "--out", str(out), "--title", "smoke"],
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in r.stdout.splitlines()
            if line.startswith("| m.xk")]
    assert [row[1] for row in rows] == ["1", "2"]
    ratios = [float(row[4].split()[0]) for row in rows]
    assert all(np.isfinite(ratios)) and all(0.05 < v < 20 for v in ratios)
    records = json.loads(out.with_suffix(".json").read_text())
    assert len(records) == 2 and [d["threads"] for d in records[1]["rows"]] == [1, 2]
    assert all(d["a_min_ms"] <= d["a_median_ms"] <= d["a_max_ms"] for d in records[0]["rows"])
    assert out.with_suffix(".md").read_text().count("## smoke") == 2


@pytest.mark.parametrize("args,msg", [
    (["WORK", "WORK", "{missing}"], "model file not found"),
    (["WORK", "no-such-rev-xyz", "{model}"], "not a git revision"),
    (["WORK", "WORK", "{model}", "--threads", "1,x"], "--threads must be comma-separated integers"),
    (["WORK", "WORK", "{model}", "--runs", "1"], "--runs >= 2"),
])
def test_ab_engine_rejects_bad_input(tmp_path, args, msg):
    model = tmp_path / "m.xk"
    model.write_bytes(b"not compiled: rejected before any build")
    argv = [a.format(missing=tmp_path / "nope.xk", model=model) for a in args]
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab_engine.py"), *argv], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and msg in r.stderr, r.stderr
