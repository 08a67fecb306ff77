"""Headless runs of the Dagster definitions, for cron, CI and the CLI.

Runs go to the project's own Dagster instance (``paths.dagster_home``, or ``$DAGSTER_HOME``), so they
show up in the UI beside runs launched there.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from dagster import DagsterInstance

from mmm_pipeline.features.data_version import modeling_fingerprint, training_rows
from mmm_pipeline.ingest.calendar import last_complete_week
from mmm_pipeline.ingest.ingestion import pending_week_ranges
from mmm_pipeline.model.refit import config_hash
from mmm_pipeline.model.registry import champion, latest_run
from mmm_pipeline.optimize.recommendations import optimization_is_current, plans_in_force

from .config import ProjectConfig
from .definitions import build_definitions
from .defs.assets.model import MARKETS
from .defs.execution import execute_in_location
from .defs.jobs import FEATURES_JOB, INGEST_JOB, MODEL_JOB
from .defs.recovery import REDO_OF_TAG, process_tags, recover_dead_runs
from .defs.resources import WRITER_POOL, WarehouseResource
from .optimize import Plan, PlanError, load_scenarios
from .report import report_is_current
from .warehouse import relation_exists

#: How far a run goes: ``ingest`` only, ``features`` (ingest + feature tables), ``model`` (+ refits).
STAGES = ("ingest", "features", "model")

INSTANCE_YAML = f"""# Written by mmm-pipeline; the CLI and `mmm-pipeline ui` share this instance.
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1  # the {WRITER_POOL} pool: DuckDB has one writer
# With the daemon running (`mmm-pipeline ui`): fail runs whose worker never started, and free the pool
# slots a run still holds a minute after it ended. Dead in-progress runs are found by mmm-pipeline
# itself (defs/recovery.py): Dagster's monitoring cannot tell whether a local run's process lives.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  free_slots_after_run_end_seconds: 60
"""


#: The executive report: written after each refit, and when a market's newest report is out of date.
REPORT_KEY = dg.AssetKey("executive_report")

#: Console logging for headless runs: our progress messages, not Dagster's step-by-step debug events.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


class PipelineRunError(RuntimeError):
    """A run that failed; the message says which step or check and why."""


def project_instance(cfg: ProjectConfig) -> DagsterInstance:
    """The project's persistent Dagster instance (created on first use)."""
    home = Path(os.environ.get("DAGSTER_HOME") or cfg.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config_file = home / "dagster.yaml"
    if not config_file.exists():
        config_file.write_text(INSTANCE_YAML)
    return DagsterInstance.from_config(str(home))


@dataclass
class RunSummary:
    runs: list[tuple[str, str, bool, str]] = field(default_factory=list)  # job, run id, success, scope
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_failures(result: dg.ExecuteInProcessResult, severity: dg.AssetCheckSeverity) -> list[str]:
    out = []
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed and evaluation.severity == severity:
            details = "\n".join(
                str(v.value) if isinstance(v, dg.MarkdownMetadataValue) else f"{k}: {v.value}"
                for k, v in evaluation.metadata.items()
            )
            asset = evaluation.asset_key.to_user_string()
            out.append(
                f"check '{evaluation.check_name}' on {asset} failed" + (f":\n{details}" if details else "")
            )
    return out


def _record(
    summary: RunSummary, job: str, result: dg.ExecuteInProcessResult, scope: str, prefix: str = ""
) -> None:
    summary.runs.append((job, result.run_id, result.success, scope))
    summary.problems += [prefix + p for p in _problems(result)]
    summary.warnings += [prefix + w for w in _check_failures(result, dg.AssetCheckSeverity.WARN)]


def _problems(result: dg.ExecuteInProcessResult) -> list[str]:
    """Readable reasons a run failed: failed (error-severity) checks with their details, then step errors."""
    out = _check_failures(result, dg.AssetCheckSeverity.ERROR)
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            message = error.message.strip() if error else event.message
            if "blocking asset check" not in message:
                out.append(f"step '{event.step_key}' failed: {message}")
    return out


def parse_weeks(spec: str, cfg: ProjectConfig) -> list[tuple[dt.date, dt.date]] | None:
    """``pending`` (queued weeks), ``all`` (every week with landed data), or ``YYYY-MM-DD..YYYY-MM-DD``."""
    last = last_complete_week(cfg.today(), cfg.calendar.week_start_index)
    if spec in ("pending", "all"):
        with WarehouseResource(database=str(cfg.warehouse_path)).get_connection() as conn:
            if spec == "pending":
                return pending_week_ranges(conn, cfg)
            first, final = conn.execute(
                "SELECT min(min_week), max(max_week) FROM raw.landing_files WHERE status = 'active'"
            ).fetchone()
        return [(max(first, cfg.calendar.start), min(final, last))] if first else []
    try:
        first, _, final = spec.partition("..")
        start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(final or first)
    except ValueError:
        raise PipelineRunError(f"--weeks {spec!r}: use pending, all, or YYYY-MM-DD..YYYY-MM-DD") from None
    if start > end:
        raise PipelineRunError(f"--weeks {spec!r}: the first week is after the last")
    return [(max(start, cfg.calendar.start), min(end, last))]


def run_job(
    defs: dg.Definitions,
    job_name: str,
    instance: DagsterInstance,
    selection: list[dg.AssetKey] | None = None,
    partition_key: str | None = None,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Run a job in this process as a run of the code location, tagged with this process's pid/host
    (so a later run can tell if this process died with the run unfinished)."""
    return execute_in_location(
        defs.resolve_job_def(job_name),
        instance,
        run_config=RUN_CONFIG,
        asset_selection=selection,
        partition_key=partition_key,
        tags={**process_tags(), **(tags or {})},
    )


def recover(
    defs: dg.Definitions, instance: DagsterInstance, summary: RunSummary, log: Callable[[str], None]
) -> None:
    """Before anything runs: fail the runs whose process died and free their pool slots (else every
    later run waits for those slots forever), then redo what they left unmaterialized, each in one run
    of its job for the same market or weeks. A slot held by a live run is an error that names the run:
    waiting on it would look like a hang."""

    def job_assets(job_name: str) -> list[dg.AssetKey]:
        return sorted(defs.resolve_job_def(job_name).asset_layer.selected_asset_keys)

    recovery = recover_dead_runs(instance, job_assets, log)
    if recovery.live_holders:
        runs = "; ".join(f"run {run_id} ({job}, {where})" for run_id, job, where in recovery.live_holders)
        raise PipelineRunError(
            f"another run is in progress and holds the {WRITER_POOL} pool (DuckDB has one writer): {runs}. "
            "Wait for it to finish (see the UI's Runs page), or stop it, then run again."
        )
    for redo in recovery.redo:
        log(f"redoing what run {redo.run_id[:8]} left undone: {redo.describe()}")
        result = run_job(
            defs,
            redo.job_name,
            instance,
            list(redo.asset_keys),
            partition_key=redo.partition_key,
            tags={**redo.range_tags, REDO_OF_TAG: redo.run_id},
        )
        _record(summary, redo.job_name, result, f"redo {redo.run_id[:8]}")


def _selected(defs: dg.Definitions, job_name: str, select: str | None) -> list[dg.AssetKey] | None:
    """The job's assets that ``select`` (Dagster selection syntax) picks; None means the whole job."""
    if select is None:
        return None
    graph = defs.resolve_asset_graph()
    try:
        chosen = dg.AssetSelection.from_string(select).resolve(graph)
    except Exception as exc:  # the parser's own message says what is wrong
        raise PipelineRunError(f"--select {select!r}: {exc}") from None
    in_job = set(defs.resolve_job_def(job_name).asset_layer.selected_asset_keys)
    return sorted(chosen & in_job)


def run_pipeline(
    cfg: ProjectConfig,
    weeks: str = "pending",
    select: str | None = None,
    instance: DagsterInstance | None = None,
    log: Callable[[str], None] = print,
    until: str = "model",
    refit: bool = False,
) -> RunSummary:
    """Scan the landing folder, rebuild features for the queued (or requested) weeks, publish, refit.

    ``select`` limits the runs to the assets it picks (e.g. ``group:marts`` or ``stg_media+``).
    ``until`` stops after a stage (:data:`STAGES`). A market's model is refitted when its modeling
    table has a week, a model config or lift tests its latest fit has not seen, or a value in its
    training weeks changed since (a corrected week), or always with ``refit``.
    Valid files are built even when others in the same delivery were rejected; the rejections are
    returned as problems so the caller can exit non-zero.
    """
    if until not in STAGES:
        raise PipelineRunError(f"until {until!r}: use one of {', '.join(STAGES)}")
    stages = STAGES[: STAGES.index(until) + 1]
    instance = instance or project_instance(cfg)
    defs = build_definitions(cfg)
    summary = RunSummary()
    recover(defs, instance, summary, log)

    ingest_keys = _selected(defs, INGEST_JOB, select)
    features_keys = _selected(defs, FEATURES_JOB, select) if "features" in stages else []
    model_keys = _selected(defs, MODEL_JOB, select) if "model" in stages else []
    if select is not None and not ingest_keys and not features_keys and not model_keys:
        raise PipelineRunError(f"--select {select!r} picks no asset of this pipeline")
    if ingest_keys != []:
        ingest = run_job(defs, INGEST_JOB, instance, ingest_keys)
        _record(summary, INGEST_JOB, ingest, "-")
        if not ingest.success and not ingest.get_asset_materialization_events():
            return summary
    if features_keys != [] and not _build_features(cfg, defs, instance, weeks, features_keys, summary, log):
        return summary
    if model_keys != []:
        _refit_models(cfg, defs, instance, model_keys, refit, summary, log)
    return summary


def _build_features(
    cfg: ProjectConfig,
    defs: dg.Definitions,
    instance: DagsterInstance,
    weeks: str,
    keys: list[dg.AssetKey] | None,
    summary: RunSummary,
    log: Callable[[str], None],
) -> bool:
    """Rebuild features for each contiguous range of weeks, one run per range; False if a run failed."""
    ranges = parse_weeks(weeks, cfg)
    if not ranges:
        log("no new or corrected weeks: feature tables are up to date")
    for start, end in ranges:
        label = f"{start}..{end}"
        log(f"building features for weeks {label} ({cfg.calendar.week_start} weeks) in one run")
        result = run_job(
            defs,
            FEATURES_JOB,
            instance,
            keys,
            tags={
                "dagster/asset_partition_range_start": start.isoformat(),
                "dagster/asset_partition_range_end": end.isoformat(),
            },
        )
        _record(summary, FEATURES_JOB, result, label)
        if not result.success:
            return False
    return True


def _refit_models(
    cfg: ProjectConfig,
    defs: dg.Definitions,
    instance: DagsterInstance,
    keys: list[dg.AssetKey] | None,
    force: bool,
    summary: RunSummary,
    log: Callable[[str], None],
) -> None:
    """One model run per market whose data or model config is newer than its latest fit.

    Markets run one after another in this process, so the compiled model graph is reused between
    markets of the same shape; from the UI or a schedule each market is its own partitioned run.
    """
    with WarehouseResource(database=str(cfg.warehouse_path)).get_connection() as conn:
        if not relation_exists(conn, "marts", "fct_modeling_weekly"):
            log("no modeling table yet: nothing to fit")
            return
        weeks = dict(
            conn.execute("SELECT market, max(week) FROM marts.fct_modeling_weekly GROUP BY 1").fetchall()
        )
        latest = {market: latest_run(conn, market) for market in weeks}
        last_weeks = {m: min(w, cfg.model.train_end) if cfg.model.train_end else w for m, w in weeks.items()}
        lift_tests = {m: _lift_tests_by(conn, m, last_weeks[m]) for m in weeks}
        # The rows each latest fit trained on, as they are now: a corrected old week changes them.
        fingerprints = {
            m: modeling_fingerprint(training_rows(conn, m, run["train_end"]))
            for m, run in latest.items()
            if run is not None and not pd.isna(run.get("data_fingerprint"))
        }
        reoptimize = {}
        if cfg.optimization.enabled and (keys is None or dg.AssetKey("budget_recommendation") in keys):
            files = cfg.optimization_files()
            plans = load_scenarios(files[0], files[1:])
            reoptimize = {
                m: champion(conn, m) is not None and not _recommendation_current(conn, cfg, m, plans)
                for m in weeks
            }
    current_hash = config_hash(cfg, cfg.model)
    report = [REPORT_KEY] if keys is None or REPORT_KEY in keys else []

    def run_market(selection: list[dg.AssetKey] | None, market: str) -> None:
        result = run_job(defs, MODEL_JOB, instance, selection, partition_key=market)
        _record(summary, MODEL_JOB, result, market, prefix=f"market {market}: ")

    known = set(instance.get_dynamic_partitions(MARKETS.name))
    if missing := sorted(set(weeks) - known):
        instance.add_dynamic_partitions(MARKETS.name, missing)
    for market in sorted(weeks):
        last_week = last_weeks[market]
        run = latest[market]
        fitted_tests = 0 if run is None or pd.isna(run.get("n_lift_tests")) else int(run["n_lift_tests"])
        if run is not None and fitted_tests != lift_tests[market]:
            log(f"market {market}: {lift_tests[market]} lift test(s) ended by {last_week}, the model used "
                f"{fitted_tests}: refitting")  # fmt: skip
        elif run is not None and market in fingerprints and fingerprints[market] != run["data_fingerprint"]:
            log(f"market {market}: data of weeks up to {pd.Timestamp(run['train_end']).date()} changed since "
                f"model {run['model_id']} was fitted: refitting")  # fmt: skip
        elif (
            not force
            and run is not None
            and pd.Timestamp(run["train_end"]).date() == last_week
            and run["config_hash"] == current_hash
        ):
            log(f"market {market}: model {run['model_id']} ({run['status']}) already covers {last_week}")
            if reoptimize.get(market):
                log(f"market {market}: the budget plans or the champion changed: re-optimizing")
                run_market(
                    [dg.AssetKey("budget_recommendation"), dg.AssetKey("bi_model_snapshots"), *report], market
                )
            elif report and not report_is_current(cfg.reports_dir, cfg.bi_database_path, market):
                log(f"market {market}: no report of the current champion and recommendation yet: writing it")
                run_market(report, market)
            continue
        log(f"market {market}: fitting the model on weeks up to {last_week}")
        run_market(keys, market)


def _lift_tests_by(conn: duckdb.DuckDBPyConnection, market: str, last_week: object) -> int:
    """How many of the market's stored lift tests a fit up to ``last_week`` uses (filed by end week)."""
    if not relation_exists(conn, "staging", "stg_lift_tests"):
        return 0
    sql = "SELECT count(*) FROM staging.stg_lift_tests WHERE market = ? AND week <= ?"
    return int(conn.execute(sql, [market, last_week]).fetchone()[0])


def _recommendation_current(
    conn: duckdb.DuckDBPyConnection, cfg: ProjectConfig, market: str, plans: list[Plan]
) -> bool:
    """Whether the market's latest recommendation used its champion and the plans in force now (market
    conditions applied). A condition that cannot be evaluated counts as out of date, so the optimization
    asset runs and fails with its message."""
    try:
        return optimization_is_current(conn, market, plans_in_force(conn, market, plans, cfg.conditions)[0])
    except (ValueError, PlanError):
        return False
