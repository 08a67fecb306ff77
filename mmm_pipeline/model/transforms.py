"""Media response transforms: adstock (carry-over) and saturation (diminishing returns).

The same formulas serve three callers: model fitting builds PyTensor graphs from them, prediction and
reporting evaluate them on NumPy arrays, and the budget optimizer evaluates them many times on candidate
plans. To keep one source of truth, every function takes an ``xp`` argument: the array module whose
operations build the result (``numpy``, the default, or ``pytensor.tensor`` for a symbolic graph).

Shapes: media ``x`` is ``(T, C)`` (weeks x channels) or ``(T,)`` for a single channel; parameters are
scalars or ``(C,)`` and broadcast across weeks. Adstock keeps the units of ``x`` (with normalized weights
a constant spend level maps to itself); saturation maps non-negative input to ``[0, 1)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np

if TYPE_CHECKING:
    from pytensor.tensor.variable import TensorVariable

#: A NumPy array or a PyTensor tensor, depending on the ``xp`` module used.
Array: TypeAlias = "np.ndarray | TensorVariable"
#: A parameter: scalar, per-channel ``(C,)`` vector, or a tensor of either.
Param: TypeAlias = "float | np.ndarray | TensorVariable"

AdstockKind = Literal["geometric", "delayed"]
SaturationKind = Literal["logistic", "hill"]


def _as_array(value: Any, xp: ModuleType) -> Array:
    """Lift lists/floats into the array type ``xp`` works on (float for NumPy, a tensor for PyTensor)."""
    if xp is np:
        return np.asarray(value, dtype=float)
    return xp.as_tensor_variable(value)


def adstock_weights(
    kind: AdstockKind,
    l_max: int,
    *,
    alpha: Param,
    theta: Param | None = None,
    normalize: bool = True,
    xp: ModuleType = np,
) -> Array:
    """Weight of the spend ``l`` weeks ago in this week's adstocked value, shape ``(l_max,) + param shape``.

    ``geometric``: ``w_l = alpha**l``, the effect peaks in the week of spend and decays; ``alpha`` in
    ``[0, 1)`` is the share that survives each week. ``delayed``: ``w_l = alpha**((l - theta)**2)``, the
    effect peaks ``theta`` weeks after the spend (e.g. TV awareness building up). With ``normalize`` the
    weights sum to 1, so adstock only moves spend through time and the effect size lives elsewhere.
    """
    if kind not in ("geometric", "delayed"):
        raise ValueError(f"unknown adstock kind {kind!r}; expected 'geometric' or 'delayed'")
    if (theta is None) == (kind == "delayed"):
        raise ValueError("theta is required by (and only by) the 'delayed' adstock")
    if l_max < 1:
        raise ValueError(f"l_max must be >= 1, got {l_max}")
    alpha = _as_array(alpha, xp)
    theta = None if theta is None else _as_array(theta, xp)
    # Lags run down axis 0 and broadcast against the parameters' channel axis.
    ndim = alpha.ndim if theta is None else max(alpha.ndim, theta.ndim)
    lags = _as_array(np.arange(l_max, dtype=float).reshape((l_max,) + (1,) * ndim), xp)
    weights = alpha ** (lags if theta is None else (lags - theta) ** 2)
    if normalize:
        weights = weights / weights.sum(axis=0, keepdims=True)
    return weights


def _convolve(x: Array, weights: Array, l_max: int, x_init: Array | None, xp: ModuleType) -> Array:
    """``y_t = sum_l weights[l] * x_{t-l}``, with ``x_init`` (or zeros) standing in for ``x_{-1}, x_{-2}...``.

    Vectorised over weeks: one shifted slice of the padded series per lag, so the Python loop runs
    ``l_max`` times, never ``T`` times.
    """
    x = _as_array(x, xp)
    tail_shape = [x.shape[i] for i in range(1, x.ndim)]
    if x_init is None:
        x_init = xp.zeros([l_max - 1, *tail_shape], dtype=x.dtype)
    else:
        x_init = _as_array(x_init, xp)
        if xp is np and x_init.shape != (l_max - 1, *tail_shape):
            raise ValueError(
                f"x_init must hold the l_max - 1 = {l_max - 1} weeks before x, shape "
                f"{(l_max - 1, *tail_shape)}; got {x_init.shape}"
            )
    padded = xp.concatenate([x_init, x], axis=0)
    n = padded.shape[0]
    return sum(weights[lag] * padded[l_max - 1 - lag : n - lag] for lag in range(l_max))


def adstock(
    kind: AdstockKind,
    x: Array,
    l_max: int,
    *,
    alpha: Param,
    theta: Param | None = None,
    normalize: bool = True,
    x_init: Array | None = None,
    xp: ModuleType = np,
) -> Array:
    """Adstock chosen by name, for callers that read the kind from configuration or ground truth."""
    weights = adstock_weights(kind, l_max, alpha=alpha, theta=theta, normalize=normalize, xp=xp)
    return _convolve(x, weights, l_max, x_init, xp)


def geometric_adstock(
    x: Array,
    alpha: Param,
    l_max: int,
    normalize: bool = True,
    x_init: Array | None = None,
    xp: ModuleType = np,
) -> Array:
    """Carry-over with geometric decay: ``y_t = sum_{l<l_max} w_l x_{t-l}``, ``w_l = alpha**l``.

    ``x`` is ``(T, C)`` spend (or impressions), ``alpha`` in ``[0, 1)`` is the share of the effect that
    survives each week. ``x_init`` of shape ``(l_max - 1, C)`` holds the weeks just before ``x``, oldest
    first (e.g. the last training weeks when scoring forecast weeks); without it they count as zero.
    Returns ``(T, C)`` in the units of ``x``.
    """
    return adstock("geometric", x, l_max, alpha=alpha, normalize=normalize, x_init=x_init, xp=xp)


def delayed_adstock(
    x: Array,
    alpha: Param,
    theta: Param,
    l_max: int,
    normalize: bool = True,
    x_init: Array | None = None,
    xp: ModuleType = np,
) -> Array:
    """Carry-over whose peak is ``theta`` weeks after the spend: ``w_l = alpha**((l - theta)**2)``.

    Shapes and ``x_init`` as in :func:`geometric_adstock`.
    """
    return adstock("delayed", x, l_max, alpha=alpha, theta=theta, normalize=normalize, x_init=x_init, xp=xp)


def logistic_saturation(x: Array, lam: Param, xp: ModuleType = np) -> Array:
    """``(1 - exp(-lam x)) / (1 + exp(-lam x))``: 0 at 0, rising to 1; ``lam`` is in 1 / units of ``x``.

    Evaluated as the identical ``tanh(lam x / 2)``, which does not overflow for large ``lam x``.
    """
    return xp.tanh(_as_array(lam, xp) * _as_array(x, xp) / 2)


def hill_saturation(x: Array, half_sat: Param, slope: Param, xp: ModuleType = np) -> Array:
    """Hill curve ``x**s / (x**s + K**s)``: ``K = half_sat`` (units of ``x``) gives half the maximum.

    ``slope > 1`` makes an S-curve (a threshold before spend works). Input ``x <= 0`` maps to 0. The
    power (or log) is only ever taken of positive numbers, so both the value and the gradients with
    respect to ``half_sat`` and ``slope`` (which involve ``log x``) stay finite in weeks without spend.

    A PyTensor graph evaluates the same curve as ``(1 + tanh(s (log x - log K) / 2)) / 2``: one log and
    one tanh per element, and a gradient without further powers or logs. On the pooled model (10
    markets x 156 weeks x 5 channels, nutpie's numba build) a log-density gradient took 11-32% less
    time than with the power (``benchmarks/README.md``, many markets). NumPy keeps the power form:
    it is exact in relative terms for tiny values, and the optimizer's speed stays as measured.
    """
    x = _as_array(x, xp)
    positive = x > 0
    safe, half_sat, slope = xp.where(positive, x, 1.0), _as_array(half_sat, xp), _as_array(slope, xp)
    if xp is np:
        ratio = (safe / half_sat) ** slope
        return np.where(positive, ratio / (1 + ratio), 0.0)
    log_ratio = slope * (xp.log(safe) - xp.log(half_sat))
    return xp.where(positive, 0.5 + 0.5 * xp.tanh(0.5 * log_ratio), 0.0)


def saturation(kind: SaturationKind, x: Array, *, xp: ModuleType = np, **params: Param) -> Array:
    """Saturation chosen by name: ``logistic`` takes ``lam``; ``hill`` takes ``half_sat`` and ``slope``."""
    if kind == "logistic":
        return logistic_saturation(x, xp=xp, **params)
    if kind == "hill":
        return hill_saturation(x, xp=xp, **params)
    raise ValueError(f"unknown saturation kind {kind!r}; expected 'logistic' or 'hill'")


#: One group of channels sharing a saturation kind: ``(kind, channel indices, parameters)``; each
#: parameter's last axis runs over the group's channels, in the order of the indices.
SaturationGroup: TypeAlias = "tuple[SaturationKind, np.ndarray, Mapping[str, Param]]"


def grouped_saturation(groups: Sequence[SaturationGroup], x: Array, *, xp: ModuleType = np) -> Array:
    """Saturation of ``x`` (channels on the last axis), each group of channels with its own kind.

    Why: a model may give each channel its own curve family (``ModelSpec.saturation_by_channel``). Each
    group is evaluated on its own columns only and the columns are put back in channel order, so no
    channel's curve is ever computed with another kind's parameters. A single group is evaluated as
    :func:`saturation` on all of ``x``: the one-kind model's expression, unchanged. The groups must
    cover every channel exactly once.
    """
    if len(groups) == 1:
        kind, _, params = groups[0]
        return saturation(kind, x, xp=xp, **params)
    order = np.argsort(np.concatenate([np.asarray(idx, dtype=int) for _, idx, _ in groups]))
    parts = [
        saturation(kind, x[..., np.asarray(idx, dtype=int)], xp=xp, **params) for kind, idx, params in groups
    ]
    return xp.concatenate(parts, axis=-1)[..., order]
