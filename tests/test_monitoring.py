"""Monitoring maths without Dagster: drift rules on hand-made series, event lifecycle, conditions,
tracking from a stored posterior, config validation."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mmm_pipeline.monitoring import drift
from mmm_pipeline.monitoring.settings import (
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
    rule = IntervalMissRule(k=3, n=4)
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
    assert [r.kind for r in cfg.drift_rules] == ["interval_misses", "rolling_mape", "cusum", "spend_range"]
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
    from mmm_pipeline.model.predict import PosteriorDraws, predict
    from mmm_pipeline.monitoring.tracking import TRACKING_COLUMNS, thin, track
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
