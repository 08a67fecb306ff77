"""Rolling-origin CV on the case-study data: wall time with 1 and 2 worker processes, PyMC-Marketing's
MMM on the same folds, and the CV metrics of the MMM against the baselines.

Setup: the case-study spec of ``bench_model_fit.py`` (7 channels, the ``hldy_*`` holiday flags as
controls, 5 Fourier modes, trend, geometric adstock ``l_max`` 6, logistic saturation), sampled with nutpie
(4 chains x 1000 draws, 1000 tune by default); folds: 6 x 13 weeks ahead, 13 weeks apart, the last one
ending at the last week (209 weeks: training windows of 131..196 weeks).

Runs, one after another (they are timed, so nothing else should be heavy meanwhile):

1. ``ours, 1 worker``: one fresh worker process runs the 6 folds in order (:func:`run_fold` per fold,
   one ``ModelCache``): every fold pads to the longest training window, so the graph is compiled once.
2. ``ours, 2 workers``: two fresh worker processes (``ProcessPoolExecutor``, spawn), each with its own
   cache, take folds as they free up; each compiles once.
3. ``PyMC-Marketing``: its ``MMM`` (same structure, trend as a control column, channel prior scaled by the
   fold's spend shares, nutpie), fitted and predicted fold after fold (``include_last_observations`` for
   the adstock carry-over); it builds and compiles a new model per fold. Only where importable.

``--no-share-graph`` pads each fold only to the spec's 13-week multiple instead: the six training
windows then get six different padded lengths and a compile each (what graph sharing saves).

Printed: wall times, per-fold fit/compile/sample seconds, overall and per-fold CV metrics (CRPS, MAPE,
RMSE, bias, 50%/94% coverage, CRPS skill vs seasonal-naive) of our MMM, PyMC-Marketing's MMM and the
seasonal-naive and ridge baselines, and the per-channel parameter stability of our MMM.

Run (PyMC-Marketing only in the benchmark venv, see README.md)::

    nohup /work/bench-venv/bin/python benchmarks/bench_cv.py > /tmp/bench_cv.log 2>&1 &
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model_fit import CHANNELS, load_case_study  # noqa: E402

from mmm_pipeline.cv import CVSpec, FoldResult, combine_folds, make_folds, run_fold  # noqa: E402
from mmm_pipeline.cv.metrics import summarize, weekly_scores  # noqa: E402
from mmm_pipeline.model.spec import HALFNORMAL_UNIT_SD, ModelSpec, SamplerSpec  # noqa: E402


@functools.cache
def _data():
    return load_case_study()


def _fold_job(index: int, spec_json: str, cv_json: str) -> tuple[FoldResult, int, float]:
    """One fold in a worker process; the process-wide ``ModelCache`` keeps its compiled graph."""
    _frame, data, _n_train = _data()
    start = time.perf_counter()
    result = run_fold(
        data, index, ModelSpec.model_validate_json(spec_json), CVSpec.model_validate_json(cv_json)
    )
    return result, os.getpid(), time.perf_counter() - start


def run_ours(workers: int, spec: ModelSpec, cv: CVSpec, n_folds: int) -> tuple[list[FoldResult], float, dict]:
    """All folds on ``workers`` fresh processes; wall time from pool start (process start-up included)."""
    start = time.perf_counter()
    results, pids = [], {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [
            pool.submit(_fold_job, k, spec.model_dump_json(), cv.model_dump_json()) for k in range(n_folds)
        ]
        for future in as_completed(futures):
            result, pid, seconds = future.result()
            results.append(result)
            pids.setdefault(pid, []).append(result.fold.index)
            print(
                f"  [{workers} worker(s)] fold {result.fold.index} {result.status} in {seconds:.1f} s "
                f"(pid {pid}, compile {result.info['compile_seconds'] or 0:.1f} s, "
                f"sample {result.info['sample_seconds'] or 0:.1f} s) at {time.perf_counter() - start:.0f} s",
                flush=True,
            )
    return results, time.perf_counter() - start, pids


def run_pymc_marketing(frame: pd.DataFrame, data, spec: ModelSpec, cv: CVSpec) -> tuple[pd.DataFrame, list]:
    """PyMC-Marketing's MMM fold after fold: weekly score rows (model ``pymc_marketing``) and timings."""
    import warnings

    from pymc_extras.prior import Prior
    from pymc_marketing.mmm import MMM, GeometricAdstock, LogisticSaturation

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    controls = list(data.control_names)
    X = frame[["wk_strt_dt", *CHANNELS.values(), *controls]].copy()
    X["t"] = np.arange(len(X), dtype=float)
    y = frame["sales"].astype(float)
    s = spec.sampler
    rows, timings = [], []
    for fold in make_folds(data.n_weeks, cv):
        share = data.spend[: fold.cut].sum(axis=0) / data.spend[: fold.cut].sum()
        start = time.perf_counter()
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
        model.fit(
            X.iloc[: fold.cut], y.iloc[: fold.cut], chains=s.chains, draws=s.draws, tune=s.tune,
            target_accept=s.target_accept, nuts_sampler="nutpie", random_seed=s.seed, progressbar=False,
        )  # fmt: skip
        fit_s = time.perf_counter() - start
        test = model.sample_posterior_predictive(
            X.iloc[fold.cut : fold.test_stop], include_last_observations=True, extend_idata=False,
            random_seed=0, progressbar=False,
        )["y"]  # fmt: skip
        total_s = time.perf_counter() - start
        draws = test.transpose("sample", ...).to_numpy()
        scores = weekly_scores(
            draws, y.iloc[fold.cut : fold.test_stop].to_numpy(), data.dates[fold.cut : fold.test_stop]
        )
        rows.append(scores.assign(fold=fold.index, model="pymc_marketing"))
        timings.append({"fold": fold.index, "fit_s": fit_s, "total_s": total_s})
        print(f"  [pymc-marketing] fold {fold.index}: fit {fit_s:.1f} s, total {total_s:.1f} s", flush=True)
    return pd.concat(rows, ignore_index=True), timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--horizon", type=int, default=13)
    parser.add_argument("--workers", default="1,2", help="worker-process counts to time, comma-separated")
    parser.add_argument("--skip-pymc-marketing", action="store_true")
    parser.add_argument(
        "--no-share-graph",
        action="store_true",
        help="pad each fold to its own length (the spec's pad_weeks_to): a compile per fold, for comparison",
    )
    args = parser.parse_args()
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", None)
    frame, data, _ = _data()
    spec = ModelSpec(
        adstock="geometric", l_max=6, saturation="logistic", n_fourier=5, trend=True,
        sampler=SamplerSpec(chains=args.chains, draws=args.draws, tune=args.tune, seed=0),
    )  # fmt: skip
    cv = CVSpec(
        n_folds=args.folds, horizon=args.horizon, step=args.horizon, share_graph=not args.no_share_graph
    )
    folds = make_folds(data.n_weeks, cv)
    print(
        f"case study: {data.n_weeks} weeks, {len(folds)} folds x {cv.horizon} weeks; training windows "
        f"{folds[0].n_train}..{folds[-1].n_train} weeks; {args.chains} chains x {args.draws} draws "
        f"({args.tune} tune); {os.cpu_count()} cores",
        flush=True,
    )

    walls, combined = {}, None
    for workers in [int(w) for w in args.workers.split(",")]:
        results, wall, pids = run_ours(workers, spec, cv, len(folds))
        walls[f"ours, {workers} worker(s)" + (", no graph sharing" if args.no_share_graph else "")] = wall
        combined = combine_folds(results, cv)
        print(f"ours with {workers} worker(s): {wall:.1f} s wall; folds per process {list(pids.values())}")
        columns = ["fold", "status", "n_train", "n_time", "fit_seconds", "compile_seconds", "sample_seconds",
                   "reused_graph", "divergences", "max_r_hat", "min_ess_bulk", "error"]  # fmt: skip
        print(combined.folds[columns].round(2).to_string(index=False), flush=True)

    predictions = combined.predictions
    if not args.skip_pymc_marketing and importlib.util.find_spec("pymc_marketing"):
        try:
            start = time.perf_counter()
            pmm, timings = run_pymc_marketing(frame, data, spec, cv)
            walls["PyMC-Marketing, sequential"] = time.perf_counter() - start
            predictions = pd.concat([predictions, pmm], ignore_index=True)
            print(pd.DataFrame(timings).round(1).to_string(index=False), flush=True)
        except Exception as exc:  # report, do not lose the rest of the run
            print(f"  [pymc-marketing] failed: {exc!r}", flush=True)

    print("\nwall time of the CV run (all folds, compilation and process start-up included):")
    for name, seconds in walls.items():
        print(f"  {name:<30} {seconds:8.1f} s")
    print("\nCV metrics, pooled over the test weeks of all folds (KPI: weekly sales):")
    overall = predictions.groupby("model", sort=False).apply(summarize, include_groups=False).droplevel(1)
    naive = overall.at["seasonal_naive", "crps"] if "seasonal_naive" in overall.index else np.nan
    overall["crps_skill"] = 1 - overall["crps"] / naive
    print(overall.round(3).to_string())
    print("\nper-fold CRPS:")
    print(
        predictions.pivot_table(index="fold", columns="model", values="crps", aggfunc="mean")
        .round(0)
        .to_string()
    )
    print("\nper-fold MAPE of the predictive mean:")
    per_fold = predictions.groupby(["fold", "model"], sort=False).apply(summarize, include_groups=False)
    print(per_fold["mape"].droplevel(-1).unstack("model").round(3).to_string())
    print("\nour MMM's parameter stability across folds (ROAS and share of the training window):")
    print(combined.channel_stability.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
