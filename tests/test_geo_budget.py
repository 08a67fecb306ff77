"""Geo-level budgets: one total across markets x channels, national and per-market rules, the asset.

The maths run on small hand-built posteriors (seconds). The pipeline part uses the suite's two fitted
markets (a copy of the shared first run): the geo plan against both champions must do at least as well
as each market optimized alone under the same total, and the ``geo_budget`` job must record and publish
its rows through the real Dagster definitions.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from mmm_pipeline.cli import main
from mmm_pipeline.config import load_config
from mmm_pipeline.definitions import build_definitions
from mmm_pipeline.defs.jobs import GEO_JOB, MODEL_JOB
from mmm_pipeline.model.build import ScalingSpec
from mmm_pipeline.model.registry import champion, load_model
from mmm_pipeline.optimize import (
    InfeasiblePlanError,
    PlanError,
    ResponseModel,
    load_plan,
    optimize_budget,
    plan_from_dict,
    violations,
)
from mmm_pipeline.optimize.geo import build_geo_problem, optimize_geo_budget, stack_responses
from mmm_pipeline.optimize.objective import ObjectiveFunction
from mmm_pipeline.optimize.recommendations import spend_history
from mmm_pipeline.optimize.response import SaturationBlock
from mmm_pipeline.optimize.solver import Evaluator
from mmm_pipeline.report import build_report, load_report_data
from mmm_pipeline.runner import project_instance
from mmm_pipeline.scaffold import init_project
from mmm_pipeline.settings import ConfigError

GEO_PLAN = (
    Path(__file__).resolve().parent.parent / "mmm_pipeline" / "demo" / "plans" / "synthetic" / "geo_plan.yaml"
)
CHANNELS = ["tv", "search", "social"]
CURRENT = {
    "north": {"tv": 60_000.0, "search": 25_000.0, "social": 30_000.0},
    "south": {"tv": 20_000.0, "search": 40_000.0, "social": 10_000.0},
}
GROUPS = {"tv": "traditional", "search": "digital", "social": "digital"}


def response(seed: int, n_draws: int, l_max: int, kpi_scale: float) -> ResponseModel:
    """A posterior of known shape: logistic saturation, geometric adstock, per-channel uncertainty."""
    rng = np.random.default_rng(seed)
    c = len(CHANNELS)
    beta = rng.uniform(0.03, 0.09, c) * np.exp(rng.normal(0, 0.25, (n_draws, c)))
    lam = rng.uniform(0.8, 3.0, c) * np.exp(rng.normal(0, 0.15, (n_draws, c)))
    decay = rng.uniform(0.2, 0.6, c)[None, None, :] ** np.arange(l_max)[:, None, None]
    weights = np.broadcast_to(decay / decay.sum(axis=0), (l_max, n_draws, c)).copy()
    block = SaturationBlock("logistic", np.arange(c), {"lam": lam})
    return ResponseModel(tuple(CHANNELS), weights, beta, [block], rng.uniform(3e4, 1e5, c), kpi_scale)


@pytest.fixture(scope="module")
def responses() -> dict[str, ResponseModel]:
    # different draw counts, adstock reaches and KPI scales: what stacking must reconcile
    return {"north": response(1, 200, 4, 1e6), "south": response(2, 150, 3, 5e5)}


def geo(**raw: object):
    return plan_from_dict({"scope": "geo", "horizon": {"weeks": 1}, "budget": {"change_pct": 0}, **raw})


def test_stacked_response_is_each_markets_own(responses: dict[str, ResponseModel]) -> None:
    stacked = stack_responses(responses)
    assert stacked.channels == tuple(f"{m}.{c}" for m in responses for c in CHANNELS)
    assert stacked.n_draws == 150
    plan = np.random.default_rng(0).uniform(5_000, 50_000, (3, 6))
    carry = np.random.default_rng(1).uniform(5_000, 50_000, (5, 6))
    got = stacked.plan_contribution(plan, carry, plan[-1])
    north = responses["north"].subset(np.round(np.linspace(0, 199, 150)).astype(int))
    want_north = north.plan_contribution(plan[:, :3], carry[:, :3], plan[-1, :3])
    want_south = responses["south"].plan_contribution(plan[:, 3:], carry[:, 3:], plan[-1, 3:])
    np.testing.assert_allclose(got, np.hstack([want_north, want_south]), rtol=1e-10)
    np.testing.assert_allclose(
        stacked.steady_state(plan[0])[:, 3:], responses["south"].steady_state(plan[0, 3:]), rtol=1e-10
    )


@pytest.mark.parametrize("risk", [{"measure": "mean"}, {"measure": "cvar", "alpha": 0.2}])
def test_one_total_does_at_least_as_well_as_each_market_alone(responses: dict, risk: dict) -> None:
    """Same national total, more freedom: the geo optimum's expected KPI is never below the sum of the
    per-market optima (mean), and it meets the budget; with CVaR its own objective is never below that of
    the per-market allocations put together."""
    objective = {"kind": "kpi", "risk": risk}
    alone = {
        m: optimize_budget(
            plan_from_dict({"budget": {"change_pct": 0}, "objective": objective}), r, current=CURRENT[m]
        )  # fmt: skip
        for m, r in responses.items()
    }
    result = optimize_geo_budget(geo(objective=objective), responses, current=CURRENT)
    summary = result.summary.iloc[0]
    assert summary["total_recommended"] == pytest.approx(sum(sum(v.values()) for v in CURRENT.values()))
    together = np.concatenate([alone[m].recommended[0] for m in responses])
    evaluator_value = _objective_of(result, responses, together)
    assert summary["objective_recommended"] >= evaluator_value - 1e-9 * abs(evaluator_value)
    if risk["measure"] == "mean":
        per_market = sum(a.summary.iloc[0]["contribution_mean"] for a in alone.values())
        assert summary["contribution_mean"] >= per_market * (1 - 1e-6)
        assert summary["contribution_mean"] > per_market * 1.005  # these markets differ: moving budget pays
    totals = result.market_totals.set_index("market")
    assert totals["recommended"].sum() == pytest.approx(summary["total_recommended"])
    assert (totals["uplift_hdi_low"] <= totals["uplift_mean"]).all()
    assert (totals["uplift_mean"] <= totals["uplift_hdi_high"]).all()
    assert list(result.cells[["market", "channel"]].itertuples(index=False, name=None)) == [
        (m, c) for m in responses for c in CHANNELS
    ]


def _objective_of(result, responses: dict[str, ResponseModel], allocation: np.ndarray) -> float:
    """The geo objective of a steady-state allocation of the cells, by the optimizer's own evaluator."""
    problem = result.result.problem
    stacked = stack_responses(responses)
    probe = Evaluator(problem, stacked, ObjectiveFunction(problem.plan.objective, {}))
    current = problem.current
    objective = ObjectiveFunction.build(
        problem.plan.objective, probe.contributions(current).sum(axis=1), float(current.sum())
    )
    return Evaluator(problem, stacked, objective).value(allocation[None, :])


def test_national_and_market_rules_hold(responses: dict) -> None:
    plan = geo(
        groups={"digital": ["search", "social"]},
        channels={"tv": {"min_change_pct": -10, "max_change_pct": 10}},
        shares={"digital_floor": {"group": "digital", "min": 0.5}},
        markets={
            "south": {"min_share": 0.45, "channels": {"social": {"max": 20_000}}},
            "*": {"max_change_pct": 30},
        },
        objective={"risk": {"measure": "cvar", "alpha": 0.2}},
    )
    result = optimize_geo_budget(plan, responses, current=CURRENT)
    assert violations(result.result.problem, result.result.recommended) == []
    cells = result.cells.set_index(["market", "channel"])["recommended"]
    total = cells.sum()
    assert 0.9 * 80_000 - 1e-6 <= cells.xs("tv", level="channel").sum() <= 1.1 * 80_000 + 1e-6
    assert cells.loc[["north", "south"], ["search", "social"]].sum() >= 0.5 * total - 1e-6
    assert cells.loc["south"].sum() >= 0.45 * total - 1e-6
    assert cells.loc[("south", "social")] <= 20_000 + 1e-6
    assert cells.loc["north"].sum() <= 1.3 * 115_000 + 1e-6  # markets.* applies to north
    rules = set(result.cells["binding_rule"])
    assert any("markets." in r or "channels.tv" in r or "shares." in r for r in rules)
    kinds = dict(zip(result.cells["binding_rule"], result.cells["binding_kind"], strict=True))
    assert all(kinds[r] == "share" for r in kinds if r.startswith("markets.south.min_share"))
    assert all(kinds[r] == "bound" for r in kinds if r.startswith("markets.south.channels."))


def test_a_fixed_market_keeps_its_allocation(responses: dict) -> None:
    plan = geo(markets={"north": {"fixed": True}, "south": {"channels": {"tv": {"min_on": 15_000}}}})
    result = optimize_geo_budget(plan, responses, current=CURRENT)
    cells = result.cells.set_index(["market", "channel"])
    for channel, spend in CURRENT["north"].items():
        assert cells.loc[("north", channel), "recommended"] == pytest.approx(spend, rel=1e-9)
        assert cells.loc[("north", channel), "binding_rule"] == "markets.north.fixed"
    south_tv = cells.loc[("south", "tv"), "recommended"]
    assert south_tv == 0 or south_tv >= 15_000 * (1 - 1e-6)
    assert cells.loc["south", "recommended"].sum() == pytest.approx(sum(CURRENT["south"].values()))


def test_conflicting_rules_are_refused_before_optimizing_and_named(responses: dict) -> None:
    plan = geo(markets={"north": {"min_share": 0.7}, "south": {"min_change_pct": 0}})
    with pytest.raises(InfeasiblePlanError) as caught:
        optimize_geo_budget(plan, responses, current=CURRENT)
    assert {name for name, _ in caught.value.conflicts} == {
        "markets.north.min_share", "markets.south.min_change_pct", "budget.change_pct",
    }  # fmt: skip
    assert "north total >= 70% of the national total" in str(caught.value)
    # a national rule against per-market ones
    plan = geo(channels={"tv": {"min": 100_000}}, markets={"*": {"channels": {"tv": {"max": 40_000}}}})
    with pytest.raises(InfeasiblePlanError) as caught:
        optimize_geo_budget(plan, responses, current=CURRENT)
    assert {name for name, _ in caught.value.conflicts} == {
        "channels.tv.min", "markets.*.channels.tv.max[north]", "markets.*.channels.tv.max[south]",
    }  # fmt: skip


def test_plan_errors_name_the_key(responses: dict) -> None:
    with pytest.raises(PlanError, match=r"markets\.west: unknown market; known: \['north', 'south'\]"):
        build_geo_problem(
            geo(markets={"west": {"max": 1.0}}), {m: CHANNELS for m in responses}, current=CURRENT
        )
    with pytest.raises(PlanError, match=r"markets\.north\.channels\.radio: unknown channel of market north"):
        build_geo_problem(
            geo(markets={"north": {"channels": {"radio": {"max": 1.0}}}}), {m: CHANNELS for m in responses},
            current=CURRENT,
        )  # fmt: skip
    with pytest.raises(PlanError, match="'markets' rules need 'scope: geo'"):
        plan_from_dict({"budget": {"change_pct": 0}, "markets": {"north": {"fixed": True}}})
    with pytest.raises(PlanError, match="channels.tv.min_on: a national channel total"):
        geo(channels={"tv": {"min_on": 1000}})
    with pytest.raises(PlanError, match="a fixed market takes no other rules"):
        geo(markets={"north": {"fixed": True, "max": 5.0}})
    with pytest.raises(PlanError, match="scope: a geo plan budgets across markets"):
        optimize_budget(geo(), responses["north"], current=CURRENT["north"])
    with pytest.raises(PlanError, match="scope: one budget across markets needs a geo plan"):
        optimize_geo_budget(plan_from_dict({"budget": {"change_pct": 0}}), responses, current=CURRENT)
    assert load_plan(GEO_PLAN).scope == "geo"  # the example plan is valid


# --- the pipeline: the two fitted markets ---------------------------------------------------------------


CONFLICTING_GEO = """scope: geo
name: conflicting
budget: {change_pct: 0}
markets:
  north: {min_share: 0.7}
  south: {min_share: 0.5}
"""


def _champion_inputs(cfg) -> tuple[dict[str, ResponseModel], dict[str, pd.DataFrame]]:
    responses, histories = {}, {}
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        for market in ("north", "south"):
            run = champion(conn, market)
            channels = ScalingSpec.model_validate_json(str(run["scaling"])).channels
            histories[market] = spend_history(conn, market, channels, pd.Timestamp(run["train_end"]).date())
            model = load_model(str(run["artifact_path"]))
            responses[market] = ResponseModel.from_idata(model.idata, model.scaling, model.spec, 100)
    return responses, histories


@pytest.fixture(scope="module")
def geo_project(two_markets_project: tuple[Path, object]) -> dict[str, object]:
    config_path, _ = two_markets_project
    directory = config_path.parent
    (directory / "plans" / "geo.yaml").write_text(GEO_PLAN.read_text())
    raw = yaml.safe_load(config_path.read_text())
    raw["optimization"] = {**raw["optimization"], "geo_plan": "plans/geo.yaml", "max_draws": 200}
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config_path)
    out: dict[str, object] = {"cfg": cfg}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(directory / "dagster_home"))
        defs = build_definitions(cfg)
        out["model_job_keys"] = defs.resolve_job_def(MODEL_JOB).asset_layer.selected_asset_keys
        out["result"] = defs.resolve_job_def(GEO_JOB).execute_in_process(
            instance=project_instance(cfg), raise_on_error=False
        )
        with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
            out["rows_after_first"] = conn.execute(
                "SELECT count(*) FROM optimization.geo_allocations"
            ).fetchone()
        # rules that cannot hold together: the run fails naming them, and nothing is written
        (directory / "plans" / "geo.yaml").write_text(CONFLICTING_GEO)
        out["conflicting"] = (
            build_definitions(cfg)
            .resolve_job_def(GEO_JOB)
            .execute_in_process(instance=project_instance(cfg), raise_on_error=False)
        )
    return out


def test_geo_beats_or_matches_the_markets_optimized_alone_on_fitted_models(geo_project: dict) -> None:
    responses, histories = _champion_inputs(geo_project["cfg"])
    base = {"budget": {"change_pct": 0}, "objective": {"kind": "kpi"}}
    alone = sum(
        optimize_budget(plan_from_dict(base), responses[m], history=histories[m]).summary.iloc[0][
            "contribution_mean"
        ]
        for m in responses
    )
    result = optimize_geo_budget(geo(objective={"kind": "kpi"}), responses, history=histories)
    summary = result.summary.iloc[0]
    current = sum(h.iloc[-13:].drop(columns="week").to_numpy().mean(axis=0).sum() for h in histories.values())
    assert summary["total_recommended"] == pytest.approx(current)
    assert summary["contribution_mean"] >= alone * (1 - 1e-6)


def test_the_geo_job_records_and_publishes_through_dagster(geo_project: dict) -> None:
    result, cfg = geo_project["result"], geo_project["cfg"]
    assert result.success
    assert not {k.to_user_string() for k in geo_project["model_job_keys"]} & {
        "geo_budget_recommendation", "bi_geo_snapshots",
    }  # one market's refit never runs the geo budget  # fmt: skip
    (materialization,) = result.asset_materializations_for_node("geo_budget_recommendation")
    geo_id = materialization.metadata["geo_optimization_id"].value
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        summary = conn.execute("SELECT * FROM optimization.latest_geo_plan_summary").df()
        totals = conn.execute("SELECT * FROM optimization.latest_geo_market_totals ORDER BY market").df()
        cells = conn.execute("SELECT * FROM optimization.latest_geo_allocations").df()
        sql = "SELECT market, model_id FROM models.model_runs WHERE status = 'champion'"
        champions = dict(conn.execute(sql).fetchall())
    assert summary["geo_optimization_id"].tolist() == [geo_id]
    assert list(totals["market"]) == ["north", "south"]
    assert dict(zip(totals["market"], totals["model_id"], strict=True)) == champions
    assert len(cells) == 2 * len(cfg.channels) and set(cells["market"]) == {"north", "south"}
    assert totals["recommended"].sum() == pytest.approx(summary["total_recommended"].iloc[0])
    assert cells["recommended"].sum() == pytest.approx(summary["budget"].iloc[0])  # change_pct 0: exact
    # the plan's rules, as recorded: every market within +-40% of its total today
    assert ((totals["recommended"] >= 0.6 * totals["current"] - 1e-6)
            & (totals["recommended"] <= 1.4 * totals["current"] + 1e-6)).all()  # fmt: skip
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        published = {r[0] for r in bi.execute("SELECT name FROM published_tables").fetchall()}
        bi_totals = bi.execute("SELECT * FROM latest_geo_market_totals ORDER BY market").df()
    assert {"latest_geo_plan_summary", "latest_geo_market_totals", "latest_geo_allocations",
            "optimization_geo_allocations", "latest_plan_summary"} <= published  # fmt: skip
    pd.testing.assert_frame_equal(bi_totals, totals, check_dtype=False)
    report = build_report(load_report_data(cfg.bi_database_path, "north", cfg.kpi.name))
    assert "One budget across markets" in report.markdown
    assert "**north**" in report.markdown and "One budget across markets" in report.html


def test_the_geo_plan_file_is_checked_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A missing geo plan is a config error naming the key; a market plan given as the geo plan stops the
    CLI (exit 2) naming the file and the key, before any run."""
    config_path = init_project(tmp_path, "synthetic")
    raw = yaml.safe_load(config_path.read_text())
    raw["optimization"]["geo_plan"] = "plans/nope.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match=r"optimization\.geo_plan.*plans/nope\.yaml does not exist"):
        load_config(config_path)
    raw["optimization"]["geo_plan"] = "plans/synthetic/base_plan.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["--config", str(config_path), "run"]) == 2
    assert (
        "base_plan.yaml: scope: optimization.geo_plan needs a plan with 'scope: geo'"
        in capsys.readouterr().err
    )
    raw["optimization"]["geo_plan"] = "plans/synthetic/geo_plan.yaml"  # copied by init
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    graph = build_definitions(load_config(config_path)).resolve_asset_graph()
    geo_key = dg.AssetKey("geo_budget_recommendation")
    assert graph.get(geo_key).group_name == "optimization" and not graph.get(geo_key).is_partitioned
    assert graph.get(dg.AssetKey("bi_geo_snapshots")).parent_keys == {geo_key}


def test_a_geo_plan_whose_rules_conflict_writes_nothing_and_names_them(geo_project: dict) -> None:
    result, cfg = geo_project["conflicting"], geo_project["cfg"]
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error.message)
    assert "markets.north.min_share" in message and "markets.south.min_share" in message
    first = geo_project["result"].asset_materializations_for_node("geo_budget_recommendation")[0]
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        (latest,) = conn.execute(
            "SELECT geo_optimization_id FROM optimization.latest_geo_plan_summary"
        ).fetchone()
        rows = conn.execute("SELECT count(*) FROM optimization.geo_allocations").fetchone()
    assert latest == first.metadata["geo_optimization_id"].value  # the last good one keeps serving
    assert rows == geo_project["rows_after_first"]
