"""Arithmetic on per-channel step chains (:class:`xnorkit.convert.ir.Step`), shared by the passes.

* :func:`eval_steps` evaluates a chain with torch exactly as the PyTorch eval model does
  (float32: the layer's bias add and scale, ATen's BatchNorm, the activations) or in float64
  (the "real number" cross-check).
* :func:`integer_thresholds` turns "sign0 of a chain applied to an integer accumulator" into
  per-channel ``(threshold, flip)`` with ``bit = (acc < threshold) XOR flip`` by evaluating the
  chain on *every* accumulator value in [-K, K] -- exact by construction, no algebra.
* :func:`float_thresholds` does the same for a float input by bisection over the float32
  values (the chain is monotone per channel).
* :func:`fit_stage` packs a chain into the output-stage pattern of docs/format.md §4.1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from xnorkit.convert.ir import Step

INT32_MIN = -(2**31)
_FLT_MAX = float(np.finfo(np.float32).max)


def _vec(a: np.ndarray | None, c0: int, c1: int, dtype) -> torch.Tensor | None:
    if a is None:
        return None
    t = torch.from_numpy(np.asarray(a, dtype=np.float32))
    if t.numel() > 1:
        t = t[c0:c1]
    return t.to(dtype)


def eval_steps(x: torch.Tensor, steps: list[Step], c0: int = 0, c1: int | None = None) -> torch.Tensor:
    """Apply a chain to x of shape [L, C'] (channels c0:c1 of the chain's vectors).

    The dtype of x selects float32 (PyTorch's arithmetic) or float64 (the cross-check).
    """
    dt = x.dtype
    c1 = x.shape[1] + c0 if c1 is None else c1
    for s in steps:
        if s.kind == "scale":
            x = x * _vec(s.value, c0, c1, dt)
        elif s.kind == "bias":
            x = x + _vec(s.value, c0, c1, dt)
        elif s.kind == "bn":
            x = F.batch_norm(x, _vec(s.mean, c0, c1, dt), _vec(s.var, c0, c1, dt), _vec(s.gamma, c0, c1, dt),
                             _vec(s.beta, c0, c1, dt), training=False, momentum=0.0, eps=s.eps)
        elif s.act == "relu":
            x = F.relu(x)
        elif s.act == "relu6":
            x = F.relu6(x)
        elif s.act == "hardtanh":
            x = F.hardtanh(x, s.lo, s.hi)
        elif s.act == "prelu":
            a = _vec(s.alpha, c0, c1, dt)
            x = torch.where(x >= 0, x, a * x)
        elif s.act == "leaky":
            x = F.leaky_relu(x, s.lo)
    return x


def _chunks(c: int, rows: int, budget: int = 1 << 22):
    step = max(1, budget // max(rows, 1))
    for c0 in range(0, c, step):
        yield c0, min(c, c0 + step)


def _table_to_threshold(neg: torch.Tensor, lo: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """neg[L, C]: bit 1 (negative) per accumulator lo..lo+L-1 -> (T, flip, ok)."""
    L = neg.shape[0]
    n = neg.sum(0)
    idx = torch.arange(L)[:, None]
    prefix = (neg == (idx < n[None, :])).all(0)       # flip 0: bit = acc < T
    suffix = (neg == (idx >= (L - n)[None, :])).all(0)  # flip 1: bit = !(acc < T)
    T = torch.where(prefix, lo + n, lo + L - n).to(torch.int64)
    flip = (~prefix & suffix).to(torch.uint8)
    ok = prefix | suffix
    const0, const1 = n == 0, n == L
    T = torch.where(const0 | const1, torch.full_like(T, INT32_MIN), T)
    flip = torch.where(const0, torch.zeros_like(flip), torch.where(const1, torch.ones_like(flip), flip))
    return T.numpy().astype(np.int32), flip.numpy().astype(np.uint8), ok.numpy()


def _bisect_thresholds(steps: list[Step], k: int, channels: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(T, flip) for a chain known to be monotone per channel, by bisection over [-k, k]."""
    def neg(acc: np.ndarray) -> np.ndarray:  # bit (negative) of the chain at one acc per channel
        x = torch.from_numpy(acc.astype(np.float64)).to(dtype).reshape(1, channels)
        return (~(eval_steps(x, steps) >= 0)).numpy().reshape(-1)

    lo = np.full(channels, -k, np.int64)
    hi = np.full(channels, k, np.int64)
    n_lo, n_hi = neg(lo), neg(hi)
    const = n_lo == n_hi
    # invariant for the others: neg(lo) != neg(hi); find the first acc with neg == neg(hi)
    while True:
        todo = ~const & (hi - lo > 1)
        if not todo.any():
            break
        mid = lo + (hi - lo) // 2
        nm = neg(np.where(todo, mid, lo))
        hit = todo & (nm == n_hi)
        hi = np.where(hit, mid, hi)
        lo = np.where(todo & ~hit, mid, lo)
    T = hi.copy()  # first acc of the upper part
    flip = np.where(n_hi, 1, 0).astype(np.uint8)  # upper part negative: bit = !(acc < T)
    T[const] = INT32_MIN
    flip[const] = n_lo[const].astype(np.uint8)
    return T.astype(np.int32), flip


def integer_thresholds(steps: list[Step], k: int, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-channel (threshold, flip) reproducing ``sign0(chain(acc))`` for every acc in [-k, k].

    When the chain is monotone per channel (every step except a PReLU/LeakyReLU with a
    negative slope; each float32 operation rounds monotonically) the single transition is
    found by bisection on PyTorch's float32 evaluation; otherwise the chain is evaluated on
    every accumulator value and the table checked for the ``(acc < T) XOR flip`` form.

    Args:
        steps: the chain applied to the integer accumulator (converted to float32 exactly).
        k: the reduction length; the accumulator lies in [-k, k].
        channels: output channels.

    Returns:
        (threshold int32 [C], flip uint8 [C], representable bool [C], boundary) where
        ``boundary`` counts channels whose threshold in float64 arithmetic differs from the
        float32 one (a decision boundary within float32 rounding of an integer).
    """
    if monotone_direction(steps, channels) is not None:
        T, fl = _bisect_thresholds(steps, k, channels, torch.float32)
        T64, fl64 = _bisect_thresholds(steps, k, channels, torch.float64)
        boundary = int(np.sum((T != T64) | (fl != fl64)))
        return T, fl, np.ones(channels, bool), boundary
    acc = torch.arange(-k, k + 1, dtype=torch.float64)
    L = acc.numel()
    Ts, flips, oks, boundary = [], [], [], 0
    for c0, c1 in _chunks(channels, L):
        x32 = acc.to(torch.float32)[:, None].expand(L, c1 - c0).contiguous()
        y32 = eval_steps(x32, steps, c0, c1)
        T, fl, ok = _table_to_threshold(~(y32 >= 0), -k)
        y64 = eval_steps(acc[:, None].expand(L, c1 - c0).contiguous(), steps, c0, c1)
        T64, fl64, ok64 = _table_to_threshold(~(y64 >= 0), -k)
        boundary += int(np.sum((T != T64) | (fl != fl64)))
        Ts.append(T)
        flips.append(fl)
        oks.append(ok)
    return np.concatenate(Ts), np.concatenate(flips), np.concatenate(oks), boundary


def monotone_direction(steps: list[Step], channels: int) -> np.ndarray | None:
    """Per channel +1 (non-decreasing), -1 (non-increasing) or 0 (constant) for a chain, None
    when some step is not monotone (a PReLU/LeakyReLU with a negative slope)."""
    d = np.ones(channels, dtype=np.float64)

    def bc(v):
        v = np.asarray(v, np.float64).reshape(-1)
        return np.broadcast_to(v, (channels,)) if v.size == 1 else v

    for s in steps:
        if s.kind == "scale":
            d = d * np.sign(bc(s.value))
        elif s.kind == "bn":
            d = d * np.sign(bc(s.gamma))
        elif s.kind == "act":
            if s.act == "prelu" and np.any(bc(s.alpha) < 0):
                return None
            if s.act == "leaky" and s.lo < 0:
                return None
    return d


def _f32_key(x: np.ndarray) -> np.ndarray:
    """float32 -> int64 keys with the same order (for bisection over float32 values)."""
    i = np.asarray(x, np.float32).view(np.int32).astype(np.int64)
    return np.where(i >= 0, i, -(i & 0x7FFFFFFF))


def _key_f32(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, np.int64)
    i = np.where(k >= 0, k, (-k) | 0x80000000).astype(np.uint32)
    return i.view(np.float32)


def float_thresholds(steps: list[Step], channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel float32 (t, flip) with ``!(x >= t) XOR flip == !(chain(x) >= 0)`` for all
    finite float32 x (PyTorch float32 arithmetic), or None if the chain is not monotone."""
    d = monotone_direction(steps, channels)
    if d is None:
        return None

    def pos(x: np.ndarray) -> np.ndarray:  # chain(x) >= 0 per channel, x [C]
        xt = torch.from_numpy(np.asarray(x, np.float32).reshape(1, channels))
        return (eval_steps(xt, steps) >= 0).numpy().reshape(-1)

    lo_v = np.full(channels, -_FLT_MAX, np.float32)
    hi_v = np.full(channels, _FLT_MAX, np.float32)
    p_lo, p_hi = pos(lo_v), pos(hi_v)
    t = np.full(channels, -np.inf, np.float32)
    flip = np.zeros(channels, np.uint8)
    const = p_lo == p_hi
    flip[const] = (~p_lo[const]).astype(np.uint8)
    dec = ~const & p_lo  # positive for small x: decreasing
    inc = ~const & ~p_lo
    # bisection on keys: invariant pos(lo) != pos(hi); find the first key where pos == pos(hi)
    klo, khi = _f32_key(lo_v), _f32_key(hi_v)
    active = ~const
    while True:
        gap = khi - klo
        todo = active & (gap > 1)
        if not todo.any():
            break
        mid = klo + gap // 2
        pm = pos(_key_f32(np.where(todo, mid, klo)))
        same_as_hi = pm == p_hi
        khi = np.where(todo & same_as_hi, mid, khi)
        klo = np.where(todo & ~same_as_hi, mid, klo)
    first_hi = _key_f32(khi)
    t[inc] = first_hi[inc]
    t[dec] = first_hi[dec]  # first x where chain(x) < 0: bit = (x >= t) = !(x >= t) XOR 1
    flip[dec] = 1
    t[const] = -np.inf
    return t.astype(np.float32), flip


def step_affine(s: Step, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, bias) float64 of one affine step, broadcast to channels."""
    one = np.ones(channels)
    zero = np.zeros(channels)
    if s.kind == "scale":
        return one * s.value.astype(np.float64), zero
    if s.kind == "bias":
        return one, zero + s.value.astype(np.float64)
    if s.kind == "bn":
        a, b = s.bn_affine()
        return a.astype(np.float64), b.astype(np.float64)
    raise ValueError(f"step {s.kind} is not affine")


def compose_affine(steps: list[Step], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Compose consecutive affine steps into one (scale, bias) (float64)."""
    sc, bi = np.ones(channels), np.zeros(channels)
    for s in steps:
        a, b = step_affine(s, channels)
        sc, bi = sc * a, bi * a + b
    return sc, bi


def fit_stage(steps: list[Step], channels: int) -> tuple[dict, list[Step]]:
    """Pack a chain into ``post_scale * act(scale * x + bias) + post_bias``.

    Returns:
        (stage, rest): stage has float32 arrays "scale", "bias", "post_scale", "post_bias"
        (None when the identity) and "act", "act_lo", "act_hi", "act_alpha"; rest are the
        steps that did not fit (from the second activation on).
    """
    pre, act, post, rest = [], None, [], []
    for i, s in enumerate(steps):
        if s.kind == "act":
            if act is None:
                act = s
                continue
            rest = steps[i:]
            break
        (pre if act is None else post).append(s)
    stage: dict = {"act": "none", "act_lo": 0.0, "act_hi": 0.0, "act_alpha": None}

    def arrays(part, a, b):
        if not part:
            stage[a] = stage[b] = None
            return
        sc, bi = compose_affine(part, channels)
        has_scale = any(s.kind in ("scale", "bn") for s in part)
        has_bias = any(s.kind in ("bias", "bn") for s in part)
        stage[a] = sc.astype(np.float32) if has_scale else None
        stage[b] = bi.astype(np.float32) if has_bias else None

    arrays(pre, "scale", "bias")
    arrays(post, "post_scale", "post_bias")
    if act is not None:
        stage["act"] = act.act
        if act.act == "hardtanh":
            stage["act_lo"], stage["act_hi"] = act.lo, act.hi
        elif act.act == "leaky":
            stage["act_lo"] = act.lo
        elif act.act == "prelu":
            stage["act_alpha"] = np.asarray(act.alpha, np.float32)
    return stage, list(rest)
