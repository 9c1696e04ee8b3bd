"""Bop and Bop2ndOrder: optimizers that flip binary weights instead of updating latents.

Both keep, per binary weight w in {-1, +1}, an exponential moving average of its gradient
and flip w when that average pushes consistently against w's sign by more than a
threshold. They have no learning rate: the weights never leave {-1, +1}.

Every hyperparameter (``threshold``, ``gamma``, ``sigma``) may be a number or a schedule,
i.e. a callable of the optimizer iteration (see :mod:`xnorkit.optim.schedules`). The
iteration counter lives in each param group as ``group["iterations"]`` (0 before the first
``step()``; update number k uses ``schedule(k)``, as Keras evaluates schedules at
``optimizer.iterations``) and is part of ``state_dict()``, so a resumed run continues the
schedules exactly.

References:
    Helwegen, Widdicombe, Geiger, Liu, Cheng, Nusselder. "Latent Weights Do Not Exist:
    Rethinking Binarized Neural Network Optimization". NeurIPS 2019, arXiv 1906.02107.

    Suarez-Ramirez, Gonzalez-Mendoza, Chang, Hernandez-Gress. "A Bop and Beyond: A Second
    Order Optimizer for Binarized Neural Networks". CVPR Workshops 2021, arXiv 2104.05124.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch.optim import Optimizer

from .binary import is_binary_param, sign0_
from .schedules import HyperParameter, resolve

__all__ = ["Bop", "Bop2ndOrder", "CORRECTIONS"]

#: Allowed values of ``Bop2ndOrder(correction=...)``.
CORRECTIONS = ("none", "code", "adam")


def _in_domain(name: str, value: float) -> str | None:
    """None when ``value`` is valid for hyperparameter ``name``, else the expected domain."""
    if name == "threshold":
        return None if value >= 0 else ">= 0"
    if name in ("gamma", "sigma"):
        return None if 0 < value <= 1 else "in (0, 1]"
    raise AssertionError(name)


class _FlipOptimizer(Optimizer):
    """Shared machinery: hyperparameter checks, strict binary check, step loop."""

    _scheduled: tuple[str, ...] = ()

    def __init__(self, params, defaults: dict, strict: bool) -> None:
        self.strict = bool(strict)
        super().__init__(params, defaults)

    # -- hyperparameters ----------------------------------------------------------------
    def _value(self, group: dict, name: str, iteration: int) -> float:
        raw = group[name]
        value = resolve(raw, iteration, f"{type(self).__name__}: {name}")
        bad = _in_domain(name, value)
        if bad is not None:
            where = f" at iteration {iteration} (schedule {raw!r})" if callable(raw) else ""
            raise ValueError(f"{type(self).__name__}: {name} must be {bad}, got {value!r}{where}")
        return value

    def add_param_group(self, param_group: dict) -> None:
        """Add a group after checking its hyperparameters and (if strict) its parameters.

        Raises:
            ValueError: a hyperparameter outside its domain, or (strict) a parameter not
                tagged as binary.
            TypeError: a non-floating-point or complex parameter.
        """
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        it = group.setdefault("iterations", 0)
        for name in self._scheduled:
            self._value(group, name, it)
        for p in group["params"]:
            if not p.is_floating_point():
                raise TypeError(f"{type(self).__name__}: parameters must be real floating point, "
                                f"got dtype {p.dtype} (shape {tuple(p.shape)})")
            if self.strict and not is_binary_param(p):
                raise ValueError(
                    f"{type(self).__name__} on a non-binary parameter (shape {tuple(p.shape)}, "
                    f"dtype {p.dtype}): it flips weights in {{-1, +1}} and would binarize this "
                    "tensor. Tag binary weights with xnorkit.optim.mark_binary(p), take them from "
                    "xnorkit.optim.binary_parameters(model), or route a whole model with "
                    "xnorkit.optim.make_optimizer(model); strict=False skips this check.")

    def current_hyperparameters(self, group_index: int = 0) -> dict[str, float]:
        """The resolved values that the next ``step()`` will use for one param group."""
        group = self.param_groups[group_index]
        return {n: self._value(group, n, group["iterations"]) for n in self._scheduled}

    # -- the update ----------------------------------------------------------------------
    def _init_state(self, p: torch.Tensor, state: dict) -> None:
        raise NotImplementedError

    def _score(self, p: torch.Tensor, grad: torch.Tensor, state: dict,
               hp: dict[str, float], group: dict) -> torch.Tensor:
        """Update the state with ``grad`` and return the flip score s (flip iff s > tau)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """One update: refresh the moving averages, then flip where the score exceeds tau.

        At the first step every parameter of the optimizer (with or without a gradient) is
        set to sign0(w) (+1 for w >= 0, -1 otherwise) before any flip, so the weights live
        in {-1, +1} from then on. Parameters whose ``grad`` is None are otherwise skipped.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            it = group["iterations"]
            hp = {n: self._value(group, n, it) for n in self._scheduled}
            tau = hp["threshold"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    sign0_(p)
                    self._init_state(p, state)
                grad = p.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                score = self._score(p, grad, state, hp, group)
                flip = score > tau  # a tie (score == tau) keeps w
                p.copy_(torch.where(flip, -p, p))
            group["iterations"] = it + 1
        return loss


class Bop(_FlipOptimizer):
    r"""Binary optimizer (Bop): flip a binary weight when its gradient EMA exceeds tau.

    For each binary weight :math:`w \in \{-1, +1\}` with gradient :math:`g_t`:

    .. math::

        m_t = (1 - \gamma_t)\, m_{t-1} + \gamma_t\, g_t, \qquad m_0 = 0

        w_t = \begin{cases} -w_{t-1} & \text{if } w_{t-1} m_t > \tau_t \\
                            \phantom{-}w_{t-1} & \text{otherwise} \end{cases}

    i.e. (for :math:`\tau \ge 0`) flip iff :math:`|m_t| > \tau_t` and :math:`m_t` has the
    sign of :math:`w_{t-1}`: the gradient consistently pushes against the current sign. A
    tie :math:`w_{t-1} m_t = \tau_t` keeps the weight (the reference implementation wrote
    :math:`w_t = \mathrm{sign}(-\mathrm{sign}(w m - \tau) w)`, which sets such ties to +1;
    spec seeds.md §7.3/§7.8).

    **Weights live in {-1, +1}.** At the first ``step()`` every parameter is set to
    :math:`\mathrm{sign0}(w)` (+1 for 0) before the flips are applied; call
    :func:`xnorkit.optim.init_binary_` at model construction to make the first forward pass
    binary as well. Layers trained with Bop use an identity (``NoOp(precision=1)``) or sign
    weight quantizer; either sees the ±1 values.

    **Which parameters.** With ``strict=True`` (default) every parameter must be tagged
    binary — via :func:`xnorkit.optim.mark_binary`, :func:`xnorkit.optim.binary_parameters`
    (layers whose ``export_spec().weight_bits == 1``), or :func:`xnorkit.optim.make_optimizer`,
    which routes binary weights to Bop and the rest (BatchNorm, biases, float layers) to Adam.
    Handing Bop a non-binary parameter raises ``ValueError`` instead of silently binarizing it.

    Args:
        params: iterable of parameters or param-group dicts.
        threshold: :math:`\tau \ge 0`, number or schedule. Default 1e-8 (Larq/seed 004
            default; the original Bop class used 1e-7).
        gamma: adaptivity rate :math:`\gamma \in (0, 1]`, number or schedule. Default 1e-4
            (original class: 1e-2).
        strict: reject parameters not tagged as binary.

    Raises:
        ValueError: threshold < 0, gamma outside (0, 1] (checked at construction for numbers
            and at step 0, then at every step, for schedules), or a non-binary parameter.

    References:
        Helwegen et al. 2019, "Latent Weights Do Not Exist: Rethinking Binarized Neural
        Network Optimization", arXiv 1906.02107.
    """

    _scheduled = ("threshold", "gamma")

    def __init__(self, params: Iterable, threshold: HyperParameter = 1e-8,
                 gamma: HyperParameter = 1e-4, *, strict: bool = True) -> None:
        super().__init__(params, dict(threshold=threshold, gamma=gamma, iterations=0), strict)

    def _init_state(self, p, state):
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _score(self, p, grad, state, hp, group):
        m = state["exp_avg"]
        m.add_(grad - m, alpha=hp["gamma"])  # m + gamma (g - m), the papers' form
        return p * m


class Bop2ndOrder(_FlipOptimizer):
    r"""Second-order Bop: flip on the gradient EMA normalised by the RMS of the gradient.

    For each binary weight :math:`w \in \{-1, +1\}` with gradient :math:`g_t`:

    .. math::

        m_t = (1 - \gamma_t)\, m_{t-1} + \gamma_t\, g_t, \qquad
        v_t = (1 - \sigma_t)\, v_{t-1} + \sigma_t\, g_t^2, \qquad m_0 = v_0 = 0

        \text{flip } w \iff w_{t-1}\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} > \tau_t

    (a tie keeps the weight) where the correction gives :math:`\hat m, \hat v`:

    - ``"none"`` (the paper's *biased* Bop2ndOrder): :math:`\hat m = m_t,\ \hat v = v_t`.
    - ``"code"`` (seed 004's ``Bop2ndOrder_unbiased`` *as coded*):
      :math:`\hat m = m_t / \gamma_t,\ \hat v = v_t / \sigma_t`. For constant
      hyperparameters this is the biased rule with threshold
      :math:`\tau\gamma/\sqrt{\sigma}` and epsilon :math:`\epsilon\sqrt{\sigma}`; it is not a
      bias correction (spec seeds.md §7.3).
    - ``"adam"`` (Adam's bias correction, Kingma & Ba 2015):
      :math:`\hat m = m_t / (1 - \prod_{s \le t}(1 - \gamma_s))`,
      :math:`\hat v = v_t / (1 - \prod_{s \le t}(1 - \sigma_s))`, which is
      :math:`m_t / (1 - (1-\gamma)^t)` for a constant :math:`\gamma` and stays exact under
      schedules (the products are kept per parameter, t counting that parameter's updates).

    Weight handling (first step sets sign0(w), ``strict`` tagging) is as in :class:`Bop`.

    Args:
        params: iterable of parameters or param-group dicts.
        threshold: :math:`\tau \ge 0`, number or schedule. Default 1e-6.
        gamma: first-moment rate in (0, 1], number or schedule. Default 1e-6.
        sigma: second-moment rate in (0, 1], number or schedule. Default 1e-2.
        correction: ``"none"``, ``"code"`` or ``"adam"`` (see above).
        eps: :math:`\epsilon \ge 0` added to :math:`\sqrt{\hat v}`. Default 1e-10.
        strict: reject parameters not tagged as binary.

    Raises:
        ValueError: a hyperparameter outside its domain, an unknown correction, or a
            non-binary parameter.

    References:
        Suarez-Ramirez et al. 2021, "A Bop and Beyond: A Second Order Optimizer for
        Binarized Neural Networks", arXiv 2104.05124. Helwegen et al. 2019, arXiv 1906.02107.
    """

    _scheduled = ("threshold", "gamma", "sigma")

    def __init__(self, params: Iterable, threshold: HyperParameter = 1e-6,
                 gamma: HyperParameter = 1e-6, sigma: HyperParameter = 1e-2,
                 correction: str = "none", eps: float = 1e-10, *, strict: bool = True) -> None:
        if correction not in CORRECTIONS:
            raise ValueError(f"Bop2ndOrder: correction must be one of {', '.join(CORRECTIONS)}, "
                             f"got {correction!r}")
        super().__init__(params, dict(threshold=threshold, gamma=gamma, sigma=sigma,
                                      correction=correction, eps=eps, iterations=0), strict)

    def add_param_group(self, param_group: dict) -> None:  # noqa: D102 - see base class
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["correction"] not in CORRECTIONS:
            raise ValueError(f"Bop2ndOrder: correction must be one of {', '.join(CORRECTIONS)}, "
                             f"got {group['correction']!r}")
        eps = group["eps"]
        if callable(eps) or isinstance(eps, bool) or not isinstance(eps, (int, float)) \
                or not math.isfinite(eps) or eps < 0:
            raise ValueError(f"Bop2ndOrder: eps must be a number >= 0, got {eps!r}")

    def _init_state(self, p, state):
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        # prod_s (1 - gamma_s) and prod_s (1 - sigma_s) over this parameter's updates, kept
        # as Python floats (double) so that checkpoints round-trip them exactly.
        state["gamma_prod"] = 1.0
        state["sigma_prod"] = 1.0

    def _score(self, p, grad, state, hp, group):
        gamma, sigma = hp["gamma"], hp["sigma"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.add_(grad - m, alpha=gamma)
        v.add_(grad * grad - v, alpha=sigma)
        state["gamma_prod"] *= 1.0 - gamma
        state["sigma_prod"] *= 1.0 - sigma
        correction, eps = group["correction"], group["eps"]
        if correction == "none":
            m_hat, v_hat = m, v
        elif correction == "code":
            m_hat, v_hat = m / gamma, v / sigma
        else:  # adam
            m_hat = m / (1.0 - state["gamma_prod"])
            v_hat = v / (1.0 - state["sigma_prod"])
        return p * m_hat / (v_hat.sqrt() + eps)
