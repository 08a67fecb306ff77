"""Ground-truth recovery: fit the MMM to several synthetic worlds and score it against the known truth.

Why: the case-study data has no truth, so it can only tell whether the model fits and forecasts; only a
world with known ROAS can tell whether the attribution is right. Per seed and channel this prints the
ROAS relative error of the posterior mean, whether the 94% HDI covers the true ROAS, and the absolute
error of the contribution share; per seed the convergence diagnostics (max R-hat, min bulk/tail ESS,
divergences, whether the pipeline's default gate passes: R-hat <= 1.01, ESS >= 400, no divergence), the
mean number of leapfrog steps per draw (the cost of a draw in gradient evaluations) and timings; then
the aggregates. All seeds share one compiled graph (same structure and length), so only the first fit
pays for compilation.

Run: ``nohup .venv/bin/python benchmarks/bench_recovery.py --seeds 5 > /tmp/bench_recovery.log 2>&1 &``
(options: ``--weeks 156 --chains 4 --draws 1000 --tune 1000 --sampler nutpie --target-accept 0.95``;
``--plain --target-accept 0.9`` is the parameterization and sampler setting before the reparameterization)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from mmm_pipeline.model import insights
from mmm_pipeline.model.fit import fit
from mmm_pipeline.model.spec import ModelSpec, SamplerSpec
from mmm_testkit.adapters import model_data
from mmm_testkit.synthetic import generate_world


def recovery_table(seed: int, weeks: int, spec: ModelSpec) -> tuple[pd.DataFrame, dict[str, float]]:
    """One seed: per-channel truth vs posterior, plus the fit's diagnostics and timings."""
    world = generate_world(seed=seed, n_weeks=weeks)
    data = model_data(world)
    result = fit(data, spec)
    est = insights.channel_summary(result.idata, result.scaling, spec, data)
    truth = world.summary()
    table = pd.DataFrame(
        {
            "seed": seed,
            "true_roas": truth["roas"],
            "roas_mean": est["roas_mean"],
            "roas_rel_err": est["roas_mean"] / truth["roas"] - 1,
            "covered": (est["roas_hdi_low"] <= truth["roas"]) & (truth["roas"] <= est["roas_hdi_high"]),
            "true_share": truth["share"],
            "share_mean": est["share_mean"],
            "share_abs_err": (est["share_mean"] - truth["share"]).abs(),
        }
    )
    diag = insights.diagnostics(result.idata, result.scaling, spec, data)
    gate = diag["max_r_hat"] <= 1.01 and min(diag["min_ess_bulk"], diag["min_ess_tail"]) >= 400
    stats = result.idata.sample_stats
    steps = float(stats["n_steps"].mean()) if "n_steps" in stats else float("nan")
    run = {
        **diag,
        "gate": "pass" if gate and not diag["divergences"] else "FAIL",
        "steps_per_draw": steps,
        **{f"{k}_s": v for k, v in result.timings.items()},
    }
    return table, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--weeks", type=int, default=156)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--sampler", default="nutpie")
    parser.add_argument("--target-accept", type=float, default=SamplerSpec().target_accept)
    parser.add_argument(
        "--plain",
        action="store_true",
        help="the plain parameterization (reparameterize=False), for comparison",
    )
    parser.add_argument("--spec", default="{}", help="other ModelSpec fields as JSON")
    args = parser.parse_args()
    spec = ModelSpec.model_validate(
        {
            "l_max": 8,
            "n_fourier": 2,
            "reparameterize": not args.plain,
            "sampler": SamplerSpec(
                name=args.sampler, chains=args.chains, draws=args.draws, tune=args.tune,
                target_accept=args.target_accept,
            ),
            **json.loads(args.spec),
        }
    )  # fmt: skip
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", None)
    tables, runs = [], []
    start = time.perf_counter()
    for seed in range(args.seeds):
        table, run = recovery_table(seed, args.weeks, spec)
        tables.append(table)
        runs.append({"seed": seed, **run})
        print(f"seed {seed}:\n{table.round(3)}\n", flush=True)
    all_rows = pd.concat(tables)
    per_channel = all_rows.groupby(level=0)[["roas_rel_err", "covered", "share_abs_err"]].agg(
        lambda s: np.abs(s).mean()
    )
    runs = pd.DataFrame(runs)
    print(runs.round(3).to_string(index=False))
    print(
        f"\n{args.seeds} seeds x {args.weeks} weeks, {args.sampler} {args.chains} chains x {args.draws} "
        f"draws (target_accept {args.target_accept}, reparameterize {spec.reparameterize}), "
        f"{time.perf_counter() - start:.0f} s in all\n"
        f"divergences per seed: {runs['divergences'].tolist()}; gate passed by "
        f"{int((runs['gate'] == 'pass').sum())}/{len(runs)} seeds\n"
        f"ROAS |relative error|: median {all_rows['roas_rel_err'].abs().median():.3f}, "
        f"mean {all_rows['roas_rel_err'].abs().mean():.3f}\n"
        f"94% HDI coverage of true ROAS: {all_rows['covered'].mean():.2f} "
        f"({int(all_rows['covered'].sum())}/{len(all_rows)})\n"
        f"contribution share |error|: mean {all_rows['share_abs_err'].mean():.3f}, "
        f"max {all_rows['share_abs_err'].max():.3f}\n"
        f"per channel (mean absolute values):\n{per_channel.round(3)}"
    )


if __name__ == "__main__":
    main()
