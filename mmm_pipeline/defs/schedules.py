"""The weekly schedule: ingest, features, tracking for the newest complete week, then (by the follow-up
sensor) refit, CV, optimization and publishing per market. Cron, timezone and default status come from
the ``schedule`` config section; the schedule can be switched on and off in the UI."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from mmm_pipeline.ingest.calendar import last_complete_week

from ..config import ProjectConfig
from .assets.monitoring import TRIGGER_TAG
from .jobs import WEEKLY_JOB

WEEKLY_SCHEDULE = "weekly_refresh"


def newest_complete_week(cfg: ProjectConfig, when: dt.datetime) -> dt.date:
    """The latest model week that has fully ended at ``when`` (read in the schedule's timezone)."""
    local = when.astimezone(ZoneInfo(cfg.schedule.timezone)) if when.tzinfo else when
    return last_complete_week(local.date(), cfg.calendar.week_start_index)


def build_schedules(
    cfg: ProjectConfig, jobs: list[dg.UnresolvedAssetJobDefinition]
) -> list[dg.ScheduleDefinition]:
    settings = cfg.schedule
    weekly_job = next(job for job in jobs if job.name == WEEKLY_JOB)

    @dg.schedule(
        name=WEEKLY_SCHEDULE,
        job=weekly_job,
        cron_schedule=settings.cron,
        execution_timezone=settings.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING
        if settings.enabled
        else dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"Every '{settings.cron}' ({settings.timezone}): scan the landing folder and rebuild the newest "
            "complete week's features, tracking and drift events; then the follow-up sensor refits, "
            "cross-validates, optimizes and publishes each market"
            + ("" if settings.refit else " (switched off: schedule.refit is false)")
            + "."
        ),
    )
    def weekly_refresh(context: dg.ScheduleEvaluationContext):
        week = newest_complete_week(cfg, context.scheduled_execution_time)
        if week < cfg.calendar.start:
            return dg.SkipReason(f"no complete week yet: the calendar starts {cfg.calendar.start}")
        return dg.RunRequest(
            run_key=f"weekly-{week}",
            partition_key=week.isoformat(),
            tags={TRIGGER_TAG: "schedule", "mmm/week": week.isoformat()},
        )

    return [weekly_refresh]
