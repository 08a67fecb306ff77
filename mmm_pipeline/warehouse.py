"""The working DuckDB database: one writer at a time, raw tables created on first use.

DuckDB allows one read-write process per file. Every writer goes through the Dagster resource
(:meth:`mmm_pipeline.defs.resources.WarehouseResource.get_connection`), which takes a file lock first,
so parallel Dagster steps and a CLI run queue up instead of failing; BI never opens this file (it
reads the published snapshots, see :mod:`mmm_pipeline.publish.bi`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

RAW_DDL = """
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS intermediate;
CREATE SCHEMA IF NOT EXISTS marts;
CREATE TABLE IF NOT EXISTS raw.landing_files (
    delivery_id BIGINT PRIMARY KEY,   -- one row per delivery of a file's content
    kind VARCHAR NOT NULL,            -- media | kpi | controls | lift_tests
    path VARCHAR NOT NULL,            -- relative to the landing folder
    sha256 VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    delivered_at TIMESTAMP NOT NULL,
    status VARCHAR NOT NULL,          -- active | superseded (same path re-delivered) | duplicate
    n_rows BIGINT,
    min_week DATE,
    max_week DATE,
    note VARCHAR
);
CREATE TABLE IF NOT EXISTS raw.landed_media (
    delivery_id BIGINT, row_number INTEGER, date DATE, week DATE, market VARCHAR, channel VARCHAR,
    spend DOUBLE, impressions DOUBLE
);
CREATE TABLE IF NOT EXISTS raw.landed_kpi (
    delivery_id BIGINT, row_number INTEGER, date DATE, week DATE, market VARCHAR, kpi DOUBLE
);
CREATE TABLE IF NOT EXISTS raw.landed_controls (
    delivery_id BIGINT, row_number INTEGER, date DATE, week DATE, market VARCHAR, control VARCHAR,
    value DOUBLE, label VARCHAR
);
-- A categorical control's label (its value is then NULL); added to warehouses made before it existed.
ALTER TABLE raw.landed_controls ADD COLUMN IF NOT EXISTS label VARCHAR;
CREATE TABLE IF NOT EXISTS raw.landed_lift_tests (
    delivery_id BIGINT, row_number INTEGER, week DATE, market VARCHAR, channel VARCHAR,
    start_date DATE, end_date DATE, spend DOUBLE, delta_spend DOUBLE, lift DOUBLE, lift_se DOUBLE
);
CREATE TABLE IF NOT EXISTS raw.pending_weeks (kind VARCHAR, week DATE, PRIMARY KEY (kind, week));
CREATE TABLE IF NOT EXISTS raw.quarantined_files (
    path VARCHAR, kind VARCHAR, sha256 VARCHAR, quarantined_at TIMESTAMP, moved_to VARCHAR,
    rules VARCHAR, message VARCHAR
);
CREATE TABLE IF NOT EXISTS raw.holidays (date DATE, name VARCHAR, country VARCHAR);
"""


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Run the block as one transaction: committed if it finishes, rolled back if it raises, so a
    failed write leaves the previous tables exactly as they were."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def relation_exists(conn: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchone()
    return bool(row and row[0])


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB SQL (doubling any embedded quote)."""
    return '"' + name.replace('"', '""') + '"'
