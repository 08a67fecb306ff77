"""Data versions of what a market's fit reads: fingerprints of its training rows and lift tests.

A model is stale when any value it was fitted on changed (a corrected KPI, spend or control in an old
week, a corrected lift test), not only when a week or a test was added. :func:`market_inputs_version`
is the Dagster data version of the ``market_training_data`` asset, which ``model_fit`` depends on, so
Dagster itself reports the fit stale when it changes. The fit also records the fingerprint of its
training rows with the model run (``models.model_runs.data_fingerprint``) for the registry's readers.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import duckdb
import pandas as pd

#: Bumped when the canonical form below changes, so old and new fingerprints never compare equal.
FINGERPRINT_FORMAT = "v1"


def modeling_fingerprint(rows: pd.DataFrame) -> str:
    """SHA-256 of a canonical text form of modeling-table rows: columns by name, rows by market and
    week, dates as ISO dates, floats with 17 significant digits (every bit of the value counts).

    Independent of the rows' and columns' order and of how a reader typed the dates and integers, so
    the fit and the runner agree whenever the values agree.
    """
    frame = rows[sorted(rows.columns)].copy()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values) or (
            values.dtype == object and len(values) and values.map(lambda v: isinstance(v, dt.date)).all()
        ):
            frame[column] = pd.to_datetime(values).dt.strftime("%Y-%m-%dT%H:%M:%S")
        elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            frame[column] = values.astype("float64")
    keys = [k for k in ("market", "week") if k in frame.columns]
    frame = frame.sort_values(keys, kind="stable") if keys else frame
    text = frame.to_csv(index=False, float_format="%.17g", lineterminator="\n")
    return f"{FINGERPRINT_FORMAT}:" + hashlib.sha256(text.encode()).hexdigest()


def market_inputs_version(rows: pd.DataFrame, lift_tests: pd.DataFrame) -> str:
    """One fingerprint of a fit's inputs: its training rows and the lift tests that enter it, by content
    (a lift test corrected in place changes it although the count stays)."""
    tests = modeling_fingerprint(lift_tests.sort_values(sorted(lift_tests.columns), kind="stable"))
    text = f"{modeling_fingerprint(rows)}|{tests}"
    return f"{FINGERPRINT_FORMAT}:" + hashlib.sha256(text.encode()).hexdigest()


def training_rows(conn: duckdb.DuckDBPyConnection, market: str, train_end: object) -> pd.DataFrame:
    """The market's modeling-table rows up to ``train_end``: what a fit ending that week trained on."""
    return conn.execute(
        "SELECT * FROM marts.fct_modeling_weekly WHERE market = ? AND week <= ? ORDER BY week",
        [market, pd.Timestamp(train_end).date()],
    ).df()
