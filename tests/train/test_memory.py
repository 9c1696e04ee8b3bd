"""glibc allocator settings for CPU training (xnorkit.train.memory)."""

import platform
import resource

import pytest
import torch

from xnorkit.train import memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _faults_per_round(n=12):
    """Minor page faults taken by each of n rounds of allocating, touching and freeing 3 x 4 MiB."""
    def step():
        ts = [torch.ones(1024, 1024) for _ in range(3)]
        return float(sum(t.sum() for t in ts))

    out = []
    for _ in range(n):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return out


@pytest.mark.skipif(not GLIBC, reason="mallopt settings exist on glibc only (elsewhere nothing is changed)")
def test_freed_tensors_are_reused_without_page_faults():
    got = memory.keep_freed_memory()
    assert got == {"mmap_threshold": 32 << 20, "trim_threshold": 512 << 20}
    assert memory.applied() == got
    # once the heap has grown to its working size, the blocks are reused: 6 rounds x 12 MiB
    # would be ~18k faults if every block came back from the kernel fresh
    rounds = _faults_per_round()
    assert sum(rounds[-6:]) < 300, rounds


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="mmap_threshold must be in 1..2\\*\\*31-1"):
        memory.keep_freed_memory(mmap_threshold=1 << 40)
    with pytest.raises(ValueError, match="trim_threshold"):
        memory.keep_freed_memory(trim_threshold=0)


@pytest.mark.parametrize("value,enabled", [(None, True), ("1", True), ("0", False), ("off", False), ("No", False)])
def test_tuning_switch(monkeypatch, value, enabled):
    if value is None:
        monkeypatch.delenv("XNORKIT_MALLOC_TUNING", raising=False)
    else:
        monkeypatch.setenv("XNORKIT_MALLOC_TUNING", value)
    assert memory.tuning_enabled() is enabled
