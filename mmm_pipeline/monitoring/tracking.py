"""Performance tracking: the champion's forecast of the weeks since it was fitted, against the actual KPI.

For every week after the champion's last training week, the stored posterior predicts the KPI from the
spend and controls that actually happened (``mmm_pipeline.model.predict``, adstock carried in from the
actual spend of the weeks before), and the forecast is scored against the actual KPI: predictive mean
and sd, 50% and 94% central intervals and whether the actual lies inside, error, absolute percentage
error, rolling MAPE and CRPS (the validation package's weekly scores, so CV and tracking score alike).
Each channel's spend is also compared with its range in the training window (``spend_flags``): where
the model extrapolates.

Pure: a stored model and the market's modeling-table rows in, one DataFrame out (the columns of
``monitoring.performance_tracking``, see :mod:`mmm_pipeline.monitoring.store`).
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd

from mmm_pipeline.cv.metrics import weekly_scores
from mmm_pipeline.ingest.categorical import with_indicators
from mmm_pipeline.model.registry import StoredModel

from ..model.build import ModelData
from ..model.predict import PosteriorDraws, forecast, thin

#: Columns of the tracking table, in order (see ``TRACKING_DDL``).
TRACKING_COLUMNS = [
    "market", "model_id", "train_end", "week", "weeks_since_fit", "actual", "pred_mean", "pred_sd",
    "pred_median", "pred_50_low", "pred_50_high", "pred_94_low", "pred_94_high", "in_50", "in_94",
    "error", "abs_pct_error", "z_score", "rolling_mape", "crps", "n_spend_flags", "spend_flags",
    "n_draws",
]  # fmt: skip


def spend_flags(spend: np.ndarray, history: np.ndarray, channels: tuple[str, ...]) -> list[dict]:
    """Per week, the channels whose spend lies outside their ``[min, max]`` weekly spend in ``history``:
    ``{channel: {"spend", "hist_min", "hist_max"}}`` (empty dict: every channel within its range)."""
    low, high = history.min(axis=0), history.max(axis=0)
    out = []
    for row in spend:
        flags = {
            c: {"spend": float(s), "hist_min": float(lo), "hist_max": float(hi)}
            for c, s, lo, hi in zip(channels, row, low, high, strict=True)
            if s > hi or s < lo
        }
        out.append(flags)
    return out


def track(
    model: StoredModel,
    frame: pd.DataFrame,
    market: str,
    train_end: dt.date,
    rolling_weeks: int = 8,
    max_draws: int | None = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """The tracking rows of ``model`` (the market's champion, fitted up to ``train_end``) for every week of
    ``frame`` (the market's ``marts.fct_modeling_weekly`` rows) after ``train_end`` that has a KPI.

    ``pred_mean`` is the posterior mean of the expected KPI; ``pred_sd``, the intervals and CRPS come from
    the predictive draws (with observation noise). ``error`` is ``actual - pred_mean`` (positive: the
    model under-forecast); ``abs_pct_error`` is
    ``|error| / |actual|``; ``rolling_mape`` the mean ``abs_pct_error`` of this and the previous
    ``rolling_weeks - 1`` tracked weeks; ``z_score`` is ``error / pred_sd``. Empty (with the columns)
    when no week has been tracked yet.
    """
    scaling, spec = model.scaling, model.spec
    rows = frame[frame["market"] == market].sort_values("week")
    rows = rows[rows["kpi"].notna()]
    rows = with_indicators(rows, scaling.controls)  # categorical labels -> the fit's indicators
    data = ModelData.from_frame(rows, market, channels=scaling.channels, controls=scaling.controls)
    after = np.flatnonzero(data.dates > pd.Timestamp(train_end))
    if after.size == 0:
        return pd.DataFrame(columns=TRACKING_COLUMNS)
    first = int(after[0])
    future = data.window(first)
    draws = thin(PosteriorDraws.from_idata(model.idata, spec), max_draws)
    # The same forecast as the plan forecast of a recommendation (model.predict.forecast): observation
    # noise keyed by week, so a week's row does not change when later weeks are added (the whole table is
    # recomputed every time) and matches the plan forecast of that week under the same spend and controls.
    prediction = forecast(draws, scaling, spec, future, data.carry_in(first, spec.l_max), seed)
    kpi_draws = prediction.kpi
    scores = weekly_scores(kpi_draws, future.kpi, future.dates)
    scores["mean"] = prediction.expected.mean(axis=0)  # the forecast: posterior mean of the expected KPI
    actual = scores["observed"].to_numpy(float)
    error = actual - scores["mean"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ape = np.where(actual != 0, np.abs(error) / np.abs(actual), np.nan)
        z = np.where(scores["sd"] > 0, error / scores["sd"].to_numpy(float), np.nan)
    history = data.window(0, first).spend
    flags = spend_flags(future.spend, history, data.channels)
    out = pd.DataFrame(
        {
            "market": market,
            "model_id": model.model_id,
            "train_end": pd.Timestamp(train_end).date(),
            "week": future.dates.date,
            "weeks_since_fit": np.arange(1, future.n_weeks + 1),
            "actual": actual,
            "pred_mean": scores["mean"],
            "pred_sd": scores["sd"],
            "pred_median": scores["median"],
            "pred_50_low": scores["lower_50"],
            "pred_50_high": scores["upper_50"],
            "pred_94_low": scores["lower_94"],
            "pred_94_high": scores["upper_94"],
            "in_50": (scores["lower_50"] <= actual) & (actual <= scores["upper_50"]),
            "in_94": (scores["lower_94"] <= actual) & (actual <= scores["upper_94"]),
            "error": error,
            "abs_pct_error": ape,
            "z_score": z,
            "rolling_mape": pd.Series(ape).rolling(rolling_weeks, min_periods=1).mean().to_numpy(),
            "crps": scores["crps"],
            "n_spend_flags": [len(f) for f in flags],
            "spend_flags": [json.dumps(f) if f else None for f in flags],
            "n_draws": draws.n_draws,
        }
    )
    return out[TRACKING_COLUMNS].reset_index(drop=True)
