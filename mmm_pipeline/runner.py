"""Headless runs of the Dagster definitions, for cron, CI and the CLI.

Runs go to the project's own Dagster instance (``paths.dagster_home``, or ``$DAGSTER_HOME``), so they
show up in the UI beside runs launched there.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

from mmm_pipeline.execution_settings import STAGES
from mmm_pipeline.model.registry import latest_run
from mmm_pipeline.settings import PipelineRunError

from .config import ProjectConfig, load_config
from .definitions import build_definitions
from .defs.assets.model import GROUP_KEYS, MARKETS, group_run_tags
from .defs.execution import execute_in_location, execute_with_executor, run_result
from .defs.executors import reconstructable_model_job
from .defs.jobs import FEATURES_JOB, INGEST_JOB, MODEL_JOB
from .defs.recovery import REDO_OF_TAG, process_tags, recover_dead_runs
from .defs.resources import WRITER_POOL, WarehouseResource
from .defs.staleness import (
    OBSERVED_KEYS,
    MarketPlan,
    WeekRange,
    asset_names,
    model_phases,
    model_plans,
    stale_week_ranges,
    weeks_with_data,
)
from .defs.storage import project_storage
from .report import latest_report
from .warehouse import relation_exists

#: How far a run goes: ``ingest`` only, ``features`` (ingest + feature tables), ``model`` (+ refits).
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

#: The executive report: written again when its folder was deleted (see ``_refit_models``).
REPORT_KEY = dg.AssetKey("executive_report")

#: Console logging for headless runs: our progress messages, not Dagster's step-by-step debug events.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


#: Scope of the runs that hash a market's inputs again (in the run list the CLI prints).
INPUTS_SCOPE = " (inputs hash)"
#: Scope of a market's runs of what reads every market's monitoring (its report), after that ran once.
REPORT_SCOPE = " (report)"


def project_instance(cfg: ProjectConfig) -> DagsterInstance:
    """The project's persistent Dagster instance (created on first use), written through one SQLAlchemy
    engine per SQLite file (``defs/storage.py``) unless ``dagster.yaml`` configures another storage."""
    home = Path(os.environ.get("DAGSTER_HOME") or cfg.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config_file = home / "dagster.yaml"
    if not config_file.exists():
        config_file.write_text(INSTANCE_YAML)
    return DagsterInstance.from_ref(project_storage(InstanceRef.from_dir(str(home))))


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
    if not out and not result.success:  # the run itself failed (its executor, say), no step did
        failures = [e for e in result.all_events if e.event_type_value == "RUN_FAILURE"]
        error = failures[-1].event_specific_data.error if failures else None
        out.append(f"run {result.run_id} failed: " + (error.message.strip() if error else "see its logs"))
    return out


def week_ranges(
    spec: str, defs: dg.Definitions, instance: DagsterInstance, keys: list[dg.AssetKey] | None = None
) -> list[WeekRange]:
    """The week partitions a feature run rebuilds, as contiguous ranges (one run each).

    ``pending``: what Dagster reports missing or stale (:func:`stale_week_ranges`: weeks whose landed
    content changed, weeks never built, every week after a staging model's SQL changed); ``all``: every
    week from the first to the last with landed data; ``YYYY-MM-DD..YYYY-MM-DD``: the week partitions
    that overlap those dates.
    """
    job = defs.resolve_job_def(FEATURES_JOB)
    # The selection limits what runs, not which weeks: a selection of the marts alone (no weekly asset)
    # runs over the weeks of the whole job.
    weekly = [k for k in keys or () if defs.resolve_asset_graph().get(k).is_partitioned]
    job_keys = weekly or job.asset_layer.selected_asset_keys
    if spec == "pending":
        return stale_week_ranges(instance, defs.resolve_asset_graph(), job_keys)
    partitions = job.partitions_def
    assert partitions is not None  # the feature job is weekly-partitioned (defs/jobs.py)
    weeks = partitions.get_partition_keys()
    if spec == "all":
        landed = weeks_with_data(instance, defs.resolve_asset_graph(), job_keys)
        weeks = weeks[weeks.index(landed[0]) : weeks.index(landed[-1]) + 1] if landed else []
    else:
        try:
            first, _, final = spec.partition("..")
            start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(final or first)
        except ValueError:
            raise PipelineRunError(f"--weeks {spec!r}: use pending, all, or YYYY-MM-DD..YYYY-MM-DD") from None
        if start > end:
            raise PipelineRunError(f"--weeks {spec!r}: the first week is after the last")
        weeks = [w for w in weeks if start - dt.timedelta(days=6) <= dt.date.fromisoformat(w) <= end]
    return [WeekRange(weeks[0], weeks[-1], len(weeks), "requested")] if weeks else []


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
    """Scan the landing folder, rebuild features for the stale (or requested) weeks, publish, refit.

    ``select`` limits the runs to the assets it picks (e.g. ``group:marts`` or ``stg_media+``).
    ``until`` stops after a stage (:data:`STAGES`). Each market's model run materializes what Dagster
    reports missing or stale (:mod:`mmm_pipeline.defs.staleness`): the fit when the content of its
    training rows or lift tests or the model config changed (or always with ``refit``), the
    recommendation when the plans changed, the report when its settings changed, and what lies below.
    Valid files are built even when others in the same delivery were rejected; the rejections are
    returned as problems so the caller can exit non-zero.
    """
    if until not in STAGES:
        raise PipelineRunError(f"until {until!r}: use one of {', '.join(STAGES)}")
    stages = STAGES[: STAGES.index(until) + 1]
    _interruptible()
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
    if features_keys != []:
        # Again: a delivery of older weeks moved the first week partition back (defs/partitions.py).
        defs = build_definitions(cfg)
        if not _build_features(cfg, defs, instance, weeks, features_keys, summary, log):
            return summary
    if model_keys != []:
        _refit_models(cfg, defs, instance, model_keys, refit, summary, log)
    return summary


def _interruptible() -> None:
    """Let SIGINT and SIGTERM stop this process and the ones it starts, as launched from a script.

    A script's background job (``mmm-pipeline run &``) starts with SIGINT ignored. Dagster maps SIGTERM
    to SIGINT's handler, so TERM is then ignored as well, here and in every process started from here
    (an ignored signal stays ignored across exec): the executor's step processes and dask workers, and
    the ``tail -F`` that mirrors each step's output, which Dagster stops with SIGTERM and then waits 30 s
    for. Seen: 61 s between consecutive steps of a run on a dask worker. Python's own handler restored.
    """
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.default_int_handler)


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
    ranges = week_ranges(weeks, defs, instance, keys)
    if not ranges:
        log("no new, corrected or unbuilt weeks: feature tables are up to date")
    for weeks_range in ranges:
        label = weeks_range.label()
        log(
            f"building features for weeks {label} ({weeks_range.weeks} {cfg.calendar.week_start} weeks: "
            f"{weeks_range.why}) in one run"
        )
        result = run_job(
            defs,
            FEATURES_JOB,
            instance,
            keys,
            tags={
                "dagster/asset_partition_range_start": weeks_range.first,
                "dagster/asset_partition_range_end": weeks_range.last,
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
    """One model run per market with what Dagster reports missing or stale for it (defs/staleness.py).

    First each market's ``market_training_data`` is hashed again (a run per market): its data version is
    the content of what the fit reads, so the fit turns stale exactly when that changed. Then every
    market runs the stale part of the model job, each market its own partitioned run (as the daemon's
    ``stale_model_sensor`` starts them). With ``execution.executor: in_process`` (default) the runs go
    one after another in this process, so the compiled model graph is reused between markets of the same
    shape. With ``multiprocess``, ``dask`` or ``celery`` they fan out: the market runs are started at once
    (up to ``execution.max_workers``), each run's steps executed by the job's executor in other processes,
    on the dask cluster or by the Celery workers (:func:`fan_out`). Under ``model.spec.pooling: partial``
    the group's fit, CV and registration go first, in one run over every market (:func:`_refit_group`),
    and the markets' runs then materialize what that made stale below it.
    """
    with WarehouseResource(database=str(cfg.warehouse_path)).get_connection() as conn:
        if not relation_exists(conn, "marts", "fct_modeling_weekly"):
            log("no modeling table yet: nothing to fit")
            return
        weeks = dict(
            conn.execute("SELECT market, max(week) FROM marts.fct_modeling_weekly GROUP BY 1").fetchall()
        )
        latest = {market: latest_run(conn, market) for market in weeks}
    known = set(instance.get_dynamic_partitions(MARKETS.name))
    if missing := sorted(set(weeks) - known):
        instance.add_dynamic_partitions(MARKETS.name, missing)

    graph = defs.resolve_asset_graph()
    observed_keys = [k for k in OBSERVED_KEYS if graph.has(k)]
    # Always here, whatever the executor: quick hashes the plans below are decided on.
    observed = [
        m for m in sorted(weeks) if _run_market(defs, instance, m, observed_keys, INPUTS_SCOPE, summary)
    ]
    job_keys = keys if keys is not None else defs.resolve_job_def(MODEL_JOB).asset_layer.selected_asset_keys
    plans = model_plans(instance, graph, job_keys, observed, force_fit=force)
    if cfg.model.spec.pooling == "partial":
        pooled = _refit_group(defs, instance, plans, sorted(weeks), summary, log)
        if pooled is None:
            return
        if pooled:  # the group was refitted or re-registered: what lies below it is stale now
            plans = model_plans(instance, graph, set(job_keys) - set(GROUP_KEYS), observed)
            with WarehouseResource(database=str(cfg.warehouse_path)).get_connection() as conn:
                latest = {market: latest_run(conn, market) for market in weeks}
    selections: dict[str, list[dg.AssetKey]] = {}
    for plan in plans:
        market, run = plan.market, latest[plan.market]
        last_week = min(weeks[market], cfg.model.train_end) if cfg.model.train_end else weeks[market]
        if plan.refit or run is None:
            if run is not None:
                log(f"market {market}: model {run['model_id']} is out of date ({plan.reasons()})")
            log(f"market {market}: fitting the model on weeks up to {last_week}")
        else:
            log(f"market {market}: model {run['model_id']} ({run['status']}) already covers {last_week}")
            if plan.roots:
                log(f"market {market}: out of date: {plan.reasons()}: running {asset_names(plan.selection)}")
        selection = list(plan.selection)
        report_gone = latest_report(cfg.reports_dir, market) is None
        if REPORT_KEY in job_keys and REPORT_KEY not in selection and report_gone:
            # Dagster tracks materializations, not the files they wrote: a deleted report folder is not
            # stale to it. The one rule of the runner's own: write the report again (nothing else).
            log(f"market {market}: no report folder under {cfg.reports_dir}: writing the report again")
            selection.append(REPORT_KEY)
        if selection:
            selections[market] = selection
    phases = model_phases(graph, selections)
    own = [(market, list(keys)) for market, keys in phases.own.items()]
    failed = _run_markets(cfg, defs, instance, own, "", summary, log)
    if phases.shared:
        # Once for every market, after all their fits and plans (each market's run would redo them).
        log(f"all markets: running {asset_names(phases.shared)} once")
        result = run_job(defs, MODEL_JOB, instance, list(phases.shared))
        _record(summary, MODEL_JOB, result, "all markets", prefix="all markets: ")
        if not result.success:
            return
    later = [(m, list(keys)) for m, keys in phases.below.items() if m not in failed]
    _run_markets(cfg, defs, instance, later, REPORT_SCOPE, summary, log)


def _run_market(
    defs: dg.Definitions,
    instance: DagsterInstance,
    market: str,
    selection: list[dg.AssetKey],
    scope: str,
    summary: RunSummary,
) -> bool:
    """One market's model run in this process, recorded in ``summary``; True if it succeeded."""
    result = run_job(defs, MODEL_JOB, instance, selection, partition_key=market)
    _record(summary, MODEL_JOB, result, market + scope, prefix=f"market {market}: ")
    return result.success


def _run_markets(
    cfg: ProjectConfig,
    defs: dg.Definitions,
    instance: DagsterInstance,
    runs: list[tuple[str, list[dg.AssetKey]]],
    scope: str,
    summary: RunSummary,
    log: Callable[[str], None],
) -> set[str]:
    """One model run per (market, selection): one after another in this process with the default
    ``in_process`` executor (the compiled model graph is reused between markets of the same shape), else
    all at once through the configured executor (:func:`fan_out`). Returns the markets whose run failed."""
    if cfg.execution.executor == "in_process":
        return {m for m, keys in runs if not _run_market(defs, instance, m, keys, scope, summary)}
    if not runs:
        return set()
    log(
        f"running {len(runs)} market(s) at once through the {cfg.execution.executor} executor"
        + _executor_address(cfg)
    )
    job_def = defs.resolve_job_def(MODEL_JOB)
    results = [(m, run_result(job_def, instance, run_id)) for m, run_id in fan_out(cfg, instance, runs)]
    for market, result in results:
        _record(summary, MODEL_JOB, result, market + scope, prefix=f"market {market}: ")
    return {market for market, result in results if not result.success}


def _refit_group(
    defs: dg.Definitions,
    instance: DagsterInstance,
    plans: list[MarketPlan],
    markets: list[str],
    summary: RunSummary,
    log: Callable[[str], None],
) -> bool | None:
    """Under ``pooling: partial``: the group's part of the markets' plans (fit, CV, registration) in one
    run over every market's partition (a partition range from the first market to the last), when any
    market needs it; a market's stale fit refits the whole group. True if it ran, False if nothing was
    stale, None if the run failed (nothing below it runs then, as in a market's own run).

    The assets fail, naming both, if that range is not exactly the group of the modeling table.
    """
    selection = sorted({k for plan in plans for k in plan.selection if k in GROUP_KEYS})
    if not selection:
        return False
    why = "; ".join(f"{p.market}: {p.reasons()}" for p in plans if set(p.selection) & set(GROUP_KEYS))
    if dg.AssetKey("model_fit") in selection:
        log(f"market group {', '.join(markets)}: fitting one pooled model ({why})")
    else:
        log(f"market group {', '.join(markets)}: running {asset_names(selection)} ({why})")
    result = run_job(defs, MODEL_JOB, instance, selection, tags=group_run_tags(instance))
    _record(summary, MODEL_JOB, result, "market group", prefix="market group: ")
    return True if result.success else None


def fan_out(
    cfg: ProjectConfig, instance: DagsterInstance, runs: list[tuple[str, list[dg.AssetKey]]]
) -> list[tuple[str, str]]:
    """One model run per (market, selection), started at once, each executed by the job's executor;
    returns (market, run id) in the order of ``runs`` once all ended.

    Dagster runs one partition of an asset per run, so markets in parallel means runs in parallel: the
    same runs the daemon launches, each orchestrated by its own child process of this one (as Dagster's
    run launchers do; two runs in threads of one process deadlock in Dagster's logger setup), waiting on
    its steps in the executor's processes or on the dask cluster, which bounds how many steps compute at
    once. Writes to DuckDB stay one at a time: every writer step is in ``WRITER_POOL`` (the multiprocess
    executor claims the instance's pool slot; the dask one holds a cluster-wide lock) and every
    connection takes the warehouse's file lock.
    """
    if cfg.source is None:
        raise PipelineRunError(
            f"execution.executor {cfg.execution.executor!r}: other processes rebuild the job from the config "
            "file; load the config with load_config(path)"
        )
    limit = cfg.execution.max_workers or _default_parallel_runs(cfg)
    spawn = multiprocessing.get_context("spawn")  # a clean process: no copy of this one's threads or locks
    with ProcessPoolExecutor(max_workers=min(limit, len(runs)), mp_context=spawn) as pool:
        futures = [
            pool.submit(
                _orchestrate_market_run,
                str(cfg.source),
                instance.get_ref(),
                market,
                [key.to_user_string() for key in selection],
            )
            for market, selection in runs
        ]
        return [(market, future.result()) for (market, _), future in zip(runs, futures, strict=True)]


def _executor_address(cfg: ProjectConfig) -> str:
    """Where the executor's workers are, for the log: the dask scheduler, or the Celery broker."""
    if cfg.execution.executor == "dask":
        return f" ({cfg.execution.dask.scheduler_address})"
    if cfg.execution.executor == "celery":
        return f" (broker {cfg.execution.celery.broker or f'filesystem:// in {cfg.celery_folder}'})"
    return ""


def _default_parallel_runs(cfg: ProjectConfig) -> int:
    """Market runs in flight when ``execution.max_workers`` is unset: the dask cluster's worker threads
    (more runs would only queue on the cluster, each orchestrator process holding the whole stack in
    memory), else this machine's cores (with celery, runs beyond the workers' slots wait in the queue).

    Twice as many was tried for dask (to fill the workers during earlier runs' writer tails): on four
    markets it started four orchestrators importing the stack at once, the first fit began later, and
    the runs' writer steps, which take turns on the warehouse, only piled up at the end
    (``benchmarks/README.md``)."""
    if cfg.execution.executor == "dask":
        from distributed import Client  # only with the dask executor

        with Client(cfg.execution.dask.scheduler_address, timeout=30) as client:
            workers = client.scheduler_info()["workers"].values()
            return max(1, sum(worker["nthreads"] for worker in workers))
    return os.cpu_count() or 1


def _orchestrate_market_run(
    config_path: str, instance_ref: InstanceRef, market: str, selection: list[str]
) -> str:
    """In a child process: run ``selection`` of the model job for ``market`` with the job's executor,
    tagged with this process's pid/host (recovery tells from them whether the run's orchestrator died)."""
    cfg = load_config(config_path)
    with DagsterInstance.from_ref(instance_ref) as instance:
        return execute_with_executor(
            reconstructable_model_job(cfg),
            instance,
            RUN_CONFIG,
            [dg.AssetKey.from_user_string(key) for key in selection],
            partition_key=market,
            tags=process_tags(),
        )


def celery_worker(cfg: ProjectConfig, concurrency: int, name: str | None) -> None:
    """``mmm-pipeline celery-worker``: a Celery worker for the project's model job until stopped (the CLI
    reaches Dagster only through this module and the definitions; celery is imported only here)."""
    from .defs.executors import start_celery_worker

    start_celery_worker(cfg, concurrency, name)
