"""Decision quality: how much of the achievable gain does the model's budget recommendation capture?

Why: a budget optimizer is only as good as the decisions it leads to, and those can only be scored where
the true response is known. On synthetic worlds (``mmm_pipeline.synthetic``) this fits the MMM to the
observable data, optimizes plans with the fitted model, and scores each recommendation on the TRUE
response: the share of the achievable uplift it captures,

    captured = (true(recommended) - true(current)) / (true(optimum) - true(current)),

where ``optimum`` is the best allocation under the same rules according to the true response (found by
the same optimizer on the true response, with more starts) and ``current`` the average weekly spend of
the last 52 weeks. 1 means the model's plan is as good as the truth's; 0 no better than standing still;
below 0 worse than the current plan. All scores are in true KPI (sales), the media's contribution.

Plans (rules as in ``mmm_pipeline/demo/plans/synthetic``; the current allocation = the last 52 weeks'
average):

* ``free``: one steady-state week at the current budget, no rule but no week above 1.5 x the channel's
  historical maximum (the model is not asked to extrapolate far);
* ``free_cvar``: the same, maximizing the CVaR (worst 10% of draws) instead of the mean;
* ``rules``: ``base_plan.yaml`` (shares, ratios, on/off minimums, change limits, history cap);
* ``quarter``: ``quarter_plan.yaml`` (13 weeks week by week, carry-in from the history, CVaR 20%).

The fitted model's plans use the optimizer's defaults, including its conservative reading of the response
past each channel's biggest historical week (``history.extrapolation: log``); the true optimum is found
on the true curve everywhere.

Run: ``.venv/bin/python benchmarks/bench_decision_quality.py [--seeds 20] [--draws 1000] [--chains 4]
[--spec JSON] [--plan-changes JSON] [--lift-tests N] [--fit-cache DIR]`` (``--spec`` overrides model spec
fields, to compare variants of the default model; ``--plan-changes`` changes both plan files, to compare
optimizer settings; ``--lift-tests`` calibrates each fit with N experiments per channel drawn from the
world's truth (:func:`mmm_pipeline.synthetic.design_lift_tests`); ``--fit-cache`` keeps each seed's
posterior on disk, keyed by spec, seed, sampler settings and lift tests, so that optimizer variants are
re-scored without refitting)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd

from mmm_pipeline.model.build import ModelData, ScalingSpec
from mmm_pipeline.model.calibration import LiftTests
from mmm_pipeline.model.fit import ModelCache, fit
from mmm_pipeline.model.spec import ModelSpec, SamplerSpec
from mmm_pipeline.optimize import ResponseModel, load_plan, optimize_budget, violations
from mmm_pipeline.optimize.plan import Plan, apply_scenario
from mmm_pipeline.synthetic import generate_world

PLANS = Path(__file__).resolve().parent.parent / "mmm_pipeline" / "demo" / "plans" / "synthetic"
GROUPS = {
    "tv": "traditional", "radio": "traditional", "print": "traditional",
    "search": "digital", "display": "digital", "social": "digital",
}  # fmt: skip


def plans(changes: dict | None = None) -> list[Plan]:
    """The four plans; ``changes`` (a scenario's ``changes``) applied to both plan files first."""
    base = load_plan(PLANS / "base_plan.yaml")
    quarter = load_plan(PLANS / "quarter_plan.yaml")
    if changes:
        base, quarter = (apply_scenario(p, changes, p.name) for p in (base, quarter))
    free = {
        "channels": None, "shares": None, "ratios": None, "current_weeks": 52,
        "objective": {"kind": "kpi", "risk": {"measure": "mean"}},
    }  # fmt: skip
    return [
        apply_scenario(base, free, "free"),
        apply_scenario(base, {**free, "objective": {"risk": {"measure": "cvar", "alpha": 0.1}}}, "free_cvar"),
        apply_scenario(base, {"current_weeks": 52}, "rules"),
        apply_scenario(quarter, {"current_weeks": 52}, "quarter"),
    ]


def true_value(world, truth: ResponseModel, result, plan: np.ndarray) -> float:
    """True media contribution of an allocation: steady-state weekly, or the plan's full effect."""
    problem = result.problem
    if problem.steady_state:
        return float(world.true_contribution(plan[0]).sum())
    return float(truth.plan_contribution(plan, problem.carry_in, problem.after).sum())


def fitted(
    seed: int, weeks: int, spec: ModelSpec, cache: ModelCache, fit_cache: Path | None, lift_tests: int = 0
) -> tuple[az.InferenceData, ScalingSpec, float]:
    """The fitted posterior and scaling of a seed's world (from ``fit_cache`` when there), fit seconds."""
    tag = f"|lift{lift_tests}" if lift_tests else ""
    key = hashlib.sha256(f"{spec.model_dump_json()}|{seed}|{weeks}{tag}".encode()).hexdigest()[:16]
    if fit_cache is not None:
        nc, js = fit_cache / f"{key}.nc", fit_cache / f"{key}.json"
        if nc.exists() and js.exists():
            return az.from_netcdf(nc), ScalingSpec.model_validate_json(js.read_text()), 0.0
    world = generate_world(seed=seed, n_weeks=weeks, lift_tests_per_channel=lift_tests)
    tests = LiftTests.from_frame(world.lift_tests) if lift_tests else None
    start = time.perf_counter()
    result = fit(ModelData.from_world(world), spec, lift_tests=tests, cache=cache)
    fit_s = time.perf_counter() - start
    if fit_cache is not None:
        fit_cache.mkdir(parents=True, exist_ok=True)
        result.idata.to_netcdf(nc)
        js.write_text(result.scaling.model_dump_json())
    return result.idata, result.scaling, fit_s


def run_seed(
    seed: int,
    weeks: int,
    spec: ModelSpec,
    cache: ModelCache,
    fit_cache: Path | None = None,
    plan_changes: dict | None = None,
    lift_tests: int = 0,
) -> tuple[pd.DataFrame, dict]:
    world = generate_world(seed=seed, n_weeks=weeks)
    idata, scaling, fit_s = fitted(seed, weeks, spec, cache, fit_cache, lift_tests)
    model = ResponseModel.from_idata(idata, scaling, spec)
    truth = ResponseModel.from_world(world)
    history = world.spend_matrix()
    rows = []
    for plan in plans(plan_changes):
        rec = optimize_budget(plan, model, history=history, groups=GROUPS)
        # The optimum on the true response: the same rules, the true curve everywhere (no extrapolation).
        true_plan = plan.model_copy(
            update={
                "objective": plan.objective.model_copy(update={"kind": "kpi"}),
                "history": plan.history.model_copy(update={"extrapolation": "posterior"}),
            }
        )
        best = optimize_budget(true_plan, truth, history=history, groups=GROUPS, n_starts=8)
        current = rec.problem.current
        v_cur, v_rec, v_opt = (
            true_value(world, truth, rec, x) for x in (current, rec.recommended, best.recommended)
        )
        summary = rec.summary.iloc[0]
        rows.append(
            {
                "seed": seed,
                "plan": plan.name,
                "true_current": v_cur,
                "true_recommended": v_rec,
                "true_optimum": v_opt,
                "achievable_uplift_pct": 100 * (v_opt - v_cur) / v_cur,
                "true_uplift_pct": 100 * (v_rec - v_cur) / v_cur,
                "model_uplift_pct": 100 * summary["uplift_mean"] / summary["contribution_current_mean"],
                "model_prob_uplift_positive": summary["prob_uplift_positive"],
                "captured": (v_rec - v_cur) / (v_opt - v_cur),
                "feasible": not violations(rec.problem, rec.recommended),
                "optimize_s": rec.info.seconds,
            }
        )
    return pd.DataFrame(rows), {
        "seed": seed,
        "fit_s": fit_s,
        "divergences": int(idata.sample_stats["diverging"].sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--weeks", type=int, default=156)
    parser.add_argument("--chains", type=int, default=SamplerSpec().chains)
    parser.add_argument("--draws", type=int, default=SamplerSpec().draws)
    parser.add_argument("--tune", type=int, default=SamplerSpec().tune)
    parser.add_argument(
        "--spec", default="{}", help='ModelSpec fields as JSON, e.g. \'{"saturation": "logistic"}\''
    )
    parser.add_argument("--fit-cache", type=Path, default=None, help="directory keeping fitted posteriors")
    parser.add_argument(
        "--plan-changes",
        default="{}",
        help='changes to both plan files (as a scenario), e.g. \'{"history": {"cap_multiple": 1.25}}\'',
    )
    parser.add_argument(
        "--lift-tests", type=int, default=0, help="lift tests per channel the model is calibrated with (0-4)"
    )
    args = parser.parse_args()
    spec = ModelSpec.model_validate(
        {
            "l_max": 8,
            "n_fourier": 2,
            "sampler": SamplerSpec(chains=args.chains, draws=args.draws, tune=args.tune, seed=0),
            **json.loads(args.spec),
        }
    )
    print(
        f"spec: {spec.model_dump_json(exclude={'sampler'})}; plan changes: {args.plan_changes}; "
        f"lift tests per channel: {args.lift_tests}"
    )
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", None)
    cache = ModelCache()
    tables, fits = [], []
    start = time.perf_counter()
    for seed in range(args.seeds):
        table, info = run_seed(
            seed, args.weeks, spec, cache, args.fit_cache, json.loads(args.plan_changes), args.lift_tests
        )
        tables.append(table)
        fits.append(info)
        print(f"seed {seed} (fit {info['fit_s']:.0f} s, {info['divergences']} divergences):")
        print(table.round(3).to_string(index=False), flush=True)
    rows = pd.concat(tables, ignore_index=True)
    print(
        f"\n{args.seeds} seeds x {args.weeks} weeks, {args.chains} chains x {args.draws} draws, "
        f"{time.perf_counter() - start:.0f} s in all\n"
    )
    agg = rows.groupby("plan", sort=False).agg(
        captured_median=("captured", "median"),
        captured_min=("captured", "min"),
        captured_max=("captured", "max"),
        achievable_uplift_pct_median=("achievable_uplift_pct", "median"),
        true_uplift_pct_median=("true_uplift_pct", "median"),
        model_uplift_pct_median=("model_uplift_pct", "median"),
        all_feasible=("feasible", "all"),
    )
    print(agg.round(3).to_string())
    print(f"\nall plans: median captured {rows['captured'].median():.3f}, min {rows['captured'].min():.3f}")


if __name__ == "__main__":
    main()
