"""The geo optimizer's search (``search="faces"``: from the current allocation, climbs rescaled as they
go, face moves at the rules' prices) against the exhaustive search (every cell's corners) and a
brute-force grid, on small hand-built posteriors (seconds, no model fits).

Why: the search that makes 40-100 markets affordable skips the corners of every cell, which is what found
the best face of S-shaped curves; these tests check that nothing is lost where the old search or a grid
can still say what the best answer is, and that every national and per-market rule holds.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mmm_pipeline.optimize import ResponseModel, plan_from_dict, violations
from mmm_pipeline.optimize.budget import optimize_problem
from mmm_pipeline.optimize.constraints import linear_system
from mmm_pipeline.optimize.geo import optimize_geo_budget, stack_responses
from mmm_pipeline.optimize.objective import ObjectiveFunction
from mmm_pipeline.optimize.response import SaturationBlock
from mmm_pipeline.optimize.solver import Evaluator, _preconditioned, _Reduced

CHANNELS = ("tv", "search", "social")
GROUPS = {"tv": "traditional", "search": "digital", "social": "digital"}


def hill_market(seed: int, n_draws: int, size: float, channels=CHANNELS, l_max: int = 3) -> ResponseModel:
    """A market's posterior with Hill curves, some S-shaped (slope up to 2.6): local optima exist."""
    rng = np.random.default_rng(seed)
    c = len(channels)
    typical = size * rng.uniform(1e4, 5e4, c)
    beta = rng.uniform(0.04, 0.12, c) * np.exp(rng.normal(0, 0.2, (n_draws, c)))
    half_sat = rng.uniform(0.6, 1.4, c) * np.exp(rng.normal(0, 0.15, (n_draws, c)))
    slope = rng.uniform(1.0, 2.6, c) * np.exp(rng.normal(0, 0.1, (n_draws, c)))
    decay = rng.uniform(0.2, 0.6, c)[None, None, :] ** np.arange(l_max)[:, None, None]
    weights = np.broadcast_to(decay / decay.sum(axis=0), (l_max, n_draws, c)).copy()
    block = SaturationBlock("hill", np.arange(c), {"half_sat": half_sat, "slope": slope})
    return ResponseModel(tuple(channels), weights, beta, [block], typical, 1e6 * size)


def markets(n: int, n_draws: int = 60, channels=CHANNELS) -> dict[str, ResponseModel]:
    sizes = np.random.default_rng(n).uniform(0.3, 2.0, n)
    return {f"m{i}": hill_market(100 + i, n_draws, float(s), channels) for i, s in enumerate(sizes)}


def current_of(responses: dict[str, ResponseModel]) -> dict[str, np.ndarray]:
    """Today's weekly spend: each channel at its typical week."""
    return {m: r.spend_scale.copy() for m, r in responses.items()}


def history_of(responses: dict[str, ResponseModel], weeks: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {m: r.spend_scale * rng.uniform(0.5, 1.5, (weeks, r.n_channels)) for m, r in responses.items()}


def geo(**raw: object):
    return plan_from_dict({"scope": "geo", "horizon": {"weeks": 1}, "budget": {"change_pct": 0}, **raw})


RULES = {
    "channels": {"tv": {"min_change_pct": -30, "max_change_pct": 30}},
    "shares": {"digital_floor": {"group": "digital", "min": 0.4}},
    "markets": {
        "*": {"min_change_pct": -40, "max_change_pct": 40, "channels": {"*": {"max_change_pct": 150}}}
    },
}


def old_and_new(plan, responses, **kwargs):
    """The geo optimizer's result and the exhaustive search's on the same problem."""
    new = optimize_geo_budget(plan, responses, groups=GROUPS, **kwargs).result
    old = optimize_problem(new.problem, stack_responses(responses))
    return new, old


@pytest.mark.parametrize(
    "objective",
    [{"kind": "kpi"}, {"kind": "kpi", "risk": {"measure": "cvar", "alpha": 0.2}}, {"kind": "roi"}],
    ids=["mean", "cvar", "roi"],
)
def test_matches_the_exhaustive_search_on_small_problems(objective: dict) -> None:
    """Same objective as the search over every cell's corners (to 1e-6), every rule met."""
    responses = markets(4)
    plan = geo(objective=objective, **RULES)
    new, old = old_and_new(plan, responses, current=current_of(responses))
    assert violations(new.problem, new.recommended) == []
    assert new.objective_value >= old.objective_value - 1e-6 * abs(old.objective_value)


def test_matches_the_exhaustive_search_on_a_multi_week_plan() -> None:
    responses = markets(3)
    plan = plan_from_dict({**RULES, "scope": "geo", "horizon": {"weeks": 3}, "budget": {"change_pct": 0}})
    new, old = old_and_new(plan, responses, history=history_of(responses))
    assert new.recommended.shape == (3, 9)
    assert violations(new.problem, new.recommended) == []
    assert new.objective_value >= old.objective_value - 1e-6 * abs(old.objective_value)


def test_reaches_the_best_point_of_a_brute_force_grid() -> None:
    """2 markets x 2 channels, one national total, S-shaped curves: every split of the total on a grid of
    1/60 steps is scored; the optimizer must reach at least the best of them."""
    responses = markets(2, n_draws=40, channels=("tv", "radio"))
    current = current_of(responses)
    plan = geo(objective={"kind": "kpi"})
    result = optimize_geo_budget(plan, responses, current=current).result
    budget = result.problem.budget
    stacked = stack_responses(responses)
    steps = 60
    levels = np.arange(steps + 1) * budget / steps
    # each cell's mean weekly contribution at every level (cells are separable)
    curves = np.stack([stacked.steady_state(np.full(4, x)).mean(axis=0) for x in levels])  # (levels, 4)
    best = max(
        curves[i, 0] + curves[j, 1] + curves[k, 2] + curves[steps - i - j - k, 3]
        for i, j, k in itertools.product(range(steps + 1), repeat=3)
        if i + j + k <= steps
    )
    assert result.objective_value >= best - 1e-9 * abs(best)
    assert result.recommended.sum() == pytest.approx(budget)


def test_national_and_per_market_rules_hold_on_many_markets() -> None:
    """Fixed market, a market's share floor and channel cap, an on/off channel, a national band and a
    history cap, together on 8 markets: every rule holds, and the answer is no worse than today's."""
    responses = markets(8)
    history = history_of(responses)
    plan = geo(
        objective={"kind": "kpi", "risk": {"measure": "mean_minus_sd", "lam": 0.5}},
        channels={"tv": {"min_change_pct": -20, "max_change_pct": 20}},
        shares={"digital_floor": {"group": "digital", "min": 0.45}},
        markets={
            "m0": {"fixed": True},
            "m1": {"min_share": 0.2, "channels": {"social": {"max": 5_000}}},
            "m2": {"channels": {"tv": {"min_on": 30_000}}},
            "*": {"min_change_pct": -40, "max_change_pct": 40},
        },
        history={"cap_multiple": 1.5},
    )
    result = optimize_geo_budget(plan, responses, history=history, groups=GROUPS)
    assert violations(result.result.problem, result.result.recommended) == []
    cells = result.cells.set_index(["market", "channel"])["recommended"]
    current = result.result.problem.current[0]
    np.testing.assert_allclose(cells.loc["m0"].to_numpy(), current[:3], rtol=1e-9)
    assert cells.loc["m1"].sum() >= 0.2 * cells.sum() * (1 - 1e-6)
    assert cells.loc[("m1", "social")] <= 5_000 * (1 + 1e-9)
    assert cells.loc[("m2", "tv")] == 0 or cells.loc[("m2", "tv")] >= 30_000 * (1 - 1e-6)
    tv_now = current[0::3].sum()
    assert 0.8 * tv_now * (1 - 1e-9) <= cells.xs("tv", level="channel").sum() <= 1.2 * tv_now * (1 + 1e-9)
    summary = result.summary.iloc[0]
    assert summary["objective_recommended"] >= summary["objective_current"]


def test_curvature_read_for_all_channels_at_once_equals_one_at_a_time() -> None:
    """For the mean, a channel's curvature does not depend on the others' spend: one gradient difference
    along every channel at once reads what one per channel reads (the cheap preconditioner of many cells)."""
    responses = markets(3)
    stacked = stack_responses(responses)
    result = optimize_geo_budget(geo(), responses, current=current_of(responses)).result
    problem = result.problem
    objective = ObjectiveFunction.build(
        problem.plan.objective, stacked.steady_state(problem.current[0]).sum(axis=1), problem.current.sum()
    )
    evaluator = Evaluator(problem, stacked, objective)
    reduced = _Reduced.of(linear_system(problem))
    z = problem.current.reshape(-1) / reduced.system.scale
    one = _preconditioned(evaluator, reduced, z).m
    together = _preconditioned(evaluator, reduced, z, together=True).m
    np.testing.assert_allclose(together, one, rtol=1e-3)
