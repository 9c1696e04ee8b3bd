"""What the trainer watches: histograms of weights and activations, TensorBoard output.

Quantized layers are found through their declared export spec (``layer.export_spec()``),
never by name; their effective weights come from ``layer.quantized_weight()``. The flip
ratio comes from :class:`xnorkit.metrics.FlipRatio`.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

__all__ = [
    "quantized_layers",
    "TensorBoardLogger",
    "capture_activations",
]


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer that declares an export spec (xnorkit.nn layers)."""
    return [(n, m) for n, m in model.named_modules()
            if callable(getattr(m, "export_spec", None)) and callable(getattr(m, "quantized_weight", None))]


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
