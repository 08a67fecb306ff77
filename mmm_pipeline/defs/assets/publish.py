"""Publishing: the marts BI reads, as atomic Parquet snapshots behind the read-only ``bi.duckdb``."""

import dagster as dg

from ...config import ProjectConfig
from ...publish import export_snapshot, published_snapshots, write_catalog
from ...sql_models import SqlModel
from ...warehouse import WarehouseResource
from ..resources import WRITER_POOL


def build_publish_assets(cfg: ProjectConfig, models: dict[str, SqlModel]) -> list[dg.AssetsDefinition]:
    marts = [m for m in models.values() if m.layer == "marts"]

    @dg.asset(
        group_name="publish",
        kinds={"duckdb", "parquet"},
        deps=[m.name for m in marts],
        pool=WRITER_POOL,
        description=(
            "Exports every mart to a Parquet snapshot (written aside, then renamed into place) and "
            "rebuilds the read-only BI catalog of views over them, so BI tools read without ever "
            "blocking the pipeline or seeing a half-written table."
        ),
        metadata={"bi_database": str(cfg.bi_database_path), "publish_folder": str(cfg.publish_dir)},
    )
    def bi_snapshots(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        counts: dict[str, int] = {}
        with warehouse.get_connection() as conn:
            for model in marts:
                counts[model.name] = export_snapshot(
                    conn, model.relation, cfg.publish_dir / f"{model.name}.parquet"
                )
        write_catalog(cfg.bi_database_path, published_snapshots(cfg.publish_dir))
        context.log.info(f"published {len(counts)} table(s) to {cfg.bi_database_path}")
        table = "| table | rows |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in counts.items())
        return dg.MaterializeResult(
            metadata={"tables": dg.MetadataValue.md(table), "bi_database": str(cfg.bi_database_path)}
        )

    return [bi_snapshots]
