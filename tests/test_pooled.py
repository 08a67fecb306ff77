"""The partially pooled model of a market group: config, data stacking, a real (tiny) nutpie fit, the
per-market and national outputs, and shrinkage of a noisy market toward the national values.

One small world (3 markets x 60 weeks, one of them small and noisy) is fitted once with nutpie, pooled,
and its noisy market once alone; every check reads those two posteriors. The fitted checks are ``slow``
(two compiles); the graph, stacking and config checks run in the default suite.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mmm_pipeline.cv.folds import CVSpec
from mmm_pipeline.cv.run import run_pooled_fold
from mmm_pipeline.model.build import ModelData, ScalingSpec
from mmm_pipeline.model.calibration import LiftTests
from mmm_pipeline.model.fit import FitResult, ModelCache, fit
from mmm_pipeline.model.insights import channel_summary, decomposition, response_curves
from mmm_pipeline.model.market_insights import (
    market_channel_summary,
    market_decomposition,
    market_response_curves,
)
from mmm_pipeline.model.pooled import (
    NATIONAL,
    PooledFitResult,
    check_group,
    fit_pooled,
    market_posterior,
    pooled_inputs,
)
from mmm_pipeline.model.predict import predict
from mmm_pipeline.model.spec import ModelSpec, SamplerSpec
from mmm_testkit.adapters import model_data
from mmm_testkit.markets import GeoWorld, generate_geo_world

N_WEEKS = 60
SPEC = ModelSpec(l_max=4, n_fourier=1, sampler=SamplerSpec(chains=2, draws=200, tune=300, seed=3))
POOLED = SPEC.model_copy(update={"pooling": "partial"})


@pytest.fixture(scope="module")
def geo() -> GeoWorld:
    return generate_geo_world(3, seed=5, n_weeks=N_WEEKS, noisy_share=0.2, lift_tests_per_channel=1)


@pytest.fixture(scope="module")
def data(geo) -> dict[str, ModelData]:
    return {m: model_data(geo.world, m) for m in geo.markets}


@pytest.fixture(scope="module")
def ordinary(geo) -> str:
    return next(m for m in geo.markets if m not in geo.noisy)


@pytest.fixture(scope="module")
def pooled(data, geo, ordinary) -> PooledFitResult:
    # Lift tests in one ordinary market only: they must attach to it, and leave the noisy one to pooling.
    tests = {ordinary: LiftTests.from_frame(geo.world.lift_tests, ordinary)}
    return fit_pooled(data, POOLED, lift_tests=tests, cache=ModelCache())


@pytest.fixture(scope="module")
def alone(data, geo) -> FitResult:
    return fit(data[geo.noisy[0]], SPEC, cache=ModelCache())


def test_pooling_is_validated_and_kept_out_of_existing_structure_keys():
    assert ModelSpec().pooling == "none"
    assert "pooling" not in ModelSpec().model_dump()  # existing specs' keys and config hashes unchanged
    assert "market_varying" not in ModelSpec().model_dump()
    assert "partial" in POOLED.structure_key() and POOLED.structure_key() != SPEC.structure_key()
    with pytest.raises(ValidationError, match="pooling"):
        ModelSpec(pooling="full")
    assert ModelSpec.model_validate({"pooling": "partial"}).pooling == "partial"


def test_each_fit_refuses_the_other_pooling(data, geo):
    one = data[geo.markets[0]]
    with pytest.raises(ValueError, match="fit_pooled"):
        fit(one, POOLED)
    with pytest.raises(ValueError, match="pooling: none"):
        fit_pooled(data, SPEC)


def test_a_group_needs_the_same_weeks_and_no_market_named_national(data, geo):
    first, second = geo.markets[:2]
    with pytest.raises(ValueError, match=f"market '{second}' has weeks .* the same weeks"):
        check_group({first: data[first], second: data[second].window(0, N_WEEKS - 1)})
    with pytest.raises(ValueError, match="national"):
        check_group({NATIONAL: data[first]})


def test_inputs_stack_markets_after_time_with_each_market_own_scaling(data, geo, ordinary):
    scalings = {m: ScalingSpec.from_data(d) for m, d in data.items()}
    tests = LiftTests.from_frame(geo.world.lift_tests, ordinary)
    inputs = pooled_inputs(data, scalings, POOLED, lift_tests={ordinary: tests})
    n_time, markets = 65, geo.markets  # 60 weeks padded to a multiple of 13
    assert inputs["media"].shape == (n_time, 3, 5) and inputs["y"].shape == (n_time, 3)
    assert inputs["media_init"].shape == (3, 3, 5) and inputs["saturation_unit"].shape == (3, 5)
    for i, m in enumerate(markets):
        np.testing.assert_allclose(inputs["y"][:N_WEEKS, i], data[m].kpi / scalings[m].kpi_scale)
        assert inputs["mask"][:, i].sum() == N_WEEKS and inputs["media"][:N_WEEKS, i].max() == 1.0
    assert len(inputs["lift_x"]) == 8 and inputs["lift_mask"].sum() == len(tests) == 5
    assert set(inputs["lift_market"][: len(tests)]) == {markets.index(ordinary)}
    np.testing.assert_allclose(inputs["lift_y"][: len(tests)], tests.lift / scalings[ordinary].kpi_scale)
    with pytest.raises(ValueError, match="lift tests name markets"):
        pooled_inputs(data, scalings, POOLED, lift_tests={"elsewhere": tests})


@pytest.mark.slow  # two nutpie compiles (pooled and alone): about a minute on idle cores
def test_pooled_fit_samples_and_each_market_view_is_a_single_market_posterior(pooled, data, geo):
    post = pooled.idata.posterior
    assert list(post.coords["market"].to_numpy()) == geo.markets
    assert post["beta_channel"].dims == ("chain", "draw", "market", "channel")
    assert post["beta_channel_national"].dims == ("chain", "draw", "channel")
    assert int(pooled.idata.sample_stats["diverging"].sum()) <= 10
    assert post["lift_expected"].shape[-1] == 8
    for i, market in enumerate(geo.markets):
        view = market_posterior(pooled.idata, market)
        assert view.posterior["beta_channel"].dims == ("chain", "draw", "channel")
        assert view.posterior["intercept"].dims == ("chain", "draw")
        assert ScalingSpec.model_validate_json(view.attrs["scaling"]) == pooled.scalings[market]
        # The graph's mean and the NumPy predictor agree market by market: same equation, same scaling.
        expected = predict(view, pooled.scalings[market], POOLED, data[market]).expected
        mu = post["mu"].isel(market=i).to_numpy().reshape(-1, pooled.n_time)[:, :N_WEEKS]
        np.testing.assert_allclose(expected / pooled.scalings[market].kpi_scale, mu, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="not in the pooled posterior"):
        market_posterior(pooled.idata, "elsewhere")


@pytest.mark.slow  # two nutpie compiles (pooled and alone): about a minute on idle cores
def test_outputs_per_market_and_national_roll_up(pooled, data, geo):
    args = (pooled.idata, pooled.scalings, POOLED, pooled.data, pooled.carry_in)
    first = geo.markets[0]
    single_columns = channel_summary(
        market_posterior(pooled.idata, first), pooled.scalings[first], POOLED, data[first]
    ).reset_index()
    table = market_channel_summary(*args)
    assert list(table.columns) == ["market", *single_columns.columns]
    assert len(table) == 4 * 5 and list(table["market"].unique()) == [*geo.markets, NATIONAL]
    by = table.set_index(["market", "channel"])
    national = by.loc[NATIONAL]
    markets = by.drop(index=NATIONAL, level="market")
    summed = markets.groupby(level="channel")[["spend", "contribution_mean"]].sum()
    np.testing.assert_allclose(national.loc[summed.index, "spend"], summed["spend"])
    np.testing.assert_allclose(national.loc[summed.index, "contribution_mean"], summed["contribution_mean"])
    assert (national["roas_hdi_low"] <= national["roas_mean"]).all()
    assert (national["roas_mean"] <= national["roas_hdi_high"]).all()
    # National ROAS lies within the markets' range, and so does its marginal ROAS.
    for metric in ("roas_mean", "mroas_mean"):
        spread = markets[metric].groupby(level="channel").agg(["min", "max"]).reindex(national.index)
        assert (national[metric] >= spread["min"] - 1e-9).all()
        assert (national[metric] <= spread["max"] + 1e-9).all()

    parts = market_decomposition(*args)
    single = decomposition(market_posterior(pooled.idata, first), pooled.scalings[first], POOLED, data[first])
    assert list(parts.columns) == ["market", *single.columns] and len(parts) == 4 * len(single)
    weekly = parts.groupby(["market", "week", "component"])["mean"].sum().unstack("market")
    np.testing.assert_allclose(weekly[NATIONAL], weekly[geo.markets].sum(axis=1))

    curves = market_response_curves(pooled.idata, pooled.scalings, POOLED, pooled.data, n_points=5)
    one = response_curves(market_posterior(pooled.idata, first), pooled.scalings[first], POOLED, n_points=5)
    assert list(curves.columns) == ["market", *one.columns] and len(curves) == 4 * len(one)
    pd.testing.assert_frame_equal(
        curves[curves["market"] == first].drop(columns="market").reset_index(drop=True), one
    )
    rising = curves.groupby(["market", "channel"])["mean"].apply(lambda s: bool(np.all(np.diff(s) >= 0)))
    assert rising.all()


@pytest.mark.slow  # two nutpie compiles (pooled and alone): about a minute on idle cores
def test_a_noisy_market_is_pulled_toward_the_national_values(pooled, alone, data, geo):
    """Partial pooling: the noisy market's ROAS is closer to the national ROAS, and surer, than alone."""
    noisy = geo.noisy[0]
    table = market_channel_summary(pooled.idata, pooled.scalings, POOLED, pooled.data).set_index(
        ["market", "channel"]
    )
    national, pooled_noisy = table.loc[NATIONAL], table.loc[noisy]
    single = channel_summary(alone.idata, alone.scaling, SPEC, data[noisy])
    distance_pooled = (pooled_noisy["roas_mean"] - national["roas_mean"]).abs()
    distance_alone = (single["roas_mean"] - national["roas_mean"]).abs()
    width_pooled = pooled_noisy["roas_hdi_high"] - pooled_noisy["roas_hdi_low"]
    width_alone = single["roas_hdi_high"] - single["roas_hdi_low"]
    assert distance_pooled.sum() < distance_alone.sum()
    assert (width_pooled < width_alone).sum() >= 4
    # On the parameter scale: the market's effects sit nearer the national ones than its own fit's do.
    post = pooled.idata.posterior
    log_national = np.log(post["beta_channel_national"]).mean(("chain", "draw")).to_numpy()
    log_pooled = np.log(post["beta_channel"].sel(market=noisy)).mean(("chain", "draw")).to_numpy()
    log_alone = np.log(alone.idata.posterior["beta_channel"]).mean(("chain", "draw")).to_numpy()
    assert np.abs(log_pooled - log_national).sum() < np.abs(log_alone - log_national).sum()


def test_pooled_graph_matches_numpy_prediction_and_reads_each_lift_test_on_its_market(data, geo):
    """Prior draws of a pooled graph with both curve families, delayed adstock and lift tests in two
    markets: each market's ``mu`` is the NumPy prediction of its view, and each lift test is read on its
    own market's curve (no sampling, no numba: PyTensor's fast compile mode)."""
    import arviz as az
    import pymc as pm

    from mmm_pipeline.model.pooled import build_pooled_model, scalings_attr
    from mmm_pipeline.model.predict import PosteriorDraws

    kinds = {"tv": "hill", "search": "logistic", "display": "logistic", "social": "hill", "radio": "logistic"}
    spec = POOLED.model_copy(update={"saturation_by_channel": kinds, "adstock": "delayed"})
    markets = geo.markets
    scalings = {m: ScalingSpec.from_data(d) for m, d in data.items()}
    tests = {m: LiftTests.from_frame(geo.world.lift_tests, m) for m in markets[1:]}
    inputs = pooled_inputs(data, scalings, spec, lift_tests=tests)
    model = build_pooled_model(inputs, markets, scalings[markets[0]], spec)
    assert list(model.coords["channel_hill"]) == ["tv", "social"]
    with model:
        prior = pm.sample_prior_predictive(draws=10, random_seed=4, compile_kwargs={"mode": "FAST_COMPILE"})
    idata = az.InferenceData(posterior=prior.prior, attrs={"scalings": scalings_attr(scalings)})
    lift = prior.prior["lift_expected"].to_numpy().reshape(10, -1)
    row = 0
    for i, market in enumerate(markets):
        view = market_posterior(idata, market)
        assert ScalingSpec.model_validate_json(view.attrs["scaling"]) == scalings[market]
        draws = PosteriorDraws.from_idata(view, spec)
        mu = prior.prior["mu"].to_numpy()[0, :, :N_WEEKS, i]
        expected = predict(view, scalings[market], spec, data[market]).expected
        np.testing.assert_allclose(expected, mu * scalings[market].kpi_scale, rtol=1e-6)
        if market not in tests:
            continue
        for j in range(len(tests[market])):
            c = data[market].channels.index(tests[market].channel[j])
            x_old, x_new = inputs["lift_x"][row], inputs["lift_x_new"][row]
            assert inputs["lift_market"][row] == i
            rise = draws.saturate(np.full(5, x_new))[:, c] - draws.saturate(np.full(5, x_old))[:, c]
            np.testing.assert_allclose(lift[:, row], draws.beta[:, c] * rise, rtol=1e-6)
            row += 1
    assert row == sum(len(t) for t in tests.values())


def test_the_national_effect_keeps_its_prior_in_the_sampler_s_coordinate(data, geo):
    """The national channel effect is sampled as the log of the national contribution's rise from a low
    to a high week of spend: prior draws of ``beta_channel_national`` must still follow the single-market
    prior (HalfNormal, sigma scaled by the markets' mean spend share), and the sampled coordinate must be
    ``log beta`` plus the log rise of the national Hill curve between those weeks (no sampling,
    PyTensor's fast compile mode)."""
    import pymc as pm
    from scipy import stats

    from mmm_pipeline.model.pooled import build_pooled_model
    from mmm_pipeline.model.spec import HALFNORMAL_UNIT_SD

    markets = geo.markets
    scalings = {m: ScalingSpec.from_data(d) for m, d in data.items()}
    inputs = pooled_inputs(data, scalings, POOLED)
    model = build_pooled_model(inputs, markets, scalings[markets[0]], POOLED)
    with model:
        prior = pm.sample_prior_predictive(draws=4000, random_seed=8, compile_kwargs={"mode": "FAST_COMPILE"})
    draws = prior.prior
    sigma = HALFNORMAL_UNIT_SD * inputs["beta_prior_scale"].mean(axis=0)
    for c, channel in enumerate(data[markets[0]].channels):
        beta = draws["beta_channel_national"].sel(channel=channel).to_numpy().ravel()
        assert stats.kstest(beta, stats.halfnorm(scale=sigma[c]).cdf).pvalue > 0.001, channel
        k = draws["half_sat_typical_national"].sel(channel=channel).to_numpy().ravel()
        s = draws["slope_national"].sel(channel=channel).to_numpy().ravel()
        points = inputs["national_spend_points"][:, c]
        ratio = (points[None, :] / k[:, None]) ** s[:, None]
        low, high = (ratio / (1 + ratio)).T
        sampled = draws["log_national_contribution_rise"].sel(channel=channel).to_numpy().ravel()
        np.testing.assert_allclose(sampled, np.log(beta) + np.log(high - low), rtol=1e-6, atol=1e-9)


def test_only_the_market_varying_parameters_vary_by_market(data, geo):
    """By default every market shares the national Hill slope (no spread, no deviations), and draws its
    effect, half-saturation and decay around the national ones; naming ``slope`` in
    ``market_varying`` gives it a spread too, and leaving ``beta_channel`` out shares the effect."""
    import pymc as pm

    from mmm_pipeline.model.pooled import build_pooled_model

    markets = geo.markets
    scalings = {m: ScalingSpec.from_data(d) for m, d in data.items()}
    inputs = pooled_inputs(data, scalings, POOLED)
    assert "slope" not in POOLED.market_varying and "beta_channel" in POOLED.market_varying
    for varying, spread_vars, shared in [
        (POOLED.market_varying, {"alpha", "half_sat_typical", "beta_channel"}, ["slope"]),
        (("slope", "alpha", "half_sat"), {"alpha", "half_sat_typical", "slope"}, ["beta_channel"]),
    ]:
        spec = POOLED.model_copy(update={"market_varying": varying})
        model = build_pooled_model(inputs, markets, scalings[markets[0]], spec)
        names = set(model.named_vars)
        assert {n.removesuffix("_market_sd") for n in names if n.endswith("_market_sd")} == spread_vars
        assert {n.removesuffix("_z") for n in names if n.endswith("_z")} == spread_vars
        with model:
            prior = pm.sample_prior_predictive(
                draws=20, random_seed=2, var_names=[*shared, *(f"{n}_national" for n in shared)],
                compile_kwargs={"mode": "FAST_COMPILE"},
            )  # fmt: skip
        for name in shared:
            by_market = prior.prior[name].to_numpy()  # (chain, draw, market, channel)
            national = prior.prior[f"{name}_national"].to_numpy()[:, :, None, :]
            np.testing.assert_allclose(by_market, np.broadcast_to(national, by_market.shape), rtol=1e-12)


def test_a_pooled_fold_that_cannot_fit_fails_the_mmm_in_every_market_and_scores_the_baselines(data, geo):
    # Lift tests of a market outside the group: the fold's pooled fit is refused before it samples.
    stray = {"elsewhere": LiftTests.from_frame(geo.world.lift_tests, geo.markets[0])}
    cv = CVSpec(n_folds=1, min_train_weeks=40, horizon=8, step=8, baseline_draws=200)
    results = run_pooled_fold(data, 0, POOLED, cv, lift_tests=stray)
    assert list(results) == geo.markets
    for result in results.values():
        assert result.status == "failed" and "lift tests name markets" in result.error
        metrics = result.metrics.set_index("model")
        assert metrics.loc["mmm", "status"] == "failed"
        assert (metrics.loc[["seasonal_naive", "ridge"], "status"] == "ok").all()
