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
from dagster import DagsterInstance

from .calendar import last_complete_week
from .config import ProjectConfig
from .definitions import build_definitions
from .defs.jobs import FEATURES_JOB, INGEST_JOB
from .defs.resources import WRITER_POOL
from .ingestion import pending_week_ranges
from .warehouse import WarehouseResource

INSTANCE_YAML = f"""# Written by mmm-pipeline; the CLI and `mmm-pipeline ui` share this instance.
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1  # the {WRITER_POOL} pool: DuckDB has one writer
"""


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
    runs: list[tuple[str, str, bool, str]] = field(default_factory=list)  # job, run id, success, weeks
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _problems(result: dg.ExecuteInProcessResult) -> list[str]:
    """Readable reasons a run failed: failed checks with their details, then step errors."""
    out = []
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            details = "\n".join(str(v.value) for v in evaluation.metadata.values())
            out.append(
                f"check '{evaluation.check_name}' on {evaluation.asset_key.to_user_string()} failed"
                + (f":\n{details}" if details else "")
            )
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
) -> RunSummary:
    """Scan the landing folder, then rebuild features for the queued (or requested) weeks and publish.

    ``select`` limits both runs to the assets it picks (e.g. ``group:marts`` or ``stg_media+``).
    Valid files are built even when others in the same delivery were rejected; the rejections are
    returned as problems so the caller can exit non-zero.
    """
    instance = instance or project_instance(cfg)
    defs = build_definitions(cfg)
    summary = RunSummary()

    ingest_keys = _selected(defs, INGEST_JOB, select)
    features_keys = _selected(defs, FEATURES_JOB, select)
    if select is not None and not ingest_keys and not features_keys:
        raise PipelineRunError(f"--select {select!r} picks no asset of this pipeline")
    if ingest_keys != []:
        ingest = defs.resolve_job_def(INGEST_JOB).execute_in_process(
            instance=instance, raise_on_error=False, run_config=RUN_CONFIG, asset_selection=ingest_keys
        )
        summary.runs.append((INGEST_JOB, ingest.run_id, ingest.success, "-"))
        summary.problems += _problems(ingest)
        if not ingest.success and not ingest.get_asset_materialization_events():
            return summary
    if features_keys == []:
        return summary

    ranges = parse_weeks(weeks, cfg)
    if not ranges:
        log("no new or corrected weeks: feature tables are up to date")
    for start, end in ranges:
        label = f"{start}..{end}"
        log(f"building features for weeks {label} ({cfg.calendar.week_start} weeks) in one run")
        result = defs.resolve_job_def(FEATURES_JOB).execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config=RUN_CONFIG,
            asset_selection=features_keys,
            tags={
                "dagster/asset_partition_range_start": start.isoformat(),
                "dagster/asset_partition_range_end": end.isoformat(),
            },
        )
        summary.runs.append((FEATURES_JOB, result.run_id, result.success, label))
        summary.problems += _problems(result)
        if not result.success:
            break
    return summary
