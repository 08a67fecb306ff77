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
