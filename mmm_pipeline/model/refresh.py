"""The weekly refresh without resampling: the last sampled posterior reweighted by the new weeks.

Why: a refit samples the posterior afresh, so its means differ from last week's by their Monte Carlo
error as well as by what the new week says (``benchmarks/bench_refresh.py``). Adding weeks to a model
whose parameters, priors and frozen scaling stay the same multiplies the posterior by the new weeks'
likelihood, so the new posterior is the old one's draws weighted by that likelihood ratio. Pareto-smoothed
importance sampling (PSIS, ArviZ's ``psislw``) estimates it from the same draws every week, and its
Pareto k says when the draws no longer cover the new posterior (above 0.7 the estimate is unreliable and
the market is sampled again): Buerkner, Gabry & Vehtari (2020), "Approximate leave-future-out
cross-validation for Bayesian time series models". The weights are turned back into equally weighted
draws by systematic resampling within each chain with a fixed offset, so every consumer (insight
tables, CV, optimizer, tracking) reads an ordinary posterior, and two refreshes of the same anchor pick
nearly the same draws: their means differ by what the weeks in between said, not by fresh sampling
noise (what is left is the resampling's: ``benchmarks/bench_refresh.py`` prints it per move).

Everything here is pure (no Dagster, no warehouse); :func:`mmm_pipeline.model.refit.refit_market` uses
it when the caller passes an :class:`Anchor`.
"""

from __future__ import annotations

from dataclasses import dataclass

import arviz as az
import numpy as np
import xarray as xr
from scipy import stats

from mmm_pipeline.model.build import ModelData, ScalingSpec
from mmm_pipeline.model.predict import PosteriorDraws, predict
from mmm_pipeline.model.spec import ModelSpec

#: Draw-level statistics that belong to the anchor's log density and would mislead under the new one
#: (the Stein control variates of :func:`mmm_pipeline.model.insights.stein_controls` read them).
ANCHOR_ONLY_STATS = ("gradient", "unconstrained_draw")


@dataclass(frozen=True)
class Anchor:
    """The last posterior that was sampled (not itself reweighted), with the data it was fitted to."""

    model_id: str
    idata: az.InferenceData
    data: ModelData
    """The anchor's training window as the modeling table holds it now (the caller checks it is
    unchanged since the fit: otherwise the likelihood ratio would be against other data)."""


@dataclass(frozen=True)
class ImportanceUpdate:
    """The reweighted posterior and how far it can be trusted."""

    idata: az.InferenceData
    """Equally weighted draws (systematic resampling of the anchor's, chain by chain)."""
    pareto_k: float
    """PSIS's shape estimate: <= 0.7 reliable (Vehtari et al. 2024), larger means sample again."""
    ess: float
    """Importance-sampling effective sample size ``1 / sum(w^2)`` of the normalized weights."""
    weeks_added: int


def log_likelihood(
    idata: az.InferenceData | PosteriorDraws,
    spec: ModelSpec,
    scaling: ScalingSpec,
    data: ModelData,
    carry_in: np.ndarray | None = None,
) -> np.ndarray:
    """``(S,)`` each draw's log likelihood of ``data``'s KPI under the model's noise law (scaled units,
    as the model's ``loglik`` potential)."""
    draws = idata if isinstance(idata, PosteriorDraws) else PosteriorDraws.from_idata(idata, spec)
    scale = scaling.kpi_scale
    mu = predict(draws, scaling, spec, data, carry_in).expected / scale
    y, sigma = np.asarray(data.kpi, dtype=float) / scale, draws.sigma[:, None]
    if draws.nu is None:
        return stats.norm.logpdf(y, mu, sigma).sum(axis=1)
    return stats.t.logpdf(y, draws.nu[:, None], mu, sigma).sum(axis=1)


def importance_weights(log_ratio: np.ndarray) -> tuple[np.ndarray, float]:
    """Normalized PSIS weights ``(S,)`` of the log likelihood ratios, and the Pareto k."""
    smoothed, pareto_k = az.psislw(log_ratio - log_ratio.max(), reff=1.0)
    weights = np.exp(smoothed - smoothed.max())
    return weights / weights.sum(), float(pareto_k)


def systematic_resample(weights: np.ndarray, offset: float = 0.5) -> np.ndarray:
    """Draw indices ``(D,)`` selecting ``D`` equally weighted draws from weights ``(D,)``.

    Systematic resampling (one offset for the whole grid) keeps the draws' order and adds the least
    noise of the standard schemes; a fixed offset makes it deterministic, so weights that change a
    little pick nearly the same draws.
    """
    n, total = len(weights), weights.sum()
    if not total > 0:  # every weight underflowed: only with a Pareto k that rules the update out
        return np.arange(n)
    cumulative = np.cumsum(weights / total) * n
    return np.minimum(np.searchsorted(cumulative, np.arange(n) + offset, side="right"), n - 1)


def resampled(idata: az.InferenceData, weights: np.ndarray) -> az.InferenceData:
    """``idata`` with each chain's draws resampled by its share of ``weights`` (``(chain * draw,)``).

    Chains stay separate so R-hat still compares them; repeated draws lower the ESS ArviZ reports, so
    the gate sees how much the weights cost. The anchor-only statistics (:data:`ANCHOR_ONLY_STATS`)
    are dropped.
    """
    chains, draws = idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]
    per_chain = weights.reshape(chains, draws)
    index = np.stack([systematic_resample(row) for row in per_chain])
    chain_index = xr.DataArray(np.repeat(np.arange(chains)[:, None], draws, axis=1), dims=("chain", "draw"))
    draw_index = xr.DataArray(index, dims=("chain", "draw"))
    groups = {}
    for name in ("posterior", "sample_stats"):
        if name not in idata.groups():
            continue
        dataset = idata[name]
        if name == "sample_stats":
            dataset = dataset.drop_vars([v for v in ANCHOR_ONLY_STATS if v in dataset])
        picked = dataset.isel(chain=chain_index, draw=draw_index)
        groups[name] = picked.assign_coords(chain=dataset["chain"].values, draw=dataset["draw"].values)
    out = az.InferenceData(**groups)
    out.attrs.update(idata.attrs)
    return out


def importance_update(
    anchor: Anchor, spec: ModelSpec, scaling: ScalingSpec, data: ModelData, carry_in: np.ndarray
) -> ImportanceUpdate:
    """The posterior given ``data`` (the anchor's window and the weeks since) from the anchor's draws.

    ``spec``, ``scaling`` and ``carry_in`` must be the anchor's (same model, frozen scaling, same first
    week): then the priors cancel and the ratio of the two posteriors is the likelihood ratio.
    """
    draws = PosteriorDraws.from_idata(anchor.idata, spec)
    log_ratio = log_likelihood(draws, spec, scaling, data, carry_in) - log_likelihood(
        draws, spec, scaling, anchor.data, carry_in
    )
    weights, pareto_k = importance_weights(log_ratio)
    idata = resampled(anchor.idata, weights)
    idata.attrs["refresh_anchor"] = anchor.model_id
    idata.attrs["pareto_k"] = pareto_k
    return ImportanceUpdate(
        idata=idata,
        pareto_k=pareto_k,
        ess=float(1.0 / np.sum(weights**2)),
        weeks_added=data.n_weeks - anchor.data.n_weeks,
    )
