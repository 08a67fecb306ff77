"""Resources, built from the project config so every path comes from one file."""

from __future__ import annotations

from ..config import ProjectConfig
from ..warehouse import WarehouseResource

#: Dagster pool every warehouse writer joins; the instance limits it to one (DuckDB has one writer).
WRITER_POOL = "duckdb_writer"


def build_resources(cfg: ProjectConfig) -> dict[str, object]:
    return {"warehouse": WarehouseResource(database=str(cfg.warehouse_path))}
