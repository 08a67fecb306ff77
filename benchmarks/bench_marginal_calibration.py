"""Are the fitted marginal returns where the truth is, and is the posterior honest about how far off they are?

Why: the budget optimizer moves money along each channel's marginal return; a fitted curve that is sure
of the wrong slope (a posterior too narrow for its error) sends money the wrong way with high confidence.
For each synthetic world this fits the model (or loads it from ``--fit-cache``, shared with
``bench_decision_quality.py``) and compares, per channel, the posterior mean of the steady-state marginal
return at 0.5x, 1x and 1.5x the current spend (the last 52 weeks' average) with the true one:
``z = (posterior mean - truth) / posterior sd``. A calibrated posterior has a root mean square ``z``
near 1.

Run: ``.venv/bin/python benchmarks/bench_marginal_calibration.py [--seeds 10] [--spec JSON]
[--fit-cache DIR]`` (4 chains x 1000 draws, the product default).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from bench_decision_quality import fitted

from mmm_pipeline.model.fit import ModelCache
from mmm_pipeline.model.spec import ModelSpec, SamplerSpec
from mmm_pipeline.optimize import ResponseModel
from mmm_testkit.adapters import true_response
from mmm_testkit.synthetic import generate_world

MULTIPLES = (0.5, 1.0, 1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--weeks", type=int, default=156)
    parser.add_argument("--spec", default="{}", help="ModelSpec fields as JSON")
    parser.add_argument("--fit-cache", type=Path, default=None, help="directory keeping fitted posteriors")
    args = parser.parse_args()
    spec = ModelSpec.model_validate(
        {
            "l_max": 8,
            "n_fourier": 2,
            "sampler": SamplerSpec(chains=4, draws=1000, tune=1000, seed=0),
            **json.loads(args.spec),
        }
    )
    cache, rows = ModelCache(), []
    for seed in range(args.seeds):
        world = generate_world(seed=seed, n_weeks=args.weeks)
        idata, scaling, _ = fitted(seed, args.weeks, spec, cache, args.fit_cache)
        model = ResponseModel.from_idata(idata, scaling, spec)
        truth = true_response(world)
        current = world.spend_matrix()[-52:].mean(axis=0)
        for multiple in MULTIPLES:
            _, slope = model.steady_state_grad(current * multiple)
            _, true_slope = truth.steady_state_grad(current * multiple)
            for i, channel in enumerate(world.channels):
                rows.append(
                    {
                        "seed": seed, "multiple": multiple, "channel": channel,
                        "true": true_slope[0, i], "fitted": slope[:, i].mean(), "sd": slope[:, i].std(),
                    }
                )  # fmt: skip
    table = pd.DataFrame(rows)
    table["z"] = (table["fitted"] - table["true"]) / table["sd"]
    pd.set_option("display.width", 200)
    print(f"spec: {spec.model_dump_json(exclude={'sampler'})}; {args.seeds} seeds x {args.weeks} weeks")
    print("\nmean marginal return (KPI per currency unit), fitted vs true, by multiple of the current spend:")
    print(table.pivot_table(index="channel", columns="multiple", values=["fitted", "true"]).round(2))
    print("\nz at the current spend, per seed and channel:")
    print(table[table["multiple"] == 1.0].pivot(index="seed", columns="channel", values="z").round(1))
    rms = table.groupby("multiple")["z"].apply(lambda z: float(np.sqrt((z**2).mean())))
    print("\nroot mean square z by multiple:", {k: round(v, 2) for k, v in rms.items()})


if __name__ == "__main__":
    main()
