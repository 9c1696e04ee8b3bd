"""The model registry: names, lookup errors, registration rules."""

from __future__ import annotations

import pytest
from torch import nn

from xnorkit.models import _registry, get_model, list_models, model_entrypoint, register_model

EXPECTED = {
    "binarynet_mlp", "binarynet", "binarynet_batch", "binarynet_layernorm", "xnornet", "birealnet18",
    "binary_alexnet", "quicknet_small", "quicknet", "quicknet_large", "binary_resnet_e18",
    "binary_densenet28", "bnn_mnist_cnn", "vad_bnn",
}


def test_list_models_is_sorted_and_complete():
    names = list_models()
    assert names == sorted(names)
    assert EXPECTED <= set(names)


def test_list_models_pattern():
    assert list_models("quicknet*") == ["quicknet", "quicknet_large", "quicknet_small"]
    assert list_models("binarynet_*") == ["binarynet_batch", "binarynet_layernorm", "binarynet_mlp"]
    assert list_models("nothing*") == []


def test_unknown_model_names_known_ones_and_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'quiknet'\. Did you mean 'quicknet'") as e:
        get_model("quiknet")
    assert "binarynet_mlp" in str(e.value)
    with pytest.raises(ValueError, match="unknown model"):
        model_entrypoint(None)


def test_unknown_option_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="no_such_option"):
        get_model("vad_bnn", no_such_option=1)


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))


def test_register_and_build(scratch_registry):
    @register_model("tiny_test_model")
    def tiny(num_classes: int = 3):
        return nn.Linear(4, num_classes)

    assert "tiny_test_model" in list_models()
    assert get_model("tiny_test_model", num_classes=5).out_features == 5
    assert model_entrypoint("tiny_test_model") is tiny


def test_duplicate_and_malformed_names_are_rejected(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        register_model("quicknet")(lambda: nn.Identity())
    for bad in ("", "QuickNet", "quick-net", "a b", 3):
        with pytest.raises(ValueError, match="lower-case identifiers"):
            register_model(bad)
    with pytest.raises(TypeError, match="needs a callable"):
        register_model("not_callable")(42)
