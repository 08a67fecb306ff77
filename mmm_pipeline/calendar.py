"""Model weeks: which week a date belongs to, and calendar features per week.

A model week starts on the configured weekday (the case-study data starts weeks on Sunday); daily rows
aggregate into the week that holds them.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import holidays
import pandas as pd

from .config import CalendarConfig


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


def weekly_partitions(calendar: CalendarConfig) -> dg.WeeklyPartitionsDefinition:
    """One partition per complete model week from ``calendar.start`` (Dagster counts days from Sunday)."""
    return dg.WeeklyPartitionsDefinition(
        start_date=calendar.start.isoformat(),
        day_offset=(calendar.week_start_index + 1) % 7,
        fmt="%Y-%m-%d",
    )


def holiday_table(country: str | None, first_year: int, last_year: int) -> pd.DataFrame:
    """Public holidays (date, name) for the years covered, from the python-holidays package."""
    if not country:
        return pd.DataFrame({"date": pd.Series(dtype="datetime64[ns]"), "name": pd.Series(dtype=str)})
    table = holidays.country_holidays(country, years=range(first_year, last_year + 1))
    frame = pd.DataFrame(sorted(table.items()), columns=["date", "name"])
    frame["date"] = pd.to_datetime(frame["date"])
    return frame
