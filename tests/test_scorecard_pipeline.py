"""The plan forecast and the recommendation scorecard through the real definitions: the suite's shared
two-market project (fitted once, see conftest), a copy of it receiving the week after its
recommendation, spent as recommended, and the feature run that lands it (no refit)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from mmm_pipeline.config import load_config
from mmm_pipeline.report import Thresholds, build_report, latest_report, load_report_data
from mmm_pipeline.runner import project_instance, run_pipeline

MARKET = "north"


def _warehouse(cfg, sql: str, params: list | None = None) -> pd.DataFrame:
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        return conn.execute(sql, params or []).df()


@pytest.fixture(scope="module")
def delivered(two_markets_project: tuple[Path, object]) -> dict[str, object]:
    """The copy before and after the recommendation's week lands (its spend = the recommendation)."""
    config_path, _ = two_markets_project
    cfg = load_config(config_path)
    before = {
        "plan": _warehouse(cfg, "SELECT * FROM optimization.latest_plan_summary ORDER BY market"),
        "weeks": _warehouse(cfg, "SELECT * FROM optimization.latest_plan_forecast ORDER BY market, week"),
        "history": _warehouse(cfg, "SELECT * FROM monitoring.optimization_history"),
        "card": _warehouse(cfg, "SELECT * FROM monitoring.recommendation_scorecard ORDER BY market"),
    }
    allocations = _warehouse(cfg, "SELECT * FROM optimization.latest_weekly_allocations")
    landing = cfg.landing_dir
    media, kpi, controls = (pd.read_csv(landing / k / f"{k}.csv", parse_dates=["date"]) for k in
                            ("media", "kpi", "controls"))  # fmt: skip
    last = media["date"].max()
    week = last + pd.Timedelta(weeks=1)
    spend = allocations[allocations["week_index"] == 0].set_index(["market", "channel"])["recommended"]
    new_media = media[media["date"] == last].assign(date=week)
    keys = zip(new_media["market"], new_media["channel"], strict=True)
    new_media["spend"] = [spend[key] for key in keys]
    new_kpi = kpi[kpi["date"] == last].assign(date=week)
    for kind, frame in (("media", new_media), ("kpi", new_kpi),
                        ("controls", controls[controls["date"] == last].assign(date=week))):  # fmt: skip
        frame.to_csv(landing / kind / f"{kind}_next.csv", index=False, date_format="%Y-%m-%d")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(config_path.parent / "dagster_home"))
        instance = project_instance(cfg)
        summary = run_pipeline(cfg, instance=instance, log=lambda _m: None, until="features")
        event = instance.get_latest_materialization_event(dg.AssetKey("recommendation_scorecard"))
    return {
        "cfg": cfg, "before": before, "summary": summary, "week": week.date(), "kpi": new_kpi,
        "card": _warehouse(cfg, "SELECT * FROM monitoring.recommendation_scorecard ORDER BY market"),
        "metadata": event.asset_materialization.metadata,
    }  # fmt: skip


def test_the_recommendation_promises_a_forecast_of_its_own_weeks(delivered: dict) -> None:
    before = delivered["before"]
    plan = before["plan"].set_index("market").loc[MARKET]
    assert pd.Timestamp(plan["forecast_start"]) == pd.Timestamp(plan["history_end"]) + pd.Timedelta(weeks=1)
    assert plan["forecast_end"] == plan["forecast_start"]  # a steady-state plan: its one week
    assert plan["forecast_kpi_hdi_low"] < plan["forecast_kpi_mean"] < plan["forecast_kpi_hdi_high"]
    assert plan["forecast_uplift_hdi_low"] <= plan["forecast_uplift_mean"] <= plan["forecast_uplift_hdi_high"]
    assert "held at their mean of the 13 weeks" in plan["forecast_controls"]
    weeks = before["weeks"][before["weeks"]["market"] == MARKET]
    assert len(weeks) == 1 and not weeks["controls_known"].any()
    assert weeks["kpi_mean"].iloc[0] == pytest.approx(plan["forecast_kpi_mean"])
    # the history's predicted KPI is that forecast, no longer "baseline x weeks + contribution"
    history = before["history"][before["history"]["market"] == MARKET]
    assert (history["expected_kpi"] == plan["forecast_kpi_mean"]).all()
    assert "baseline_kpi" not in history.columns
    # before its week lands, the scorecard holds the promise and waits
    card = before["card"].set_index("market")
    assert set(card.index) == {"north", "south"} and (card["status"] == "pending").all()
    assert card.loc[MARKET, "promised_kpi_mean"] == pytest.approx(plan["forecast_kpi_mean"])


def test_the_landed_week_is_scored_against_the_promise(delivered: dict) -> None:
    assert delivered["summary"].ok, delivered["summary"].problems
    card = delivered["card"].set_index("market")
    row = card.loc[MARKET]
    actual = float(delivered["kpi"].set_index("market").loc[MARKET].drop("date").iloc[0])
    assert row["status"] == "complete" and pd.Timestamp(row["first_week"]).date() == delivered["week"]
    assert row["actual_kpi"] == pytest.approx(actual)
    assert row["in_interval"] == (row["promised_kpi_hdi_low"] <= actual <= row["promised_kpi_hdi_high"])
    assert row["followed"] and row["spend_deviation"] == pytest.approx(0.0, abs=1e-9)
    low, high = row["counterfactual_kpi_hdi_low"], row["counterfactual_kpi_hdi_high"]
    assert low < row["counterfactual_kpi_mean"] < high
    assert row["realized_uplift_mean"] == pytest.approx(actual - row["counterfactual_kpi_mean"])
    assert row["coverage_to_date"] == float(row["in_interval"])
    # Dagster shows the mart: a table preview and the coverage per market
    metadata = delivered["metadata"]
    assert metadata["dagster/row_count"].value == 2
    assert "in_interval" in metadata["preview"].value and MARKET in metadata["coverage"].value
    # the report section reads it from the BI catalog
    cfg = delivered["cfg"]
    data = load_report_data(cfg.bi_database_path, MARKET, cfg.kpi.name)
    report = build_report(data, Thresholds(false_alarm_rate_per_year=0.05, min_weeks_before_event=4))
    assert "scorecard" in report.sections
    for text in (report.html, report.markdown):
        assert "Did the last recommendations deliver?" in text
        assert f"fell inside the promised interval for {int(row['in_interval'])} of 1" in text
        assert "5.0% false alarms per stable year" in text


def test_the_pipelines_report_states_the_alarm_rate_and_the_waiting_promise(
    fitted_two_markets: tuple[Path, object],
) -> None:
    directory, _ = fitted_two_markets
    cfg = load_config(directory / "mmm_pipeline.yaml")
    html = (latest_report(cfg.reports_dir, MARKET) / "report.html").read_text()
    rate = cfg.monitoring.false_alarm_rate_per_year
    assert f"{rate:.1%} false alarms per stable year" in html
    assert "Did the last recommendations deliver?" in html and "its weeks have not all landed yet" in html
