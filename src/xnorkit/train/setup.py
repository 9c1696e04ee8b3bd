"""Build the model and the optimizer of a run from its hyperparameters."""

from __future__ import annotations

from torch import nn

from xnorkit.train.hparams import HParams, make_schedule

__all__ = ["build_model", "build_optimizer", "scheduled_values", "apply_weight_constraints",
           "model_kwargs_for_dataset"]


def build_model(name: str, kwargs: dict) -> nn.Module:
    """``xnorkit.models.get_model(name, **kwargs)`` with a clear error for bad arguments."""
    from xnorkit.models import get_model

    try:
        return get_model(name, **kwargs)
    except TypeError as exc:
        raise ValueError(f"model {name!r} rejected its arguments {kwargs}: {exc}") from exc


def model_kwargs_for_dataset(name: str, kwargs: dict, input_shape: tuple, num_classes: int) -> dict:
    """``kwargs`` plus ``input_shape`` and ``num_classes`` of the dataset, when the model takes
    them and they are not given (so ``binarynet --dataset mnist`` builds a 1x28x28 network)."""
    import inspect

    from xnorkit.models import model_entrypoint

    params = inspect.signature(model_entrypoint(name)).parameters
    open_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    out = dict(kwargs)
    for key, value in (("input_shape", list(input_shape)), ("num_classes", int(num_classes))):
        if key not in out and (open_kw or key in params):
            out[key] = value
    return out


def _scheduled_names(hp: HParams) -> list[str]:
    names = ["learning_rate"]
    if hp.optimizer == "bop":
        names += ["threshold", "gamma"]
    elif hp.optimizer == "bop2ndorder":
        names += ["threshold", "gamma", "sigma"]
    return names


def scheduled_values(hp: HParams, step: int, steps_per_epoch: int) -> dict[str, float]:
    """The scheduled hyperparameters in effect at optimizer step ``step`` (for logging)."""
    return {n: float(make_schedule(hp, n, steps_per_epoch)(step)) for n in _scheduled_names(hp)}


def build_optimizer(model: nn.Module, hp: HParams, steps_per_epoch: int):
    """The optimizer named by ``hp.optimizer``, through :func:`xnorkit.optim.make_optimizer`.

    - ``adam`` / ``sgd``: latent-weight training (BinaryNet): binary weights (layers with
      ``export_spec().weight_bits == 1``) get no weight decay and BinaryNet's Glorot LR scale
      when ``hp.glorot_lr_scale``; other parameters get ``hp.weight_decay``. Clipping is the
      layers' own constraint (``weight_clip``, see :func:`apply_weight_constraints`).
    - ``bop`` / ``bop2ndorder``: binary weights go to Bop / Bop2ndOrder (``threshold``,
      ``gamma``, ``sigma``, ``bop_correction``), everything else to Adam.

    Every scheduled value is passed as a schedule of the optimizer step (the optimizers
    evaluate them; the learning-rate scheduler is part of the returned optimizer's state
    dict), so a resumed run continues the schedules exactly.
    """
    from xnorkit.optim import make_optimizer

    lr = make_schedule(hp, "learning_rate", steps_per_epoch)
    if hp.optimizer in ("adam", "bop", "bop2ndorder"):
        float_name, extra = "adam", {"betas": tuple(hp.adam_betas)}
    else:
        float_name, extra = "sgd", {"momentum": hp.momentum}
    float_kwargs = {"lr": lr, "weight_decay": hp.weight_decay, **extra}
    if hp.optimizer in ("adam", "sgd"):
        return make_optimizer(model, binary=hp.optimizer, binary_kwargs={"lr": lr, **extra},
                              float=float_name, float_kwargs=float_kwargs,
                              glorot_lr_scale=hp.glorot_lr_scale, require_binary=False)
    bkw = {"threshold": make_schedule(hp, "threshold", steps_per_epoch),
           "gamma": make_schedule(hp, "gamma", steps_per_epoch)}
    if hp.optimizer == "bop2ndorder":
        bkw["sigma"] = make_schedule(hp, "sigma", steps_per_epoch)
        bkw["correction"] = hp.bop_correction
    elif hp.bop_correction != "none":
        raise ValueError(f"hparams.bop_correction={hp.bop_correction!r} applies to bop2ndorder, "
                         "not bop")
    return make_optimizer(model, binary=hp.optimizer, binary_kwargs=bkw, float="adam",
                          float_kwargs=float_kwargs)


def apply_weight_constraints(model: nn.Module) -> None:
    """Clip latent weights to each layer's declared ``weight_clip`` (xnorkit.nn's constraint,
    BinaryNet's clipping to [-1, 1]); call after every optimizer step."""
    from xnorkit.nn import apply_constraints

    apply_constraints(model)
