"""Project configuration: one YAML file, validated by pydantic.

Every path the pipeline touches (landing folder, DuckDB files, published snapshots, artifacts) is
resolved from this file, relative to the folder that holds it, so two projects on one machine never
share state by accident. The file is named by ``--config`` on the CLI or the ``MMM_PIPELINE_CONFIG``
environment variable.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mmm_pipeline.cv.folds import CVSpec

from .model.remedies import RemediesConfig
from .model.spec import ModelSpec
from .monitoring.settings import ConditionConfig, MonitoringConfig, ScheduleConfig, SensorsConfig

CONFIG_ENV_VAR = "MMM_PIPELINE_CONFIG"
DEFAULT_CONFIG_NAME = "mmm_pipeline.yaml"

#: Names that become column names in SQL must look like this; raw names map onto them via aliases.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

#: The built-in budget plan (``optimization.plan: null``): generic, no channel names.
DEFAULT_PLAN = Path(__file__).resolve().parent / "demo" / "plans" / "default_plan.yaml"

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


class StrictModel(BaseModel):
    """Config models reject unknown keys, so a typo is an error naming the key, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_identifier(value: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(
            f"{value!r} is not a safe identifier: "
            "use lower-case letters, digits and '_', starting with a letter"
        )
    return value


#: A name that becomes part of a SQL column name (channels, controls, markets).
Identifier = Annotated[str, AfterValidator(_check_identifier)]


class ChannelConfig(StrictModel):
    """A media channel. ``aliases`` are the names platform exports use for it (e.g. 'Facebook Ads')."""

    name: Identifier
    aliases: list[str] = Field(default_factory=list)
    group: str = "other"


class ControlConfig(StrictModel):
    """A control variable (price, macro index, competitor spend, holiday flag...)."""

    name: Identifier
    aliases: list[str] = Field(default_factory=list)
    kind: Literal["numeric", "categorical"] = "numeric"
    """``categorical``: the values are labels (events, promotions, holidays by name). The warehouse and
    BI keep the label; the model gets one 0/1 indicator per label against a baseline label
    (:mod:`mmm_pipeline.ingest.categorical`). A numeric control that receives labels is rejected
    with a message saying how to declare it: a data delivery never changes what kind of variable the
    model has."""
    fill: Literal["zero", "ffill", "error"] = "zero"
    """Weeks without a value: 0, the last known value, or a failed check. Categorical: no label (the
    no-label group), the last label, or a failed check."""
    aggregate: Literal["mean", "sum", "max"] = "mean"
    """How daily values combine into a week (prices: mean; event counts: sum; flags: max). Not for a
    categorical control, which has one label a week (see :mod:`mmm_pipeline.ingest.categorical`)."""
    baseline: str | None = None
    """Categorical only: the label every indicator is measured against. Default: the no-label group
    (weeks without a label or labelled '', 'na', 'none' ...) when the training weeks have one, else the
    most frequent label."""
    max_levels: int = Field(12, ge=2, le=200)
    """Categorical only: the most distinct labels (baseline included) a fit accepts; more is an error
    naming the control and the count, as a column of free text or ids would otherwise become dozens of
    barely identified coefficients."""

    @model_validator(mode="after")
    def _categorical_keys(self) -> ControlConfig:
        if self.kind == "numeric":
            extra = sorted({"baseline", "max_levels"} & self.model_fields_set)
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply to a control with kind: categorical")
        elif "aggregate" in self.model_fields_set:
            raise ValueError(
                "a categorical control has one label a week (an event day labels its week), "
                "so 'aggregate' does not apply; remove it"
            )
        return self


class KpiConfig(StrictModel):
    name: str = "sales"
    """The KPI column in KPI landing files."""


class CalendarConfig(StrictModel):
    week_start: Weekday = "monday"
    """Weekday a model week starts on; daily rows aggregate into the week that holds them."""
    start: dt.date
    """First week the pipeline knows about (partitions start here); earlier rows are rejected."""
    holidays_country: str | None = "US"
    """ISO country code for calendar holiday features (python-holidays), or null for none."""

    @property
    def week_start_index(self) -> int:
        """Python weekday number (Monday=0) of the week start."""
        return WEEKDAYS.index(self.week_start)

    @model_validator(mode="after")
    def _start_on_week_start(self) -> CalendarConfig:
        if self.start.weekday() != self.week_start_index:
            raise ValueError(
                f"calendar.start {self.start} is a {WEEKDAYS[self.start.weekday()]}, "
                f"but calendar.week_start is {self.week_start}"
            )
        return self


class ValidationConfig(StrictModel):
    allow_unknown_channels: bool = False
    """If false, a landing file with a channel not in ``channels`` is quarantined."""
    allow_unknown_controls: bool = False
    media_gap_fill: Literal["zero", "error"] = "zero"
    """Weeks inside the model window with no row for a channel: spend 0, or a failed check."""
    as_of: dt.date | None = None
    """'Today' for the no-future-weeks rule; default is the real date. Tests pin it."""
    date_format: str | None = None
    """The one date format of every landing file (strftime codes, e.g. ``'%d/%m/%Y'``). Default: each
    file's format is detected from all of its dates together (ISO, yyyy/mm/dd, dd/mm/yyyy, mm/dd/yyyy,
    dd.mm.yyyy, dd-mm-yyyy, mm-dd-yyyy, yyyymmdd); a file that two formats read differently is rejected."""
    allow_negative_kpi: bool = False
    """A KPI below 0 (e.g. net sales after returns) is rejected unless this is set."""
    max_value: float = Field(1e15, gt=0)
    """No spend, impressions, KPI or control value may exceed this in size (catches 1e300 and the like)."""
    history_ceiling_multiple: float | None = Field(100.0, gt=1)
    """A week's spend (per channel) or KPI above this multiple of its biggest week so far is absurd;
    ``null`` switches the rule off."""
    history_ceiling_action: Literal["reject", "warn"] = "reject"
    """What a week above the history ceiling does: the file is rejected, or accepted with a warning."""
    history_floor_fraction: float | None = Field(0.01, gt=0, lt=1)
    """A week's spend above 0 but below this share of the channel's median spending week is warned
    about (a typo such as a missing thousands digit group); ``null`` switches the warning off."""
    history_min_weeks: int = Field(8, ge=1)
    """The history rules need this many weeks with a value above 0 before they judge a channel."""

    @field_validator("date_format")
    @classmethod
    def _date_format_round_trips(cls, value: str | None) -> str | None:
        if value is None:
            return value
        sample = dt.date(2024, 6, 3)
        try:
            ok = dt.datetime.strptime(sample.strftime(value), value).date() == sample
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{value!r} is not a full date format: use strftime codes such as '%d/%m/%Y'")
        return value


class GateConfig(StrictModel):
    """What a fit must show to be promoted to champion (and serve optimization and reports).

    Convergence is strict and absolute (R-hat, ESS, divergences): a sampler that has not converged says
    nothing about the model. How well the model must fit is relative to the data at hand: a market whose
    weekly KPI is mostly noise has a low R² however right the model is, so the default asks the model to
    forecast better, out of sample, than the seasonal-naive baseline (last year's same week) on the same
    cross-validation weeks. A fit that misses a rule is registered for inspection but never promoted;
    the asset checks on ``model_fit`` and ``model_registry`` fail with the figures that missed.
    """

    max_r_hat: float = Field(1.01, ge=1.0)
    min_ess_bulk: float = Field(400.0, ge=0)
    min_ess_tail: float = Field(400.0, ge=0)
    max_divergences: int = Field(0, ge=0)
    min_cv_skill: float | None = Field(0.0, le=1.0)
    """Cross-validated CRPS skill against seasonal-naive (``1 - CRPS_mmm / CRPS_seasonal_naive``, pooled
    over the CV test weeks) must exceed this: 0 (default) means "forecasts better than last year's same
    week". Skipped when cross-validation is off or the data are too short for it; ``null`` switches the
    rule off."""
    min_r2: float | None = None
    """In-sample R² of the posterior mean, a fixed floor; ``null`` (default) switches the rule off."""
    max_mape: float | None = None
    """In-sample MAPE (0.1 = 10%); ``null`` (default) switches the rule off."""


class ModelConfig(StrictModel):
    """The weekly refit: model structure, priors and sampler (``spec``), gate and refresh rules."""

    spec: ModelSpec = ModelSpec()
    gate: GateConfig = GateConfig()
    remedies: RemediesConfig = RemediesConfig()
    """Automatic refits with adjusted sampler settings when a fit misses the convergence rules."""
    min_train_weeks: int = Field(52, ge=13)
    """A market with fewer modeled weeks fails with a clear error instead of fitting noise."""
    train_end: dt.date | None = None
    """Fit on weeks up to this date only (a hold-out); default: every week in the modeling table."""
    keep_scaling: bool = True
    """Refits reuse the champion's scaling constants (so priors and ROAS keep their meaning) while the
    channels and controls are unchanged; ``false`` recomputes them from each window."""
    max_roas_change: float = Field(0.3, gt=0)
    """A channel whose ROAS moves by more than this share against the champion raises a warning check."""
    max_cv_crps_increase: float | None = Field(0.1, ge=0)
    """A challenger whose cross-validated CRPS is more than this share above the champion's is not
    promoted (0.1: 10% worse); ``null`` switches the rule off."""

    @model_validator(mode="after")
    def _sampler_installed(self) -> ModelConfig:
        """A sampler whose package is missing fails here, naming the key, not in the middle of a run."""
        name = self.spec.sampler.name
        if importlib.util.find_spec(name) is None:
            extra = " (with jax and jaxlib)" if name in ("numpyro", "blackjax") else ""
            raise ValueError(
                f"spec.sampler.name {name!r} needs the {name} package{extra}, which is not installed in "
                "this environment; use nutpie (default) or pymc, or install it"
            )
        return self


class CVConfig(CVSpec):
    """Time-slice cross-validation of every refit (fold layout, baselines, stability: see CVSpec)."""

    enabled: bool = True
    max_parallel_folds: int = Field(2, ge=1)
    """Fold steps run at once by the multiprocess executor (UI and schedules). The CLI runs folds one
    after another in its process, where they share one compiled model graph."""


class OptimizationConfig(StrictModel):
    """Budget recommendations from each market's champion model (``budget_recommendation`` asset)."""

    enabled: bool = True
    plan: str | None = None
    """The base budget plan (YAML), relative to the config file's folder; default (null): the built-in
    plan (current weekly budget, each channel within +-50% of its current spend, no week above 1.5 x
    the channel's historical max)."""
    scenarios: list[str] = Field(default_factory=list)
    """Scenario files, each a change of the base plan, compared with it (relative to the config folder)."""
    max_draws: int = Field(1000, ge=10)
    """Posterior draws the optimizer uses (thinned evenly): fewer is faster, more is smoother."""


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


class ProjectConfig(StrictModel):
    """The whole project configuration (the YAML file's top level)."""

    project: str = "mmm"
    markets: list[Identifier] | None = None
    """Markets expected in the data; null admits any. Files without a market column are market 'all'."""
    kpi: KpiConfig = KpiConfig()
    calendar: CalendarConfig
    channels: list[ChannelConfig]
    controls: list[ControlConfig] = Field(default_factory=list)
    validation: ValidationConfig = ValidationConfig()
    model: ModelConfig = ModelConfig()
    cv: CVConfig = CVConfig()
    optimization: OptimizationConfig = OptimizationConfig()
    paths: PathsConfig = PathsConfig()
    # Continuous operation (README "Continuous operation"; models in monitoring/settings.py).
    schedule: ScheduleConfig = ScheduleConfig()
    sensors: SensorsConfig = SensorsConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    conditions: list[ConditionConfig] = Field(default_factory=list)

    # Set by load_config: the folder that relative paths resolve against.
    root: Path = Field(default=Path("."), exclude=True)

    @field_validator("channels")
    @classmethod
    def _channels_unique(cls, value: list[ChannelConfig]) -> list[ChannelConfig]:
        if not value:
            raise ValueError("at least one channel is required")
        _unique_names([c.name for c in value], "channel")
        return value

    @field_validator("controls")
    @classmethod
    def _controls_unique(cls, value: list[ControlConfig]) -> list[ControlConfig]:
        _unique_names([c.name for c in value], "control")
        for categorical in (c.name for c in value if c.kind == "categorical"):
            for other in value:
                if other.name.startswith(f"{categorical}__"):
                    raise ValueError(
                        f"control {other.name!r} looks like an indicator of categorical control "
                        f"{categorical!r} (named '{categorical}__<label>'); rename it"
                    )
        return value

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

    @field_validator("markets")
    @classmethod
    def _markets_ok(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            _unique_names(value, "market")
        return value

    # ---- derived -------------------------------------------------------------------------------
    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    @property
    def control_names(self) -> list[str]:
        return [c.name for c in self.controls]

    @property
    def categorical_controls(self) -> dict[str, ControlConfig]:
        """The controls declared ``kind: categorical``, by name."""
        return {c.name: c for c in self.controls if c.kind == "categorical"}

    def channel_aliases(self) -> dict[str, str]:
        """Map every accepted raw channel label (case-insensitive) to its channel name."""
        return _alias_map(self.channels)

    def control_aliases(self) -> dict[str, str]:
        return _alias_map(self.controls)

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

    def today(self) -> dt.date:
        return self.validation.as_of or dt.date.today()


def _unique_names(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{what} {n!r} is listed twice")
        seen.add(n)


def _alias_map(items: list[ChannelConfig] | list[ControlConfig]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        for label in [item.name, *item.aliases]:
            key = label.strip().lower()
            if key in out and out[key] != item.name:
                raise ConfigError(f"label {label!r} is an alias of both {out[key]!r} and {item.name!r}")
            out[key] = item.name
    return out


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
        cfg = ProjectConfig.model_validate({**raw, "root": resolved.parent})
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
    return cfg
