"""The ``monitoring`` schema: performance tracking, drift events, optimization history (DuckDB).

Every write happens in one transaction through a connection the caller got from the warehouse
resource (writer lock, ``duckdb_writer`` pool); nothing here computes a model. BI reads the published
snapshots ``performance_tracking``, ``drift_events`` and ``optimization_history``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence

import duckdb
import numpy as np
import pandas as pd

from mmm_pipeline.monitoring.calibration import MIN_RESIDUALS
from mmm_pipeline.tables import ensure_monitoring
from mmm_pipeline.warehouse import relation_exists, transaction

#: Half-width of a central 94% interval of a normal distribution, in sds.
Z_94 = 1.8808


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def replace_tracking(
    conn: duckdb.DuckDBPyConnection, market: str, model_id: str, rows: pd.DataFrame, run_id: str | None
) -> None:
    """Replace the tracking rows of ``model_id`` (every week is recomputed each time: cheap, idempotent)."""
    frame = rows.assign(tracked_at=_now(), dagster_run_id=run_id)
    conn.execute(
        "DELETE FROM monitoring.performance_tracking WHERE market = ? AND model_id = ?", [market, model_id]
    )
    if not frame.empty:
        conn.register("tracking_rows", frame)
        conn.execute("INSERT INTO monitoring.performance_tracking BY NAME SELECT * FROM tracking_rows")
        conn.unregister("tracking_rows")


def market_tracking(conn: duckdb.DuckDBPyConnection, market: str) -> pd.DataFrame:
    """Every tracking row of the market (each champion it has had), for
    :func:`mmm_pipeline.monitoring.drift.lineage`."""
    return conn.execute(
        "SELECT * FROM monitoring.performance_tracking WHERE market = ? ORDER BY week, train_end",
        [market],
    ).df()


def last_event_week(conn: duckdb.DuckDBPyConnection, market: str) -> dt.date | None:
    """The detected week of the market's latest drift event (open or resolved): where the champion
    lineage the rules read starts again."""
    row = conn.execute(
        "SELECT max(detected_week) FROM monitoring.drift_events WHERE market = ?", [market]
    ).fetchone()
    return None if row is None or row[0] is None else pd.Timestamp(row[0]).date()


def calibration_errors(conn: duckdb.DuckDBPyConnection, model_id: str) -> dict | None:
    """A champion's forecast errors for :func:`mmm_pipeline.monitoring.calibration.calibrate`: its
    time-slice CV errors (``models.cv_predictions``, the MMM's rows, one group per fold) with its CV
    MAPE, else its in-sample residuals (``models.fit_weekly``, one group; sd from the 94% interval),
    else ``None``. Keys: ``z``, ``forecast_cv`` (sd / |mean|), ``groups``, ``source`` (``cv`` /
    ``in_sample``), ``reference_mape``."""
    if relation_exists(conn, "models", "cv_predictions"):
        cv = conn.execute(
            "SELECT fold, observed, mean, sd FROM models.cv_predictions WHERE model_id = ? AND model = 'mmm' "
            "AND observed IS NOT NULL AND mean IS NOT NULL AND sd > 0 ORDER BY fold, week",
            [model_id],
        ).df()
        if len(cv) >= MIN_RESIDUALS:
            error = cv["observed"] - cv["mean"]
            mape = conn.execute(
                "SELECT mape FROM models.cv_metrics "
                "WHERE model_id = ? AND model = 'mmm' AND scope = 'overall'",
                [model_id],
            ).fetchone()
            return {
                "z": (error / cv["sd"]).to_numpy(float),
                "forecast_cv": (cv["sd"] / cv["mean"].abs()).to_numpy(float),
                "groups": cv["fold"].to_numpy(),
                "source": "cv",
                "reference_mape": None if mape is None or mape[0] is None else float(mape[0]),
            }
    if relation_exists(conn, "models", "fit_weekly"):
        fit = conn.execute(
            "SELECT actual, predicted_mean, predicted_hdi_low, predicted_hdi_high FROM models.fit_weekly "
            "WHERE model_id = ? AND actual IS NOT NULL ORDER BY week",
            [model_id],
        ).df()
        sd = (fit["predicted_hdi_high"] - fit["predicted_hdi_low"]) / (2 * Z_94)
        fit = fit[sd > 0]
        if len(fit) >= MIN_RESIDUALS:
            error = fit["actual"] - fit["predicted_mean"]
            return {
                "z": (error / sd[sd > 0]).to_numpy(float),
                "forecast_cv": (sd[sd > 0] / fit["predicted_mean"].abs()).to_numpy(float),
                "groups": np.zeros(len(fit), dtype=int),
                "source": "in_sample",
                "reference_mape": None,
            }
    return None


def open_events(conn: duckdb.DuckDBPyConnection, market: str | None = None) -> list[dict]:
    frame = conn.execute(
        "SELECT * FROM monitoring.drift_events WHERE status = 'open'"
        + (" AND market = ?" if market else "")
        + " ORDER BY detected_at",
        [market] if market else [],
    ).df()
    return frame.to_dict("records")


def insert_event(conn: duckdb.DuckDBPyConnection, row: Mapping[str, object]) -> None:
    frame = pd.DataFrame([{**row, "detected_at": _now()}])
    conn.register("event_row", frame)
    conn.execute("INSERT OR IGNORE INTO monitoring.drift_events BY NAME SELECT * FROM event_row")
    conn.unregister("event_row")


def resolve_event(
    conn: duckdb.DuckDBPyConnection,
    event_id: str,
    resolution: str,
    week: dt.date | None,
    new_model_id: str | None = None,
) -> None:
    conn.execute(
        "UPDATE monitoring.drift_events SET status = 'resolved', resolution = ?, resolved_at = ?, "
        "resolved_week = ?, new_model_id = ? WHERE event_id = ? AND status = 'open'",
        [resolution, _now(), week, new_model_id, event_id],
    )


def set_event_run(conn: duckdb.DuckDBPyConnection, event_id: str, run_id: str, status: str | None) -> None:
    conn.execute(
        "UPDATE monitoring.drift_events SET dagster_run_id = ?, run_status = ? WHERE event_id = ?",
        [run_id, status, event_id],
    )


def events_without_run(conn: duckdb.DuckDBPyConnection) -> list[str]:
    rows = conn.execute(
        "SELECT event_id FROM monitoring.drift_events WHERE dagster_run_id IS NULL OR run_status IS NULL "
        "OR run_status NOT IN ('SUCCESS', 'FAILURE', 'CANCELED')"
    ).fetchall()
    return [r[0] for r in rows]


def history_rows(
    tables: Mapping[str, pd.DataFrame],
    tags: Mapping[str, str],
    conditions: Sequence[dict],
) -> pd.DataFrame:
    """``monitoring.optimization_history`` rows of one optimization (its ``plan_summary`` and
    ``recommendations`` tables, see :mod:`mmm_pipeline.optimize.recommendations`). ``expected_kpi`` is
    the model's forecast of the plan weeks under the recommendation (``forecast_kpi_*``)."""
    summary = tables["plan_summary"].iloc[0]
    recs = tables["recommendations"]
    weeks = int(summary["weeks"])
    contribution = float(summary["contribution_mean"])
    mmm_tags = {k: v for k, v in tags.items() if k.startswith("mmm/")}
    head = {
        "optimization_id": summary["optimization_id"],
        "market": summary["market"],
        "model_id": summary["model_id"],
        "created_at": summary["created_at"],
        "dagster_run_id": summary.get("dagster_run_id"),
        "trigger": tags.get("mmm/trigger", "manual"),
        "drift_event_id": tags.get("mmm/drift_event_id"),
        "drift_rule": tags.get("mmm/drift_rule"),
        "tags": json.dumps(mmm_tags, sort_keys=True),
        "conditions_active": ", ".join(c["name"] for c in conditions) or None,
        "conditions": json.dumps(list(conditions), default=str),
        "plan": summary["plan"],
        "plan_hash": summary["plan_hash"],
        "mode": summary["mode"],
        "weeks": weeks,
        "budget": summary["budget"],
        "total_current": summary["total_current"],
        "total_recommended": summary["total_recommended"],
        "expected_kpi": summary.get("forecast_kpi_mean"),
        "expected_kpi_hdi_low": summary.get("forecast_kpi_hdi_low"),
        "expected_kpi_hdi_high": summary.get("forecast_kpi_hdi_high"),
        "forecast_start": summary.get("forecast_start"),
        "forecast_end": summary.get("forecast_end"),
        "forecast_uplift_mean": summary.get("forecast_uplift_mean"),
        "forecast_uplift_hdi_low": summary.get("forecast_uplift_hdi_low"),
        "forecast_uplift_hdi_high": summary.get("forecast_uplift_hdi_high"),
        "expected_contribution": contribution,
        "expected_contribution_hdi_low": summary["contribution_hdi_low"],
        "expected_contribution_hdi_high": summary["contribution_hdi_high"],
        "uplift_mean": summary["uplift_mean"],
        "prob_uplift_positive": summary["prob_uplift_positive"],
        "roas_recommended_total": summary["roas_recommended"],
    }
    channel = pd.DataFrame(
        {
            "channel": recs["channel"],
            "channel_group": recs.get("channel_group"),
            "current_spend": recs["current"],
            "recommended_spend": recs["recommended"],
            "change_pct": recs["change_pct"],
            "share_recommended": recs["share_recommended"],
            "contribution_mean": recs["contribution_mean"],
            "roas_recommended": recs["roas_recommended"],
            "mroas_recommended": recs["mroas_recommended"],
        }
    )
    for i, (k, v) in enumerate(head.items()):
        channel.insert(i, k, v)
    return channel


def append_history(conn: duckdb.DuckDBPyConnection, rows: pd.DataFrame) -> None:
    """Append one optimization's history rows (replacing them if the same optimization is re-recorded)."""
    ensure_monitoring(conn)
    with transaction(conn):
        conn.execute(
            "DELETE FROM monitoring.optimization_history WHERE optimization_id = ?",
            [str(rows["optimization_id"].iloc[0])],
        )
        conn.register("history_rows", rows)
        conn.execute("INSERT INTO monitoring.optimization_history BY NAME SELECT * FROM history_rows")
        conn.unregister("history_rows")


def scorecard_inputs(
    conn: duckdb.DuckDBPyConnection,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame], dict[str, str]]:
    """What :func:`mmm_pipeline.monitoring.scorecard.build_scorecard` reads: every recorded
    recommendation's ``plan_summary`` row with its ``trigger``, their ``weekly_allocations``, each
    market's modeling rows and each model's artifact folder (read briefly; the scoring runs outside)."""
    empty = pd.DataFrame(columns=["optimization_id", "market", "model_id", "created_at", "weeks"])
    if not relation_exists(conn, "optimization", "plan_summary"):
        return empty, pd.DataFrame(columns=["optimization_id", "week_index", "channel"]), {}, {}
    columns = {r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'optimization' AND table_name = 'plan_summary'"
    ).fetchall()}  # fmt: skip
    if "forecast_start" not in columns:  # a warehouse from before the plan forecast, not yet upgraded
        return empty, pd.DataFrame(columns=["optimization_id", "week_index", "channel"]), {}, {}
    promises = conn.execute(
        "SELECT p.*, (SELECT any_value(h.trigger) FROM monitoring.optimization_history h "
        "WHERE h.optimization_id = p.optimization_id) AS trigger FROM optimization.plan_summary p"
    ).df()
    allocations = conn.execute(
        "SELECT optimization_id, week_index, week, channel, current, recommended "
        "FROM optimization.weekly_allocations"
    ).df()
    rows = {}
    if relation_exists(conn, "marts", "fct_modeling_weekly"):
        rows = {
            m: conn.execute(
                "SELECT * FROM marts.fct_modeling_weekly WHERE market = ? ORDER BY week", [m]
            ).df()
            for m in promises["market"].unique()
        }
    artifacts = dict(conn.execute("SELECT model_id, artifact_path FROM models.model_runs").fetchall())
    return promises, allocations, rows, artifacts


def replace_scorecard(conn: duckdb.DuckDBPyConnection, card: pd.DataFrame, run_id: str | None) -> None:
    """Replace ``monitoring.recommendation_scorecard`` with ``card`` (call inside a transaction)."""
    conn.execute("DELETE FROM monitoring.recommendation_scorecard")
    if card.empty:
        return
    frame = card.assign(scored_at=_now(), dagster_run_id=run_id)
    conn.register("scorecard_rows", frame)
    conn.execute("INSERT INTO monitoring.recommendation_scorecard BY NAME SELECT * FROM scorecard_rows")
    conn.unregister("scorecard_rows")
