"""Sensors of continuous operation: new data, follow-up runs, drift.

- ``new_data_sensor``: fingerprints the landing files (path, size, mtime; then SHA-256) and keeps them in
  its cursor. New content (any name) is one delivery: one ingestion run, whose run key is derived from
  the delivery's content hashes, so identical files delivered again start nothing.
- ``follow_up_sensor`` (a run-status sensor): when an ingestion run succeeds, one feature run per
  contiguous range of the weeks it queued (read from the run's ``landing_files`` materialization: the
  weeks can only be known after the files were read, de-duplicated and compared with what was there);
  when the weekly update succeeds, a refit per market (``schedule.refit``).
- ``drift_sensor``: reads the published ``drift_events`` relation (through the read-only BI catalog,
  never the working warehouse, so it never waits for or blocks the DuckDB writer) and starts one
  refit + reoptimization run per open event, tagged with the rule and its evidence; the run key is
  the event id.

None of them writes to DuckDB; the assets of the runs they start record what happened.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from mmm_pipeline.ingest.landing import discover, sha256_of

from ..config import ProjectConfig
from .assets.ingestion import PENDING_RANGES_KEY
from .assets.model import MARKETS
from .assets.monitoring import EVENT_TAG, TRIGGER_TAG, evidence_summary
from .jobs import FEATURES_JOB, INGEST_JOB, MODEL_JOB, WEEKLY_JOB

NEW_DATA_SENSOR = "new_data_sensor"
FOLLOW_UP_SENSOR = "follow_up_sensor"
DRIFT_SENSOR = "drift_sensor"
#: Drift events remembered in the drift sensor's cursor (the run key de-duplicates older ones too).
CURSOR_EVENTS = 500


def _status(enabled: bool) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if enabled else dg.DefaultSensorStatus.STOPPED


def scan_fingerprints(landing: Path, known: dict[str, list]) -> dict[str, list]:
    """``{relative path: [size, mtime_ns, sha256]}`` of every landing file; the hash is recomputed only
    for files whose size or mtime changed since ``known``."""
    out = {}
    for _kind, path in discover(landing):
        rel = path.relative_to(landing).as_posix()
        stat = path.stat()
        previous = known.get(rel)
        if previous and previous[0] == stat.st_size and previous[1] == stat.st_mtime_ns:
            out[rel] = previous
        else:
            out[rel] = [stat.st_size, stat.st_mtime_ns, sha256_of(path)]
    return out


def build_sensors(
    cfg: ProjectConfig, jobs: list[dg.UnresolvedAssetJobDefinition]
) -> list[dg.SensorDefinition]:
    """The three sensors; ``jobs``: the code location's jobs (:func:`mmm_pipeline.defs.jobs.build_jobs`)."""
    sensors_cfg = cfg.sensors
    by_name = {job.name: job for job in jobs}

    @dg.sensor(
        name=NEW_DATA_SENSOR,
        job=by_name[INGEST_JOB],
        minimum_interval_seconds=sensors_cfg.new_data.interval_seconds,
        default_status=_status(sensors_cfg.new_data.enabled),
        description=(
            "Watches the landing folder. New content (by SHA-256, whatever the file name) is one delivery: "
            "one ingestion run (run key = hash of the delivery's content hashes). Identical files delivered "
            "again start nothing. The ingestion run queues exactly the weeks the delivery touches; the "
            "follow-up sensor then rebuilds those weeks."
        ),
    )
    def new_data_sensor(context: dg.SensorEvaluationContext):
        state = json.loads(context.cursor) if context.cursor else {"files": {}, "hashes": []}
        files = scan_fingerprints(cfg.landing_dir, state["files"])
        seen = set(state["hashes"])
        new = sorted({(fp[2], rel) for rel, fp in files.items() if fp[2] not in seen})
        hashes = sorted({sha for sha, _ in new})
        state = {"files": files, "hashes": sorted(seen | set(hashes))}
        context.update_cursor(json.dumps(state, sort_keys=True))
        if not hashes:
            return dg.SkipReason("no new landing content")
        key = hashlib.sha256("|".join(hashes).encode()).hexdigest()[:16]
        names = ", ".join(rel for _, rel in new)
        context.log.info(f"new delivery {key}: {len(new)} file(s): {names}")
        return dg.RunRequest(
            run_key=f"delivery-{key}",
            tags={
                TRIGGER_TAG: "new_data",
                "mmm/delivery": key,
                "mmm/files": names if len(names) <= 250 else names[:247] + "...",
            },  # fmt: skip
        )

    @dg.run_status_sensor(
        name=FOLLOW_UP_SENSOR,
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[by_name[INGEST_JOB], by_name[WEEKLY_JOB]],
        request_jobs=[by_name[FEATURES_JOB], by_name[MODEL_JOB]],
        default_status=_status(sensors_cfg.new_data.enabled or cfg.schedule.enabled),
        minimum_interval_seconds=30,
        description=(
            "After a successful ingestion run: one feature run per contiguous range of the weeks it queued "
            "(each also refreshes tracking and drift events). After a successful weekly update: a refit, "
            "CV, optimization and publishing run per market (if schedule.refit)."
        ),
    )
    def follow_up_sensor(context: dg.RunStatusSensorContext):
        run = context.dagster_run
        trigger = run.tags.get(TRIGGER_TAG, "manual")
        if run.job_name == INGEST_JOB:
            ranges = pending_ranges(context.instance, run.run_id)
            if not ranges:
                return dg.SkipReason(f"run {run.run_id[:8]} queued no week")
            return [
                dg.RunRequest(
                    run_key=f"{run.run_id}:{start}..{end}",
                    job_name=FEATURES_JOB,
                    tags={
                        "dagster/asset_partition_range_start": start,
                        "dagster/asset_partition_range_end": end,
                        TRIGGER_TAG: trigger,
                        "mmm/after_run": run.run_id,
                        **({"mmm/delivery": run.tags["mmm/delivery"]} if "mmm/delivery" in run.tags else {}),
                    },
                )
                for start, end in ranges
            ]
        if run.job_name == WEEKLY_JOB and cfg.schedule.refit:
            markets = context.instance.get_dynamic_partitions(MARKETS.name)
            return [
                dg.RunRequest(
                    run_key=f"{run.run_id}:{market}",
                    job_name=MODEL_JOB,
                    partition_key=market,
                    tags={
                        TRIGGER_TAG: trigger,
                        "mmm/after_run": run.run_id,
                        **({"mmm/week": run.tags["mmm/week"]} if "mmm/week" in run.tags else {}),
                    },  # fmt: skip
                )
                for market in markets
            ]
        return dg.SkipReason(f"nothing follows {run.job_name}")

    @dg.sensor(
        name=DRIFT_SENSOR,
        job=by_name[MODEL_JOB],
        minimum_interval_seconds=sensors_cfg.drift.interval_seconds,
        default_status=_status(sensors_cfg.drift.enabled),
        description=(
            "Reads the published drift_events table (through the read-only BI catalog) and starts one "
            "refit + reoptimization run per open drift event (run key = event id), tagged with the rule "
            "and its evidence. While the same drift persists the event stays open and nothing new "
            "starts; a new event needs recovery or a new champion first (rules in monitoring.drift_rules)."
        ),
    )
    def drift_sensor(context: dg.SensorEvaluationContext):
        requested = json.loads(context.cursor) if context.cursor else []
        events = read_open_events(cfg)
        fresh = [e for e in events if e["event_id"] not in requested and pd.isna(e["dagster_run_id"])]
        if not fresh:
            return dg.SkipReason(f"{len(events)} open drift event(s), each with its run already requested")
        requests = []
        for event in fresh:
            requests.append(
                dg.RunRequest(
                    run_key=event["event_id"],
                    partition_key=event["market"],
                    tags={
                        TRIGGER_TAG: "drift",
                        EVENT_TAG: event["event_id"],
                        "mmm/drift_rule": event["rule"],
                        "mmm/drift_rules_fired": event["rules_fired"] or event["rule"],
                        "mmm/drift_model_id": event["model_id"],
                        "mmm/drift_detected_week": pd.Timestamp(event["detected_week"]).date().isoformat(),
                        "mmm/drift_summary": (event["summary"] or "")[:250],
                        "mmm/drift_evidence": evidence_summary(event["evidence"] or "{}"),
                    },
                )
            )
            context.log.info(
                f"drift event {event['event_id']} ({event['summary']}): refit of {event['market']}"
            )
        requested = (requested + [e["event_id"] for e in fresh])[-CURSOR_EVENTS:]
        context.update_cursor(json.dumps(requested))
        return requests

    return [new_data_sensor, follow_up_sensor, drift_sensor]


def pending_ranges(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """The week ranges an ingestion run queued (its ``landing_files`` materialization's metadata)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("landing_files")), limit=20
    ).records
    for record in records:
        if record.run_id == run_id:
            value = record.asset_materialization.metadata.get(PENDING_RANGES_KEY)
            if value is None:
                return []
            return [tuple(r) for r in value.value]
    return []


def read_open_events(cfg: ProjectConfig) -> list[dict]:
    """Open drift events from the published BI catalog (nothing before the first publication)."""
    if not cfg.bi_database_path.exists():
        return []
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        if not bi.execute("SELECT count(*) FROM published_tables WHERE name = 'drift_events'").fetchone()[0]:
            return []
        frame = bi.execute(
            "SELECT event_id, market, model_id, rule, rules_fired, detected_week, summary, evidence, "
            "dagster_run_id FROM drift_events WHERE status = 'open' ORDER BY detected_at"
        ).df()
    return frame.to_dict("records")
