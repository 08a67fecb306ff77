"""Out-of-sample validation of the MMM: rolling-origin time-slice CV, baselines, parameter stability.

Pure Python (no Dagster): ``folds`` (:class:`CVSpec`, :func:`make_folds`), ``metrics`` (CRPS, MAPE, RMSE,
bias, interval coverage from predictive draws), ``baselines`` (seasonal-naive and ridge with Gaussian
predictive distributions), ``stability`` (per-fold channel parameters and their spread), ``cv``
(:func:`run_fold`, :func:`run_cv`, :func:`combine_folds` and the tables they return;
:func:`run_pooled_fold` for a market group under ``pooling: partial``).
"""

from mmm_pipeline.cv.baselines import GaussianForecast, ridge, seasonal_naive
from mmm_pipeline.cv.folds import CVSpec, Fold, folds_frame, make_folds
from mmm_pipeline.cv.metrics import coverage, forecast_metrics, summarize, weekly_scores
from mmm_pipeline.cv.run import (
    CVResult,
    FoldResult,
    combine_folds,
    cv_model_spec,
    run_cv,
    run_fold,
    run_pooled_fold,
)
from mmm_pipeline.cv.stability import channel_stability, fold_parameters, parameter_stability

__all__ = [
    "CVResult",
    "CVSpec",
    "Fold",
    "FoldResult",
    "GaussianForecast",
    "channel_stability",
    "combine_folds",
    "coverage",
    "cv_model_spec",
    "folds_frame",
    "fold_parameters",
    "forecast_metrics",
    "make_folds",
    "parameter_stability",
    "ridge",
    "run_cv",
    "run_fold",
    "run_pooled_fold",
    "seasonal_naive",
    "summarize",
    "weekly_scores",
]
