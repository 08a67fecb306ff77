"""Weekly partitions of the staging and feature assets, from the calendar of the project config."""

from __future__ import annotations

import dagster as dg

from ..config import ProjectConfig
from ..ingest.calendar import first_data_week


def weekly_partitions(cfg: ProjectConfig) -> dg.WeeklyPartitionsDefinition:
    """One partition per complete model week from the first week with data (Dagster counts days from
    Sunday).

    Not from ``calendar.start``: that is only the earliest week accepted, often years before the first
    delivery, and every week between would show as a "missing" partition. The start is read from the
    warehouse when the definitions load, so it is fixed for the life of a code location and moves
    (earlier) only when a delivery brings older weeks and the location reloads, which Dagster handles
    like any changed partitions definition. Dynamic partitions would need every new week registered by
    hand, and a time window keeps Dagster's range runs (one run for many weeks) and its calendar views.
    """
    return dg.WeeklyPartitionsDefinition(
        start_date=first_data_week(cfg.calendar, cfg.warehouse_path).isoformat(),
        day_offset=(cfg.calendar.week_start_index + 1) % 7,
        fmt="%Y-%m-%d",
    )
