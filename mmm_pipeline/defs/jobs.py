"""Jobs: scan the landing folder; rebuild features for a range of weeks; refit a market's model."""

from __future__ import annotations

import dagster as dg

from ..config import ProjectConfig
from .assets.model import MARKETS
from .executors import model_executor

INGEST_JOB = "ingest_landing"
FEATURES_JOB = "build_features"
MODEL_JOB = "refit_model"
#: The schedule's job: scan the landing folder and rebuild the newest complete week (then, by the
#: follow-up sensor, a refit per market).
WEEKLY_JOB = "weekly_update"
#: Performance tracking and drift events alone (``mmm-pipeline track``).
TRACKING_JOB = "track_performance"

#: Performance tracking and drift events: refreshed after new weeks and after refits.
MONITORING_SELECTION = dg.AssetSelection.groups("monitoring")

INGEST_SELECTION = dg.AssetSelection.groups("ingestion")
FEATURES_SELECTION = (
    dg.AssetSelection.groups("staging", "intermediate", "marts")
    | dg.AssetSelection.assets("bi_snapshots")
    | MONITORING_SELECTION
)
MODEL_SELECTION = (
    dg.AssetSelection.groups("model", "optimization", "report")
    | dg.AssetSelection.assets("bi_model_snapshots")
    | MONITORING_SELECTION
)
#: One budget across markets (``optimization.geo_plan``): the geo recommendation and its BI publish.
GEO_JOB = "geo_budget"
GEO_ASSETS = ("geo_budget_recommendation", "bi_geo_snapshots")
#: What the weekly schedule runs in its first run (extend by adding groups, e.g. "report").
WEEKLY_SELECTION = INGEST_SELECTION | FEATURES_SELECTION


def build_jobs(cfg: ProjectConfig, weeks: dg.PartitionsDefinition) -> list[dg.UnresolvedAssetJobDefinition]:
    geo = cfg.optimization.enabled and cfg.optimization_geo_plan_path is not None
    # The geo budget reads every market's champion: it runs on its own, never inside one market's run.
    model_selection = MODEL_SELECTION - dg.AssetSelection.assets(*GEO_ASSETS) if geo else MODEL_SELECTION
    geo_jobs = [
        dg.define_asset_job(
            GEO_JOB,
            selection=dg.AssetSelection.assets(*GEO_ASSETS),
            description=(
                "Split one national budget over every market x channel with each market's champion "
                "(optimization.geo_plan), record it and publish it for BI."
            ),
        )
    ]
    return [
        *(geo_jobs if geo else []),
        dg.define_asset_job(
            INGEST_JOB,
            selection=INGEST_SELECTION,
            description="Scan the landing folder: validate, register or quarantine new files; observe the "
            "landed weeks whose content changed.",
        ),
        dg.define_asset_job(
            FEATURES_JOB,
            selection=FEATURES_SELECTION,
            partitions_def=weeks,
            description=(
                "Rebuild the staging models for a range of weeks (one run for any range), then the "
                "intermediate and mart models, and publish the marts for BI."
            ),
        ),
        dg.define_asset_job(
            MODEL_JOB,
            selection=model_selection,
            partitions_def=MARKETS,
            # UI and schedule runs spread CV fold steps over processes, or over the dask cluster
            # (execution.executor: dask); the CLI runs them as execution.executor says (runner.py).
            executor_def=model_executor(cfg),
            description=(
                "Refit one market's MMM on every modeled week, cross-validate it fold by fold, gate it "
                "on its diagnostics and CV, register it, promote it if it passed, recommend a budget "
                "with the champion, publish for BI, write the executive report."
            ),
        ),
        dg.define_asset_job(
            TRACKING_JOB,
            selection=MONITORING_SELECTION,
            description="Recompute the champions' performance tracking and evaluate the drift rules.",
        ),
        dg.define_asset_job(
            WEEKLY_JOB,
            selection=WEEKLY_SELECTION,
            partitions_def=weeks,
            description=(
                "The weekly schedule's run: scan the landing folder, rebuild the week's features, update "
                "performance tracking and drift events. On success the follow-up sensor starts a refit "
                "(CV, optimization, publishing) per market (schedule.refit)."
            ),
        ),
    ]
