"""GPU-kernel tests: on a machine without a CUDA GPU they run the Triton kernels in Triton's
interpreter (TRITON_INTERPRET=1, set here before anything imports Triton) on CPU tensors;
without Triton they are skipped."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# CPU tensors in interpreter mode, CUDA tensors on a GPU.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def device():
    return DEVICE


def gpu_module():
    """Import xnorkit.kernels.gpu or skip the calling module with the reason."""
    pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")
    xg = pytest.importorskip("xnorkit.kernels.gpu")
    if not xg.available():
        pytest.skip(f"GPU kernels unavailable: {xg.unavailable_reason()}")
    return xg
