"""Budget optimizer speed and quality against a black-box search (Optuna TPE), same problems, same run.

Why: the usual way to "optimize a budget with an MMM" is a black-box search that calls the model's
prediction once per candidate (e.g. Optuna with a thousand trials). Our optimizer uses the model's
analytic gradients with SciPy's SLSQP and the plan's rules as linear constraints. This script measures,
for 7 channels x 1000 posterior draws, one-week (steady state) and 13-week plans, four scenarios each:
the objective reached and the wall time of both, on the same objective function.

Model: the PyMC-Marketing case-study data (7 channels), our MMM fitted with nutpie, 2 chains x 500 draws
(1000 draws), ``l_max`` 6, 5 Fourier modes. The posterior is cached (``--idata``) so reruns skip the fit.

Black box: Optuna's TPE sampler (seeded), ``--trials`` trials (default 1000). Each trial suggests every
decision variable (7 weekly spends, or 7 x 13 for the quarter) within the channel's bounds, rescales them
to the budget (exact budgets; at-most budgets get a total-spend constraint) and reports the remaining
rules (shares, ratios, on/off minimums, bounds broken by the rescaling) as violations through Optuna's
``Trial.set_constraint``; the result is the best feasible trial. Both are scored with the same vectorised
objective (``Evaluator.value``), so the comparison is about the search, not the model code.

Run (Optuna lives in the benchmark venv only)::

    /work/bench-venv/bin/python benchmarks/bench_optimizer.py [--trials 1000] [--idata PATH]

``--trials 0`` times our optimizer alone (no Optuna needed: runs in the project's venv).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mmm_pipeline.optimize import ResponseModel, build_problem, optimize_budget, plan_from_dict, violations
from mmm_pipeline.optimize.objective import ObjectiveFunction
from mmm_pipeline.optimize.plan import Plan, apply_scenario
from mmm_pipeline.optimize.solver import Evaluator

CSV = Path(__file__).resolve().parent.parent / "mmm_pipeline" / "demo" / "case_study_weekly.csv"
CHANNELS = {
    "direct_mail": "mdsp_dm",
    "insert": "mdsp_inst",
    "newspaper": "mdsp_nsp",
    "radio": "mdsp_audtr",
    "tv": "mdsp_vidtr",
    "social": "mdsp_so",
    "online_display": "mdsp_on",
}
GROUPS = {c: "digital" if c in ("social", "online_display") else "traditional" for c in CHANNELS}


def base_plan(weeks: int) -> dict:
    """The case study's business rules; amounts are relative, so one dict serves both horizons."""
    return {
        "name": "base",
        "horizon": {"weeks": weeks},
        "budget": {"change_pct": 0},
        "channels": {
            "direct_mail": {"min_change_pct": -50, "max_change_pct": 50},
            "insert": {"min_change_pct": -50, "max_change_pct": 50},
            "newspaper": {"max_change_pct": 100},
            "radio": {"max_change_pct": 50, "min_on": 60_000.0 * weeks},
            "tv": {"max_change_pct": 50, "min_on": 60_000.0 * weeks},
            "social": {"min_change_pct": -50, "max_change_pct": 50},
            "online_display": {"min_change_pct": -50, "max_change_pct": 50},
        },
        "shares": {
            "digital_floor": {"group": "digital", "min": 0.40},
            "traditional_cap": {"group": "traditional", "max": 0.60},
            "single_channel_cap": {"each": True, "max": 0.35},
        },
        "ratios": {"social_le_display": {"lhs": "social", "rhs": "online_display", "max": 1.0}},
        "history": {"cap_multiple": 1.5},
    }


SCENARIOS = {
    "recession": {"budget": {"change_pct": -20}, "shares": {"traditional_cap": {"max": 0.50}}},
    "growth": {
        "budget": {"change_pct": 30, "mode": "at_most"},
        "objective": {"kind": "profit", "margin": 0.05, "risk": {"measure": "mean_minus_sd", "lam": 1.0}},
    },
    "competitive_response": {"shares": {"display_floor": {"channels": ["online_display"], "min": 0.33}}},
}


def load_case_study():
    from mmm_pipeline.model.build import ModelData

    frame = pd.read_csv(CSV, parse_dates=["wk_strt_dt"]).sort_values("wk_strt_dt").reset_index(drop=True)
    controls = [c for c in frame.columns if c.startswith("hldy_")]
    return ModelData(
        pd.DatetimeIndex(frame["wk_strt_dt"]),
        frame[list(CHANNELS.values())].to_numpy(dtype=float),
        frame[controls].to_numpy(dtype=float),
        frame["sales"].to_numpy(dtype=float),
        tuple(CHANNELS),
        tuple(controls),
    )


def posterior(path: Path) -> tuple[ResponseModel, np.ndarray, float]:
    """The fitted response (cached at ``path``), the spend history and the fit's wall time (0 if cached)."""
    import arviz as az

    from mmm_pipeline.model.build import ScalingSpec
    from mmm_pipeline.model.spec import ModelSpec, SamplerSpec

    data = load_case_study()
    fit_s = 0.0
    if not path.exists():
        from mmm_pipeline.model.fit import fit

        spec = ModelSpec(l_max=6, n_fourier=5, sampler=SamplerSpec(chains=2, draws=500, tune=500, seed=0))
        start = time.perf_counter()
        result = fit(data, spec, progress=lambda m: print(f"  [fit] {m}", flush=True))
        fit_s = time.perf_counter() - start
        path.parent.mkdir(parents=True, exist_ok=True)
        result.idata.to_netcdf(str(path))
    idata = az.from_netcdf(str(path))
    scaling = ScalingSpec.model_validate_json(idata.attrs["scaling"])
    spec = ModelSpec.model_validate_json(idata.attrs["model_spec"])
    return ResponseModel.from_idata(idata, scaling, spec), data.spend, fit_s


def black_box(plan: Plan, response: ResponseModel, history: np.ndarray, trials: int, seed: int) -> dict:
    """Optuna TPE on the same problem: best feasible objective, time, feasible trial count."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = build_problem(plan, response.channels, history=history, groups=GROUPS)
    probe = Evaluator(problem, response, ObjectiveFunction(plan.objective, {}))
    current = problem.current
    objective = ObjectiveFunction.build(
        plan.objective, probe.contributions(current).sum(axis=1), current.sum()
    )
    evaluator = Evaluator(problem, response, objective)
    weeks, n_ch = problem.weeks, len(problem.channels)
    # Per-variable search ranges: the channel's total upper bound spread over the weeks, capped per week.
    upper = np.full((weeks, n_ch), problem.budget / weeks)
    for rule in problem.rules:
        for i, v in rule.var_ub.items():
            upper.reshape(-1)[i] = min(upper.reshape(-1)[i], v)
        if rule.a is not None and rule.a.shape[0] == 1 and np.isfinite(rule.hi[0]) and (rule.a >= 0).all():
            cols = np.flatnonzero(rule.a[0].reshape(weeks, n_ch).any(axis=0))
            if len(cols) == 1:  # a single channel's cap
                upper[:, cols[0]] = np.minimum(upper[:, cols[0]], rule.hi[0] / weeks * 1.0001)
    exact = plan.budget.mode == "exact"

    def decode(trial) -> np.ndarray:
        x = np.array(
            [
                [trial.suggest_float(f"x{t}_{c}", 0.0, float(upper[t, c])) for c in range(n_ch)]
                for t in range(weeks)
            ]
        )
        if exact and x.sum() > 0:
            x = x * problem.budget / x.sum()
        return x

    def score(trial) -> float:
        x = decode(trial)
        broken = [v for _, v in violations(problem, x)]
        trial.set_user_attr("violation", broken)
        trial.set_constraint("violation", max(broken) if broken else 0.0)  # feasible when <= 0
        return evaluator.value(x)

    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    start = time.perf_counter()
    study.optimize(score, n_trials=trials)
    seconds = time.perf_counter() - start
    feasible = [t for t in study.trials if not t.user_attrs["violation"]]
    best = max(feasible, key=lambda t: t.value) if feasible else None
    return {
        "bb_seconds": seconds,
        "bb_objective": best.value if best else np.nan,
        "bb_feasible_trials": len(feasible),
        "objective_current": evaluator.value(current),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="0: time our optimizer only (no Optuna)")
    parser.add_argument("--idata", type=Path, default=Path("/tmp/mmm_bench_optimizer/case_study_idata.nc"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--horizons", default="1,13")
    args = parser.parse_args()
    response, history, fit_s = posterior(args.idata)
    print(
        f"model: {response.n_channels} channels x {response.n_draws} draws, l_max {response.l_max}"
        + (f" (fitted in {fit_s:.0f} s)" if fit_s else " (cached posterior)"),
        flush=True,
    )
    rows = []
    for weeks in [int(w) for w in args.horizons.split(",")]:
        base = plan_from_dict(base_plan(weeks), f"bench base plan ({weeks} weeks)")
        plans = [base] + [apply_scenario(base, changes, name) for name, changes in SCENARIOS.items()]
        for plan in plans:
            result = optimize_budget(plan, response, history=history, groups=GROUPS, seed=args.seed)
            ours = {
                "ours_seconds": result.info.seconds,
                "ours_objective": result.objective_value,
                "ours_feasible": not violations(result.problem, result.recommended),
                "nlp_solves": result.info.nlp_solves,
                "nodes": result.info.nodes,
            }
            start = time.perf_counter()
            optimize_budget(plan, response, history=history, groups=GROUPS, seed=args.seed)
            ours["ours_wall_seconds"] = time.perf_counter() - start  # incl. feasibility check and tables
            if not args.trials:
                row = {"weeks": weeks, "scenario": plan.name, **ours}
                rows.append(row)
                print(pd.DataFrame([row]).to_string(index=False), flush=True)
                continue
            bb = black_box(plan, response, history, args.trials, args.seed)
            gain_ours = ours["ours_objective"] - bb["objective_current"]
            gain_bb = bb["bb_objective"] - bb["objective_current"]
            row = {
                "weeks": weeks,
                "scenario": plan.name,
                "objective": f"{plan.objective.kind}/{plan.objective.risk.measure}",
                **ours,
                **bb,
                "bb_gain_share_of_ours": gain_bb / gain_ours if gain_ours else np.nan,
                "bb_gap_pct": 100
                * (bb["bb_objective"] - ours["ours_objective"])
                / abs(ours["ours_objective"]),
                "time_ratio": ours["ours_wall_seconds"] / bb["bb_seconds"],
            }
            rows.append(row)
            print(pd.DataFrame([row]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", None)
    print(
        f"\nours: optimizer seconds total {table['ours_seconds'].sum():.2f} (median "
        f"{table['ours_seconds'].median():.3f}, max {table['ours_seconds'].max():.3f}); wall incl. tables "
        f"{table['ours_wall_seconds'].sum():.2f}; SLSQP runs {table['nlp_solves'].sum()}"
    )
    if not args.trials:
        return
    print("\nSummary (objective: the plan's objective, KPI units; objective_current: at the current plan)")
    cols = [
        "weeks", "scenario", "objective", "objective_current", "ours_objective", "bb_objective",
        "bb_gap_pct", "bb_gain_share_of_ours", "ours_wall_seconds", "bb_seconds", "time_ratio",
        "bb_feasible_trials", "ours_feasible",
    ]  # fmt: skip
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:,.4g}"))
    better = (table["ours_objective"] >= table["bb_objective"]).mean()
    print(
        f"\nours >= black box in {better:.0%} of runs; time ratio (ours / black box) median "
        f"{table['time_ratio'].median():.4f}, max {table['time_ratio'].max():.4f}"
    )


if __name__ == "__main__":
    main()
