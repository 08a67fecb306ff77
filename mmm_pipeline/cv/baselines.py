"""Baseline forecasts the MMM has to beat, with Gaussian predictive distributions.

Both baselines see only the fold's training weeks (the ridge also sees the test weeks' spend and
controls, as the MMM does). Each returns a :class:`GaussianForecast`: a mean and a standard deviation
per test week, i.e. the predictive distribution ``Normal(mean, sd)``. :meth:`GaussianForecast.draws`
samples it so that CRPS and interval coverage are computed by the same draw-based code as the MMM's
(with 4000 draws the sampled CRPS is within about 1% of the closed form).

* **Seasonal-naive**: the KPI ``season_length`` (52) weeks earlier, i.e. last year's same week; for
  ``h > 52`` weeks ahead the last observed year is repeated. Its sd is the RMS of the in-sample
  seasonal differences ``y_t - y_{t-52}``, times ``sqrt(k + 1)`` for ``k = floor((h - 1) / 52)`` whole
  years of extrapolation (Hyndman & Athanasopoulos, FPP3 5.5). With fewer than ``season_length + 2``
  training weeks it falls back to the naive forecast (last value, sd of the weekly differences times
  ``sqrt(h)``) and says so in :attr:`GaussianForecast.method`.
* **Ridge**: linear regression of the KPI on the MMM's inputs without its media transforms: spend per
  channel, controls, the same calendar Fourier terms, a linear trend. Features are standardized on the
  training weeks; the penalty is chosen by time-ordered CV (``TimeSeriesSplit``, standardization
  refitted inside each split). Its sd is the residual sd of the training fit with the ridge's
  effective degrees of freedom removed, ``sqrt(RSS / (n - df))``, ``df = 1 + sum d_j^2 / (d_j^2 +
  alpha)`` over the singular values ``d_j`` of the centred standardized features (parameter
  uncertainty is ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmm_pipeline.model.build import ModelData, fourier_features

#: Ridge penalties searched (on standardized features).
RIDGE_ALPHAS = np.logspace(-3, 4, 36)


@dataclass(frozen=True)
class GaussianForecast:
    """Predictive ``Normal(mean, sd)`` per test week; ``method`` names what produced it."""

    mean: np.ndarray
    sd: np.ndarray
    method: str

    def draws(self, n_draws: int, seed: int | None = 0) -> np.ndarray:
        """``(n_draws, T)`` samples of the predictive distribution."""
        z = np.random.default_rng(seed).standard_normal((n_draws, self.mean.shape[0]))
        return self.mean[None, :] + z * self.sd[None, :]


def seasonal_naive(train_kpi: np.ndarray, horizon: int, season_length: int = 52) -> GaussianForecast:
    """Seasonal-naive forecast of the ``horizon`` weeks after ``train_kpi`` (see the module doc)."""
    y = np.asarray(train_kpi, dtype=float)
    n = y.shape[0]
    if not np.isfinite(y).all():
        raise ValueError("seasonal-naive needs a finite training KPI")
    steps = np.arange(1, horizon + 1)
    if n >= season_length + 2:
        k = (steps - 1) // season_length
        mean = y[n - season_length * (k + 1) + (steps - 1) % season_length]
        residual = y[season_length:] - y[:-season_length]
        sd = np.sqrt(np.mean(residual**2)) * np.sqrt(k + 1)
        method = f"seasonal_naive(lag={season_length})"
    elif n >= 3:
        mean = np.full(horizon, y[-1])
        sd = np.sqrt(np.mean(np.diff(y) ** 2)) * np.sqrt(steps)
        method = f"naive (only {n} training weeks < season_length + 2 = {season_length + 2})"
    else:
        raise ValueError(f"a baseline needs at least 3 training weeks, got {n}")
    return GaussianForecast(mean.astype(float), sd.astype(float), method)


def ridge_features(data: ModelData, n_fourier: int, trend_origin: np.datetime64 | None = None) -> np.ndarray:
    """``(T, F)``: spend per channel, controls, ``2 n_fourier`` Fourier terms, weeks since ``trend_origin``
    (the first training week; default ``data``'s first week)."""
    origin = data.dates[0] if trend_origin is None else trend_origin
    trend = ((data.dates - origin).days.to_numpy(dtype=float) / 7.0)[:, None]
    return np.concatenate([data.spend, data.controls, fourier_features(data.dates, n_fourier), trend], axis=1)


def ridge(
    train: ModelData,
    test: ModelData,
    n_fourier: int = 2,
    alphas: np.ndarray = RIDGE_ALPHAS,
    n_splits: int = 5,
) -> GaussianForecast:
    """Ridge forecast of ``test``'s weeks from a fit on ``train`` (see the module doc)."""
    if train.kpi is None or not np.isfinite(train.kpi).all():
        raise ValueError("ridge needs a finite training KPI")
    x_train = ridge_features(train, n_fourier)
    x_test = ridge_features(test, n_fourier, trend_origin=train.dates[0])
    y = train.kpi.astype(float)
    n = y.shape[0]
    splits = min(n_splits, n // 8)
    if splits >= 2:
        search = GridSearchCV(
            make_pipeline(StandardScaler(), Ridge()),
            {"ridge__alpha": list(alphas)},
            cv=TimeSeriesSplit(n_splits=splits),
            scoring="neg_mean_squared_error",
        )
        search.fit(x_train, y)
        alpha = float(search.best_params_["ridge__alpha"])
    else:
        alpha = 1.0
    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x_train, y)
    residual = y - model.predict(x_train)
    z = model[0].transform(x_train)
    singular = np.linalg.svd(z - z.mean(axis=0), compute_uv=False)
    df = 1.0 + float(np.sum(singular**2 / (singular**2 + alpha)))
    sd = np.sqrt(np.sum(residual**2) / max(n - df, 1.0))
    mean = model.predict(x_test)
    return GaussianForecast(mean.astype(float), np.full(mean.shape[0], sd), f"ridge(alpha={alpha:.3g})")
