"""Publishing for BI: atomically replaced Parquet snapshots behind a separate read-only catalog.

DuckDB allows one read-write process or many read-only ones on a file, never both. So BI tools never
open the working warehouse: each published table is exported to ``<publish>/<table>.parquet`` (written
to a temporary file, then renamed over the old one, which is atomic), and ``bi.duckdb`` holds only views
over those files. A reader sees either the old or the new snapshot of a table, never half of one, and
a reader holding ``bi.duckdb`` open never blocks the pipeline: the catalog is rebuilt in a temporary
file and renamed into place too.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb

from .warehouse import quote_ident

CATALOG_TABLE = "published_tables"


def _atomic_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")


def export_snapshot(conn: duckdb.DuckDBPyConnection, relation: str, target: Path) -> int:
    """Write ``relation`` to ``target`` as Parquet, replacing it atomically; returns the row count."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_path(target)
    try:
        conn.execute(f"COPY (SELECT * FROM {relation}) TO {_sql_string(tmp)} (FORMAT parquet)")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return conn.execute(f"SELECT count(*) FROM read_parquet({_sql_string(target)})").fetchone()[0]


def write_catalog(bi_database: Path, snapshots: dict[str, Path]) -> None:
    """(Re)build the BI catalog: one view per snapshot, plus a table listing what is published."""
    bi_database.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_path(bi_database)
    try:
        with duckdb.connect(str(tmp)) as bi:
            bi.execute(
                f"CREATE TABLE {CATALOG_TABLE} (name VARCHAR, snapshot VARCHAR, published_at TIMESTAMP)"
            )
            for name, path in sorted(snapshots.items()):
                bi.execute(
                    f"CREATE VIEW {quote_ident(name)} AS SELECT * FROM read_parquet({_sql_string(path)})"
                )
                bi.execute(f"INSERT INTO {CATALOG_TABLE} VALUES (?, ?, now()::TIMESTAMP)", [name, str(path)])
        os.replace(tmp, bi_database)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)


def published_snapshots(publish_dir: Path) -> dict[str, Path]:
    """Every snapshot in the publish folder, by table name."""
    return {p.stem: p.resolve() for p in sorted(publish_dir.glob("*.parquet"))}


def _sql_string(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"
