"""Sampler comparison on the case-study data: speed, convergence, fit and forecast, compile-once saving.

Why: the pipeline refits every week, so the default sampler should be the fastest one that converges,
and the compile-once cache should pay for itself; both are measured here, on real data, next to
PyMC-Marketing's MMM on the same data and specification as a reference point.

Setup: 7 channels (direct mail, insert, newspaper, radio, tv, social, online display), the ``hldy_*``
holiday flags as controls, 5 Fourier modes, linear trend, geometric adstock with ``l_max`` 6, logistic
saturation; training weeks up to 2018-02-01, the 26 weeks after it are the test set (predicted with the
adstock carry-over from the last training weeks). Each sampler: 4 chains x 1000 draws (1000 tune).

Printed per sampler: wall time including compilation, sampling time, ESS/s (min bulk ESS over the
parameters / sampling seconds), max R-hat, divergences, in-sample R², out-of-sample MAPE and CRPS. Then
the compile-once saving: a second nutpie fit with one more week of data (same padded length, so the
compiled graph is reused) against the first fit.

Run (numpyro and PyMC-Marketing only where importable, e.g. in the separate benchmark venv)::

    /work/bench-venv/bin/python benchmarks/bench_model_fit.py [--samplers nutpie,pymc,numpyro]
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


def score(
    name: str, wall_s: float, sample_s: float, idata, in_sample: np.ndarray, y_train: np.ndarray,
    test_draws: np.ndarray, y_test: np.ndarray,
) -> dict[str, float | str]:  # fmt: skip
    """One row of the comparison table from a posterior and its in-sample / test predictions."""
    summary = insights.parameter_summary(idata, var_names=[v for v in idata.posterior.data_vars if v != "mu"])
    return {
        "model / sampler": name,
        "wall_s": wall_s,
        "sample_s": sample_s,
        "ess_per_s": summary["ess_bulk"].min() / sample_s,
        "min_ess_bulk": summary["ess_bulk"].min(),
        "max_r_hat": summary["r_hat"].max(),
        "divergences": int(idata.sample_stats["diverging"].sum()),
        "r2_in_sample": insights.fit_metrics(y_train, in_sample)["r2"],
        "mape_test": insights.fit_metrics(y_test, test_draws.mean(axis=0))["mape"],
        "crps_test": float(insights.crps(test_draws, y_test).mean()),
    }


def run_ours(
    sampler: str, data: ModelData, n_train: int, spec: ModelSpec, cache: ModelCache
) -> tuple[dict, FitResult]:
    spec = spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"name": sampler})})
    train, test = data.window(0, n_train), data.window(n_train, n_train + N_TEST)
    start = time.perf_counter()
    result = fit(train, spec, cache=cache, progress=lambda m: print(f"  [{sampler}] {m}", flush=True))
    wall = time.perf_counter() - start
    in_sample = predict(result.idata, result.scaling, spec, train).expected.mean(axis=0)
    forecast = predict(result.idata, result.scaling, spec, test, data.carry_in(n_train, spec.l_max))
    row = score(
        f"ours / {sampler}",
        wall,
        result.timings["sample"],
        result.idata,
        in_sample,
        train.kpi,
        forecast.kpi,
        test.kpi,
    )
    return row, result


def run_pymc_marketing(frame: pd.DataFrame, data: ModelData, n_train: int, spec: ModelSpec) -> dict:
    """PyMC-Marketing's MMM, same channels/controls/adstock/saturation/seasonality, trend as a control
    column ``t`` (as in its example notebooks), channel prior scaled by spend share, sampled by nutpie."""
    from pymc_extras.prior import Prior
    from pymc_marketing.mmm import MMM, GeometricAdstock, LogisticSaturation

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
    start = time.perf_counter()
    model.fit(
        X.iloc[:n_train], y.iloc[:n_train], chains=s.chains, draws=s.draws, tune=s.tune,
        target_accept=s.target_accept, nuts_sampler="nutpie", random_seed=s.seed, progressbar=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    in_sample = model.sample_posterior_predictive(X.iloc[:n_train], extend_idata=False, random_seed=0)
    test = model.sample_posterior_predictive(
        X.iloc[n_train : n_train + N_TEST], include_last_observations=True, extend_idata=False, random_seed=0
    )
    in_sample, test = in_sample["y"], test["y"]  # Datasets of the KPI draws, original scale
    return score(
        "PyMC-Marketing MMM / nutpie (wall incl. build)", wall, wall, model.idata,
        in_sample.mean("sample").to_numpy(), y.iloc[:n_train].to_numpy(),
        test.transpose("sample", "date").to_numpy(), y.iloc[n_train : n_train + N_TEST].to_numpy(),
    )  # fmt: skip


def main() -> None:
    available = ["nutpie", "pymc"] + [s for s in ("numpyro", "blackjax") if importlib.util.find_spec(s)]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", default=",".join(available))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--skip-pymc-marketing", action="store_true")
    args = parser.parse_args()
    frame, data, n_train = load_case_study()
    spec = ModelSpec(
        adstock="geometric", l_max=6, saturation="logistic", n_fourier=5, trend=True,
        sampler=SamplerSpec(chains=args.chains, draws=args.draws, tune=args.tune, seed=0),
    )  # fmt: skip
    print(f"case study: {n_train} training weeks (to {data.dates[n_train - 1].date()}), {N_TEST} test weeks")
    rows, first = [], None
    for sampler in args.samplers.split(","):
        try:
            row, result = run_ours(sampler, data, n_train, spec, cache=ModelCache())
        except Exception as exc:  # a sampler that fails here is a result to report, not a reason to stop
            print(f"  [{sampler}] failed: {exc!r}", flush=True)
            continue
        rows.append(row)
        print(pd.DataFrame([row]).round(3).to_string(index=False), flush=True)
        if sampler == "nutpie":
            first = result
    if not args.skip_pymc_marketing and importlib.util.find_spec("pymc_marketing"):
        try:
            rows.append(run_pymc_marketing(frame, data, n_train, spec))
        except Exception as exc:
            print(f"  [pymc-marketing] failed: {exc!r}", flush=True)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", None)
    print(f"\n{args.chains} chains x {args.draws} draws ({args.tune} tune), {os.cpu_count()} cores\n")
    print(pd.DataFrame(rows).round(3).to_string(index=False))

    if first is not None:
        # A refresh: one more week, the champion's scaling; 184 weeks pad to the same 195 as 183 do.
        cache = ModelCache()
        start = time.perf_counter()
        cold = fit(data.window(0, n_train), spec, cache=cache)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = fit(data.window(0, n_train + 1), spec, scaling=cold.scaling, cache=cache)
        warm_s = time.perf_counter() - start
        print(
            f"\ncompile once (nutpie): first fit {cold_s:.1f} s (compile {cold.timings['compile']:.1f} s, "
            f"sample {cold.timings['sample']:.1f} s); refit with a new week {warm_s:.1f} s "
            f"(graph reused: {warm.reused_graph}, padded length {warm.n_time}); "
            f"saving {cold_s - warm_s:.1f} s ({1 - warm_s / cold_s:.0%})"
        )


if __name__ == "__main__":
    main()
