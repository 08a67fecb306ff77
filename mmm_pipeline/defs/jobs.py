"""Jobs: scan the landing folder; rebuild features for a range of weeks and publish them."""

from __future__ import annotations

import dagster as dg

from ..calendar import weekly_partitions
from ..config import ProjectConfig

INGEST_JOB = "ingest_landing"
FEATURES_JOB = "build_features"

INGEST_SELECTION = dg.AssetSelection.groups("ingestion")
FEATURES_SELECTION = dg.AssetSelection.groups("staging", "intermediate", "marts", "publish")


def build_jobs(cfg: ProjectConfig) -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        dg.define_asset_job(
            INGEST_JOB,
            selection=INGEST_SELECTION,
            description="Scan the landing folder: validate, register or quarantine new files; queue weeks.",
        ),
        dg.define_asset_job(
            FEATURES_JOB,
            selection=FEATURES_SELECTION,
            partitions_def=weekly_partitions(cfg.calendar),
            description=(
                "Rebuild the staging models for a range of weeks (one run for any range), then the "
                "intermediate and mart models, and publish the marts for BI."
            ),
        ),
    ]
