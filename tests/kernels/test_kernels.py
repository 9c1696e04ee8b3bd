"""xnorkit.kernels against the numpy oracle (xnorkit.kernels.ref), for every available ISA,
on Hypothesis-drawn shapes including K in {1, 63, 64, 65, primes, 4097}, odd M/N and batch 1."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import xnorkit.kernels as xk
from xnorkit.kernels.ref import bgemm_ref, pack_ref, unpack_ref

ISAS = xk.available_isas()
AWKWARD_K = [1, 2, 7, 31, 63, 64, 65, 97, 127, 128, 129, 251, 257, 509, 1021, 4097]


def signs(rng, shape, zeros=0.0):
    x = rng.standard_normal(shape).astype(np.float32)
    if zeros:
        x[rng.random(shape) < zeros] = 0.0
    return x


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 9), k=st.one_of(st.sampled_from(AWKWARD_K), st.integers(1, 700)), seed=st.integers(0, 2**31))
def test_pack_matches_reference(isa, rows, k, seed):
    rng = np.random.default_rng(seed)
    x = signs(rng, (rows, k), zeros=0.2)
    x[rng.random(x.shape) < 0.05] = -0.0
    with xk.use_isa(isa):
        got = xk.pack(x)
        assert xk.last_isa() == isa
    np.testing.assert_array_equal(got, pack_ref(x))
    np.testing.assert_array_equal(xk.unpack(got, k), np.where(x >= 0, 1.0, -1.0))
    xi = rng.integers(-128, 128, size=(rows, k), dtype=np.int8)
    with xk.use_isa(isa):
        np.testing.assert_array_equal(xk.pack(xi), pack_ref(xi))


@pytest.mark.parametrize("isa", ISAS)
def test_one_hot_probes_pin_bit_order(isa):
    k = 200
    with xk.use_isa(isa):
        for i in range(k):
            x = np.ones((1, k), np.float32)
            x[0, i] = -1.0
            bits = xk.pack(x)[0]
            expected = np.zeros(xk.packed_row_bytes(k), np.uint8)
            expected[i // 8] = 1 << (i % 8)  # element i is bit i%8 of byte i/8
            np.testing.assert_array_equal(bits, expected)


@pytest.mark.parametrize("isa", ISAS)
def test_special_values(isa):
    x = np.array([[0.0, -0.0, np.nan, -1e-30, 1e-30, np.inf, -np.inf]], np.float32)
    with xk.use_isa(isa):
        bits = xk.pack(x)
    # sign(0) = sign(-0) = +1; NaN is not >= 0 so it packs as -1
    assert list(xk.unpack(bits, 7)[0]) == [1, 1, -1, -1, 1, 1, -1]


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=30, deadline=None)
@given(
    m=st.one_of(st.just(1), st.integers(1, 70)),
    n=st.integers(1, 140),
    k=st.one_of(st.sampled_from(AWKWARD_K), st.integers(1, 1500)),
    out=st.sampled_from(["int32", "float", "bits"]),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**31),
)
def test_bgemm_matches_reference(isa, m, n, k, out, threads, seed):
    rng = np.random.default_rng(seed)
    a = xk.pack(signs(rng, (m, k), zeros=0.1))
    w = xk.pack(signs(rng, (n, k)))
    kw = {}
    if out == "float":
        kw = dict(scale=rng.standard_normal(n).astype(np.float32), bias=rng.standard_normal(n).astype(np.float32))
    elif out == "bits":
        kw = dict(threshold=rng.integers(-k - 1, k + 2, n).astype(np.int32), flip=rng.integers(0, 2, n).astype(np.uint8))
    with xk.use_isa(isa), xk.num_threads(threads):
        got = xk.bgemm(a, xk.pack_weights(w, k), out=out, **kw)
        assert xk.last_isa() == isa
    np.testing.assert_array_equal(got, bgemm_ref(a, w, k, out=out, **kw))


@pytest.mark.parametrize("isa", ISAS)
def test_bgemm_equals_float_matmul_large(isa):
    rng = np.random.default_rng(0)
    a = np.where(rng.random((129, 4097)) < 0.5, 1.0, -1.0).astype(np.float32)
    w = np.where(rng.random((131, 4097)) < 0.5, 1.0, -1.0).astype(np.float32)
    with xk.use_isa(isa), xk.num_threads(2):
        got = xk.bgemm(xk.pack(a), xk.pack(w), k=4097)
    np.testing.assert_array_equal(got, (a.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int32))


def test_padding_bits_of_a_are_corrected():
    """Garbage in A's padding bits must not change the result (exact correction)."""
    rng = np.random.default_rng(1)
    k = 70
    a = xk.pack(signs(rng, (5, k)))
    w = xk.pack(signs(rng, (9, k)))
    dirty = a.copy()
    dirty[:, 9:] |= rng.integers(0, 256, size=dirty[:, 9:].shape, dtype=np.uint8) & 0xC0 | 0x80
    dirty[:, 9] |= 0xC0  # bits 70, 71 of the row
    for isa in ISAS:
        with xk.use_isa(isa):
            np.testing.assert_array_equal(xk.bgemm(dirty, w, k=k), bgemm_ref(a, w, k))


def test_torch_tensors_in_and_out():
    torch = pytest.importorskip("torch")
    x = torch.randn(3, 100)
    bits = xk.pack(x)
    assert isinstance(bits, torch.Tensor) and bits.dtype == torch.uint8
    w = torch.randn(4, 100)
    d = xk.bgemm(bits, xk.pack(w), k=100)
    ref = torch.where(x >= 0, 1.0, -1.0) @ torch.where(w >= 0, 1.0, -1.0).T
    assert torch.equal(d.to(torch.float32), ref)


def test_packed_weights_serve_every_isa():
    rng = np.random.default_rng(2)
    a, w = xk.pack(signs(rng, (3, 300))), xk.pack(signs(rng, (7, 300)))
    pw = xk.pack_weights(w, 300)
    results = []
    for isa in ISAS:
        with xk.use_isa(isa):
            results.append(xk.bgemm(a, pw))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


# ----------------------------------------------------------------------------- bad input
def test_errors_are_clear():
    torch = pytest.importorskip("torch")
    a = xk.pack(np.ones((2, 64), np.float32))
    w = xk.pack(np.ones((3, 65), np.float32))
    with pytest.raises(ValueError, match="mismatched K"):
        xk.bgemm(a, w, k=65)
    with pytest.raises(TypeError, match="float32 or int8"):
        xk.pack(np.ones((2, 3), np.float64))
    with pytest.raises(ValueError, match="not C-contiguous"):
        xk.pack(np.ones((4, 6), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="not contiguous"):
        xk.pack(torch.ones(4, 6).t())
    with pytest.raises(ValueError, match="non-empty"):
        xk.pack(np.ones((0, 5), np.float32)[:0])
    with pytest.raises(ValueError, match="non-empty"):
        xk.pack(np.ones((3, 0), np.float32))
    with pytest.raises(ValueError, match="k is required"):
        xk.bgemm(a, xk.pack(np.ones((3, 64), np.float32)))
    with pytest.raises(ValueError, match="threshold"):
        xk.bgemm(a, xk.pack(np.ones((3, 64), np.float32)), k=64, out="bits")
    with pytest.raises(ValueError, match="shape \\(3,\\)"):
        xk.bgemm(a, xk.pack(np.ones((3, 64), np.float32)), k=64, out="float", scale=np.ones(2, np.float32))
    with pytest.raises(ValueError, match="out must be"):
        xk.bgemm(a, xk.pack(np.ones((3, 64), np.float32)), k=64, out="int8")
    with pytest.raises(ValueError, match="unknown ISA"):
        with xk.use_isa("sse9"):
            pass
    with pytest.raises(ValueError, match=">= 1"):
        xk.set_num_threads(0)
    with pytest.raises(ValueError, match="rows hold"):
        xk.pack_weights(np.zeros((3, 16), np.uint8), k=64)


def test_unavailable_isa_is_refused():
    missing = [i for i in xk.ISAS if i not in ISAS]
    if not missing:
        pytest.skip("every ISA is available on this machine")
    with pytest.raises(RuntimeError, match="not available"):
        with xk.use_isa(missing[0]):
            pass


def test_xk_isa_environment_variable(tmp_path):
    import subprocess
    import sys

    code = "import xnorkit.kernels as xk; print(xk.current_isa())"
    env = dict(__import__("os").environ, XK_ISA="scalar")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "scalar", out.stderr
    env["XK_ISA"] = "bogus"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown ISA 'bogus'" in out.stderr
