"""Monitoring assets: the champions' performance tracking and the drift events evaluated on it.

``performance_tracking`` reads each market's champion and modeling table briefly, forecasts the weeks
since the champion was fitted outside any DuckDB connection (:mod:`mmm_pipeline.monitoring.tracking`),
then replaces the champion's rows of ``monitoring.performance_tracking``. ``drift_events`` evaluates the
drift rules (``monitoring.drift_rules``) on those rows, opens an event when a rule fires and no event is
open for the market's champion, resolves events on recovery or a new champion, links each event to the
run the drift sensor started for it, and publishes the monitoring tables for BI (and for the sensor).

Both state the false-alarm rate per stable year (``monitoring.false_alarm_rate_per_year``) and each
champion's calibrated thresholds (:mod:`mmm_pipeline.monitoring.calibration`, on its CV errors or,
without CV, its in-sample residuals) in their metadata; the events' evidence repeats them.

Both are unpartitioned (they cover every market) and run in the feature runs (a new week arrived), in
the weekly update and in the refit runs (a new champion resets tracking and resolves its events).
"""

import json
from pathlib import Path

import dagster as dg
import pandas as pd

from mmm_pipeline.charts import markdown_image
from mmm_pipeline.features.data_version import modeling_fingerprint
from mmm_pipeline.model.registry import champion_runs, load_model
from mmm_pipeline.publish.bi import publish
from mmm_pipeline.tables import MONITORING_TABLES, ensure_monitoring
from mmm_pipeline.tables import ensure_models as ensure_models_schema

from ...config import ProjectConfig
from ...monitoring import drift, store
from ...monitoring.calibration import Calibration, calibrate
from ...monitoring.plots import scorecard_chart, tracking_chart
from ...monitoring.scorecard import build_scorecard, coverage
from ...monitoring.tracking import track
from ...warehouse import relation_exists, transaction
from ..metadata import markdown_table, table_metadata, ui_metadata
from ..resources import WRITER_POOL, WarehouseResource

#: Run tags written by the schedule and sensors (and read back by the assets).
TRIGGER_TAG = "mmm/trigger"
EVENT_TAG = "mmm/drift_event_id"
#: How many of the latest drift-triggered runs are searched for the runs of events not yet linked.
RUNS_TO_LINK = 200
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def publish_monitoring(conn, cfg: ProjectConfig) -> dict[str, int]:  # noqa: ANN001 - a DuckDB connection
    """Publish the monitoring tables as a new BI snapshot (the other published tables carried over)."""
    ensure_monitoring(conn)
    return publish(conn, MONITORING_TABLES, cfg.publish_dir, cfg.bi_database_path)


def champion_calibrations(
    errors: dict[str, dict | None], cfg: ProjectConfig
) -> dict[str, Calibration | None]:
    """Each market's champion's calibrated drift thresholds from its errors
    (:func:`~mmm_pipeline.monitoring.store.calibration_errors`, read beforehand: the simulation, numpy
    and well under a second per champion, runs outside any DuckDB connection). ``None``: no CV errors
    and no in-sample residuals to calibrate on."""
    settings = cfg.monitoring
    return {
        m: None
        if e is None
        else calibrate(
            settings.drift_rules,
            e["z"],
            e["forecast_cv"],
            e["groups"],
            settings.false_alarm_rate_per_year,
            settings.min_weeks_before_event,
            e["source"],
            e["reference_mape"],
        )
        for m, e in errors.items()
    }


def calibration_metadata(calibrations: dict[str, Calibration | None], cfg: ProjectConfig) -> dict:
    """Dagster metadata: the stated rate and each champion's thresholds (and what they rest on)."""
    settings = cfg.monitoring
    uncalibrated = {
        m: drift.uncalibrated(settings.drift_rules, c) for m, c in calibrations.items() if c is None
    }
    return {
        "false_alarm_rate_per_year": settings.false_alarm_rate_per_year,
        "min_weeks_before_event": settings.min_weeks_before_event,
        "calibration": dg.MetadataValue.json(
            {
                m: c.as_dict()
                if c is not None
                else {"note": f"no CV errors or in-sample residuals: rules {uncalibrated[m]} not evaluated"}
                for m, c in calibrations.items()
            }
        ),
    }


def build_monitoring_assets(cfg: ProjectConfig) -> list[dg.AssetsDefinition]:
    settings = cfg.monitoring
    if not settings.enabled:
        return []

    @dg.asset(
        group_name="monitoring",
        kinds={"python", "duckdb"},
        deps=["fct_modeling_weekly", "model_registry"],
        pool=WRITER_POOL,
        description=(
            "Each market's champion forecasts every week since it was fitted from the spend and controls "
            "that actually happened (adstock carried in), scored against the actual KPI: predictive mean "
            "and sd, 50%/94% intervals and in-interval flags, error, absolute % error, rolling MAPE, CRPS, "
            "and channels whose spend left the training range (monitoring.performance_tracking)."
        ),
        metadata={
            "table": "monitoring.performance_tracking",
            "rolling_weeks": settings.rolling_weeks,
            "false_alarm_rate_per_year": settings.false_alarm_rate_per_year,
        },
    )
    def performance_tracking(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        with warehouse.get_connection() as conn:
            ensure_models_schema(conn)
            ensure_monitoring(conn)
            champions = champion_runs(conn)[["market", "model_id", "train_end", "artifact_path"]]
            frames = {}
            if relation_exists(conn, "marts", "fct_modeling_weekly"):
                frames = {
                    m: conn.execute(
                        "SELECT * FROM marts.fct_modeling_weekly WHERE market = ? ORDER BY week", [m]
                    ).df()
                    for m in champions["market"]
                }
            events = conn.execute("SELECT model_id, detected_week FROM monitoring.drift_events").df()
            errors = {
                row.market: store.calibration_errors(conn, row.model_id) for row in champions.itertuples()
            }
        calibrations = champion_calibrations(errors, cfg)
        results = {}
        for row in champions.itertuples():
            if row.market not in frames:
                continue
            model = load_model(row.artifact_path)
            results[row.market] = (
                row.model_id,
                track(model, frames[row.market], row.market, pd.Timestamp(row.train_end).date(),
                      settings.rolling_weeks, settings.max_draws),
            )  # fmt: skip
        with warehouse.get_connection() as conn, transaction(conn):
            for market, (model_id, rows) in results.items():
                store.replace_tracking(conn, market, model_id, rows, context.run_id)
        metadata: dict[str, object] = {"markets": len(results), **calibration_metadata(calibrations, cfg)}
        summary = []
        for market, (model_id, rows) in results.items():
            if rows.empty:
                summary.append({"market": market, "model_id": model_id, "weeks_tracked": 0})
                continue
            last = rows.iloc[-1]
            summary.append({
                "market": market, "model_id": model_id, "weeks_tracked": len(rows), "last_week": last["week"],
                "rolling_mape": float(last["rolling_mape"]), "coverage_94": float(rows["in_94"].mean()),
                "mean_crps": float(rows["crps"].mean()),
            })  # fmt: skip
            metadata[f"chart_{market}"] = dg.MetadataValue.md(
                markdown_image(
                    tracking_chart(
                        rows,
                        title := f"{market}: champion {model_id} forecast vs actual",
                        events[events["model_id"] == model_id],
                    ),
                    title,
                )
            )
        table = pd.DataFrame(summary)
        metadata["summary"] = dg.MetadataValue.md(
            markdown_table(table, {"rolling_mape": ".1%", "coverage_94": ".0%", "mean_crps": ",.0f"})
            if len(table)
            else "no champion"
        )
        context.log.info(
            "tracking: "
            + (", ".join(f"{s['market']} {s['weeks_tracked']} week(s)" for s in summary) or "no champion yet")
        )
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        group_name="monitoring",
        kinds={"python", "duckdb"},
        deps=["performance_tracking"],
        pool=WRITER_POOL,
        description=(
            "Evaluates the drift rules (monitoring.drift_rules: interval misses, rolling MAPE, a changepoint "
            "test for a shift of the residuals, spend outside the training range) on each champion's "
            "tracking rows. Opens one "
            "event when a rule fires and none is open for the market's champion; resolves it after "
            "monitoring.recovery_weeks quiet weeks or when a new champion serves; records the refit run the "
            "drift sensor started for it (monitoring.drift_events). Publishes the monitoring tables for BI."
        ),
        metadata={
            "table": "monitoring.drift_events",
            "rules": ", ".join(r.name for r in settings.drift_rules),
            "false_alarm_rate_per_year": settings.false_alarm_rate_per_year,
            "min_weeks_before_event": settings.min_weeks_before_event,
        },
    )
    def drift_events(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        tags = context.run.tags
        opened, resolved = [], []
        with warehouse.get_connection() as conn:
            ensure_models_schema(conn)
            ensure_monitoring(conn)
            runs = champion_runs(conn)
            champions = dict(zip(runs["market"], runs["model_id"], strict=True))
            markets = sorted(set(champions) | {e["market"] for e in store.open_events(conn)})
            # Each market's champion lineage since its latest event (drift.lineage): with a refit every
            # week, one champion alone never tracks enough weeks for a rule (or min_weeks) to be met.
            inputs = {
                m: (drift.lineage(store.market_tracking(conn, m), store.last_event_week(conn, m))
                    if m in champions else pd.DataFrame(),
                    store.open_events(conn, m))
                for m in markets
            }  # fmt: skip
            errors = {m: store.calibration_errors(conn, model_id) for m, model_id in champions.items()}
        calibrations = champion_calibrations(errors, cfg)
        decisions = {
            m: drift.decide(
                settings.drift_rules,
                rows,
                m,
                champions.get(m),
                events,
                settings.recovery_weeks,
                calibrations.get(m),
                settings.min_weeks_before_event,
            )
            for m, (rows, events) in inputs.items()
        }
        with warehouse.get_connection() as conn:
            with transaction(conn):
                # This run was started for an event: record it before anything else.
                for event_id in filter(None, tags.get(EVENT_TAG, "").split(",")):
                    store.set_event_run(conn, event_id, context.run_id, "STARTED")
                for market, decision in decisions.items():
                    rows = inputs[market][0]
                    last_week = pd.Timestamp(rows["week"].iloc[-1]).date() if len(rows) else None
                    for event_id, resolution in decision.resolve:
                        new_model = champions.get(market) if resolution == "new_champion" else None
                        store.resolve_event(conn, event_id, resolution, last_week, new_model)
                        resolved.append(f"{event_id} ({resolution})")
                    if decision.open is not None:
                        store.insert_event(conn, decision.open)
                        opened.append(decision.open)
                # Link events to the runs the sensor started (their EVENT_TAG lists the event ids: one
                # market's event, or a pooled group's events of one tick), with their latest status.
                unlinked = store.events_without_run(conn)
                if unlinked:
                    drift_runs = context.instance.get_runs(
                        filters=dg.RunsFilter(tags={TRIGGER_TAG: "drift"}), limit=RUNS_TO_LINK
                    )
                    started = {
                        event_id: run
                        for run in reversed(drift_runs)  # newest last: it wins
                        for event_id in run.tags.get(EVENT_TAG, "").split(",")
                    }
                    for event_id in unlinked:
                        if (run := started.get(event_id)) is not None:
                            status = run.status.value if run.run_id != context.run_id else "STARTED"
                            store.set_event_run(conn, event_id, run.run_id, status)
            events = conn.execute("SELECT * FROM monitoring.drift_events ORDER BY detected_at DESC").df()
            counts = publish_monitoring(conn, cfg)
        for event in opened:
            context.log.warning(
                f"drift in market {event['market']} (champion {event['model_id']}), "
                f"week {event['detected_week']}: {event['summary']} -> event {event['event_id']} "
                "(the drift sensor starts a refit)"
            )
        for text in resolved:
            context.log.info(f"drift event resolved: {text}")
        shown = events[["event_id", "market", "model_id", "rule", "detected_week", "status", "resolution",
                        "dagster_run_id", "summary"]] if len(events) else events  # fmt: skip
        return dg.MaterializeResult(
            # The events' content: an update that changes no event leaves the reports that read it current.
            data_version=dg.DataVersion(modeling_fingerprint(events)),
            metadata={
                "open_events": int((events["status"] == drift.OPEN).sum()) if len(events) else 0,
                "opened_now": dg.MetadataValue.md(
                    "\n".join(f"- {e['event_id']}: {e['summary']}" for e in opened) or "none"
                ),  # fmt: skip
                "resolved_now": dg.MetadataValue.md("\n".join(f"- {r}" for r in resolved) or "none"),
                "firing_now": dg.MetadataValue.json(
                    {m: [f.rule for f in d.firings] for m, d in decisions.items()}
                ),
                # what the rules read: each market's champion lineage since its latest event
                "tracked_weeks_since_last_event": dg.MetadataValue.json(
                    {m: len(rows) for m, (rows, _) in inputs.items()}
                ),
                "events": dg.MetadataValue.md(markdown_table(shown.head(20)) if len(shown) else "none"),
                **calibration_metadata(calibrations, cfg),
                "published": dg.MetadataValue.json(counts),
                **({"dagster/row_count": len(events)} if len(events) else {}),
            },
        )

    @dg.asset(
        group_name="monitoring",
        kinds={"python", "duckdb"},
        deps=["drift_events", *(["budget_recommendation"] if cfg.optimization.enabled else [])],
        pool=WRITER_POOL,
        description=(
            "Did the last recommendations deliver? For every recorded recommendation: what it promised for "
            "its plan weeks (the model's forecast of the KPI and of the uplift over the previous "
            "allocation, 94% HDIs) against what happened once those weeks landed (the actual KPI; the "
            "recommendation's model forecasting the same weeks under the previous allocation, controls as "
            "landed, as the counterfactual; whether the spend followed the recommendation), whether the "
            "actual fell inside the promised interval, and the coverage of the promised intervals so far "
            "(monitoring.recommendation_scorecard). Publishes the monitoring tables for BI."
        ),
        metadata={"table": "monitoring.recommendation_scorecard", "nominal_coverage": 0.94},
    )
    def recommendation_scorecard(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        with warehouse.get_connection() as conn:
            ensure_models_schema(conn)
            ensure_monitoring(conn)
            promises, allocations, rows, artifacts = store.scorecard_inputs(conn)
            previous = conn.execute("SELECT * FROM monitoring.recommendation_scorecard").df()
        loaded: dict[str, object] = {}

        def load(model_id: str):  # noqa: ANN202 - a StoredModel or None
            path = artifacts.get(model_id)
            if model_id not in loaded:
                loaded[model_id] = load_model(path) if path and Path(path).exists() else None
            return loaded[model_id]

        card = build_scorecard(promises, allocations, rows, load, previous, settings.max_draws)
        with warehouse.get_connection() as conn:
            with transaction(conn):
                store.replace_scorecard(conn, card, context.run_id)
            counts = publish_monitoring(conn, cfg)
        summary = coverage(card)
        context.log.info(
            f"scorecard: {len(card)} recommendation(s), "
            f"{int((card['status'] == 'complete').sum())} complete, "
            f"{len(loaded)} model(s) loaded for counterfactuals"
        )
        shown = card.sort_values("created_at", ascending=False)[
            ["optimization_id", "market", "first_week", "last_week", "status", "promised_kpi_mean",
             "promised_kpi_hdi_low", "promised_kpi_hdi_high", "actual_kpi", "in_interval",
             "counterfactual_kpi_mean", "promised_uplift_mean", "realized_uplift_mean", "followed"]
        ]  # fmt: skip
        metadata: dict[str, object] = {
            **table_metadata(shown, "monitoring.recommendation_scorecard"),
            "dagster/row_count": len(card),
            "coverage": dg.MetadataValue.md(
                markdown_table(
                    summary, {"coverage": ".0%", "coverage_followed": ".0%", "uplift_coverage": ".0%"}
                )
                if len(summary)
                else "no recommendation yet"
            ),
            "models_loaded": len(loaded),
            "published": dg.MetadataValue.json(counts),
        }
        for market, group in card.groupby("market"):
            if (group["status"] == "complete").sum() >= 1:
                title = f"{market}: promised vs actual KPI of each recommendation's weeks"
                metadata[f"chart_{market}"] = dg.MetadataValue.md(
                    markdown_image(scorecard_chart(group, title), title)
                )
        # The scored results only: a new promise waiting for its weeks (another market's recommendation,
        # recorded by its own run) is not new data for the reports, whose own market's promise comes
        # with their own budget_recommendation; a week that lands and scores a promise is.
        scored = card[card["status"] == "complete"]
        return dg.MaterializeResult(
            data_version=dg.DataVersion(modeling_fingerprint(scored)),
            metadata=ui_metadata(metadata),
        )

    return [performance_tracking, drift_events, recommendation_scorecard]


def evidence_summary(evidence: str, limit: int = 250) -> str:
    """A drift event's evidence JSON shortened for a run tag."""
    text = json.dumps(json.loads(evidence), separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 3] + "..."
