"""Budget recommendations: optimize a plan against a fitted model and report it as tables.

:func:`optimize_budget` resolves a plan (:mod:`plan`) against the model's channels, the current
allocation and the spend history, refuses infeasible rules before optimizing (naming the conflicting
rules), maximizes the objective over the posterior draws and returns a :class:`BudgetResult` whose
tables are plain DataFrames (columns documented on the class). :func:`compare_scenarios` does the same
for several named scenarios at once and lines them up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mmm_pipeline.metrics import hdi
from mmm_pipeline.optimize.binding import binding_rules
from mmm_pipeline.optimize.constraints import InfeasiblePlanError, Problem, build_problem, require_feasible
from mmm_pipeline.optimize.objective import ObjectiveFunction
from mmm_pipeline.optimize.plan import Plan
from mmm_pipeline.optimize.response import ResponseModel
from mmm_pipeline.optimize.solver import Evaluator, Search, SolveInfo, solve

HDI_PROB = 0.94
#: Spend levels of the marginal-ROI table, as multiples of the recommended spend.
MARGINAL_LEVELS = (0.0, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)


@dataclass
class BudgetResult:
    """A recommended allocation and what the model expects of it.

    Amounts are over the plan's horizon: one week for ``steady_state`` (a weekly run rate, contributions
    per week once adstock has built up), the whole plan for ``plan`` mode (contributions over the plan
    weeks plus the ``l_max - 1`` weeks its carry-over reaches). Contributions are in KPI units.

    ``recommendation`` (one row per channel): ``channel, group, current, recommended, change, change_pct,
    share_current, share_recommended, contribution_current_mean, contribution_mean, contribution_hdi_low,
    contribution_hdi_high, roas_current, roas_recommended, mroas_current, mroas_recommended,
    hist_weekly_min, hist_weekly_max, recommended_weekly_max, range_flag`` (ROAS and marginal ROAS are
    posterior means; ``range_flag``: ``""``, ``above_history`` (the plan's largest adstocked weekly spend,
    the saturation curve's input, above ``flag_multiple`` x the largest the history's adstock reached),
    ``below_history``, ``switched_off`` (off, but on in every week of the history) or ``never_spent``),
    ``binding_rule, binding_kind, binding_description, shadow_price`` (what holds the channel there and
    what loosening it by one unit of spend would add to the objective: :mod:`mmm_pipeline.optimize.binding`).

    ``summary`` (one row): ``plan, mode, weeks, objective, risk, budget, budget_mode, total_current,
    total_recommended, objective_current, objective_recommended, contribution_current_mean,
    contribution_mean, contribution_hdi_low, contribution_hdi_high, roas_current, roas_recommended,
    uplift_mean, uplift_hdi_low, uplift_hdi_high, uplift_pct, prob_uplift_positive, same_mix_uplift_mean,
    same_mix_uplift_hdi_low, same_mix_uplift_hdi_high, prob_same_mix_uplift_positive, n_flags, seconds``.
    Uplift is recommended minus current contribution, per posterior draw (paired); ``same_mix`` compares
    against the current mix scaled to the recommended total (the gain from re-allocating alone).

    ``marginal`` (channel x spend level): ``channel, level, spend, contribution_mean, roas_mean,
    mroas_mean, mroas_hdi_low, mroas_hdi_high, is_recommended, is_current``: each channel's spend scaled
    to a multiple of the recommendation (other channels do not matter: effects are additive). ``mroas``
    is the extra KPI per extra unit of spend at that level (analytic derivative along the channel's plan).

    ``weekly`` (plan weeks x channels): ``week_index, channel, current, recommended``.
    """

    plan: Plan
    problem: Problem
    recommended: np.ndarray
    objective_value: float
    objective_current: float
    recommendation: pd.DataFrame
    summary: pd.DataFrame
    marginal: pd.DataFrame
    weekly: pd.DataFrame
    uplift_draws: np.ndarray
    info: SolveInfo
    flags: list[str] = field(default_factory=list)
    contribution_current_draws: np.ndarray | None = None
    """``(S, C)`` per-draw contribution of each channel under the current allocation."""
    contribution_draws: np.ndarray | None = None
    """``(S, C)`` the same under the recommendation (sums over channels give per-draw totals)."""


def _direction(plan: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Per channel, the unit-total weekly shape of ``plan`` (else ``fallback``, else even) ``(H, C)``."""
    out = np.empty_like(plan)
    weeks = plan.shape[0]
    for c in range(plan.shape[1]):
        column = plan[:, c] if plan[:, c].sum() > 0 else fallback[:, c]
        out[:, c] = column / column.sum() if column.sum() > 0 else np.full(weeks, 1.0 / weeks)
    return out


def _channel_metrics(
    response: ResponseModel, problem: Problem, plan: np.ndarray, shape: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw contribution ``(S, C)`` and marginal ROAS ``(S, C)`` along ``shape`` (unit total per
    channel)."""
    if problem.steady_state:
        contribution, slope = response.steady_state_grad(plan[0])
        return contribution, slope
    contribution = response.plan_contribution(plan, problem.carry_in, problem.after)
    jac = response.plan_jacobian(plan, problem.carry_in, problem.after)  # (S, H, C)
    return contribution, np.einsum("shc,hc->sc", jac, shape)


def _adstocked_plan_max(response: ResponseModel, problem: Problem, plan: np.ndarray) -> np.ndarray:
    """Per draw, each channel's largest adstocked weekly spend ``(S, C)`` under ``plan``: what its
    saturation curve reads (steady state: a constant weekly spend adstocks to itself)."""
    if problem.steady_state:
        return np.broadcast_to(plan[0], (response.n_draws, plan.shape[1]))
    return response.adstocked_spend(plan, problem.carry_in).max(axis=1)


def _range_flags(
    problem: Problem, plan: np.ndarray, response: ResponseModel, observed_max: np.ndarray | None
) -> tuple[list[str], np.ndarray]:
    """Flags and per-channel labels for spend outside what the model saw.

    "Above" compares adstocked levels, because that is the saturation curve's input: the plan's largest
    adstocked week against the history's (``observed_max`` ``(S, C)``, posterior means of both), not the
    largest raw week, which the curve never read (the largest adstocked week is 0.76-0.98 of it on the
    synthetic worlds). "Never spent", "switched off" and "below" are about raw weekly spend.
    """
    flags, labels = [], np.full(len(problem.channels), "", dtype=object)
    if problem.hist_max is None or observed_max is None:
        return flags, labels
    k = problem.plan.history.flag_multiple
    weekly_max = plan.max(axis=0)
    adstocked = _adstocked_plan_max(response, problem, plan).mean(axis=0)
    seen = observed_max.mean(axis=0)
    positive = np.where(plan > 0, plan, np.inf).min(axis=0)
    for c, name in enumerate(problem.channels):
        hi, lo = problem.hist_max[c], problem.hist_min[c]
        if weekly_max[c] > 0 and hi == 0:
            labels[c] = "never_spent"
            flags.append(
                f"{name}: recommended weekly spend {weekly_max[c]:,.0f}, but it never spent in the history"
            )
        elif adstocked[c] > k * seen[c]:
            labels[c] = "above_history"
            flags.append(
                f"{name}: recommended spend reaches an adstocked weekly level of {adstocked[c]:,.0f}, above "
                f"{k:g} x the largest the model saw ({seen[c]:,.0f}; largest raw week {hi:,.0f}): the model "
                "extrapolates"
            )
        elif weekly_max[c] == 0 and problem.hist_always_on is not None and problem.hist_always_on[c]:
            labels[c] = "switched_off"
            flags.append(
                f"{name}: recommended off, but it spent every week of the history: the model never saw it off"
            )
        elif np.isfinite(positive[c]) and lo > 0 and positive[c] < lo / k:
            labels[c] = "below_history"
            flags.append(
                f"{name}: recommended weekly spend down to {positive[c]:,.0f}, below its historical min "
                f"{lo:,.0f} / {k:g}"
            )
    return flags, labels


def _stats(draws: np.ndarray, prefix: str) -> dict[str, float]:
    low, high = hdi(draws, HDI_PROB)
    return {
        f"{prefix}_mean": float(draws.mean()),
        f"{prefix}_hdi_low": float(low),
        f"{prefix}_hdi_high": float(high),
    }


def optimize_budget(
    plan: Plan,
    response: ResponseModel,
    *,
    current: Mapping[str, float] | pd.Series | np.ndarray | None = None,
    history: pd.DataFrame | np.ndarray | None = None,
    groups: Mapping[str, str] | Mapping[str, Sequence[str]] | None = None,
    n_starts: int = 3,
    seed: int = 0,
) -> BudgetResult:
    """Recommend an allocation for ``plan`` with the model's ``response`` (see :class:`BudgetResult`).

    ``current``: the current weekly spend per channel (mapping or ``(C,)`` array, repeated over the
    horizon) or an ``(H, C)`` plan; default the average of the last ``plan.current_weeks`` weeks of
    ``history``. ``history``: recent weekly spend, oldest first, ``(W, C)`` in the model's channel order
    or a DataFrame with a column per channel (``<channel>`` or ``spend_<channel>``; optionally ``week``,
    to sort by): the carry-in of a multi-week plan
    (its last ``l_max - 1`` weeks) and each channel's historical range. ``groups``: channel -> group
    (the project config) or group -> channels, for share and ratio rules; the plan's ``groups`` win.

    Raises :class:`mmm_pipeline.optimize.plan.PlanError` for a plan that does not fit the model (unknown
    channel...), :class:`InfeasiblePlanError` (naming the conflicting rules) when no allocation meets
    every rule; both before any optimization.
    """
    problem = build_problem(plan, response.channels, current=current, history=history, groups=groups)
    return optimize_problem(problem, response, n_starts=n_starts, seed=seed)


def optimize_problem(
    problem: Problem,
    response: ResponseModel,
    *,
    n_starts: int = 3,
    seed: int = 0,
    search: Search = "corners",
) -> BudgetResult:
    """Optimize a resolved :class:`Problem` (its rules, current allocation and history) with ``response``,
    whose channels are the problem's: :func:`optimize_budget` for one market,
    :func:`mmm_pipeline.optimize.geo.optimize_geo_budget` for every market x channel cell at once
    (``search="faces"``: see :func:`mmm_pipeline.optimize.solver.solve`).

    Raises :class:`InfeasiblePlanError` (naming the conflicting rules) before any optimization.
    """
    plan = problem.plan
    require_feasible(problem)
    observed_max = None
    if problem.hist_max is not None:
        # the adstocked levels the model saw (per draw), over the range's window
        observed_max = response.adstocked_max(problem.carry_in, plan.history.weeks)
    if plan.history.extrapolation == "log" and observed_max is not None:
        # Past each channel's largest adstocked week the curve is the prior's: read it conservatively.
        response = response.with_observed_max(observed_max)
    current_plan = problem.current
    spend_current = float(current_plan.sum())
    probe = Evaluator(problem, response, ObjectiveFunction(plan.objective, {}))
    g_current = probe.contributions(current_plan)  # (S, C)
    objective = ObjectiveFunction.build(plan.objective, g_current.sum(axis=1), spend_current)
    evaluator = Evaluator(problem, response, objective)
    recommended, value, info = solve(problem, evaluator, n_starts=n_starts, seed=seed, search=search)
    objective_current = evaluator.value(current_plan)
    _, gradient = evaluator.value_and_grad(recommended)
    bindings = binding_rules(problem, gradient, recommended)

    shape = _direction(recommended, current_plan)
    g_rec, mroas_rec = _channel_metrics(response, problem, recommended, shape)
    _, mroas_cur = _channel_metrics(response, problem, current_plan, _direction(current_plan, recommended))
    total_cur, total_rec = current_plan.sum(axis=0), recommended.sum(axis=0)
    flags, labels = _range_flags(problem, recommended, response, observed_max)
    channels = list(problem.channels)
    contribution_hdi = hdi(g_rec, HDI_PROB)
    with np.errstate(divide="ignore", invalid="ignore"):
        recommendation = pd.DataFrame(
            {
                "channel": channels,
                "group": [problem.channel_group.get(c, "") for c in channels],
                "current": total_cur,
                "recommended": total_rec,
                "change": total_rec - total_cur,
                "change_pct": np.where(total_cur > 0, 100 * (total_rec / total_cur - 1), np.nan),
                "share_current": total_cur / max(total_cur.sum(), 1e-300),
                "share_recommended": total_rec / max(total_rec.sum(), 1e-300),
                "contribution_current_mean": g_current.mean(axis=0),
                "contribution_mean": g_rec.mean(axis=0),
                "contribution_hdi_low": contribution_hdi[:, 0],
                "contribution_hdi_high": contribution_hdi[:, 1],
                "roas_current": np.where(total_cur > 0, g_current.mean(axis=0) / total_cur, np.nan),
                "roas_recommended": np.where(total_rec > 0, g_rec.mean(axis=0) / total_rec, np.nan),
                "mroas_current": mroas_cur.mean(axis=0),
                "mroas_recommended": mroas_rec.mean(axis=0),
                "hist_weekly_min": np.nan if problem.hist_min is None else problem.hist_min,
                "hist_weekly_max": np.nan if problem.hist_max is None else problem.hist_max,
                "recommended_weekly_max": recommended.max(axis=0),
                "range_flag": labels,
                "binding_rule": [b.rule for b in bindings],
                "binding_kind": [b.kind for b in bindings],
                "binding_description": [b.description for b in bindings],
                "shadow_price": [b.shadow_price for b in bindings],
            }
        )

    total_g_cur, total_g_rec = g_current.sum(axis=1), g_rec.sum(axis=1)
    uplift = total_g_rec - total_g_cur
    same_mix = current_plan * (total_rec.sum() / spend_current) if spend_current > 0 else current_plan
    uplift_mix = total_g_rec - probe.contributions(same_mix).sum(axis=1)
    risk = plan.objective.risk
    risk_text = {"mean": "mean", "quantile": f"quantile q={risk.q:g}", "cvar": f"cvar alpha={risk.alpha:g}",
                 "mean_minus_sd": f"mean - {risk.lam:g} sd"}[risk.measure]  # fmt: skip
    summary = pd.DataFrame(
        [
            {
                "plan": plan.name,
                "mode": plan.horizon.resolved_mode,
                "weeks": plan.horizon.weeks,
                "objective": plan.objective.kind,
                "risk": risk_text,
                "budget": problem.budget,
                "budget_mode": plan.budget.mode,
                "total_current": spend_current,
                "total_recommended": float(total_rec.sum()),
                "objective_current": objective_current,
                "objective_recommended": value,
                "contribution_current_mean": float(total_g_cur.mean()),
                **_stats(total_g_rec, "contribution"),
                "roas_current": float(total_g_cur.mean() / spend_current) if spend_current > 0 else np.nan,
                "roas_recommended": float(total_g_rec.mean() / total_rec.sum())
                if total_rec.sum() > 0
                else np.nan,
                **_stats(uplift, "uplift"),
                "uplift_pct": float(100 * uplift.mean() / total_g_cur.mean())
                if total_g_cur.mean()
                else np.nan,
                "prob_uplift_positive": float((uplift > 0).mean()),
                **_stats(uplift_mix, "same_mix_uplift"),
                "prob_same_mix_uplift_positive": float((uplift_mix > 0).mean()),
                "n_flags": len(flags),
                "seconds": info.seconds,
            }
        ]
    )
    weeks = problem.weeks
    weekly = pd.DataFrame(
        {
            "week_index": np.repeat(np.arange(weeks), len(channels)),
            "channel": np.tile(channels, weeks),
            "current": current_plan.reshape(-1),
            "recommended": recommended.reshape(-1),
        }
    )
    return BudgetResult(
        plan, problem, recommended, value, objective_current, recommendation, summary,
        marginal_table(response, problem, recommended), weekly, uplift, info, flags, g_current, g_rec,
    )  # fmt: skip


def marginal_table(
    response: ResponseModel,
    problem: Problem,
    recommended: np.ndarray,
    levels: Sequence[float] = MARGINAL_LEVELS,
) -> pd.DataFrame:
    """Marginal ROI by channel at multiples of the recommended spend (see :class:`BudgetResult`)."""
    current = problem.current
    shape = _direction(recommended, current)
    total_rec, total_cur = recommended.sum(axis=0), current.sum(axis=0)
    reference = np.where(total_rec > 0, total_rec, total_cur)
    frames = []
    with np.errstate(divide="ignore", invalid="ignore"):
        current_level = np.where(reference > 0, total_cur / reference, 0.0)
    points = [(np.full(len(reference), float(m)), m * reference) for m in levels]
    points.append((current_level, total_cur))
    for level, totals in points:
        plan = shape * totals[None, :]
        contribution, mroas = _channel_metrics(response, problem, plan, shape)
        bounds = hdi(mroas, HDI_PROB)
        with np.errstate(divide="ignore", invalid="ignore"):
            frames.append(
                pd.DataFrame(
                    {
                        "channel": list(problem.channels),
                        "level": level,
                        "spend": totals,
                        "contribution_mean": contribution.mean(axis=0),
                        "roas_mean": np.where(totals > 0, contribution.mean(axis=0) / totals, np.nan),
                        "mroas_mean": mroas.mean(axis=0),
                        "mroas_hdi_low": bounds[:, 0],
                        "mroas_hdi_high": bounds[:, 1],
                        "is_recommended": np.isclose(totals, total_rec, rtol=1e-9, atol=0),
                        "is_current": np.isclose(totals, total_cur, rtol=1e-9, atol=0),
                    }
                )
            )
    table = pd.concat(frames, ignore_index=True)
    table = table.drop_duplicates(subset=["channel", "spend"]).sort_values(
        ["channel", "spend"], ignore_index=True
    )
    return table


@dataclass
class ScenarioComparison:
    """Scenarios optimized in one call.

    ``table`` (one row per scenario): ``scenario, status, conflicts, budget, total_current,
    total_recommended, objective, objective_recommended, contribution_mean, contribution_hdi_low,
    contribution_hdi_high, roas_recommended, uplift_mean, uplift_hdi_low, uplift_hdi_high,
    prob_uplift_positive, same_mix_uplift_mean, n_flags, seconds``; ``status`` is ``ok`` or ``infeasible``
    (``conflicts`` then lists the conflicting rules and the numbers are missing).
    ``allocations`` (scenario x channel): ``scenario, channel, current, recommended, change_pct,
    share_recommended, contribution_mean, mroas_recommended, range_flag``.
    ``results``: each scenario's :class:`BudgetResult` or :class:`InfeasiblePlanError`.
    """

    table: pd.DataFrame
    allocations: pd.DataFrame
    results: dict[str, BudgetResult | InfeasiblePlanError]


def compare_scenarios(
    plans: Sequence[Plan],
    response: ResponseModel,
    *,
    current: Mapping[str, float] | pd.Series | np.ndarray | None = None,
    history: pd.DataFrame | np.ndarray | None = None,
    groups: Mapping[str, str] | Mapping[str, Sequence[str]] | None = None,
    n_starts: int = 3,
    seed: int = 0,
    raise_on_infeasible: bool = False,
) -> ScenarioComparison:
    """Optimize every scenario (plans with distinct names) one after another and compare them.

    An infeasible scenario is reported as such, with its conflicting rules, never with a best-effort
    allocation; ``raise_on_infeasible`` raises instead. The same as :func:`optimize_scenario` on each
    plan (anywhere, in any order: each solve is seeded on its own) put together by
    :func:`combine_scenarios`, which is how the pipeline runs them, one step per scenario.
    """
    _distinct_names(plans)
    results = {}
    for plan in plans:
        result = optimize_scenario(
            plan, response, current=current, history=history, groups=groups, n_starts=n_starts, seed=seed
        )
        if raise_on_infeasible and isinstance(result, InfeasiblePlanError):
            raise result
        results[plan.name] = result
    return combine_scenarios(plans, results)


def _distinct_names(plans: Sequence[Plan]) -> None:
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise ValueError(f"scenario names must be distinct, got {names}")


def optimize_scenario(
    plan: Plan,
    response: ResponseModel,
    *,
    current: Mapping[str, float] | pd.Series | np.ndarray | None = None,
    history: pd.DataFrame | np.ndarray | None = None,
    groups: Mapping[str, str] | Mapping[str, Sequence[str]] | None = None,
    n_starts: int = 3,
    seed: int = 0,
) -> BudgetResult | InfeasiblePlanError:
    """One scenario of a comparison: :func:`optimize_budget`, with an infeasible plan returned (its
    error names the conflicting rules) rather than raised, since a comparison reports it."""
    try:
        return optimize_budget(
            plan, response, current=current, history=history, groups=groups, n_starts=n_starts, seed=seed
        )
    except InfeasiblePlanError as exc:
        return exc


def combine_scenarios(
    plans: Sequence[Plan], results: Mapping[str, BudgetResult | InfeasiblePlanError]
) -> ScenarioComparison:
    """The comparison of ``plans`` (distinct names, in this order) from each one's
    :func:`optimize_scenario` result in ``results`` (by plan name)."""
    _distinct_names(plans)
    rows, allocations = [], []
    keep = [
        "budget", "total_current", "total_recommended", "objective_recommended", "contribution_mean",
        "contribution_hdi_low", "contribution_hdi_high", "roas_recommended", "uplift_mean", "uplift_hdi_low",
        "uplift_hdi_high", "prob_uplift_positive", "same_mix_uplift_mean", "n_flags", "seconds",
    ]  # fmt: skip
    for plan in plans:
        result = results[plan.name]
        if isinstance(result, InfeasiblePlanError):
            conflicts = "; ".join(name for name, _ in result.conflicts)
            rows.append(
                {
                    "scenario": plan.name,
                    "status": "infeasible",
                    "conflicts": conflicts,
                    "objective": plan.objective.kind,
                }
            )
            continue
        summary = result.summary.iloc[0]
        rows.append({"scenario": plan.name, "status": "ok", "conflicts": "", "objective": plan.objective.kind,
                     **{k: summary[k] for k in keep}})  # fmt: skip
        rec = result.recommendation
        allocations.append(
            rec[
                [
                    "channel",
                    "current",
                    "recommended",
                    "change_pct",
                    "share_recommended",
                    "contribution_mean",
                    "mroas_recommended",
                    "range_flag",
                ]
            ].assign(scenario=plan.name)  # fmt: skip
        )
    table = pd.DataFrame(rows, columns=["scenario", "status", "conflicts", "objective", *keep])
    columns = ["scenario", "channel", "current", "recommended", "change_pct", "share_recommended",
               "contribution_mean", "mroas_recommended", "range_flag"]  # fmt: skip
    alloc = (
        pd.concat(allocations, ignore_index=True)[columns] if allocations else pd.DataFrame(columns=columns)
    )
    return ScenarioComparison(table, alloc, {plan.name: results[plan.name] for plan in plans})
