"""The xnorkit model zoo: binary neural networks registered by name.

Usage::

    from xnorkit.models import get_model, list_models
    model = get_model("quicknet", num_classes=10)
    logits = model(model.example_input(2))          # (2, 10), no softmax
    model.binary_layer_names()                      # the XNOR-popcount layers

Registered models (details and sources in each module's docstrings):

======================  =====================================================================
``binarynet_mlp``       BinaryNet MNIST MLP (Courbariaux et al. 2016); seed 000's MLP switches
``binarynet``           BinaryNet CIFAR-10 ConvNet, padded first conv (paper)
``binarynet_batch``     seed 004's BinaryNet: VALID first conv, BatchNorm(scale=False)
``binarynet_layernorm`` seed 004's BinaryNet with LayerNorm over channels
``xnornet``             XNOR-Net AlexNet (Rastegari et al. 2016), seed 004's layers
``birealnet18``         Bi-Real Net 18 (Liu et al. 2018), seed 004's layers
``binary_alexnet``      Binary AlexNet (larq-zoo)
``quicknet_small``      QuickNetSmall (larq-zoo v1.0)
``quicknet``            QuickNet (larq-zoo v1.0)
``quicknet_large``      QuickNetLarge (larq-zoo v1.0)
``binary_resnet_e18``   Binary ResNet-E 18 (Bethge et al. 2019, larq-zoo)
``binary_densenet28``   BinaryDenseNet 28 (Bethge et al. 2019, larq-zoo)
``bnn_mnist_cnn``       our small binary CNN for MNIST / Fashion-MNIST
``vad_bnn``             our tiny binary 1-D CNN for voice activity detection
======================  =====================================================================

Every model is a :class:`ZooModel`: an ``nn.Module`` taking NCHW images ((N, F, T) for
``vad_bnn``) and returning logits, with ``default_input_shape``, ``num_classes``,
``layer_precisions()``, ``binary_layer_names()`` and ``binary_weight_count()``. Every model
takes ``num_classes``, ``input_shape`` and ``binary_kernels`` (one of
:data:`BINARY_KERNELS`: ``"ste_sign"`` latent weights with clipping, ``"magnitude_aware_sign"``
with a per-channel scale, ``"bop"`` ±1 weights for Bop) among its options.
"""

from __future__ import annotations

from ._common import BINARY_KERNELS, LayerPrecision, ZooModel
from ._registry import get_model, list_models, model_entrypoint, register_model

# Importing the model modules registers their models.
from . import alexnet, binarynet, birealnet, densenet, quicknet, resnet_e, small, xnornet  # noqa: E402,F401

__all__ = [
    "register_model",
    "get_model",
    "list_models",
    "model_entrypoint",
    "ZooModel",
    "LayerPrecision",
    "BINARY_KERNELS",
]
