"""Fused sign+pack and unpack (xnorkit.kernels.gpu) against the torch reference and the CPU core."""

import pytest
import torch
from conftest import DEVICE, gpu_module

xg = gpu_module()
from xnorkit.kernels.gpu.reference import pack_ref, packed_words, unpack_ref  # noqa: E402

AWKWARD_K = [1, 2, 31, 32, 33, 63, 64, 65, 97, 130]


def _x(rows, k, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g)
    x[torch.rand(rows, k, generator=g) < 0.15] = 0.0  # sign(0) = +1 must hold
    return x.to(dtype).to(DEVICE)


@pytest.mark.parametrize("k", AWKWARD_K)
@pytest.mark.parametrize("rows", [1, 3, 10])
def test_pack_matches_reference(rows, k):
    x = _x(rows, k, seed=rows * 1000 + k)
    got = xg.pack(x)
    assert got.dtype == torch.int32 and got.shape == (rows, packed_words(k))
    assert torch.equal(got.cpu(), pack_ref(x.cpu()))


def test_pack_bit_convention_one_hot():
    # Element i negative -> exactly bit i % 32 of word i // 32; all others zero (incl. padding).
    k = 97
    x = torch.ones(k, k, device=DEVICE)
    x[torch.arange(k), torch.arange(k)] = -1.0
    words = xg.pack(x).cpu().to(torch.int64) & 0xFFFFFFFF
    for i in range(k):
        expect = [0] * packed_words(k)
        expect[i // 32] = 1 << (i % 32)
        assert words[i].tolist() == expect, i


def test_special_values():
    x = torch.tensor([[0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, -1e-45]], device=DEVICE)
    bits = int(xg.pack(x).cpu()[0, 0]) & 0xFFFFFFFF
    # +0, -0 -> +1 (bit 0); NaN -> -1 like the CPU kernels; +inf +1; -inf -1; tiny signs kept
    assert [(bits >> i) & 1 for i in range(7)] == [0, 0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int8])
def test_other_dtypes(dtype):
    x = _x(5, 70, seed=3)
    if dtype == torch.int8:
        x = (x * 50).clamp(-127, 127)
    xd = x.to(dtype)
    assert torch.equal(xg.pack(xd).cpu(), pack_ref(xd.cpu()))


def test_strided_and_batched_input():
    x = _x(65, 9, seed=4)
    xt = x.t()  # (9, 65), not contiguous
    assert torch.equal(xg.pack(xt).cpu(), pack_ref(xt.cpu().contiguous()))
    x3 = _x(6, 40, seed=5).reshape(2, 3, 40)
    assert xg.pack(x3).shape == (2, 3, 2)
    assert torch.equal(xg.pack(x3).cpu(), pack_ref(x3.cpu()))


def test_int64_words_are_a_view_of_the_same_bytes():
    x = _x(4, 130, seed=6)
    w32 = xg.pack(x)
    w64 = xg.pack(x, dtype=torch.int64)
    assert w64.dtype == torch.int64 and w64.shape == (4, 3)  # 130 bits -> 3 x 64-bit words
    assert torch.equal(w64.view(torch.int32).cpu(), w32.cpu())


def test_same_bytes_as_cpu_core():
    xk = pytest.importorskip("xnorkit.kernels", reason="CPU core (xnorkit._core) not built")
    x = _x(7, 97, seed=7)
    gpu_bytes = xg.pack(x).cpu().view(torch.uint8).numpy()
    cpu_bytes = xk.pack(x.cpu().numpy())
    assert (gpu_bytes == cpu_bytes).all()


@pytest.mark.parametrize("k", [1, 63, 64, 65, 97])
def test_unpack_roundtrip(k):
    x = _x(6, k, seed=k)
    back = xg.unpack(xg.pack(x), k)
    assert back.dtype == torch.float32 and back.shape == (6, k)
    assert torch.equal(back.cpu(), xg.sign(x).float().cpu())
    assert torch.equal(back.cpu(), unpack_ref(pack_ref(x.cpu()), k))
    as_i8 = xg.unpack(xg.pack(x), k, dtype=torch.int8)
    assert torch.equal(as_i8.cpu().float(), back.cpu())


def test_bad_input_errors():
    with pytest.raises(ValueError, match="non-empty"):
        xg.pack(torch.empty(0, 5, device=DEVICE))
    with pytest.raises(ValueError, match="non-empty"):
        xg.pack(torch.tensor(1.0, device=DEVICE))
    with pytest.raises(TypeError, match="expected one of"):
        xg.pack(torch.ones(2, 3, dtype=torch.int16, device=DEVICE))
    with pytest.raises(TypeError, match="torch.Tensor"):
        xg.pack([[1.0, -1.0]])
    with pytest.raises(ValueError, match="dtype must be"):
        xg.pack(torch.ones(2, 3, device=DEVICE), dtype=torch.int16)
    bits = xg.pack(torch.ones(2, 40, device=DEVICE))
    with pytest.raises(ValueError, match="do not fit"):
        xg.unpack(bits, 65)
    with pytest.raises(ValueError, match="k must be >= 1"):
        xg.unpack(bits, 0)


@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 3, 2, 1), (1, 0, 2, 3), (3, 2, 1, 0)])
def test_permuted_views_pack_like_their_copies(perm):
    # e.g. NCHW read as NHWC rows (channels along K): packed straight from the strided view.
    x = _x(2 * 5 * 4, 3, seed=11).reshape(2, 3, 5, 4)
    v = x.permute(*perm)
    assert torch.equal(xg.pack(v).cpu(), pack_ref(v.contiguous().cpu()))
    assert torch.equal(xg.pack(v[:, 1:]).cpu(), pack_ref(v[:, 1:].contiguous().cpu()))
