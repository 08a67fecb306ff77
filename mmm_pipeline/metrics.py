"""Scores shared by every stage: highest-density intervals, CRPS and MAPE.

One definition each, so the model's diagnostics, the gate, cross-validation, tracking and the optimizer
report the same number for the same draws. Pure NumPy: the optimizer imports this without ArviZ or PyMC.
"""

from __future__ import annotations

import numpy as np


def hdi(draws: np.ndarray, prob: float = 0.94) -> np.ndarray:
    """Highest-density interval of ``(S, ...)`` draws along axis 0: ``(..., 2)`` lower and upper bounds.

    ArviZ's algorithm (the narrowest window holding ``floor(prob * S)`` sorted draws), written out so the
    optimizer does not load ArviZ; with too few draws for a window it returns the range of the draws.
    """
    draws = np.sort(np.asarray(draws, dtype=float), axis=0)
    n = draws.shape[0]
    included = int(np.floor(prob * n))
    if included < 1 or n - included < 1:
        return np.stack([draws[0], draws[-1]], axis=-1)
    widths = draws[included:] - draws[: n - included]
    best = np.argmin(widths, axis=0)
    low = np.take_along_axis(draws, np.asarray(best)[None], axis=0)[0]
    high = np.take_along_axis(draws, (np.asarray(best) + included)[None], axis=0)[0]
    return np.stack([low, high], axis=-1)


def crps(draws: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Continuous ranked probability score per week of ``(S, T)`` predictive draws; lower is better.

    ``E|X - y| - E|X - X'| / 2``, with the second term from the sorted draws in ``O(S log S)``.
    """
    draws = np.sort(np.asarray(draws, dtype=float), axis=0)
    n = draws.shape[0]
    spread = ((2 * np.arange(1, n + 1) - n - 1)[:, None] * draws).sum(axis=0) / n**2
    return np.abs(draws - np.asarray(observed, dtype=float)).mean(axis=0) - spread


def mape(observed: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute percentage error of a point prediction; weeks with an observed KPI of 0 are left out.

    A zero-KPI week has no percentage error (it would be infinite and swamp every other week), so the
    gate's in-sample MAPE, cross-validation and tracking all skip it; NaN when no week is left.
    """
    observed, predicted = np.asarray(observed, dtype=float), np.asarray(predicted, dtype=float)
    nonzero = observed != 0
    if not nonzero.any():
        return float("nan")
    return float(np.mean(np.abs(predicted[nonzero] - observed[nonzero]) / np.abs(observed[nonzero])))
