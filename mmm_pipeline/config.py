"""Project configuration: one YAML file, validated by pydantic.

Every path the pipeline touches (landing folder, DuckDB files, published snapshots, artifacts) is
resolved from this file, relative to the folder that holds it, so two projects on one machine never
share state by accident. The file is named by ``--config`` on the CLI or the ``MMM_PIPELINE_CONFIG``
environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from mmm_pipeline.cv.folds import CVConfig
from mmm_pipeline.execution_settings import ExecutionConfig
from mmm_pipeline.ingest.contract import InputContract
from mmm_pipeline.model.settings import ModelConfig
from mmm_pipeline.monitoring.settings import MonitoringConfig, ScheduleConfig, SensorsConfig
from mmm_pipeline.optimize.settings import ConditionConfig, OptimizationConfig
from mmm_pipeline.settings import ConfigError, StrictModel

CONFIG_ENV_VAR = "MMM_PIPELINE_CONFIG"
DEFAULT_CONFIG_NAME = "mmm_pipeline.yaml"

#: The built-in budget plan (``optimization.plan: null``): generic, no channel names.
DEFAULT_PLAN = Path(__file__).resolve().parent / "demo" / "plans" / "default_plan.yaml"


class PathsConfig(StrictModel):
    """Paths, relative to the config file's folder unless absolute."""

    data_dir: str = "data"
    landing: str | None = None
    warehouse: str | None = None
    bi_database: str | None = None
    publish: str | None = None
    quarantine: str | None = None
    artifacts: str | None = None
    dagster_home: str | None = None
    reports: str | None = None
    """Executive reports, ``<reports>/<market>/<date>/report.html|report.md``; default ``data/reports``."""
    sql_models: str | None = None
    """Folder of the SQL models; default is the ``dbt_like_sql`` folder shipped with the package."""


class ProjectConfig(InputContract):
    """The whole project configuration (the YAML file's top level).

    The input contract's sections (markets, kpi, calendar, channels, controls, validation) come from
    :class:`~mmm_pipeline.ingest.contract.InputContract`; the others from each stage's package.
    """

    project: str = "mmm"
    model: ModelConfig = ModelConfig()
    cv: CVConfig = CVConfig()
    optimization: OptimizationConfig = OptimizationConfig()
    paths: PathsConfig = PathsConfig()
    # Continuous operation (README "Continuous operation"; models in monitoring/settings.py).
    schedule: ScheduleConfig = ScheduleConfig()
    sensors: SensorsConfig = SensorsConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    conditions: list[ConditionConfig] = Field(default_factory=list)
    # Which executor runs the per-market model steps (README "Running with a cluster").
    execution: ExecutionConfig = ExecutionConfig()

    # Set by load_config: the folder that relative paths resolve against.
    root: Path = Field(default=Path("."), exclude=True)
    # Set by load_config: the file itself, so that processes elsewhere (executor workers) load the same.
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _conditions_on_numeric_controls(self) -> ProjectConfig:
        categorical = set(self.categorical_controls)
        for i, condition in enumerate(self.conditions):
            if condition.when.control in categorical:
                raise ValueError(
                    f"conditions.{i}: control {condition.when.control!r} is categorical (labels); "
                    "a condition compares a numeric control's level"
                )
        return self

    @model_validator(mode="after")
    def _saturation_channels_known(self) -> ProjectConfig:
        """Per-channel curve families name configured channels (caught at load, not when a fit starts)."""
        unknown = sorted(set(self.model.spec.saturation_by_channel) - set(self.channel_names))
        if unknown:
            raise ValueError(
                f"model.spec.saturation_by_channel names {unknown}, which are not configured channels "
                f"({', '.join(self.channel_names)})"
            )
        return self

    def _path(self, value: str | None, default: str) -> Path:
        p = Path(value) if value else Path(self.paths.data_dir) / default
        return p if p.is_absolute() else (self.root / p).resolve()

    @property
    def data_dir(self) -> Path:
        return self._path(self.paths.data_dir, "")

    @property
    def landing_dir(self) -> Path:
        return self._path(self.paths.landing, "landing")

    @property
    def warehouse_path(self) -> Path:
        return self._path(self.paths.warehouse, "warehouse.duckdb")

    @property
    def bi_database_path(self) -> Path:
        return self._path(self.paths.bi_database, "bi.duckdb")

    @property
    def publish_dir(self) -> Path:
        return self._path(self.paths.publish, "published")

    @property
    def quarantine_dir(self) -> Path:
        return self._path(self.paths.quarantine, "quarantine")

    @property
    def artifacts_dir(self) -> Path:
        return self._path(self.paths.artifacts, "artifacts")

    @property
    def dagster_home(self) -> Path:
        return self._path(self.paths.dagster_home, "dagster_home")

    @property
    def reports_dir(self) -> Path:
        return self._path(self.paths.reports, "reports")

    @property
    def io_storage(self) -> str:
        """Where step outputs are pickled: ``execution.storage`` (an fsspec URL as given, a path resolved
        against the config file's folder), else ``<artifacts>/dagster_io``."""
        storage = self.execution.storage
        if storage is None:
            return str(self.artifacts_dir / "dagster_io")
        if "://" in storage:
            return storage
        p = Path(storage)
        return str(p if p.is_absolute() else (self.root / p).resolve())

    @property
    def celery_folder(self) -> Path:
        """The filesystem broker's and result backend's folder (``execution.celery.folder``)."""
        return self._path(self.execution.celery.folder, "celery")

    @property
    def sql_models_dir(self) -> Path:
        if self.paths.sql_models:
            return self._path(self.paths.sql_models, "")
        return Path(__file__).resolve().parent.parent / "dbt_like_sql"

    @property
    def optimization_plan_path(self) -> Path:
        """The base budget plan: ``optimization.plan`` resolved, or the built-in default plan."""
        if self.optimization.plan is None:
            return DEFAULT_PLAN
        p = Path(self.optimization.plan)
        return p if p.is_absolute() else (self.root / p).resolve()

    @property
    def optimization_scenario_paths(self) -> list[Path]:
        return [
            p if p.is_absolute() else (self.root / p).resolve()
            for p in map(Path, self.optimization.scenarios)
        ]

    @property
    def optimization_geo_plan_path(self) -> Path | None:
        """The geo budget plan (``optimization.geo_plan``) resolved, or None when there is none."""
        if self.optimization.geo_plan is None:
            return None
        p = Path(self.optimization.geo_plan)
        return p if p.is_absolute() else (self.root / p).resolve()

    def optimization_files(self) -> list[Path]:
        """The plan and scenario files; a missing one is a :class:`ConfigError` naming its key and path."""
        named = [("optimization.plan", self.optimization_plan_path)]
        named += [(f"optimization.scenarios.{i}", p) for i, p in enumerate(self.optimization_scenario_paths)]
        for key, path in named:
            if not path.is_file():
                raise ConfigError(
                    f"key '{key}': plan file {path} does not exist (paths are relative to {self.root})"
                )
        return [path for _, path in named]


def resolve_config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: an explicit path, else $MMM_PIPELINE_CONFIG, else ./mmm_pipeline.yaml."""
    candidate = path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_NAME
    resolved = Path(candidate).expanduser().resolve()
    if not resolved.is_file():
        raise ConfigError(
            f"config file {resolved} does not exist: pass --config PATH or set {CONFIG_ENV_VAR} "
            "(`mmm-pipeline init DIR` scaffolds a project)"
        )
    return resolved


def load_config(path: str | os.PathLike[str] | None = None) -> ProjectConfig:
    """Read and validate the YAML config; errors name the file and the offending key."""
    resolved = resolve_config_path(path)
    try:
        raw = yaml.safe_load(resolved.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{resolved}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{resolved}: the top level must be a mapping of keys")
    try:
        cfg = ProjectConfig.model_validate({**raw, "root": resolved.parent, "source": resolved})
        cfg.channel_aliases()
        cfg.control_aliases()
    except ValidationError as exc:
        problems = "; ".join(
            f"key '{'.'.join(str(p) for p in err['loc'])}': {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{resolved}: {problems}") from None
    if cfg.optimization.enabled:
        try:
            cfg.optimization_files()
        except ConfigError as exc:
            raise ConfigError(f"{resolved}: {exc}") from None
        geo = cfg.optimization_geo_plan_path
        if geo is not None and not geo.is_file():
            raise ConfigError(
                f"{resolved}: key 'optimization.geo_plan': plan file {geo} does not exist "
                f"(paths are relative to {cfg.root})"
            )
    return cfg
