"""Evaluate a saved model (``model.pt`` or ``checkpoint.pt``) on a dataset split."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from xnorkit.data import BatchLoader, get_preprocess, load_dataset
from xnorkit.train.checkpoint import load_checkpoint
from xnorkit.train.setup import build_model
from xnorkit.train.trainer import RunConfig, evaluate_model

__all__ = ["load_trained_model", "evaluate_file"]


def load_trained_model(path: str | os.PathLike, device: str = "cpu",
                       model_factory: Callable[[], nn.Module] | None = None
                       ) -> tuple[nn.Module, RunConfig]:
    """Rebuild the model saved in ``path`` and load its weights (eval mode).

    Args:
        path: ``model.pt`` or ``checkpoint.pt`` written by :func:`xnorkit.train.fit`.
        device: where to put the model.
        model_factory: build the model with this instead of ``get_model`` (custom models).

    Raises:
        ValueError: the file is not an xnorkit model/checkpoint, or its weights do not fit the
            rebuilt model (the message names the file and the mismatching keys).
    """
    ckpt = load_checkpoint(path, map_location=device)
    cfg = RunConfig.from_dict(ckpt["config"])
    model = model_factory() if model_factory is not None else build_model(cfg.model, cfg.hparams.model)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match model {cfg.model!r} built with "
                         f"{cfg.hparams.model}: {exc}") from exc
    return model.to(device).eval(), cfg


def evaluate_file(path: str | os.PathLike, *, dataset: str | None = None, split: str = "test",
                  data_dir: str | None = None, device: str = "cpu", batch_size: int = 1000,
                  subset: int | None = None,
                  model_factory: Callable[[], nn.Module] | None = None) -> dict:
    """Accuracy and loss of a saved model on ``split`` of ``dataset`` (default: its own).

    The evaluation preprocessing and loss are the ones the model was trained with.
    """
    model, cfg = load_trained_model(path, device, model_factory)
    name = dataset or cfg.dataset
    ds = load_dataset(name, split, data_dir if data_dir is not None else cfg.data_dir)
    if subset:
        ds = ds.subset(subset)
    pre = get_preprocess(ds.name, cfg.hparams.preprocess)
    loader = BatchLoader(ds, batch_size, pre.eval, shuffle=False, drop_last=False,
                         device=torch.device(device))
    res = evaluate_model(model, loader, cfg.hparams.loss)
    return {"path": str(Path(path)), "model": cfg.model, "dataset": ds.name, "split": split,
            **res}
