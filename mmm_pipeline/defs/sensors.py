"""Sensors of continuous operation: new data, follow-up runs, drift.

- ``new_data_sensor``: fingerprints the landing files (path, size, mtime; then SHA-256) and keeps them in
  its cursor. New content (any name) is one delivery: one ingestion run, whose run key is derived from
  the delivery's content hashes, so identical files delivered again start nothing.
- ``follow_up_sensor`` (a run-status sensor): when an ingestion run succeeds, one feature run per
  contiguous range of the week partitions Dagster then reports missing or stale
  (:func:`mmm_pipeline.defs.staleness.stale_week_ranges`: the scan observed a new data version for each
  week whose landed content changed; the same answer as ``mmm-pipeline run`` and the UI); when a feature
  run or the weekly update succeeds, one run per market that hashes what its fit reads and which market
  conditions hold again (``market_training_data``, ``market_conditions``).
- ``stale_model_sensor``: what Dagster reports missing or stale in the model job
  (:func:`mmm_pipeline.defs.staleness.model_plans`, the same decision ``mmm-pipeline run`` takes and
  the UI shows as "unsynced"), run in ``mmm-pipeline run``'s order: each market's own part in a run per
  market, then every market's monitoring once, then each market's report; nothing for a market whose
  model is current (``schedule.refit``).
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
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.storage.tags import RUN_KEY_TAG

from mmm_pipeline.ingest.ingestion import landing_fingerprints

from ..config import ProjectConfig
from .assets.model import GROUP_KEYS, MARKETS, group_run_tags
from .assets.monitoring import EVENT_TAG, TRIGGER_TAG, evidence_summary
from .jobs import FEATURES_JOB, INGEST_JOB, MODEL_JOB, WEEKLY_JOB
from .staleness import (
    INPUTS_KEY,
    OBSERVED_KEYS,
    MarketPlan,
    asset_names,
    model_phases,
    model_plans,
    stale_week_ranges,
)

NEW_DATA_SENSOR = "new_data_sensor"
FOLLOW_UP_SENSOR = "follow_up_sensor"
DRIFT_SENSOR = "drift_sensor"
STALE_MODEL_SENSOR = "stale_model_sensor"
#: Drift events remembered in the drift sensor's cursor (the run key de-duplicates older ones too).
CURSOR_EVENTS = 500


def _status(enabled: bool) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if enabled else dg.DefaultSensorStatus.STOPPED


def scan_fingerprints(landing: Path, known: dict[str, list]) -> dict[str, list]:
    """``{relative path: [size, mtime_ns, sha256]}`` of every landing entry, for the cursor (JSON): the
    scan's own change detection (:func:`landing_fingerprints`), which re-hashes only what changed."""
    return {e.rel: list(e.fingerprint) for e in landing_fingerprints(landing, known)}


def build_sensors(
    cfg: ProjectConfig, jobs: list[dg.UnresolvedAssetJobDefinition]
) -> list[dg.SensorDefinition]:
    """The three sensors; ``jobs``: the code location's jobs (:func:`mmm_pipeline.defs.jobs.build_jobs`)."""
    sensors_cfg = cfg.sensors
    by_name = {job.name: job for job in jobs}
    # pooling: partial: the group's fit, CV and registration run as one run over every market's partition.
    pooled = cfg.model.spec.pooling == "partial"

    @dg.sensor(
        name=NEW_DATA_SENSOR,
        job=by_name[INGEST_JOB],
        minimum_interval_seconds=sensors_cfg.new_data.interval_seconds,
        default_status=_status(sensors_cfg.new_data.enabled),
        description=(
            "Watches the landing folder. New content (by SHA-256, whatever the file name) is one delivery: "
            "one ingestion run (run key = hash of the delivery's content hashes). Identical files delivered "
            "again start nothing. The ingestion run observes a new data version for each week whose "
            "landed content changed; the follow-up sensor then rebuilds the weeks Dagster reports stale."
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
        monitored_jobs=[by_name[INGEST_JOB], by_name[FEATURES_JOB], by_name[WEEKLY_JOB]],
        request_jobs=[by_name[FEATURES_JOB], by_name[MODEL_JOB]],
        default_status=_status(sensors_cfg.new_data.enabled or cfg.schedule.enabled),
        minimum_interval_seconds=30,
        description=(
            "After a successful ingestion run: one feature run per contiguous range of the week partitions "
            "Dagster reports missing or stale (each also refreshes tracking and drift events). After a "
            "successful feature run or weekly update: one run per market that hashes what its fit reads "
            "and which market conditions hold (market_training_data, market_conditions), so the "
            "stale_model_sensor sees which models and recommendations are out of date (if schedule.refit)."
        ),
    )
    def follow_up_sensor(context: dg.RunStatusSensorContext):
        run = context.dagster_run
        trigger = run.tags.get(TRIGGER_TAG, "manual")
        if run.job_name == INGEST_JOB:
            repository = context.repository_def
            assert repository is not None  # a sensor of a code location always has its repository
            job_keys = repository.get_job(FEATURES_JOB).asset_layer.selected_asset_keys
            ranges = stale_week_ranges(context.instance, repository.asset_graph, job_keys)
            if not ranges:
                return dg.SkipReason(f"after run {run.run_id[:8]} every week's features are current")
            return [
                dg.RunRequest(
                    run_key=f"{run.run_id}:{r.first}..{r.last}",
                    job_name=FEATURES_JOB,
                    tags={
                        "dagster/asset_partition_range_start": r.first,
                        "dagster/asset_partition_range_end": r.last,
                        TRIGGER_TAG: trigger,
                        "mmm/after_run": run.run_id,
                        **({"mmm/delivery": run.tags["mmm/delivery"]} if "mmm/delivery" in run.tags else {}),
                    },
                )
                for r in ranges
            ]
        if run.job_name in (FEATURES_JOB, WEEKLY_JOB) and cfg.schedule.refit:
            markets = context.instance.get_dynamic_partitions(MARKETS.name)
            repository = context.repository_def
            observed = [k for k in OBSERVED_KEYS if repository is None or repository.asset_graph.has(k)]
            return [
                dg.RunRequest(
                    run_key=f"{run.run_id}:{market}",
                    job_name=MODEL_JOB,
                    partition_key=market,
                    asset_selection=observed,
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
        # A pooled group refits as one unit: every fresh event of the tick goes into one run over the
        # group (a national shock opens an event in many markets at once; one refit answers them all);
        # what lies below the group in each market follows through the stale-model sensor.
        batches = [fresh] if pooled else [[event] for event in fresh]
        requests = [_drift_request(batch, context.instance if pooled else None) for batch in batches]
        for request, batch in zip(requests, batches, strict=True):
            context.log.info(
                f"drift event(s) {request.tags[EVENT_TAG]}: refit of "
                + (f"the market group ({'; '.join(str(e['summary']) for e in batch)})" if pooled
                   else f"{batch[0]['market']} ({batch[0]['summary']})")
            )  # fmt: skip
        requested = (requested + [e["event_id"] for e in fresh])[-CURSOR_EVENTS:]
        context.update_cursor(json.dumps(requested))
        return requests

    @dg.sensor(
        name=STALE_MODEL_SENSOR,
        job=by_name[MODEL_JOB],
        minimum_interval_seconds=60,
        default_status=_status(cfg.schedule.refit and (cfg.schedule.enabled or sensors_cfg.new_data.enabled)),
        description=(
            "Runs exactly what Dagster reports missing or stale in refit_model (the UI's 'unsynced'): the "
            "fit when what it reads (market_training_data) or the model config changed, the "
            "recommendation when a plan file changed, the report when its settings changed, and what lies "
            "below. The same decision and order as `mmm-pipeline run`: one run per market of its own part, "
            "then (no model run in progress) one run of every market's monitoring, then one run per market "
            "of its report. No run for a current market, none twice for the same state."
        ),
    )
    def stale_model_sensor(context: dg.SensorEvaluationContext):
        plans = stale_model_requests(context.instance, context.repository_def)
        if not plans:
            return dg.SkipReason("every market's model, recommendation and report are current")
        busy = _markets_in_progress(context.instance)
        group = [p for p in plans if set(p.selection) & set(GROUP_KEYS)] if pooled else []
        if group:  # the group's fit, CV and registration first, in one run; what lies below next tick
            if busy:
                return dg.SkipReason(f"market(s) {', '.join(sorted(busy))} have a model run in progress")
            reasons = "; ".join(f"{p.market}: {p.reasons()}" for p in group)
            context.log.info(f"market group: {reasons}")
            selection = sorted({k for p in group for k in p.selection if k in GROUP_KEYS})
            graph = context.repository_def.asset_graph
            state = "|".join(_state_key(context.instance, graph, p) for p in group)
            tags = {**group_run_tags(context.instance), TRIGGER_TAG: "stale", "mmm/stale": reasons[:250]}
            return [
                dg.RunRequest(
                    run_key="group-" + hashlib.sha256(state.encode()).hexdigest()[:16],
                    asset_selection=selection,
                    tags=tags,
                )
            ]
        return _phased_requests(context, plans, busy)

    return [new_data_sensor, follow_up_sensor, drift_sensor, stale_model_sensor]


def stale_model_requests(
    instance: dg.DagsterInstance, repository: dg.RepositoryDefinition
) -> list[MarketPlan]:
    """The markets with something to run, as :func:`model_plans` decides for the whole model job."""
    job_keys = repository.get_job(MODEL_JOB).asset_layer.selected_asset_keys
    markets = instance.get_dynamic_partitions(MARKETS.name)
    plans = model_plans(instance, repository.asset_graph, job_keys, markets)
    return [p for p in plans if p.selection]


def _phased_requests(
    context: dg.SensorEvaluationContext, plans: list[MarketPlan], busy: set[str]
) -> list[dg.RunRequest] | dg.SkipReason:
    """The stale model work in the runner's order (:func:`model_phases`), one phase per tick:

    1. each market's own part (fit, CV, registry, recommendation, ...), one run per market;
    2. when no model run is in progress any more, the unpartitioned assets (every market's monitoring)
       in one run: in every market's run they would be computed again for all markets each time, one
       writer after another, part of the time on markets whose new champion is not registered yet;
    3. then what each market's part reads of them (its report), one run per market: once the
       monitoring is current, nothing stale lies below it, so this is the first phase again.

    A market whose own run was already launched for its present state (the run failed) does not hold
    back the other markets' monitoring and reports, as in ``mmm-pipeline run``; its own phases wait for a
    new state (new data, a changed config) or a run started by hand."""
    instance, graph = context.instance, context.repository_def.asset_graph
    keys = {plan.market: _state_key(instance, graph, plan) for plan in plans}
    phases = model_phases(graph, {plan.market: plan.selection for plan in plans})
    fresh = [p for p in plans if p.market in phases.own and not _requested(instance, keys[p.market])]
    if fresh:
        requests = []
        for plan in fresh:
            if plan.market in busy:
                context.log.info(f"market {plan.market}: a model run is in progress; deciding after it")
                continue
            own = phases.own[plan.market]
            context.log.info(f"market {plan.market}: {plan.reasons()}: {asset_names(own)}")
            requests.append(
                dg.RunRequest(
                    run_key=keys[plan.market],
                    partition_key=plan.market,
                    asset_selection=list(own),
                    tags={TRIGGER_TAG: "stale", "mmm/stale": plan.reasons()[:250]},
                )
            )
        return requests or dg.SkipReason(f"market(s) {', '.join(sorted(busy))} have a model run in progress")
    if busy:
        return dg.SkipReason(
            f"market(s) {', '.join(sorted(busy))} have a model run in progress: every market's "
            "monitoring and the reports run after the markets' own runs"
        )
    # A market whose own part is still stale after its run failed changed nothing the monitoring reads:
    # the others' monitoring and reports go ahead without it.
    failed = set(phases.own)
    done = [plan for plan in plans if plan.market not in failed]
    phases = model_phases(graph, {plan.market: plan.selection for plan in done})
    if phases.shared:
        state = "|".join(keys[plan.market] for plan in done)
        context.log.info(f"all markets: {asset_names(phases.shared)} once, after every market's own run")
        return [
            dg.RunRequest(
                run_key="shared-" + hashlib.sha256(state.encode()).hexdigest()[:16],
                asset_selection=list(phases.shared),
                tags={TRIGGER_TAG: "stale", "mmm/stale": "; ".join(p.reasons() for p in done)[:250]},
            )
        ]
    return dg.SkipReason(
        f"market(s) {', '.join(sorted(failed))}: a run for this state was launched already (see its log)"
    )


def _requested(instance: dg.DagsterInstance, run_key: str) -> bool:
    """Whether a run was already launched for ``run_key`` (the daemon skips a request whose key it used)."""
    return bool(instance.get_run_ids(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))


def _markets_in_progress(instance: dg.DagsterInstance) -> set[str]:
    runs = instance.get_runs(
        dg.RunsFilter(
            job_name=MODEL_JOB,
            statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                      dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
        )
    )  # fmt: skip
    busy = {run.tags["dagster/partition"] for run in runs if "dagster/partition" in run.tags}
    # A pooled group's run (a partition range) or a run of the unpartitioned monitoring (no partition)
    # covers every market.
    if any("dagster/partition" not in run.tags for run in runs):
        busy |= set(instance.get_dynamic_partitions(MARKETS.name))
    return busy


def _state_key(instance: dg.DagsterInstance, asset_graph: BaseAssetGraph, plan: MarketPlan) -> str:
    """A run key for this market in this state: the latest event of each root and of the market's inputs.
    The same stale state (say a run that failed) is not requested twice; any new materialization is a
    new state."""
    parts = [plan.market, *(k.to_user_string() for k in plan.selection), plan.reasons()]
    for key in sorted({*plan.roots, INPUTS_KEY}):
        partition = plan.market if asset_graph.get(key).is_partitioned else None
        record = instance.get_latest_data_version_record(key, False, partition)
        parts.append(str(record.storage_id if record else None))
    return "stale-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


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


def _drift_request(events: list[dict], group_of: dg.DagsterInstance | None) -> dg.RunRequest:
    """The refit run for open drift ``events``: one market's event (its partition, run key = event id),
    or with ``group_of`` (pooling: partial) the events of a tick in one run over every market's
    partition. The event tags join the events' values with commas (``EVENT_TAG`` lists the event ids:
    the drift assets link each event to the run by it)."""

    def joined(key: str) -> str:
        return ",".join(dict.fromkeys(str(e[key] or "") for e in events))

    ids = joined("event_id")
    if group_of is None:
        scope: dict = {"run_key": ids, "partition_key": events[0]["market"]}
    else:
        scope = {
            "run_key": "drift-group-" + hashlib.sha256(ids.encode()).hexdigest()[:16],
            "asset_selection": list(GROUP_KEYS),
            "tags": group_run_tags(group_of),
        }
    tags = {
        **scope.pop("tags", {}),
        TRIGGER_TAG: "drift",
        EVENT_TAG: ids,
        "mmm/drift_rule": joined("rule"),
        "mmm/drift_rules_fired": ",".join(dict.fromkeys(str(e["rules_fired"] or e["rule"]) for e in events)),
        "mmm/drift_model_id": joined("model_id"),
        "mmm/drift_detected_week": ",".join(
            dict.fromkeys(pd.Timestamp(e["detected_week"]).date().isoformat() for e in events)
        ),
        "mmm/drift_summary": "; ".join(str(e["summary"] or "") for e in events)[:250],
    }
    if len(events) == 1:
        tags["mmm/drift_evidence"] = evidence_summary(events[0]["evidence"] or "{}")
    return dg.RunRequest(**scope, tags=tags)
