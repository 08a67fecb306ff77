"""The optimize stage's config sections: ``optimization`` (plan, scenarios, draws) and ``conditions``
(market conditions that change the plan)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from mmm_pipeline.settings import StrictModel


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
    geo_plan: str | None = None
    """A geo budget plan (``scope: geo``), relative to the config file's folder: one total split over every
    market x channel with each market's champion (the ``geo_budget_recommendation`` asset and the
    ``geo_budget`` job); default (null): no geo budget."""


class ConditionWhen(StrictModel):
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


class ConditionConfig(StrictModel):
    """A market condition and the plan changes it brings (merged into the base plan and every scenario
    like a scenario's ``changes``; see :func:`mmm_pipeline.optimize.plan.apply_scenario`)."""

    name: str
    when: ConditionWhen
    plan_changes: dict[str, Any]
    description: str = ""
