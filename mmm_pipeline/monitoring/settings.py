"""Config sections of continuous operation: ``schedule``, ``sensors`` and ``monitoring``.

Pydantic models only (no Dagster, no DuckDB), imported by :mod:`mmm_pipeline.config`. Unknown keys are
errors naming the key, like every other section.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mmm_pipeline.settings import StrictModel


class ScheduleConfig(StrictModel):
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


class SensorSettings(StrictModel):
    enabled: bool = False
    """Default status in Dagster (``true``: running); either way togglable in the UI."""
    interval_seconds: int = Field(60, ge=10)


class SensorsConfig(StrictModel):
    """``new_data``: landing files -> ingestion run -> feature runs for exactly the affected weeks.
    ``drift``: open drift events -> one refit + reoptimization run per event."""

    new_data: SensorSettings = SensorSettings()
    drift: SensorSettings = SensorSettings(interval_seconds=300)


class IntervalMissRule(StrictModel):
    """Actuals beyond a bound on ``|z|`` (``z = error / pred_sd``) in at least ``k`` of the last ``n``
    weeks. ``interval`` unset (default): the bound is calibrated to ``false_alarm_rate_per_year`` on
    the champion's own errors (:mod:`mmm_pipeline.monitoring.calibration`); ``50`` / ``94``: the fixed
    rule "outside the nominal 50% / 94% predictive interval" (rate not controlled)."""

    name: str = "outside_interval"
    kind: Literal["interval_misses"] = "interval_misses"
    interval: Literal[50, 94] | None = None
    k: int = Field(3, ge=1)
    n: int = Field(4, ge=1)
    rate_weight: float = Field(1.0, gt=0)
    """This rule's share of ``false_alarm_rate_per_year``: its weight over the sum of the error rules'
    weights (all 1: the even split)."""

    @model_validator(mode="after")
    def _k_le_n(self) -> IntervalMissRule:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must be <= n ({self.n})")
        return self


class RollingMapeRule(StrictModel):
    """MAPE of the predictive mean over the last ``window`` weeks above ``threshold`` (0.1 = 10%),
    once at least ``min_weeks`` weeks have been tracked. ``threshold`` unset (default): calibrated on
    the champion's own relative CV errors, so it sits above the champion's CV MAPE by what a stable
    year's rolling MAPE can reach at the stated false-alarm rate."""

    name: str = "rolling_mape"
    kind: Literal["rolling_mape"] = "rolling_mape"
    threshold: float | None = Field(None, gt=0)
    window: int = Field(8, ge=1)
    min_weeks: int = Field(4, ge=1)
    rate_weight: float = Field(1.0, gt=0)
    """This rule's share of ``false_alarm_rate_per_year``: its weight over the sum of the error rules'
    weights (all 1: the even split)."""


class CusumRule(StrictModel):
    """Two-sided CUSUM of the standardized residuals ``z = (actual - pred_mean) / pred_sd``:
    ``S+ = max(0, S+ + z - slack)``, ``S- = max(0, S- - z - slack)``; fires when either exceeds
    ``threshold``. ``slack`` is the allowance per week (half the shift, in sds, it should catch).
    ``threshold`` unset (default): calibrated on the champion's own CV errors (their level error and
    autocorrelation) to ``false_alarm_rate_per_year``."""

    name: str = "residual_shift"
    kind: Literal["cusum"] = "cusum"
    threshold: float | None = Field(None, gt=0)
    slack: float = Field(0.5, ge=0)
    rate_weight: float = Field(1.0, gt=0)
    """This rule's share of ``false_alarm_rate_per_year``: its weight over the sum of the error rules'
    weights (all 1: the even split)."""


class ChangepointRule(StrictModel):
    """A persistent shift of the forecast errors that began in some tracked week (a changepoint test):
    for every candidate first week of the shift, the generalized least squares estimate of a step in
    ``z`` under the champion's own null error model (a level error shared by its weeks plus AR(1)
    noise, fitted on its CV errors: :mod:`mmm_pipeline.monitoring.calibration`), divided by its standard
    error; the statistic is the largest ``|t|`` over the candidate weeks of the last ``window`` tracked
    weeks. Its threshold is always calibrated to ``false_alarm_rate_per_year``.

    Why, next to (by default instead of) the CUSUM: the CUSUM compares every week with a forecast error
    of zero, so a level error shared by all of a champion's weeks looks like drift to it, and calibrated
    to a stated rate its threshold has to sit so high (40 with slack 0.5 at a level error of half the
    forecast sd) that a 1.6-sd shift takes months to find. This test weighs the weeks before the
    candidate start against the level error's known spread (the level the champion's own weeks show is
    not drift, a change of it is) and whitens the autocorrelation, so the same rate costs a
    threshold near 4 on a standardized scale whatever the error process (benchmarks/bench_alarms.py)."""

    name: str = "forecast_shift"
    kind: Literal["changepoint"] = "changepoint"
    window: int = Field(52, ge=13)
    """Tracked weeks the test reads (the latest ones): one year, as calibrated. A champion lineage that
    has run for years without an event is judged on its last year, not on level changes long past."""
    rate_weight: float = Field(1.0, gt=0)
    """This rule's share of ``false_alarm_rate_per_year``: its weight over the sum of the error rules'
    weights (all 1: the even split). Why it stays 1 by default: weight 4 (4/6 of the rate here, the
    interval and MAPE rules 1/6 each) finds a 1.6-sd shift sooner when the null model is known, but
    with the null estimated from four CV folds it gained 1-1.5 weeks of median delay on the break
    simulation (18 weeks with AR(1) residuals where the even split's is beyond 26) and nothing clear in
    the share found within 8 weeks (37% / 65% / 40% against 40% / 58% / 36%, 100 replications),
    and raised the false-alarm chance of level error + AR(1) residuals from 5.4% to 5.8% a year
    (benchmarks/README.md, benchmarks/bench_detection_ceiling.py)."""


class SpendRangeRule(StrictModel):
    """A channel's weekly spend outside ``[min / multiple, max x multiple]`` of its spend in the champion's
    training window, in at least ``k`` of the last ``n`` weeks (the model extrapolates there)."""

    name: str = "spend_out_of_range"
    kind: Literal["spend_range"] = "spend_range"
    multiple: float = Field(1.5, ge=1)
    k: int = Field(2, ge=1)
    n: int = Field(4, ge=1)


DriftRule = Annotated[
    IntervalMissRule | RollingMapeRule | CusumRule | ChangepointRule | SpendRangeRule,
    Field(discriminator="kind"),
]


def _default_rules() -> list[Any]:
    return [IntervalMissRule(), RollingMapeRule(), ChangepointRule(), SpendRangeRule()]


class MonitoringConfig(StrictModel):
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
    false_alarm_rate_per_year: float = Field(0.05, gt=0, lt=1)
    """Chance that the error rules open an event in a stable year of one champion's tracking. Rules
    without a fixed threshold are calibrated to it (split over the error rules by their ``rate_weight``,
    evenly by default) on the champion's
    CV errors, or its in-sample residuals when it has no CV (the evidence says which)."""
    min_weeks_before_event: int = Field(4, ge=1)
    """A champion opens no drift event before it has tracked this many weeks: a refit after a break
    still over-forecasts for a while, and must not start the next refit on its first week (damps refit
    chains). The rules are still evaluated and shown."""

    @model_validator(mode="after")
    def _unique_names(self) -> MonitoringConfig:
        names = [r.name for r in self.drift_rules]
        if len(set(names)) != len(names):
            raise ValueError(f"drift rule names must be unique, got {names}")
        return self
