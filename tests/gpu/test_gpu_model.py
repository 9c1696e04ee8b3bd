"""``xnorkit.Model(..., device="cuda")``: a converted model run by the torch executor with the
binary GPU kernels (xnorkit.runtime_torch). Without a GPU, a tiny graph runs through the Triton
kernels in Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py) on CPU tensors and must
equal the C engine bit for bit; the CUDA tests skip. On a GPU the same graphs and converted
models run on CUDA against the C engine (bits and integer sums exact, floats within 1e-5)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import gpu_module

import xnorkit

xg = gpu_module()
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))  # the engine tests' .xk writer
X = pytest.importorskip("xkfile")

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _pm1(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def tiny_graph(rng) -> bytes:
    """sign (40 channels: each tap's words padded) -> bconv pad 0 (per-position correction, bits)
    -> bconv pad -1 stride 2 (thresholds fused into the GEMM) -> bit flatten -> bdense to bits
    and to raw integer sums."""
    b = X.Builder()
    x = b.act("input", X.F32, [1, 4, 4, 40], layout=1)
    t0 = b.act("sign", X.BITS, [1, 4, 4, 40])
    b.op("sign", "sign", [x], t0, params=X.sign_params())

    def bits_stage(name, oc):
        thr = rng.integers(-20, 20, size=oc).astype(np.int32)
        thr[0] = -2**31
        return dict(kind=X.OUT_BITS, threshold=b.const(f"{name}.thr", thr),
                    flip=b.const(f"{name}.flip", (rng.random(oc) < 0.3).astype(np.uint8)))

    t1 = b.act("bconv1", X.BITS, [1, 4, 4, 24])
    b.op("bconv2d", "bconv1", [t0], t1, b.const("bconv1.weight", _pm1(rng, (24, 9 * 40)), X.BITS),
         bits_stage("bconv1", 24), X.conv_params(3, 3, pads=(1, 1, 1, 1), pad_value=0))
    t2 = b.act("bconv2", X.BITS, [1, 2, 2, 16])
    b.op("bconv2d", "bconv2", [t1], t2, b.const("bconv2.weight", _pm1(rng, (16, 9 * 24)), X.BITS),
         bits_stage("bconv2", 16), X.conv_params(3, 3, stride=(2, 2), pads=(1, 1, 1, 1), pad_value=-1))
    t3 = b.act("flat", X.BITS, [1, 64])
    b.op("flatten", "flat", [t2], t3, params=X.flatten_params(0))
    t4 = b.act("fc_bits", X.BITS, [1, 33])
    b.op("bdense", "fc_bits", [t3], t4, b.const("fc_bits.weight", _pm1(rng, (33, 64)), X.BITS),
         bits_stage("fc_bits", 33), X.dense_params())
    t5 = b.act("fc_int", X.F32, [1, 10])
    b.op("bdense", "fc_int", [t3], t5, b.const("fc_int.weight", _pm1(rng, (10, 64)), X.BITS),
         dict(kind=X.OUT_FLOAT), X.dense_params())
    b.inputs, b.outputs = [x], [t4, t5]
    return b.build()


def _assert_equal_outputs(got, want, exact=True):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = g.detach().cpu().numpy() if torch.is_tensor(g) else g
        assert g.shape == w.shape and g.dtype == np.float32
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * max(np.abs(w).max(), 1e-30))


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter check; on a GPU the CUDA tests run instead")
def test_triton_path_in_the_interpreter_equals_the_c_engine():
    if not xg.interpreting():
        pytest.skip("Triton was imported before TRITON_INTERPRET=1 was set")
    data = tiny_graph(np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(2, 40, 4, 4)).astype(np.float32)
    want = xnorkit.Model(data, max_batch=2).run(x)
    m = xnorkit.Model(data, device="cpu", backend="torch", kernels="triton")
    assert m.kernels == "triton" and m.info()["kernels_reason"] is None
    xg._state.last = None
    got = m.run(x)
    assert xg.last_backend() == "triton"  # the binary ops really ran the Triton kernels
    _assert_equal_outputs(got, want)
    _assert_equal_outputs(xnorkit.Model(data, device="cpu", backend="torch", kernels="torch").run(x), want)


# ----------------------------------------------------------------------------------- on a GPU
@pytest.fixture(scope="module")
def engine_graphs():
    tte = pytest.importorskip("test_torch_executor")
    rng = np.random.default_rng(0)
    return tte, {"binary": tte.binary_graph(rng), "float": tte.float_graph(rng),
                 "tiny": tiny_graph(np.random.default_rng(0))}


@cuda
@pytest.mark.parametrize("kernels", ["auto", "triton", "torch"])
def test_cuda_graphs_equal_the_c_engine(engine_graphs, kernels):
    tte, graphs = engine_graphs
    rng = np.random.default_rng(3)
    cases = [("binary", tte.integer_input(rng, (5, 3, 9, 9)), True),
             ("tiny", rng.normal(size=(5, 40, 4, 4)).astype(np.float32), True),
             ("float", tte.integer_input(rng, (5, 4, 6, 6)), False)]  # integers: its bits output is exact
    for name, x, exact in cases:
        want = xnorkit.Model(graphs[name], max_batch=len(x)).run(x)
        m = xnorkit.Model(graphs[name], device="cuda", kernels=kernels)
        assert m.device.type == "cuda" and m.kernels == ("torch" if kernels == "torch" else "triton")
        got = m.run(torch.from_numpy(x).cuda())
        outs = got if isinstance(got, tuple) else (got,)
        assert all(o.device.type == "cuda" for o in outs)  # torch in: results stay on the GPU
        # bits and integer sums exact; the float graph's softmax/float convs within 1e-5
        wants = want if isinstance(want, tuple) else (want,)
        for spec, g, w in zip(m.outputs, outs, wants):
            _assert_equal_outputs(g, w, exact=exact or spec["dtype"] == "bits")
        _assert_equal_outputs(m.run(x), want, exact=False)  # numpy in, numpy out


@cuda
def test_cuda_converted_models_equal_the_c_engine():
    convert_mod = pytest.importorskip("xnorkit.convert.pipeline")
    e2e = pytest.importorskip("test_e2e")
    models = pytest.importorskip("xnorkit.models")
    torch.manual_seed(0)
    cases = [(e2e.SmallBNN(), torch.randn(8, 3, 12, 12), {}),
             (e2e.ResidualBNN(), torch.randn(8, 3, 10, 10), {}),
             (e2e.DepthwiseNet(), torch.randn(8, 3, 12, 12), {"precision": "int8", "calibration": torch.randn(16, 3, 12, 12)}),
             (models.get_model("binarynet"), torch.randn(8, 3, 32, 32), {})]
    for model, x, kw in cases:
        data = convert_mod.convert(e2e.randomize_bn(model), x[:1], verbose=False, **kw).data
        want = xnorkit.Model(data, max_batch=len(x)).run(x.numpy())
        got = xnorkit.Model(data, device="cuda").run(x.cuda())
        _assert_equal_outputs(got, want, exact=False)


@cuda
def test_cuda_devices_and_errors(engine_graphs):
    _, graphs = engine_graphs
    n = torch.cuda.device_count()
    for dev in ("cuda", "cuda:0", torch.device("cuda", 0), 0):
        assert xnorkit.Model(graphs["tiny"], device=dev).device == torch.device("cuda", 0)
    with pytest.raises(RuntimeError, match=f"only {n} CUDA device"):
        xnorkit.Model(graphs["tiny"], device=f"cuda:{n}")
    m = xnorkit.Model(graphs["tiny"], device="cuda")
    with pytest.raises(ValueError, match=r"expected \(N, 40, 4, 4\) \(NCHW\)"):
        m.run(torch.zeros(1, 4, 4, 40, device="cuda"))
