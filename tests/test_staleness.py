"""Dagster alone decides what runs: the CLI, the daemon's sensor and Dagster's stale status agree.

Two synthetic markets (small draws, no CV) on a real Dagster instance and DuckDB warehouse. Before any
fit, every model asset is missing and the three agree on that (default suite, no run). The slow test fits both
markets once, then: a second ``run`` materializes nothing model-side; a changed plan file re-optimizes
and rewrites the reports without a refit; one lift test corrected in place (same count) refits that
market only. Before each run the set the CLI would run equals what the sensor requests and what
Dagster's stale status reports.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from conftest import small_model_config

from mmm_pipeline.config import ProjectConfig, load_config
from mmm_pipeline.definitions import build_definitions
from mmm_pipeline.defs.jobs import MODEL_JOB
from mmm_pipeline.defs.sensors import STALE_MODEL_SENSOR
from mmm_pipeline.defs.staleness import OBSERVED_KEYS, around_shared, model_plans, stale_resolver
from mmm_pipeline.runner import RunSummary, project_instance, run_pipeline
from mmm_pipeline.scaffold import init_project
from mmm_testkit.synthetic import generate_world, write_world

MARKETS = ("north", "south")
LIFT_FILE = "lift_tests/experiments.csv"
FIT, RECOMMENDATION, SCORECARD, BI, REPORT = (
    dg.AssetKey(k)
    for k in (
        "model_fit", "budget_recommendation", "recommendation_scorecard", "bi_model_snapshots",
        "executive_report",
    )
)  # fmt: skip


def _project(directory: Path) -> Path:
    config_path = init_project(directory, "synthetic")
    small_model_config(config_path)
    raw = yaml.safe_load(config_path.read_text())
    raw["model"]["spec"]["sampler"].update(draws=150, tune=150)
    raw["cv"]["enabled"] = False
    raw["optimization"] = {**raw["optimization"], "scenarios": [], "max_draws": 50}
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config_path)
    world = generate_world(seed=5, n_weeks=60, start=cfg.calendar.start, markets=MARKETS)
    write_world(world, cfg.landing_dir, directory / "truth")
    tests = pd.DataFrame(
        {"market": ["north", "south"], "channel": "tv", "start_date": world.dates[30].date(),
         "end_date": world.dates[34].date(), "spend": 20000.0, "delta_spend": 10000.0, "lift": 4000.0,
         "lift_se": 2000.0}
    )  # fmt: skip
    (cfg.landing_dir / LIFT_FILE).parent.mkdir(parents=True, exist_ok=True)
    tests.to_csv(cfg.landing_dir / LIFT_FILE, index=False)
    return config_path


def _run(config_path: Path, **kwargs: object) -> tuple[RunSummary, list[str], set[tuple[str, str | None]]]:
    """A real ``mmm-pipeline run``: its summary, its log and the model-job assets it materialized."""
    cfg = load_config(config_path)
    instance = project_instance(cfg)
    cursor = instance.event_log_storage.get_maximum_record_id() or 0
    lines: list[str] = []
    summary = run_pipeline(cfg, instance=instance, log=lines.append, **kwargs)
    keys = build_definitions(cfg).resolve_job_def(MODEL_JOB).asset_layer.selected_asset_keys
    done = set()
    for key in keys:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor), limit=100
        ).records
        done |= {(key.to_user_string(), r.partition_key) for r in records}
    return summary, lines, done


def _three_answers(cfg: ProjectConfig) -> tuple[set, set]:
    """What the CLI would run and what the daemon's sensor requests, each as {(market, asset)}, after
    checking that the CLI's reasons are exactly what Dagster's stale status reports (missing or stale
    assets of the model job, per market partition; unpartitioned ones once)."""
    defs = build_definitions(cfg)
    instance = project_instance(cfg)
    graph = defs.resolve_asset_graph()
    job_keys = defs.resolve_job_def(MODEL_JOB).asset_layer.selected_asset_keys
    plans = model_plans(instance, graph, job_keys, MARKETS)
    cli = {(p.market, k) for p in plans for k in p.selection}
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        tick = defs.get_sensor_def(STALE_MODEL_SENSOR).evaluate_tick(
            dg.build_sensor_context(instance=instance, definitions=defs)
        )
    daemon = {(r.partition_key, k) for r in tick.run_requests for k in r.asset_selection}
    resolver = stale_resolver(instance, graph)
    reported = {
        (market, k)
        for k in job_keys - set(OBSERVED_KEYS)
        for market in (MARKETS if graph.get(k).is_partitioned else [None])
        if resolver.get_status(k, market).value in ("STALE", "MISSING")
    }
    roots = {(p.market if graph.get(k).is_partitioned else None, k) for p in plans for k in p.roots}
    assert roots == reported
    return cli, daemon


def test_before_any_fit_cli_daemon_and_dagster_agree_everything_is_missing(tmp_path: Path) -> None:
    cfg = load_config(init_project(tmp_path / "project", "synthetic"))
    project_instance(cfg).add_dynamic_partitions("market", list(MARKETS))  # as the first ingestion does
    cli, daemon = _three_answers(cfg)
    assert cli == daemon
    assert {(m, FIT) for m in MARKETS} | {(m, REPORT) for m in MARKETS} <= cli
    # How the runner cuts each market's plan: its own assets, then every market's monitoring (below
    # each market's fit, so in every plan; the runner runs it once), then what reads it (the report).
    defs = build_definitions(cfg)
    graph = defs.resolve_asset_graph()
    job_keys = defs.resolve_job_def(MODEL_JOB).asset_layer.selected_asset_keys
    monitoring = {
        dg.AssetKey(k) for k in ("performance_tracking", "drift_events", "recommendation_scorecard")
    }
    for plan in model_plans(project_instance(cfg), graph, job_keys, MARKETS):
        own, shared, below = around_shared(graph, plan.selection)
        assert set(own) | set(shared) | set(below) == set(plan.selection)
        assert FIT in own and REPORT not in own and not monitoring & set(own)
        assert set(shared) == monitoring and below == (REPORT,)  # every fit feeds them: run once


@pytest.mark.slow
def test_plan_change_reoptimizes_and_corrected_lift_test_refits(tmp_path: Path) -> None:
    config_path = _project(tmp_path / "project")
    cfg = load_config(config_path)
    first, log, done = _run(config_path)
    assert first.ok, first.problems
    assert {("model_fit", m) for m in MARKETS} <= done, log

    # (a) A second run: every market current, nothing model-side but the observed assets (the re-hash of
    # the inputs, the conditions re-evaluated).
    observed = {k.to_user_string() for k in OBSERVED_KEYS}
    assert _three_answers(cfg) == (set(), set())
    second, log, done = _run(config_path)
    assert second.ok, second.problems
    assert done == {(k, m) for k in observed for m in MARKETS}, log
    assert sum("already covers" in line for line in log) == 2, log

    # (b) A plan file changes: the recommendations, the scorecard that scores them, their BI publish and
    # the reports; no fit.
    plan = cfg.optimization_plan_path
    plan.write_text(plan.read_text().replace("digital_floor: {group: digital, min: 0.40}",
                                             "digital_floor: {group: digital, min: 0.45}"))  # fmt: skip
    cli, daemon = _three_answers(cfg)
    assert cli == daemon == {(m, k) for m in MARKETS for k in (RECOMMENDATION, SCORECARD, BI, REPORT)}
    third, log, done = _run(config_path)
    assert third.ok, third.problems
    assert {k for k, _ in done} == observed | {k.to_user_string() for k in (RECOMMENDATION, SCORECARD, BI,
                                                                             REPORT)}, log  # fmt: skip
    assert _three_answers(cfg) == (set(), set())

    # (c) North's lift test corrected in place (same count): north refits, south does not.
    tests = pd.read_csv(cfg.landing_dir / LIFT_FILE)
    tests.loc[tests["market"] == "north", "lift"] = 6000.0
    tests.to_csv(cfg.landing_dir / LIFT_FILE, index=False)
    hashed, _, _ = _run(config_path, select="+key:market_training_data")  # ingest, stage, re-hash only
    assert hashed.ok, hashed.problems
    cli, daemon = _three_answers(cfg)
    assert cli == daemon
    assert ("north", FIT) in cli and ("south", FIT) not in cli, cli
    fourth, log, done = _run(config_path)
    assert fourth.ok, fourth.problems
    assert ("model_fit", "north") in done and ("model_fit", "south") not in done, log
    assert any("market north: fitting the model" in line for line in log), log
    assert _three_answers(cfg) == (set(), set())
