"""Geo budget recommendations in the warehouse: one total over every market's champion, as the
``optimization.geo_*`` tables (:data:`~mmm_pipeline.tables.GEO_OPTIMIZATION_DDL`).

:func:`recommend_geo` optimizes a geo plan (:mod:`mmm_pipeline.optimize.geo`) with each market's champion
and spend history and lays the result out as rows; :func:`write_geo_optimization` records them in one
transaction under a new ``geo_optimization_id``. Every run is kept; the ``latest_geo_*`` views show the
newest. An infeasible plan raises before anything is computed or written, so the last good geo
recommendation keeps serving.

No Dagster here: the ``geo_budget_recommendation`` asset reads the champions and histories briefly,
computes outside any DuckDB connection, then writes.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import duckdb
import pandas as pd

from mmm_pipeline.model.registry import StoredModel
from mmm_pipeline.optimize.geo import GeoBudgetResult, optimize_geo_budget
from mmm_pipeline.optimize.plan import Plan
from mmm_pipeline.optimize.recommendations import plan_hash
from mmm_pipeline.optimize.response import ResponseModel
from mmm_pipeline.tables import GEO_OPTIMIZATION_TABLES, ensure_optimization
from mmm_pipeline.warehouse import transaction

#: Columns of the geo plan summary taken from the national result's summary.
_SUMMARY = [
    "mode", "weeks", "objective", "risk", "budget", "budget_mode", "total_current", "total_recommended",
    "objective_current", "objective_recommended", "contribution_current_mean", "contribution_mean",
    "contribution_hdi_low", "contribution_hdi_high", "roas_current", "roas_recommended", "uplift_mean",
    "uplift_hdi_low", "uplift_hdi_high", "uplift_pct", "prob_uplift_positive", "same_mix_uplift_mean",
    "same_mix_uplift_hdi_low", "same_mix_uplift_hdi_high", "prob_same_mix_uplift_positive", "n_flags",
    "n_markets", "n_cells", "seconds",
]  # fmt: skip


@dataclass
class GeoOptimization:
    """One geo optimization: the plan, the champions used, the result and its rows (``tables``: the
    :data:`GEO_OPTIMIZATION_TABLES`, keys included)."""

    geo_optimization_id: str
    created_at: dt.datetime
    plan: Plan
    model_ids: dict[str, str]
    result: GeoBudgetResult
    n_draws: int
    tables: dict[str, pd.DataFrame]


def new_geo_optimization_id(created_at: dt.datetime) -> str:
    """``geo-<UTC time>-<8 hex>``: readable, sortable, unique."""
    return f"geo-{created_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def recommend_geo(
    models: Mapping[str, StoredModel],
    plan: Plan,
    histories: Mapping[str, pd.DataFrame],
    *,
    groups: Mapping[str, str] | None = None,
    max_draws: int | None = 1000,
    dagster_run_id: str | None = None,
    created_at: dt.datetime | None = None,
) -> GeoOptimization:
    """Optimize the geo ``plan`` with every market's champion (``models``, market -> stored model) and
    its spend history (``histories``: :func:`mmm_pipeline.optimize.recommendations.spend_history`, up to
    the champion's last training week; the last ``current_weeks`` weeks are the current allocation).

    Raises :class:`mmm_pipeline.optimize.PlanError` for a plan that does not fit the markets and
    :class:`mmm_pipeline.optimize.InfeasiblePlanError` (naming the conflicting rules) before optimizing.
    """
    created_at = created_at or dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    responses = {
        m: ResponseModel.from_idata(model.idata, model.scaling, model.spec, max_draws)
        for m, model in models.items()
    }
    result = optimize_geo_budget(plan, responses, history=dict(histories), groups=groups)
    model_ids = {m: model.model_id for m, model in models.items()}
    opt = GeoOptimization(
        new_geo_optimization_id(created_at), created_at, plan, model_ids, result,
        result.result.contribution_draws.shape[0], {},
    )  # fmt: skip
    opt.tables = _tables(opt, histories, dagster_run_id)
    return opt


def _tables(
    opt: GeoOptimization, histories: Mapping[str, pd.DataFrame], dagster_run_id: str | None
) -> dict[str, pd.DataFrame]:
    result, plan = opt.result, opt.plan
    keys = {"geo_optimization_id": opt.geo_optimization_id, "created_at": opt.created_at}
    ends = [pd.to_datetime(h["week"]).max() for h in histories.values() if len(h)]
    summary = result.summary.iloc[0]
    plan_summary = pd.DataFrame(
        [
            {
                **keys,
                "dagster_run_id": dagster_run_id,
                "plan": plan.name,
                "description": plan.description,
                "plan_source": plan.source,
                "plan_hash": plan_hash([plan]),
                "markets": ", ".join(result.markets),
                "model_ids": json.dumps(opt.model_ids, sort_keys=True),
                **{k: summary[k] for k in _SUMMARY},
                "flags": "; ".join(result.flags),
                "n_draws": opt.n_draws,
                "history_end": min(ends).date() if ends else None,
            }
        ]
    )
    model_id = {"model_id": lambda t: t["market"].map(opt.model_ids)}
    totals = result.market_totals.assign(**model_id)
    allocations = result.cells.rename(columns={"group": "channel_group"}).assign(**model_id)
    frames = {"geo_plan_summary": plan_summary, "geo_market_totals": totals, "geo_allocations": allocations}
    out = {}
    for name, frame in frames.items():
        rest = [c for c in frame.columns if c not in keys]
        out[name] = pd.concat([pd.DataFrame(keys, index=frame.index), frame[rest]], axis=1)
    return out


def write_geo_optimization(conn: duckdb.DuckDBPyConnection, opt: GeoOptimization) -> None:
    """Record a geo optimization's tables in one transaction (all of them or none)."""
    ensure_optimization(conn)
    with transaction(conn):
        for name in GEO_OPTIMIZATION_TABLES:
            conn.execute(
                f"DELETE FROM optimization.{name} WHERE geo_optimization_id = ?", [opt.geo_optimization_id]
            )
            conn.register("geo_rows", opt.tables[name])
            conn.execute(f"INSERT INTO optimization.{name} BY NAME SELECT * FROM geo_rows")
            conn.unregister("geo_rows")
