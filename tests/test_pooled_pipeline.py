"""``model.spec.pooling: partial`` through the real definitions: `mmm-pipeline run` on a two-market
synthetic project fits the group as one pooled model in one Dagster run, cross-validates it, registers
and promotes it as one unit, and every market gets its insight tables, CV figures, budget
recommendation and report from its view of the joint posterior, plus a national roll-up.

One project is built and fitted once (module fixture); each test reads it. ``slow``: one pooled nutpie
compile and three pooled fits (the weekly fit and two CV folds), a few minutes on shared cores. The
stale-model and drift sensors' requests for a group are checked without a fit.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml
from conftest import small_model_config

from mmm_pipeline.config import ProjectConfig, load_config
from mmm_pipeline.definitions import build_definitions
from mmm_pipeline.defs.assets.model import GROUP_KEYS
from mmm_pipeline.defs.assets.monitoring import EVENT_TAG
from mmm_pipeline.defs.jobs import MODEL_JOB
from mmm_pipeline.defs.sensors import DRIFT_SENSOR, STALE_MODEL_SENSOR
from mmm_pipeline.model.pooled import NATIONAL
from mmm_pipeline.model.registry import read_group_record
from mmm_pipeline.publish.bi import publish
from mmm_pipeline.runner import RunSummary, project_instance, run_job, run_pipeline
from mmm_pipeline.scaffold import init_project
from mmm_testkit.synthetic import generate_world, write_world

MARKETS = ("north", "south")


@pytest.fixture(scope="module")
def pooled_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProjectConfig, RunSummary, list[str]]:
    """A synthetic two-market project with ``pooling: partial`` and tiny draws, after its first full
    `run`."""
    directory = tmp_path_factory.mktemp("pooled")
    config_path = init_project(directory, "synthetic")
    small_model_config(config_path)
    raw = yaml.safe_load(config_path.read_text())
    raw["model"]["spec"]["pooling"] = "partial"
    raw["model"]["spec"]["sampler"] = {"chains": 2, "draws": 200, "tune": 300, "seed": 1}
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config_path)
    # The world of conftest's fitted_two_markets (whose plans and scenarios are feasible in both markets).
    world = generate_world(seed=5, n_weeks=104, start=cfg.calendar.start, markets=MARKETS)
    write_world(world, cfg.landing_dir, directory / "truth")
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(directory / "dagster_home"))
        summary = run_pipeline(cfg, instance=project_instance(cfg), log=lines.append)
    return cfg, summary, lines


def _rows(cfg: ProjectConfig, sql: str) -> list[tuple]:
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.slow
def test_the_group_is_fitted_in_one_run_and_promoted_as_one_champion(pooled_project):
    cfg, summary, lines = pooled_project
    assert summary.ok, summary.problems
    group_runs = [r for r in summary.runs if r[3] == "market group"]
    assert len(group_runs) == 1 and group_runs[0][2], summary.runs
    assert any("fitting one pooled model" in line for line in lines), lines
    runs = _rows(
        cfg,
        "SELECT market, status, pooled_fit_id, model_spec, dagster_run_id, cv_status, promotion_blocked_by "
        "FROM models.model_runs ORDER BY market",
    )
    assert [r[0] for r in runs] == list(MARKETS)
    assert {r[1] for r in runs} == {"champion"}, runs
    pooled_ids = {r[2] for r in runs}
    assert len(pooled_ids) == 1 and None not in pooled_ids  # one pooled champion for the group
    assert all(json.loads(r[3])["pooling"] == "partial" for r in runs)
    assert len({r[4] for r in runs}) == 1  # one Dagster run fitted them all
    assert {r[5] for r in runs} <= {"ok", "partial"}, runs  # each market cross-validated
    (pooled_id,) = pooled_ids
    group = read_group_record(cfg.artifacts_dir / "models" / "_pooled" / pooled_id)
    assert group.markets == list(MARKETS)

    # Every market's partition of the fit was materialized by that run, with the pooled fit as version.
    instance = dg.DagsterInstance.from_config(str(cfg.source.parent / "dagster_home"))
    for market in MARKETS:
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_fit"), asset_partitions=[market]), limit=1
        ).records
        assert record.event_log_entry.run_id == runs[0][4]
        assert record.asset_materialization.tags["dagster/data_version"] == pooled_id


@pytest.mark.slow
def test_every_market_has_its_insight_rows_and_the_nation_its_roll_up(pooled_project):
    cfg, _, _ = pooled_project
    champions = dict(_rows(cfg, "SELECT market, model_id FROM models.champion_model_runs"))
    for table in ("channel_summary", "decomposition", "response_curves", "fit_weekly", "cv_metrics"):
        by_market = dict(_rows(cfg, f"SELECT market, count(*) FROM models.champion_{table} GROUP BY 1"))
        assert set(by_market) == set(MARKETS), (table, by_market)
    roas = _rows(
        cfg,
        "SELECT market, channel, roas_mean, roas_hdi_low, roas_hdi_high, mroas_mean FROM "
        "models.champion_channel_summary",
    )
    assert len(roas) == len(MARKETS) * len(cfg.channels)
    assert all(low <= mean <= high for _, _, mean, low, high, _ in roas)
    (pooled_id,) = {r[0] for r in _rows(cfg, "SELECT DISTINCT pooled_fit_id FROM models.model_runs")}
    national = _rows(
        cfg,
        f"SELECT channel, spend, roas_mean FROM models.channel_summary WHERE model_id = '{pooled_id}' "
        f"AND market = '{NATIONAL}' ORDER BY channel",
    )
    assert len(national) == len(cfg.channels)
    # The national spend is the markets' spend summed; its ROAS lies within the markets' range.
    for channel, spend, roas_mean in national:
        market_spend = _rows(
            cfg,
            f"SELECT sum(spend) FROM models.champion_channel_summary WHERE channel = '{channel}'",
        )[0][0]
        assert spend == pytest.approx(market_spend)
        values = [r for _, c, r, *_ in roas if c == channel]
        assert min(values) - 1e-9 <= roas_mean <= max(values) + 1e-9
    decomposition = _rows(
        cfg,
        f"SELECT count(DISTINCT week) FROM models.decomposition WHERE model_id = '{pooled_id}' "
        f"AND market = '{NATIONAL}'",
    )
    assert decomposition[0][0] == 104
    assert set(champions) == set(MARKETS)


@pytest.mark.slow
def test_every_market_gets_a_budget_recommendation_from_its_pooled_champion(pooled_project):
    cfg, _, _ = pooled_project
    rows = _rows(
        cfg,
        "SELECT r.market, count(*), any_value(r.model_id) = any_value(c.model_id) FROM "
        "optimization.recommendations r JOIN models.champion_model_runs c USING (market) GROUP BY 1 "
        "ORDER BY 1",
    )
    assert [r[0] for r in rows] == list(MARKETS)
    assert all(n == len(cfg.channels) and same for _, n, same in rows), rows


@pytest.mark.slow
def test_nothing_refits_on_unchanged_data_and_one_market_alone_is_refused(pooled_project, tmp_path: Path):
    cfg, _, _ = pooled_project
    before = _rows(cfg, "SELECT count(*) FROM models.model_runs")[0][0]
    home = cfg.source.parent / "dagster_home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        instance = project_instance(cfg)
        again = run_pipeline(cfg, instance=instance, log=lambda _m: None)
        assert again.ok, again.problems
        assert not [r for r in again.runs if r[3] == "market group"]
        assert _rows(cfg, "SELECT count(*) FROM models.model_runs")[0][0] == before
        # A run of one market's partition cannot fit a pooled group: it fails, saying why.
        result = run_job(
            build_definitions(cfg), MODEL_JOB, instance, [dg.AssetKey("model_fit")], partition_key="north"
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "market group (north, south)" in message and "this run covers north" in message


def _pooled_project(directory: Path) -> tuple[ProjectConfig, dg.DagsterInstance, dg.Definitions]:
    """A synthetic project with ``pooling: partial``, its markets known to Dagster, nothing fitted."""
    config_path = init_project(directory, "synthetic")
    raw = yaml.safe_load(config_path.read_text())
    raw.setdefault("model", {}).setdefault("spec", {})["pooling"] = "partial"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config_path)
    instance = project_instance(cfg)
    instance.add_dynamic_partitions("market", list(MARKETS))  # as the first ingestion does
    return cfg, instance, build_definitions(cfg)


def _tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, cursor: str | None = None):
    with dg.partition_loading_context(dynamic_partitions_store=instance):  # as the daemon does
        return defs.get_sensor_def(name).evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
        )


def test_the_stale_model_sensor_asks_one_run_over_every_market_for_the_group(tmp_path: Path):
    cfg, instance, defs = _pooled_project(tmp_path / "project")
    (request,) = _tick(defs, STALE_MODEL_SENSOR, instance).run_requests  # the group first; what lies
    # below it in each market on a later tick
    assert request.partition_key is None
    assert set(request.asset_selection) == set(GROUP_KEYS)
    assert request.tags["dagster/asset_partition_range_start"] == MARKETS[0]
    assert request.tags["dagster/asset_partition_range_end"] == MARKETS[-1]


def test_drift_in_several_markets_starts_one_group_refit(tmp_path: Path):
    """A shock that opens drift events in both markets in the same week: one run refits the group and
    names both events (each is linked to it by the drift assets); the same events start nothing again,
    a later event in one market starts one more group run."""
    cfg, instance, defs = _pooled_project(tmp_path / "project")

    def publish_events(*events: tuple[str, str, str]) -> None:
        rows = pd.DataFrame(
            [
                {"event_id": event_id, "market": market, "model_id": "group-1", "rule": rule,
                 "rules_fired": rule, "detected_week": dt.date(2024, 1, 1), "summary": f"{rule} {market}",
                 "evidence": "{}", "status": "open", "dagster_run_id": None,
                 "detected_at": dt.datetime(2024, 1, 2)}
                for event_id, market, rule in events
            ]
        )  # fmt: skip
        with duckdb.connect() as conn:
            conn.register("events", rows)
            publish(conn, {"drift_events": "events"}, cfg.publish_dir, cfg.bi_database_path)

    both = [("drift-north-1", "north", "residual_shift"), ("drift-south-1", "south", "rolling_mape")]
    publish_events(*both)
    tick = _tick(defs, DRIFT_SENSOR, instance)
    (request,) = tick.run_requests
    assert request.partition_key is None and set(request.asset_selection) == set(GROUP_KEYS)
    assert request.tags["dagster/asset_partition_range_start"] == MARKETS[0]
    assert request.tags["dagster/asset_partition_range_end"] == MARKETS[-1]
    assert request.tags["mmm/trigger"] == "drift"
    assert request.tags[EVENT_TAG] == "drift-north-1,drift-south-1"
    assert request.tags["mmm/drift_rule"] == "residual_shift,rolling_mape"
    assert _tick(defs, DRIFT_SENSOR, instance, tick.cursor).run_requests == []
    publish_events(*both, ("drift-north-2", "north", "cusum"))
    (again,) = _tick(defs, DRIFT_SENSOR, instance, tick.cursor).run_requests
    assert again.tags[EVENT_TAG] == "drift-north-2" and again.run_key != request.run_key
