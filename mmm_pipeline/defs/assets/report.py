"""The executive report asset, one partition per market: HTML + Markdown from the published BI catalog.

It runs after ``bi_model_snapshots`` and reads every number from ``bi.duckdb`` (read-only), so the report
and BI dashboards cannot disagree; it never opens the warehouse. The report folder is written aside and
renamed into place (``paths.reports``/<market>/<date>/), and the Markdown is shown in the Dagster UI.
"""

import datetime as dt
import hashlib

import dagster as dg

from mmm_pipeline.features.sql_models import discover_models
from mmm_pipeline.model.promotion import next_steps

from ...config import ProjectConfig
from ...report import (
    CheckStatus,
    ReportDataError,
    Thresholds,
    build_report,
    build_untrusted_page,
    html_problems,
    load_report_data,
    load_untrusted_data,
    serving_ids,
    write_report,
)
from ..partitions import weekly_partitions
from .features import build_feature_assets
from .ingestion import build_ingestion_assets
from .model import MARKETS


def data_quality_check_keys(cfg: ProjectConfig) -> list[dg.AssetCheckKey]:
    """Every data-quality check of the pipeline: the landing rules and the SQL models' rules.

    Taken from the same asset builders the code location uses, so a new rule shows up in the report
    without a list to maintain here.
    """
    assets = [
        *build_ingestion_assets(cfg),
        *build_feature_assets(cfg, discover_models(cfg.sql_models_dir, cfg), weekly_partitions(cfg)),
    ]
    return sorted(
        {k for a in assets for k in a.check_keys}, key=lambda k: (k.asset_key.to_user_string(), k.name)
    )


def _check_statuses(instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey]) -> list[CheckStatus]:
    """The latest evaluation of each check in the Dagster instance (PLANNED: never evaluated)."""
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    return [
        CheckStatus(
            k.asset_key.to_user_string(), k.name, latest[k].status.value if k in latest else "PLANNED"
        )
        for k in keys
    ]


def build_report_assets(cfg: ProjectConfig) -> list[dg.AssetsDefinition]:
    gate = cfg.model.gate
    quality_checks = data_quality_check_keys(cfg)
    monitoring = cfg.monitoring
    alarms = (
        {"false_alarm_rate_per_year": monitoring.false_alarm_rate_per_year,
         "min_weeks_before_event": monitoring.min_weeks_before_event} if monitoring.enabled else {}
    )  # fmt: skip
    thresholds = Thresholds(
        max_r_hat=gate.max_r_hat, min_ess=min(gate.min_ess_bulk, gate.min_ess_tail),
        max_divergences=gate.max_divergences, max_roas_change=cfg.model.max_roas_change, **alarms,
    )  # fmt: skip

    @dg.asset(
        group_name="report",
        kinds={"html", "markdown"},
        partitions_def=MARKETS,
        # after the monitoring tables are published too, so the report shows this run's tracking
        deps=[
            "bi_model_snapshots",
            *(["drift_events", "recommendation_scorecard"] if cfg.monitoring.enabled else []),
        ],
        description=(
            "The market's executive report, from the published BI catalog (read-only, so report and BI "
            "never disagree): headline uplift of the recommended plan with its 94% interval and "
            "probability, recommended actions, channel ROAS/contribution/marginal ROAS, response curves "
            "and adstock, decomposition and waterfall, convergence, CV against the baselines, ROAS "
            "stability, data quality, warnings, scenarios and next steps. Writes a self-contained HTML "
            "(charts embedded, print stylesheet) and a Markdown version into "
            f"`{cfg.reports_dir}/<market>/<date>/`, atomically."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                "report_complete",
                asset="executive_report",
                description="the HTML report has every section and no network reference (opens offline)",
            )
        ],
        metadata={"reports_folder": str(cfg.reports_dir)},
        # What changes a report besides its data: the thresholds it judges by and the KPI's name.
        code_version=hashlib.sha256(f"{thresholds}|{cfg.kpi.name}".encode()).hexdigest()[:16],
    )
    def executive_report(context: dg.AssetExecutionContext):
        market = context.partition_key
        try:
            data = load_report_data(
                cfg.bi_database_path,
                market,
                cfg.kpi.name,
                checks=_check_statuses(context.instance, quality_checks),
            )
        except ReportDataError as exc:
            if serving_ids(cfg.bi_database_path, market)[0] is not None:
                raise dg.Failure(str(exc)) from None
            yield from _untrusted_page(context, market)
            return
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        report = build_report(data, thresholds, now=now)
        folder = write_report(report, cfg.reports_dir, market, now.date())
        problems = html_problems(report.html, report.sections)
        context.log.info(f"market {market}: report written to {folder / 'report.html'}")
        yield dg.MaterializeResult(
            metadata={
                "report_html": dg.MetadataValue.path(str(folder / "report.html")),
                "report_markdown": dg.MetadataValue.path(str(folder / "report.md")),
                "champion": data.model_id,
                "optimization_id": str(report.manifest["optimization_id"]),
                "sections": ", ".join(report.sections),
                "warnings": int(report.manifest["warnings"]),
                "report": dg.MetadataValue.md(_text_only(report.markdown)),
                **{
                    f"chart_{c.name}": dg.MetadataValue.md(f"![{c.title}]({c.data_uri})")
                    for c in report.charts
                },
            }
        )
        yield dg.AssetCheckResult(
            check_name="report_complete",
            passed=not problems,
            metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")},
        )

    def _untrusted_page(context: dg.AssetExecutionContext, market: str):
        """No champion: write the "model not yet trustworthy" page in the report's place."""
        try:
            data = load_untrusted_data(cfg.bi_database_path, market, cfg.kpi.name)
        except ReportDataError as exc:
            raise dg.Failure(str(exc)) from None
        attempts = data.attempts
        worst = None if attempts.empty else attempts.iloc[-1].get("worst_parameters")
        steps = next_steps(data.run.to_dict(), gate, worst if isinstance(worst, str) else None)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        page = build_untrusted_page(data, steps, now=now)
        folder = write_report(page, cfg.reports_dir, market, now.date())
        context.log.warning(
            f"market {market}: no trustworthy model yet: "
            f"wrote {folder / 'report.html'} in place of the report"
        )
        yield dg.MaterializeResult(
            metadata={
                "report_html": dg.MetadataValue.path(str(folder / "report.html")),
                "report_markdown": dg.MetadataValue.path(str(folder / "report.md")),
                "champion": "none",
                "page": "model not yet trustworthy",
                "report": dg.MetadataValue.md(page.markdown),
            }
        )
        problems = html_problems(page.html, page.sections)
        yield dg.AssetCheckResult(
            check_name="report_complete",
            passed=not problems,
            metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")},
        )

    return [executive_report]


def _text_only(markdown: str) -> str:
    """The report's Markdown without its image links (figures/*.png do not resolve in the UI; the charts
    are attached as separate metadata entries)."""
    return "\n".join(line for line in markdown.splitlines() if not line.startswith("!["))
