"""Ingestion assets: register landing files (validated with pandera) and the holiday reference table.

The landed rows are also an external, weekly-partitioned asset, ``landed_weeks``, that the weekly staging
models depend on week by week. Dagster does not write it; ``landing_files`` observes it after each scan:
the data version of a week partition is the content hash of that week's landed rows
(:func:`week_versions`), recorded only when it differs from the last one observed. So Dagster itself
reports exactly the staging partitions of the weeks whose content changed as stale ("has a new
dependency data version"), in the UI, for ``mmm-pipeline run`` and for the follow-up sensor alike
(``defs/staleness.stale_week_ranges``).

Why observations logged by ``landing_files`` and not an ``observable_source_asset`` returning
``DataVersionsByPartition``: the week hashes are only meaningful after the scan has registered or
quarantined the delivery, in the same run, and an observable source asset would need a run (or the
daemon's auto-observation) of its own, between the scan and the feature runs.
"""

import datetime as dt
from collections import defaultdict

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.events import DagsterEventType

from mmm_pipeline.ingest.calendar import holiday_table, last_complete_week
from mmm_pipeline.ingest.ingestion import landed_markets, scan_landing, week_versions
from mmm_pipeline.ingest.schemas import LANDING_RULES

from ...config import ProjectConfig
from ...warehouse import transaction
from ..resources import WRITER_POOL, WarehouseResource
from .model import MARKETS

#: The landed rows, an external weekly-partitioned asset (see the module docstring).
LANDED_KEY = dg.AssetKey("landed_weeks")
#: Data version of a week whose rows are all gone (superseded by a delivery without that week).
NO_ROWS = "no rows"


def observed_week_versions(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, str]:
    # The query Dagster itself uses for the data versions of a partitioned input (DataVersionCache).
    """The data version last observed for each week partition of ``landed_weeks``."""
    tags = instance.event_log_storage.get_latest_tags_by_partition(
        key, DagsterEventType.ASSET_OBSERVATION, [DATA_VERSION_TAG]
    )
    return {week: t[DATA_VERSION_TAG] for week, t in tags.items() if DATA_VERSION_TAG in t}


def changed_weeks(
    current: dict[dt.date, str], observed: dict[str, str], first: dt.date, last: dt.date
) -> dict[str, str]:
    """``{week: new data version}`` for the complete weeks from ``first`` to ``last`` whose content hash
    differs from the one last observed (new weeks included; a week whose rows all went gets
    :data:`NO_ROWS`). Pure, so the rule is testable without Dagster."""
    now = {w.isoformat(): v for w, v in current.items() if first <= w <= last}
    gone = {w: NO_ROWS for w, v in observed.items() if w not in now and v != NO_ROWS}
    return {w: v for w, v in sorted({**gone, **now}.items()) if observed.get(w) != v}


def landed_week_specs(weeks: dg.PartitionsDefinition) -> list[dg.AssetSpec]:
    """The external ``landed_weeks`` asset: weekly partitions like the staging models it feeds."""
    return [
        dg.AssetSpec(
            LANDED_KEY,
            group_name="ingestion",
            kinds={"duckdb"},
            partitions_def=weeks,
            deps=["landing_files"],
            description=(
                "The active landed rows (raw.landed_media, _kpi, _controls, _lift_tests), by week: observed "
                "by each landing scan, with the content hash of the week's rows (the latest delivery "
                "winning) as the week partition's data version. A week whose content changed makes the "
                "staging partitions of that week stale; a delivery that restates the same rows changes "
                "nothing."
            ),
        )
    ]


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
            "naming its rows and rule, and none of it reaches the warehouse. Then observes landed_weeks: "
            "a new data version for each week whose content changed."
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
            versions = week_versions(conn)
            markets = landed_markets(conn)
            files = conn.execute("SELECT count(*) FROM raw.landing_files WHERE status = 'active'").fetchone()[
                0
            ]
        context.log.info(f"landing scan: {result.summary()}")
        # Every complete week since calendar.start, not only the partitions this code location knows:
        # a delivery of older weeks moves the first partition back when the location reloads.
        last = last_complete_week(cfg.today(), cfg.calendar.week_start_index)
        observed = observed_week_versions(context.instance, LANDED_KEY)
        changed = changed_weeks(versions, observed, cfg.calendar.start, last)
        for week, version in changed.items():
            context.log_event(
                dg.AssetObservation(asset_key=LANDED_KEY, partition=week, tags={DATA_VERSION_TAG: version})
            )
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
                "changed_weeks": _span(sorted(changed)),
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


def _span(weeks: list[str]) -> str:
    if not weeks:
        return "none"
    return weeks[0] if len(weeks) == 1 else f"{len(weeks)} weeks {weeks[0]} .. {weeks[-1]}"
