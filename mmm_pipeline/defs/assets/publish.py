"""Publishing: the marts BI reads, as versioned Parquet snapshots behind the read-only ``bi.duckdb``."""

import dagster as dg

from mmm_pipeline.features.sql_models import SqlModel
from mmm_pipeline.publish.bi import publish
from mmm_pipeline.tables import (
    GEO_OPTIMIZATION_TABLES,
    MONITORING_TABLES,
    OPTIMIZATION_TABLES,
    RUN_TABLES,
    RUN_VIEWS,
)
from mmm_pipeline.tables import ensure_models as ensure_schema
from mmm_pipeline.tables import ensure_monitoring as ensure_monitoring_schema
from mmm_pipeline.tables import ensure_optimization as ensure_optimization_schema

from ...config import ProjectConfig
from ..resources import WRITER_POOL, WarehouseResource
from .model import MARKETS
from .optimization import GEO_ASSET


def build_publish_assets(cfg: ProjectConfig, models: dict[str, SqlModel]) -> list[dg.AssetsDefinition]:
    marts = [m for m in models.values() if m.layer == "marts"]
    optimization = cfg.optimization.enabled

    @dg.asset(
        group_name="publish",
        kinds={"duckdb", "parquet"},
        deps=[m.name for m in marts],
        pool=WRITER_POOL,
        description=(
            "Exports every mart into a new versioned Parquet snapshot (the other published tables carried "
            "over) and switches the read-only BI catalog to it with one rename, so BI tools read without "
            "ever blocking the pipeline, and a connection never sees half a table nor two publishes mixed."
        ),
        metadata={"bi_database": str(cfg.bi_database_path), "publish_folder": str(cfg.publish_dir)},
    )
    def bi_snapshots(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        with warehouse.get_connection() as conn:  # the writer lock also keeps publishers apart
            counts = publish(conn, {m.name: m.relation for m in marts}, cfg.publish_dir, cfg.bi_database_path)
        context.log.info(f"published {len(counts)} table(s) to {cfg.bi_database_path}")
        return dg.MaterializeResult(
            metadata={
                "tables": dg.MetadataValue.md(_row_counts(counts)),
                "bi_database": str(cfg.bi_database_path),
            }
        )

    @dg.asset(
        group_name="publish",
        kinds={"duckdb", "parquet"},
        deps=["model_registry", "prior_sensitivity", *(["budget_recommendation"] if optimization else [])],
        pool=WRITER_POOL,
        # One partition per market: a materialization publishes every market's tables, and its partition
        # says whose new model or recommendation it carries. So another market's publish leaves this
        # market's report current (Dagster's stale status follows the market's own partition).
        partitions_def=MARKETS,
        description=(
            "Publishes the market's new model or recommendation (with every other market's tables) for "
            "BI the same way: model_runs (with champion_model_runs and "
            "latest_model_runs, one row per market), every run's insight tables (`model_<table>`) and the "
            "current champions' rows (`champion_<table>`) as Parquet snapshots "
            "behind the BI catalog; likewise the budget recommendations: every optimization "
            "(`optimization_<table>`) and each market's latest one (`latest_<table>`), and the geo budget "
            "tables (`optimization_geo_<table>`, `latest_geo_<table>`; empty without a geo plan)."
        ),
        metadata={"bi_database": str(cfg.bi_database_path), "publish_folder": str(cfg.publish_dir)},
    )
    def bi_model_snapshots(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        relations = {"model_runs": "models.model_runs"}
        relations |= {name: f"models.{name}" for name in RUN_VIEWS}
        relations |= {f"model_{name}": f"models.{name}" for name in RUN_TABLES}
        relations |= {f"champion_{name}": f"models.champion_{name}" for name in RUN_TABLES}
        if optimization:
            relations |= {f"optimization_{name}": f"optimization.{name}" for name in OPTIMIZATION_TABLES}
            relations |= {f"latest_{name}": f"optimization.latest_{name}" for name in OPTIMIZATION_TABLES}
            # the geo tables too (empty without a geo plan): the catalog's relations never depend on config
            relations |= _geo_relations()
        relations |= MONITORING_TABLES  # performance_tracking, drift_events, optimization_history
        relations |= {"prior_sensitivity": "models.prior_sensitivity"}  # every computation, all markets
        with warehouse.get_connection() as conn:
            ensure_schema(conn)
            ensure_monitoring_schema(conn)
            if optimization:
                ensure_optimization_schema(conn)
            counts = publish(conn, relations, cfg.publish_dir, cfg.bi_database_path)
        context.log.info(f"published {len(counts)} model and optimization table(s) to {cfg.bi_database_path}")
        return dg.MaterializeResult(metadata={"tables": dg.MetadataValue.md(_row_counts(counts))})

    geo_assets: list[dg.AssetsDefinition] = []
    if optimization and cfg.optimization_geo_plan_path is not None:

        @dg.asset(
            group_name="publish",
            kinds={"duckdb", "parquet"},
            deps=[GEO_ASSET],
            pool=WRITER_POOL,
            description=(
                "Publishes the geo budget recommendations for BI the same way: every geo optimization "
                "(`optimization_geo_plan_summary`, `optimization_geo_market_totals`, "
                "`optimization_geo_allocations`) and the latest one (`latest_geo_<table>`)."
            ),
            metadata={"bi_database": str(cfg.bi_database_path), "publish_folder": str(cfg.publish_dir)},
        )
        def bi_geo_snapshots(
            context: dg.AssetExecutionContext, warehouse: WarehouseResource
        ) -> dg.MaterializeResult:
            relations = _geo_relations()
            with warehouse.get_connection() as conn:
                ensure_optimization_schema(conn)
                counts = publish(conn, relations, cfg.publish_dir, cfg.bi_database_path)
            context.log.info(f"published {len(counts)} geo budget table(s) to {cfg.bi_database_path}")
            return dg.MaterializeResult(metadata={"tables": dg.MetadataValue.md(_row_counts(counts))})

        geo_assets.append(bi_geo_snapshots)

    return [bi_snapshots, bi_model_snapshots, *geo_assets]


def _geo_relations() -> dict[str, str]:
    """BI name -> warehouse relation of the geo budget tables: every geo optimization and the latest."""
    relations = {f"optimization_{name}": f"optimization.{name}" for name in GEO_OPTIMIZATION_TABLES}
    return relations | {f"latest_{name}": f"optimization.latest_{name}" for name in GEO_OPTIMIZATION_TABLES}


def _row_counts(counts: dict[str, int]) -> str:
    return "| table | rows |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in counts.items())
