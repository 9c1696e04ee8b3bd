"""Batch transforms and the deterministic, resumable, rank-split loader."""

from __future__ import annotations

import pytest
import torch

from xnorkit.data import (
    ArrayDataset,
    BatchLoader,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    get_preprocess,
    seeded_generator,
    split_validation,
)


def _ds(n=50, c=3, h=8, w=8):
    images = torch.arange(n * c * h * w, dtype=torch.int64).remainder(256).to(torch.uint8)
    return ArrayDataset("toy", "train", images.reshape(n, c, h, w), torch.arange(n) % 10,
                        tuple(str(i) for i in range(10)))


def test_normalize():
    x = torch.tensor([[[[0, 255, 127]]]], dtype=torch.uint8)
    assert torch.allclose(Normalize("pm1")(x), torch.tensor([[[[-1.0, 1.0, 127 / 127.5 - 1]]]]))
    assert torch.allclose(Normalize("unit")(x), torch.tensor([[[[0.0, 1.0, 127 / 255]]]]))
    with pytest.raises(ValueError, match="'pm1' or 'unit'"):
        Normalize("zscore")


def test_random_crop_matches_per_sample_reference():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = RandomCrop(32, padding=4)(x, seeded_generator(3))
    # Recompute the offsets from the same generator stream and crop sample by sample.
    g = seeded_generator(3)
    oy = torch.randint(0, 9, (64,), generator=g)
    ox = torch.randint(0, 9, (64,), generator=g)
    padded = torch.zeros(64, 3, 40, 40, dtype=torch.uint8)
    padded[:, :, 4:36, 4:36] = x
    for i in range(64):
        ref = padded[i, :, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
        assert torch.equal(out[i], ref)
    assert out.dtype == torch.uint8
    # Offsets cover the range, including the unshifted crop, and zero fill appears.
    assert (oy == 4).any() or (ox == 4).any()
    assert (out == 0).any()


def test_flip_flips_about_half_and_exactly():
    x = torch.randint(0, 256, (400, 1, 4, 5), dtype=torch.uint8)
    out = RandomHorizontalFlip(0.5)(x, seeded_generator(1))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((flipped | same).all())
    assert 150 < int((flipped & ~same).sum()) < 250


def test_resize_and_flip_recipe():
    pre = get_preprocess("cifar10", "resize_and_flip")
    x = torch.full((8, 3, 32, 32), 255, dtype=torch.uint8)
    out = pre.train(x, seeded_generator(0))
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32
    assert set(out.unique().tolist()) <= {-1.0, 1.0}  # padding is pixel 0 -> -1
    assert torch.equal(pre.eval(x, None), torch.ones(8, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown preprocessing 'resize_and_flip' for dataset 'mnist'"):
        get_preprocess("mnist", "resize_and_flip")
    assert "random_shift" in __import__("xnorkit.data", fromlist=["x"]).list_preprocess("mnist")


def test_loader_is_deterministic_and_resumable():
    ds = _ds(h=32, w=32)
    pre = get_preprocess("cifar10", "resize_and_flip")
    loader = BatchLoader(ds, 8, pre.train, shuffle=True, drop_last=True, seed=5)
    assert len(loader) == 6
    full = list(loader.epoch(2))
    resumed = list(loader.epoch(2, start=3))
    assert len(resumed) == 3
    for (xa, ya), (xb, yb) in zip(full[3:], resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_epoch = list(loader.epoch(3))
    assert not torch.equal(full[0][1], other_epoch[0][1])
    seen = torch.cat([y for _, y in full])
    assert len(seen) == 48 and len(set(loader.order(2)[:48].tolist())) == 48


def test_loader_rank_split_unions_to_the_global_batch():
    ds = _ds(n=40)
    norm = Normalize("unit")
    single = BatchLoader(ds, 10, norm, shuffle=True, drop_last=True, seed=1)
    ranks = [BatchLoader(ds, 10, norm, shuffle=True, drop_last=True, seed=1, rank=r, world_size=2)
             for r in range(2)]
    for (x, y), (x0, y0), (x1, y1) in zip(single.epoch(0), ranks[0].epoch(0), ranks[1].epoch(0)):
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)
        assert len(y0) == len(y1) == 5
    with pytest.raises(ValueError, match="batch_size 9 is not divisible by the 2"):
        BatchLoader(ds, 9, norm, shuffle=True, drop_last=True, world_size=2)


def test_eval_loader_keeps_the_tail():
    ds = _ds(n=25)
    loader = BatchLoader(ds, 10, Normalize(), shuffle=False, drop_last=False)
    ys = [y for _, y in loader.epoch(0)]
    assert [len(y) for y in ys] == [10, 10, 5]
    assert torch.equal(torch.cat(ys), ds.labels)


def test_subset_and_validation_split():
    ds = _ds(n=50)
    sub = ds.subset(20)
    assert len(sub) == 20 and sub.labels.bincount().tolist() == [2] * 10
    tr, val = split_validation(ds, 10)
    assert len(tr) == 40 and len(val) == 10 and val.split == "validation"
    assert torch.equal(val.labels, ds.labels[40:])
    with pytest.raises(ValueError, match="validation size must be in 1..49"):
        split_validation(ds, 50)


def test_shift_recipes_keep_size_and_content():
    x = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    for name in ("random_shift", "shift_and_flip"):
        out = get_preprocess("mnist", name).train(x, seeded_generator(4))
        assert out.shape == (300, 1, 28, 28) and out.dtype == torch.float32
    # random_shift never mirrors: every output equals some shift of its input.
    out = get_preprocess("mnist", "random_shift").train(x, seeded_generator(4))
    padded = torch.full((300, 1, 32, 32), -1.0)
    padded[:, :, 2:30, 2:30] = x.float() / 127.5 - 1
    shifts = [padded[:, :, dy:dy + 28, dx:dx + 28] for dy in range(5) for dx in range(5)]
    match = torch.stack([(out == s).flatten(1).all(1) for s in shifts]).any(0)
    assert bool(match.all())
    with pytest.raises(ValueError, match="square images"):
        get_preprocess("mnist", "random_shift").train(x[:, :, :, :20], seeded_generator(0))
