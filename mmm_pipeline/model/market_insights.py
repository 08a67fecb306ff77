"""What a pooled (many-market) MMM says, per market and nationally.

Why a module of its own: the single-market insights (:mod:`~mmm_pipeline.model.insights`) already say
everything per market once each market's posterior is cut out of the joint one
(:func:`~mmm_pipeline.model.pooled.market_posterior`); what is new is the national roll-up, which must be
summed draw by draw (the HDI of a sum is not the sum of HDIs) over the joint posterior. Every table has
the columns of its single-market counterpart plus ``market`` first; the national rows have ``market ==``
:data:`~mmm_pipeline.model.pooled.NATIONAL`. Pure functions: posterior, scalings, spec and data in,
tables out, so they run as well on a champion loaded from storage as on a fresh fit.
"""

from __future__ import annotations

from collections.abc import Mapping

import arviz as az
import numpy as np
import pandas as pd

from mmm_pipeline.model.build import ModelData, ScalingSpec
from mmm_pipeline.model.insights import (
    HDI_PROB,
    channel_draws,
    channel_table,
    curve_table,
    decomposition_parts,
    decomposition_table,
    response_curve_draws,
)
from mmm_pipeline.model.pooled import NATIONAL, market_posterior
from mmm_pipeline.model.predict import PosteriorDraws, predict
from mmm_pipeline.model.spec import ModelSpec


def _with_market(table: pd.DataFrame, market: str) -> pd.DataFrame:
    """``table`` (its named index, e.g. ``channel``, as a column) with ``market`` as the first column."""
    flat = table.reset_index() if table.index.name else table
    return flat.assign(market=market)[["market", *flat.columns]]


def _draws(idata: az.InferenceData, market: str, spec: ModelSpec) -> PosteriorDraws:
    return PosteriorDraws.from_idata(market_posterior(idata, market), spec)


def market_channel_summary(
    idata: az.InferenceData,
    scalings: Mapping[str, ScalingSpec],
    spec: ModelSpec,
    data: Mapping[str, ModelData],
    carry_in: Mapping[str, np.ndarray] | None = None,
    hdi_prob: float = HDI_PROB,
) -> pd.DataFrame:
    """:func:`~mmm_pipeline.model.insights.channel_summary` per market and for the nation, long format:
    ``market, channel, spend, contribution_*, share_*, roas_*, mroas_*``.

    National: spend and contribution summed over markets draw by draw, ROAS their ratio, marginal ROAS
    the extra KPI of 1% more spend in every market over the extra spend (each market's marginal ROAS
    weighted by its spend).
    """
    frames, contribution, gained, spend = [], 0.0, 0.0, 0.0
    channels = next(iter(data.values())).channels
    for market, one in data.items():
        carry = (carry_in or {}).get(market)
        base, mroas = channel_draws(_draws(idata, market, spec), scalings[market], spec, one, carry)
        market_spend = one.spend.sum(axis=0)
        frames.append(_with_market(channel_table(channels, market_spend, base, mroas, hdi_prob), market))
        contribution = contribution + base
        gained = gained + np.where(market_spend > 0, mroas * market_spend, 0.0)
        spend = spend + market_spend
    with np.errstate(divide="ignore", invalid="ignore"):
        national_mroas = gained / spend
    national = channel_table(channels, spend, contribution, national_mroas, hdi_prob)
    return pd.concat([*frames, _with_market(national, NATIONAL)], ignore_index=True)


def market_decomposition(
    idata: az.InferenceData,
    scalings: Mapping[str, ScalingSpec],
    spec: ModelSpec,
    data: Mapping[str, ModelData],
    carry_in: Mapping[str, np.ndarray] | None = None,
    hdi_prob: float = HDI_PROB,
) -> pd.DataFrame:
    """:func:`~mmm_pipeline.model.insights.decomposition` per market and for the nation (each component
    summed over markets draw by draw): ``market, week, component, mean, hdi_low, hdi_high``."""
    frames, total = [], {}
    dates = next(iter(data.values())).dates
    for market, one in data.items():
        carry = (carry_in or {}).get(market)
        parts = decomposition_parts(predict(_draws(idata, market, spec), scalings[market], spec, one, carry))
        frames.append(_with_market(decomposition_table(one.dates, parts, hdi_prob), market))
        total = {name: total.get(name, 0.0) + values for name, values in parts.items()}
    national = decomposition_table(dates, total, hdi_prob)
    return pd.concat([*frames, _with_market(national, NATIONAL)], ignore_index=True)


def market_response_curves(
    idata: az.InferenceData,
    scalings: Mapping[str, ScalingSpec],
    spec: ModelSpec,
    data: Mapping[str, ModelData],
    n_points: int = 25,
    hdi_prob: float = HDI_PROB,
) -> pd.DataFrame:
    """:func:`~mmm_pipeline.model.insights.response_curves` per market (each on its own default grid, 0
    to twice its biggest training week) and for the nation: ``market, channel, weekly_spend, mean,
    hdi_low, hdi_high``.

    The national curve is the summed steady-state contribution of a national weekly spend split over
    the markets in their shares of the channel's spend over ``data``'s weeks (the split the history
    had), on a grid from 0 to twice the sum of the markets' biggest weeks.
    """
    markets = list(data)
    totals = np.stack([data[m].spend.sum(axis=0) for m in markets])  # (M, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(totals.sum(axis=0) > 0, totals / totals.sum(axis=0), 0.0)
    steps = np.linspace(0.0, 2.0, n_points)[:, None]
    national_grid = steps * np.stack([scalings[m].spend_scale for m in markets]).sum(axis=0)[None, :]
    frames, national = [], 0.0
    for i, market in enumerate(markets):
        draws, scaling = _draws(idata, market, spec), scalings[market]
        grid = steps * np.asarray(scaling.spend_scale)[None, :]
        curves = response_curve_draws(draws, scaling, spec, grid)
        frames.append(_with_market(curve_table(scaling.channels, grid, curves, hdi_prob), market))
        national = national + response_curve_draws(draws, scaling, spec, national_grid * shares[i][None, :])
    channels = scalings[markets[0]].channels
    national_table = curve_table(channels, national_grid, national, hdi_prob)
    frames.append(_with_market(national_table, NATIONAL))
    return pd.concat(frames, ignore_index=True)
