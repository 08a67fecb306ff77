"""Resources, built from the project config so every path comes from one file."""

from __future__ import annotations

import dagster as dg

from ..config import ProjectConfig
from ..warehouse import WarehouseResource

#: Dagster pool every warehouse writer joins; the instance limits it to one (DuckDB has one writer).
WRITER_POOL = "duckdb_writer"


def build_resources(cfg: ProjectConfig) -> dict[str, object]:
    return {
        "warehouse": WarehouseResource(database=str(cfg.warehouse_path)),
        # Values passed between assets (a fit's record) live beside the artifacts, so any executor's
        # processes, and runs launched later from the UI, find them.
        "io_manager": dg.FilesystemIOManager(base_dir=str(cfg.artifacts_dir / "dagster_io")),
    }
