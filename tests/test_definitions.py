"""The code location loads, from Dagster's own tooling and in-process, with the graph we expect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mmm_pipeline.config import CONFIG_ENV_VAR, load_config
from mmm_pipeline.definitions import build_definitions
from mmm_pipeline.features.sql_models import discover_models
from mmm_pipeline.ingest.schemas import LANDING_RULES, MODELING_RULES
from mmm_pipeline.scaffold import init_project

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return init_project(tmp_path / "project", "case-study")


def test_dagster_definitions_validate(config_path: Path) -> None:
    env = {**os.environ, CONFIG_ENV_VAR: str(config_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "mmm_pipeline.definitions"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dg_check_defs(config_path: Path) -> None:
    env = {**os.environ, CONFIG_ENV_VAR: str(config_path)}
    dg_cli = Path(sys.executable).with_name("dg")
    result = subprocess.run(
        [str(dg_cli), "check", "defs"], env=env, capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_graph_groups_lineage_and_checks(config_path: Path) -> None:
    cfg = load_config(config_path)
    defs = build_definitions(cfg)
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups["landing_files"] == "ingestion"
    assert groups["stg_media"] == "staging"
    assert groups["int_model_weeks"] == "intermediate"
    assert groups["fct_modeling_weekly"] == "marts"
    assert groups["bi_snapshots"] == "publish"
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, f"{key} has no description"
    # Lineage follows the SQL: every ref() is an upstream dependency.
    for model in discover_models(cfg.sql_models_dir, cfg).values():
        parents = {p.to_user_string() for p in graph.get(dg.AssetKey(model.name)).parent_keys}
        assert set(model.refs) <= parents, model.name
        assert set(model.source_assets) <= parents, model.name
    assert graph.get(dg.AssetKey("stg_media")).partitions_def is not None
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert {("landing_files", rule) for rule in LANDING_RULES} <= checks
    assert {("fct_modeling_weekly", rule) for rule in MODELING_RULES} <= checks
    assert {job.name for job in defs.jobs} >= {"ingest_landing", "build_features", "refit_model"}
    # The model: one partition per market, fitted from the modeling table, registered, published.
    assert groups["model_fit"] == groups["model_registry"] == "model"
    assert graph.get(dg.AssetKey("model_fit")).partitions_def.name == "market"
    # The fit reads the modeling table and the lift tests through their content hash (a data version).
    assert graph.get(dg.AssetKey("model_fit")).parent_keys == {dg.AssetKey("market_training_data")}
    assert dg.AssetKey("fct_modeling_weekly") in graph.get(dg.AssetKey("market_training_data")).parent_keys
    assert dg.AssetKey("model_fit") in graph.get(dg.AssetKey("model_registry")).parent_keys
    assert dg.AssetKey("model_registry") in graph.get(dg.AssetKey("bi_model_snapshots")).parent_keys
    assert {("model_fit", "convergence"), ("model_fit", "fit_quality")} <= checks
    assert {("model_registry", "champion_serving"), ("model_registry", "roas_stable")} <= checks
    # Budget recommendation: per market from the champion, in the refit job, published with the models.
    assert groups["budget_recommendation"] == "optimization"
    # The executive report: per market, after the models and recommendations are published for BI.
    assert groups["executive_report"] == "report"
    assert graph.get(dg.AssetKey("executive_report")).partitions_def.name == "market"
    assert graph.get(dg.AssetKey("executive_report")).parent_keys == {
        dg.AssetKey("bi_model_snapshots"),
        dg.AssetKey("drift_events"),  # the report shows this run's tracked performance
        dg.AssetKey("recommendation_scorecard"),  # and whether the last recommendations delivered
    }
    assert groups["recommendation_scorecard"] == "monitoring"
    assert {dg.AssetKey("drift_events"), dg.AssetKey("budget_recommendation")} <= graph.get(
        dg.AssetKey("recommendation_scorecard")
    ).parent_keys
    assert ("executive_report", "report_complete") in checks
    assert graph.get(dg.AssetKey("budget_recommendation")).partitions_def.name == "market"
    assert dg.AssetKey("model_registry") in graph.get(dg.AssetKey("budget_recommendation")).parent_keys
    assert dg.AssetKey("budget_recommendation") in graph.get(dg.AssetKey("bi_model_snapshots")).parent_keys
    assert {
        ("budget_recommendation", c)
        for c in ("plan_feasible", "scenarios_feasible", "within_history", "uplift_positive")
    } <= checks
    model_job = defs.resolve_job_def("refit_model")
    assert dg.AssetKey("budget_recommendation") in model_job.asset_layer.selected_asset_keys


def test_missing_config_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV_VAR, str(tmp_path / "nope.yaml"))
    with pytest.raises(ValueError, match="nope.yaml does not exist"):
        load_config()
