"""Training for xnorkit models: the loop, hyperparameter sets, checkpoints, logging.

- :func:`fit` / :class:`RunConfig`: one run (data, model, optimizer, TensorBoard, atomic
  checkpoints with exact resume, data-parallel through ``torchrun``).
- :class:`HParams`, :func:`register_hparams`, :func:`get_hparams`: named sets per model,
  overridable with ``k=v`` strings (:func:`apply_overrides`).
- :func:`squared_hinge`, :func:`cross_entropy`: the losses.
- :func:`evaluate_file`, :func:`load_trained_model`: use a finished run.

The command line is ``xnorkit train`` / ``xnorkit evaluate`` (:mod:`xnorkit.train.cli`).
"""

from xnorkit.train.evaluate import evaluate_file, load_trained_model
from xnorkit.train.hparams import (
    HParams,
    apply_overrides,
    get_hparams,
    list_hparams,
    parse_overrides,
    register_hparams,
    schedule_value,
)
from xnorkit.train.losses import cross_entropy, get_loss, squared_hinge
from xnorkit.train.trainer import RunConfig, evaluate_model, fit

__all__ = [
    "HParams",
    "RunConfig",
    "apply_overrides",
    "cross_entropy",
    "evaluate_file",
    "evaluate_model",
    "fit",
    "get_hparams",
    "get_loss",
    "list_hparams",
    "load_trained_model",
    "parse_overrides",
    "register_hparams",
    "schedule_value",
    "squared_hinge",
]
