"""`xnorkit run` and `xnorkit bench` on a small model file."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from xnorkit.cli import main

from test_runtime import binary_cnn


def model_file(tmp_path):
    b, _ = binary_cnn(np.random.default_rng(0))
    p = tmp_path / "m.xk"
    p.write_bytes(b.build())
    return p


def test_run_npy_prints_top_classes_and_saves(tmp_path):
    p = model_file(tmp_path)
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = CliRunner().invoke(main, ["run", str(p), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())  # the console may wrap long paths
    assert "2 sample(s)" in out and "class" in out
    import xnorkit

    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), xnorkit.Model(p).run(x))


def test_run_errors(tmp_path):
    p = model_file(tmp_path)
    res = CliRunner().invoke(main, ["run", str(p)])
    assert res.exit_code != 0 and "exactly one of --input or --dataset" in res.output
    bad = tmp_path / "bad.xk"
    bad.write_bytes(p.read_bytes()[:100])
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    res = CliRunner().invoke(main, ["run", str(bad), "--input", str(tmp_path / "x.npy")])
    assert res.exit_code != 0 and "truncated" in res.output
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 3), np.float32))
    res = CliRunner().invoke(main, ["run", str(p), "--input", str(tmp_path / "x.npy")])
    assert res.exit_code != 0 and "NCHW" in res.output


def test_bench_table_and_json(tmp_path):
    p = model_file(tmp_path)
    res = CliRunner().invoke(main, ["bench", str(p), "--threads", "1,2", "--repeats", "3", "--warmup", "1",
                                    "--json", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    assert "per op" in res.output and "bconv2d" in res.output
    d = json.loads((tmp_path / "b.json").read_text())
    assert [r["threads"] for r in d["runs"]] == [1, 2]
    assert len(d["runs"][0]["ops"]) == 10 and d["runs"][0]["median_s"] > 0
