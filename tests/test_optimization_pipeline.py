"""Budget recommendations as Dagster assets on a real project: champion only, tables, BI, infeasible plans.

One synthetic project with two markets, fitted once (both champions; the suite's shared first run, in a
copy), recommends a budget with the example plans; then a scenario whose rules conflict is a warning
while the base plan is still recorded; then a base plan whose rules conflict fails ``plan_feasible``,
writes nothing, and the last good recommendation keeps serving; a market without a champion fails with a
clear message.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from dagster._core.definitions.data_version import StaleStatus

from mmm_pipeline.config import load_config
from mmm_pipeline.definitions import build_definitions
from mmm_pipeline.defs.jobs import MODEL_JOB
from mmm_pipeline.defs.staleness import stale_resolver
from mmm_pipeline.model.build import ScalingSpec
from mmm_pipeline.model.registry import champion, load_model
from mmm_pipeline.optimize import (
    InfeasiblePlanError,
    ResponseModel,
    build_problem,
    load_plan,
    optimize_budget,
    plan_from_dict,
)
from mmm_pipeline.optimize.plan import load_scenarios
from mmm_pipeline.optimize.recommendations import OPTIMIZATION_TABLES, Optimization, recommend, spend_history
from mmm_pipeline.optimize.response import SaturationBlock
from mmm_pipeline.runner import project_instance, run_pipeline
from mmm_pipeline.scaffold import init_project
from mmm_pipeline.settings import ConfigError

MARKETS = ("north", "south")
SCENARIOS = ["plans/synthetic/recession.yaml", "plans/synthetic/growth.yaml",
             "plans/synthetic/competitive_response.yaml"]  # fmt: skip
SQUEEZE = """scenario: squeeze
description: traditional media >= 70% (conflicts with the base plan's digital floor and traditional cap)
changes:
  shares:
    traditional_floor: {group: traditional, min: 0.70}
"""
CONFLICTING = """name: conflicting
budget: {change_pct: 0}
shares:
  digital_floor: {group: digital, min: 0.70}
  traditional_floor: {group: traditional, min: 0.50}
"""


def _run(config_path: Path, select: str | None = None):
    cfg = load_config(config_path)
    # ``refit`` with a selection re-runs just the selected assets for every market (no refit).
    return run_pipeline(cfg, instance=project_instance(cfg), log=lambda _m: None, select=select,
                        refit=select is not None)  # fmt: skip


def _set_optimization(config_path: Path, **changes: object) -> None:
    raw = yaml.safe_load(config_path.read_text())
    raw["optimization"] = {**raw.get("optimization", {}), **changes}
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _sequential(config_path: Path, market: str) -> Optimization:
    """The market's base plan and scenarios optimized one after another in one call (``recommend``) with
    its champion, on the inputs the pipeline's steps read."""
    cfg = load_config(config_path)
    files = cfg.optimization_files()
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        serving = champion(conn, market)
        channels = ScalingSpec.model_validate_json(str(serving["scaling"])).channels
        history = spend_history(conn, market, channels, pd.Timestamp(serving["train_end"]).date())
        rows = conn.execute(
            "SELECT * FROM marts.fct_modeling_weekly WHERE market = ? ORDER BY week", [market]
        ).df()
    return recommend(
        load_model(str(serving["artifact_path"])), market, load_scenarios(files[0], files[1:]), history, rows,
        groups={c.name: c.group for c in cfg.channels}, max_draws=cfg.optimization.max_draws,
    )  # fmt: skip


def _plan_steps(config_path: Path, summary) -> dict[str, list[str]]:  # noqa: ANN001 - a RunSummary
    """The plan steps each market's model run executed (each its own step), by market."""
    instance = project_instance(load_config(config_path))
    out: dict[str, list[str]] = {}
    for job, run_id, _ok, scope in summary.runs:
        if job == MODEL_JOB and scope in MARKETS:
            out[scope] = sorted(
                entry.step_key
                for entry in instance.all_logs(run_id)
                if entry.is_dagster_event
                and entry.dagster_event.event_type_value == "STEP_SUCCESS"
                and ".optimize_plan_" in entry.step_key
            )
    return out


def _snapshot(config_path: Path) -> dict[str, pd.DataFrame]:
    cfg = load_config(config_path)
    out: dict[str, pd.DataFrame] = {}
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        for name in OPTIMIZATION_TABLES:
            out[name] = conn.execute(f"SELECT * FROM optimization.{name}").df()
            out[f"latest_{name}"] = conn.execute(f"SELECT * FROM optimization.latest_{name}").df()
        out["champions"] = conn.execute(
            "SELECT market, model_id FROM models.model_runs WHERE status = 'champion'"
        ).df()
    # Dagster's answer (the UI's, the runner's): is the recommendation fresh for the plans configured now?
    resolver = stale_resolver(project_instance(cfg), build_definitions(cfg).resolve_asset_graph())
    recommendation = dg.AssetKey("budget_recommendation")
    out["is_current"] = {m: resolver.get_status(recommendation, m) == StaleStatus.FRESH for m in MARKETS}
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        out["bi_tables"] = bi.execute("SELECT name FROM published_tables").df()
        out["bi_latest_plan_summary"] = bi.execute("SELECT * FROM latest_plan_summary").df()
        out["bi_latest_recommendations"] = bi.execute("SELECT * FROM latest_recommendations").df()
    return out


@pytest.fixture(scope="module")
def project(two_markets_project: tuple[Path, object]) -> dict[str, object]:
    config_path, first = two_markets_project  # the suite's shared first run, in a copy of its own
    directory = config_path.parent
    cfg = load_config(config_path)
    stages: dict[str, object] = {"config": config_path, "directory": directory, "first": first}
    stages["scenario_paths"] = cfg.optimization_scenario_paths
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(directory / "dagster_home"))
        stages["after_first"] = _snapshot(config_path)
        # The first run's plans once more, one after another in this process, as before plan steps.
        stages["sequential"] = {market: _sequential(config_path, market) for market in MARKETS}
        stages["first_steps"] = _plan_steps(config_path, first)
        # A scenario whose rules conflict: reported with its rules; the base plan is still recorded.
        (directory / "plans" / "squeeze.yaml").write_text(SQUEEZE)
        _set_optimization(config_path, scenarios=[*SCENARIOS, "plans/squeeze.yaml"])
        stages["scenario"] = _run(config_path, select="budget_recommendation+")
        stages["after_scenario"] = _snapshot(config_path)
        # A base plan whose rules conflict: nothing written, the last recommendation keeps serving.
        (directory / "plans" / "conflicting.yaml").write_text(CONFLICTING)
        _set_optimization(config_path, plan="plans/conflicting.yaml", scenarios=[])
        stages["base"] = _run(config_path, select="budget_recommendation+")
        stages["after_base"] = _snapshot(config_path)
        # A market without a champion.
        cfg = load_config(config_path)
        instance = project_instance(cfg)
        instance.add_dynamic_partitions("market", ["west"])
        stages["no_champion"] = (
            build_definitions(cfg)
            .resolve_job_def(MODEL_JOB)
            .execute_in_process(
                instance=instance,
                raise_on_error=False,
                asset_selection=[dg.AssetKey("budget_recommendation")],
                partition_key="west",
            )
        )
    return stages


def test_init_copies_the_example_plans(project: dict) -> None:
    plans = project["directory"] / "plans" / "synthetic"
    assert {p.name for p in plans.glob("*.yaml")} >= {"base_plan.yaml", "recession.yaml", "growth.yaml"}
    assert [p.parent for p in project["scenario_paths"]] == [plans] * 3  # the config's paths resolve there


def test_recommendation_per_market_uses_the_champion(project: dict) -> None:
    assert project["first"].ok, project["first"].problems
    snap = project["after_first"]
    cfg = load_config(project["config"])
    champions = snap["champions"].set_index("market")["model_id"]
    summary = snap["latest_plan_summary"].set_index("market")
    assert sorted(summary.index) == list(MARKETS) and len(snap["plan_summary"]) == 2
    for market in MARKETS:
        row = summary.loc[market]
        assert row["model_id"] == champions[market]
        assert row["plan"] == "base" and row["scenarios"] == "recession, growth, competitive_response"
        assert row["infeasible_scenarios"] == "" and row["n_draws"] == 200  # max_draws of the 2 x 200 draws
        assert row["total_recommended"] == pytest.approx(row["budget"], rel=1e-6)
        assert row["budget"] == pytest.approx(row["total_current"], rel=1e-9)  # change_pct 0
        assert row["uplift_hdi_low"] <= row["uplift_mean"] <= row["uplift_hdi_high"]
        assert 0 <= row["prob_uplift_positive"] <= 1 and row["plan_hash"]
        assert pd.Timestamp(row["history_end"]) == pd.Timestamp("2023-12-25")  # the champion's train_end

        rec = snap["recommendations"].query("market == @market")
        assert sorted(rec["channel"]) == sorted(cfg.channel_names)
        for key in ("optimization_id", "model_id", "created_at"):
            assert rec[key].nunique() == 1 and rec[key].iloc[0] == row[key], key
        assert rec["recommended"].sum() == pytest.approx(row["budget"], rel=1e-6)
        assert (rec["recommended"] >= 0).all() and rec["share_recommended"].sum() == pytest.approx(1.0)
        digital = rec[rec["channel_group"] == "digital"]["share_recommended"].sum()
        assert digital >= 0.40 - 1e-6  # the base plan's digital floor
        assert (rec["recommended_weekly_max"] <= 1.5 * rec["hist_weekly_max"] * (1 + 1e-6)).all()

        scenarios = snap["scenarios"].query("market == @market").set_index("scenario")
        assert list(scenarios.index) == ["base", "recession", "growth", "competitive_response"]
        assert (scenarios["status"] == "ok").all() and scenarios["is_base"].tolist() == [1, 0, 0, 0]
        assert scenarios.loc["recession", "total_recommended"] == pytest.approx(0.8 * row["budget"], rel=1e-6)
        allocations = snap["scenario_allocations"].query("market == @market")
        assert len(allocations) == 4 * len(cfg.channel_names)
        marginal = snap["marginal_roi"].query("market == @market")
        assert set(marginal["channel"]) == set(cfg.channel_names) and marginal["is_recommended"].any()
        weekly = snap["weekly_allocations"].query("market == @market")
        assert len(weekly) == len(cfg.channel_names)
        assert (pd.to_datetime(weekly["week"]) == pd.Timestamp("2024-01-01")).all()  # the week after
    assert snap["is_current"] == dict.fromkeys(MARKETS, True)  # nothing for a runner to re-optimize


#: What differs between two optimizations of the same plans: their id, time, run and wall time, and the
#: plan files' paths (this module's project is a copy of the folder the first run read them from).
VOLATILE = ["optimization_id", "created_at", "dagster_run_id", "seconds", "plan_source", "source"]


def test_each_plan_is_its_own_step_with_the_results_of_one_call(project: dict) -> None:
    """The base plan and each scenario ran as a step of their own (``optimize_plan_<k>``), and what was
    recorded is what optimizing them one after another in one call gives."""
    steps = [f"budget_recommendation.optimize_plan_{k}" for k in range(4)]
    assert project["first_steps"] == dict.fromkeys(MARKETS, steps)
    snap = project["after_first"]
    for market, sequential in project["sequential"].items():
        for name in OPTIMIZATION_TABLES:
            expected = sequential.tables[name].drop(columns=VOLATILE, errors="ignore")
            table = snap[name]
            recorded = table[table["market"] == market][expected.columns].reset_index(drop=True)
            for column in recorded.columns:  # DuckDB hands dates back as timestamps
                if pd.api.types.is_datetime64_any_dtype(recorded[column]):
                    recorded[column] = pd.to_datetime(recorded[column]).astype("datetime64[ns]")
                    expected[column] = pd.to_datetime(expected[column]).astype("datetime64[ns]")
            pd.testing.assert_frame_equal(recorded, expected, check_dtype=False, rtol=1e-12, obj=name)


def test_bi_catalog_publishes_every_and_the_latest_optimization(project: dict) -> None:
    snap = project["after_first"]
    names = set(snap["bi_tables"]["name"])
    assert {f"optimization_{n}" for n in OPTIMIZATION_TABLES} <= names
    assert {f"latest_{n}" for n in OPTIMIZATION_TABLES} <= names
    published = snap["bi_latest_recommendations"].sort_values(["market", "channel"]).reset_index(drop=True)
    stored = snap["latest_recommendations"].sort_values(["market", "channel"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(published[stored.columns], stored, check_dtype=False)


def test_infeasible_scenario_is_a_warning_and_the_base_plan_still_recorded(project: dict) -> None:
    """A scenario is a what-if: "not possible under these rules" is its answer, so the run succeeds with a
    warning naming the conflicting rules (a scheduler sees no failure) and the base plan is recorded."""
    summary = project["scenario"]
    assert summary.ok, summary.problems
    warnings = [w for w in summary.warnings if "scenarios_feasible" in w]
    assert len(warnings) == 2  # one per market
    assert all("scenario 'squeeze'" in w and "shares.traditional_floor.min" in w for w in warnings)
    before, after = project["after_first"], project["after_scenario"]
    assert len(after["plan_summary"]) == 4  # a new optimization per market
    assert set(after["latest_plan_summary"]["optimization_id"]).isdisjoint(
        before["latest_plan_summary"]["optimization_id"]
    )
    assert (after["latest_plan_summary"]["infeasible_scenarios"] == "squeeze").all()
    squeeze = after["latest_scenarios"].query("scenario == 'squeeze'")
    assert len(squeeze) == 2 and (squeeze["status"] == "infeasible").all()
    assert squeeze["conflicts"].str.contains("shares.traditional_floor.min", regex=False).all()
    assert squeeze["total_recommended"].isna().all()
    assert "squeeze" not in set(after["latest_scenario_allocations"]["scenario"])
    assert len(after["latest_recommendations"]) == 2 * 6
    assert after["is_current"] == dict.fromkeys(MARKETS, True)


def test_infeasible_base_plan_writes_nothing_and_the_last_recommendation_stays(project: dict) -> None:
    summary = project["base"]
    assert not summary.ok
    problems = [p for p in summary.problems if "plan_feasible" in p]
    assert len(problems) == 2  # one per market
    for problem in problems:
        assert "base plan 'conflicting'" in problem
        assert "shares.digital_floor.min" in problem and "shares.traditional_floor.min" in problem
    before, after = project["after_scenario"], project["after_base"]
    # Dagster counts the run under the new plan as done (trying the same infeasible plan again would write
    # nothing again); the plan_feasible check failed and the last recommendation stays, as asserted below.
    assert after["is_current"] == dict.fromkeys(MARKETS, True)
    for name in OPTIMIZATION_TABLES:
        assert len(after[name]) == len(before[name]), name
    pd.testing.assert_frame_equal(
        after["latest_plan_summary"].sort_values("market", ignore_index=True),
        before["latest_plan_summary"].sort_values("market", ignore_index=True),
    )
    published = after["bi_latest_plan_summary"].set_index("market")["optimization_id"]
    assert (
        published.to_dict() == before["latest_plan_summary"].set_index("market")["optimization_id"].to_dict()
    )


def test_market_without_a_champion_records_why_without_failing(project: dict) -> None:
    """No champion is not a step failure (the registry's champion_serving check says why and what to do;
    publishing and the "not yet trustworthy" page still run): the asset records that nothing was written
    and why, and the market's optimization tables stay empty."""
    result = project["no_champion"]
    assert result.success
    (materialization,) = result.asset_materializations_for_node("budget_recommendation")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["status"] == "no champion: nothing written"
    assert "no fit of this market has passed the gate yet" in metadata["note"]
    cfg = load_config(project["config"])
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        rows = conn.execute("SELECT count(*) FROM optimization.plan_summary WHERE market = 'west'").fetchone()
    assert rows == (0,)


def test_missing_plan_file_names_the_key_and_path(tmp_path: Path) -> None:
    config_path = init_project(tmp_path, "synthetic")
    _set_optimization(config_path, plan="plans/nope.yaml")
    with pytest.raises(ConfigError, match=r"optimization\.plan.*plans/nope\.yaml does not exist"):
        load_config(config_path)
    _set_optimization(config_path, plan=None, scenarios=["plans/synthetic/recession.yaml", "gone.yaml"])
    with pytest.raises(ConfigError, match=r"optimization\.scenarios\.1.*gone\.yaml does not exist"):
        load_config(config_path)
    _set_optimization(config_path, enabled=False)  # switched off: the files are not needed
    cfg = load_config(config_path)
    assert cfg.optimization_plan_path.name == "default_plan.yaml"


def test_disabled_optimization_builds_no_asset(tmp_path: Path) -> None:
    config_path = init_project(tmp_path, "synthetic")
    _set_optimization(config_path, enabled=False)
    graph = build_definitions(load_config(config_path)).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert "budget_recommendation" not in keys and "bi_model_snapshots" in keys
    assert graph.get(dg.AssetKey("bi_model_snapshots")).parent_keys == {
        dg.AssetKey("model_registry"),
        dg.AssetKey("prior_sensitivity"),
    }


def test_default_plan_rules_apply_to_every_channel(tmp_path: Path) -> None:
    """The built-in plan names no channel: ``channels.*`` bounds every channel, named per channel."""
    config_path = init_project(tmp_path, "synthetic")
    _set_optimization(config_path, plan=None)
    plan = load_plan(load_config(config_path).optimization_plan_path)
    assert plan.name == "default" and set(plan.channels) == {"*"}
    channels = ("tv", "search", "social")
    response = ResponseModel(
        channels, np.ones((1, 1, 3)), np.array([[3.0, 1.0, 1.0]]),
        [SaturationBlock("logistic", np.arange(3), {"lam": np.ones((1, 3))})], np.full(3, 100.0), 100.0,
    )  # fmt: skip
    current = dict.fromkeys(channels, 100.0)
    result = optimize_budget(plan, response, current=current, history=pd.DataFrame([current] * 4))
    rec = result.recommendation.set_index("channel")["recommended"]
    assert rec["tv"] == pytest.approx(150.0, rel=1e-6)  # the best channel, held at +50%
    assert rec[["search", "social"]].to_list() == pytest.approx([75.0, 75.0], rel=1e-4)
    squeezed = plan_from_dict(
        {"budget": {"total": 600}, "channels": {"*": {"max_change_pct": 50}, "tv": {"max": 100}}}
    )
    problem = build_problem(squeezed, channels, current=current)
    names = {r.name for r in problem.rules}
    assert {"channels.*.max_change_pct[search]", "channels.tv.max"} <= names
    assert "channels.*.max_change_pct[tv]" not in names  # tv's own entry replaces the wildcard
    with pytest.raises(InfeasiblePlanError, match=r"channels\.\*\.max_change_pct\[search\]"):
        optimize_budget(squeezed, response, current=current)
