"""Dagster alone decides what runs: the CLI, the daemon's sensor and Dagster's stale status agree.

Two synthetic markets (small draws, no CV) on a real Dagster instance and DuckDB warehouse. Before any
fit, every model asset is missing and the three agree on that (default suite, no run). On the suite's
fitted two-market project, a changed plan file: the sensor, ticked as the daemon ticks it, runs the
stale work in the runner's order (each market's own part, every market's monitoring once, the
reports). The slow test fits both markets once, then: a second ``run`` materializes nothing
model-side; a changed plan file re-optimizes and rewrites the reports without a refit; one lift test
corrected in place (same count) refits that market only. Before each run the set the CLI would run is
what Dagster's stale status reports, and the sensor's next tick asks its first phase.
"""
from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from conftest import small_model_config
from dagster._core.storage.tags import RUN_KEY_TAG

from mmm_pipeline.config import ProjectConfig, load_config
from mmm_pipeline.definitions import build_definitions
from mmm_pipeline.defs.jobs import MODEL_JOB
from mmm_pipeline.defs.sensors import STALE_MODEL_SENSOR
from mmm_pipeline.defs.staleness import OBSERVED_KEYS, model_phases, model_plans, stale_resolver
from mmm_pipeline.runner import RunSummary, project_instance, run_job, run_pipeline
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


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """One evaluation of the stale_model_sensor, as the daemon's tick evaluates it."""
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        tick = defs.get_sensor_def(STALE_MODEL_SENSOR).evaluate_tick(
            dg.build_sensor_context(instance=instance, definitions=defs)
        )
    return list(tick.run_requests)


def _three_answers(cfg: ProjectConfig) -> tuple[set, set]:
    """What the CLI would run and what the daemon's sensor requests at its next tick (the first phase:
    each market's own part, see :func:`test_the_daemon_runs_stale_work_in_the_runners_order`), each as
    {(market, asset)}, after checking that the CLI's reasons are exactly what Dagster's stale status
    reports (missing or stale assets of the model job, per market partition; unpartitioned ones once)."""
    defs = build_definitions(cfg)
    instance = project_instance(cfg)
    graph = defs.resolve_asset_graph()
    job_keys = defs.resolve_job_def(MODEL_JOB).asset_layer.selected_asset_keys
    plans = model_plans(instance, graph, job_keys, MARKETS)
    cli = {(p.market, k) for p in plans for k in p.selection}
    daemon = {(r.partition_key, k) for r in _tick(defs, instance) for k in r.asset_selection}
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


MONITORING = {dg.AssetKey(k) for k in ("performance_tracking", "drift_events", "recommendation_scorecard")}


def test_before_any_fit_cli_daemon_and_dagster_agree_everything_is_missing(tmp_path: Path) -> None:
    cfg = load_config(init_project(tmp_path / "project", "synthetic"))
    project_instance(cfg).add_dynamic_partitions("market", list(MARKETS))  # as the first ingestion does
    cli, daemon = _three_answers(cfg)
    assert {(m, FIT) for m in MARKETS} | {(m, REPORT) for m in MARKETS} <= cli
    # How the runner cuts each market's plan: its own assets, then every market's monitoring (below
    # each market's fit, so in every plan; the runner runs it once), then what reads it (the report).
    defs = build_definitions(cfg)
    graph = defs.resolve_asset_graph()
    job_keys = defs.resolve_job_def(MODEL_JOB).asset_layer.selected_asset_keys
    plans = model_plans(project_instance(cfg), graph, job_keys, MARKETS)
    phases = model_phases(graph, {plan.market: plan.selection for plan in plans})
    assert set(phases.shared) == MONITORING  # every fit feeds them: run once
    for plan in plans:
        own, below = phases.own[plan.market], phases.below[plan.market]
        assert set(own) | set(below) | MONITORING == set(plan.selection)
        assert FIT in own and REPORT not in own and not MONITORING & set(own) and below == (REPORT,)
    # The daemon's first tick: the same first phase as the runner, each market's own part.
    assert daemon == {(market, k) for market, own in phases.own.items() for k in own}


def test_the_daemon_runs_stale_work_in_the_runners_order(two_markets_project, monkeypatch) -> None:
    """A plan file changes on the fitted two-market project. Ticked as the daemon ticks it (each request
    run as a run of the code location, with its run key), the stale_model_sensor asks each market's own
    part first (the recommendation and what it feeds in the market), then every market's monitoring in
    one run, then each market's report; then nothing, and the CLI finds everything current. Monitoring
    in every market's run would compute it for all markets once per market."""
    config_path, _ = two_markets_project
    monkeypatch.setenv("DAGSTER_HOME", str(config_path.parent / "dagster_home"))  # the copy's instance
    cfg = load_config(config_path)
    assert _three_answers(cfg) == (set(), set())
    plan = cfg.optimization_plan_path
    plan.write_text(plan.read_text().replace("digital_floor: {group: digital, min: 0.40}",
                                             "digital_floor: {group: digital, min: 0.45}"))  # fmt: skip
    cli, _ = _three_answers(cfg)
    defs, instance = build_definitions(cfg), project_instance(cfg)
    ticks: list[list[tuple[str | None, set[dg.AssetKey]]]] = []
    while requests := _tick(defs, instance):
        assert len(ticks) < 4, "\n".join(map(str, ticks))
        ticks.append(sorted(((r.partition_key, set(r.asset_selection)) for r in requests), key=str))
        for r in requests:
            tags = {**r.tags, RUN_KEY_TAG: r.run_key}
            result = run_job(defs, MODEL_JOB, instance, list(r.asset_selection), r.partition_key, tags)
            assert result.success
    assert len(ticks) == 3, "\n".join(map(str, ticks))
    own, shared, reports = ticks
    assert [m for m, _ in own] == list(MARKETS)
    assert all(RECOMMENDATION in keys and not keys & (MONITORING | {REPORT, FIT}) for _, keys in own), own
    assert len(shared) == 1 and shared[0][0] is None and SCORECARD in shared[0][1] <= MONITORING, shared
    assert reports == [(m, {REPORT}) for m in MARKETS]
    assert {(m, k) for tick in ticks for m, keys in tick for k in keys if m} | {
        (m, k) for k in shared[0][1] for m in MARKETS
    } == cli
    assert _three_answers(cfg) == (set(), set())


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
    assert cli == {(m, k) for m in MARKETS for k in (RECOMMENDATION, SCORECARD, BI, REPORT)}
    assert daemon == {(m, k) for m, k in cli if k not in (SCORECARD, REPORT)}  # the monitoring, reports next
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
    assert daemon <= cli and ("north", FIT) in daemon and not {m for m, _ in daemon} - {"north"}, daemon
    assert ("north", FIT) in cli and ("south", FIT) not in cli, cli
    fourth, log, done = _run(config_path)
    assert fourth.ok, fourth.problems
    assert ("model_fit", "north") in done and ("model_fit", "south") not in done, log
    assert any("market north: fitting the model" in line for line in log), log
    assert _three_answers(cfg) == (set(), set())
