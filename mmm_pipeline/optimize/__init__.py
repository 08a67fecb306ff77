"""Budget optimization on a fitted MMM: business rules from plan files, objectives over posterior draws.

Pure functions on plain inputs (no Dagster): a :class:`ResponseModel` built from the champion's posterior
(:meth:`ResponseModel.from_idata`), a :class:`Plan` (:func:`load_plan`, scenarios via
:func:`load_scenario`), the current spend and the recent spend history in; DataFrames out
(:class:`BudgetResult`, :class:`ScenarioComparison`).

Modules: ``plan`` (YAML schema), ``response`` (media maths over draws with analytic gradients),
``objective`` (KPI / ROI / profit / blend, risk measures), ``constraints`` (linear rules, feasibility,
conflicting-rule search), ``solver`` (SLSQP multi-start, on/off branch-and-bound), ``binding`` (each
channel's binding rule and its shadow price at the optimum), ``budget`` (API, tables).
"""

from mmm_pipeline.optimize.budget import (
    BudgetResult,
    ScenarioComparison,
    combine_scenarios,
    compare_scenarios,
    marginal_table,
    optimize_budget,
    optimize_scenario,
)
from mmm_pipeline.optimize.constraints import (
    InfeasiblePlanError,
    Problem,
    build_problem,
    conflicting_rules,
    violations,
)
from mmm_pipeline.optimize.plan import (
    Plan,
    PlanError,
    apply_scenario,
    load_plan,
    load_scenario,
    load_scenarios,
    plan_from_dict,
)
from mmm_pipeline.optimize.response import ResponseModel

__all__ = [
    "BudgetResult",
    "InfeasiblePlanError",
    "Plan",
    "PlanError",
    "Problem",
    "ResponseModel",
    "ScenarioComparison",
    "apply_scenario",
    "build_problem",
    "combine_scenarios",
    "compare_scenarios",
    "conflicting_rules",
    "load_plan",
    "load_scenario",
    "load_scenarios",
    "marginal_table",
    "optimize_budget",
    "optimize_scenario",
    "plan_from_dict",
    "violations",
]
