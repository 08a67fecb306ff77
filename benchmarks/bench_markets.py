"""Many markets: does partial pooling recover per-market ROAS better than fitting each market alone?

Why: a single market's weekly KPI is noisy, and a small market's own data say little about its channels
(issue 17). On many-market worlds of known per-market truth (:func:`mmm_testkit.markets.generate_geo_world`:
markets sharing channel behaviour with market-level variation, about 30% of them small and noisy, 156
weeks, 5 channels) this fits the partially pooled model (``ModelSpec.pooling: partial``,
:func:`mmm_pipeline.model.pooled.fit_pooled`) and, unless ``--skip-independent``, each market alone
(:func:`mmm_pipeline.model.fit.fit`, one compiled graph shared by all markets), and scores each
market's ROAS per channel (contribution over the window / spend) against the truth:

* relative error ``|posterior mean - true| / true`` per market and channel, median overall and on the
  noisy markets;
* 94% HDI coverage: the share of (market, channel) pairs whose true ROAS lies in the HDI.

Decision quality (``--skip-decisions`` to leave it out), scored on the TRUE response of the world: each
model's posterior (the pooled one market by market, :func:`mmm_pipeline.model.pooled.market_posterior`;
each independent fit) goes through the product's optimizers, and the recommendation is valued with the
world's true curves against the true optimum under the same rules (found by the same optimizers on the
true response, one draw, no extrapolation rule): **captured share of the achievable uplift** =
``(true(recommended) - true(current)) / (true(optimum) - true(current))`` (1 = the best possible plan,
0 = no better than today, negative = worse than today).

* per market: the market's own weekly budget re-split (:data:`MARKET_PLAN`, the demo geo plan's rules for
  one market: today's total, tv within +-40%, digital >= 35%, no channel above 45% or doubled, history cap
  1.5x) with :func:`mmm_pipeline.optimize.optimize_budget`; median over markets and over the noisy ones;
* national: the demo geo plan (``mmm_pipeline/demo/plans/synthetic/geo_plan.yaml``: one national total
  over every market x channel) with :func:`mmm_pipeline.optimize.geo.optimize_geo_budget`.

Goal lines (issue 17): **pooling cuts the median per-market ROAS error by >= 30% on the noisy markets**
and **coverage >= 90%** (pooled); **every market gets a champion**: the pooled fit against the product's
default gate (:class:`~mmm_pipeline.model.settings.GateConfig`; convergence over the joint posterior,
in-sample fit per market, :func:`~mmm_pipeline.model.group_refit.group_gate_failures`), which decides
promotion for the whole group (a miss sends the product up the remedies ladder, not timed here). Also
printed: the pooled fit's wall time (build + compile + sampling,
and sampling alone), the independent fits' total, and the process's peak memory
(``resource.getrusage``, max resident set size so far).

Run: ``.venv/bin/python benchmarks/bench_markets.py [--markets 10,40] [--seed 0] [--draws 1000]
[--tune N] [--chains 4] [--skip-independent] [--skip-decisions] [--max-draws 500]`` (``--tune`` defaults
to ``--draws``; ``--max-draws`` thins each posterior for the optimizers, as the product's
``optimization.max_draws``).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from mmm_pipeline.model.fit import ModelCache, fit
from mmm_pipeline.model.group_refit import group_diagnostics, group_gate_failures
from mmm_pipeline.model.insights import channel_summary
from mmm_pipeline.model.market_insights import market_channel_summary
from mmm_pipeline.model.pooled import NATIONAL, fit_pooled, market_posterior
from mmm_pipeline.model.settings import GateConfig
from mmm_pipeline.model.spec import ModelSpec, SamplerSpec
from mmm_pipeline.optimize import ResponseModel, load_plan, optimize_budget, plan_from_dict
from mmm_pipeline.optimize.budget import optimize_problem
from mmm_pipeline.optimize.geo import optimize_geo_budget, stack_responses
from mmm_pipeline.optimize.plan import Plan
from mmm_testkit.adapters import model_data, true_response
from mmm_testkit.markets import GeoWorld, generate_geo_world

ERROR_CUT_GOAL = 0.30
COVERAGE_GOAL = 0.90
GEO_PLAN = (
    Path(__file__).resolve().parent.parent / "mmm_pipeline" / "demo" / "plans" / "synthetic" / "geo_plan.yaml"
)
GROUPS = {"tv": "traditional", "radio": "traditional", "search": "digital", "display": "digital",
          "social": "digital"}  # fmt: skip
#: Largest market count whose true geo optimum is also searched exhaustively (every cell's corners).
EXHAUSTIVE_MAX_MARKETS = 12
#: One market's own budget under the demo geo plan's rules.
MARKET_PLAN = {
    "name": "market_base",
    "horizon": {"weeks": 1},
    "budget": {"change_pct": 0},
    "objective": {"kind": "kpi", "risk": {"measure": "mean"}},
    "current_weeks": 13,
    "channels": {"tv": {"min_change_pct": -40, "max_change_pct": 40}, "*": {"max_change_pct": 100}},
    "shares": {
        "digital_floor": {"group": "digital", "min": 0.35},
        "single_channel_cap": {"each": True, "max": 0.45},
    },
    "history": {"cap_multiple": 1.5, "flag_multiple": 1.25},
}


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ``ru_maxrss`` in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def score(estimates: pd.DataFrame, geo: GeoWorld) -> pd.DataFrame:
    """Per market and channel: true ROAS, posterior mean and HDI, relative error, covered, noisy."""
    truth = geo.true_roas()[["market", "channel", "roas"]].rename(columns={"roas": "true_roas"})
    table = truth.merge(estimates, on=["market", "channel"], how="left", validate="one_to_one")
    table["rel_error"] = (table["roas_mean"] - table["true_roas"]).abs() / table["true_roas"]
    table["covered"] = (table["roas_hdi_low"] <= table["true_roas"]) & (
        table["true_roas"] <= table["roas_hdi_high"]
    )
    table["noisy"] = table["market"].isin(geo.noisy)
    return table


def summary_line(label: str, scored: pd.DataFrame) -> dict[str, float]:
    noisy, ordinary = scored[scored["noisy"]], scored[~scored["noisy"]]
    stats = {
        "median_error": float(scored["rel_error"].median()),
        "median_error_noisy": float(noisy["rel_error"].median()),
        "median_error_ordinary": float(ordinary["rel_error"].median()),
        "coverage": float(scored["covered"].mean()),
        "coverage_noisy": float(noisy["covered"].mean()),
    }
    print(
        f"  {label:<12} median ROAS error: all {stats['median_error']:.3f}, noisy "
        f"{stats['median_error_noisy']:.3f}, others {stats['median_error_ordinary']:.3f} | 94% HDI "
        f"coverage: all {stats['coverage']:.0%}, noisy {stats['coverage_noisy']:.0%}"
    )
    return stats


def truth_plan(plan: Plan) -> Plan:
    """The same rules scored on the truth: expected KPI, the true curve everywhere (no extrapolation rule)."""
    return plan.model_copy(
        update={
            "objective": plan.objective.model_copy(update={"kind": "kpi"}),
            "history": plan.history.model_copy(update={"extrapolation": "posterior"}),
        }
    )


def captured(v_cur: float, v_rec: float, v_opt: float) -> float:
    """Share of the achievable true uplift a recommendation captures (nan when nothing is achievable)."""
    return (v_rec - v_cur) / (v_opt - v_cur) if v_opt - v_cur > 1e-9 * abs(v_cur) else float("nan")


class TrueWorld:
    """The world's true response per market, its histories and the true optima of the plans (computed
    once, shared by every model scored)."""

    def __init__(self, geo: GeoWorld) -> None:
        world = geo.world
        self.truth = {m: true_response(world, m) for m in geo.markets}
        self.history = {m: pd.DataFrame(world.spend_matrix(m), columns=world.channels) for m in geo.markets}
        self.market_plan = plan_from_dict(MARKET_PLAN)
        self.market_optimum = {
            m: optimize_budget(
                truth_plan(self.market_plan), t, history=self.history[m], groups=GROUPS, n_starts=8
            ).recommended  # fmt: skip
            for m, t in self.truth.items()
        }
        self.geo_plan = load_plan(GEO_PLAN)
        # the true optimum: the geo search, and up to EXHAUSTIVE_MAX_MARKETS markets the better of it and
        # the exhaustive search (corners of every cell: minutes per plan beyond that)
        fast = optimize_geo_budget(truth_plan(self.geo_plan), self.truth, history=self.history, groups=GROUPS)
        candidates = [fast.result.recommended]
        if len(self.truth) <= EXHAUSTIVE_MAX_MARKETS:
            exhaustive = optimize_problem(fast.result.problem, stack_responses(self.truth), n_starts=8)
            candidates.append(exhaustive.recommended)
        self.geo_optimum = max(candidates, key=lambda x: self.geo_value(x[0]))

    def value(self, market: str, weekly: np.ndarray) -> float:
        """True steady-state weekly contribution of a market's constant weekly spend ``(C,)``."""
        return float(self.truth[market].steady_state(np.asarray(weekly, dtype=float)).sum())

    def geo_value(self, cells: np.ndarray) -> float:
        """True weekly contribution of a steady-state geo allocation ``(markets x channels,)``."""
        per = np.asarray(cells, dtype=float).reshape(len(self.truth), -1)
        return sum(self.value(m, per[i]) for i, m in enumerate(self.truth))


def decision_quality(label: str, responses: Mapping[str, ResponseModel], true: TrueWorld, noisy) -> dict:
    """Score ``responses``' recommendations (per market and the national geo plan) on the truth."""
    rows = []
    for m, response in responses.items():
        rec = optimize_budget(true.market_plan, response, history=true.history[m], groups=GROUPS)
        current = rec.problem.current[0]
        v = [true.value(m, x) for x in (current, rec.recommended[0], true.market_optimum[m][0])]
        rows.append({"market": m, "noisy": m in noisy, "achievable_pct": 100 * (v[2] / v[0] - 1),
                     "captured": captured(*v)})  # fmt: skip
    per_market = pd.DataFrame(rows).set_index("market")
    start = time.perf_counter()
    geo = optimize_geo_budget(true.geo_plan, responses, history=true.history, groups=GROUPS)
    seconds = time.perf_counter() - start
    problem = geo.result.problem
    v = [true.geo_value(x[0]) for x in (problem.current, geo.result.recommended, true.geo_optimum)]
    national = captured(*v)
    stats = {
        "median_captured": float(per_market["captured"].median()),
        "median_captured_noisy": float(per_market.loc[per_market["noisy"], "captured"].median()),
        "min_captured": float(per_market["captured"].min()),
        "national_captured": national,
    }
    print(
        f"  {label:<12} captured share of the achievable true uplift: per market median "
        f"{stats['median_captured']:.2f} (noisy {stats['median_captured_noisy']:.2f}, worst "
        f"{stats['min_captured']:.2f}); national geo plan {national:.2f} (true uplift "
        f"{100 * (v[1] / v[0] - 1):+.2f}% of an achievable {100 * (v[2] / v[0] - 1):+.2f}%; geo optimizer "
        f"{seconds:.1f} s)",
        flush=True,
    )
    return {"stats": stats, "per_market": per_market}


def pooled_responses(result, max_draws: int | None) -> dict[str, ResponseModel]:
    """Each market's response from the pooled posterior (the joint draws: sums over markets are valid)."""
    return {
        m: ResponseModel.from_idata(
            market_posterior(result.idata, m), result.scalings[m], result.spec, max_draws
        )
        for m in result.markets
    }


def run_world(
    n_markets: int,
    seed: int,
    spec: ModelSpec,
    skip_independent: bool,
    decisions: bool = True,
    max_draws: int | None = 500,
) -> None:
    geo = generate_geo_world(n_markets, seed=seed)
    world = geo.world
    data = {m: model_data(world, m) for m in geo.markets}
    print(
        f"\n== {n_markets} markets x {world.n_weeks} weeks x {len(world.channels)} channels, seed {seed}; "
        f"noisy: {', '.join(geo.noisy)} ==",
        flush=True,
    )
    pooled_spec = spec.model_copy(update={"pooling": "partial"})
    result = fit_pooled(data, pooled_spec, cache=None)
    divergences = int(result.idata.sample_stats["diverging"].sum())
    t = result.timings
    print(
        f"  pooled fit: {t['total']:.0f} s wall (build {t['build']:.0f} s, compile {t['compile']:.0f} s, "
        f"sampling {t['sample']:.0f} s), {divergences} divergences; peak memory so far "
        f"{peak_memory_mb():.0f} MB",
        flush=True,
    )
    gate = GateConfig()
    joint = group_diagnostics(result)
    failures = group_gate_failures(joint, gate)
    first = next(iter(joint.values()))
    print(
        f"  gate (the product's defaults: R-hat <= {gate.max_r_hat}, ESS bulk and tail >= "
        f"{gate.min_ess_bulk:.0f}, {gate.max_divergences} divergences, in-sample fit per market): "
        f"max R-hat {first['max_r_hat']:.3f}, min ESS bulk {first['min_ess_bulk']:.0f} / tail "
        f"{first['min_ess_tail']:.0f} -> "
        + ("PASS: every market gets a champion" if not failures else f"FAIL: {'; '.join(failures)}"),
        flush=True,
    )
    table = market_channel_summary(result.idata, result.scalings, pooled_spec, result.data, result.carry_in)
    pooled = score(table[table["market"] != NATIONAL], geo)
    national = table[table["market"] == NATIONAL].set_index("channel")
    true_national = world.summary()["roas"]
    covered = (
        (national["roas_hdi_low"] <= true_national) & (true_national <= national["roas_hdi_high"])
    ).sum()
    error = ((national["roas_mean"] - true_national).abs() / true_national).median()
    print(
        f"  national roll-up: median ROAS error {error:.3f}, {covered}/{len(national)} channels "
        "in the 94% HDI"
    )
    print("  per-market ROAS vs truth:")
    stats_pooled = summary_line("pooled", pooled)
    true = TrueWorld(geo) if decisions else None
    if true is not None:
        print("  decisions scored on the true response:")
        quality_pooled = decision_quality("pooled", pooled_responses(result, max_draws), true, geo.noisy)

    if skip_independent:
        print(f"  (independent fits skipped) coverage >= {COVERAGE_GOAL:.0%}: "
              f"{'PASS' if stats_pooled['coverage'] >= COVERAGE_GOAL else 'FAIL'}")  # fmt: skip
        return
    cache, frames, start, n_div, alone = ModelCache(), [], time.perf_counter(), 0, {}
    for market, one in data.items():
        single = fit(one, spec, cache=cache)
        n_div += int(single.idata.sample_stats["diverging"].sum())
        frames.append(
            channel_summary(single.idata, single.scaling, spec, one).reset_index().assign(market=market)
        )
        if true is not None:
            alone[market] = ResponseModel.from_idata(single.idata, single.scaling, spec, max_draws)
    elapsed = time.perf_counter() - start
    independent = score(pd.concat(frames, ignore_index=True), geo)
    stats_alone = summary_line("independent", independent)
    print(
        f"  independent fits: {elapsed:.0f} s wall for {n_markets} markets (one compile), "
        f"{n_div} divergences; peak memory so far {peak_memory_mb():.0f} MB"
    )
    cut = 1 - stats_pooled["median_error_noisy"] / stats_alone["median_error_noisy"]
    cut_all = 1 - stats_pooled["median_error"] / stats_alone["median_error"]
    print(
        f"  pooling cuts the median per-market ROAS error by {cut:.0%} on the noisy markets, "
        f"{cut_all:.0%} overall"
    )
    print(
        f"  GOAL pooling cuts the median per-market ROAS error by >= {ERROR_CUT_GOAL:.0%} on the noisy "
        f"markets: {'PASS' if cut >= ERROR_CUT_GOAL else 'FAIL'} ({cut:.0%})"
    )
    covered = "PASS" if stats_pooled["coverage"] >= COVERAGE_GOAL else "FAIL"
    print(
        f"  GOAL coverage >= {COVERAGE_GOAL:.0%}: {covered} "
        f"(pooled {stats_pooled['coverage']:.0%}, independent {stats_alone['coverage']:.0%})"
    )
    by_market = pd.DataFrame(
        {
            "noisy": pooled.groupby("market")["noisy"].first(),
            "pooled_error": pooled.groupby("market")["rel_error"].median(),
            "independent_error": independent.groupby("market")["rel_error"].median(),
            "pooled_covered": pooled.groupby("market")["covered"].sum(),
            "independent_covered": independent.groupby("market")["covered"].sum(),
        }
    )
    if true is not None:
        print("  decisions scored on the true response:")
        quality_alone = decision_quality("independent", alone, true, geo.noisy)
        by_market["pooled_captured"] = quality_pooled["per_market"]["captured"]
        by_market["independent_captured"] = quality_alone["per_market"]["captured"]
        by_market["achievable_pct"] = quality_pooled["per_market"]["achievable_pct"]
    print(
        "  per market (median relative ROAS error over channels; channels covered of 5"
        + ("; captured share of the market plan's achievable true uplift" if true is not None else "")
        + "):"
    )
    print(by_market.round(3).to_string(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markets", default="10,40", help="comma-separated market counts (default 10,40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=None, help="tuning steps (default: --draws)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--skip-independent", action="store_true", help="fit the pooled model only")
    parser.add_argument("--skip-decisions", action="store_true", help="no decision quality")
    parser.add_argument("--max-draws", type=int, default=500, help="posterior draws the optimizers use")
    args = parser.parse_args()
    sampler = SamplerSpec(chains=args.chains, draws=args.draws, tune=args.tune or args.draws, seed=args.seed)
    spec = ModelSpec(sampler=sampler)
    print(
        f"bench_markets: markets {args.markets}, seed {args.seed}, {args.chains} chains x "
        f"({sampler.tune} tune + {args.draws} draws), nutpie; model defaults otherwise"
    )
    for n in (int(x) for x in args.markets.split(",")):
        run_world(n, args.seed, spec, args.skip_independent, not args.skip_decisions, args.max_draws)
    print(f"\npeak memory (ru_maxrss): {peak_memory_mb():.0f} MB")


if __name__ == "__main__":
    main()
