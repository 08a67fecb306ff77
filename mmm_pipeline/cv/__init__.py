"""Out-of-sample validation of the MMM: rolling-origin time-slice CV, baselines, parameter stability.

Pure Python (no Dagster): ``folds`` (:class:`CVSpec`, :func:`make_folds`), ``metrics`` (CRPS, MAPE, RMSE,
bias, interval coverage from predictive draws), ``baselines`` (seasonal-naive and ridge with Gaussian
predictive distributions), ``stability`` (per-fold channel parameters and their spread), ``cv``
(:func:`run_fold`, :func:`run_cv`, :func:`combine_folds` and the tables they return;
:func:`run_pooled_fold` for a market group under ``pooling: partial``).

Names load on first use (PEP 562): ``config.py`` reads :class:`~mmm_pipeline.cv.folds.CVConfig` on every
CLI start, and importing ``run`` and ``baselines`` eagerly would pull PyMC in (seconds) for commands such
as ``init`` that never fit anything.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "baselines": ("GaussianForecast", "ridge", "seasonal_naive"),
    "folds": ("CVSpec", "Fold", "folds_frame", "make_folds"),
    "metrics": ("coverage", "forecast_metrics", "summarize", "weekly_scores"),
    "run": (
        "CVResult",
        "FoldResult",
        "combine_folds",
        "cv_model_spec",
        "run_cv",
        "run_fold",
        "run_pooled_fold",
    ),
    "stability": ("channel_stability", "fold_parameters", "parameter_stability"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
