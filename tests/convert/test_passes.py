"""Golden before/after tests, one per pass (the LCE converter's per-pass FileCheck tests, as
textual IR dumps): a tiny model is traced, the pipeline runs up to the pass, and the IR before
and after the pass must equal tests/convert/golden/<pass>.txt. Regenerate after an intended
change with ``XNORKIT_UPDATE_GOLDEN=1 pytest tests/convert/test_passes.py`` and review the diff.
Each test also asserts the property the pass exists for."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import xnorkit.nn as xnn
from xnorkit.convert import ConvertOptions, run_passes, trace
from xnorkit.convert.ir import ConversionError
from xnorkit.convert.passes import PASSES, get_pass
from xnorkit.convert.pipeline import PIPELINE

GOLDEN = Path(__file__).parent / "golden"
BIN = dict(input_quantizer="ste_sign", weight_quantizer="ste_sign")


def _fill(model: nn.Module, seed: int) -> nn.Module:
    """Deterministic small weights and BN statistics (numpy RNG, so the dumps are stable)."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            p.copy_(torch.from_numpy(np.round(rng.normal(size=tuple(p.shape)), 2).astype(np.float32)))
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.from_numpy(np.round(rng.normal(size=c) * 2, 2).astype(np.float32)))
                m.running_var.copy_(torch.from_numpy(np.round(rng.uniform(0.5, 2, c), 2).astype(np.float32)))
                if m.weight is not None and c >= 2:
                    m.weight[0] = 0.0
                    m.weight[1] = -abs(float(m.weight[1])) - 0.5
    return model.eval()


def models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
        xnn.QuantConv2d(3, 4, 3, padding=1, bias=False, **BIN), nn.MaxPool2d(2), nn.BatchNorm2d(4),
        xnn.QuantConv2d(4, 2, 3, padding=1, pad_value=1.0, **BIN), nn.BatchNorm2d(2), nn.Flatten(),
        xnn.QuantLinear(8, 3, **BIN), nn.BatchNorm1d(3))
    float_head = nn.Sequential(nn.Conv2d(1, 2, 1), nn.MaxPool2d(2), nn.BatchNorm2d(2),
                               xnn.QuantConv2d(2, 2, 1, bias=False, **BIN), nn.Flatten(), nn.Linear(8, 2))

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = xnn.QuantConv2d(2, 2, 1, bias=True, **BIN)
            self.b = xnn.QuantConv2d(2, 2, 1, bias=False, **BIN)
            self.bn = nn.BatchNorm2d(2)
            self.act = nn.Hardtanh()
            self.bn2 = nn.BatchNorm2d(2)
            self.act2 = nn.ReLU()

        def forward(self, x):  # two activations in one chain: legalize_stages must split it
            return self.act2(self.bn2(self.act(self.bn(self.a(x))))) + self.b(x)

    return {
        "cnn": (_fill(cnn, 1), torch.zeros(1, 2, 4, 4)),
        "float_head": (_fill(float_head, 2), torch.zeros(1, 1, 4, 4)),
        "twice": (_fill(Twice(), 3), torch.zeros(1, 2, 2, 2)),
    }


CASES = {
    "fuse_output_stage": "cnn",
    "fold_thresholds": "cnn",
    "fold_float_sign": "float_head",
    "flatten_order": "float_head",
    "quantize_int8": "float_head",
    "legalize_stages": "twice",
    "bitpack_weights": "cnn",
    "cleanup": "twice",
    "plan_memory": "cnn",
}


def before_after(pass_name: str, model_name: str):
    model, x = models()[model_name]
    opts = ConvertOptions(precision="auto", ranges={"0": (-1.5, 2.0)})
    g = trace(model, x)
    g = run_passes(g, opts, PIPELINE[: PIPELINE.index(pass_name)])
    before = g.copy()
    after = get_pass(pass_name).run(g, opts)
    after.validate()
    return before, after


def check_golden(pass_name: str, before, after) -> None:
    text = f"# pass {pass_name}\n## before\n{before.dump()}## after\n{after.dump()}"
    path = GOLDEN / f"{pass_name}.txt"
    if os.environ.get("XNORKIT_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing; run with XNORKIT_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"IR after {pass_name} differs from {path}"


def test_every_pass_has_a_golden_case():
    assert set(CASES) == set(PASSES) == set(PIPELINE)


@pytest.mark.parametrize("pass_name", list(CASES))
def test_pass_golden(pass_name):
    before, after = before_after(pass_name, CASES[pass_name])
    check_golden(pass_name, before, after)
    ops_before = [n.op for n in before.nodes]
    ops_after = [n.op for n in after.nodes]
    if pass_name == "fuse_output_stage":
        assert "channelwise" in ops_before and ops_after.count("channelwise") < ops_before.count("channelwise")
        conv = next(n for n in after.nodes if n.op == "conv2d")
        assert [s.kind for s in conv.steps] == ["bn", "act"]
    elif pass_name == "fold_thresholds":
        assert ops_after.count("sign") == ops_before.count("sign") - 2 == 1  # the first follows a float conv
        binary = [n for n in after.nodes if n.op in ("bconv2d", "bdense")]
        assert [n.output.dtype for n in binary] == ["bits", "bits", "f32"]
        pool = next(n for n in after.nodes if n.op == "maxpool2d")
        assert pool.output.dtype == "bits" and pool.params["invert"].tolist() == binary[0].params["flip"].astype(bool).tolist()
        assert binary[0].params["threshold"][0] == np.iinfo(np.int32).min  # gamma 0 -> constant channel
    elif pass_name == "fold_float_sign":
        sign = next(n for n in after.nodes if n.op == "sign")
        assert "threshold" in sign.params and "channelwise" not in ops_after
    elif pass_name == "flatten_order":
        f = next(n for n in after.nodes if n.op == "flatten")
        assert f.attrs["order"] == 0
        d_before = next(n for n in before.nodes if n.op == "dense").params["weight"]
        d_after = next(n for n in after.nodes if n.op == "dense").params["weight"]
        # HWC column (s, c) of the new weights is CHW column (c, s) of the old ones
        np.testing.assert_array_equal(d_after.reshape(2, 4, 2), d_before.reshape(2, 2, 4).transpose(0, 2, 1))
    elif pass_name == "quantize_int8":
        conv = next(n for n in after.nodes if n.op == "conv2d")
        dense = next(n for n in after.nodes if n.op == "dense")
        assert conv.attrs["precision"] == "i8" and conv.params["weight"].dtype == np.int8
        assert dense.attrs.get("precision", "f32") == "f32"  # no calibration range recorded for it
        assert -128 <= conv.attrs["in_zero_point"] <= 127
    elif pass_name == "legalize_stages":
        assert "channelwise" not in ops_after and all(not n.steps for n in after.nodes)
        assert ops_after.count("activation") == 1  # the second activation of the chain
        a = next(n for n in after.nodes if n.name == "a")
        assert a.attrs["act"] == "hardtanh" and "post_scale" in a.params
    elif pass_name == "bitpack_weights":
        for n in after.nodes:
            if n.op in ("bconv2d", "bdense"):
                assert n.params["weight"].dtype == np.uint8 and n.params["weight"].shape[1] % 8 == 0
    elif pass_name == "cleanup":
        assert ops_after.count("sign") == 1 < ops_before.count("sign")
    elif pass_name == "plan_memory":
        life = get_pass("plan_memory").lifetimes(after)
        items = list(after.arena.items())
        for i, (va, (oa, sa)) in enumerate(items):
            assert oa % 64 == 0 and oa + sa <= after.arena_size
            for vb, (ob, sb) in items[i + 1:]:
                (fa, la), (fb, lb) = life[va], life[vb]
                if fa <= lb and fb <= la:
                    assert oa + sa <= ob or ob + sb <= oa, (va.name, vb.name)
        assert after.arena_size < sum(s for _, s in after.arena.values())  # memory is reused


def test_unknown_pass_name():
    with pytest.raises(KeyError, match="known: fuse_output_stage"):
        get_pass("fold_everything")


def test_bits_flatten_into_non_dense_is_an_error():
    """fold_thresholds only moves a flatten to bits when the dense consumers can be permuted."""
    model = _fill(nn.Sequential(xnn.QuantConv2d(2, 2, 1, bias=False, **BIN), nn.BatchNorm2d(2), nn.Flatten(),
                                xnn.QuantLinear(8, 2, **BIN)), 4)
    g = run_passes(trace(model, torch.zeros(1, 2, 2, 2)), ConvertOptions(precision="float"))
    assert [n.op for n in g.nodes] == ["sign", "bconv2d", "flatten", "bdense"]
    assert g.nodes[2].output.dtype == "bits" and g.nodes[2].attrs["order"] == 0
    with pytest.raises(ConversionError, match="int8 needs the calibrated range"):
        run_passes(trace(nn.Sequential(nn.Linear(3, 2)), torch.zeros(1, 3)), ConvertOptions(precision="int8"))


def test_plan_keeps_fusable_conv_input_apart_from_the_add():
    """The engine fuses a binary conv with float output into the residual add that reads it
    (csrc/runtime/model.c, plan_fusion): the plan must not give the add's output the conv's input
    memory, which a plain lifetime plan would (the input is dead once the conv ran)."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.convs = nn.ModuleList(xnn.QuantConv2d(16, 16, 3, padding=1, bias=False, **BIN) for _ in range(3))
            self.bns = nn.ModuleList(nn.BatchNorm2d(16) for _ in range(3))

        def forward(self, x):
            x = self.stem(x)
            for conv, bn in zip(self.convs, self.bns):
                x = x + bn(conv(x))
            return x

    g = trace(_fill(Block(), 4).eval(), torch.zeros(1, 3, 8, 8))
    g = run_passes(g, ConvertOptions(precision="float"), PIPELINE)
    plan = get_pass("plan_memory")
    pairs = [(g.nodes[i], g.nodes[i + 1]) for i in range(len(g.nodes) - 1) if plan.fusable_add(g, i)]
    assert len(pairs) == 3
    for conv, add in pairs:
        (oi, si), (oy, sy) = g.arena[conv.inputs[0]], g.arena[add.output]
        assert oi + si <= oy or oy + sy <= oi, (conv.name, add.name)
