"""Binary GEMM (xnorkit.kernels.gpu.bgemm) bit-exact against the torch reference, the float
product of the signs and the CPU core: K in {1, 63, 64, 65, 97, ...}, odd M/N, M = 1, several
tilings, all three epilogues, garbage in the padding bits, and bad input."""

import pytest
import torch
from conftest import DEVICE, gpu_module
from hypothesis import given, settings, strategies as st

xg = gpu_module()
from xnorkit.kernels.gpu.reference import bgemm_ref, pack_ref  # noqa: E402

SHAPES = [  # (m, n, k)
    (1, 1, 1), (1, 40, 97), (3, 5, 63), (7, 33, 64), (17, 9, 65), (33, 31, 97), (5, 64, 128), (2, 3, 200),
]
# Small tiles so several tiles, K steps and partial slabs run; GROUP_M varies the tile order.
CONFIGS = [
    dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=4, GROUP_M=4),
    dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=2, GROUP_M=1),
    dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=1, GROUP_M=2),
]


def _pm1(rows, k, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g)
    x[torch.rand(rows, k, generator=g) < 0.1] = 0.0
    return x.to(DEVICE)


def _float_dot(a, b):
    return (xg.sign(a).double() @ xg.sign(b).double().T).round().to(torch.int32)


def _run(a_bits, b_bits, k, config, **kw):
    out = kw.pop("out", "int32")
    kinds = {"int32": 0, "float": 1, "bits": 2}
    cols = lambda v, dt: None if v is None else torch.as_tensor(v).to(DEVICE, dt)  # noqa: E731
    return xg._run_triton(
        a_bits, b_bits, k, kinds[out], cols(kw.get("scale"), torch.float32), cols(kw.get("bias"), torch.float32),
        cols(kw.get("threshold"), torch.int32), cols(kw.get("flip"), torch.int32), config=config,
    )


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_bgemm_int32_matches_float_product(m, n, k):
    a, b = _pm1(m, k, m * 7 + k), _pm1(n, k, n * 13 + k + 1)
    c = xg.bgemm(xg.pack(a), xg.pack(b), k)
    assert c.dtype == torch.int32 and c.shape == (m, n)
    assert torch.equal(c.cpu(), _float_dot(a, b).cpu())
    assert xg.last_backend() in xg.BACKENDS


@pytest.mark.parametrize("config", CONFIGS, ids=["bk4", "bk2-g1", "bk1"])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (3, 5, 63), (17, 9, 65), (33, 70, 97), (20, 40, 300)])
def test_tilings(config, m, n, k):
    a, b = _pm1(m, k, k), _pm1(n, k, k + 99)
    assert torch.equal(_run(xg.pack(a), xg.pack(b), k, config).cpu(), _float_dot(a, b).cpu())


@pytest.mark.parametrize("config", CONFIGS[:2], ids=["bk4", "bk2-g1"])
def test_padding_bits_are_ignored(config):
    # Garbage in the padding bits of both operands (and k shorter than the rows) must not change
    # anything: the kernels mask bits past k, they do not assume zero padding.
    m, n, k = 9, 35, 65
    a, b = _pm1(m, k, 1), _pm1(n, k, 2)
    pa, pb = xg.pack(a), xg.pack(b)
    ref = _float_dot(a, b).cpu()
    g = torch.Generator().manual_seed(3)
    junk_a = torch.randint(-(2**31), 2**31 - 1, pa.shape, generator=g, dtype=torch.int32).to(DEVICE)
    junk_b = torch.randint(-(2**31), 2**31 - 1, pb.shape, generator=g, dtype=torch.int32).to(DEVICE)
    keep = torch.tensor([-1, -1, 1, 0], dtype=torch.int32, device=DEVICE)  # bit 64 is element 64
    dirty_a = (pa & keep) | (junk_a & ~keep)
    dirty_b = (pb & keep) | (junk_b & ~keep)
    assert not torch.equal(dirty_a, pa)
    assert torch.equal(_run(dirty_a, dirty_b, k, config).cpu(), ref)
    # A prefix of the bits: k = 40 of the same rows.
    assert torch.equal(_run(pa, pb, 40, config).cpu(), _float_dot(a[:, :40], b[:, :40]).cpu())


def test_word_types_and_cpu_layout_accepted():
    m, n, k = 4, 6, 130
    a, b = _pm1(m, k, 5), _pm1(n, k, 6)
    ref = _float_dot(a, b).cpu()
    as64 = xg.bgemm(xg.pack(a, dtype=torch.int64), xg.pack(b, dtype=torch.int64), k)
    as8 = xg.bgemm(xg.pack(a).view(torch.uint8), xg.pack(b).view(torch.uint8), k)
    assert torch.equal(as64.cpu(), ref) and torch.equal(as8.cpu(), ref)


def test_matches_cpu_core():
    xk = pytest.importorskip("xnorkit.kernels", reason="CPU core (xnorkit._core) not built")
    m, n, k = 11, 13, 97
    a, b = _pm1(m, k, 8), _pm1(n, k, 9)
    cpu = xk.bgemm(xk.pack(a.cpu().numpy()), xk.pack(b.cpu().numpy()), k)
    gpu = xg.bgemm(xg.pack(a), xg.pack(b), k)
    assert (gpu.cpu().numpy() == cpu).all()


@pytest.mark.parametrize("config", CONFIGS[:2], ids=["bk4", "bk2-g1"])
@pytest.mark.parametrize("m,n,k", [(1, 7, 63), (10, 33, 65)])
def test_float_epilogue(config, m, n, k):
    a, b = _pm1(m, k, 10), _pm1(n, k, 11)
    pa, pb = xg.pack(a), xg.pack(b)
    g = torch.Generator().manual_seed(12)
    scale = torch.rand(n, generator=g) * 0.3 - 0.1
    bias = torch.randn(n, generator=g)
    ref = bgemm_ref(pa.cpu(), pb.cpu(), k, out="float", scale=scale, bias=bias)
    got = _run(pa, pb, k, config, out="float", scale=scale, bias=bias).cpu()
    assert got.dtype == torch.float32
    if DEVICE == "cpu":  # interpreter: two roundings, exactly as the reference and the CPU core
        assert torch.equal(got, ref)
    else:  # the GPU compiler may contract to one FMA: within 1 ulp
        assert torch.allclose(got, ref, rtol=2e-7, atol=1e-6)
    only_scale = xg.bgemm(pa, pb, k, out="float", scale=scale).cpu()
    assert torch.equal(only_scale, _float_dot(a, b).cpu().float() * scale)
    plain = xg.bgemm(pa, pb, k, out="float").cpu()
    assert torch.equal(plain, _float_dot(a, b).cpu().float())


@pytest.mark.parametrize("config", CONFIGS, ids=["bk4", "bk2-g1", "bk1"])
@pytest.mark.parametrize("n", [1, 31, 33, 70])
def test_bits_epilogue(config, n):
    m, k = 9, 65
    a, b = _pm1(m, k, 20 + n), _pm1(n, k, 21 + n)
    pa, pb = xg.pack(a), xg.pack(b)
    g = torch.Generator().manual_seed(n)
    thr = torch.randint(-8, 9, (n,), generator=g, dtype=torch.int32)
    flip = torch.randint(0, 2, (n,), generator=g, dtype=torch.int32)
    ref = bgemm_ref(pa.cpu(), pb.cpu(), k, out="bits", threshold=thr, flip=flip)
    got = _run(pa, pb, k, config, out="bits", threshold=thr, flip=flip).cpu()
    assert got.shape == (m, 2 * ((n + 63) // 64))
    assert torch.equal(got, ref)
    # Without flip: bit = dot < threshold.
    got_nf = xg.bgemm(pa, pb, k, out="bits", threshold=thr).cpu()
    assert torch.equal(got_nf, pack_ref(torch.where(_float_dot(a, b).cpu() < thr, -1.0, 1.0)))


@settings(max_examples=12, deadline=None)
@given(
    m=st.integers(1, 24), n=st.integers(1, 40),
    k=st.one_of(st.sampled_from([1, 63, 64, 65, 97, 127, 129]), st.integers(1, 260)),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_shapes(m, n, k, seed):
    a, b = _pm1(m, k, seed), _pm1(n, k, seed + 1)
    assert torch.equal(xg.bgemm(xg.pack(a), xg.pack(b), k).cpu(), _float_dot(a, b).cpu())


def test_bad_input_errors():
    a = xg.pack(torch.ones(3, 70, device=DEVICE))
    b = xg.pack(torch.ones(4, 70, device=DEVICE))
    b_short = xg.pack(torch.ones(4, 20, device=DEVICE))
    with pytest.raises(ValueError, match="mismatched K"):
        xg.bgemm(a, b_short, 20)
    with pytest.raises(ValueError, match="do not fit"):
        xg.bgemm(a, b, 129)
    with pytest.raises(ValueError, match="k must be >= 1"):
        xg.bgemm(a, b, 0)
    with pytest.raises(ValueError, match="out must be one of"):
        xg.bgemm(a, b, 70, out="half")
    with pytest.raises(ValueError, match="only apply to out=\"float\""):
        xg.bgemm(a, b, 70, scale=torch.ones(4))
    with pytest.raises(ValueError, match="needs threshold"):
        xg.bgemm(a, b, 70, out="bits")
    with pytest.raises(ValueError, match="threshold/flip only apply"):
        xg.bgemm(a, b, 70, out="float", threshold=torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        xg.bgemm(a, b, 70, out="float", scale=torch.ones(5))
    with pytest.raises(ValueError, match="2-D packed rows"):
        xg.bgemm(a[None], b, 70)
    with pytest.raises(TypeError, match="int32, int64 or uint8"):
        xg.bgemm(a.float(), b, 70)
    with pytest.raises(ValueError, match="multiple of 4 bytes"):
        xg.bgemm(a.view(torch.uint8)[:, :6], b.view(torch.uint8)[:, :6], 40)
    with pytest.raises(ValueError, match="unknown backend"):
        xg.bgemm(a, b, 70, backend="cublas")
    with pytest.raises(ValueError, match="unknown backend"):
        with xg.use_backend("nope"):
            pass


@pytest.mark.skipif(DEVICE != "cpu", reason="interpreter-mode behaviour")
def test_interpreter_refuses_gpu_only_backends():
    a = xg.pack(torch.ones(20, 70))
    for name in ("mma_b1", "int8_tc"):
        with pytest.raises(RuntimeError, match="not available here"):
            xg.bgemm(a, a, 70, backend=name)
    assert xg.backends() == ["triton"]


# ----------------------------------------------------------------------------- GPU only
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k", [(1, 4096, 4096), (256, 1000, 4097), (777, 333, 1000), (2048, 2048, 2048)])
def test_gpu_all_backends_bit_identical(m, n, k):
    a = torch.randn(m, k, device="cuda")
    b = torch.randn(n, k, device="cuda")
    ref = (xg.sign(a).double() @ xg.sign(b).double().T).round().int()
    pa, pb = xg.pack(a), xg.pack(b)
    for name in xg.backends():
        if name == "int8_tc" and m <= 16:
            continue
        assert torch.equal(xg.bgemm(pa, pb, k, backend=name), ref), name
    assert torch.equal(xg.bgemm(pa, pb, k), ref)  # auto
