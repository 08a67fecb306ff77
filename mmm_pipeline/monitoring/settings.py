"""Config sections of continuous operation: ``schedule``, ``sensors``, ``monitoring``, ``conditions``.

Pydantic models only (no Dagster, no DuckDB), imported by :mod:`mmm_pipeline.config`. Unknown keys are
errors naming the key, like every other section.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleConfig(_Strict):
    """The weekly schedule: ingest, features, refit, CV, optimize for the newest complete week."""

    enabled: bool = False
    """Default status of the schedule in Dagster (``true``: running as soon as the daemon sees it).
    Either way it can be switched on and off in the UI."""
    cron: str = "0 6 * * 1"
    timezone: str = "UTC"
    """Any tz database name (``Europe/Amsterdam``); the cron is read in this timezone."""
    refit: bool = True
    """After the scheduled ingest/features run succeeds, refit (CV, optimize, publish) every market.
    ``false``: the schedule only refreshes data and tracking; refits then come from drift events."""


class SensorSettings(_Strict):
    enabled: bool = False
    """Default status in Dagster (``true``: running); either way togglable in the UI."""
    interval_seconds: int = Field(60, ge=10)


class SensorsConfig(_Strict):
    """``new_data``: landing files -> ingestion run -> feature runs for exactly the affected weeks.
    ``drift``: open drift events -> one refit + reoptimization run per event."""

    new_data: SensorSettings = SensorSettings()
    drift: SensorSettings = SensorSettings(interval_seconds=300)


class IntervalMissRule(_Strict):
    """Actuals outside the ``interval``% predictive interval in at least ``k`` of the last ``n`` weeks."""

    name: str = "outside_interval"
    kind: Literal["interval_misses"] = "interval_misses"
    interval: Literal[50, 94] = 94
    k: int = Field(3, ge=1)
    n: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _k_le_n(self) -> IntervalMissRule:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must be <= n ({self.n})")
        return self


class RollingMapeRule(_Strict):
    """MAPE of the predictive mean over the last ``window`` weeks above ``threshold`` (0.1 = 10%),
    once at least ``min_weeks`` weeks have been tracked."""

    name: str = "rolling_mape"
    kind: Literal["rolling_mape"] = "rolling_mape"
    threshold: float = Field(0.1, gt=0)
    window: int = Field(8, ge=1)
    min_weeks: int = Field(4, ge=1)


class CusumRule(_Strict):
    """Two-sided CUSUM of the standardized residuals ``z = (actual - pred_mean) / pred_sd``:
    ``S+ = max(0, S+ + z - slack)``, ``S- = max(0, S- - z - slack)``; fires when either exceeds
    ``threshold``. ``slack`` is the allowance per week (half the shift, in sds, it should catch)."""

    name: str = "residual_shift"
    kind: Literal["cusum"] = "cusum"
    threshold: float = Field(5.0, gt=0)
    slack: float = Field(0.5, ge=0)


class SpendRangeRule(_Strict):
    """A channel's weekly spend outside ``[min / multiple, max x multiple]`` of its spend in the champion's
    training window, in at least ``k`` of the last ``n`` weeks (the model extrapolates there)."""

    name: str = "spend_out_of_range"
    kind: Literal["spend_range"] = "spend_range"
    multiple: float = Field(1.5, ge=1)
    k: int = Field(2, ge=1)
    n: int = Field(4, ge=1)


DriftRule = Annotated[
    IntervalMissRule | RollingMapeRule | CusumRule | SpendRangeRule, Field(discriminator="kind")
]


def _default_rules() -> list[Any]:
    return [IntervalMissRule(), RollingMapeRule(), CusumRule(), SpendRangeRule()]


class MonitoringConfig(_Strict):
    """Performance tracking of each market's champion and the drift rules evaluated on it."""

    enabled: bool = True
    rolling_weeks: int = Field(8, ge=1)
    """Window of the ``rolling_mape`` column of ``monitoring.performance_tracking``."""
    max_draws: int = Field(1000, ge=50)
    """Posterior draws used for the forecast (thinned evenly)."""
    drift_rules: list[DriftRule] = Field(default_factory=_default_rules)
    recovery_weeks: int = Field(4, ge=1)
    """An open drift event is resolved after this many consecutive tracked weeks in which no rule fires
    (or at once when a new champion is promoted)."""

    @model_validator(mode="after")
    def _unique_names(self) -> MonitoringConfig:
        names = [r.name for r in self.drift_rules]
        if len(set(names)) != len(names):
            raise ValueError(f"drift rule names must be unique, got {names}")
        return self


class ConditionWhen(_Strict):
    """When a market condition holds, from the modeling table's recent weeks.

    A control (``control``) or a channel's spend (``channel``), averaged over the last
    ``over_last_weeks`` weeks, compared with its own history: ``above_quantile``/``below_quantile``
    (quantile of its weekly values over all earlier weeks) or ``above``/``below`` (a number).
    ``months``: the condition holds in these calendar months of the latest week (e.g. holiday season).
    """

    control: str | None = None
    channel: str | None = None
    above_quantile: float | None = Field(None, ge=0, le=1)
    below_quantile: float | None = Field(None, ge=0, le=1)
    above: float | None = None
    below: float | None = None
    over_last_weeks: int = Field(4, ge=1)
    months: list[Annotated[int, Field(ge=1, le=12)]] | None = None

    @model_validator(mode="after")
    def _check(self) -> ConditionWhen:
        thresholds = [self.above_quantile, self.below_quantile, self.above, self.below]
        has_series = self.control is not None or self.channel is not None
        if self.control is not None and self.channel is not None:
            raise ValueError("give 'control' or 'channel', not both")
        if has_series and all(t is None for t in thresholds):
            raise ValueError("give a threshold: above_quantile, below_quantile, above or below")
        if not has_series and any(t is not None for t in thresholds):
            raise ValueError("a threshold needs 'control' or 'channel'")
        if not has_series and self.months is None:
            raise ValueError("give 'control', 'channel' or 'months'")
        return self


class ConditionConfig(_Strict):
    """A market condition and the plan changes it brings (merged into the base plan and every scenario
    like a scenario's ``changes``; see :func:`mmm_pipeline.optimize.plan.apply_scenario`)."""

    name: str
    when: ConditionWhen
    plan_changes: dict[str, Any]
    description: str = ""
