"""Geo-level budget optimizer speed: wall time for 10 / 40 / 100 markets x 5 channels, and the objective
reached against the previous solver on a size it finishes.

Why: one total over every market x channel is a problem of hundreds of cells; the single-market
optimizer run on the stacked cells (one start per cell corner, a dense SLSQP over all cells) did not
finish 40 markets x 5 channels in 15 minutes (issue 17). Timing does not need fitted models: each
market's posterior is synthetic, drawn around national channel values (Hill saturation, as the
product's default model; slopes 0.8-2.5, some S-shaped; geometric adstock; market sizes varying 10x),
with a 156-week spend history per market.

Plans: the demo geo plan (``mmm_pipeline/demo/plans/synthetic/geo_plan.yaml``: national tv band,
digital floor, single-channel cap, every market within +-40% of today's total, no cell more than doubled,
history cap 1.5x, conservative extrapolation) with the mean and with CVaR(0.2), and a 4-week version of
it (``plan`` mode, week by week).

Run: ``.venv/bin/python benchmarks/bench_geo_optimizer.py [--markets 10,40,100] [--draws 500]
[--compare 4,10] [--plans geo_base,geo_cvar,geo_4_weeks]``. ``--compare`` first runs the previous
solver (:func:`mmm_pipeline.optimize.budget.optimize_problem` on the stacked cells without the markets as
blocks: every cell's corners, multi-start) next to the geo optimizer on those market counts and prints
both objectives and times (``--compare 0`` skips it; 20 markets take it 3-5 minutes per plan, 40 more
than 15).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mmm_pipeline.model import transforms
from mmm_pipeline.optimize import ResponseModel, load_plan, violations
from mmm_pipeline.optimize.budget import optimize_problem
from mmm_pipeline.optimize.geo import optimize_geo_budget, stack_responses
from mmm_pipeline.optimize.plan import Plan, apply_scenario
from mmm_pipeline.optimize.response import SaturationBlock

PLAN = Path(__file__).resolve().parent.parent / "mmm_pipeline/demo/plans/synthetic/geo_plan.yaml"
CHANNELS = ("tv", "search", "display", "social", "radio")
GROUPS = {"tv": "traditional", "radio": "traditional", "search": "digital", "display": "digital",
          "social": "digital"}  # fmt: skip
#: National values per channel: weekly spend of a reference market, ROAS-ish effect, Hill slope, decay.
NATIONAL_SPEND = np.array([40_000.0, 25_000.0, 15_000.0, 12_000.0, 8_000.0])
NATIONAL_SLOPE = np.array([2.0, 1.0, 1.4, 1.8, 1.2])
NATIONAL_DECAY = np.array([0.6, 0.1, 0.3, 0.4, 0.5])
NATIONAL_HALF_SAT = np.array([1.2, 0.6, 0.9, 1.0, 1.1])  # in units of the market's typical week


def synthetic_market(rng: np.random.Generator, n_draws: int, size: float, l_max: int = 8) -> tuple:
    """One market's posterior ``ResponseModel`` (Hill) and its 156-week spend history ``(156, 5)``."""
    c = len(CHANNELS)
    typical = NATIONAL_SPEND * size * np.exp(rng.normal(0, 0.3, c))
    weeks = np.arange(156)
    season = 1 + 0.3 * np.sin(2 * np.pi * weeks / 52)[:, None]
    history = typical * season * np.exp(rng.normal(0, 0.25, (156, c)))
    history[:, 4] *= rng.random(156) < 0.7  # radio: bought in flights
    # posterior draws around the market's own values (which vary around the national ones)
    half_sat = NATIONAL_HALF_SAT * np.exp(rng.normal(0, 0.2, c))
    slope = np.clip(NATIONAL_SLOPE * np.exp(rng.normal(0, 0.15, c)), 0.8, 2.5)
    decay = np.clip(NATIONAL_DECAY + rng.normal(0, 0.05, c), 0.0, 0.85)
    beta = 0.08 * np.exp(rng.normal(0, 0.4, c))
    noise = rng.uniform(0.1, 0.4)  # how sure this market's posterior is
    draws = lambda center: center * np.exp(rng.normal(0, noise, (n_draws, c)))  # noqa: E731
    alpha = np.clip(decay + rng.normal(0, 0.05, (n_draws, c)), 0.0, 0.9)
    weights = transforms.adstock_weights("geometric", l_max, alpha=alpha)
    block = SaturationBlock(
        "hill", np.arange(c), {"half_sat": draws(half_sat), "slope": np.clip(draws(slope), 0.5, 3.5)}
    )
    response = ResponseModel(CHANNELS, np.asarray(weights), draws(beta), [block], typical, 1e6 * size)
    return response, pd.DataFrame(history, columns=list(CHANNELS))


def synthetic_markets(n_markets: int, n_draws: int, seed: int = 0) -> tuple[dict, dict]:
    """``n_markets`` markets: responses and histories (market -> ...), deterministic given the seed."""
    rng = np.random.default_rng([seed, n_markets])
    sizes = np.clip(np.exp(rng.normal(0, 0.7, n_markets)), 0.1, 5.0)
    responses, histories = {}, {}
    for i, size in enumerate(sizes):
        responses[f"m{i + 1:03d}"], histories[f"m{i + 1:03d}"] = synthetic_market(rng, n_draws, float(size))
    return responses, histories


def plans() -> list[Plan]:
    base = load_plan(PLAN)
    return [
        base,
        apply_scenario(base, {"objective": {"risk": {"measure": "cvar", "alpha": 0.2}}}, "geo_cvar"),
        apply_scenario(base, {"horizon": {"weeks": 4}}, "geo_4_weeks"),
    ]


def compare(n: int, n_draws: int, chosen: list[Plan]) -> None:
    """The geo optimizer against the previous solver (the single-market search on the stacked cells:
    corners of every cell, multi-start) on the same problem: objective reached and wall time."""
    responses, histories = synthetic_markets(n, n_draws)
    for plan in chosen:
        start = time.perf_counter()
        new = optimize_geo_budget(plan, responses, history=histories, groups=GROUPS).result
        t_new = time.perf_counter() - start
        start = time.perf_counter()
        old = optimize_problem(new.problem, stack_responses(responses))
        t_old = time.perf_counter() - start
        gap = (new.objective_value - old.objective_value) / abs(old.objective_value)
        print(
            f"{n:>4} markets, {plan.name:<12} geo optimizer {new.objective_value:.8g} in {t_new:6.1f} s | "
            f"previous solver {old.objective_value:.8g} in {t_old:6.1f} s | new - old: {gap:+.2e} of the "
            "objective",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markets", default="10,40,100")
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--plans", default="", help="comma-separated plan names (default all)")
    parser.add_argument("--compare", default="4,10", help="market counts to compare with the old solver")
    args = parser.parse_args()
    chosen = [p for p in plans() if not args.plans or p.name in args.plans.split(",")]
    for n in (int(x) for x in args.compare.split(",") if x.strip() and int(x) > 0):
        compare(n, args.draws, chosen)
    for n in (int(x) for x in args.markets.split(",") if x.strip()):
        responses, histories = synthetic_markets(n, args.draws)
        for plan in chosen:
            start = time.perf_counter()
            result = optimize_geo_budget(plan, responses, history=histories, groups=GROUPS)
            seconds = time.perf_counter() - start
            s = result.summary.iloc[0]
            broken = violations(result.result.problem, result.result.recommended)
            print(
                f"{n:>4} markets x {len(CHANNELS)} channels, {args.draws} draws, {plan.name:<12} "
                f"{seconds:7.1f} s  objective {s['objective_recommended']:.6g} (current "
                f"{s['objective_current']:.6g}, uplift {s['uplift_pct']:+.2f}%)  rules broken: {len(broken)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
