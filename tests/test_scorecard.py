"""Plan forecasts, the recommendation scorecard and the alarms' champion lineage, without Dagster (issue 18
items 2, 3 and 6): a hand-made posterior over a synthetic world, no sampling."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pandas as pd
import pytest

from mmm_pipeline.model.build import ModelData
from mmm_pipeline.model.predict import PosteriorDraws, forecast_plan, thin
from mmm_pipeline.monitoring import drift
from mmm_pipeline.monitoring.plots import scorecard_chart
from mmm_pipeline.monitoring.scorecard import (
    FOLLOW_TOLERANCE,
    build_scorecard,
    coverage,
    score,
    with_coverage,
)
from mmm_pipeline.monitoring.settings import CusumRule
from mmm_pipeline.monitoring.tracking import track
from mmm_pipeline.optimize.recommendations import forecast_summary, forecast_weeks
from mmm_testkit.adapters import model_data
from mmm_testkit.synthetic import generate_world

DRAWS = 200


def fake_model(n_weeks: int, n_train: int, draws: int = 300):
    """A stored model with a hand-made posterior (true-ish parameters plus jitter) and its world's data."""
    import arviz as az

    from mmm_pipeline.model.build import ScalingSpec
    from mmm_pipeline.model.registry import StoredModel
    from mmm_pipeline.model.spec import ModelSpec

    data = model_data(generate_world(seed=0, n_weeks=n_weeks))
    spec = ModelSpec(l_max=4, n_fourier=1, saturation="logistic")
    scaling = ScalingSpec.from_data(data.window(0, n_train))
    rng = np.random.default_rng(0)
    c, k = len(data.channels), len(data.control_names)

    def var(*shape: int, loc: float = 0.0, scale: float = 0.01) -> np.ndarray:
        return loc + scale * rng.standard_normal((1, draws, *shape))

    posterior = {
        "intercept": var(loc=0.6), "trend_slope": var(loc=0.02), "gamma_fourier": var(2, loc=0.05),
        "gamma_control": var(k, loc=0.02), "beta_channel": np.abs(var(c, loc=0.05)),
        "alpha": np.clip(var(c, loc=0.3), 0, 1), "lam": np.abs(var(c, loc=2.0)),
        "sigma": np.abs(var(loc=0.02, scale=0.001)),
    }  # fmt: skip
    return StoredModel("m1", az.from_dict(posterior=posterior), spec, scaling), data


def frame_of(data: ModelData, kpi: np.ndarray | None = None, spend: np.ndarray | None = None) -> pd.DataFrame:
    """The modeling-table rows of ``data`` (market ``all``), with the KPI or spend replaced if given."""
    frame = pd.DataFrame({"market": "all", "week": data.dates, "kpi": data.kpi if kpi is None else kpi})
    spend = data.spend if spend is None else spend
    for i, ch in enumerate(data.channels):
        frame[f"spend_{ch}"] = spend[:, i]
    for i, name in enumerate(data.control_names):
        frame[f"control_{name}"] = data.controls[:, i]
    return frame


def draws_of(model) -> PosteriorDraws:
    return thin(PosteriorDraws.from_idata(model.idata, model.spec), DRAWS)


def test_plan_forecast_is_trackings_forecast_of_the_same_weeks() -> None:
    """One way to predict: the plan forecast of weeks that happened (their spend, their controls) is the
    forecast tracking scores them with, draw for draw (noise keyed by week)."""
    model, data = fake_model(70, 60)
    tracked = track(model, frame_of(data), "all", data.dates[59].date(), max_draws=DRAWS)
    pf = forecast_plan(draws_of(model), model.scaling, model.spec, data, data.dates[59],
                       {"happened": data.spend[60:64]})  # fmt: skip
    pred = pf.predictions["happened"]
    assert list(pf.dates) == list(data.dates[60:64]) and pf.controls_known.all()
    np.testing.assert_allclose(pred.expected.mean(axis=0), tracked["pred_mean"].iloc[:4])
    np.testing.assert_allclose(np.median(pred.kpi, axis=0), tracked["pred_median"].iloc[:4])
    assert pf.controls_note() == "controls known (landed) for every plan week"
    # carry-in: the real spend of the l_max - 1 weeks before the plan
    np.testing.assert_array_equal(pf.carry_in, data.spend[57:60])


def test_plan_forecast_holds_unknown_controls_and_carries_spend_in() -> None:
    model, data = fake_model(70, 60)
    draws = draws_of(model)
    spend = np.tile(data.spend[56:60].mean(axis=0), (4, 1))
    before = data.window(0, 60)  # the plan weeks have not landed: controls held at the last 4 weeks' mean
    held = forecast_plan(draws, model.scaling, model.spec, before, data.dates[59], {"plan": spend})
    assert not held.controls_known.any() and "held at their mean of the 4 weeks" in held.controls_note()
    controls = data.controls.copy()
    controls[60:64] = data.controls[56:60].mean(axis=0)
    same = ModelData(data.dates, data.spend, controls, data.kpi, data.channels, data.control_names)
    known = forecast_plan(draws, model.scaling, model.spec, same, data.dates[59], {"plan": spend})
    np.testing.assert_allclose(held.predictions["plan"].expected, known.predictions["plan"].expected)
    # its own seasonality and trend week by week, not a flat average baseline
    assert np.ptp(held.predictions["plan"].components["seasonality"].mean(axis=0)) > 0
    # zero spend in the plan weeks still earns the carry-in of the spend before, fading week by week
    zero = forecast_plan(
        draws, model.scaling, model.spec, before, data.dates[59], {"off": np.zeros_like(spend)}
    )
    media = zero.predictions["off"].contributions.sum(axis=2).mean(axis=0)
    assert media[0] > media[1] > media[2] > 0 and media[3] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="no week"):
        forecast_plan(draws, model.scaling, model.spec, before, data.dates[65], {"plan": spend})


def test_promised_uplift_is_on_the_plan_weeks_and_paired() -> None:
    model, data = fake_model(70, 60)
    from mmm_pipeline.model.predict import forecast_plan as fp

    current = np.tile(data.spend[56:60].mean(axis=0), (4, 1))
    recommended = current * np.array([1.5] + [0.8] * (current.shape[1] - 1))
    pf = fp(draws_of(model), model.scaling, model.spec, data.window(0, 60), data.dates[59],
            {"recommended": recommended, "current": current})  # fmt: skip
    summary = forecast_summary(pf)
    rec, cur = pf.predictions["recommended"], pf.predictions["current"]
    uplift = (rec.expected - cur.expected).sum(axis=1)
    assert summary["forecast_uplift_mean"] == pytest.approx(uplift.mean())
    assert (
        summary["forecast_uplift_hdi_low"]
        <= summary["forecast_uplift_mean"]
        <= summary["forecast_uplift_hdi_high"]
    )
    assert summary["forecast_kpi_mean"] == pytest.approx(rec.kpi.sum(axis=1).mean())
    assert (
        summary["forecast_start"] == data.dates[60].date()
        and summary["forecast_end"] == data.dates[63].date()
    )
    weekly = forecast_weeks(pf)
    assert len(weekly) == 4 and not weekly["controls_known"].any()
    np.testing.assert_allclose(weekly["uplift_mean"].sum(), summary["forecast_uplift_mean"])
    np.testing.assert_allclose(weekly["baseline_mean"] + weekly["media_mean"], weekly["expected_mean"])
    same = fp(draws_of(model), model.scaling, model.spec, data.window(0, 60), data.dates[59],
              {"recommended": current, "current": current})  # fmt: skip
    assert forecast_summary(same)["forecast_uplift_mean"] == 0.0


def _promise(model, data: ModelData, t: int, weeks: int, scale: float = 1.1) -> tuple[dict, pd.DataFrame]:
    """A recommendation made after week ``t - 1``: the weeks ``t..t+weeks-1`` at ``scale`` x the spend that
    happened there (the spend ``recommended``), against what happened (``current``)."""
    happened = data.spend[t : t + weeks]
    recommended = happened * scale
    pf = forecast_plan(draws_of(model), model.scaling, model.spec, data.window(0, t), data.dates[t - 1],
                       {"recommended": recommended, "current": happened})  # fmt: skip
    promise = {
        "optimization_id": f"opt-{t:03d}", "market": "all", "model_id": model.model_id,
        "created_at": pd.Timestamp(data.dates[t - 1]) + pd.Timedelta(days=8), "trigger": "schedule",
        "plan": "base", "mode": "plan" if weeks > 1 else "steady_state", "weeks": weeks,
        **forecast_summary(pf),
    }  # fmt: skip
    allocations = pd.DataFrame(
        [{"optimization_id": promise["optimization_id"], "week_index": i, "channel": ch,
          "current": happened[i, c], "recommended": recommended[i, c]}
         for i in range(weeks) for c, ch in enumerate(data.channels)]
    )  # fmt: skip
    return promise, allocations


def test_scorecard_row_promise_against_what_happened() -> None:
    model, data = fake_model(70, 60)
    promise, allocations = _promise(model, data, 60, 4, scale=1.3)
    followed = data.spend.copy()
    followed[60:64] *= 1.3
    rows = frame_of(data, spend=followed)
    # not landed yet, then partly
    assert score(promise, allocations, rows.iloc[:60], model)["status"] == "pending"
    partial = score(promise, allocations, rows.iloc[:62], model)
    assert partial["status"] == "partial" and partial["weeks_landed"] == 2 and partial["actual_kpi"] is None
    row = score(promise, allocations, rows, model, max_draws=DRAWS)
    actual = float(data.kpi[60:64].sum())
    assert row["status"] == "complete" and row["actual_kpi"] == pytest.approx(actual)
    assert row["in_interval"] == (
        promise["forecast_kpi_hdi_low"] <= actual <= promise["forecast_kpi_hdi_high"]
    )
    assert row["followed"] and row["spend_deviation"] == pytest.approx(0.0, abs=1e-12)
    # counterfactual: the same model, the previous allocation, the controls as they landed
    cf = forecast_plan(draws_of(model), model.scaling, model.spec, data, data.dates[59],
                       {"previous": data.spend[60:64]}).predictions["previous"]  # fmt: skip
    assert row["counterfactual_kpi_mean"] == pytest.approx(cf.kpi.sum(axis=1).mean())
    assert row["realized_uplift_mean"] == pytest.approx(actual - row["counterfactual_kpi_mean"])
    assert row["realized_uplift_hdi_low"] < row["realized_uplift_mean"] < row["realized_uplift_hdi_high"]
    assert row["uplift_in_interval"] == (
        row["realized_uplift_hdi_low"] <= promise["forecast_uplift_mean"] <= row["realized_uplift_hdi_high"]
    )
    # spend that did not follow the recommendation is said so
    ignored = score(promise, allocations, frame_of(data), model, max_draws=DRAWS)
    assert not ignored["followed"] and ignored["spend_deviation"] > FOLLOW_TOLERANCE
    assert "deviated" in ignored["note"]
    # recorded before plan forecasts existed: nothing to score
    old = score({**promise, "forecast_start": None, "forecast_kpi_mean": None}, allocations, rows, model)
    assert old["status"] == "no_forecast"


def test_coverage_near_nominal_when_actuals_follow_the_promise_and_a_break_shows() -> None:
    """Actuals drawn from each promise's own predictive distribution: the promised 94% intervals cover
    about 94% of them. After a break (the KPI 30% lower) the actuals fall below the promises."""
    model, data = fake_model(130, 60)
    rng = np.random.default_rng(3)
    promises, allocations, kpi = [], [], data.kpi.copy()
    for t in range(60, 120):
        promise, alloc = _promise(model, data, t, 1, scale=1.0)
        pf = forecast_plan(draws_of(model), model.scaling, model.spec, data.window(0, t), data.dates[t - 1],
                           {"p": data.spend[t : t + 1]})  # fmt: skip
        kpi[t] = pf.predictions["p"].kpi[rng.integers(DRAWS), 0]  # one predictive draw
        promises.append(promise)
        allocations.append(alloc)
    broken = kpi.copy()
    broken[100:120] *= 0.7
    loads: list[str] = []

    def load(model_id: str):
        loads.append(model_id)
        return model

    promised, allocated = pd.DataFrame(promises), pd.concat(allocations, ignore_index=True)
    card = build_scorecard(promised, allocated, {"all": frame_of(data, kpi=kpi)}, load, max_draws=DRAWS)
    (stats,) = coverage(card).to_dict("records")
    assert stats["complete"] == 60 and 0.85 <= stats["coverage"] <= 1.0
    assert 0.85 <= stats["uplift_coverage"] <= 1.0  # nothing was promised, nothing was realized
    assert card["coverage_to_date"].iloc[-1] == pytest.approx(stats["coverage"])
    after = build_scorecard(promised, allocated, {"all": frame_of(data, kpi=broken)}, load, card, DRAWS)
    post = after[pd.to_datetime(after["first_week"]) >= data.dates[100]]
    assert not post["in_interval"].astype(bool).any() and (post["kpi_error"] < 0).all()
    assert after["coverage_to_date"].iloc[-1] < stats["coverage"] - 0.25
    # the rows before the break were kept as scored (no model loaded again); the corrected ones rescored
    assert len(loads) == 60 + 20
    pre = after[pd.to_datetime(after["first_week"]) < data.dates[100]]
    pd.testing.assert_frame_equal(
        pre.drop(columns="coverage_to_date"), card.iloc[:40].drop(columns="coverage_to_date")
    )
    # rows kept as stored and rows scored now have one date type, so they sort and chart together
    # (the stored rows come back from DuckDB as timestamps, the new ones as dates)
    corrected = frame_of(data, kpi=np.where(np.arange(len(kpi)) >= 110, kpi, broken))
    mixed = build_scorecard(promised, allocated, {"all": corrected}, load, after, DRAWS)
    assert pd.api.types.is_datetime64_any_dtype(mixed["first_week"])
    assert scorecard_chart(mixed, "promised vs actual") is not None


# --- alarms read the champion lineage (item 6) -----------------------------------------------------------

START = dt.date(2024, 1, 7)


def tracked(model_ids: list[str], train_ends: list[int], weeks: list[int], z: float) -> pd.DataFrame:
    """Tracking rows: model ``model_ids[i]`` (fitted through week ``train_ends[i]``) forecast week
    ``weeks[i]``."""
    week = [START + dt.timedelta(weeks=w) for w in weeks]
    return pd.DataFrame({
        "model_id": model_ids, "train_end": [START + dt.timedelta(weeks=t) for t in train_ends], "week": week,
        "z_score": z, "error": z * 100.0, "in_94": abs(z) < 2, "in_50": abs(z) < 0.67, "abs_pct_error": 0.02,
        "spend_flags": None,
    })  # fmt: skip


RULES = [CusumRule(threshold=5.0)]


def test_weekly_refit_champions_still_raise_an_alarm() -> None:
    """A refit every week: each champion serves one week and tracks at most one. Judged alone no champion
    reaches min_weeks (no alarm ever); the lineage of champions does, and an event restarts it."""
    n = 10
    rows = tracked([f"m{i}" for i in range(n)], list(range(-1, n - 1)), list(range(n)), z=-3.0)
    opened_alone = [
        drift.decide(RULES, rows.iloc[[i]], "a", f"m{i}", [], 4, min_weeks=4).open for i in range(n)
    ]
    assert opened_alone == [None] * n  # the old count: since the last promotion
    opened = [
        drift.decide(RULES, drift.lineage(rows.iloc[: i + 1]), "a", f"m{i}", [], 4, min_weeks=4).open
        for i in range(n)
    ]
    first = next(i for i, o in enumerate(opened) if o is not None)
    assert first == 3 and opened[first]["model_id"] == "m3"  # the 4th tracked week of the lineage
    # after the event the lineage starts again: the refit it started is judged on its own weeks only
    since = opened[first]["detected_week"]
    for i in range(first + 1, n):
        line = drift.lineage(rows.iloc[: i + 1], since)
        decision = drift.decide(RULES, line, "a", f"m{i}", [], 4, min_weeks=4)
        assert len(line) == i - first and (decision.open is not None) == (i - first >= 4)


def test_lineage_takes_each_weeks_latest_forecast_origin() -> None:
    # m0 (fitted through week 0) tracked weeks 1-4 before m1 (fitted through week 2) replaced it
    rows = pd.concat([tracked(["m0"] * 4, [0] * 4, [1, 2, 3, 4], z=0.5),
                      tracked(["m1"] * 3, [2] * 3, [3, 4, 5], z=-0.5)])  # fmt: skip
    line = drift.lineage(rows)
    assert line["model_id"].tolist() == ["m0", "m0", "m1", "m1", "m1"]
    assert line["week"].tolist() == [START + dt.timedelta(weeks=w) for w in (1, 2, 3, 4, 5)]
    assert drift.lineage(rows, START + dt.timedelta(weeks=3))["model_id"].tolist() == ["m1", "m1"]
    assert drift.lineage(rows.iloc[0:0]).empty


def test_coverage_to_date_counts_only_complete_hits_and_skips_unscored_rows() -> None:
    """Rows read back from the warehouse carry ``in_interval`` as objects with None where nothing was
    scored yet: no hit, no pandas downcasting warning."""
    frame = pd.DataFrame(
        {
            "market": ["a", "a", "a", "b"],
            "created_at": pd.to_datetime(["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-01"]),
            "optimization_id": ["o1", "o2", "o3", "o4"],
            "status": ["complete", "pending", "complete", "pending"],
            "in_interval": pd.Series([True, None, False, None], dtype=object),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        covered = with_coverage(frame)
    assert covered["coverage_to_date"].tolist()[:3] == [1.0, 1.0, 0.5]
    assert np.isnan(covered["coverage_to_date"].iloc[3])
