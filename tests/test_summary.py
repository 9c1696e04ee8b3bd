"""Tests of xnorkit.summary."""

import pytest
import torch
from torch import nn

from xnorkit import nn as xnn
from xnorkit.quantizers import QUANTIZERS, CallableQuantizer, get_quantizer
from xnorkit.summary import ModelSummary, summary


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_model():
    return nn.Sequential(
        xnn.QuantConv2d(1, 8, 3, padding="same", weight_quantizer="ste_sign", bias=False),
        nn.BatchNorm2d(8),
        nn.Flatten(),
        xnn.QuantLinear(8 * 4 * 4, 10, input_quantizer="ste_sign", weight_quantizer="ste_sign"),
        xnn.QuantLinear(10, 4, input_quantizer="ste_sign", weight_quantizer="magnitude_aware_sign",
                        output_scale=True, bias=False),
        nn.Linear(4, 3),
    )


def test_rows_and_totals():
    model = small_model()
    printed = []
    s = summary(model, (2, 1, 4, 4), print_fn=printed.append)
    assert isinstance(s, ModelSummary)
    assert [r.name for r in s.rows] == ["0", "1", "2", "3", "4", "5"]
    assert [r.type for r in s.rows] == ["QuantConv2d", "BatchNorm2d", "Flatten", "QuantLinear",
                                        "QuantLinear", "Linear"]
    assert [r.precision for r in s.rows] == ["32/1", "-", "-", "1/1", "1/1", "32/32"]
    assert [r.output_shape for r in s.rows] == [(2, 8, 4, 4), (2, 8, 4, 4), (2, 128), (2, 10),
                                                (2, 4), (2, 3)]
    # MACs per example
    assert [r.float_macs for r in s.rows] == [8 * 16 * 9, 0, 0, 0, 0, 12]
    assert [r.binary_macs for r in s.rows] == [0, 0, 0, 1280, 40, 0]
    assert [r.params for r in s.rows] == [72, 16, 0, 1290, 41, 15]
    # memory: binary weights at 1 bit, alpha per channel (4 x 32 bits), everything else 32 bits
    assert [r.memory_bytes for r in s.rows] == [9, 64, 0, (1280 + 320) / 8, (40 + 128 + 32) / 8, 60]
    t = s.totals
    assert t.params == 72 + 16 + 1290 + 41 + 15 == t.trainable_params
    assert t.binary_params == 72 + 1280 + 40
    assert (t.binary_macs, t.float_macs) == (1320, 1164)
    assert t.float_size_bytes == 4 * t.params
    assert t.deployed_size_bytes == sum(r.memory_bytes for r in s.rows)
    assert t.compression_ratio == pytest.approx(t.float_size_bytes / t.deployed_size_bytes)
    assert len(printed) == 1 and "QuantLinear" in printed[0] and "Compression ratio" in printed[0]
    assert "1/1" in str(s) and "32/1" in str(s)


def test_modes_restored_and_no_grad_side_effects():
    model = small_model()
    model.train()
    model[1].eval()
    before = model[1].running_mean.clone()
    summary(model, (1, 1, 4, 4), print_fn=None)
    assert model.training and not model[1].training and model[0].training
    assert torch.equal(model[1].running_mean, before)
    assert all(p.grad is None for p in model.parameters())
    assert not model[0]._forward_hooks  # hooks removed


def test_shared_layer_counted_once_in_totals():
    shared = xnn.QuantLinear(5, 5, input_quantizer="ste_sign", weight_quantizer="ste_sign", bias=False)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = shared

        def forward(self, x):
            return self.f(self.f(x))

    s = summary(Twice(), (1, 5), print_fn=None)
    assert [r.name for r in s.rows] == ["f", "f"]
    assert s.totals.binary_macs == 50 and s.totals.params == 25
    assert s.totals.deployed_size_bytes == 25 / 8


def test_undeclared_quantizer_and_plain_layers():
    model = nn.Sequential(xnn.QuantLinear(3, 2, weight_quantizer=CallableQuantizer(torch.sign)),
                          nn.ReLU())
    s = summary(model, (1, 3), print_fn=None)
    assert s.rows[0].precision == "?/?" and s.rows[0].float_macs == 6
    assert s.rows[1].precision == "-" and s.rows[1].params == 0
    assert s.totals.compression_ratio == 1.0


def test_single_layer_root_and_dorefa_bits():
    layer = xnn.QuantConv1d(2, 4, 3, act_bit=2, weight_bit=4, bias=False)
    s = summary(layer, (1, 2, 10), print_fn=None)
    (row,) = s.rows
    assert row.name == "" and row.precision == "2/4" and row.float_macs == 4 * 8 * 6
    assert row.memory_bytes == 24 * 4 / 8
    assert "(root)" in s.table()


def test_errors():
    with pytest.raises(ValueError, match="input_shape must be a non-empty sequence of positive ints"):
        summary(nn.Linear(2, 2), (0, 2), print_fn=None)
    with pytest.raises(ValueError, match="input_shape"):
        summary(nn.Linear(2, 2), "2x2", print_fn=None)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        summary(lambda x: x, (1, 2), print_fn=None)


def test_package_attribute_is_callable_in_any_import_order():
    import xnorkit
    import xnorkit.summary as mod  # binds xnorkit.summary to the module

    s = xnorkit.summary(nn.Linear(3, 2), (1, 3), print_fn=None)
    assert isinstance(s, ModelSummary) and s.totals.params == 8
    assert mod.summary is summary


@pytest.mark.parametrize("alias", sorted(QUANTIZERS))
def test_every_registered_quantizer_gets_a_summary_row(alias):
    bits = get_quantizer(alias).precision
    layer = xnn.QuantLinear(8, 4, input_quantizer=alias, weight_quantizer=alias, bias=False)
    (row,) = summary(layer, (2, 8), print_fn=None).rows
    assert (row.input_bits, row.weight_bits, row.precision) == (bits, bits, f"{bits}/{bits}")
    binary = bits == 1
    assert (row.binary_macs, row.float_macs) == ((32, 0) if binary else (0, 32))
    extra = 32 * 4 if get_quantizer(alias).scale_mode == "per_channel_mean_abs" else 0
    assert row.memory_bytes == (32 * bits + extra) / 8
