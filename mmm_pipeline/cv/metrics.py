"""Forecast scores from predictive draws: CRPS, MAPE, RMSE, bias and central-interval coverage.

Every model (the MMM and the baselines) hands over ``(S, T)`` predictive draws of the KPI for the test
weeks, so all are scored by the same code. The point forecast is the mean of the draws; the ``p``
central interval runs from the ``(1 - p) / 2`` to the ``(1 + p) / 2`` quantile of the draws.

Scores are first turned into one row per week (:func:`weekly_scores`, the ``cv_predictions`` shape);
per-fold and overall metrics are then summaries of those rows (:func:`summarize`), so they can be
recomputed from stored rows alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmm_pipeline.metrics import crps, mape

#: Central predictive intervals whose coverage is reported.
INTERVALS = (0.5, 0.94)

#: Columns of the weekly score rows (besides the keys the caller adds, e.g. ``fold`` and ``model``).
WEEKLY_COLUMNS = [
    "week", "horizon", "observed", "mean", "sd", "lower_94", "lower_50", "median", "upper_50", "upper_94",
    "crps",
]  # fmt: skip
#: Metric columns of :func:`summarize`.
METRIC_COLUMNS = ["n_weeks", "crps", "mape", "rmse", "bias", "bias_pct", "coverage_50", "coverage_94"]


def central_interval(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bound per week of the ``prob`` central interval of ``(S, T)`` draws."""
    low, high = np.quantile(np.asarray(draws, dtype=float), [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return low, high


def coverage(draws: np.ndarray, observed: np.ndarray, prob: float) -> float:
    """Share of weeks whose observation lies in the ``prob`` central interval (bounds included)."""
    low, high = central_interval(draws, prob)
    observed = np.asarray(observed, dtype=float)
    return float(np.mean((low <= observed) & (observed <= high)))


def point_metrics(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAPE, RMSE and bias of a point forecast.

    ``bias`` is ``mean(predicted - observed)`` in KPI units (positive: over-forecast), ``bias_pct`` is
    ``sum(predicted - observed) / sum(observed)``. MAPE is :func:`mmm_pipeline.metrics.mape`.
    """
    observed, predicted = np.asarray(observed, dtype=float), np.asarray(predicted, dtype=float)
    error = predicted - observed
    return {
        "mape": mape(observed, predicted),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "bias": float(np.mean(error)),
        "bias_pct": float(error.sum() / observed.sum()) if observed.sum() != 0 else np.nan,
    }


def forecast_metrics(draws: np.ndarray, observed: np.ndarray) -> dict[str, float]:
    """All metrics of ``(S, T)`` predictive draws against ``(T,)`` observations (see the module doc)."""
    draws = np.asarray(draws, dtype=float)
    return summarize(weekly_scores(draws, observed)).iloc[0].to_dict()


def weekly_scores(
    draws: np.ndarray, observed: np.ndarray, weeks: pd.DatetimeIndex | None = None
) -> pd.DataFrame:
    """One row per test week (columns :data:`WEEKLY_COLUMNS`): the observation, predictive mean, sd,
    median, 50% and 94% central interval bounds and CRPS. ``horizon`` counts weeks ahead from 1."""
    draws, observed = np.asarray(draws, dtype=float), np.asarray(observed, dtype=float)
    if draws.ndim != 2 or draws.shape[1] != observed.shape[0]:
        raise ValueError(f"draws must be (S, T) with T = {observed.shape[0]} weeks, got {draws.shape}")
    low94, low50, median, high50, high94 = np.quantile(draws, [0.03, 0.25, 0.5, 0.75, 0.97], axis=0)
    n = observed.shape[0]
    return pd.DataFrame(
        {
            "week": weeks if weeks is not None else pd.NaT,
            "horizon": np.arange(1, n + 1),
            "observed": observed,
            "mean": draws.mean(axis=0),
            "sd": draws.std(axis=0),
            "lower_94": low94,
            "lower_50": low50,
            "median": median,
            "upper_50": high50,
            "upper_94": high94,
            "crps": crps(draws, observed),
        }
    )


def summarize(weekly: pd.DataFrame) -> pd.DataFrame:
    """Metrics (:data:`METRIC_COLUMNS`) of weekly score rows: one row, or one per group if ``weekly`` is
    grouped by the caller first. ``crps`` is the mean weekly CRPS; coverage counts weeks inside the
    stored interval bounds; point metrics use the predictive mean."""
    observed, mean = weekly["observed"].to_numpy(float), weekly["mean"].to_numpy(float)
    row: dict[str, float] = {"n_weeks": len(weekly), "crps": float(weekly["crps"].mean())}
    row.update(point_metrics(observed, mean) if len(weekly) else dict.fromkeys(METRIC_COLUMNS[2:6], np.nan))
    for prob in INTERVALS:
        tag = round(prob * 100)
        observed = weekly["observed"]
        inside = (weekly[f"lower_{tag}"] <= observed) & (observed <= weekly[f"upper_{tag}"])
        row[f"coverage_{tag}"] = float(inside.mean()) if len(weekly) else np.nan
    return pd.DataFrame([row], columns=METRIC_COLUMNS)
