"""Market conditions that tighten a budget plan automatically (config ``conditions``). Pure functions.

A condition looks at the market's recent weeks in the modeling table (a control such as competitor
spend, a channel's spend, or the calendar month) and, when it holds, merges its ``plan_changes`` into the
base plan and into every scenario, exactly as a scenario file's ``changes`` are merged
(:func:`mmm_pipeline.optimize.plan.apply_scenario`). Which conditions held, with their evidence, is
recorded with the optimization (``monitoring.optimization_history``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmm_pipeline.optimize.plan import Plan, apply_scenario
from mmm_pipeline.optimize.settings import ConditionConfig


@dataclass(frozen=True)
class ActiveCondition:
    name: str
    evidence: dict
    plan_changes: dict

    def as_dict(self) -> dict:
        return {"name": self.name, "evidence": self.evidence, "plan_changes": self.plan_changes}


def _column(condition: ConditionConfig) -> str | None:
    when = condition.when
    if when.control is not None:
        return f"control_{when.control}"
    if when.channel is not None:
        return f"spend_{when.channel}"
    return None


def evaluate_conditions(conditions: Sequence[ConditionConfig], rows: pd.DataFrame) -> list[ActiveCondition]:
    """The conditions that hold on one market's modeling-table rows (``week`` plus ``control_*`` /
    ``spend_*`` columns), as of the last week. A condition naming a column the table lacks raises
    ``ValueError`` naming the condition."""
    rows = rows.sort_values("week")
    if rows.empty:
        return []
    last_week = pd.Timestamp(rows["week"].iloc[-1])
    active = []
    for condition in conditions:
        when = condition.when
        evidence: dict = {"week": str(last_week.date())}
        if when.months is not None:
            if last_week.month not in when.months:
                continue
            evidence["month"] = last_week.month
        column = _column(condition)
        if column is not None:
            if column not in rows.columns:
                raise ValueError(f"condition {condition.name!r}: the modeling table has no column {column}")
            values = rows[column].to_numpy(float)
            recent, earlier = values[-when.over_last_weeks :], values[: -when.over_last_weeks]
            level = float(np.nanmean(recent))
            evidence |= {"series": column, "recent_mean": level, "over_last_weeks": when.over_last_weeks}
            checks = []
            if when.above_quantile is not None and earlier.size:
                q = float(np.nanquantile(earlier, when.above_quantile))
                checks.append(level > q)
                evidence[f"q{when.above_quantile:g}"] = q
            if when.below_quantile is not None and earlier.size:
                q = float(np.nanquantile(earlier, when.below_quantile))
                checks.append(level < q)
                evidence[f"q{when.below_quantile:g}"] = q
            if when.above is not None:
                checks.append(level > when.above)
            if when.below is not None:
                checks.append(level < when.below)
            if not checks or not all(checks):
                continue
        active.append(ActiveCondition(condition.name, evidence, dict(condition.plan_changes)))
    return active


def apply_conditions(plans: Sequence[Plan], active: Sequence[ActiveCondition]) -> list[Plan]:
    """Every plan with the active conditions' changes merged in (in config order); names are kept."""
    out = list(plans)
    for condition in active:
        out = [
            apply_scenario(plan, condition.plan_changes, plan.name, source=f"condition {condition.name}")
            for plan in out
        ]
    return out


def conditions_version(active: Sequence[ActiveCondition]) -> str:
    """A hash of what the active conditions change in the plans (names and plan changes, in order).

    The data version of a market's conditions: a recommendation is stale when it changes (a condition
    starts or stops holding), not when only its evidence moves (a new week's competitor spend)."""
    payload = [{"name": c.name, "plan_changes": c.plan_changes} for c in active]
    text = json.dumps(payload, sort_keys=True, default=str)
    return "conditions:" + hashlib.sha256(text.encode()).hexdigest()
