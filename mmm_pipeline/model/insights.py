"""What a fitted MMM says: parameter summaries, decomposition, ROAS, response curves, diagnostics.

All functions are pure: posterior (``arviz.InferenceData``) + frozen scaling + spec + data in, tables
out, so they can run on a champion loaded from storage as well as on a fresh fit. Summaries and HDIs come
from ArviZ; posterior predictive quantities come from :func:`mmm_pipeline.model.predict.predict`.
"""

from __future__ import annotations

from collections.abc import Sequence

import arviz as az
import numpy as np
import pandas as pd

from mmm_pipeline.metrics import crps, hdi, mape
from mmm_pipeline.model import transforms
from mmm_pipeline.model.build import ModelData, ScalingSpec
from mmm_pipeline.model.predict import PosteriorDraws, Prediction, predict
from mmm_pipeline.model.spec import ModelSpec

HDI_PROB = 0.94
#: Relative spend increase used for marginal ROAS (a derivative by finite difference).
_MARGINAL_STEP = 0.01


def _summarise(
    draws: np.ndarray, hdi_prob: float, weights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Mean and HDI of draws ``(S, ...)``; with ``weights`` (:func:`control_variate_weights`) the mean
    is the control-variate mean (linear in the draws, so sums of such means stay sums)."""
    bounds = hdi(draws, hdi_prob)
    if weights is None:
        mean = draws.mean(axis=0)
    else:
        mean = weighted_mean(draws.reshape(draws.shape[0], -1), weights).reshape(draws.shape[1:])
    return {"mean": mean, "hdi_low": bounds[..., 0], "hdi_high": bounds[..., 1]}


def _weights(idata: object, spec: ModelSpec) -> np.ndarray | None:
    """The control-variate weights of a single-market posterior's draws when ``spec.control_variates``
    is on (None: plain means)."""
    if not spec.control_variates or spec.pooling != "none" or not isinstance(idata, az.InferenceData):
        return None
    controls = stein_controls(idata)
    return None if controls is None else control_variate_weights(controls)


def parameter_summary(
    idata: az.InferenceData, var_names: list[str] | None = None, hdi_prob: float = HDI_PROB
) -> pd.DataFrame:
    """Per parameter: mean, sd, HDI bounds, r_hat, ess_bulk, ess_tail (ArviZ), all parameters but ``mu``."""
    if var_names is None:
        var_names = [v for v in idata.posterior.data_vars if v != "mu"]
    table = az.summary(idata, var_names=var_names, hdi_prob=hdi_prob, round_to="none")
    return table[
        ["mean", "sd", *[c for c in table.columns if c.startswith("hdi_")], "r_hat", "ess_bulk", "ess_tail"]
    ]


def decomposition(
    idata: az.InferenceData,
    scaling: ScalingSpec,
    spec: ModelSpec,
    data: ModelData,
    carry_in: np.ndarray | None = None,
    hdi_prob: float = HDI_PROB,
) -> pd.DataFrame:
    """Weekly decomposition in KPI units, long format: ``week, component, mean, hdi_low, hdi_high``.

    Components: ``intercept`` (the baseline), ``trend``, ``seasonality``, ``controls``, one per channel.
    """
    pred = predict(idata, scaling, spec, data, carry_in)
    return decomposition_table(pred.dates, decomposition_parts(pred), hdi_prob, _weights(idata, spec))


def decomposition_parts(pred: Prediction) -> dict[str, np.ndarray]:
    """The draws ``(S, T)`` of each decomposition component (see :func:`decomposition`), by name."""
    parts = dict(pred.components)
    parts.update({c: pred.contributions[:, :, i] for i, c in enumerate(pred.channels)})
    return parts


def decomposition_table(
    dates: pd.DatetimeIndex,
    parts: dict[str, np.ndarray],
    hdi_prob: float = HDI_PROB,
    weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """:func:`decomposition`'s long table from component draws ``(S, T)`` (e.g. summed over markets);
    ``weights``: :func:`control_variate_weights` for control-variate means."""
    frames = [
        pd.DataFrame({"week": dates, "component": name, **_summarise(values, hdi_prob, weights)})
        for name, values in parts.items()
    ]
    return pd.concat(frames, ignore_index=True)


def channel_summary(
    idata: az.InferenceData,
    scaling: ScalingSpec,
    spec: ModelSpec,
    data: ModelData,
    carry_in: np.ndarray | None = None,
    hdi_prob: float = HDI_PROB,
) -> pd.DataFrame:
    """Per channel over the weeks of ``data``: spend, contribution, share of media contribution, ROAS
    (contribution / spend) and marginal ROAS (extra KPI per extra unit of spend at the current plan),
    each with mean and HDI (``<metric>_mean``, ``<metric>_hdi_low``, ``<metric>_hdi_high``).

    Marginal ROAS raises every week's spend of one channel by 1% and divides the KPI gained over the
    window (carry-over included) by the spend added: the slope of the channel's response where it is.
    """
    contribution, mroas = channel_draws(idata, scaling, spec, data, carry_in)
    weights = _weights(idata, spec)
    return channel_table(data.channels, data.spend.sum(axis=0), contribution, mroas, hdi_prob, weights)


def stein_controls(idata: az.InferenceData) -> np.ndarray | None:
    """``(S, P')`` functions of each draw whose posterior mean is exactly zero, from the gradient of the
    log density nutpie stored with the draws (:attr:`ModelSpec.control_variates`); None without them.

    Why: a posterior mean estimated from ``S`` correlated draws carries Monte Carlo error, which is what
    moves a channel's ROAS from one weekly refit to the next when a week of data hardly changes the
    posterior (``benchmarks/bench_refresh.py``). By Stein's identity, for the unconstrained parameters
    ``x`` with log density ``log p``, ``E[d log p / dx_i] = 0`` and ``E[x_i d log p / dx_i + 1] = 0``:
    these zero-mean controls, regressed out of a quantity's draws, leave its mean unbiased (up to
    O(1/S) from fitting the regression on the same draws) with less variance (zero-variance control
    variates, Mira, Solgi & Imparato 2013).
    """
    stats = getattr(idata, "sample_stats", None)
    if stats is None or "gradient" not in stats or "unconstrained_draw" not in stats:
        return None
    gradient = stats["gradient"].to_numpy()
    gradient = gradient.reshape(-1, gradient.shape[-1])
    draws = stats["unconstrained_draw"].to_numpy().reshape(gradient.shape)
    return np.concatenate([gradient, draws * gradient + 1.0], axis=1)


def control_variate_weights(controls: np.ndarray) -> np.ndarray | None:
    """``(S,)`` weights of the draws whose weighted sum is the control-variate mean of any quantity:
    the mean with the zero-mean ``controls`` ``(S, P)`` regressed out by least squares on the centred
    draws. None when the draws are too few for the regression (``S < 4 P``): plain means then.

    Why weights: the regression's fitted correction ``mean(controls) @ coef`` is linear in the
    quantity's draws, ``coef = pinv(centred controls) @ (draws - mean)``, so it folds into one weight
    vector ``1/S - mean(controls) @ pinv(centred controls)`` computed once per posterior (one thin SVD,
    with ``numpy.linalg.lstsq``'s default cut-off for small singular values); every table of a fit then
    costs a matrix product instead of a least-squares solve per quantity.
    """
    n_draws, n_controls = controls.shape
    if n_draws < 4 * n_controls:
        return None
    mean = controls.mean(axis=0)
    u, singular, vt = np.linalg.svd(controls - mean, full_matrices=False)
    cutoff = np.finfo(float).eps * max(n_draws, n_controls) * (singular.max() if singular.size else 0.0)
    inverse = np.divide(1.0, singular, out=np.zeros_like(singular), where=singular > cutoff)
    return 1.0 / n_draws - ((vt @ mean) * inverse) @ u.T


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(C,)`` the weighted mean ``weights @ values`` of draws ``(S, C)``; a column with non-finite
    draws keeps its plain mean (a weighted sum would turn one infinity into nonsense of either sign)."""
    out = values.mean(axis=0).astype(float)
    finite = np.isfinite(values).all(axis=0)
    if finite.any():
        out[finite] = weights @ values[:, finite]
    return out


def control_variate_mean(values: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """``(C,)`` the mean of draws ``values`` ``(S, C)`` with the zero-mean ``controls`` ``(S, P)``
    regressed out (:func:`control_variate_weights`); a column with non-finite draws, or draws too few
    for the regression, keeps its plain mean."""
    weights = control_variate_weights(controls)
    return values.mean(axis=0) if weights is None else weighted_mean(values, weights)


def channel_draws(
    idata: az.InferenceData | PosteriorDraws,
    scaling: ScalingSpec,
    spec: ModelSpec,
    data: ModelData,
    carry_in: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``(S, C)`` of each channel's contribution over ``data``'s weeks and of its marginal ROAS
    (see :func:`channel_summary`): what the summary, or a sum over markets draw by draw, is made of."""
    draws = idata if isinstance(idata, PosteriorDraws) else PosteriorDraws.from_idata(idata, spec)
    base = predict(draws, scaling, spec, data, carry_in).contributions.sum(axis=1)  # (S, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        return base, _marginal_roas(draws, scaling, spec, data, carry_in, base)


def channel_table(
    channels: Sequence[str],
    spend: np.ndarray,
    contribution: np.ndarray,
    mroas: np.ndarray,
    hdi_prob: float = HDI_PROB,
    weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """:func:`channel_summary`'s table from total spend ``(C,)`` and contribution and marginal ROAS
    draws ``(S, C)``; with ``weights`` (:func:`control_variate_weights`) each mean is the control-variate
    mean,
    the intervals stay those of the draws."""
    with np.errstate(divide="ignore", invalid="ignore"):
        metrics = {
            "contribution": contribution,
            "share": contribution / contribution.sum(axis=1, keepdims=True),
            "roas": contribution / spend,
            "mroas": mroas,
        }
    table = pd.DataFrame({"channel": list(channels), "spend": spend})
    for metric, values in metrics.items():
        for stat, column in _summarise(values, hdi_prob, weights).items():
            table[f"{metric}_{stat}"] = column
    return table.set_index("channel")


#: Calendar periods :func:`channel_period_summary` reports, with their pandas period codes.
PERIODS = {"quarter": "Q", "year": "Y"}


def channel_period_summary(
    idata: az.InferenceData,
    scaling: ScalingSpec,
    spec: ModelSpec,
    data: ModelData,
    carry_in: np.ndarray | None = None,
    hdi_prob: float = HDI_PROB,
) -> pd.DataFrame:
    """Per calendar quarter and year of ``data`` and per channel: spend, contribution, share of media
    contribution and ROAS, each with mean and HDI computed from the posterior draws of the period's sum.

    Why from draws: the HDI of a sum is not the sum of weekly HDIs (that would be far too wide), and a
    period's ROAS interval needs the joint draws of its weeks. A week belongs to the period holding its
    start date; its contribution includes carry-over from earlier spend (as in :func:`channel_summary`,
    ROAS = contribution in the period's weeks / spend in those weeks). ``complete`` says whether the
    window holds every week starting in the period (a partial first or last period is still reported).
    """
    contributions = predict(idata, scaling, spec, data, carry_in).contributions  # (S, T, C)
    weights = _weights(idata, spec)
    dates = pd.DatetimeIndex(data.dates)
    step = pd.Timedelta(weeks=1)
    frames = []
    for period_type, code in PERIODS.items():
        labels = dates.to_period(code)
        for period in labels.unique():
            mask = np.asarray(labels == period)
            weeks = dates[mask]
            start, end = period.start_time.normalize(), period.end_time.normalize()
            spend = data.spend[mask].sum(axis=0)
            contribution = contributions[:, mask, :].sum(axis=1)  # (S, C)
            with np.errstate(divide="ignore", invalid="ignore"):
                metrics = {
                    "contribution": contribution,
                    "share": contribution / contribution.sum(axis=1, keepdims=True),
                    "roas": contribution / spend,
                }
            table = pd.DataFrame(
                {
                    "period_type": period_type,
                    "period": str(period).replace("Q", "-Q"),
                    "period_start": start.date(),
                    "period_end": end.date(),
                    "first_week": weeks[0].date(),
                    "last_week": weeks[-1].date(),
                    "n_weeks": int(mask.sum()),
                    "complete": bool(weeks[0] - step < start and weeks[-1] + step > end),
                    "channel": list(data.channels),
                    "spend": spend,
                }
            )
            for metric, values in metrics.items():
                for stat, column in _summarise(values, hdi_prob, weights).items():
                    table[f"{metric}_{stat}"] = column
            frames.append(table)
    return pd.concat(frames, ignore_index=True)


def _marginal_roas(
    draws: PosteriorDraws,
    scaling: ScalingSpec,
    spec: ModelSpec,
    data: ModelData,
    carry_in: np.ndarray | None,
    base: np.ndarray,
) -> np.ndarray:
    out = np.empty_like(base)
    for i in range(len(data.channels)):
        bumped = data.spend.copy()
        bumped[:, i] *= 1 + _MARGINAL_STEP
        window = ModelData(data.dates, bumped, data.controls, data.kpi, data.channels, data.control_names)
        gained = (
            predict(draws, scaling, spec, window, carry_in).contributions[:, :, i].sum(axis=1) - base[:, i]
        )
        out[:, i] = gained / (_MARGINAL_STEP * data.spend[:, i].sum())
    return out


def response_curves(
    idata: az.InferenceData,
    scaling: ScalingSpec,
    spec: ModelSpec,
    spend_grid: np.ndarray | None = None,
    n_points: int = 25,
    hdi_prob: float = HDI_PROB,
) -> pd.DataFrame:
    """Weekly contribution of a constant weekly spend once adstock has built up (steady state), per channel.

    ``spend_grid`` ``(G, C)`` in currency; default ``G = n_points`` levels from 0 to twice each channel's
    biggest training week. Long format: ``channel, weekly_spend, mean, hdi_low, hdi_high``. With
    normalized adstock weights a constant spend adstocks to itself, so the curve is
    ``beta * saturation(spend / spend_scale)`` in KPI units.
    """
    if spend_grid is None:
        spend_grid = np.linspace(0.0, 2.0, n_points)[:, None] * np.asarray(scaling.spend_scale)[None, :]
    curves = response_curve_draws(idata, scaling, spec, spend_grid)
    return curve_table(scaling.channels, spend_grid, curves, hdi_prob)


def response_curve_draws(
    idata: az.InferenceData | PosteriorDraws, scaling: ScalingSpec, spec: ModelSpec, spend_grid: np.ndarray
) -> np.ndarray:
    """Draws ``(S, G, C)`` of the steady-state weekly contribution at each row of ``spend_grid`` ``(G, C)``
    (see :func:`response_curves`)."""
    draws = idata if isinstance(idata, PosteriorDraws) else PosteriorDraws.from_idata(idata, spec)
    scaled = scaling.scale_spend(spend_grid)[:, None, :]  # (G, 1, C) against (S, C) parameters
    curves = scaling.kpi_scale * draws.beta * draws.saturate(scaled)
    return np.moveaxis(curves, 0, 1)


def curve_table(
    channels: Sequence[str], spend_grid: np.ndarray, curves: np.ndarray, hdi_prob: float = HDI_PROB
) -> pd.DataFrame:
    """:func:`response_curves`' long table from a grid ``(G, C)`` and curve draws ``(S, G, C)``."""
    stats = _summarise(curves, hdi_prob)
    frames = [
        pd.DataFrame(
            {"channel": c, "weekly_spend": spend_grid[:, i], **{k: v[:, i] for k, v in stats.items()}}
        )
        for i, c in enumerate(channels)
    ]
    return pd.concat(frames, ignore_index=True)


def adstock_weights(idata: az.InferenceData, spec: ModelSpec, hdi_prob: float = HDI_PROB) -> pd.DataFrame:
    """Share of a week's spend acting ``lag`` weeks later, per channel: ``channel, lag, mean, hdi_*``."""
    draws = PosteriorDraws.from_idata(idata, spec)
    weights = transforms.adstock_weights(spec.adstock, spec.l_max, alpha=draws.alpha, theta=draws.theta)
    stats = _summarise(np.moveaxis(weights, 0, 1), hdi_prob)  # (S, L, C) draws first
    channels = list(idata.posterior["alpha"].coords["channel"].to_numpy())
    frames = [
        pd.DataFrame({"channel": c, "lag": np.arange(spec.l_max), **{k: v[:, i] for k, v in stats.items()}})
        for i, c in enumerate(channels)
    ]
    return pd.concat(frames, ignore_index=True)


def fit_metrics(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """R², MAPE (:func:`mmm_pipeline.metrics.mape`) and NRMSE (RMSE over the observed range)."""
    observed, predicted = np.asarray(observed, dtype=float), np.asarray(predicted, dtype=float)
    residual = observed - predicted
    return {
        "r2": float(1 - (residual**2).sum() / ((observed - observed.mean()) ** 2).sum()),
        "mape": mape(observed, predicted),
        "nrmse": float(np.sqrt(np.mean(residual**2)) / (observed.max() - observed.min())),
    }


def forecast_metrics(prediction: Prediction, observed: np.ndarray) -> dict[str, float]:
    """Out-of-sample scores: MAPE of the predictive mean and mean CRPS of the predictive draws (KPI units)."""
    return {
        "mape": fit_metrics(observed, prediction.kpi.mean(axis=0))["mape"],
        "crps": float(crps(prediction.kpi, observed).mean()),
    }


def diagnostics(
    idata: az.InferenceData,
    scaling: ScalingSpec,
    spec: ModelSpec,
    data: ModelData,
    carry_in: np.ndarray | None = None,
) -> dict[str, float]:
    """Convergence (max R-hat, min bulk/tail ESS, divergences) and in-sample fit (R², MAPE, NRMSE)."""
    table = parameter_summary(idata)
    expected = predict(idata, scaling, spec, data, carry_in).expected.mean(axis=0)
    return {
        "max_r_hat": float(table["r_hat"].max()),
        "min_ess_bulk": float(table["ess_bulk"].min()),
        "min_ess_tail": float(table["ess_tail"].min()),
        "divergences": int(idata.sample_stats["diverging"].sum()),
        "n_draws": int(idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]),
        **fit_metrics(data.kpi, expected),
    }
