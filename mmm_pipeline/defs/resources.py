"""Resources, built from the project config so every path comes from one file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from filelock import FileLock, Timeout
from pydantic import Field

from ..config import ProjectConfig
from ..tables import RAW_DDL

#: Dagster pool every warehouse writer joins; the instance limits it to one (DuckDB has one writer).
WRITER_POOL = "duckdb_writer"


class WarehouseResource(DuckDBResource):
    """DuckDB working database with a cross-process writer lock (DuckDB has a single writer)."""

    lock_timeout_seconds: float = Field(
        default=1800.0, description="How long a writer waits for another writer before failing."
    )

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{self.database}.lock")
        started = time.monotonic()
        try:
            lock.acquire(timeout=self.lock_timeout_seconds)
        except Timeout as exc:
            raise dg.Failure(
                f"another writer has held {self.database} for over {self.lock_timeout_seconds:.0f}s; "
                f"remove {lock.lock_file} only if no pipeline process is running"
            ) from exc
        waited = time.monotonic() - started
        if waited > 1:
            dg.get_dagster_logger().info(f"waited {waited:.1f}s for the warehouse writer lock")
        try:
            with super().get_connection() as conn:
                try:
                    conn.execute(RAW_DDL)
                    yield conn
                finally:
                    conn.close()
        finally:
            lock.release()


def build_resources(cfg: ProjectConfig) -> dict[str, object]:
    return {
        "warehouse": WarehouseResource(database=str(cfg.warehouse_path)),
        # Values passed between assets (a fit's record) live beside the artifacts, or at
        # execution.storage (a path or an fsspec URL, read through universal_pathlib), so any executor's
        # processes and workers, and runs launched later from the UI, find them.
        "io_manager": dg.FilesystemIOManager(base_dir=cfg.io_storage),
    }
