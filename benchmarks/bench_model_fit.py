"""Sampler comparison on the case-study data: speed, convergence, fit and forecast, compile-once saving.

Why: the pipeline refits every week, so the default sampler should be the fastest one that converges,
and the compile-once cache should pay for itself; both are measured here, on real data, next to
PyMC-Marketing's MMM on the same data and specification as a reference point.

Setup (the issue's spec): 7 channels (direct mail, insert, newspaper, radio, tv, social, online display),
the 22 ``hldy_*`` holiday flags as controls, 5 Fourier modes, linear trend, geometric adstock with
``l_max`` 6, logistic saturation; training weeks up to 2018-02-01, the 26 weeks after it are the test set
(predicted with the adstock carry-over from the last training weeks). Each sampler: 4 chains x 1000 draws
(1000 tune), the default ``target_accept``, seed 0.

Rows: our MMM with nutpie, PyMC's NUTS and numpyro/blackjax (where importable); our MMM in the plain
parameterization (``reparameterize=False``) with nutpie at the previous default ``target_accept`` 0.9,
i.e. as it was before the reparameterization (same model and posterior); then PyMC-Marketing's
``MMM`` (same channels, controls, adstock, saturation, seasonality; trend as a control column ``t``;
channel prior ``HalfNormal(1.66 * n_channels * spend share)``; sampled by nutpie) at our
``target_accept`` and at PyMC's default 0.8 (where importable).

Columns: ``wall_s`` (the whole fit: graph build, compilation, sampling), ``sample_s`` (the sampling loop
only: nutpie's for ours, ``pm.sample``'s own clock for PyMC's NUTS and for PyMC-Marketing; for numpyro it
includes JAX's JIT compilation), ``ess_per_wall_s`` and ``ess_per_sample_s`` (minimum bulk ESS over the
parameters divided by each), ``min_ess_bulk``, ``min_ess_tail``, ``max_r_hat``, ``divergences``,
``gate`` (the pipeline's default diagnostics gate: max R-hat <= 1.01, min bulk and tail ESS >= 400, no
divergence), in-sample R² of the posterior mean, out-of-sample MAPE and CRPS of the predictive draws.
"Parameters" are, for ours, every posterior variable but ``mu`` (the sampled ones plus the derived
``beta_channel`` and ``intercept``); for PyMC-Marketing, its free parameters.

Then the compile-once saving: the refit a week later (one more week of data, the champion's scaling,
same padded length) with the compiled graph reused, against the same refit compiling afresh.

Run (numpyro and PyMC-Marketing only where importable, i.e. in the separate benchmark venv)::

    nohup /work/bench-venv/bin/python benchmarks/bench_model_fit.py > /tmp/bench_fit.log 2>&1 &
    # options: --samplers nutpie,pymc,numpyro --pymc-marketing-target-accept 0.95,0.8 --seed 0 --skip-plain
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

# Let JAX (numpyro) run one chain per core, as nutpie and PyMC do; must precede any jax import.
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count() or 1}")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mmm_pipeline import metrics
from mmm_pipeline.model import insights  # noqa: E402
from mmm_pipeline.model.build import ModelData  # noqa: E402
from mmm_pipeline.model.fit import FitResult, ModelCache, fit  # noqa: E402
from mmm_pipeline.model.predict import predict  # noqa: E402
from mmm_pipeline.model.spec import HALFNORMAL_UNIT_SD, ModelSpec, SamplerSpec  # noqa: E402

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
TRAIN_END = pd.Timestamp("2018-02-01")
N_TEST = 26


def load_case_study() -> tuple[pd.DataFrame, ModelData, int]:
    """The raw frame, the model data (all weeks) and the number of training weeks."""
    frame = pd.read_csv(CSV, parse_dates=["wk_strt_dt"]).sort_values("wk_strt_dt").reset_index(drop=True)
    controls = [c for c in frame.columns if c.startswith("hldy_")]
    data = ModelData(
        pd.DatetimeIndex(frame["wk_strt_dt"]),
        frame[list(CHANNELS.values())].to_numpy(dtype=float),
        frame[controls].to_numpy(dtype=float),
        frame["sales"].to_numpy(dtype=float),
        tuple(CHANNELS),
        tuple(controls),
    )
    n_train = int((frame["wk_strt_dt"] <= TRAIN_END).sum())
    if n_train + N_TEST > len(frame):
        raise ValueError("the case-study file has fewer than 26 weeks after the training window")
    return frame, data, n_train


GATE = {"max_r_hat": 1.01, "min_ess": 400}


def score(
    name: str, wall_s: float, sample_s: float, idata, var_names: list[str], in_sample: np.ndarray,
    y_train: np.ndarray, test_draws: np.ndarray, y_test: np.ndarray,
) -> dict[str, float | str]:  # fmt: skip
    """One row of the comparison table from a posterior and its in-sample / test predictions."""
    summary = insights.parameter_summary(idata, var_names=var_names)
    ess_bulk, ess_tail = summary["ess_bulk"].min(), summary["ess_tail"].min()
    max_r_hat, divergences = summary["r_hat"].max(), int(idata.sample_stats["diverging"].sum())
    passed = max_r_hat <= GATE["max_r_hat"] and min(ess_bulk, ess_tail) >= GATE["min_ess"] and not divergences
    return {
        "model / sampler": name,
        "wall_s": wall_s,
        "sample_s": sample_s,
        "ess_per_wall_s": ess_bulk / wall_s,
        "ess_per_sample_s": ess_bulk / sample_s,
        "min_ess_bulk": ess_bulk,
        "min_ess_tail": ess_tail,
        "max_r_hat": max_r_hat,
        "divergences": divergences,
        "gate": "pass" if passed else "FAIL",
        "r2_in_sample": insights.fit_metrics(y_train, in_sample)["r2"],
        "mape_test": insights.fit_metrics(y_test, test_draws.mean(axis=0))["mape"],
        "crps_test": float(metrics.crps(test_draws, y_test).mean()),
    }


def with_sampler(spec: ModelSpec, sampler: str) -> ModelSpec:
    return spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"name": sampler})})


def run_ours(
    sampler: str, data: ModelData, n_train: int, spec: ModelSpec, cache: ModelCache, label: str = ""
) -> tuple[dict, FitResult]:
    spec = with_sampler(spec, sampler)
    train, test = data.window(0, n_train), data.window(n_train, n_train + N_TEST)
    start = time.perf_counter()
    result = fit(train, spec, cache=cache, progress=lambda m: print(f"  [{sampler}] {m}", flush=True))
    wall = time.perf_counter() - start
    in_sample = predict(result.idata, result.scaling, spec, train).expected.mean(axis=0)
    forecast = predict(result.idata, result.scaling, spec, test, data.carry_in(n_train, spec.l_max))
    var_names = [v for v in result.idata.posterior.data_vars if v != "mu"]
    row = score(
        f"ours / {sampler}{label}", wall, result.timings["sample"], result.idata, var_names, in_sample,
        train.kpi, forecast.kpi, test.kpi,
    )  # fmt: skip
    return row, result


def run_pymc_marketing(
    frame: pd.DataFrame, data: ModelData, n_train: int, spec: ModelSpec, target_accept: float
) -> dict:
    """PyMC-Marketing's MMM, same channels/controls/adstock/saturation/seasonality, trend as a control
    column ``t`` (as in its example notebooks), channel prior scaled by spend share, sampled by nutpie."""
    import warnings

    from pymc_extras.prior import Prior
    from pymc_marketing.mmm import MMM, GeometricAdstock, LogisticSaturation

    warnings.filterwarnings("ignore", category=FutureWarning)
    controls = list(data.control_names)
    X = frame[["wk_strt_dt", *CHANNELS.values(), *controls]].copy()
    X["t"] = np.arange(len(X), dtype=float)
    y = frame["sales"].astype(float)
    share = data.spend[:n_train].sum(axis=0) / data.spend[:n_train].sum()
    model = MMM(
        date_column="wk_strt_dt",
        channel_columns=list(CHANNELS.values()),
        control_columns=[*controls, "t"],
        adstock=GeometricAdstock(l_max=spec.l_max),
        saturation=LogisticSaturation(),
        yearly_seasonality=spec.n_fourier,
        model_config={
            "saturation_beta": Prior(
                "HalfNormal", sigma=HALFNORMAL_UNIT_SD * len(share) * share, dims="channel"
            )
        },
    )
    s = spec.sampler
    print(f"  [pymc-marketing] fitting with nutpie, target_accept {target_accept}...", flush=True)
    start = time.perf_counter()
    model.fit(
        X.iloc[:n_train], y.iloc[:n_train], chains=s.chains, draws=s.draws, tune=s.tune,
        target_accept=target_accept, nuts_sampler="nutpie", random_seed=s.seed, progressbar=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    sample_s = float(model.idata.posterior.attrs.get("sampling_time", wall))
    in_sample = model.sample_posterior_predictive(
        X.iloc[:n_train], extend_idata=False, random_seed=0, progressbar=False
    )
    test = model.sample_posterior_predictive(
        X.iloc[n_train : n_train + N_TEST], include_last_observations=True, extend_idata=False,
        random_seed=0, progressbar=False,
    )  # fmt: skip
    in_sample, test = in_sample["y"], test["y"]  # Datasets of the KPI draws, original scale
    return score(
        f"PyMC-Marketing MMM / nutpie, target_accept {target_accept}", wall, sample_s, model.idata,
        [rv.name for rv in model.model.free_RVs], in_sample.mean("sample").to_numpy(),
        y.iloc[:n_train].to_numpy(), test.transpose("sample", "date").to_numpy(),
        y.iloc[n_train : n_train + N_TEST].to_numpy(),
    )  # fmt: skip


def compile_once(data: ModelData, n_train: int, spec: ModelSpec, first: FitResult, cache: ModelCache) -> None:
    """A refresh a week later (one more week, the champion's scaling; 184 weeks pad to the same 195 as
    183 do): reusing the first nutpie fit's compiled graph vs compiling afresh, same data and seed."""
    window = data.window(0, n_train + 1)
    runs = {}
    for label, use in (("reusing the compiled graph", cache), ("compiling afresh", None)):
        start = time.perf_counter()
        result = fit(window, spec, scaling=first.scaling, cache=use)
        runs[label] = (time.perf_counter() - start, result)
    (warm_s, warm), (cold_s, cold) = runs.values()
    print(
        f"\ncompile once (nutpie), refit with one more week ({window.n_weeks} weeks, padded to "
        f"{warm.n_time}):\n"
        f"  compiling afresh: {cold_s:.1f} s (compile {cold.timings['compile']:.1f} s, "
        f"sample {cold.timings['sample']:.1f} s)\n"
        f"  reusing the compiled graph: {warm_s:.1f} s (graph reused: {warm.reused_graph}, compile "
        f"{warm.timings['compile']:.1f} s, sample {warm.timings['sample']:.1f} s)\n"
        f"  saving {cold_s - warm_s:.1f} s per refit ({1 - warm_s / cold_s:.0%})"
    )


def main() -> None:
    available = ["nutpie", "pymc"] + [s for s in ("numpyro", "blackjax") if importlib.util.find_spec(s)]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", default=",".join(available))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-accept", type=float, default=SamplerSpec().target_accept)
    parser.add_argument(
        "--pymc-marketing-target-accept", default=None, help="comma-separated; default: ours,0.8"
    )
    parser.add_argument("--skip-pymc-marketing", action="store_true")
    parser.add_argument(
        "--skip-plain", action="store_true", help="skip the plain-parameterization nutpie row"
    )
    args = parser.parse_args()
    frame, data, n_train = load_case_study()
    spec = ModelSpec(
        adstock="geometric", l_max=6, saturation="logistic", n_fourier=5, trend=True,
        sampler=SamplerSpec(
            chains=args.chains, draws=args.draws, tune=args.tune, seed=args.seed,
            target_accept=args.target_accept,
        ),
    )  # fmt: skip
    print(
        f"case study: {n_train} training weeks ({data.dates[0].date()}..{data.dates[n_train - 1].date()}), "
        f"{N_TEST} test weeks, {len(data.channels)} channels, {len(data.control_names)} controls, "
        f"{spec.n_fourier} Fourier modes, l_max {spec.l_max}, {os.cpu_count()} cores",
        flush=True,
    )
    rows, first, first_cache = [], None, None
    for sampler in args.samplers.split(","):
        cache = ModelCache()
        try:
            row, result = run_ours(sampler, data, n_train, spec, cache=cache)
        except Exception as exc:  # a sampler that fails here is a result to report, not a reason to stop
            print(f"  [{sampler}] failed: {exc!r}", flush=True)
            continue
        rows.append(row)
        print(pd.DataFrame([row]).round(3).to_string(index=False), flush=True)
        if sampler == "nutpie":
            first, first_cache = result, cache
    if not args.skip_plain:
        # Before the reparameterization: plain coordinates and the previous default target_accept 0.9.
        plain = spec.model_copy(
            update={
                "reparameterize": False,
                "sampler": spec.sampler.model_copy(update={"target_accept": 0.9}),
            }
        )
        row, _ = run_ours(
            "nutpie", data, n_train, plain, ModelCache(), label=", plain parameterization, ta 0.9"
        )
        rows.append(row)
        print(pd.DataFrame([row]).round(3).to_string(index=False), flush=True)
    if not args.skip_pymc_marketing and importlib.util.find_spec("pymc_marketing"):
        accepts = args.pymc_marketing_target_accept or f"{spec.sampler.target_accept},0.8"
        for target_accept in dict.fromkeys(float(a) for a in accepts.split(",")):
            try:
                rows.append(run_pymc_marketing(frame, data, n_train, spec, target_accept))
                print(pd.DataFrame([rows[-1]]).round(3).to_string(index=False), flush=True)
            except Exception as exc:
                print(f"  [pymc-marketing] failed: {exc!r}", flush=True)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", None)
    print(
        f"\n{args.chains} chains x {args.draws} draws ({args.tune} tune), our target_accept "
        f"{spec.sampler.target_accept}, {os.cpu_count()} cores\n"
    )
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))
    converged = table[table["gate"] == "pass"]
    names = converged["model / sampler"]
    ours = converged[names.str.startswith("ours") & ~names.str.contains("plain")]
    theirs = converged[names.str.startswith("PyMC-Marketing")]
    if len(ours):
        best = ours.loc[ours["ess_per_wall_s"].idxmax()]
        print(f"\nfastest of ours that passes the gate (ESS per wall second): {best['model / sampler']}")
        if len(theirs):
            ref = theirs.loc[theirs["ess_per_wall_s"].idxmax()]
            print(
                f"vs the fastest PyMC-Marketing run that passes ({ref['model / sampler']}): "
                f"{best['ess_per_wall_s'] / ref['ess_per_wall_s']:.2f}x ESS per wall second, "
                f"{best['ess_per_sample_s'] / ref['ess_per_sample_s']:.2f}x ESS per sampling second"
            )

    if first is not None:
        compile_once(data, n_train, spec, first, first_cache)


if __name__ == "__main__":
    main()
