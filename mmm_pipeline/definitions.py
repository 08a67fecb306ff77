"""The code location: every asset, check, job and resource, built from the project config.

The config file comes from ``$MMM_PIPELINE_CONFIG`` (or ``./mmm_pipeline.yaml``); the CLI builds the
same definitions from its ``--config``.
"""

from __future__ import annotations

import dagster as dg

from mmm_pipeline.features.sql_models import discover_models

from .config import ProjectConfig, load_config
from .defs.assets.cv import build_cv_assets
from .defs.assets.features import build_feature_assets
from .defs.assets.ingestion import build_ingestion_assets, landed_week_specs
from .defs.assets.model import build_model_assets
from .defs.assets.monitoring import build_monitoring_assets
from .defs.assets.optimization import build_optimization_assets
from .defs.assets.publish import build_publish_assets
from .defs.assets.report import build_report_assets
from .defs.assets.sensitivity import build_sensitivity_assets
from .defs.jobs import MODEL_JOB, build_jobs
from .defs.partitions import weekly_partitions
from .defs.resources import build_resources
from .defs.schedules import build_schedules
from .defs.sensors import build_sensors


def build_definitions(cfg: ProjectConfig) -> dg.Definitions:
    models = discover_models(cfg.sql_models_dir, cfg)
    # Read once: the first week with data comes from the warehouse (a DuckDB connection each time).
    weeks = weekly_partitions(cfg)
    jobs = build_jobs(cfg, weeks)
    return dg.Definitions(
        assets=[
            *build_ingestion_assets(cfg),
            *landed_week_specs(weeks),
            *build_feature_assets(cfg, models, weeks),
            *build_model_assets(cfg),
            *build_sensitivity_assets(cfg),
            *build_cv_assets(cfg),
            *build_optimization_assets(cfg),
            *build_publish_assets(cfg, models),
            *build_monitoring_assets(cfg),
            *build_report_assets(cfg),
        ],
        jobs=jobs,
        schedules=build_schedules(cfg, jobs),
        sensors=build_sensors(cfg, jobs),
        resources=build_resources(cfg),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_config())


def model_job(config_path: str) -> dg.JobDefinition:
    """The model job of the project whose config file is ``config_path``: what executor workers rebuild
    to run a step (``defs/executors.py``, ``JOB_RECONSTRUCTOR``)."""
    return build_definitions(load_config(config_path)).resolve_job_def(MODEL_JOB)
