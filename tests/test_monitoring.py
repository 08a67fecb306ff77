"""Monitoring maths without Dagster: drift rules on hand-made series, event lifecycle, conditions,
tracking from a stored posterior, config validation."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mmm_pipeline.monitoring import calibration, drift
from mmm_pipeline.monitoring.settings import (
    ChangepointRule,
    CusumRule,
    IntervalMissRule,
    MonitoringConfig,
    RollingMapeRule,
    SpendRangeRule,
)
from mmm_pipeline.optimize import plan_from_dict
from mmm_pipeline.optimize.conditions import apply_conditions, evaluate_conditions
from mmm_pipeline.optimize.settings import ConditionConfig
from mmm_testkit.adapters import model_data

START = dt.date(2024, 1, 1)


def rows(z: list[float], in_94: list[bool] | None = None, ape: list[float] | None = None,
         flags: list[dict] | None = None) -> pd.DataFrame:  # fmt: skip
    """Tracking rows with the columns the rules read."""
    n = len(z)
    return pd.DataFrame(
        {
            "week": [START + dt.timedelta(weeks=i) for i in range(n)],
            "z_score": z,
            "error": np.array(z) * 100.0,
            "in_94": in_94 if in_94 is not None else [abs(v) < 2 for v in z],
            "in_50": [abs(v) < 0.67 for v in z],
            "abs_pct_error": ape if ape is not None else [0.02] * n,
            "spend_flags": [json.dumps(f) if f else None for f in (flags or [{}] * n)],
        }
    )


def test_interval_misses_k_of_n() -> None:
    rule = IntervalMissRule(interval=94, k=3, n=4)  # the fixed rule: the nominal 94% interval
    assert drift.evaluate([rule], rows([0.1, 3, 3, 0.2])) == []  # 2 of 4
    fired = drift.evaluate([rule], rows([3, 3, 0.1, 3]))
    assert [f.rule for f in fired] == ["outside_interval"]
    assert fired[0].evidence["misses"] == 3 and fired[0].week == START + dt.timedelta(weeks=3)
    assert drift.evaluate([rule], rows([3, 3, 3])) == []  # fewer than n weeks tracked
    with pytest.raises(ValidationError, match="must be <= n"):
        IntervalMissRule(k=5, n=4)


def test_rolling_mape_threshold_and_min_weeks() -> None:
    rule = RollingMapeRule(threshold=0.1, window=3, min_weeks=3)
    assert drift.evaluate([rule], rows([0, 0], ape=[0.5, 0.5])) == []  # too few weeks
    assert drift.evaluate([rule], rows([0] * 4, ape=[0.5, 0.05, 0.05, 0.05])) == []  # old error out of window
    fired = drift.evaluate([rule], rows([0] * 4, ape=[0.0, 0.2, 0.1, 0.15]))
    assert fired and fired[0].evidence["mape"] == pytest.approx(0.15)


def test_cusum_catches_a_persistent_shift_not_noise() -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(30)  # h = 5, k = 0.5: a false alarm every few hundred weeks on average
    rule = CusumRule(threshold=5, slack=0.5)
    assert all(not f for _, f in drift.history([rule], rows(list(noise))))
    shifted = list(noise[:20]) + list(noise[20:30] - 1.5)
    weeks = [w for w, f in drift.history([rule], rows(shifted)) if f]
    assert weeks and weeks[0] > START + dt.timedelta(weeks=20)  # not before the shift
    assert weeks[0] <= START + dt.timedelta(weeks=27)  # within a few weeks of it
    fired = drift.evaluate([rule], rows(shifted))[0]
    assert fired.evidence["s_neg"] > 5 and "below forecast" in fired.summary()
    s_pos, s_neg = drift.cusum(np.array([1.0, 1.0, -3.0]), 0.5)
    assert s_pos.tolist() == [0.5, 1.0, 0.0] and s_neg.tolist() == [0.0, 0.0, 2.5]


def test_spend_range_rule() -> None:
    out = {"tv": {"spend": 400.0, "hist_min": 0.0, "hist_max": 200.0}}
    near = {"tv": {"spend": 250.0, "hist_min": 0.0, "hist_max": 200.0}}  # within 1.5x
    rule = SpendRangeRule(multiple=1.5, k=2, n=3)
    assert drift.evaluate([rule], rows([0] * 3, flags=[out, near, {}])) == []
    fired = drift.evaluate([rule], rows([0] * 3, flags=[out, {}, out]))
    assert fired[0].evidence["channels"] == ["tv"]


def test_event_lifecycle_one_event_per_drift() -> None:
    rules = [CusumRule(threshold=3, slack=0.5)]
    quiet = rows([0.1, -0.2, 0.0])
    d = drift.decide(rules, quiet, "m", "model-1", [], recovery_weeks=2)
    assert d.open is None and d.resolve == []
    drifting = rows([0.0, -2.0, -2.0, -2.0])
    d = drift.decide(rules, drifting, "m", "model-1", [], recovery_weeks=2)
    assert d.open is not None and d.open["rule"] == "residual_shift" and d.open["model_id"] == "model-1"
    assert d.open["detected_week"] == START + dt.timedelta(weeks=3)
    assert d.open["first_fired_week"] == START + dt.timedelta(weeks=3)
    assert d.open["event_id"] == drift.event_id("m", "model-1", START + dt.timedelta(weeks=3))
    event = dict(d.open)
    # The drift persists: the open event stays, no second event (no storm).
    d = drift.decide(rules, rows([0.0, -2.0, -2.0, -2.0, -2.0]), "m", "model-1", [event], recovery_weeks=2)
    assert d.open is None and d.resolve == [] and d.firings
    # A new champion resolves it (and starts from a clean slate).
    d = drift.decide(rules, rows([0.1]), "m", "model-2", [event], recovery_weeks=2)
    assert d.resolve == [(event["event_id"], "new_champion")] and d.open is None
    # Recovery: the residuals come back; after recovery_weeks quiet weeks the event is resolved.
    back = rows([0.0, -2.0, -2.0, -2.0, 2.0, 2.0, 0.0, 0.0])
    firing = [bool(f) for _, f in drift.history(rules, back)]
    assert firing == [False, False, False, True, False, False, False, False]
    d = drift.decide(rules, back, "m", "model-1", [event], recovery_weeks=2)
    assert d.resolve == [(event["event_id"], "recovered")]


def test_monitoring_config_defaults_and_errors() -> None:
    cfg = MonitoringConfig()
    kinds = ["interval_misses", "rolling_mape", "changepoint", "spend_range"]
    assert [r.kind for r in cfg.drift_rules] == kinds
    assert cfg.false_alarm_rate_per_year == 0.05 and cfg.min_weeks_before_event == 4
    # Calibrated by default; without a calibration those rules cannot fire and are named as such.
    assert drift.uncalibrated(cfg.drift_rules, None) == ["outside_interval", "rolling_mape", "forecast_shift"]
    assert drift.evaluate(cfg.drift_rules, rows([9.0] * 8, ape=[0.9] * 8)) == []
    with pytest.raises(ValidationError, match="false_alarm_rate_per_year"):
        MonitoringConfig.model_validate({"false_alarm_rate_per_year": 1.5})
    parsed = MonitoringConfig.model_validate({"drift_rules": [{"kind": "cusum", "threshold": 4}]})
    assert isinstance(parsed.drift_rules[0], CusumRule) and parsed.drift_rules[0].threshold == 4
    with pytest.raises(ValidationError):
        MonitoringConfig.model_validate({"drift_rules": [{"kind": "nope"}]})
    with pytest.raises(ValidationError, match="unique"):
        MonitoringConfig.model_validate({"drift_rules": [{"kind": "cusum"}, {"kind": "cusum"}]})


def test_conditions_tighten_the_plan() -> None:
    weeks = pd.date_range("2024-01-01", periods=30, freq="7D")
    competitor = np.r_[np.full(26, 100.0), np.full(4, 200.0)]
    table = pd.DataFrame({"week": weeks, "control_competitor_spend": competitor, "spend_tv": 10.0})
    conditions = [
        ConditionConfig(
            name="competitor_pressure",
            when={"control": "competitor_spend", "above_quantile": 0.8, "over_last_weeks": 4},
            plan_changes={"shares": {"search_floor": {"channels": ["search"], "min": 0.3}}},
        ),
        ConditionConfig(
            name="holiday_season",
            when={"months": [11, 12]},
            plan_changes={"channels": {"tv": {"max_change_pct": 80}}},
        ),  # fmt: skip
    ]
    active = evaluate_conditions(conditions, table)
    assert [c.name for c in active] == ["competitor_pressure"]  # July: no holiday season
    assert active[0].evidence["recent_mean"] == 200.0
    calm = table.assign(control_competitor_spend=100.0)
    assert evaluate_conditions(conditions, calm) == []
    december = table.assign(week=pd.date_range("2024-06-10", periods=30, freq="7D"))
    assert [c.name for c in evaluate_conditions(conditions, december)] == [
        "competitor_pressure",
        "holiday_season",
    ]
    base = plan_from_dict(
        {"name": "base", "budget": {"change_pct": 0}, "channels": {"tv": {"max_change_pct": 50}}}
    )
    (tightened,) = apply_conditions([base], evaluate_conditions(conditions, december))
    assert tightened.name == "base"
    assert tightened.shares["search_floor"].min == 0.3 and tightened.channels["tv"].max_change_pct == 80
    bad = [ConditionConfig(name="x", when={"control": "missing", "above": 1}, plan_changes={})]
    with pytest.raises(ValueError, match="no column control_missing"):
        evaluate_conditions(bad, table)
    with pytest.raises(ValidationError):
        ConditionConfig(name="x", when={"control": "a"}, plan_changes={})  # no threshold


def _fake_model(world, n_train: int, draws: int = 300):
    """A stored model with a hand-made posterior (no sampling): true-ish parameters plus jitter."""
    import arviz as az

    from mmm_pipeline.model.build import ScalingSpec
    from mmm_pipeline.model.registry import StoredModel
    from mmm_pipeline.model.spec import ModelSpec

    data = model_data(world)
    spec = ModelSpec(l_max=4, n_fourier=1, saturation="logistic")
    scaling = ScalingSpec.from_data(data.window(0, n_train))
    rng = np.random.default_rng(0)
    c, k = len(data.channels), len(data.control_names)

    def var(*shape: int, loc: float = 0.0, scale: float = 0.01) -> np.ndarray:
        return loc + scale * rng.standard_normal((1, draws, *shape))

    posterior = {
        "intercept": var(loc=0.6), "trend_slope": var(loc=0.02), "gamma_fourier": var(2),
        "gamma_control": var(k), "beta_channel": np.abs(var(c, loc=0.05)),
        "alpha": np.clip(var(c, loc=0.3), 0, 1), "lam": np.abs(var(c, loc=2.0)),
        "sigma": np.abs(var(loc=0.02, scale=0.001)),
    }  # fmt: skip
    idata = az.from_dict(posterior=posterior)
    return StoredModel("m1", idata, spec, scaling), data


def test_tracking_forecasts_the_weeks_after_the_fit_with_carry_in() -> None:
    from mmm_pipeline.model.predict import PosteriorDraws, predict, thin
    from mmm_pipeline.monitoring.tracking import TRACKING_COLUMNS, track
    from mmm_testkit.synthetic import generate_world

    world = generate_world(seed=0, n_weeks=70)
    model, data = _fake_model(world, n_train=60)
    frame = pd.DataFrame({"market": "all", "week": data.dates, "kpi": data.kpi})
    for i, ch in enumerate(data.channels):
        frame[f"spend_{ch}"] = data.spend[:, i]
    for i, name in enumerate(data.control_names):
        frame[f"control_{name}"] = data.controls[:, i]
    train_end = data.dates[59].date()
    out = track(model, frame, "all", train_end, rolling_weeks=3, max_draws=100)
    assert list(out.columns) == TRACKING_COLUMNS and len(out) == 10
    assert out["weeks_since_fit"].tolist() == list(range(1, 11)) and (out["week"] > train_end).all()
    assert (out["n_draws"] == 100).all()
    # The same forecast as predict() on those weeks with the actual spend of the weeks before carried in.
    draws = thin(PosteriorDraws.from_idata(model.idata, model.spec), 100)
    expected = predict(
        draws, model.scaling, model.spec, data.window(60), carry_in=data.carry_in(60, 4), seed=0
    )
    np.testing.assert_allclose(out["pred_mean"], expected.expected.mean(axis=0))
    # A week's row does not change when later weeks are tracked.
    shorter = track(model, frame.iloc[:65], "all", train_end, rolling_weeks=3, max_draws=100)
    pd.testing.assert_frame_equal(shorter, out.iloc[:5])
    np.testing.assert_allclose(out["error"], out["actual"] - out["pred_mean"])
    assert ((out["pred_94_low"] <= out["pred_50_low"]) & (out["pred_50_high"] <= out["pred_94_high"])).all()
    inside = (out["pred_94_low"] <= out["actual"]) & (out["actual"] <= out["pred_94_high"])
    assert (out["in_94"] == inside).all()
    np.testing.assert_allclose(out["rolling_mape"].iloc[2], out["abs_pct_error"].iloc[:3].mean())
    assert (out["crps"] > 0).all()
    assert track(model, frame, "all", data.dates[-1].date()).empty  # nothing after the last week yet


# --- calibrated alarms (issue 18) -------------------------------------------------------------------

RULES = MonitoringConfig().drift_rules
ERROR_RULES = [r for r in RULES if r.kind in calibration.ERROR_RULES]
TRUTH = calibration.NullErrors(level_sd=0.5, noise_sd=0.75**0.5, rho=0.3, n_residuals=0, n_groups=0)


def _cv(truth: calibration.NullErrors, folds: int, seed: int, sd_rel: float = 0.05) -> dict:
    """CV errors of a champion whose forecast errors follow ``truth`` (KPI 1, forecast sd ``sd_rel``)."""
    z = truth.simulate(np.random.default_rng(seed), folds, 13).ravel()
    return {"z": z, "forecast_cv": np.full(z.size, sd_rel), "groups": np.repeat(np.arange(folds), 13)}


def _calibrate(cv: dict, rate: float = 0.05, source: str = "cv", **kwargs) -> calibration.Calibration:
    return calibration.calibrate(RULES, cv["z"], cv["forecast_cv"], cv["groups"], rate, 4, source, **kwargs)


def test_calibrated_thresholds_give_the_stated_rate_on_new_null_years() -> None:
    cal = _calibrate(_cv(TRUTH, folds=400, seed=1), seed=0)
    fitted = cal.z_null
    assert abs(fitted.level_sd - 0.5) < 0.06 and abs(fitted.rho - 0.3) < 0.06
    assert abs(fitted.noise_sd - 0.75**0.5) < 0.05
    assert all(cal.calibrated[r.name] for r in ERROR_RULES)
    # The 5% split evenly over the three error rules (default weights); together they fire in less (a
    # union bound).
    shares = calibration.rate_shares(RULES, 0.05)
    assert shares == pytest.approx(
        dict.fromkeys(["outside_interval", "rolling_mape", "forecast_shift"], 0.05 / 3)
    )
    assert all(cal.simulated_rates[r.name] == pytest.approx(shares[r.name], abs=0.001) for r in ERROR_RULES)
    assert 0.025 < cal.simulated_rates["all"] <= 0.05
    # Stable years of the fitted null process, drawn with another seed than the calibration's: the
    # same rates within Monte-Carlo error (of both simulations).
    n = 8000
    z = fitted.simulate(np.random.default_rng(12345), n, calibration.YEAR_WEEKS)
    ape = calibration.ape(z, np.full_like(z, 0.05))
    fired = np.zeros(n, dtype=bool)

    def tolerance(p: float) -> float:
        return 4 * (p * (1 - p) / n) ** 0.5 + 4 * (p * (1 - p) / cal.n_paths) ** 0.5

    for rule in ERROR_RULES:
        statistic = calibration.year_statistic(rule, ape if rule.kind == "rolling_mape" else z, 4, fitted)
        hit = statistic > cal.thresholds[rule.name]
        fired |= hit
        share = shares[rule.name]
        assert abs(hit.mean() - share) < tolerance(share), (rule.name, hit.mean())
    assert abs(fired.mean() - cal.simulated_rates["all"]) < tolerance(0.05), fired.mean()
    assert fired.mean() <= 0.05 + tolerance(0.05)
    # The true process (the fit is close, not exact): the rate stays near the stated one, while the
    # fixed CUSUM (threshold 5 from the first week) fires in most stable years of it.
    z = TRUTH.simulate(np.random.default_rng(54321), n, calibration.YEAR_WEEKS)
    true_rate = np.zeros(n, dtype=bool)
    for rule in ERROR_RULES:
        paths = calibration.ape(z, np.full_like(z, 0.05)) if rule.kind == "rolling_mape" else z
        true_rate |= calibration.year_statistic(rule, paths, 4, fitted) > cal.thresholds[rule.name]
    assert true_rate.mean() < 0.08
    assert (calibration.year_statistic(CusumRule(threshold=5), z, 1) > 5).mean() > 0.3


def _false_alarm_chance(truth: calibration.NullErrors, champions: int, years: int, seed: int) -> np.ndarray:
    """Per simulated champion (its own CV errors from ``truth``, 4 folds x 13 weeks, calibrated with
    the defaults on 4,000 simulated years): the chance that its thresholds fire in a stable year of
    ``truth`` (``years`` shared simulated years; the changepoint test on the first 1,000)."""
    z = truth.simulate(np.random.default_rng(seed), years, calibration.YEAR_WEEKS)
    ape = calibration.ape(z, np.full_like(z, 0.05))
    shared = {r.name: calibration.year_statistic(r, ape if r.kind == "rolling_mape" else z, 4)
              for r in ERROR_RULES if r.kind != "changepoint"}  # fmt: skip
    out = []
    for i in range(champions):
        cal = _calibrate(_cv(truth, folds=4, seed=seed + 1 + i), n_paths=4000, seed=i)
        fired = np.zeros(1000, dtype=bool)
        for r in ERROR_RULES:
            own = r.name not in shared
            stat = calibration.year_statistic(r, z[:1000], 4, cal.z_null) if own else shared[r.name][:1000]
            fired |= stat > cal.thresholds[r.name]
        out.append(fired.mean())
    return np.array(out)


def test_stated_rate_holds_over_the_estimation_error_of_four_cv_folds() -> None:
    """Averaged over champions whose 4 x 13 CV weeks (level error sd 0.5 + AR(1) 0.3, as TRUTH) estimate
    the null model loosely, the chance of a false alarm in a stable year is the stated 5% or less, within
    the Monte-Carlo error of the average (two standard errors: the chance differs a lot between
    champions, a few with a low estimated level error or autocorrelation fire far more often). Measured
    on these champions: 3.8% (bound 6.4%); with every parameter at its point estimate (nothing drawn)
    13.3%, and the bound fails. It cannot tell the autocorrelation drawn from it held at its estimate
    (5.1% on 150 champions): the spread between champions is too wide for a test of this size;
    :func:`test_rho_se_is_the_spread_of_the_estimate` checks that draw."""
    chance = _false_alarm_chance(TRUTH, champions=100, years=2000, seed=100)
    bound = 0.05 + 2 * chance.std(ddof=1) / np.sqrt(chance.size)
    assert chance.mean() <= bound, (chance.mean(), bound)


def test_rho_se_is_the_spread_of_the_estimate() -> None:
    """``fit_null``'s ``rho_se`` (what the calibration draws the autocorrelation with) is about the spread
    of the estimate over CV sets of the same process; and the simulated years spread it."""
    fits = [calibration.fit_null(*list(_cv(TRUTH, folds=4, seed=s).values())[::2]) for s in range(400)]
    rho = np.array([f.rho for f in fits])
    se = np.median([f.rho_se for f in fits])
    assert 0.9 * rho.std() <= se <= 1.4 * rho.std()  # measured: 0.16 spread, rho_se 0.19 at rho 0.3
    fitted = fits[0]
    paths = fitted.simulate(np.random.default_rng(0), 4000, 200)
    d = paths - paths.mean(axis=1, keepdims=True)
    lag1 = np.sum(d[:, 1:] * d[:, :-1], axis=1) / np.sum(d**2, axis=1)
    fixed = calibration.NullErrors(fitted.level_sd, fitted.noise_sd, fitted.rho, 0, 0)
    f = fixed.simulate(np.random.default_rng(0), 4000, 200)
    f = f - f.mean(axis=1, keepdims=True)
    fixed_lag1 = np.sum(f[:, 1:] * f[:, :-1], axis=1) / np.sum(f**2, axis=1)
    assert lag1.std() > 1.5 * fixed_lag1.std()


def test_the_same_champion_is_simulated_once_per_process() -> None:
    """Tracking and drift both calibrate the champion in every run: the second call reuses the first's
    thresholds (seeded, so equal to a fresh simulation); other inputs simulate again."""
    cv = _cv(TRUTH, folds=4, seed=21)
    first = _calibrate(cv)
    again = _calibrate({k: np.array(v, copy=True) for k, v in cv.items()})
    assert again is first
    fresh = calibration.calibrate.__wrapped__(RULES, cv["z"], cv["forecast_cv"], cv["groups"], 0.05, 4, "cv")
    assert fresh.thresholds == first.thresholds and fresh.simulated_rates == first.simulated_rates
    assert _calibrate(cv, rate=0.1) is not first and _calibrate(cv, seed=1) is not first
    moved = dict(cv, z=cv["z"] + 1e-9)
    assert _calibrate(moved) is not first


def test_simulated_statistics_are_what_the_rules_do() -> None:
    """The vectorized statistics the calibration simulates fire in exactly the weeks (from week 4 on) in
    which the real rules (``drift.history`` on tracking rows) fire."""
    cal = _calibrate(_cv(TRUTH, folds=6, seed=2), rate=0.6)  # a high rate: many years fire, many do not
    z = TRUTH.simulate(np.random.default_rng(7), 12, calibration.YEAR_WEEKS)
    ape = calibration.ape(z, np.full_like(z, 0.05))
    simulated = {
        r.name: calibration.weekly_statistic(r, ape if r.kind == "rolling_mape" else z, 4, cal.z_null)
        > cal.thresholds[r.name]
        for r in ERROR_RULES
    }
    for i in range(len(z)):
        history = drift.history(ERROR_RULES, rows(list(z[i]), ape=list(ape[i])), cal)
        for rule in ERROR_RULES:
            real = [rule.name in {f.rule for f in firings} for _, firings in history]
            assert real[3:] == simulated[rule.name][i, 3:].tolist(), rule.name
    years = np.array([simulated[r.name].any(axis=1) for r in ERROR_RULES])
    assert 3 < years.sum() < years.size - 3
    fired = calibration.year_statistic(ERROR_RULES[2], z, 4, cal.z_null) > cal.thresholds[ERROR_RULES[2].name]
    assert (fired == simulated[ERROR_RULES[2].name].any(axis=1)).all()


def test_calibrated_rules_detect_a_shift() -> None:
    cal = _calibrate(_cv(TRUTH, folds=4, seed=3))
    rng = np.random.default_rng(4)
    detected = []
    for _ in range(10):
        z = TRUTH.simulate(rng, 1, 20)[0]
        z[8:] -= 3.0  # from week 9 the actuals fall 3 forecast sds below the forecast
        events = [
            len(frame)
            for i in range(4, 21)
            if drift.decide(
                RULES, (frame := rows(list(z[:i]), ape=list(np.abs(z[:i]) * 0.05))), "m", "c", [], 4, cal, 4
            ).open
            is not None  # fmt: skip
        ]
        detected.append(events[0] - 8 if events else None)
    assert sum(d is not None and 0 < d <= 8 for d in detected) >= 8, detected


def _changepoint_weighted(weight: float) -> list:
    return [r.model_copy(update={"rate_weight": weight}) if r.kind == "changepoint" else r for r in RULES]


def test_rate_weights_split_the_rate_over_the_rules() -> None:
    """The false-alarm rate is split over the error rules by their ``rate_weight`` (all 1 by default:
    the even split); giving the changepoint rule weight 4 gives it 4/6 of the rate, and the thresholds
    follow: the rule with the larger share gets the lower threshold, the others higher ones.
    ``calibrate``'s thresholds are :func:`calibration.null_thresholds` on its fitted null model."""
    weighted = _changepoint_weighted(4.0)
    parsed = MonitoringConfig.model_validate({"drift_rules": [{"kind": "changepoint", "rate_weight": 4}]})
    assert parsed.drift_rules[0].rate_weight == 4.0
    with pytest.raises(ValidationError, match="rate_weight"):
        MonitoringConfig.model_validate({"drift_rules": [{"kind": "changepoint", "rate_weight": 0}]})
    assert calibration.rate_shares(weighted, 0.05) == pytest.approx(
        {"outside_interval": 0.05 / 6, "rolling_mape": 0.05 / 6, "forecast_shift": 0.05 * 4 / 6}
    )
    cv = _cv(TRUTH, folds=4, seed=7)
    heavy = calibration.calibrate(
        weighted, cv["z"], cv["forecast_cv"], cv["groups"], 0.05, 4, "cv", n_paths=6000
    )
    even = _calibrate(cv, n_paths=6000)
    assert heavy.thresholds["forecast_shift"] < even.thresholds["forecast_shift"]
    assert heavy.thresholds["outside_interval"] > even.thresholds["outside_interval"]
    assert heavy.thresholds["rolling_mape"] > even.thresholds["rolling_mape"]
    assert heavy.simulated_rates["forecast_shift"] == pytest.approx(0.05 * 4 / 6, abs=0.003)
    assert even.simulated_rates["forecast_shift"] == pytest.approx(0.05 / 3, abs=0.003)
    core = calibration.null_thresholds(RULES, even.z_null, cv["forecast_cv"], 0.05, 4, 6000, 0)
    assert core == (even.thresholds, even.calibrated, even.simulated_rates)


def test_changepoint_weighted_split_finds_a_shift_sooner_when_the_null_is_known() -> None:
    """What ``rate_weight`` is for: for a persistent shift of 1.6 forecast sds (a 30% drop of search's
    effect in the break simulation) the interval and MAPE rules add little detection but take 2/3 of the
    rate. With the null model known (the ``oracle rules`` of benchmarks/bench_detection_ceiling.py,
    level error sd 0.5 + AR(1) 0.3), 2,000 shifted paths: changepoint weight 4 fires within 8 weeks at
    least as often as the even split and sooner on average, and both stay at the stated rate on 4,000
    fresh stable years. Measured: within 8 weeks 50.05% / 46.85%, mean weeks (26 if not found) 11.3 /
    12.1, stable years 4.2% / 4.0%. Not the default: with the null estimated from four CV
    folds the gain mostly vanishes and the false-alarm rate of the level + AR(1) process rises
    (benchmarks/README.md)."""
    forecast_cv = np.array([0.05])
    rng = np.random.default_rng(11)
    stable = TRUTH.simulate(rng, 4000, calibration.YEAR_WEEKS)
    shifted = TRUTH.simulate(rng, 2000, 34)
    shifted[:, 8:] -= 1.6
    results = {}
    for name, rules in {"weighted": _changepoint_weighted(4.0), "even": RULES}.items():
        thresholds = calibration.null_thresholds(rules, TRUTH, forecast_cv, 0.05, 4, 20_000, 0)[0]

        def fires(z: np.ndarray, rules: list = rules, thresholds: dict = thresholds) -> np.ndarray:
            pct = calibration.ape(z, np.full_like(z, forecast_cv[0]))
            return np.logical_or.reduce([
                calibration.weekly_statistic(r, pct if r.kind == "rolling_mape" else z, 4, TRUTH)
                > thresholds[r.name] for r in rules if r.kind in calibration.ERROR_RULES])  # fmt: skip

        after = fires(shifted)[:, 8:]
        delay = np.where(after.any(axis=1), after.argmax(axis=1), 26)
        results[name] = (fires(stable).any(axis=1).mean(), (delay <= 8).mean(), delay.mean())
    (rate_w, within_w, mean_w), (rate_e, within_e, mean_e) = results["weighted"], results["even"]
    bound = 0.05 + 4 * (0.05 * 0.95 / 4000) ** 0.5
    assert rate_w <= bound and rate_e <= bound, results
    assert within_w >= within_e and mean_w < mean_e, results


def test_rolling_mape_is_relative_to_the_champions_cv_mape() -> None:
    """A champion whose honest out-of-sample MAPE is 27% is not an alarm by itself (the fixed 10% rule
    fires on it every week); a stable year of the same errors does not fire the calibrated rule."""
    stable = calibration.NullErrors(0.2, 0.98, 0.2, 0, 0)
    cv = _cv(stable, folds=4, seed=4, sd_rel=0.3)
    cal = _calibrate(cv)
    assert 0.265 < cal.reference_mape < 0.285  # the CV MAPE: 27%
    mape_rule = next(r for r in RULES if r.kind == "rolling_mape")
    assert cal.thresholds["rolling_mape"] > cal.reference_mape
    z = stable.simulate(np.random.default_rng(6), 1, calibration.YEAR_WEEKS)[0]
    ape = list(calibration.ape(z, np.full_like(z, 0.3)))
    history = drift.history([mape_rule], rows(list(z), ape=ape), cal)
    assert not any(fired for _, fired in history[3:])
    fixed = drift.history([RollingMapeRule(threshold=0.1)], rows(list(z), ape=ape))
    assert all(fired for _, fired in fixed[3:])
    # Over many stable years of the same errors (another seed): within the rule's share of the rate.
    z = stable.simulate(np.random.default_rng(8), 4000, calibration.YEAR_WEEKS)
    years = calibration.ape(z, np.full_like(z, 0.3))
    rate = (calibration.year_statistic(mape_rule, years, 4) > cal.thresholds["rolling_mape"]).mean()
    assert rate < cal.simulated_rates["rolling_mape"] + 0.01
    # The evidence states the rate, the threshold and the CV MAPE it is relative to.
    (firing,) = drift.evaluate([mape_rule], rows([0.0] * 8, ape=[5.0] * 8), cal)
    assert firing.evidence["calibrated"] and firing.evidence["false_alarm_rate_per_year"] == 0.05
    assert firing.evidence["reference_mape"] == round(cal.reference_mape, 4)
    assert "x the CV MAPE 27" in firing.summary() and "5% false alarms per stable year" in firing.summary()


def test_new_champion_opens_no_event_before_min_weeks() -> None:
    cal = _calibrate(_cv(TRUTH, folds=4, seed=9))
    far_off = [-30.0] * 6  # a refit that still over-forecasts badly from its first week
    opened = [
        drift.decide(RULES, rows(far_off[:i], ape=[0.3] * i), "m", "new", [], 4, cal, min_weeks=4).open
        for i in range(1, 7)
    ]
    assert opened[:3] == [None, None, None] and opened[3] is not None
    assert opened[3]["detected_week"] == START + dt.timedelta(weeks=3)
    evidence = json.loads(opened[3]["evidence"])
    assert all(
        e["calibrated"] and e["calibration_source"] == "cv" for e in evidence.values() if "calibrated" in e
    )
    # The rules still fire on the first weeks (shown in metadata); only the event waits.
    early = drift.decide(RULES, rows(far_off[:3], ape=[0.3] * 3), "m", "new", [], 4, cal, min_weeks=4)
    assert early.firings and early.open is None


def test_in_sample_fallback_says_so(tmp_path) -> None:
    import duckdb

    from mmm_pipeline.monitoring import store
    from mmm_pipeline.tables import ensure_models

    rng = np.random.default_rng(10)
    weeks = pd.date_range("2023-01-02", periods=60, freq="W-MON")
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        ensure_models(conn)
        assert store.calibration_errors(conn, "m1") is None  # nothing to calibrate on
        actual = 1000 + 20 * rng.standard_normal(60)
        fit = {"model_id": "m1", "market": "all", "week": weeks.date, "actual": actual,
               "predicted_mean": 1000.0, "predicted_hdi_low": 1000 - 1.8808 * 20,
               "predicted_hdi_high": 1000 + 1.8808 * 20}  # fmt: skip
        conn.register("fit", pd.DataFrame(fit))
        conn.execute("INSERT INTO models.fit_weekly BY NAME SELECT * FROM fit")
        errors = store.calibration_errors(conn, "m1")
        assert errors["source"] == "in_sample" and len(errors["z"]) == 60
        np.testing.assert_allclose(errors["z"], (actual - 1000) / 20)
        cv = {"model_id": "m1", "market": "all", "fold": np.repeat([0, 1], 8), "model": "mmm",
              "week": weeks[:16].date, "observed": actual[:16], "mean": 990.0, "sd": 25.0}  # fmt: skip
        conn.register("cv", pd.DataFrame(cv))
        conn.execute("INSERT INTO models.cv_predictions BY NAME SELECT * FROM cv")
        errors = store.calibration_errors(conn, "m1")
        assert errors["source"] == "cv" and errors["groups"].tolist() == [0] * 8 + [1] * 8
    cal = _calibrate({"z": (actual - 1000) / 20, "forecast_cv": np.full(60, 0.02), "groups": np.zeros(60)},
                     source="in_sample")  # fmt: skip
    assert (
        cal.z_null.level_sd == 0.0 and "in-sample residuals" in cal.note and "no cross-validation" in cal.note
    )
    (firing,) = drift.evaluate([ChangepointRule()], rows([-3.0] * 12), cal)
    assert firing.evidence["calibration_source"] == "in_sample"


def test_changepoint_statistic_is_the_gls_t_of_a_step() -> None:
    """The vectorized statistic (every week of many paths, one whitening) and the single-path fit equal
    the textbook GLS t of a step, computed from the inverse covariance for every week and start, also
    past the window (each week reading its last ``window`` weeks)."""
    null = calibration.NullErrors(level_sd=0.7, noise_sd=0.8, rho=0.4, n_residuals=0, n_groups=0)
    z = null.simulate(np.random.default_rng(11), 3, 20)
    z[1, 9:] += 2.5  # one path with a shift from week 10
    window = 13
    statistic = calibration.shift_statistic(z, null, window)
    for p in range(3):
        for end in range(1, 21):
            x = z[p, max(0, end - window) : end]
            lag = np.abs(np.subtract.outer(np.arange(x.size), np.arange(x.size)))
            precision = np.linalg.inv(0.7**2 + 0.8**2 * 0.4**lag)
            steps = np.tril(np.ones((x.size, x.size)))  # column s: a shift from week s on
            info = np.einsum("ts,tu,us->s", steps, precision, steps)
            t = steps.T @ precision @ x / np.sqrt(info)
            best = int(np.argmax(np.abs(t)))
            assert statistic[p, end - 1] == pytest.approx(abs(t[best]), rel=1e-6)
            fit = calibration.shift_fit(x, null)
            assert fit[0] == pytest.approx(abs(t[best]), rel=1e-6) and fit[1] == best
            assert fit[2] == pytest.approx(t[best] / np.sqrt(info[best]), rel=1e-6)
    # A null fitted on four CV folds: the test whitens with the level sd at the upper 90% of its
    # sampling spread (a level error taken too small reads as drift), not with the estimate.
    fitted = calibration.fit_null(*list(_cv(null, folds=4, seed=14).values())[::2])
    level = fitted.shift_test_level_sd
    absorbed = fitted.noise_sd**2 * fitted.mean_factor
    upper = (fitted.level_sd**2 + absorbed) * 7.7794 / 4 - absorbed  # chi2(4 folds) 90% quantile: 7.7794
    assert level > fitted.level_sd and level == pytest.approx(np.sqrt(upper), rel=1e-4)
    x = z[0]
    lag = np.abs(np.subtract.outer(np.arange(20), np.arange(20)))
    precision = np.linalg.inv(level**2 + fitted.noise_sd**2 * fitted.rho**lag)
    steps = np.tril(np.ones((20, 20)))
    t = steps.T @ precision @ x / np.sqrt(np.einsum("ts,tu,us->s", steps, precision, steps))
    assert calibration.shift_fit(x, fitted)[0] == pytest.approx(np.abs(t).max(), rel=1e-6)
    # The shifted path at week 20 (the window: weeks 8-20) dates the shift near week 10 and sizes it.
    t, start, shift = calibration.shift_fit(z[1, 7:20], null)
    assert abs(start + 7 - 9) <= 2 and 1.0 < shift < 4.0


def test_changepoint_reads_a_level_error_as_the_champions_own_and_a_change_of_it_as_drift() -> None:
    """A champion whose weeks all sit 1.5 forecast sds below its forecast (a level error within what its
    CV errors show) is not drift to the changepoint test; 2 sds more from week 13 is found within weeks,
    dated and sized, earlier than by the CUSUM calibrated to the same rate (which must sit high enough
    not to read such level errors as drift), and the evidence says what the test found."""
    truth = calibration.NullErrors(level_sd=1.0, noise_sd=0.6, rho=0.2, n_residuals=0, n_groups=0)
    rule, cusum = ChangepointRule(), CusumRule()
    cv = list(_cv(truth, folds=12, seed=12).values())
    cal = calibration.calibrate([IntervalMissRule(), RollingMapeRule(), rule], *cv, 0.05, 4, "cv")
    cusum_cal = calibration.calibrate([IntervalMissRule(), RollingMapeRule(), cusum], *cv, 0.05, 4, "cv")
    assert 3.0 < cal.thresholds["forecast_shift"] < 5.0  # |t| on a whitened scale
    z = truth.simulate(np.random.default_rng(13), 1, 30)[0]
    z -= z[:12].mean() + 1.5  # the first 12 weeks: 1.5 sds below the forecast on average
    assert not any(f for _, f in drift.history([rule], rows(list(z[:12])), cal))
    z[12:] -= 2.0
    fired = [i for i, (_, f) in enumerate(drift.history([rule], rows(list(z)), cal)) if f]
    assert fired and 12 <= fired[0] <= 18, fired
    by_cusum = [i for i, (_, f) in enumerate(drift.history([cusum], rows(list(z)), cusum_cal)) if f]
    assert not by_cusum or by_cusum[0] > fired[0], (by_cusum, fired)
    firing = drift.evaluate([rule], rows(list(z[: fired[0] + 1])), cal)[0]
    e = firing.evidence
    assert e["calibrated"] and e["t"] > e["threshold"] == round(cal.thresholds["forecast_shift"], 4)
    assert e["shift_sd"] < -1.0 and e["null_z"] == cal.z_null.as_dict()
    since = pd.Timestamp(e["since"]) - pd.Timestamp(START + dt.timedelta(weeks=12))
    assert abs(since) <= pd.Timedelta(weeks=2) and e["weeks_since"] == fired[0] + 1 - (since.days // 7 + 12)
    assert "below the forecast since" in firing.summary()
    assert "5% false alarms per stable year" in firing.summary()
    # Without a calibration (no null model) the test is not evaluated, and is named as such.
    assert drift.evaluate([rule], rows(list(z))) == [] and drift.uncalibrated([rule], None) == [rule.name]
