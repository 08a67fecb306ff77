"""Budget recommendation assets, one partition per market: the champion's optimized budget plan.

``budget_recommendation`` only ever uses the market's champion (a model that passed the gate): it reads
the champion and the market's spend history briefly, optimizes the project's base plan and scenarios
(``optimization`` in the config) outside any DuckDB connection, then records everything in the
``optimization`` schema in one transaction. A base plan whose rules conflict writes nothing and fails
the ``plan_feasible`` check with the conflicting rules, so the last good recommendation keeps serving.
"""

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from mmm_pipeline.charts import markdown_image
from mmm_pipeline.model.registry import champion, champion_runs, load_model
from mmm_pipeline.optimize.conditions import conditions_version
from mmm_pipeline.optimize.geo_recommendations import recommend_geo, write_geo_optimization
from mmm_pipeline.optimize.plots import budget_chart
from mmm_pipeline.optimize.recommendations import (
    OPTIMIZATION_TABLES,
    Optimization,
    latest_optimization,
    optimization_of,
    optimize_plan,
    plans_in_force,
    recommendation_inputs_version,
    scenario_response,
    spend_history,
    write_optimization,
)
from mmm_pipeline.settings import ConfigError

from ...config import ProjectConfig
from ...model.build import ScalingSpec
from ...monitoring import store as monitoring_store
from ...monitoring.plots import allocation_chart, kpi_trend_chart, optimizations, roas_trend_chart
from ...optimize import (
    BudgetResult,
    InfeasiblePlanError,
    Plan,
    PlanError,
    combine_scenarios,
    load_plan,
    load_scenarios,
)
from ...optimize.conditions import ActiveCondition
from ..metadata import md_text, ui_metadata
from ..resources import WRITER_POOL, WarehouseResource
from .model import MARKETS

#: P(uplift > 0) below this raises the ``uplift_positive`` warning.
MIN_PROB_UPLIFT = 0.5
#: The recommendation's checks (each a step output, yielded when the step has something to say).
CHECKS = ("plan_feasible", "scenarios_feasible", "within_history", "uplift_positive")


@dataclass(frozen=True)
class OptimizationInputs:
    """What the recording step needs besides the plans' results: read once, before the plan steps."""

    market: str
    plans: list[Plan]
    """The base plan, then the scenarios, with the conditions in force applied."""
    active: list[ActiveCondition]
    previous: dict | None
    """The market's latest recorded optimization (``plan_summary`` row), if any."""
    serving: dict | None
    """The champion's ``model_runs`` row; None when no fit has passed the gate (nothing to optimize)."""
    history: pd.DataFrame | None
    rows: pd.DataFrame | None
    inputs_version: str | None = None
    """:func:`recommendation_inputs_version` of the champion, plans, rows and settings (with a champion)."""
    unchanged: str | None = None
    """The recorded recommendation made from these very inputs, if any: it stays, nothing is optimized."""


@dataclass(frozen=True)
class PlanTask:
    """One plan step's work: the plan, the champion's artifact (None: no champion, nothing to do) and
    the spend history its current allocation and ranges come from."""

    market: str
    plan: Plan
    artifact_path: str | None
    history: pd.DataFrame | None


def _recommendation_markdown(recommendation: pd.DataFrame) -> str:
    """The recommendation per channel as a list, which wraps in the UI's narrow metadata column (a table
    is cut off there); the reasons are in ``why_there``, the full table in the BI catalog."""
    return "\n".join(
        f"- **{r.channel}**: {r.current:,.0f} → {r.recommended:,.0f}"
        + ("" if pd.isna(r.change_pct) else f" ({r.change_pct:+.0f}%)")
        for r in recommendation.itertuples()
    )


def _why_there_markdown(recommendation: pd.DataFrame, unit: str) -> str:
    """Why each channel stops where it does, one bullet per channel (wraps in a narrow column): the
    binding rule, its shadow price, and the marginal ROAS now and at the recommendation."""
    lines = []
    for r in recommendation.itertuples():
        if r.binding_kind in ("bound", "share", "ratio", "history cap"):
            held = (
                f"held by the {r.binding_kind} rule `{r.binding_rule}` ({md_text(r.binding_description)}); "
                f"loosening it adds {r.shadow_price:,.2f} {unit} per unit of budget"
            )
        elif r.binding_kind == "total":
            held = (
                f"held by the total budget (its next unit returns {r.shadow_price:,.2f} {unit}, as elsewhere)"
            )
        elif r.binding_kind == "off":
            held = "switched off: its first unit returns less than the budget earns elsewhere"
        else:
            held = "more spend adds nothing"
        change = "new" if pd.isna(r.change_pct) else f"{r.change_pct:+.0f}%"
        lines.append(
            f"- **{r.channel}** {change}: {held}; marginal ROAS {r.mroas_current:,.2f} → "
            f"{r.mroas_recommended:,.2f}"
        )
    return "\n".join(lines)


def _scenarios_markdown(table: pd.DataFrame) -> str:
    """Each scenario on its own line (wraps in the UI's narrow column), uplift against today's allocation."""
    lines = []
    for r in table.itertuples():
        if r.status != "ok":
            lines.append(f"- **{r.scenario}**: infeasible; conflicting rules: {md_text(str(r.conflicts))}")
            continue
        lines.append(
            f"- **{r.scenario}**: budget {r.budget:,.0f}; uplift vs today's allocation {r.uplift_mean:+,.0f} "
            f"(94% interval {r.uplift_hdi_low:+,.0f} to {r.uplift_hdi_high:+,.0f}), "
            f"P(uplift > 0) {r.prob_uplift_positive:.0%}"
        )
    return "\n".join(lines)


def _uplift_text(summary: pd.Series, kpi: str) -> str:
    return (
        f"{summary['uplift_mean']:+,.0f} {kpi} ({summary['uplift_pct']:+.1f}% of the media contribution), "
        f"94% HDI [{summary['uplift_hdi_low']:+,.0f}, {summary['uplift_hdi_high']:+,.0f}], "
        f"P(uplift > 0) = {summary['prob_uplift_positive']:.0%}"
    )


def _forecast_text(summary: pd.Series, kpi: str) -> str:
    """The plan forecast in words: the KPI of the plan weeks under the recommendation and the promised
    uplift over the current allocation on those same weeks (what the scorecard will check)."""
    if summary.get("forecast_start") is None or pd.isna(summary.get("forecast_start")):
        return "no plan forecast (no spend history)"
    return (
        f"weeks {summary['forecast_start']} to {summary['forecast_end']}: "
        f"{summary['forecast_kpi_mean']:,.0f} {kpi}, 94% HDI "
        f"[{summary['forecast_kpi_hdi_low']:,.0f}, {summary['forecast_kpi_hdi_high']:,.0f}]; "
        f"uplift over the current allocation on these weeks {summary['forecast_uplift_mean']:+,.0f} "
        f"[{summary['forecast_uplift_hdi_low']:+,.0f}, {summary['forecast_uplift_hdi_high']:+,.0f}]; "
        f"{summary['forecast_controls']}"
    )


def _conflicts(opt: Optimization, scenarios: bool) -> list[str]:
    """Why the base plan (``scenarios=False``) or each scenario cannot be met: the conflicting rules."""
    out = []
    for name, error in opt.infeasible.items():
        if (name != opt.base_plan.name) != scenarios:
            continue
        what = "scenario" if scenarios else "base plan"
        rules = "; ".join(f"{rule} ({text})" for rule, text in error.conflicts)
        out.append(f"{what} {name!r} ({error.plan.source}) is infeasible; these rules conflict: {rules}")
    return out


def _bullets(lines: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {line}" for line in lines) or "none")


def plan_code_version(cfg: ProjectConfig) -> str:
    """What changes a recommendation besides the champion and the conditions in force (the data version
    of ``market_conditions``): the plan and scenario files' content, the optimization settings and the
    channel groups. A file that cannot be read gives a version of its own (the asset fails with the
    reason when it runs)."""
    digest = hashlib.sha256()
    # the geo plan is the geo asset's, not a market's
    digest.update(cfg.optimization.model_dump_json(exclude={"geo_plan"}).encode())
    digest.update(json.dumps({c.name: c.group for c in cfg.channels}, sort_keys=True).encode())
    try:
        for path in cfg.optimization_files():
            digest.update(str(path.name).encode() + b"\0" + path.read_bytes())
    except (ConfigError, OSError) as exc:
        digest.update(f"unreadable: {exc}".encode())
    return digest.hexdigest()[:16]


def _recorded_from(
    context: dg.OpExecutionContext, market: str, inputs_version: str, previous: dict | None
) -> str | None:
    """The id of the market's serving recommendation (``previous``) when its latest materialization says
    it was made from inputs of ``inputs_version``; None otherwise.

    Why: a registration that keeps the champion (a tightened gate, a rejected refit) makes the
    recommendation stale for Dagster, yet optimizing again would give the same plan and record it a
    second time (the scorecard would count one recommendation twice).
    """
    if previous is None:
        return None
    found = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("budget_recommendation"), asset_partitions=[market]),
        limit=1,
    ).records
    metadata = found[0].asset_materialization.metadata if found else {}
    made_from, serving = metadata.get("inputs_version"), metadata.get("serving")
    if made_from is None or serving is None:
        return None
    same = made_from.value == inputs_version and serving.value == previous["optimization_id"]
    return str(previous["optimization_id"]) if same else None


def _check_results(
    plan_conflicts: list[str],
    scenario_conflicts: list[str],
    flags: list[str] | None,
    uplift: dict[str, object] | None,
    note: str | None = None,
) -> Iterator[dg.AssetCheckResult]:
    """The recommendation's checks (:data:`CHECKS`), one rule each. ``flags`` and ``uplift`` (with
    ``prob_uplift_positive``) are None when the base plan is infeasible: nothing to judge."""
    extra = {} if note is None else {"note": note}
    not_evaluated = {"note": "not evaluated: the base plan is infeasible"}
    warn = dg.AssetCheckSeverity.WARN
    yield dg.AssetCheckResult(
        asset_key="budget_recommendation", check_name="plan_feasible", passed=not plan_conflicts,
        metadata={"conflicting_rules": _bullets(plan_conflicts), "written": flags is not None, **extra},
    )  # fmt: skip
    yield dg.AssetCheckResult(
        asset_key="budget_recommendation", check_name="scenarios_feasible", passed=not scenario_conflicts,
        severity=warn, metadata={"conflicting_rules": _bullets(scenario_conflicts), **extra},
    )  # fmt: skip
    yield dg.AssetCheckResult(
        asset_key="budget_recommendation", check_name="within_history", passed=not flags, severity=warn,
        metadata=not_evaluated if flags is None else {"flags": _bullets(flags), **extra},
    )  # fmt: skip
    prob = None if uplift is None else float(uplift["prob_uplift_positive"])
    yield dg.AssetCheckResult(
        asset_key="budget_recommendation", check_name="uplift_positive", severity=warn,
        passed=prob is None or prob >= MIN_PROB_UPLIFT,
        metadata=not_evaluated if uplift is None else ui_metadata({**uplift, **extra}),
    )  # fmt: skip


def _checks_of_recorded(recorded: dict) -> Iterator[dg.AssetCheckResult]:
    """The checks of a recommendation that stays (its ``plan_summary`` row), stated again for the new
    materialization from what was recorded, so the UI shows its warnings rather than skipped checks."""
    infeasible = [s for s in str(recorded.get("infeasible_scenarios") or "").split(", ") if s]
    n_flags = int(recorded["n_flags"])
    yield from _check_results(
        [],
        [f"scenario {name!r} is infeasible" for name in infeasible],
        [f"{n_flags} flag(s) on the recommendation"] if n_flags else [],
        {"prob_uplift_positive": float(recorded["prob_uplift_positive"])},
        note=f"as recorded with {recorded['optimization_id']} (inputs unchanged)",
    )


def build_optimization_assets(cfg: ProjectConfig) -> list[dg.AssetsDefinition]:
    settings = cfg.optimization
    if not settings.enabled:
        return []
    groups = {c.name: c.group for c in cfg.channels}
    plan_path = cfg.optimization_plan_path
    scenario_paths = cfg.optimization_scenario_paths

    @dg.asset(
        group_name="optimization",
        kinds={"duckdb"},
        partitions_def=MARKETS,
        deps=["fct_modeling_weekly"],
        code_version=hashlib.sha256(
            json.dumps([c.model_dump(mode="json") for c in cfg.conditions], sort_keys=True).encode()
        ).hexdigest()[:16],
        description=(
            "Which market conditions (config conditions) hold on the market's latest modeling weeks, as "
            "a hash of what they change in the plans (its Dagster data version). Re-evaluated on every "
            "run like market_training_data: a condition that starts or stops holding makes the budget "
            "recommendation stale (no refit); the same conditions keep it fresh. Writes nothing."
        ),
    )
    def market_conditions(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        market = context.partition_key
        with warehouse.get_connection() as conn:
            try:
                _, active = plans_in_force(conn, market, [], cfg.conditions)
            except ValueError as exc:
                raise dg.Failure(f"market {market}: conditions: {exc}") from None
        return dg.MaterializeResult(
            data_version=dg.DataVersion(conditions_version(active)),
            metadata={"holding": ", ".join(c.name for c in active) or "none"},
        )

    plan_outputs = [f"plan_{k}" for k in range(1 + len(scenario_paths))]
    settings_version = plan_code_version(cfg)

    @dg.op(
        ins={"model_registry": dg.In(dg.Nothing), "market_conditions": dg.In(dg.Nothing)},
        out={
            "inputs": dg.Out(OptimizationInputs, description="the champion, spend history and plans"),
            **{name: dg.Out(PlanTask, description=f"plan {name[5:]}'s task") for name in plan_outputs},
        },
        description="Reads the champion, the spend history and the plans in force; one output per plan "
        "(the base plan, then each scenario).",
    )
    def optimization_inputs(context: dg.OpExecutionContext, warehouse: WarehouseResource):
        market = context.partition_key
        try:
            files = cfg.optimization_files()
            plans = load_scenarios(files[0], files[1:])
        except (ConfigError, PlanError) as exc:
            raise dg.Failure(f"optimization: {exc}") from None
        history = rows = None
        with warehouse.get_connection() as conn:
            serving = champion(conn, market)
            if serving is not None:
                channels = ScalingSpec.model_validate_json(str(serving["scaling"])).channels
                train_end = pd.Timestamp(serving["train_end"]).date()
                try:
                    history = spend_history(conn, market, channels, train_end)
                except ValueError as exc:
                    raise dg.Failure(f"market {market}: {exc}") from None
                # every landed week: the plan forecast's carry-in and controls (landed plan weeks)
                rows = conn.execute(
                    "SELECT * FROM marts.fct_modeling_weekly WHERE market = ? ORDER BY week", [market]
                ).df()
            previous = latest_optimization(conn, market)
            # Market conditions (config ``conditions``) tighten the plans, like a scenario's changes.
            try:
                plans, active = plans_in_force(conn, market, plans, cfg.conditions)
            except (ValueError, PlanError) as exc:
                raise dg.Failure(f"market {market}: conditions: {exc}") from None
        if active:
            context.log.info(
                f"market {market}: condition(s) {', '.join(c.name for c in active)} hold: plans tightened"
            )
        inputs_version = unchanged = None
        if serving is not None:
            inputs_version = recommendation_inputs_version(
                str(serving["model_id"]), plans, rows, settings_version
            )
            unchanged = _recorded_from(context, market, inputs_version, previous)
        inputs = OptimizationInputs(
            market, plans, active, previous, serving, history, rows, inputs_version, unchanged
        )
        yield dg.Output(inputs, "inputs")
        artifact = None if serving is None or unchanged else str(serving["artifact_path"])
        if unchanged:
            context.log.info(
                f"market {market}: recommendation {unchanged} was made from the same champion "
                f"({serving['model_id']}), plans, conditions and weeks: it stays, nothing to optimize"
            )
        elif serving is not None:
            context.log.info(
                f"market {market}: optimizing plan {plans[0].name!r} and {len(plans) - 1} scenario(s) "
                f"with champion {serving['model_id']} ({len(history)} weeks of spend history up to "
                f"{train_end}), a step per plan"
            )
        for plan, name in zip(plans, plan_outputs, strict=True):
            yield dg.Output(PlanTask(market, plan, artifact, history), name)

    @dg.op(
        # a BudgetResult, an InfeasiblePlanError (reported, not raised) or None (no champion)
        out=dg.Out(dg.Any),
        description="Optimizes one plan (the base plan or a scenario) over the champion's posterior draws; "
        "writes nothing, so plan steps run side by side under any executor.",
    )
    def optimize_plan_step(
        context: dg.OpExecutionContext, task: PlanTask
    ) -> BudgetResult | InfeasiblePlanError | None:
        if task.artifact_path is None:
            return None
        started = time.perf_counter()
        try:
            result = optimize_plan(
                load_model(task.artifact_path), task.plan, task.history, groups=groups,
                max_draws=settings.max_draws,
            )  # fmt: skip
        except (PlanError, ValueError) as exc:  # a plan that does not fit the model
            raise dg.Failure(f"market {task.market}: {exc}") from None
        status = "infeasible" if isinstance(result, InfeasiblePlanError) else "ok"
        context.log.info(
            f"market {task.market}: plan {task.plan.name!r}: {status} in {time.perf_counter() - started:.1f}s"
        )
        return result

    @dg.op(
        pool=WRITER_POOL,
        ins={"results": dg.In(list)},  # the plan steps' results, in plan order
        out={
            "result": dg.Out(
                dg.Nothing, description="the recommendation (recorded in DuckDB, not passed on)"
            ),
            **{
                f"budget_recommendation_{check}": dg.Out(dg.Nothing, is_required=False)
                for check in CHECKS
            },
        },
        description="Compares the plans' results, forecasts the base plan's weeks and records everything "
        "in the optimization schema in one transaction.",
    )
    def record_recommendation(
        context: dg.OpExecutionContext,
        warehouse: WarehouseResource,
        inputs: OptimizationInputs,
        results: list[BudgetResult | InfeasiblePlanError | None],
    ):
        market, plans, active, previous, serving = (
            inputs.market, inputs.plans, inputs.active, inputs.previous, inputs.serving
        )  # fmt: skip
        if serving is None:
            # Not a step failure: the model registry's champion_serving check says why no model serves
            # and what to do; publishing and the "not yet trustworthy" page still run after this.
            note = (
                "not evaluated: no fit of this market has passed the gate yet, so there is no model to "
                "optimize the budget with"
                + (f" (the last recommendation, {previous['optimization_id']}, stays)" if previous else "")
            )
            context.log.warning(f"market {market}: {note}")
            yield dg.MaterializeResult(
                asset_key="budget_recommendation",
                metadata={"status": "no champion: nothing written", "note": note},
            )
            for check in CHECKS:
                yield dg.AssetCheckResult(
                    asset_key="budget_recommendation", check_name=check, passed=True, metadata={"note": note}
                )
            return
        model_id = str(serving["model_id"])
        if inputs.unchanged is not None:
            yield dg.MaterializeResult(
                asset_key="budget_recommendation",
                metadata={
                    "status": "unchanged: not optimized again",
                    "champion": model_id,
                    "serving": inputs.unchanged,
                    "inputs_version": str(inputs.inputs_version),
                    "note": "the serving recommendation was made from the same champion, plans, "
                    "conditions and weeks; its checks are stated again as recorded",
                },
                data_version=dg.DataVersion(inputs.unchanged),
            )
            yield from _checks_of_recorded(previous)
            return
        started = time.perf_counter()
        model = load_model(str(serving["artifact_path"]))
        comparison = combine_scenarios(plans, {p.name: r for p, r in zip(plans, results, strict=True)})
        history, n_draws = inputs.history, scenario_response(model, settings.max_draws).n_draws
        opt = optimization_of(
            model, market, plans, comparison, history, inputs.rows, n_draws=n_draws,
            max_draws=settings.max_draws, dagster_run_id=context.run_id,
        )  # fmt: skip
        seconds = time.perf_counter() - started + float(comparison.table["seconds"].fillna(0).sum())
        conflicts, scenario_conflicts = _conflicts(opt, scenarios=False), _conflicts(opt, scenarios=True)
        base = opt.base
        table = opt.comparison.table
        context.log.info(
            f"market {market}: {len(plans)} plan(s) optimized over {opt.n_draws} draws in {seconds:.1f}s; "
            + ", ".join(f"{r.scenario}: {r.status}" for r in table.itertuples())
        )
        metadata: dict[str, object] = {
            "champion": model_id,
            "inputs_version": str(inputs.inputs_version),
            "plan": opt.base_plan.name,
            "plan_source": opt.base_plan.source,
            "draws": opt.n_draws,
            "seconds": seconds,
            "scenarios": dg.MetadataValue.md(_scenarios_markdown(table)),
        }
        if base is None:
            kept = previous["optimization_id"] if previous else "none yet"
            context.log.warning(
                f"market {market}: the base plan is infeasible: nothing written; the last recommendation "
                f"({kept}) stays. " + " | ".join(conflicts)
            )
            metadata |= {"status": "infeasible: nothing written", "serving": kept}
        else:
            with warehouse.get_connection() as conn:
                write_optimization(conn, opt)
                # Optimization history: what was recommended, why this run happened, under which conditions.
                monitoring_store.append_history(
                    conn,
                    monitoring_store.history_rows(
                        opt.tables, context.run.tags, [c.as_dict() for c in active]
                    ),
                )
                history = conn.execute(
                    "SELECT * FROM monitoring.optimization_history WHERE market = ? ORDER BY created_at",
                    [market],
                ).df()
            summary = base.summary.iloc[0]
            uplift = _uplift_text(summary, cfg.kpi.name)
            # the report's order: the largest increase first, the largest cut last
            ordered = base.recommendation.sort_values(["change", "channel"], ascending=[False, True])
            context.log.info(
                f"market {market}: recorded {opt.optimization_id} "
                f"({', '.join(f'{n} {len(opt.tables[n])}' for n in OPTIMIZATION_TABLES)} rows); "
                f"budget {summary['budget']:,.0f}, uplift {uplift}"
            )
            metadata |= {
                "status": "recorded",
                "optimization_id": opt.optimization_id,
                "serving": opt.optimization_id,
                "budget": float(summary["budget"]),
                "total_recommended": float(summary["total_recommended"]),
                "uplift": uplift,
                "plan_forecast": _forecast_text(opt.tables["plan_summary"].iloc[0], cfg.kpi.name),
                "uplift_mean": float(summary["uplift_mean"]),
                "uplift_hdi_low": float(summary["uplift_hdi_low"]),
                "uplift_hdi_high": float(summary["uplift_hdi_high"]),
                "prob_uplift_positive": float(summary["prob_uplift_positive"]),
                "recommendation": dg.MetadataValue.md(_recommendation_markdown(ordered)),
                "why_there": dg.MetadataValue.md(
                    _why_there_markdown(
                        ordered,
                        cfg.kpi.name if opt.base_plan.objective.kind == "kpi" else "objective units",
                    )
                ),
                "chart": dg.MetadataValue.md(
                    budget_chart(
                        base.recommendation,
                        f"{market}: current vs recommended spend",
                        "per week"
                        if base.problem.steady_state
                        else f"over the {base.problem.weeks}-week plan",
                    )
                ),
                "trigger": context.run.tags.get("mmm/trigger", "manual"),
                "conditions": ", ".join(c.name for c in active) or "none",
                "history_kpi": dg.MetadataValue.md(
                    _history_chart(kpi_trend_chart, history, f"{market}: forecast KPI of each plan's weeks")
                ),
                "history_allocation": dg.MetadataValue.md(
                    _history_chart(allocation_chart, history, f"{market}: recommended allocation over time")
                ),
                "history_roas": dg.MetadataValue.md(
                    _history_chart(roas_trend_chart, history, f"{market}: ROAS at recommendation")
                ),
            }
        # Each recorded recommendation is new data for what reads it (the BI publish, the report).
        recorded = None if base is None else dg.DataVersion(opt.optimization_id)
        yield dg.MaterializeResult(
            asset_key="budget_recommendation", metadata=ui_metadata(metadata), data_version=recorded
        )
        yield from _check_results(
            conflicts,
            scenario_conflicts,
            None if base is None else list(base.flags),
            None
            if base is None
            else {
                "prob_uplift_positive": float(base.summary.iloc[0]["prob_uplift_positive"]),
                "uplift": _uplift_text(base.summary.iloc[0], cfg.kpi.name),
            },
        )

    @dg.graph_asset(
        name="budget_recommendation",
        group_name="optimization",
        kinds={"scipy", "duckdb"},
        partitions_def=MARKETS,
        ins={
            "model_registry": dg.AssetIn(dagster_type=dg.Nothing),
            "market_conditions": dg.AssetIn(dagster_type=dg.Nothing),
        },
        # A changed plan file re-optimizes with the same champion: no refit.
        code_version=settings_version,
        description=(
            "Recommends the market's media budget split with its champion model only (never a rejected "
            "fit): the base budget plan (optimization.plan; business rules on budget, channels, shares, "
            "ratios, historical range) and each scenario (optimization.scenarios) are optimized over the "
            "posterior draws against the recent spend history, each plan its own step "
            "(optimize_plan_<k>: 0 the base plan, then the scenarios in order), then recorded in the "
            "optimization schema in one transaction (recommendations, plan_summary, marginal_roi, "
            "weekly_allocations, scenarios, scenario_allocations; latest_* views per market). An "
            "infeasible base plan writes nothing: the last good recommendation keeps serving."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                "plan_feasible",
                asset="budget_recommendation",
                description="the base plan can meet all its rules (on failure the metadata names the "
                "conflicting rules; an infeasible base plan writes nothing, the last recommendation stays)",
            ),
            dg.AssetCheckSpec(
                "scenarios_feasible",
                asset="budget_recommendation",
                description="every scenario can meet all its rules (a warning: a scenario is a what-if, "
                "and 'not possible under these rules' is its answer; the metadata and the report name "
                "the conflicting rules; the base recommendation is recorded either way)",
            ),
            dg.AssetCheckSpec(
                "within_history",
                asset="budget_recommendation",
                description="no channel's recommended weekly spend lies outside its historical range, "
                "where the model would extrapolate (a warning)",
            ),
            dg.AssetCheckSpec(
                "uplift_positive",
                asset="budget_recommendation",
                description=f"the recommendation beats the current allocation in at least "
                f"{MIN_PROB_UPLIFT:.0%} of posterior draws (a warning)",
            ),
        ],
        metadata={
            "plan": str(plan_path),
            "scenarios": ", ".join(str(p) for p in scenario_paths) or "none",
        },
    )
    def budget_recommendation(model_registry, market_conditions):  # noqa: ANN001, ANN202 - a composition
        inputs, *tasks = optimization_inputs(
            model_registry=model_registry, market_conditions=market_conditions
        )
        results = [optimize_plan_step.alias(f"optimize_plan_{k}")(task) for k, task in enumerate(tasks)]
        return record_recommendation(inputs=inputs, results=results)

    return [market_conditions, budget_recommendation, *build_geo_assets(cfg)]


#: The geo asset's name, for the job that runs it and the publish asset below it.
GEO_ASSET = "geo_budget_recommendation"


def build_geo_assets(cfg: ProjectConfig) -> list[dg.AssetsDefinition]:
    """The ``geo_budget_recommendation`` asset, when the config names a geo plan
    (``optimization.geo_plan``); none otherwise."""
    geo_path = cfg.optimization_geo_plan_path
    if geo_path is None:
        return []
    groups = {c.name: c.group for c in cfg.channels}

    def code_version() -> str:
        digest = hashlib.sha256(str(cfg.optimization.max_draws).encode())
        digest.update(json.dumps(groups, sort_keys=True).encode())
        try:
            digest.update(geo_path.read_bytes())
        except OSError as exc:
            digest.update(f"unreadable: {exc}".encode())
        return digest.hexdigest()[:16]

    @dg.asset(
        name=GEO_ASSET,
        group_name="optimization",
        kinds={"scipy", "duckdb"},
        deps=["model_registry"],
        pool=WRITER_POOL,
        code_version=code_version(),
        description=(
            "One budget across markets: the geo plan (optimization.geo_plan) splits a national total over "
            "every market x channel with each market's champion model, under national rules (total, "
            "channel bounds and shares summed over markets) and per-market rules (a market's total or "
            "share, its channels' bounds, fixed markets), over the joint posterior draws; recorded in "
            "optimization.geo_plan_summary, geo_market_totals and geo_allocations (latest_geo_* views) in "
            "one transaction. Every market needs a champion; an infeasible plan writes nothing and fails "
            "with the conflicting rules, so the last good geo recommendation keeps serving."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                "geo_within_history",
                asset=GEO_ASSET,
                description="no market x channel's recommended weekly spend lies outside that market's "
                "historical range, where its model would extrapolate (a warning)",
            ),
            dg.AssetCheckSpec(
                "geo_uplift_positive",
                asset=GEO_ASSET,
                description=f"the national recommendation beats the current allocation in at least "
                f"{MIN_PROB_UPLIFT:.0%} of joint posterior draws (a warning)",
            ),
        ],
        metadata={"geo_plan": str(geo_path)},
    )
    def geo_budget_recommendation(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        try:
            plan = load_plan(geo_path)
        except PlanError as exc:
            raise dg.Failure(f"geo budget: {exc}") from None
        if plan.scope != "geo":
            raise dg.Failure(f"geo budget: {geo_path}: scope: set 'scope: geo' for a plan across markets")
        markets = sorted(context.instance.get_dynamic_partitions(MARKETS.name))
        with warehouse.get_connection() as conn:
            serving = champion_runs(conn).set_index("market")
            missing = [m for m in markets if m not in serving.index]
            if not markets or missing:
                raise dg.Failure(
                    "geo budget: every market needs a champion model to share one budget; "
                    + (f"none yet for {missing}" if markets else "no market is known yet")
                    + " (their fits have not passed the gate: see the model_registry checks)"
                )
            histories = {}
            for m in markets:
                run = serving.loc[m]
                channels = ScalingSpec.model_validate_json(str(run["scaling"])).channels
                try:
                    histories[m] = spend_history(conn, m, channels, pd.Timestamp(run["train_end"]).date())
                except ValueError as exc:
                    raise dg.Failure(f"geo budget: market {m}: {exc}") from None
        # Optimize outside any connection: the writer lock is held only for the write below.
        started = time.perf_counter()
        models = {m: load_model(str(serving.loc[m, "artifact_path"])) for m in markets}
        try:
            opt = recommend_geo(
                models,
                plan,
                histories,
                groups=groups,
                max_draws=cfg.optimization.max_draws,
                dagster_run_id=context.run_id,
            )
        except InfeasiblePlanError as exc:
            raise dg.Failure(
                f"geo budget: {exc}",
                metadata={
                    "conflicting_rules": dg.MetadataValue.md(
                        "\n".join(f"- `{name}`: {md_text(text)}" for name, text in exc.conflicts)
                    )
                },
            ) from None
        except (PlanError, ValueError) as exc:
            raise dg.Failure(f"geo budget: {exc}") from None
        seconds = time.perf_counter() - started
        with warehouse.get_connection() as conn:
            write_geo_optimization(conn, opt)
        result = opt.result
        summary = result.summary.iloc[0]
        context.log.info(
            f"geo budget: recorded {opt.geo_optimization_id}: {len(markets)} markets, "
            f"{len(result.cells)} cells, {opt.n_draws} draws, {seconds:.1f}s; uplift "
            f"{_uplift_text(summary, cfg.kpi.name)}"
        )
        totals = result.market_totals
        yield dg.MaterializeResult(
            metadata=ui_metadata(
                {
                    "geo_optimization_id": opt.geo_optimization_id,
                    "plan": plan.name,
                    "plan_source": plan.source,
                    "markets": ", ".join(markets),
                    "draws": opt.n_draws,
                    "seconds": seconds,
                    "budget": float(summary["budget"]),
                    "uplift": _uplift_text(summary, cfg.kpi.name),
                    "prob_uplift_positive": float(summary["prob_uplift_positive"]),
                    "by_market": dg.MetadataValue.md(
                        "\n".join(
                            f"- **{r.market}**: {r.current:,.0f} → {r.recommended:,.0f}"
                            + ("" if pd.isna(r.change_pct) else f" ({r.change_pct:+.0f}%)")
                            + f"; uplift {r.uplift_mean:+,.0f} "
                            + f"[{r.uplift_hdi_low:+,.0f}, {r.uplift_hdi_high:+,.0f}]"
                            for r in totals.itertuples()
                        )
                    ),
                }
            ),
            data_version=dg.DataVersion(opt.geo_optimization_id),
        )
        yield dg.AssetCheckResult(
            check_name="geo_within_history",
            passed=not result.flags,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"flags": dg.MetadataValue.md("\n".join(f"- {f}" for f in result.flags) or "none")},
        )
        yield dg.AssetCheckResult(
            check_name="geo_uplift_positive",
            passed=bool(summary["prob_uplift_positive"] >= MIN_PROB_UPLIFT),
            severity=dg.AssetCheckSeverity.WARN,
            metadata=ui_metadata({"prob_uplift_positive": float(summary["prob_uplift_positive"])}),
        )

    return [geo_budget_recommendation]


def _history_chart(draw, history: pd.DataFrame, title: str) -> str:  # noqa: ANN001 - a monitoring.plots drawer
    """The chart, once there is a trend to show; before that, text saying so (a chart of one point is a
    dot, and a stacked area of one point is empty)."""
    n = optimizations(history)
    if n < 2:
        return (
            f"{n} recommendation so far: the trend over time shows from the second one on "
            "(the current recommendation is in `recommendation` and `chart`)."
        )
    return markdown_image(draw(history, title), title)
