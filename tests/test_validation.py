"""Rolling-origin CV of the MMM: fold layout and leakage, metrics, baselines, stability, failed folds.

One small CV run (3 folds on a 130-week synthetic world, 2 chains x 200 draws) is shared by the module;
the leakage and failure tests refit single folds on the same compiled graph (same module cache, same
padded length). Everything else is NumPy / scikit-learn only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mmm_pipeline.cv import (
    CVSpec,
    Fold,
    GaussianForecast,
    combine_folds,
    coverage,
    forecast_metrics,
    make_folds,
    ridge,
    run_cv,
    run_fold,
    seasonal_naive,
    summarize,
    weekly_scores,
)
from mmm_pipeline.cv import run as cv_module
from mmm_pipeline.model.build import SATURATION_PARAMS, ModelData, ScalingSpec
from mmm_pipeline.model.fit import ModelCache
from mmm_pipeline.model.spec import ModelSpec, SamplerSpec
from mmm_testkit.adapters import model_data
from mmm_testkit.synthetic import generate_world

N_WEEKS = 130
SPEC = ModelSpec(l_max=8, n_fourier=2, sampler=SamplerSpec(chains=2, draws=200, tune=200, seed=1))
CV = CVSpec(n_folds=3, min_train_weeks=78, horizon=13, step=13)
BASELINES_ONLY = CV.model_copy(update={"models": ("seasonal_naive", "ridge")})


@pytest.fixture(scope="module")
def data() -> ModelData:
    return model_data(generate_world(seed=1, n_weeks=N_WEEKS))


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


@pytest.fixture(scope="module")
def result(data, cache):
    return run_cv(data, SPEC, CV, cache=cache, keep_fits=True)


def poisoned(data: ModelData, cut: int, kpi: float = 1e12, spend_factor: float = 1.0) -> ModelData:
    """``data`` with every week from ``cut`` on given an absurd KPI (and optionally scaled spend)."""
    # order="K" keeps the memory layout: column sums (spend shares) then agree to the last bit.
    new_kpi, new_spend = data.kpi.copy(), data.spend.copy(order="K")
    new_kpi[cut:] = kpi
    new_spend[cut:] *= spend_factor
    return ModelData(data.dates, new_spend, data.controls, new_kpi, data.channels, data.control_names)


# --- folds --------------------------------------------------------------------------------------------


def test_folds_expand_and_end_at_the_last_week():
    folds = make_folds(N_WEEKS, CV)
    assert [f.cut for f in folds] == [91, 104, 117]
    assert folds[-1].test_stop == N_WEEKS and folds[0].n_train == 91 >= CV.min_train_weeks
    for f in folds:
        assert f.train_start == 0 and f.n_test == CV.horizon
        assert max(f.train_weeks) < min(f.test_weeks), "a test week inside the training window"
        assert set(f.train_weeks).isdisjoint(f.test_weeks)
    # Defaults: 4 quarterly folds after two years.
    default = make_folds(200)
    assert len(default) == 4 and [f.cut for f in default] == [148, 161, 174, 187]


def test_too_short_data_names_the_settings():
    with pytest.raises(ValueError, match=r"min_train_weeks.*needs at least .*= 143 weeks"):
        make_folds(142, CVSpec(n_folds=4, min_train_weeks=91, horizon=13, step=13))
    with pytest.raises(ValueError, match="repeats"):
        CVSpec(models=("mmm", "mmm"))
    with pytest.raises(ValueError, match="out of range"):
        run_fold(model_data(generate_world(seed=0, n_weeks=N_WEEKS)), 3, SPEC, BASELINES_ONLY)


# --- metrics ------------------------------------------------------------------------------------------


def test_crps_of_a_point_mass_is_the_absolute_error():
    draws = np.full((50, 3), 10.0)
    observed = np.array([10.0, 13.0, 4.0])
    np.testing.assert_allclose(weekly_scores(draws, observed)["crps"], [0.0, 3.0, 6.0])


def test_crps_of_gaussian_draws_matches_the_closed_form():
    mu, sigma, y = 5.0, 2.0, 6.5
    z = (y - mu) / sigma
    exact = sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    forecast = GaussianForecast(np.array([mu]), np.array([sigma]), "test")
    sampled = forecast_metrics(forecast.draws(20_000, seed=3), np.array([y]))["crps"]
    assert sampled == pytest.approx(exact, rel=0.02)


def test_point_metrics_and_bias_sign_by_hand():
    # Draws symmetric around 110 and 180: predictive means 110 and 180.
    draws = np.array([[100.0, 170.0], [110.0, 180.0], [120.0, 190.0]])
    m = forecast_metrics(draws, np.array([100.0, 200.0]))
    assert m["mape"] == pytest.approx((10 / 100 + 20 / 200) / 2)
    assert m["rmse"] == pytest.approx(np.sqrt((10**2 + 20**2) / 2))
    assert m["bias"] == pytest.approx((10 - 20) / 2) and m["bias"] < 0  # under-forecast on balance
    assert m["bias_pct"] == pytest.approx(-10 / 300)
    over = forecast_metrics(draws + 50, np.array([100.0, 200.0]))
    assert over["bias"] > 0 and over["bias_pct"] > 0


def test_coverage_counts_weeks_inside_central_intervals():
    draws = np.repeat(np.arange(101.0)[:, None], 4, axis=1)  # quantile q of the draws is 100 q
    observed = np.array([50.0, 20.0, 2.0, 99.0])  # 50% interval [25, 75]; 94% interval [3, 97]
    assert coverage(draws, observed, 0.5) == 0.25
    assert coverage(draws, observed, 0.94) == 0.5
    m = forecast_metrics(draws, observed)
    assert (m["coverage_50"], m["coverage_94"], m["n_weeks"]) == (0.25, 0.5, 4)
    # Metrics recomputed from stored weekly rows equal the direct ones (overall = pooled weeks).
    weekly = weekly_scores(draws, observed)
    halves = [summarize(weekly.iloc[:2]).iloc[0], summarize(weekly.iloc[2:]).iloc[0]]
    assert (halves[0]["coverage_94"] + halves[1]["coverage_94"]) / 2 == m["coverage_94"]


# --- baselines ----------------------------------------------------------------------------------------


def test_seasonal_naive_repeats_last_year_and_falls_back_when_short():
    season = np.sin(np.arange(52) / 52 * 2 * np.pi) * 10 + 100
    history = np.tile(season, 3)
    forecast = seasonal_naive(history, horizon=60)
    np.testing.assert_allclose(forecast.mean, np.concatenate([season, season[:8]]))
    np.testing.assert_allclose(forecast.sd, 0.0)
    noisy = history + np.random.default_rng(0).normal(0, 1, history.size)
    sd = seasonal_naive(noisy, horizon=60).sd
    assert sd[0] == pytest.approx(np.sqrt(np.mean((noisy[52:] - noisy[:-52]) ** 2)))
    assert sd[52] == pytest.approx(sd[0] * np.sqrt(2))  # second year ahead: k = 1
    short = seasonal_naive(np.array([1.0, 2.0, 4.0, 3.0]), horizon=2)
    assert short.method.startswith("naive") and (short.mean == 3.0).all()
    assert short.sd[1] == pytest.approx(short.sd[0] * np.sqrt(2))


def test_ridge_recovers_a_linear_world():
    rng = np.random.default_rng(0)
    dates = pd.date_range("2020-01-06", periods=120, freq="7D")
    spend = rng.uniform(0, 100, (120, 2))
    controls = rng.normal(size=(120, 1))
    kpi = 1000 + 3 * spend[:, 0] + 1 * spend[:, 1] + 20 * controls[:, 0] + 2 * np.arange(120)
    data = ModelData(dates, spend, controls, kpi + rng.normal(0, 5, 120), ("a", "b"), ("c",))
    forecast = ridge(data.window(0, 100), data.window(100), n_fourier=1)
    assert np.abs(forecast.mean - kpi[100:]).max() < 25
    assert 3 < forecast.sd[0] < 10  # the noise sd is 5


def test_baselines_are_sensible_and_blind_to_future_kpi(data):
    clean = run_fold(data, 1, SPEC, BASELINES_ONLY)
    assert clean.status == "ok" and clean.parameters.empty
    metrics = clean.metrics.set_index("model")
    assert (metrics["mape"] < 0.15).all() and (metrics["coverage_94"] >= 0.5).all()
    fold = make_folds(N_WEEKS, CV)[1]
    dirty = run_fold(poisoned(data, fold.cut), 1, SPEC, BASELINES_ONLY)
    columns = ["mean", "sd", "lower_94", "upper_94"]
    pd.testing.assert_frame_equal(clean.predictions[columns], dirty.predictions[columns])
    assert dirty.info["kpi_scale"] == clean.info["kpi_scale"]


# --- the MMM over folds -------------------------------------------------------------------------------


def test_cv_tables_and_compiled_graph_shared(data, result):
    assert list(result.folds["status"]) == ["ok"] * 3
    assert list(result.folds["reused_graph"]) == [False, True, True]
    assert result.folds["n_time"].nunique() == 1
    assert len(result.predictions) == 3 * 3 * CV.horizon
    # Each fold's training window ends the week before its first test week.
    assert (result.folds["train_end"] + pd.Timedelta(weeks=1) == result.folds["test_start"]).all()
    overall = result.overall()
    assert list(overall["n_folds"]) == [3, 3, 3] and (overall["n_folds_failed"] == 0).all()
    assert (overall["n_weeks"] == 39).all()
    per_channel = result.channel_stability.set_index("channel")
    assert list(per_channel.index) == list(data.channels)
    assert (per_channel["n_folds"] == 3).all() and per_channel["roas_cv"].notna().all()
    saturation = set(SATURATION_PARAMS[SPEC.saturation])
    assert set(result.parameters["parameter"]) == {"roas", "share", "alpha", "beta", *saturation}
    shares = result.parameters[result.parameters["parameter"] == "share"].groupby("fold")["mean"].sum()
    np.testing.assert_allclose(shares, 1.0)


def test_mmm_beats_seasonal_naive_where_media_matters(result):
    overall = result.overall()
    # Measured: CRPS mmm ~14k, ridge ~44k, seasonal-naive ~98k (KPI ~1.2M a week).
    assert overall.at["mmm", "crps"] < 0.5 * overall.at["seasonal_naive", "crps"]
    assert overall.at["mmm", "crps"] < overall.at["ridge", "crps"]
    assert overall.at["mmm", "crps_skill"] > 0.5
    assert overall.at["mmm", "coverage_94"] >= 0.7


def test_future_weeks_never_reach_the_fit(data, result, cache):
    """Poison every week from fold 1's cut on: absurd KPI and 50x spend. Had any of it reached the fit or
    its scaling, the posterior (same seed, same compiled graph) and the scaling would differ."""
    fold = make_folds(N_WEEKS, CV)[1]
    clean = result.fold_results[1]
    dirty = run_fold(poisoned(data, fold.cut, spend_factor=50.0), 1, SPEC, CV, cache=cache, keep_fit=True)
    assert dirty.status == "ok" and dirty.fit.reused_graph
    assert dirty.fit.data.n_weeks == fold.cut and dirty.fit.data.dates[-1] < data.dates[fold.cut]
    assert dirty.fit.scaling == clean.fit.scaling == ScalingSpec.from_data(data.window(0, fold.cut))
    for name in ("beta_channel", "alpha", *SATURATION_PARAMS[SPEC.saturation], "intercept", "sigma"):
        np.testing.assert_array_equal(
            dirty.fit.idata.posterior[name].to_numpy(), clean.fit.idata.posterior[name].to_numpy()
        )
    pd.testing.assert_frame_equal(dirty.parameters, clean.parameters)
    naive = ["mean", "sd"]
    is_naive = clean.predictions["model"] == "seasonal_naive"
    pd.testing.assert_frame_equal(
        dirty.predictions.loc[is_naive, naive], clean.predictions.loc[is_naive, naive]
    )


def test_failed_folds_are_reported_and_the_rest_scored(data, cache, monkeypatch):
    """Fold 2 has a missing KPI week; the MMM's fit raises on fold 1; fold 0 is fine. Folds run one by
    one (as pipeline steps would) and are combined afterwards."""
    broken = data.kpi.copy()
    broken[-1] = np.nan
    data = ModelData(data.dates, data.spend, data.controls, broken, data.channels, data.control_names)
    real_fit = cv_module.fit

    def flaky_fit(train, *args, **kwargs):
        if train.n_weeks == make_folds(N_WEEKS, CV)[1].cut:
            raise RuntimeError("sampler exploded")
        return real_fit(train, *args, **kwargs)

    monkeypatch.setattr(cv_module, "fit", flaky_fit)
    results = [run_fold(data, k, SPEC, CV, cache=cache) for k in (2, 0, 1)]
    combined = combine_folds(results, CV)
    folds = combined.folds.set_index("fold")
    assert list(folds["status"]) == ["ok", "failed", "failed"]
    assert folds.at[1, "error"] == "mmm: RuntimeError: sampler exploded"
    last_week = data.dates[-1].date().isoformat()
    assert "KPI or controls missing" in folds.at[2, "error"] and last_week in folds.at[2, "error"]
    per_fold = combined.metrics[combined.metrics["scope"] == "fold"].set_index(["fold", "model"])
    assert per_fold.at[(1, "mmm"), "status"] == "failed" and np.isnan(per_fold.at[(1, "mmm"), "crps"])
    assert per_fold.at[(1, "ridge"), "status"] == "ok"  # the baselines of fold 1 still count
    assert (per_fold.loc[2, "status"] == "failed").all()
    overall = combined.overall()
    assert (overall.at["mmm", "n_folds"], overall.at["mmm", "n_folds_failed"]) == (1, 2)
    assert overall.at["mmm", "folds"] == "0" and overall.at["mmm", "n_weeks"] == CV.horizon
    assert (overall.at["ridge", "n_folds"], overall.at["ridge", "n_folds_failed"]) == (2, 1)
    assert set(combined.parameters["fold"]) == {0}
    assert not combined.channel_stability["roas_unstable"].any()  # one fold: never flagged


def test_fold_objects_can_be_passed_directly(data):
    fold = Fold(index=7, train_start=13, cut=100, test_stop=110)
    res = run_fold(data, fold, SPEC, BASELINES_ONLY)
    assert res.status == "ok" and res.info["n_train"] == 87 and len(res.predictions) == 2 * 10
    # An explicit fold does not need the data to hold the CV settings' folds (110 < 117 weeks).
    short = run_fold(data.window(0, 110), fold, SPEC, BASELINES_ONLY)
    pd.testing.assert_frame_equal(short.predictions, res.predictions)
