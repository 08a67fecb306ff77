"""Budget recommendations in the warehouse: the champion's optimized plans, as the ``optimization`` schema.

:func:`recommend` runs the base plan and its scenarios (:mod:`mmm_pipeline.optimize`) against a market's
champion model and its recent spend, and lays the results out as the tables of
:data:`~mmm_pipeline.tables.OPTIMIZATION_DDL`;
:func:`write_optimization` records them in one transaction, under a new ``optimization_id``. Every run
is kept; the ``optimization.latest_<table>`` views show each market's most recent optimization, so a
run whose base plan is infeasible (nothing written) leaves the last good recommendation serving.

No Dagster here: the ``budget_recommendation`` asset reads the champion and the history briefly,
computes outside any DuckDB connection, then writes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from mmm_pipeline.features.data_version import modeling_fingerprint
from mmm_pipeline.ingest.categorical import with_indicators
from mmm_pipeline.model.build import ModelData
from mmm_pipeline.model.predict import PlanForecast, PosteriorDraws, forecast_plan, interval, thin
from mmm_pipeline.model.registry import StoredModel
from mmm_pipeline.optimize import (
    BudgetResult,
    InfeasiblePlanError,
    Plan,
    ResponseModel,
    ScenarioComparison,
    compare_scenarios,
    optimize_scenario,
)
from mmm_pipeline.optimize.conditions import ActiveCondition, apply_conditions, evaluate_conditions
from mmm_pipeline.optimize.settings import ConditionConfig
from mmm_pipeline.tables import OPTIMIZATION_TABLES, ensure_optimization
from mmm_pipeline.warehouse import quote_ident, relation_exists, transaction

#: The optimization tables. Every row carries ``optimization_id`` (one optimization of a market: a base
#: plan and its scenarios against one champion), ``market``, ``model_id`` (the champion used) and
#: ``created_at`` (UTC). Amounts are in the spend currency over the plan's horizon (one week for a
#: steady-state plan), contributions in KPI units over the same horizon; HDIs are 94%.
_KEYS = ["optimization_id", "market", "model_id", "created_at"]
_SUMMARY_FROM_RESULT = [
    "mode", "weeks", "objective", "risk", "budget", "budget_mode", "total_current", "total_recommended",
    "objective_current", "objective_recommended", "contribution_current_mean", "contribution_mean",
    "contribution_hdi_low", "contribution_hdi_high", "roas_current", "roas_recommended", "uplift_mean",
    "uplift_hdi_low", "uplift_hdi_high", "uplift_pct", "prob_uplift_positive", "same_mix_uplift_mean",
    "same_mix_uplift_hdi_low", "same_mix_uplift_hdi_high", "prob_same_mix_uplift_positive", "n_flags",
    "seconds",
]  # fmt: skip


def new_optimization_id(market: str, created_at: dt.datetime) -> str:
    """``opt-<market>-<UTC time>-<8 hex>``: readable, sortable per market, unique."""
    return f"opt-{market}-{created_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def plan_hash(plans: Sequence[Plan]) -> str:
    """sha256 of the plans' content (not their file names): what a re-optimization would change."""
    payload = [p.model_dump(mode="json") for p in plans]
    for dumped in payload:  # a market plan hashes as before geo plans existed (no spurious re-optimization)
        if dumped.get("scope") == "market" and not dumped.get("markets"):
            dumped.pop("scope")
            dumped.pop("markets")
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def recommendation_inputs_version(
    model_id: str, plans: Sequence[Plan], rows: pd.DataFrame, settings_version: str
) -> str:
    """What a market's recommendation is computed from: the champion, the plans in force (conditions
    applied), the modeling rows (spend history, carry-in and controls of the plan weeks) and the
    optimization settings (``settings_version``). The solver is deterministic (seeded starts), so equal
    versions give the same recommendation: it need not be optimized, nor recorded, twice."""
    payload = [model_id, plan_hash(plans), modeling_fingerprint(rows), settings_version]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def spend_history(
    conn: duckdb.DuckDBPyConnection, market: str, channels: Sequence[str], until: dt.date
) -> pd.DataFrame:
    """The market's weekly spend per channel (``week``, ``spend_<channel>``) up to ``until``, oldest first.

    Raises ``ValueError`` naming the channels the modeling table no longer has.
    """
    columns = {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'marts' AND table_name = 'fct_modeling_weekly'"
        ).fetchall()
    }
    missing = [c for c in channels if f"spend_{c}" not in columns]
    if missing:
        raise ValueError(
            f"the champion's channels {missing} have no spend column in marts.fct_modeling_weekly: "
            "refit the model after changing the channels"
        )
    selected = ", ".join(quote_ident(f"spend_{c}") for c in channels)
    return conn.execute(
        f"SELECT week, {selected} FROM marts.fct_modeling_weekly "
        "WHERE market = ? AND week <= ? ORDER BY week",
        [market, until],
    ).df()


@dataclass
class Optimization:
    """One optimization of a market: the base plan and its scenarios against the champion.

    ``tables`` (the :data:`OPTIMIZATION_TABLES`, keys included) is empty when the base plan is
    infeasible: nothing is to be written. ``infeasible`` maps each infeasible plan's name to its error
    (with the conflicting rules).
    """

    optimization_id: str
    market: str
    model_id: str
    created_at: dt.datetime
    plans: list[Plan]
    comparison: ScenarioComparison
    n_draws: int
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    forecast: PlanForecast | None = None
    """The model's forecast of the base plan's weeks under the recommended and the current allocation."""

    @property
    def base_plan(self) -> Plan:
        return self.plans[0]

    @property
    def base(self) -> BudgetResult | None:
        result = self.comparison.results[self.base_plan.name]
        return result if isinstance(result, BudgetResult) else None

    @property
    def infeasible(self) -> dict[str, InfeasiblePlanError]:
        return {k: v for k, v in self.comparison.results.items() if isinstance(v, InfeasiblePlanError)}


def recommend(
    model: StoredModel,
    market: str,
    plans: Sequence[Plan],
    history: pd.DataFrame,
    rows: pd.DataFrame,
    *,
    groups: Mapping[str, str] | None = None,
    max_draws: int | None = 1000,
    dagster_run_id: str | None = None,
    created_at: dt.datetime | None = None,
) -> Optimization:
    """Optimize the base plan (``plans[0]``) and the scenarios after it with the ``model``, one after
    another, and forecast the base plan's weeks (:func:`plan_forecast`).

    ``history``: the market's weekly spend up to the model's last training week (:func:`spend_history`);
    its last ``current_weeks`` weeks are the current allocation. ``rows``: the market's modeling-table
    rows (every landed week): the plan forecast's carry-in and controls. Raises
    :class:`mmm_pipeline.optimize.PlanError` for a plan that does not fit the model (unknown channel,
    group...); infeasible plans are reported in the result, never guessed. The pipeline runs the same
    in pieces, a step per plan: :func:`optimize_plan` on each, then :func:`optimization_of`.
    """
    response = scenario_response(model, max_draws)
    comparison = compare_scenarios(list(plans), response, history=history, groups=groups)
    return optimization_of(
        model, market, plans, comparison, history, rows, n_draws=response.n_draws, max_draws=max_draws,
        dagster_run_id=dagster_run_id, created_at=created_at,
    )  # fmt: skip


def scenario_response(model: StoredModel, max_draws: int | None = 1000) -> ResponseModel:
    """The champion's media response over (at most ``max_draws``, thinned evenly) posterior draws: what
    every plan of an optimization is solved against."""
    return ResponseModel.from_idata(model.idata, model.scaling, model.spec, max_draws)


def optimize_plan(
    model: StoredModel,
    plan: Plan,
    history: pd.DataFrame,
    *,
    groups: Mapping[str, str] | None = None,
    max_draws: int | None = 1000,
) -> BudgetResult | InfeasiblePlanError:
    """One plan of :func:`recommend` on its own (a step of its own in the pipeline): the same solve with
    the same seed, so a plan's result does not depend on where or after which other plan it ran."""
    return optimize_scenario(plan, scenario_response(model, max_draws), history=history, groups=groups)


def optimization_of(
    model: StoredModel,
    market: str,
    plans: Sequence[Plan],
    comparison: ScenarioComparison,
    history: pd.DataFrame,
    rows: pd.DataFrame,
    *,
    n_draws: int,
    max_draws: int | None = 1000,
    dagster_run_id: str | None = None,
    created_at: dt.datetime | None = None,
) -> Optimization:
    """The optimization of ``market`` from its plans' ``comparison``: the base plan's forecast and the
    tables to record (none when the base plan is infeasible); see :func:`recommend`."""
    created_at = created_at or dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    out = Optimization(
        new_optimization_id(market, created_at), market, model.model_id, created_at, list(plans),
        comparison, n_draws,
    )  # fmt: skip
    if out.base is not None and len(history):
        after = pd.Timestamp(pd.to_datetime(history["week"]).max())
        out.forecast = plan_forecast(model, rows, market, after, out.base, max_draws)
    if out.base is not None:
        out.tables = _tables(out, history, dagster_run_id)
    return out


def plan_forecast(
    model: StoredModel,
    rows: pd.DataFrame,
    market: str,
    after: pd.Timestamp,
    result: BudgetResult,
    max_draws: int | None = 1000,
    allocations: Mapping[str, np.ndarray] | None = None,
) -> PlanForecast:
    """The model's forecast (:func:`mmm_pipeline.model.predict.forecast_plan`) of the plan's weeks after
    ``after`` under the recommended (``recommended``) and the current allocation (``current``), or under
    ``allocations``: controls as landed, else held at their mean over the plan's ``current_weeks``."""
    frame = with_indicators(rows[rows["market"] == market].sort_values("week"), model.scaling.controls)
    data = ModelData.from_frame(
        frame, market, channels=model.scaling.channels, controls=model.scaling.controls
    )
    draws = thin(PosteriorDraws.from_idata(model.idata, model.spec), max_draws)
    if allocations is None:
        allocations = {"recommended": result.recommended, "current": result.problem.current}
    return forecast_plan(
        draws, model.scaling, model.spec, data, after, allocations, hold_weeks=result.plan.current_weeks
    )


#: ``plan_summary`` columns of the plan forecast (see ``OPTIMIZATION_DDL``).
FORECAST_SUMMARY = [
    "forecast_start", "forecast_end", "forecast_kpi_mean", "forecast_kpi_hdi_low", "forecast_kpi_hdi_high",
    "forecast_current_kpi_mean", "forecast_current_kpi_hdi_low", "forecast_current_kpi_hdi_high",
    "forecast_uplift_mean", "forecast_uplift_hdi_low", "forecast_uplift_hdi_high",
    "forecast_prob_uplift_positive", "forecast_controls",
]  # fmt: skip


def forecast_summary(pf: PlanForecast | None) -> dict[str, object]:
    """The plan forecast over all its weeks: the KPI under the recommended and the current allocation
    (predictive: observation noise included, 94% HDI) and the promised uplift (recommended - current
    expected KPI, per draw; the weeks' noise is common to both and cancels)."""
    if pf is None:
        return dict.fromkeys(FORECAST_SUMMARY)
    rec, cur = pf.predictions["recommended"], pf.predictions["current"]
    kpi, kpi_cur = interval(rec.kpi.sum(axis=1)), interval(cur.kpi.sum(axis=1))
    uplift_draws = (rec.expected - cur.expected).sum(axis=1)
    uplift = interval(uplift_draws)
    return {
        "forecast_start": pf.dates[0].date(),
        "forecast_end": pf.dates[-1].date(),
        "forecast_kpi_mean": kpi[0], "forecast_kpi_hdi_low": kpi[1], "forecast_kpi_hdi_high": kpi[2],
        "forecast_current_kpi_mean": kpi_cur[0], "forecast_current_kpi_hdi_low": kpi_cur[1],
        "forecast_current_kpi_hdi_high": kpi_cur[2],
        "forecast_uplift_mean": uplift[0], "forecast_uplift_hdi_low": uplift[1],
        "forecast_uplift_hdi_high": uplift[2],
        "forecast_prob_uplift_positive": float((uplift_draws > 0).mean()),
        "forecast_controls": pf.controls_note(),
    }  # fmt: skip


def forecast_weeks(pf: PlanForecast | None) -> pd.DataFrame:
    """The plan forecast week by week (``optimization.plan_forecast`` without its keys)."""
    columns = [
        "week_index", "week", "controls_known", "kpi_mean", "kpi_hdi_low", "kpi_hdi_high", "expected_mean",
        "baseline_mean", "media_mean", "current_kpi_mean", "current_kpi_hdi_low", "current_kpi_hdi_high",
        "uplift_mean", "uplift_hdi_low", "uplift_hdi_high",
    ]  # fmt: skip
    if pf is None:
        return pd.DataFrame(columns=columns)
    rec, cur = pf.predictions["recommended"], pf.predictions["current"]
    out = []
    for t, week in enumerate(pf.dates):
        kpi, kpi_cur = interval(rec.kpi[:, t]), interval(cur.kpi[:, t])
        uplift = interval(rec.expected[:, t] - cur.expected[:, t])
        baseline = sum(c[:, t] for c in rec.components.values())
        out.append({
            "week_index": t, "week": week.date(), "controls_known": bool(pf.controls_known[t]),
            "kpi_mean": kpi[0], "kpi_hdi_low": kpi[1], "kpi_hdi_high": kpi[2],
            "expected_mean": float(rec.expected[:, t].mean()), "baseline_mean": float(baseline.mean()),
            "media_mean": float(rec.contributions[:, t].sum(axis=1).mean()),
            "current_kpi_mean": kpi_cur[0], "current_kpi_hdi_low": kpi_cur[1],
            "current_kpi_hdi_high": kpi_cur[2],
            "uplift_mean": uplift[0], "uplift_hdi_low": uplift[1], "uplift_hdi_high": uplift[2],
        })  # fmt: skip
    return pd.DataFrame(out, columns=columns)


def _tables(opt: Optimization, history: pd.DataFrame, dagster_run_id: str | None) -> dict[str, pd.DataFrame]:
    base, plans = opt.base, opt.plans
    assert base is not None
    keys = {"optimization_id": opt.optimization_id, "market": opt.market, "model_id": opt.model_id,
            "created_at": opt.created_at}  # fmt: skip
    weeks = pd.to_datetime(history["week"]) if len(history) else pd.Series(dtype="datetime64[ns]")
    history_end = weeks.max().date() if len(weeks) else None
    summary = base.summary.iloc[0]
    plan_summary = pd.DataFrame(
        [
            {
                **keys,
                "dagster_run_id": dagster_run_id,
                "plan": opt.base_plan.name,
                "description": opt.base_plan.description,
                "plan_source": opt.base_plan.source,
                "plan_hash": plan_hash(plans),
                "scenarios": ", ".join(p.name for p in plans[1:]),
                "infeasible_scenarios": ", ".join(opt.infeasible),
                **{k: summary[k] for k in _SUMMARY_FROM_RESULT},
                "flags": "; ".join(base.flags),
                "n_draws": opt.n_draws,
                "history_start": weeks.min().date() if len(weeks) else None,
                "history_end": history_end,
                **forecast_summary(opt.forecast),
            }
        ]
    )
    recommendations = base.recommendation.rename(columns={"group": "channel_group"})
    weekly = base.weekly.copy()
    if history_end is not None:
        weekly.insert(1, "week", [history_end + dt.timedelta(weeks=int(i) + 1) for i in weekly["week_index"]])
    by_name = {p.name: p for p in plans}
    scenarios = opt.comparison.table.assign(
        is_base=lambda t: t["scenario"] == opt.base_plan.name,
        description=lambda t: [by_name[s].description for s in t["scenario"]],
        source=lambda t: [by_name[s].source for s in t["scenario"]],
    )
    tables = {
        "plan_summary": plan_summary,
        "recommendations": recommendations,
        "marginal_roi": base.marginal,
        "weekly_allocations": weekly,
        "scenarios": scenarios,
        "scenario_allocations": opt.comparison.allocations,
        "plan_forecast": forecast_weeks(opt.forecast),
    }
    return {name: _with_keys(frame, keys) for name, frame in tables.items()}


def _with_keys(frame: pd.DataFrame, keys: dict[str, object]) -> pd.DataFrame:
    rest = [c for c in frame.columns if c not in keys]
    out = frame[rest].copy()
    for i, (k, v) in enumerate(keys.items()):
        out.insert(i, k, v)
    return out


def write_optimization(conn: duckdb.DuckDBPyConnection, opt: Optimization) -> None:
    """Record an optimization's tables in one transaction (nothing for an infeasible base plan)."""
    if not opt.tables:
        raise ValueError(f"optimization {opt.optimization_id} has no feasible base plan: nothing to write")
    ensure_optimization(conn)
    with transaction(conn):
        for name in OPTIMIZATION_TABLES:
            conn.execute(f"DELETE FROM optimization.{name} WHERE optimization_id = ?", [opt.optimization_id])
            conn.register("optimization_rows", opt.tables[name])
            conn.execute(f"INSERT INTO optimization.{name} BY NAME SELECT * FROM optimization_rows")
            conn.unregister("optimization_rows")


def latest_optimization(conn: duckdb.DuckDBPyConnection, market: str) -> dict[str, object] | None:
    """The market's latest recorded optimization (its ``plan_summary`` row), or None (read-only safe)."""
    if not relation_exists(conn, "optimization", "plan_summary"):
        return None
    frame = conn.execute(
        "SELECT * FROM optimization.plan_summary WHERE market = ? "
        "ORDER BY created_at DESC, optimization_id DESC LIMIT 1",
        [market],
    ).df()
    return None if frame.empty else frame.iloc[0].to_dict()


def plans_in_force(
    conn: duckdb.DuckDBPyConnection, market: str, plans: Sequence[Plan], conditions: Sequence[ConditionConfig]
) -> tuple[list[Plan], list[ActiveCondition]]:
    """The plans as they apply to the market now: with the changes of every configured market condition
    that holds on its modeling rows merged in. One function for the optimization asset and for
    ``market_conditions`` (whose data version says which conditions hold, so a condition that keeps
    holding does not make the recommendation stale on every run)."""
    if not conditions:
        return list(plans), []
    rows = conn.execute("SELECT * FROM marts.fct_modeling_weekly WHERE market = ?", [market]).df()
    active = evaluate_conditions(conditions, rows)
    return apply_conditions(plans, active), active
