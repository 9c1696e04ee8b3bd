"""What the trainer watches: binary layers, weight flips, histograms, TensorBoard output.

Binary layers are found through their declared export spec (``layer.export_spec()``,
``weight_bits == 1``), never by name. Their effective weights come from
``layer.quantized_weight()``.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

__all__ = [
    "quantized_layers",
    "binary_weight_layers",
    "SignSnapshot",
    "TensorBoardLogger",
    "capture_activations",
]


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer that declares an export spec (xnorkit.nn layers)."""
    return [(n, m) for n, m in model.named_modules()
            if callable(getattr(m, "export_spec", None)) and callable(getattr(m, "quantized_weight", None))]


def binary_weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The quantized layers whose deployed weights are 1-bit."""
    out = []
    for name, m in quantized_layers(model):
        try:
            bits = m.export_spec().weight_bits
        except Exception:  # a layer whose spec cannot be computed is not monitored
            continue
        if bits == 1:
            out.append((name, m))
    return out


class SignSnapshot:
    """Signs of the binary weights at one moment, to count flips after an optimizer step.

    The flip ratio is the fraction of binary weights whose sign differs between the
    snapshot and :meth:`flip_ratio`'s call (Bop's "flip ratio", Helwegen et al. 2019).
    """

    def __init__(self, layers: list[tuple[str, nn.Module]]) -> None:
        self.layers = layers
        with torch.no_grad():
            self.signs = [m.quantized_weight().detach() >= 0 for _, m in layers]

    def flip_ratio(self) -> float | None:
        """Fraction of flipped binary weights (None when the model has no binary weights)."""
        if not self.layers:
            return None
        flips = total = 0
        with torch.no_grad():
            for (_, m), before in zip(self.layers, self.signs):
                now = m.quantized_weight().detach() >= 0
                flips += int((now != before).sum())
                total += now.numel()
        return flips / total


@contextmanager
def capture_activations(model: nn.Module) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Record (input, quantized input) of every quantized layer with an input quantizer."""
    store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name, m in quantized_layers(model):
        q = getattr(m, "input_quantizer", None)
        if q is None:
            continue

        def hook(mod, args, name=name, q=q):
            x = args[0].detach()
            store[name] = (x, q(x).detach())

        handles.append(m.register_forward_pre_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


class TensorBoardLogger:
    """Scalars and histograms for one run directory (rank 0 only; others pass ``None``).

    Args:
        log_dir: the run directory (event files go straight into it).
        purge_step: on resume, the global step of the checkpoint: events logged after it by
            the interrupted run are dropped so curves do not overlap.
    """

    def __init__(self, log_dir: str | Path | None, purge_step: int | None = None) -> None:
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, values: dict[str, float | None], step: int) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if v is not None:
                self.writer.add_scalar(k, float(v), step)

    def weight_histograms(self, model: nn.Module, step: int) -> None:
        """Latent and effective (binarized) weights of every quantized layer."""
        if self.writer is None:
            return
        with torch.no_grad():
            for name, m in quantized_layers(model):
                self.writer.add_histogram(f"weights/{name}/latent", m.weight.detach().float().cpu(), step)
                self.writer.add_histogram(f"weights/{name}/quantized",
                                          m.quantized_weight().detach().float().cpu(), step)

    def activation_histograms(self, acts: dict[str, tuple[torch.Tensor, torch.Tensor]],
                              step: int) -> None:
        """Pre-quantizer and quantized inputs of the quantized layers."""
        if self.writer is None:
            return
        for name, (x, xq) in acts.items():
            self.writer.add_histogram(f"activations/{name}/input", x.float().cpu(), step)
            self.writer.add_histogram(f"activations/{name}/quantized", xq.float().cpu(), step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
