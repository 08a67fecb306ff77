"""Rolling-origin cross-validation of the MMM against baselines: one fold, all folds, combined tables.

Each fold fits the MMM on its training weeks only, with scaling computed from those weeks (no future KPI
or spend maximum leaks in) and the lift tests that had ended by its cut (no experiment from its test
weeks either), then predicts the next ``horizon`` weeks from their actual spend and
controls, carrying adstock over from the last training weeks. The baselines are scored on the same
weeks. :func:`run_fold` runs one fold (one pipeline step per fold); :func:`run_cv` runs them all in
order in one process, where the folds share one compiled graph (see :attr:`CVSpec.share_graph`);
:func:`combine_folds` turns fold results, however they were run, into the CV tables. Under ``pooling:
partial`` :func:`run_pooled_fold` fits the group's pooled model once per fold and scores each market.

A model that fails on a fold (bad data, sampler error) is recorded as failed with its error message,
and the other models and folds go on; overall metrics say how many folds they cover.

Tables (``market``-agnostic; the caller adds market and model-run keys):

* ``folds`` (cv_folds): ``fold, status, error, train_start, train_end, test_start, test_end, n_train,
  n_test, kpi_scale, n_time, fit_seconds, compile_seconds, sample_seconds, reused_graph, divergences,
  max_r_hat, min_ess_bulk, seconds``. ``status`` is ``ok`` or ``failed`` (the fold's data is unusable:
  ``error`` is that message; or some model failed: ``error`` is ``"<model>: <message>"`` per model).
  ``kpi_scale`` is the scaling's KPI maximum, from the training weeks; the MMM columns are null when
  the MMM did not run.
* ``predictions`` (cv_predictions): ``fold, model`` and :data:`metrics.WEEKLY_COLUMNS` per test week.
* ``metrics`` (cv_metrics): ``scope`` (``fold`` / ``overall``), ``fold`` (null for overall), ``model,
  status, error, method, n_folds, n_folds_failed, folds`` and :data:`metrics.METRIC_COLUMNS` plus
  ``crps_skill`` (``1 - crps / crps of seasonal-naive`` on the same weeks). Overall rows pool the test
  weeks of the folds where that model succeeded; ``n_folds`` and ``folds`` say which.
* ``parameters`` (cv_fold_parameters): ``fold`` and :data:`stability.PARAMETER_COLUMNS`.
* ``stability`` (per channel and parameter) and ``channel_stability`` (cv_parameter_stability, one
  row per channel with the ROAS-swing flag), see :mod:`mmm_pipeline.cv.stability`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mmm_pipeline.cv import baselines
from mmm_pipeline.cv.folds import CVSpec, Fold, folds_frame, make_folds
from mmm_pipeline.cv.metrics import METRIC_COLUMNS, WEEKLY_COLUMNS, summarize, weekly_scores
from mmm_pipeline.cv.stability import (
    PARAMETER_COLUMNS,
    channel_stability,
    fold_parameters,
    parameter_stability,
)
from mmm_pipeline.model import insights
from mmm_pipeline.model.build import ModelData, ScalingSpec, padded_length
from mmm_pipeline.model.calibration import LiftTests
from mmm_pipeline.model.fit import DEFAULT_CACHE, FitResult, ModelCache, fit
from mmm_pipeline.model.pooled import PooledFitResult, fit_pooled
from mmm_pipeline.model.predict import predict
from mmm_pipeline.model.spec import ModelSpec

Progress = Callable[[str], None]

FOLD_COLUMNS = [
    "fold", "status", "error", "train_start", "train_end", "test_start", "test_end", "n_train", "n_test",
    "kpi_scale", "n_time", "fit_seconds", "compile_seconds", "sample_seconds", "reused_graph",
    "divergences", "max_r_hat", "min_ess_bulk", "seconds",
]  # fmt: skip
PREDICTION_COLUMNS = ["fold", "model", *WEEKLY_COLUMNS]
METRICS_COLUMNS = [
    "scope", "fold", "model", "status", "error", "method", "n_folds", "n_folds_failed", "folds",
    *METRIC_COLUMNS, "crps_skill",
]  # fmt: skip
FOLD_PARAMETER_COLUMNS = ["fold", *PARAMETER_COLUMNS]


@dataclass
class FoldResult:
    """One fold's rows of the CV tables (see the module doc); ``fit`` only with ``keep_fit=True``;
    ``lift_tests``: how many lift tests entered the fold's MMM fit."""

    fold: Fold
    info: dict[str, Any]
    predictions: pd.DataFrame
    metrics: pd.DataFrame
    parameters: pd.DataFrame
    fit: FitResult | None = None
    lift_tests: int = 0

    @property
    def status(self) -> str:
        return self.info["status"]

    @property
    def error(self) -> str | None:
        return self.info["error"]


@dataclass
class CVResult:
    """All folds' results and the combined tables."""

    cv: CVSpec
    fold_results: list[FoldResult]
    folds: pd.DataFrame
    predictions: pd.DataFrame
    metrics: pd.DataFrame
    parameters: pd.DataFrame
    stability: pd.DataFrame
    channel_stability: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)

    def overall(self) -> pd.DataFrame:
        """The overall metric rows, one per model, indexed by model."""
        return self.metrics[self.metrics["scope"] == "overall"].set_index("model")


def cv_model_spec(spec: ModelSpec, n_weeks: int, cv: CVSpec, fold: Fold | None = None) -> ModelSpec:
    """The spec the folds are fitted with: ``spec`` with ``pad_weeks_to`` set to the padded length of the
    whole window (``n_weeks``, or ``fold``'s training window if longer) when :attr:`CVSpec.share_graph` is
    on, so every fold pads to the length the full fit was compiled for: one compiled graph serves the
    weekly refit and all of its folds (``fit`` has no padded-length argument; this is the lever)."""
    if not cv.share_graph:
        return spec
    longest = max(n_weeks, fold.n_train if fold is not None else 1, 1)
    return spec.model_copy(update={"pad_weeks_to": padded_length(longest, spec)})


def _check_fold_data(data: ModelData, fold: Fold) -> None:
    """Raise naming the weeks if the fold's KPI or controls are missing or not finite."""
    if data.kpi is None:
        raise ValueError("cross-validation needs the KPI")
    if fold.test_stop > data.n_weeks or fold.cut <= fold.train_start:
        raise ValueError(f"fold {fold} does not fit the data's {data.n_weeks} weeks")
    rows = slice(fold.train_start, fold.test_stop)
    bad = ~np.isfinite(data.kpi[rows]) | ~np.isfinite(data.controls[rows]).all(axis=1)
    if bad.any():
        weeks = [d.date().isoformat() for d in data.dates[rows][bad]]
        shown = ", ".join(weeks[:5]) + (f" and {len(weeks) - 5} more" if len(weeks) > 5 else "")
        raise ValueError(
            f"KPI or controls missing or not finite in {len(weeks)} week(s) of the fold: {shown}"
        )


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_fold(
    data: ModelData,
    fold: int | Fold,
    spec: ModelSpec | None = None,
    cv: CVSpec | None = None,
    *,
    lift_tests: LiftTests | None = None,
    cache: ModelCache | None = DEFAULT_CACHE,
    progress: Progress | None = None,
    keep_fit: bool = False,
    fitted: Callable[[], FitResult] | None = None,
) -> FoldResult:
    """Fit and score every model of ``cv.models`` on one fold of ``data`` (all weeks, with KPI).

    ``fold``: an index into :func:`make_folds` ``(data.n_weeks, cv)`` or a :class:`Fold`. A data
    problem or an exception in a model is caught and reported in the result (``status`` ``failed``);
    a fold index with settings that give no folds (data too short) raises. ``lift_tests``: the market's
    experiments, all of them; the MMM fit keeps those that ended by the fold's last training week.
    ``cache`` as in :func:`mmm_pipeline.model.fit`. ``fitted``: the MMM's fit on the fold's training
    weeks made elsewhere (a market's view of the pooled fold fit, :func:`run_pooled_fold`), called in
    place of fitting it here; what it raises fails the MMM on this fold as a fit error would.
    """
    spec = spec or ModelSpec()
    cv = cv or CVSpec()
    if isinstance(fold, int):
        folds = make_folds(data.n_weeks, cv)
        if not 0 <= fold < len(folds):
            raise ValueError(f"fold {fold} out of range: there are {len(folds)} folds (0..{len(folds) - 1})")
        fold = folds[fold]
    report = progress or (lambda _message: None)
    start = time.perf_counter()
    info: dict[str, Any] = dict.fromkeys(FOLD_COLUMNS)
    info.update(folds_frame([fold], data.dates).iloc[0].to_dict())
    rows: list[pd.DataFrame] = []
    status: dict[str, tuple[str | None, str | None]] = {}  # model -> (error, method)
    fold_error = None
    parameters = pd.DataFrame(columns=FOLD_PARAMETER_COLUMNS)
    fit_result = None
    train, test = data.window(fold.train_start, fold.cut), data.window(fold.cut, fold.test_stop)
    try:
        _check_fold_data(data, fold)
        scaling = ScalingSpec.from_data(train)
        info["kpi_scale"] = scaling.kpi_scale
    except Exception as exc:  # a fold with bad data fails as a whole; the others go on
        fold_error = _error(exc)
        report(f"fold {fold.index}: failed: {fold_error}")
        status = {model: (fold_error, None) for model in cv.models}
    else:
        for model in cv.models:
            try:
                if model == "mmm":
                    fold_spec = cv_model_spec(spec, data.n_weeks, cv, fold)
                    carry = data.carry_in(fold.train_start, fold_spec.l_max)
                    fit_result = (
                        fitted()
                        if fitted is not None
                        else fit(
                            train,
                            fold_spec,
                            scaling,
                            carry_in=carry,
                            lift_tests=lift_tests,
                            progress=lambda m: report(f"fold {fold.index}: {m}"),
                            cache=cache,
                        )
                    )
                    draws, method, parameters = _score_mmm(fit_result, data, fold, info)
                else:
                    forecast = (
                        baselines.seasonal_naive(train.kpi, fold.n_test, cv.season_length)
                        if model == "seasonal_naive"
                        else baselines.ridge(train, test, n_fourier=spec.n_fourier)
                    )
                    draws, method = forecast.draws(cv.baseline_draws, cv.seed + fold.index), forecast.method
                scores = weekly_scores(draws, test.kpi, test.dates)
                rows.append(scores.assign(fold=fold.index, model=model)[PREDICTION_COLUMNS])
                status[model] = (None, method)
            except Exception as exc:
                report(f"fold {fold.index}: {model} failed: {_error(exc)}")
                status[model] = (_error(exc), None)
    errors = {m: e for m, (e, _) in status.items() if e is not None}
    info["status"] = "failed" if errors else "ok"
    info["error"] = fold_error or "; ".join(f"{m}: {e}" for m, e in errors.items()) or None
    info["seconds"] = time.perf_counter() - start
    predictions = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=PREDICTION_COLUMNS)
    metric_rows = []
    for model, (error, method) in status.items():
        weekly = predictions[predictions["model"] == model]
        metrics = (
            summarize(weekly).iloc[0].to_dict() if error is None else dict.fromkeys(METRIC_COLUMNS, np.nan)
        )
        metric_rows.append(
            {
                "scope": "fold",
                "fold": fold.index,
                "model": model,
                "status": "ok" if error is None else "failed",
                "error": error,
                "method": method,
                "n_folds": int(error is None),
                "n_folds_failed": int(error is not None),
                "folds": str(fold.index),
                **metrics,
            }
        )
    metrics = _with_skill(pd.DataFrame(metric_rows, columns=METRICS_COLUMNS[:-1]), predictions)
    report(f"fold {fold.index}: {info['status']} in {info['seconds']:.1f} s")
    n_lift_tests = len(fit_result.lift_tests) if fit_result is not None else 0
    kept = fit_result if keep_fit else None
    return FoldResult(fold, info, predictions, metrics, parameters, fit=kept, lift_tests=n_lift_tests)


def _score_mmm(
    result: FitResult, data: ModelData, fold: Fold, info: dict[str, Any]
) -> tuple[np.ndarray, str, pd.DataFrame]:
    """Forecast the fold's test weeks from the fit on its training weeks (adstock carried in), record the
    fit's figures in ``info``; the draws, the method and the fold's parameter table."""
    spec, scaling, train = result.spec, result.scaling, result.data
    test = data.window(fold.cut, fold.test_stop)
    summary = insights.parameter_summary(result.idata)
    info.update(
        n_time=result.n_time,
        fit_seconds=result.timings["total"],
        compile_seconds=result.timings["compile"],
        sample_seconds=result.timings["sample"],
        reused_graph=result.reused_graph,
        divergences=int(result.idata.sample_stats["diverging"].sum()),
        max_r_hat=float(summary["r_hat"].max()),
        min_ess_bulk=float(summary["ess_bulk"].min()),
    )
    prediction = predict(
        result.idata, scaling, spec, test, data.carry_in(fold.cut, spec.l_max), seed=spec.sampler.seed
    )
    parameters = fold_parameters(result.idata, scaling, spec, train, result.carry_in)
    parameters.insert(0, "fold", fold.index)
    return prediction.kpi, f"mmm({spec.sampler.name})", parameters


def run_pooled_fold(
    data: Mapping[str, ModelData],
    fold: int | Fold,
    spec: ModelSpec,
    cv: CVSpec | None = None,
    *,
    lift_tests: Mapping[str, LiftTests] | None = None,
    cache: ModelCache | None = DEFAULT_CACHE,
    progress: Progress | None = None,
) -> dict[str, FoldResult]:
    """One fold of a market group under ``pooling: partial``: the pooled model fitted once on every
    market's training weeks (each with its own scaling from those weeks, and its lift tests that had
    ended by the cut), then each market scored as :func:`run_fold` scores it, its MMM forecast from its
    view of the fold's pooled posterior. Every market's weeks must be the same (the group's).

    If the pooled fit fails, the MMM fails on this fold in every market (with the fit's error); the
    baselines are still scored.
    """
    cv = cv or CVSpec()
    markets = list(data)
    n_weeks = data[markets[0]].n_weeks
    if isinstance(fold, int):
        folds = make_folds(n_weeks, cv)
        if not 0 <= fold < len(folds):
            raise ValueError(f"fold {fold} out of range: there are {len(folds)} folds (0..{len(folds) - 1})")
        fold = folds[fold]
    report = progress or (lambda _message: None)
    fold_spec = cv_model_spec(spec, n_weeks, cv, fold)
    pooled: PooledFitResult | None = None
    error: Exception | None = None
    try:
        for one in data.values():
            _check_fold_data(one, fold)
        trains = {m: data[m].window(fold.train_start, fold.cut) for m in markets}
        pooled = fit_pooled(
            trains,
            fold_spec,
            {m: ScalingSpec.from_data(t) for m, t in trains.items()},
            carry_in={m: data[m].carry_in(fold.train_start, fold_spec.l_max) for m in markets},
            lift_tests=lift_tests,
            progress=lambda m: report(f"fold {fold.index}: {m}"),
            cache=cache,
        )
    except Exception as exc:  # every market's MMM fails on this fold; the other folds go on
        error = exc
        report(f"fold {fold.index}: the pooled fit failed: {_error(exc)}")

    def view(market: str) -> Callable[[], FitResult]:
        def fitted() -> FitResult:
            if pooled is None:
                raise error  # type: ignore[misc]
            return pooled.market_fit(market)

        return fitted

    return {m: run_fold(data[m], fold, fold_spec, cv, progress=progress, fitted=view(m)) for m in markets}


def _with_skill(metrics: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Add ``crps_skill``: ``1 - crps / crps of seasonal-naive`` over the weeks both were scored on."""
    metrics = metrics.copy()
    metrics["crps_skill"] = np.nan
    naive = predictions[predictions["model"] == "seasonal_naive"].set_index(["fold", "week"])["crps"]
    if naive.empty:
        return metrics
    for i, row in metrics.iterrows():
        if row["status"] != "ok":
            continue
        folds = [int(f) for f in str(row["folds"]).split(",") if f != ""]
        own = predictions[(predictions["model"] == row["model"]) & predictions["fold"].isin(folds)]
        own = own.set_index(["fold", "week"])["crps"]
        common = own.index.intersection(naive.index)
        if len(common):
            metrics.loc[i, "crps_skill"] = 1 - own[common].mean() / naive[common].mean()
    return metrics


def combine_folds(results: list[FoldResult], cv: CVSpec | None = None) -> CVResult:
    """The CV tables from fold results (in any order; sorted by fold), with overall metrics per model."""
    cv = cv or CVSpec()
    results = sorted(results, key=lambda r: r.fold.index)
    folds = pd.DataFrame([r.info for r in results], columns=FOLD_COLUMNS)
    frames = [r.predictions for r in results if not r.predictions.empty]
    predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PREDICTION_COLUMNS)
    # From records, not concat: failed folds' all-null columns would otherwise decide the dtypes.
    per_fold = pd.DataFrame(
        [row for r in results for row in r.metrics.to_dict("records")], columns=METRICS_COLUMNS
    )
    overall = []
    for model in dict.fromkeys(per_fold["model"]):
        rows = per_fold[per_fold["model"] == model]
        ok = [int(f) for f in rows.loc[rows["status"] == "ok", "fold"]]
        weekly = predictions[(predictions["model"] == model) & predictions["fold"].isin(ok)]
        metrics = summarize(weekly).iloc[0].to_dict() if ok else dict.fromkeys(METRIC_COLUMNS, np.nan)
        methods = rows["method"].dropna().unique()
        overall.append(
            {
                "scope": "overall",
                "fold": pd.NA,
                "model": model,
                "status": "ok" if ok else "failed",
                "error": None if ok else "no fold succeeded",
                "method": ", ".join(methods) or None,
                "n_folds": len(ok),
                "n_folds_failed": int((rows["status"] != "ok").sum()),
                "folds": ",".join(map(str, ok)),
                **metrics,
            }
        )
    overall_frame = _with_skill(pd.DataFrame(overall, columns=METRICS_COLUMNS[:-1]), predictions)
    records = per_fold.to_dict("records") + overall_frame.to_dict("records")
    metrics = pd.DataFrame(records, columns=METRICS_COLUMNS)
    metrics["fold"] = metrics["fold"].astype("Int64")
    frames = [r.parameters for r in results if not r.parameters.empty]
    parameters = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FOLD_PARAMETER_COLUMNS)
    )
    return CVResult(
        cv=cv,
        fold_results=results,
        folds=folds,
        predictions=predictions,
        metrics=metrics,
        parameters=parameters,
        stability=parameter_stability(parameters),
        channel_stability=channel_stability(parameters, cv.roas_cv_threshold),
    )


def run_cv(
    data: ModelData,
    spec: ModelSpec | None = None,
    cv: CVSpec | None = None,
    *,
    lift_tests: LiftTests | None = None,
    cache: ModelCache | None = DEFAULT_CACHE,
    progress: Progress | None = None,
    keep_fits: bool = False,
) -> CVResult:
    """Every fold in order in this process (one compiled graph for all when ``share_graph``), combined.

    ``lift_tests`` as in :func:`run_fold`.
    """
    spec = spec or ModelSpec()
    cv = cv or CVSpec()
    start = time.perf_counter()
    results = [
        run_fold(
            data, fold, spec, cv, lift_tests=lift_tests, cache=cache, progress=progress, keep_fit=keep_fits
        )
        for fold in make_folds(data.n_weeks, cv)
    ]
    combined = combine_folds(results, cv)
    combined.timings["total"] = time.perf_counter() - start
    return combined
