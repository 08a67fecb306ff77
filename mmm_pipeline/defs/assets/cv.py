"""Time-slice cross-validation of each fit, one Dagster step per fold.

``model_cv`` is a graph-backed asset: ``cv_plan`` lays out the rolling-origin folds of the fit's
training window, reads the market's lift tests and emits one output per fold; ``cv_fold_<k>`` fits
and scores fold ``k`` (the MMM, calibrated by the lift tests that had ended by its cut, and the baselines)
and writes nothing to DuckDB, so fold steps can run side by side under any executor;
``cv_combine`` pools the folds into the CV tables (written to files next to the fit's artifact) that
``model_registry`` records and uses for promotion. Run in one process (the CLI), consecutive fold steps
share one compiled model graph; the multiprocess executor (UI, schedules) spreads them over processes.

The folds are static outputs, ``cv.n_folds`` of them (``make_folds`` lays out exactly that many or
none), not dynamic ones: the dask executor cannot run dynamic outputs (dagster-io/dagster#9785), and a
fixed graph shows every fold as its own step before the run starts.
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from mmm_pipeline.cv.folds import CVSpec, make_folds
from mmm_pipeline.cv.plots import cv_forecast_chart, roas_by_fold_chart
from mmm_pipeline.cv.run import FoldResult, combine_folds, run_fold, run_pooled_fold
from mmm_pipeline.model.refit import market_lift_tests, training_data
from mmm_pipeline.model.registry import (
    CVRecord,
    FitRecord,
    cv_folder,
    read_record,
    write_cv_artifacts,
)

from ...config import ProjectConfig
from ...model.build import ModelData
from ...model.calibration import LiftTests
from ...model.spec import ModelSpec
from ..metadata import markdown_table
from ..resources import WarehouseResource
from .model import MARKETS, latest_pooled_fit


@dataclass(frozen=True)
class FoldTask:
    """What one fold step needs: the fit's training weeks, which fold of them to hold out and the
    market's lift tests (the fold's fit keeps those that ended by its cut).

    A task without data stands for "no cross-validation this time" (CV off, or too few weeks): every
    fold step then returns nothing and the fit is registered without CV figures.
    """

    model_id: str
    fold: int
    n_folds: int
    data: ModelData | None
    lift_tests: LiftTests | None = None
    spec: ModelSpec | None = None
    """The fit's own spec: the sampler settings its last attempt used (``model.remedies``), so a fold
    is not held to settings that already failed on the full window."""


def cv_tables(result) -> dict[str, pd.DataFrame]:  # noqa: ANN001 - a validation.cv.CVResult
    """The CV result as the registry's ``cv_*`` tables (see ``MODELS_DDL``)."""
    return {
        "cv_folds": result.folds,
        "cv_predictions": result.predictions,
        "cv_metrics": result.metrics,
        "cv_fold_parameters": result.parameters,
        "cv_stability": result.stability,
        "cv_parameter_stability": result.channel_stability,
    }


def cv_code_version(cfg: ProjectConfig) -> str:
    """What changes the CV figures besides the fit: the CV settings (folds, horizon, baselines...)."""
    return hashlib.sha256(cfg.cv.model_dump_json(exclude={"max_parallel_folds"}).encode()).hexdigest()[:16]


def build_cv_assets(cfg: ProjectConfig) -> list[dg.AssetsDefinition]:
    cv = CVSpec(**cfg.cv.model_dump(exclude={"enabled", "max_parallel_folds"}))
    if cfg.model.spec.pooling == "partial":
        return [pooled_cv_asset(cfg, cv)]

    fold_outputs = [f"fold_{k}" for k in range(cv.n_folds)]

    @dg.op(
        out={
            "note": dg.Out(str, description="why no fold was planned, or the fold layout"),
            **{name: dg.Out(FoldTask, description=f"fold {name[5:]}'s task") for name in fold_outputs},
        },
        description="Lays out the rolling-origin folds of the fit's training weeks, one output per fold.",
    )
    def cv_plan(context: dg.OpExecutionContext, warehouse: WarehouseResource, model_fit: FitRecord):
        record = model_fit

        def skip(note: str):  # noqa: ANN202 - a generator of the op's outputs
            yield dg.Output(note, "note")
            for k, name in enumerate(fold_outputs):
                yield dg.Output(FoldTask(record.model_id, k, 0, None), name)

        if not cfg.cv.enabled:
            yield from skip("cross-validation is switched off (cv.enabled: false)")
            return
        with warehouse.get_connection() as conn:
            frame = conn.execute(
                "SELECT * FROM marts.fct_modeling_weekly WHERE market = ? AND week <= ? ORDER BY week",
                [record.market, record.train_end],
            ).df()
            lift_tests = market_lift_tests(conn, record.market)
        data = training_data(frame, record.market, cfg, cfg.model)
        try:
            folds = make_folds(data.n_weeks, cv)
        except ValueError as exc:  # too little data for these settings: promotion falls back on the gate
            context.log.warning(f"cross-validation skipped: {exc}")
            yield from skip(f"skipped: {exc}")
            return
        layout = ", ".join(
            f"{f.index}: train {data.dates[f.train_start].date()}..{data.dates[f.cut - 1].date()} "
            f"test {data.dates[f.cut].date()}..{data.dates[f.test_stop - 1].date()}"
            for f in folds
        )
        context.log.info(f"{len(folds)} folds of {record.model_id}: {layout}")
        yield dg.Output(f"{len(folds)} folds ({layout})", "note")
        spec = ModelSpec.model_validate_json(record.model_spec)
        for fold, name in zip(folds, fold_outputs, strict=True):
            yield dg.Output(FoldTask(record.model_id, fold.index, len(folds), data, lift_tests, spec), name)

    @dg.op(
        description="Fits the MMM on a fold's training weeks, scores it and the baselines on its test weeks."
    )
    def cv_fold(context: dg.OpExecutionContext, task: FoldTask) -> FoldResult | None:
        if task.data is None:
            return None
        context.log.info(f"fold {task.fold + 1} of {task.n_folds} for {task.model_id}")
        result = run_fold(
            task.data,
            task.fold,
            task.spec or cfg.model.spec,
            cv,
            lift_tests=task.lift_tests,
            progress=context.log.info,
        )
        if result.status != "ok":
            context.log.error(f"fold {task.fold} failed: {result.error}")
        return result

    @dg.op(description="Pools the folds into the CV tables, next to the fit's artifact.")
    def cv_combine(
        context: dg.OpExecutionContext, model_fit: FitRecord, note: str, results: list[FoldResult | None]
    ) -> dg.Output[CVRecord]:
        cv_record, metadata = cv_outcome(
            model_fit, note, [r for r in results if r is not None], cv, context.log
        )
        return dg.Output(cv_record, metadata=metadata)

    @dg.graph_asset(
        group_name="model",
        partitions_def=MARKETS,
        code_version=cv_code_version(cfg),
        ins={"model_fit": dg.AssetIn("model_fit")},
        kinds={"pymc", "scikit-learn"},
        description=(
            f"Rolling-origin cross-validation of the market's latest fit: {cv.n_folds} folds of "
            f"{cv.horizon} weeks, every {cv.step} weeks, at least {cv.min_train_weeks} training weeks. Each "
            "fold refits the MMM on the weeks before its cut (with the lift tests that had ended by then) "
            "and forecasts the next weeks from their "
            "actual spend (adstock carried over); seasonal-naive and ridge baselines are scored on the "
            "same weeks. CRPS, MAPE, RMSE, bias, 50%/94% interval coverage per fold and overall, and "
            "each channel's ROAS/share/adstock/saturation per fold with a stability flag."
        ),
    )
    def model_cv(model_fit):  # noqa: ANN001, ANN202 - a Dagster graph composition
        note, *tasks = cv_plan(model_fit)
        results = [cv_fold.alias(f"cv_fold_{k}")(task) for k, task in enumerate(tasks)]
        return cv_combine(model_fit, note, results)

    return [model_cv]


def pooled_cv_asset(cfg: ProjectConfig, cv: CVSpec) -> dg.AssetsDefinition:
    """``model_cv`` under ``model.spec.pooling: partial``: the group's latest pooled fit cross-validated
    as one unit, every market's partition in one run.

    Each fold refits the pooled model on every market's weeks before the cut (:func:`run_pooled_fold`) and
    scores each market as a market fitted alone is scored, so each market gets its own CV tables and
    figures (what its registration compares with its champion's). The folds run one after another in
    this step: they pad to the full window's length, so every fold reuses the group's compiled graph
    (compiling a pooled graph costs more than sampling it on a small group). The CV records are written
    beside each market's artifact (``<model_id>.cv/cv.json``), where ``model_registry`` reads them: a
    record passed from step to step by an IO manager would cover one partition, this step covers all.
    """

    @dg.asset(
        name="model_cv",
        group_name="model",
        partitions_def=MARKETS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=["model_fit"],
        code_version=cv_code_version(cfg),
        kinds={"pymc", "scikit-learn"},
        description=(
            f"Rolling-origin cross-validation of the market group's latest pooled fit (model.spec.pooling: "
            f"partial), every market in one run: {cv.n_folds} folds of {cv.horizon} weeks, every {cv.step} "
            f"weeks, at least {cv.min_train_weeks} training weeks. Each fold refits the pooled model on "
            "every market's weeks before its cut (with the lift tests that had ended by then) and forecasts "
            "each market's next weeks from its actual spend; seasonal-naive and ridge baselines are scored "
            "per market on the same weeks. Each market gets its CV tables and figures, as a market fitted "
            "alone does."
        ),
    )
    def model_cv(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        group = latest_pooled_fit(context)
        records = {m: read_record(Path(path)) for m, path in group.runs.items()}
        markets = group.markets

        def write_all(note: str, results: dict[str, list[FoldResult]]) -> dict[str, CVRecord]:
            out = {}
            for m in markets:
                out[m], _ = cv_outcome(records[m], note, results.get(m, []), cv, context.log)
                if not results.get(m):  # skipped: the record alone, for the registry to read
                    write_cv_artifacts(cv_folder(records[m]), out[m], {})
            return out

        if not cfg.cv.enabled:
            cv_records = write_all("cross-validation is switched off (cv.enabled: false)", {})
        else:
            train_end = group.train_end
            data, lift_tests = {}, {}
            with warehouse.get_connection() as conn:
                for m in markets:
                    frame = conn.execute(
                        "SELECT * FROM marts.fct_modeling_weekly WHERE market = ? AND week <= ? "
                        "ORDER BY week",
                        [m, train_end],
                    ).df()
                    data[m] = training_data(frame, m, cfg, cfg.model)
                    lift_tests[m] = market_lift_tests(conn, m)
            first = data[markets[0]]
            try:
                folds = make_folds(first.n_weeks, cv)
            except ValueError as exc:  # too little data for these settings: promotion falls back on the gate
                context.log.warning(f"cross-validation skipped: {exc}")
                folds = []
                cv_records = write_all(f"skipped: {exc}", {})
            if folds:
                layout = ", ".join(
                    f"{f.index}: train {first.dates[f.train_start].date()}..{first.dates[f.cut - 1].date()} "
                    f"test {first.dates[f.cut].date()}..{first.dates[f.test_stop - 1].date()}"
                    for f in folds
                )
                context.log.info(f"{len(folds)} folds of pooled fit {group.pooled_fit_id}: {layout}")
                spec = ModelSpec.model_validate_json(records[markets[0]].model_spec)
                per_fold = [
                    run_pooled_fold(data, fold, spec, cv, lift_tests=lift_tests, progress=context.log.info)
                    for fold in folds
                ]
                results = {m: [fold[m] for fold in per_fold] for m in markets}
                cv_records = write_all(f"{len(folds)} folds ({layout})", results)
        crps = {m: r.overall.get("mmm", {}).get("crps") for m, r in cv_records.items()}
        return dg.MaterializeResult(
            metadata={
                "pooled_fit_id": group.pooled_fit_id,
                "status": ", ".join(sorted({r.status for r in cv_records.values()})),
                "by_market": dg.MetadataValue.md(
                    markdown_table(
                        pd.DataFrame(
                            {
                                "market": markets,
                                "status": [cv_records[m].status for m in markets],
                                "mmm_crps": [crps[m] for m in markets],
                                "failed_folds": [len(cv_records[m].failed_folds) for m in markets],
                                "unstable_channels": [
                                    ", ".join(cv_records[m].unstable_channels) for m in markets
                                ],
                            }
                        )
                    )
                ),
            }
        )

    return model_cv


def cv_outcome(
    record: FitRecord,
    note: str,
    results: list[FoldResult],
    cv: CVSpec,
    log: logging.Logger | dg.DagsterLogManager,
) -> tuple[CVRecord, dict[str, object]]:
    """A fit's CV record from its fold results (none: CV skipped, ``note`` says why), its tables written
    beside the fit's artifact, and the asset metadata that shows them in the UI."""
    if not results:
        return CVRecord(record.model_id, "skipped", note), {"status": "skipped", "note": note}
    combined = combine_folds(results, cv)
    overall = combined.overall()
    mmm_ok = "mmm" in overall.index and overall.loc["mmm", "status"] == "ok"
    failed = [f"fold {r.fold.index}: {r.error}" for r in combined.fold_results if r.status != "ok"]
    status = "failed" if not mmm_ok else ("partial" if failed else "ok")
    unstable = combined.channel_stability.loc[combined.channel_stability["roas_unstable"], "channel"]
    folder = cv_folder(record)
    cv_record = CVRecord(
        model_id=record.model_id,
        status=status,
        note=note,
        folder=str(folder),
        overall={
            str(model): {k: _number(v) for k, v in row.items() if k not in ("scope", "fold", "model")}
            for model, row in overall.iterrows()
        },
        unstable_channels=sorted(unstable),
        failed_folds=failed,
    )
    write_cv_artifacts(folder, cv_record, cv_tables(combined))
    columns = ["n_folds", "crps", "crps_skill", "mape", "rmse", "bias_pct", "coverage_50", "coverage_94"]
    log.info(
        f"cross-validation of {record.market} {status}: "
        f"MMM CRPS {cv_record.overall.get('mmm', {}).get('crps')}, "
        f"unstable channels: {', '.join(cv_record.unstable_channels) or 'none'}"
    )
    mmm_predictions = combined.predictions[combined.predictions["model"] == "mmm"]
    metadata = {
        "status": status,
        "folds": len(results),
        "lift_tests_per_fold": dg.MetadataValue.md(
            ", ".join(f"fold {r.fold.index}: {r.lift_tests}" for r in combined.fold_results)
        ),
        "failed_folds": dg.MetadataValue.md("\n".join(f"- {f}" for f in failed) or "none"),
        "overall": dg.MetadataValue.md(
            markdown_table(overall[columns].reset_index(), {"crps": ",.0f", "rmse": ",.0f"})
        ),
        "roas_stability": dg.MetadataValue.md(
            markdown_table(
                combined.channel_stability[
                    ["channel", "n_folds", "roas_mean", "roas_cv", "share_spread", "roas_unstable"]
                ]
            )
        ),
        "forecasts": dg.MetadataValue.md(
            cv_forecast_chart(mmm_predictions, f"{record.market}: out-of-sample forecasts by fold")
            if not mmm_predictions.empty
            else "no fold forecast"
        ),
        "roas_by_fold": dg.MetadataValue.md(
            roas_by_fold_chart(combined.parameters, f"{record.market}: ROAS by fold")
            if not combined.parameters.empty
            else "no fold parameters"
        ),
    }
    return cv_record, metadata


def _number(value: object) -> float | str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
