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

Goal lines (issue 17): **pooling cuts the median per-market ROAS error by >= 30% on the noisy markets**
and **coverage >= 90%** (pooled). Also printed: the pooled fit's wall time (build + compile + sampling,
and sampling alone), the independent fits' total, and the process's peak memory
(``resource.getrusage``, max resident set size so far).

Run: ``.venv/bin/python benchmarks/bench_markets.py [--markets 10,40] [--seed 0] [--draws 1000]
[--tune N] [--chains 4] [--skip-independent]`` (``--tune`` defaults to ``--draws``).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import pandas as pd

from mmm_pipeline.model.fit import ModelCache, fit
from mmm_pipeline.model.insights import channel_summary
from mmm_pipeline.model.market_insights import market_channel_summary
from mmm_pipeline.model.pooled import NATIONAL, fit_pooled
from mmm_pipeline.model.spec import ModelSpec, SamplerSpec
from mmm_testkit.adapters import model_data
from mmm_testkit.markets import GeoWorld, generate_geo_world

ERROR_CUT_GOAL = 0.30
COVERAGE_GOAL = 0.90


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


def run_world(n_markets: int, seed: int, spec: ModelSpec, skip_independent: bool) -> None:
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

    if skip_independent:
        print(f"  (independent fits skipped) coverage >= {COVERAGE_GOAL:.0%}: "
              f"{'PASS' if stats_pooled['coverage'] >= COVERAGE_GOAL else 'FAIL'}")  # fmt: skip
        return
    cache, frames, start, n_div = ModelCache(), [], time.perf_counter(), 0
    for market, one in data.items():
        single = fit(one, spec, cache=cache)
        n_div += int(single.idata.sample_stats["diverging"].sum())
        frames.append(
            channel_summary(single.idata, single.scaling, spec, one).reset_index().assign(market=market)
        )
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
    print("  per market (median relative ROAS error over channels; channels covered of 5):")
    print(by_market.round(3).to_string(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markets", default="10,40", help="comma-separated market counts (default 10,40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=None, help="tuning steps (default: --draws)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--skip-independent", action="store_true", help="fit the pooled model only")
    args = parser.parse_args()
    sampler = SamplerSpec(chains=args.chains, draws=args.draws, tune=args.tune or args.draws, seed=args.seed)
    spec = ModelSpec(sampler=sampler)
    print(
        f"bench_markets: markets {args.markets}, seed {args.seed}, {args.chains} chains x "
        f"({sampler.tune} tune + {args.draws} draws), nutpie; model defaults otherwise"
    )
    for n in (int(x) for x in args.markets.split(",")):
        run_world(n, args.seed, spec, args.skip_independent)
    print(f"\npeak memory (ru_maxrss): {peak_memory_mb():.0f} MB")


if __name__ == "__main__":
    main()
