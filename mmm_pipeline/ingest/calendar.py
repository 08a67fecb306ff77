"""Model weeks: which week a date belongs to, and calendar features per week.

A model week starts on the configured weekday (the case-study data starts weeks on Sunday); daily rows
aggregate into the week that holds them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import holidays
import pandas as pd

from mmm_pipeline.ingest.contract import CalendarConfig


def week_start(dates: pd.Series, week_start_index: int) -> pd.Series:
    """The start date of the model week holding each date (``week_start_index``: Monday=0)."""
    dates = pd.to_datetime(dates)
    return (dates - pd.to_timedelta((dates.dt.weekday - week_start_index) % 7, unit="D")).dt.normalize()


def week_start_of(day: dt.date, week_start_index: int) -> dt.date:
    """Scalar twin of :func:`week_start`."""
    return day - dt.timedelta(days=(day.weekday() - week_start_index) % 7)


def last_complete_week(today: dt.date, week_start_index: int) -> dt.date:
    """Start of the latest week that has fully ended by ``today``."""
    return week_start_of(today, week_start_index) - dt.timedelta(days=7)


def first_data_week(calendar: CalendarConfig, warehouse_path: Path) -> dt.date:
    """The first week any active landing file holds, else ``calendar.start`` (no data yet).

    Read when the code location loads (the UI, the daemon, each CLI run). The warehouse may be locked
    by a running writer then; the last week read is kept beside the warehouse so a load during a run
    sees the same partitions as the one before, never a jump back to ``calendar.start``.
    """
    memo = Path(f"{warehouse_path}.first_week")
    try:
        with duckdb.connect(str(warehouse_path), read_only=True) as conn:
            (first,) = conn.execute(
                "SELECT min(min_week) FROM raw.landing_files WHERE status = 'active'"
            ).fetchone()
    except duckdb.Error:  # locked by a writer (another process, or this one), or no landing table yet
        first = dt.date.fromisoformat(memo.read_text().strip()) if memo.exists() else None
    else:
        if first is not None:
            first = week_start_of(max(first, calendar.start), calendar.week_start_index)
            if not memo.exists() or memo.read_text().strip() != first.isoformat():
                memo.write_text(first.isoformat())
    return first or calendar.start


def holiday_table(country: str | None, first_year: int, last_year: int) -> pd.DataFrame:
    """Public holidays (date, name) for the years covered, from the python-holidays package."""
    if not country:
        return pd.DataFrame({"date": pd.Series(dtype="datetime64[ns]"), "name": pd.Series(dtype=str)})
    table = holidays.country_holidays(country, years=range(first_year, last_year + 1))
    frame = pd.DataFrame(sorted(table.items()), columns=["date", "name"])
    frame["date"] = pd.to_datetime(frame["date"])
    return frame
