"""The report's numbers, read from the published BI catalog (``bi.duckdb``) read-only.

Why the BI catalog and not the warehouse: the report and every BI dashboard then read the very same
snapshots, so they can never disagree, and rendering never competes with a pipeline writer for the
warehouse. Relations another part of the pipeline has not published yet (an older catalog, tracked
performance before continuous operation runs) come back as empty frames and their sections are skipped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from ..warehouse import quote_ident


class ReportDataError(ValueError):
    """The catalog cannot support a report for this market (no catalog, no champion); says which."""


@dataclass(frozen=True)
class CheckStatus:
    """The latest evaluation of one data-quality asset check (from the Dagster instance)."""

    asset: str
    check: str
    status: str  # SUCCEEDED | FAILED | PLANNED (not evaluated yet)


@dataclass
class ReportData:
    """Everything one market's report shows, as read from the BI catalog (one frame per relation)."""

    market: str
    kpi: str
    catalog: Path
    published_at: dt.datetime | None
    run: pd.Series
    """The champion's ``champion_model_runs`` row."""
    latest_run: pd.Series | None
    """The market's newest fit (``latest_model_runs``): a rejected refit is not the champion."""
    channels: pd.DataFrame
    periods: pd.DataFrame
    decomposition: pd.DataFrame
    response_curves: pd.DataFrame
    adstock: pd.DataFrame
    fit_weekly: pd.DataFrame
    cv_metrics: pd.DataFrame
    cv_stability: pd.DataFrame
    cv_fold_parameters: pd.DataFrame
    roas_drift: pd.DataFrame
    plan: pd.Series | None
    """The market's ``latest_plan_summary`` row; None when no recommendation has been published."""
    recommendations: pd.DataFrame
    scenarios: pd.DataFrame
    deliveries: pd.DataFrame
    tracking: pd.DataFrame
    history: pd.DataFrame
    """The market's ``optimization_history`` rows (optimization x channel), oldest first."""
    drift_events: pd.DataFrame
    scorecard: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The market's ``recommendation_scorecard`` rows (one per recommendation), oldest first."""
    checks: list[CheckStatus] = field(default_factory=list)
    geo_plan: pd.Series | None = None
    """The latest geo optimization's ``latest_geo_plan_summary`` row (one budget across markets); None
    when no geo plan is configured or published."""
    geo_markets: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Its ``latest_geo_market_totals``: every market's row, not only this one's."""
    previous_run: pd.Series | None = None
    """The ``model_runs`` row of the champion this one replaced (``run.previous_champion``); None for a
    market's first champion."""
    sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The market's latest ``prior_sensitivity`` computation, one row per channel; empty before any."""

    @property
    def model_id(self) -> str:
        return str(self.run["model_id"])


#: Catalog relation read for each frame of :class:`ReportData`, filtered to the market and ordered.
_MARKET_FRAMES = {
    "channels": ("champion_channel_summary", "roas_mean DESC"),
    "periods": ("champion_channel_period_summary", "period_start, channel"),
    "decomposition": ("champion_decomposition", "week, component"),
    "response_curves": ("champion_response_curves", "channel, weekly_spend"),
    "adstock": ("champion_adstock_weights", "channel, lag"),
    "fit_weekly": ("champion_fit_weekly", "week"),
    "cv_metrics": ("champion_cv_metrics", "scope, fold, model"),
    "cv_stability": ("champion_cv_parameter_stability", "channel"),
    "cv_fold_parameters": ("champion_cv_fold_parameters", "fold, channel, parameter"),
    "roas_drift": ("champion_roas_drift", "channel"),
    "recommendations": ("latest_recommendations", "change DESC"),
    "scenarios": ("latest_scenarios", "is_base DESC, scenario"),
    "tracking": ("performance_tracking", "week"),
    "history": ("optimization_history", "created_at, channel"),
    "drift_events": ("drift_events", "detected_week"),
    "scorecard": ("recommendation_scorecard", "created_at"),
}


def load_report_data(
    bi_database: Path, market: str, kpi: str, checks: list[CheckStatus] | None = None
) -> ReportData:
    """Read one market's report data from the BI catalog (opened read-only, closed before returning)."""
    if not bi_database.exists():
        raise ReportDataError(f"no BI catalog at {bi_database}: publish the models first")
    with duckdb.connect(str(bi_database), read_only=True) as bi:
        published = dict(bi.execute("SELECT name, published_at FROM published_tables").fetchall())

        def read(relation: str, order: str) -> pd.DataFrame:
            if relation not in published:
                return pd.DataFrame()
            return bi.execute(
                f"SELECT * FROM {quote_ident(relation)} WHERE market = ? ORDER BY {order}", [market]
            ).df()

        runs = read("champion_model_runs", "model_id")
        if runs.empty:
            raise ReportDataError(
                f"market {market}: no champion model in {bi_database} (no fit of this market has passed "
                "the gate yet, or the models were not published)"
            )
        frames = {name: read(relation, order) for name, (relation, order) in _MARKET_FRAMES.items()}
        latest = read("latest_model_runs", "model_id")
        plans = read("latest_plan_summary", "market")
        deliveries = _deliveries(bi, published)
        previous_run, sensitivity = _previous_and_sensitivity(bi, published, market, runs.iloc[0])
        geo_plan, geo_markets = None, pd.DataFrame()
        if {"latest_geo_plan_summary", "latest_geo_market_totals"} <= set(published):
            geo = bi.execute("SELECT * FROM latest_geo_plan_summary").df()
            geo_plan = None if geo.empty else geo.iloc[0]
            geo_markets = bi.execute("SELECT * FROM latest_geo_market_totals ORDER BY market").df()
    return ReportData(
        market=market,
        kpi=kpi,
        catalog=bi_database,
        published_at=max(published.values()) if published else None,
        run=runs.iloc[0],
        latest_run=None if latest.empty else latest.iloc[0],
        plan=None if plans.empty else plans.iloc[0],
        deliveries=deliveries,
        checks=list(checks or []),
        geo_plan=geo_plan,
        geo_markets=geo_markets,
        previous_run=previous_run,
        sensitivity=sensitivity,
        **frames,
    )


def _previous_and_sensitivity(
    bi: duckdb.DuckDBPyConnection, published: dict, market: str, run: pd.Series
) -> tuple[pd.Series | None, pd.DataFrame]:
    """The previous champion's run row (what "what changed" compares with) and the market's latest
    prior-sensitivity computation (its rows for every channel)."""
    previous = None
    previous_id = run.get("previous_champion")
    if isinstance(previous_id, str) and previous_id and "model_runs" in published:
        rows = bi.execute("SELECT * FROM model_runs WHERE model_id = ?", [previous_id]).df()
        previous = None if rows.empty else rows.iloc[0]
    sensitivity = pd.DataFrame()
    if "prior_sensitivity" in published:
        sensitivity = bi.execute(
            "SELECT * FROM prior_sensitivity WHERE market = ? "
            "QUALIFY computed_at = max(computed_at) OVER () ORDER BY channel",
            [market],
        ).df()
    return previous, sensitivity


def _deliveries(bi: duckdb.DuckDBPyConnection, published: dict) -> pd.DataFrame:
    """Landing deliveries by kind and outcome (accepted / quarantined) with their row counts."""
    if "fct_landing_deliveries" not in published:
        return pd.DataFrame(columns=["kind", "outcome", "files", "rows"])
    return bi.execute(
        "SELECT kind, outcome, count(*) AS files, coalesce(sum(n_rows), 0) AS rows "
        "FROM fct_landing_deliveries GROUP BY ALL ORDER BY kind, outcome"
    ).df()


def serving_ids(bi_database: Path, market: str) -> tuple[str | None, str | None]:
    """The market's published champion model id and latest optimization id (None where absent)."""
    if not bi_database.exists():
        return None, None
    with duckdb.connect(str(bi_database), read_only=True) as bi:
        published = {r[0] for r in bi.execute("SELECT name FROM published_tables").fetchall()}
        ids = []
        for relation, column in (
            ("champion_model_runs", "model_id"),
            ("latest_plan_summary", "optimization_id"),
        ):
            row = (
                bi.execute(f"SELECT {column} FROM {relation} WHERE market = ?", [market]).fetchone()
                if relation in published
                else None
            )
            ids.append(None if row is None else str(row[0]))
    return ids[0], ids[1]
