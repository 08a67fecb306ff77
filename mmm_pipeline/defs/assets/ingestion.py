"""Ingestion assets: register landing files (validated with pandera) and the holiday reference table."""

from collections import defaultdict

import dagster as dg

from mmm_pipeline.ingest.calendar import holiday_table
from mmm_pipeline.ingest.ingestion import landed_markets, pending_week_ranges, scan_landing
from mmm_pipeline.ingest.schemas import LANDING_RULES

from ...config import ProjectConfig
from ...warehouse import transaction
from ..resources import WRITER_POOL, WarehouseResource
from .model import MARKETS

#: Metadata key of the queued week ranges, JSON ``[[first, last], ...]`` (read by the follow-up sensor).
PENDING_RANGES_KEY = "pending_week_ranges"


def build_ingestion_assets(cfg: ProjectConfig) -> list[dg.AssetsDefinition]:
    @dg.asset(
        group_name="ingestion",
        kinds={"python", "duckdb"},
        pool=WRITER_POOL,
        description=(
            "Scans the landing folder and registers every new or changed file (CSV, gzip/zip CSV, Excel "
            "or Parquet; media, KPI, controls, lift tests) after validating it with pandera; any other "
            "entry (wrong folder or format, symlink out of the folder) is quarantined. Content already "
            "delivered changes nothing; a file that breaks a rule is quarantined with an error report "
            "naming its rows and rule, and none of it reaches the warehouse. Queues the weeks each "
            "accepted file touches."
        ),
        check_specs=[
            dg.AssetCheckSpec(rule, asset="landing_files", description=text, blocking=True)
            for rule, text in LANDING_RULES.items()
        ],
        metadata={"landing_folder": str(cfg.landing_dir), "quarantine_folder": str(cfg.quarantine_dir)},
    )
    def landing_files(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        with warehouse.get_connection() as conn:
            result = scan_landing(conn, cfg, cfg.landing_dir, cfg.quarantine_dir, context.log)
            ranges = pending_week_ranges(conn, cfg)
            markets = landed_markets(conn)
            files = conn.execute("SELECT count(*) FROM raw.landing_files WHERE status = 'active'").fetchone()[
                0
            ]
        context.log.info(f"landing scan: {result.summary()}")
        for line in result.file_lines():
            context.log.info(f"  {line}")
        new_markets = sorted(set(markets) - set(context.instance.get_dynamic_partitions(MARKETS.name)))
        if new_markets:
            context.instance.add_dynamic_partitions(MARKETS.name, new_markets)
            context.log.info(f"new market partition(s) for the model: {', '.join(new_markets)}")
        broken: dict[str, list[str]] = defaultdict(list)
        for error in result.rejected:
            for violation in error.violations:
                broken[violation.rule].append(f"{error.path.name}: {violation.describe()}")
        warned: dict[str, list[str]] = defaultdict(list)
        for rel, violation in result.warnings:
            warned[violation.rule].append(f"{rel}: {violation.describe()}")
        checks = [
            dg.AssetCheckResult(
                check_name=rule,
                passed=rule not in broken and rule not in warned,
                severity=dg.AssetCheckSeverity.ERROR if rule in broken else dg.AssetCheckSeverity.WARN,
                metadata={
                    "rejected_files" if rule in broken else "loaded_with_warning": dg.MetadataValue.md(
                        "\n".join(f"- {m}" for m in broken.get(rule) or warned[rule])
                    )
                }
                if rule in broken or rule in warned
                else {},
            )
            for rule in LANDING_RULES
        ]
        return dg.MaterializeResult(
            metadata={
                "accepted": len(result.accepted),
                "duplicates": len(result.duplicates),
                "superseded": len(result.superseded),
                "rejected": len(result.rejected),
                "unchanged": result.unchanged,
                "rows_loaded": result.rows_loaded,
                "warnings": len(result.warnings),
                "files": dg.MetadataValue.md(
                    "\n".join(f"- {line}" for line in result.file_lines()) or "none"
                ),
                "active_files": files,
                "markets": ", ".join(markets),
                "pending_weeks": dg.MetadataValue.md("\n".join(f"- {a} .. {b}" for a, b in ranges) or "none"),
                PENDING_RANGES_KEY: dg.MetadataValue.json(
                    [[a.isoformat(), b.isoformat()] for a, b in ranges]
                ),
            },
            check_results=checks,
        )

    @dg.asset(
        group_name="ingestion",
        kinds={"python", "duckdb"},
        pool=WRITER_POOL,
        description=(
            "Public holidays for the configured country (python-holidays) from the first calendar year "
            "to next year; the calendar features of the modeling table count them per week."
        ),
    )
    def holiday_calendar(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        last_year = cfg.today().year + 1
        frame = holiday_table(cfg.calendar.holidays_country, cfg.calendar.start.year, last_year)
        frame["country"] = cfg.calendar.holidays_country or ""
        with warehouse.get_connection() as conn:
            conn.register("holiday_frame", frame)
            with transaction(conn):
                conn.execute("DELETE FROM raw.holidays")
                conn.execute("INSERT INTO raw.holidays SELECT date, name, country FROM holiday_frame")
        return dg.MaterializeResult(
            metadata={"dagster/row_count": len(frame), "country": cfg.calendar.holidays_country or "none"}
        )

    return [landing_files, holiday_calendar]
