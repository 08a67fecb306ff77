"""Model assets, one partition per market: the weekly refit, its registration and promotion.

``model_fit`` samples the posterior outside any DuckDB connection (it reads the modeling table, the
market's lift tests and the champion briefly first) and writes the artifact folder; its checks are the
diagnostics gate.
``model_registry`` then records the run in the ``models`` schema in one transaction and promotes it only
if it passed the gate, so a poor fit is kept for inspection while the last champion keeps serving.
Markets are dynamic partitions (added when data for a new market lands), so per-market fits are
separate steps any Dagster executor can spread over processes or machines.
"""

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd

from mmm_pipeline.features.data_version import (
    FINGERPRINT_FORMAT,
    market_inputs_version,
    modeling_fingerprint,
    training_rows,
)
from mmm_pipeline.ingest.contract import LIFT_TEST_COLUMNS
from mmm_pipeline.model.group_refit import group_gate_failures, refit_group
from mmm_pipeline.model.plots import fit_chart, roas_chart
from mmm_pipeline.model.pooled import check_group
from mmm_pipeline.model.promotion import (
    convergence_failures,
    cv_failures,
    fit_quality_failures,
    gate_failures,
    next_steps,
)
from mmm_pipeline.model.refit import (
    RefitError,
    as_float_dict,
    choose_scaling,
    code_version,
    config_hash,
    market_lift_tests,
    refit_market,
    refresh_anchor,
    training_data,
    utc_now,
)
from mmm_pipeline.model.registry import (
    POOLED_FOLDER,
    CVRecord,
    FitRecord,
    PooledFitRecord,
    champion,
    cv_folder,
    new_model_id,
    read_cv_record,
    read_group_record,
    read_record,
    read_tables,
    register,
    register_group,
    roas_drift,
    run_of,
    write_artifacts,
    write_group_artifacts,
)
from mmm_pipeline.model.settings import GateConfig
from mmm_pipeline.warehouse import relation_exists

from ...config import ProjectConfig
from ...model.calibration import lift_test_agreement
from ...model.fit import FitResult
from ..metadata import markdown_table, ui_metadata, ui_number
from ..resources import WRITER_POOL, WarehouseResource
from .monitoring import TRIGGER_TAG

#: One partition per market; the ingestion asset adds markets as their data lands.
MARKETS = dg.DynamicPartitionsDefinition(name="market")


def _check(
    name: str,
    failures: list[str],
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    **metadata: object,
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=not failures,
        severity=severity,
        metadata=ui_metadata(
            {
                **(
                    {"failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures))}
                    if failures
                    else {}
                ),
                **metadata,
            }
        ),
    )


#: A lift test further than this many combined standard deviations from the fitted lift is flagged.
LIFT_Z_WARN = 3.0


def _lift_test_check(results: dict[str, FitResult]) -> dg.AssetCheckResult:
    """Each lift test against the fitted lift (a table in the UI); a warning when one disagrees. With
    several fits (by market: the markets of a pooled fit, each its own view) the tests of all, by market."""
    tables = []
    for market, result in results.items():
        tests = result.lift_tests
        if not len(tests):
            continue
        expected = result.idata.posterior["lift_expected"].to_numpy()
        table = lift_test_agreement(expected.reshape(-1, expected.shape[-1]), tests, result.scaling.kpi_scale)
        tables.append(table.assign(market=market) if len(results) > 1 else table)
    if not tables:
        return _check("lift_tests_agree", [], dg.AssetCheckSeverity.WARN, lift_tests=0)
    table = pd.concat(tables, ignore_index=True)
    far = table[table["z"].abs() > LIFT_Z_WARN]
    failures = [
        ("" if len(results) == 1 else f"market {r.market}: ")
        + f"{r.channel} test ending {r.end_date}: measured {r.lift:,.0f} +- {r.lift_se:,.0f}, fitted "
        f"{r.fitted_mean:,.0f} (z = {r.z:+.1f})"
        for r in far.itertuples()
    ]
    return _check(
        "lift_tests_agree",
        failures,
        dg.AssetCheckSeverity.WARN,
        lift_tests=len(table),
        max_abs_z=float(table["z"].abs().max()),
        tests=dg.MetadataValue.md(markdown_table(table)),
    )


def _fit_quality_text(gate: GateConfig) -> str:
    """The in-sample rules in force, in words (both are off by default: the data-relative rule is the
    cross-validated skill against seasonal-naive, checked at registration)."""
    rules = [
        *([f"in-sample R² >= {gate.min_r2:g}"] if gate.min_r2 is not None else []),
        *([f"in-sample MAPE <= {gate.max_mape:g}"] if gate.max_mape is not None else []),
    ]
    return (
        " and ".join(rules) + " (model.gate)"
        if rules
        else "no in-sample floor is set (model.gate.min_r2 and max_mape are off); the fit must instead "
        "forecast better than seasonal-naive in cross-validation (model.gate.min_cv_skill)"
    )


def _no_champion_text(
    record: FitRecord,
    cv: CVRecord,
    blocked_by: list[str],
    attempts: pd.DataFrame | None,
    gate: GateConfig,
) -> list[str]:
    """Why the market has no champion and what to do, for the ``champion_serving`` check (which the CLI
    prints): the rules the latest fit missed, the parameters most responsible, the attempts, next steps."""
    worst = None
    if attempts is not None and not attempts.empty and isinstance(attempts.iloc[-1]["worst_parameters"], str):
        worst = str(attempts.iloc[-1]["worst_parameters"])
    run = {**record.row("rejected"), **cv.row()}
    lines = [
        f"no model of market {record.market} has passed the gate yet; the latest fit {record.model_id} "
        f"({record.fit_attempts} attempt(s)) missed: {'; '.join(blocked_by)}"
    ]
    if worst:
        lines.append(f"parameters most responsible: {worst}")
    lines += [f"next step: {step}" for step in next_steps(run, gate, worst)]
    lines.append("then: mmm-pipeline run --refit (a rejected fit is not retried on unchanged data)")
    return lines


def _attempts_markdown(attempts: pd.DataFrame) -> str:
    """The fit attempts as a table for the UI: settings, diagnostics, verdict and what each retry changed."""
    table = attempts[
        ["attempt", "target_accept", "tune", "draws", "seed", "max_r_hat", "min_ess_bulk", "min_ess_tail",
         "divergences", "gate_passed", "gate_failures", "worst_parameters", "remedy"]
    ].copy()  # fmt: skip
    table["max_r_hat"] = table["max_r_hat"].round(4)
    table[["min_ess_bulk", "min_ess_tail"]] = table[["min_ess_bulk", "min_ess_tail"]].round(0)
    return markdown_table(table.fillna(""))


def _lift_tests_ended_by(conn, market: str, last_week: object) -> pd.DataFrame:  # noqa: ANN001 - DuckDB
    """The market's lift tests that a fit ending ``last_week`` uses (as ``LiftTests.ended_by`` keeps)."""
    if not relation_exists(conn, "staging", "stg_lift_tests"):
        return pd.DataFrame(columns=list(LIFT_TEST_COLUMNS))
    columns = ", ".join(f'"{c}"' for c in LIFT_TEST_COLUMNS)
    return conn.execute(
        f"SELECT {columns} FROM staging.stg_lift_tests WHERE market = ? AND end_date < ? + INTERVAL 7 DAY",
        [market, last_week],
    ).df()


def registry_code_version(cfg: ProjectConfig) -> str:
    """What changes the registration of a fit: the gate and the promotion and warning thresholds. A
    change re-registers the latest fit under the new rules (promoted or not), with no refit."""
    payload = {
        "gate": cfg.model.gate.model_dump(mode="json"),
        "max_cv_crps_increase": cfg.model.max_cv_crps_increase,
        "max_roas_change": cfg.model.max_roas_change,
        "roas_cv_threshold": cfg.cv.roas_cv_threshold,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def fit_check_specs(cfg: ProjectConfig) -> list[dg.AssetCheckSpec]:
    """The checks of a fit (the diagnostics gate), the same for a market fitted alone and a pooled group."""
    gate = cfg.model.gate
    return [
        dg.AssetCheckSpec(
            "convergence",
            asset="model_fit",
            description=(
                f"max R-hat <= {gate.max_r_hat}, bulk and tail ESS >= {gate.min_ess_bulk:.0f} / "
                f"{gate.min_ess_tail:.0f}, divergences <= {gate.max_divergences} (model.gate)"
            ),
        ),
        dg.AssetCheckSpec(
            "fit_quality",
            asset="model_fit",
            description=_fit_quality_text(gate),
        ),
        dg.AssetCheckSpec(
            "lift_tests_agree",
            asset="model_fit",
            description=(
                f"every lift test in the fit is within {LIFT_Z_WARN:g} combined standard deviations "
                "of the fitted lift (a warning: the experiment and the weekly data disagree)"
            ),
        ),
    ]


def _gate_check(
    serving_fails: bool, model_id: str, failures: list[str], context: dg.AssetExecutionContext
) -> dg.AssetCheckResult:
    """``champion_meets_gate``: a warning when the serving champion misses the gate as configured now."""
    if serving_fails:
        context.log.warning(f"champion {model_id} misses the current gate; it keeps serving")
    return _check(
        "champion_meets_gate",
        [
            f"champion {model_id} misses the current gate: {'; '.join(failures)}. It keeps serving until "
            "a fit passes: refit (mmm-pipeline run --refit) or relax model.gate"
        ]
        if serving_fails
        else [],
        dg.AssetCheckSeverity.WARN,
    )


def _registry_warnings(
    cvs: list[tuple[str, CVRecord]], moved: pd.DataFrame
) -> Iterator[dg.AssetCheckResult]:
    """The warning checks of a registration, for one market or each market of a pooled group (``cvs``:
    a label prefix and the market's CV; ``moved``: ROAS drift rows beyond ``model.max_roas_change``)."""
    beaten = [
        f"{label}{name} CRPS {figures['crps']:,.4g} <= MMM {mmm_crps:,.4g}"
        for label, cv in cvs
        for mmm_crps in [cv.overall.get("mmm", {}).get("crps")]
        for name, figures in cv.overall.items()
        if name != "mmm" and mmm_crps is not None and figures.get("crps") is not None
        and figures["crps"] <= mmm_crps
    ]  # fmt: skip
    yield dg.AssetCheckResult(
        check_name="cv_beats_baselines",
        passed=not beaten,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"beaten_by": dg.MetadataValue.md("\n".join(f"- {b}" for b in beaten) or "none")},
    )
    unstable = [f"{label}{c}" for label, cv in cvs for c in cv.unstable_channels]
    yield dg.AssetCheckResult(
        check_name="cv_roas_stable",
        passed=not unstable,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"unstable_channels": ", ".join(unstable) or "none"},
    )
    pooled = any(label for label, _ in cvs)
    yield dg.AssetCheckResult(
        check_name="roas_stable",
        passed=moved.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "moved": dg.MetadataValue.md(
                "\n".join(
                    f"- {f'{r.market} ' if pooled else ''}{r.channel}: {r.champion_roas_mean:.3f} -> "
                    f"{r.roas_mean:.3f} ({r.relative_change:+.0%})"
                    for r in moved.itertuples()
                )
                or "none"
            )
        },
    )


def registry_check_specs(cfg: ProjectConfig) -> list[dg.AssetCheckSpec]:
    """The checks of a registration, the same for a market fitted alone and a pooled group."""
    return [
        dg.AssetCheckSpec(
            "champion_serving", asset="model_registry", description="the market has a champion model"
        ),
        dg.AssetCheckSpec(
            "champion_meets_gate",
            asset="model_registry",
            description=(
                "the serving champion passes the gate as configured now (a warning: after a gate change "
                "a champion that misses it keeps serving until a refit passes)"
            ),
        ),
        dg.AssetCheckSpec(
            "cv_folds_ok",
            asset="model_registry",
            description="every cross-validation fold ran (a failed fold is reported, never dropped)",
        ),
        dg.AssetCheckSpec(
            "cv_beats_baselines",
            asset="model_registry",
            description="the MMM's CV CRPS is below the seasonal-naive and ridge baselines' (a warning)",
        ),
        dg.AssetCheckSpec(
            "cv_roas_stable",
            asset="model_registry",
            description=f"no channel's fold-mean ROAS varies more than {cfg.cv.roas_cv_threshold:.0%} "
            "(coefficient of variation) across CV folds (a warning)",
        ),
        dg.AssetCheckSpec(
            "roas_stable",
            asset="model_registry",
            description=(
                f"no channel's ROAS moved by more than {cfg.model.max_roas_change:.0%} against the "
                "previous champion (a warning: refreshes should not flip ROAS)"
            ),
        ),
    ]


def build_model_assets(cfg: ProjectConfig) -> list[dg.AssetsDefinition]:
    gate = cfg.model.gate
    sampler = cfg.model.spec.sampler

    @dg.asset(
        group_name="model",
        kinds={"duckdb"},
        partitions_def=MARKETS,
        # A market's fit reads its lift tests of every week (stg_lift_tests is weekly-partitioned).
        # Dagster does not follow staleness across that mapping (a time-window parent under an
        # AllPartitionMapping is skipped), so runs re-hash this asset every time instead of trusting
        # its stale status; hashing the same content again leaves everything below it fresh.
        deps=[
            "fct_modeling_weekly",
            dg.AssetDep("stg_lift_tests", partition_mapping=dg.AllPartitionMapping()),
        ],
        code_version=f"{FINGERPRINT_FORMAT}:{cfg.model.train_end}",
        description=(
            "What the market's fit reads, as a content hash (its Dagster data version): the modeling "
            "rows of the training window (up to model.train_end) and the lift tests that ended by its "
            "last week. A new week, a corrected value or a corrected lift test (same count) gives a new "
            "data version and makes model_fit stale; the same content keeps it fresh. Writes nothing."
        ),
    )
    def market_training_data(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        market = context.partition_key
        with warehouse.get_connection() as conn:
            last = conn.execute(
                "SELECT max(week) FROM marts.fct_modeling_weekly WHERE market = ?", [market]
            ).fetchone()[0]
            if last is None:
                raise dg.Failure(f"market {market}: no rows in marts.fct_modeling_weekly")
            if cfg.model.train_end is not None:
                last = min(last, cfg.model.train_end)
            rows = training_rows(conn, market, last)
            tests = _lift_tests_ended_by(conn, market, last)
        version = market_inputs_version(rows, tests)
        return dg.MaterializeResult(
            data_version=dg.DataVersion(version),
            metadata={"last_week": str(last), "weeks": len(rows), "lift_tests": len(tests),
                      "fingerprint": version},
        )  # fmt: skip

    if cfg.model.spec.pooling == "partial":
        return [market_training_data, *pooled_model_assets(cfg)]

    @dg.asset(
        group_name="model",
        kinds={"pymc", "arviz"},
        partitions_def=MARKETS,
        deps=["market_training_data"],
        # What changes a fit: the model config (spec, channels, controls, KPI). The gate is not in it.
        code_version=config_hash(cfg, cfg.model),
        description=(
            "Fits the Bayesian MMM of one market on every modeled week (PyMC model, "
            f"{sampler.name} sampler, {sampler.chains} chains x {sampler.draws} draws), calibrated by the "
            "market's lift tests that ended by its last week. Refits reuse the "
            "champion's frozen scaling so ROAS keeps its meaning, and a compiled graph when shapes allow. "
            "Writes the posterior (NetCDF) and insight tables to the artifacts folder; holds no DuckDB "
            "connection while sampling. Sampling progress goes to the run logs."
        ),
        check_specs=fit_check_specs(cfg),
        metadata={"artifacts_folder": str(cfg.artifacts_dir / "models")},
    )
    def model_fit(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        market = context.partition_key
        with warehouse.get_connection() as conn:
            frame = conn.execute(
                "SELECT * FROM marts.fct_modeling_weekly WHERE market = ? ORDER BY week", [market]
            ).df()
            lift_tests = market_lift_tests(conn, market)
            current = champion(conn, market)
            anchor_run = current
            if current is not None and isinstance(current.get("refresh_anchor"), str):
                anchor_run = run_of(conn, current["refresh_anchor"])
        try:
            data = training_data(frame, market, cfg, cfg.model, log=context.log.info)
        except (RefitError, ValueError) as exc:
            raise dg.Failure(str(exc)) from None
        scaling, source = choose_scaling(data, current, cfg.model.keep_scaling)
        context.log.info(
            f"market {market}: {data.n_weeks} weeks {data.dates[0].date()}..{data.dates[-1].date()}, "
            f"scaling {'of champion ' + source if source != 'fresh' else 'computed from this window'}"
        )
        drift_triggered = context.run.tags.get(TRIGGER_TAG) == "drift"
        anchor, why = refresh_anchor(
            cfg.model, data, frame, scaling, config_hash(cfg, cfg.model), anchor_run, drift_triggered
        )
        context.log.info(f"refresh: reweighting {why}" if anchor else f"refresh: sampling ({why})")
        outcome = refit_market(
            data, cfg.model, scaling, source, lift_tests=lift_tests, progress=context.log.info, anchor=anchor
        )
        n_lift_tests = len(outcome.fit.lift_tests)
        if len(lift_tests):
            context.log.info(
                f"{n_lift_tests} of the market's {len(lift_tests)} lift test(s) ended by "
                f"{data.dates[-1].date()} and calibrated the fit"
            )
        trained_on = frame[pd.to_datetime(frame["week"]) <= data.dates[-1]]  # the rows of the training window
        model_id = new_model_id(market, data.dates[-1].date())
        folder = cfg.artifacts_dir / "models" / market / model_id
        record = FitRecord(
            model_id=model_id,
            market=market,
            created_at=utc_now(),
            train_start=str(data.dates[0].date()),
            train_end=str(data.dates[-1].date()),
            n_weeks=data.n_weeks,
            config_hash=config_hash(cfg, cfg.model),
            code_version=code_version(),
            model_spec=outcome.fit.spec.model_dump_json(),  # the last attempt's sampler settings
            scaling=scaling.model_dump_json(),
            scaling_source=source,
            previous_champion=None if current is None else str(current["model_id"]),
            diagnostics=as_float_dict(outcome.diagnostics),
            timings=as_float_dict(outcome.fit.timings),
            reused_graph=outcome.fit.reused_graph,
            gate_failures=outcome.gate_failures,
            artifact_path=str(folder),
            dagster_run_id=context.run_id,
            n_lift_tests=n_lift_tests,
            fit_attempts=len(outcome.attempts),
            data_fingerprint=modeling_fingerprint(trained_on),
            refresh_anchor=outcome.refresh_anchor,
        )
        write_artifacts(folder, record, outcome.fit.idata, outcome.tables)
        d, t = record.diagnostics, record.timings
        verdict = (
            "passed the gate" if record.gate_passed else "FAILED the gate: " + "; ".join(record.gate_failures)
        )
        context.log.info(f"model {model_id} {verdict}")
        yield dg.Output(
            record,
            # Each fit is a new model: whatever read the previous one is stale until it ran again.
            data_version=dg.DataVersion(model_id),
            metadata={
                "model_id": model_id,
                "train_window": f"{record.train_start}..{record.train_end}",
                "max_r_hat": round(d["max_r_hat"], 4),
                "min_ess_bulk": round(d["min_ess_bulk"], 0),
                "min_ess_tail": round(d["min_ess_tail"], 0),
                "divergences": int(d["divergences"]),
                "r2": round(d["r2"], 3),
                "mape": round(d["mape"], 4),
                "nrmse": round(d["nrmse"], 4),
                "seconds_compile": round(t["compile"], 1),
                "seconds_sample": round(t["sample"], 1),
                "seconds_total": round(t["total"], 1),
                "reused_compiled_graph": record.reused_graph,
                "refresh": outcome.refresh_note or f"sampled ({why})",
                "scaling_source": source,
                "lift_tests": n_lift_tests,
                "fit_attempts": len(outcome.attempts),
                "attempts": dg.MetadataValue.md(_attempts_markdown(outcome.tables["fit_attempts"])),
                "posterior": dg.MetadataValue.path(str(folder / "posterior.nc")),
                "fit": dg.MetadataValue.md(
                    fit_chart(outcome.tables["fit_weekly"], f"{market}: in-sample fit")
                ),
                "roas": dg.MetadataValue.md(roas_chart(outcome.tables["channel_summary"], f"{market}: ROAS")),
            },
        )
        yield _check("convergence", convergence_failures(d, gate), max_r_hat=d["max_r_hat"],
                     divergences=int(d["divergences"]), min_ess_bulk=d["min_ess_bulk"])  # fmt: skip
        yield _check("fit_quality", fit_quality_failures(d, gate), r2=d["r2"], mape=d["mape"])
        yield _lift_test_check({market: outcome.fit})

    @dg.asset(
        group_name="model",
        kinds={"duckdb"},
        partitions_def=MARKETS,
        pool=WRITER_POOL,
        code_version=registry_code_version(cfg),
        description=(
            "Registers the market's latest fit as a versioned model run (models.model_runs: window, "
            "config hash, code version, sampler settings, diagnostics, timings, CV figures) with its "
            "insight and cross-validation tables, in one transaction. A fit that passed the gate and "
            "whose cross-validated CRPS is not materially worse than the champion's becomes the champion "
            "(the previous one is retired); otherwise it is stored as rejected, with the reason, and the "
            "champion keeps serving. Records each channel's ROAS change against the previous champion."
        ),
        check_specs=registry_check_specs(cfg),
    )
    def model_registry(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        model_fit: FitRecord,
        model_cv: CVRecord,
    ):
        # The gate as configured now, not as it was when the fit ran: a gate change re-registers the
        # latest fit (this asset's code version) without refitting it.
        record = dataclasses.replace(model_fit, gate_failures=gate_failures(model_fit.diagnostics, gate))
        cv = model_cv
        tables = read_tables(record.artifact_path)
        drift_triggered = context.run.tags.get(TRIGGER_TAG) == "drift"
        if drift_triggered:
            context.log.info("refit started by a drift event: the champion's CV CRPS is not compared")
        with warehouse.get_connection() as conn:
            incumbent = champion(conn, record.market)
            # A tightened gate re-registers the serving champion itself: rejecting it would leave the
            # market with no champion (no recommendation, no report) until a refit passes. It keeps
            # serving, its row shows the failures, and the champion_meets_gate check says so.
            serving_fails = bool(
                record.gate_failures and incumbent is not None and incumbent["model_id"] == record.model_id
            )
            blocked_by = [] if serving_fails else record.gate_failures + cv_failures(
                cv,
                incumbent,
                cfg.model.max_cv_crps_increase,
                drift_triggered=drift_triggered,
                min_skill=gate.min_cv_skill,
            )  # fmt: skip
            status = register(conn, record, tables, blocked_by, cv)
            serving = champion(conn, record.market)
            drift = roas_drift(conn, record.model_id)
        context.log.info(
            f"{record.model_id} registered as {status}"
            + (f" ({'; '.join(blocked_by)})" if blocked_by else "")
            + f"; champion of {record.market}: {serving['model_id'] if serving else 'none'}"
        )
        moved = drift[drift["relative_change"].abs() > cfg.model.max_roas_change]
        yield dg.Output(
            None,
            metadata={
                "model_id": record.model_id,
                "status": status,
                "blocked_by": "; ".join(blocked_by) or "nothing",
                "champion": serving["model_id"] if serving else "none",
                "cv_status": cv.status,
                "cv_crps": ui_number(cv.overall.get("mmm", {}).get("crps") or float("nan")),
                "roas_drift": dg.MetadataValue.md(
                    markdown_table(
                        drift[["channel", "champion_roas_mean", "roas_mean", "relative_change"]],
                        {"relative_change": "+.0%"},
                    )
                    if not drift.empty
                    else "first model of this market: nothing to compare"
                ),
            },
        )
        yield _check(
            "champion_serving",
            [] if serving else _no_champion_text(record, cv, blocked_by, tables.get("fit_attempts"), gate),
            champion=serving["model_id"] if serving else "none",
        )
        yield _gate_check(serving_fails, record.model_id, record.gate_failures, context)
        yield _check("cv_folds_ok", cv.failed_folds, cv_status=cv.status, note=cv.note or "")
        yield from _registry_warnings([("", cv)], moved)

    return [market_training_data, model_fit, model_registry]


# --- pooling: partial ------------------------------------------------------------------------------

FIT_KEY = dg.AssetKey("model_fit")
#: The model assets of a market group under ``model.spec.pooling: partial``: one run materializes every
#: market's partition of them (one pooled fit, its CV, its registration as one unit); what lies below
#: them (recommendation, publishing, report) stays one run per market.
GROUP_KEYS = (FIT_KEY, dg.AssetKey("model_cv"), dg.AssetKey("model_registry"))


def group_run_tags(instance: dg.DagsterInstance) -> dict[str, str]:
    """The tags of a run over every market's partition: the range from the first market partition to
    the last (Dagster keeps dynamic partitions in the order they were added)."""
    keys = instance.get_dynamic_partitions(MARKETS.name)
    return {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}


def group_markets(conn) -> list[str]:  # noqa: ANN001 - DuckDB
    """The market group of a pooled model: every market of the modeling table, in name order (the order
    of the posterior's ``market`` coordinate)."""
    rows = conn.execute("SELECT DISTINCT market FROM marts.fct_modeling_weekly ORDER BY market").fetchall()
    return [str(m) for (m,) in rows]


def _whole_group(context: dg.AssetExecutionContext, markets: list[str], what: str) -> None:
    """Fail unless this run covers exactly the group's markets: a pooled model is fitted, checked and
    promoted as one unit, so one run materializes every market's partition."""
    keys = sorted(context.partition_keys)
    if keys != sorted(markets):
        raise dg.Failure(
            f"model.spec.pooling: partial: {what} covers the market group ({', '.join(markets)}) as one "
            f"unit, so one run materializes every market's partition; this run covers "
            f"{', '.join(keys) or 'none'}. Launch it for all market partitions (these assets backfill as "
            "a single run) or use `mmm-pipeline run`."
        )


def latest_pooled_fit(context: dg.AssetExecutionContext) -> PooledFitRecord:
    """The group's latest pooled fit, found through ``model_fit``'s latest materialization (its metadata
    names the group folder), checked to cover exactly this run's markets.

    Why not an input: an IO manager stores one value per partition, and this run's steps cover every
    market's partition at once; the event log is where Dagster itself keeps what the last fit was.
    """
    market = sorted(context.partition_keys)[0]
    found = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=FIT_KEY, asset_partitions=[market]), limit=1
    ).records
    entry = found[0].asset_materialization if found else None
    folder = entry.metadata.get("pooled_fit") if entry is not None else None
    if folder is None:
        raise dg.Failure(
            f"market {market} has no pooled fit (model.spec.pooling: partial) yet"
            + (" (its latest fit is a market fitted alone)" if entry is not None else "")
            + ": materialize model_fit for every market first"
        )
    group = read_group_record(str(folder.value))
    _whole_group(context, group.markets, f"pooled fit {group.pooled_fit_id}")
    return group


def pooled_model_assets(cfg: ProjectConfig) -> list[dg.AssetsDefinition]:
    """``model_fit`` and ``model_registry`` under ``model.spec.pooling: partial``: the same assets, keys,
    partitions (one per market) and checks as for markets fitted alone, so staleness, the sensors' and
    the runner's plans, the optimizer, the report and BI see nothing new; but one run materializes every
    market's partition (a single-run backfill policy; ``context.partition_keys``), fitting the group as
    one pooled model and registering and promoting it as one unit (:mod:`mmm_pipeline.model.group_refit`).
    """
    gate = cfg.model.gate
    sampler = cfg.model.spec.sampler

    @dg.asset(
        name="model_fit",
        group_name="model",
        kinds={"pymc", "arviz"},
        partitions_def=MARKETS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=["market_training_data"],
        code_version=config_hash(cfg, cfg.model),
        description=(
            "Fits one partially pooled (hierarchical) Bayesian MMM over every market of the group "
            "(model.spec.pooling: partial): channel effects, curves and adstock drawn around national "
            "values, each market with its own baseline, trend, seasonality, controls and noise, "
            f"calibrated by each market's lift tests ({sampler.name} sampler, {sampler.chains} chains x "
            f"{sampler.draws} draws). One run materializes every market's partition. Each market gets an "
            "ordinary model artifact (its view of the joint posterior, its insight tables); the group folder "
            "(models/_pooled/<pooled_fit_id>) holds the national roll-up. Holds no DuckDB connection while "
            "sampling."
        ),
        check_specs=fit_check_specs(cfg),
        metadata={"artifacts_folder": str(cfg.artifacts_dir / "models")},
    )
    def model_fit(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        with warehouse.get_connection() as conn:
            markets = group_markets(conn)
            _whole_group(context, markets, "model_fit")
            frames = {
                m: conn.execute(
                    "SELECT * FROM marts.fct_modeling_weekly WHERE market = ? ORDER BY week", [m]
                ).df()
                for m in markets
            }
            lift_tests = {m: market_lift_tests(conn, m) for m in markets}
            current = {m: champion(conn, m) for m in markets}
        try:
            data = {m: training_data(frames[m], m, cfg, cfg.model, log=context.log.info) for m in markets}
            check_group(data)
        except (RefitError, ValueError) as exc:
            raise dg.Failure(str(exc)) from None
        chosen = {m: choose_scaling(data[m], current[m], cfg.model.keep_scaling) for m in markets}
        first = data[markets[0]]
        context.log.info(
            f"market group {', '.join(markets)}: {first.n_weeks} weeks "
            f"{first.dates[0].date()}..{first.dates[-1].date()}, one pooled model; scaling "
            + ", ".join(
                f"{m}: {'of champion ' + s if s != 'fresh' else 'fresh'}" for m, (_, s) in chosen.items()
            )
        )
        outcome = refit_group(
            data,
            cfg.model,
            {m: scaling for m, (scaling, _) in chosen.items()},
            lift_tests=lift_tests,
            progress=context.log.info,
        )
        train_end = first.dates[-1].date()
        pooled_fit_id = new_model_id("pooled", train_end)
        records, views = {}, {}
        for m in markets:
            views[m] = view = outcome.fit.market_fit(m)
            model_id = new_model_id(m, train_end)
            folder = cfg.artifacts_dir / "models" / m / model_id
            trained_on = frames[m][pd.to_datetime(frames[m]["week"]) <= first.dates[-1]]
            records[m] = FitRecord(
                model_id=model_id,
                market=m,
                created_at=utc_now(),
                train_start=str(first.dates[0].date()),
                train_end=str(train_end),
                n_weeks=first.n_weeks,
                config_hash=config_hash(cfg, cfg.model),
                code_version=code_version(),
                model_spec=outcome.fit.spec.model_dump_json(),  # the last attempt's sampler settings
                scaling=chosen[m][0].model_dump_json(),
                scaling_source=chosen[m][1],
                previous_champion=None if current[m] is None else str(current[m]["model_id"]),
                diagnostics=as_float_dict(outcome.diagnostics[m]),
                timings=as_float_dict(outcome.fit.timings),
                reused_graph=outcome.fit.reused_graph,
                gate_failures=outcome.gate_failures,
                artifact_path=str(folder),
                dagster_run_id=context.run_id,
                n_lift_tests=len(view.lift_tests),
                fit_attempts=len(outcome.attempts),
                data_fingerprint=modeling_fingerprint(trained_on),
                pooled_fit_id=pooled_fit_id,
            )
            write_artifacts(folder, records[m], view.idata, outcome.tables[m])
        group_folder = cfg.artifacts_dir / "models" / POOLED_FOLDER / pooled_fit_id
        group = PooledFitRecord(
            pooled_fit_id=pooled_fit_id,
            created_at=utc_now(),
            train_end=str(train_end),
            markets=markets,
            runs={m: r.artifact_path for m, r in records.items()},
            gate_failures=outcome.gate_failures,
            dagster_run_id=context.run_id,
        )
        # Last: a group folder means every market's artifact is complete.
        write_group_artifacts(group_folder, group, outcome.national)
        verdict = (
            "passed the gate"
            if not outcome.gate_failures
            else "FAILED the gate: " + "; ".join(outcome.gate_failures)
        )
        context.log.info(f"pooled fit {pooled_fit_id} of {len(markets)} markets {verdict}")
        d, t = outcome.diagnostics[markets[0]], outcome.fit.timings
        by_market = pd.DataFrame(
            {
                "market": markets,
                "model_id": [records[m].model_id for m in markets],
                "r2": [round(outcome.diagnostics[m]["r2"], 3) for m in markets],
                "mape": [round(outcome.diagnostics[m]["mape"], 4) for m in markets],
                "lift_tests": [records[m].n_lift_tests for m in markets],
            }
        )
        national = outcome.national["channel_summary"]
        yield dg.MaterializeResult(
            # Each fit is a new model of every market: whatever read the previous one is stale.
            data_version=dg.DataVersion(pooled_fit_id),
            metadata={
                "pooled_fit_id": pooled_fit_id,
                "pooled_fit": dg.MetadataValue.path(str(group_folder)),
                "markets": len(markets),
                "train_window": f"{first.dates[0].date()}..{train_end}",
                "max_r_hat": round(d["max_r_hat"], 4),
                "min_ess_bulk": round(d["min_ess_bulk"], 0),
                "min_ess_tail": round(d["min_ess_tail"], 0),
                "divergences": int(d["divergences"]),
                "seconds_compile": round(t["compile"], 1),
                "seconds_sample": round(t["sample"], 1),
                "seconds_total": round(t["total"], 1),
                "reused_compiled_graph": outcome.fit.reused_graph,
                "fit_attempts": len(outcome.attempts),
                "attempts": dg.MetadataValue.md(
                    _attempts_markdown(outcome.tables[markets[0]]["fit_attempts"])
                ),
                "by_market": dg.MetadataValue.md(markdown_table(by_market)),
                "national_roas": dg.MetadataValue.md(
                    markdown_table(
                        national[["channel", "spend", "roas_mean", "roas_hdi_low", "roas_hdi_high"]]
                    )
                ),
                "roas": dg.MetadataValue.md(roas_chart(national, "national ROAS (pooled)")),
            },
        )
        yield _check("convergence", convergence_failures(d, gate), max_r_hat=d["max_r_hat"],
                     divergences=int(d["divergences"]), min_ess_bulk=d["min_ess_bulk"])  # fmt: skip
        yield _check(
            "fit_quality",
            [f for f in outcome.gate_failures if f.startswith("market ")],
            min_r2=min(outcome.diagnostics[m]["r2"] for m in markets),
            max_mape=max(outcome.diagnostics[m]["mape"] for m in markets),
        )
        yield _lift_test_check(views)

    @dg.asset(
        name="model_registry",
        group_name="model",
        kinds={"duckdb"},
        partitions_def=MARKETS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=["model_fit", "model_cv"],
        pool=WRITER_POOL,
        code_version=registry_code_version(cfg),
        description=(
            "Registers the group's latest pooled fit as one model run per market (models.model_runs, "
            "each with the same pooled_fit_id) with its insight and cross-validation tables and the "
            "national roll-up (market 'national' under the pooled fit's id), in one transaction, as one "
            "unit: if the joint posterior passed the gate and no market's cross-validated CRPS is "
            "materially worse than its champion's, every market's model becomes its champion; otherwise "
            "every one is stored as rejected with the reasons, and the champions keep serving."
        ),
        check_specs=registry_check_specs(cfg),
    )
    def model_registry(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        group = latest_pooled_fit(context)
        markets = group.markets
        # The gate as configured now (a gate change re-registers the latest fit without refitting it).
        records = {m: read_record(Path(group.runs[m])) for m in markets}
        failures = group_gate_failures({m: r.diagnostics for m, r in records.items()}, gate)
        records = {m: dataclasses.replace(r, gate_failures=failures) for m, r in records.items()}
        cvs = {m: read_cv_record(cv_folder(r)) for m, r in records.items()}
        tables = {m: read_tables(r.artifact_path) for m, r in records.items()}
        national = read_tables(cfg.artifacts_dir / "models" / POOLED_FOLDER / group.pooled_fit_id)
        drift_triggered = context.run.tags.get(TRIGGER_TAG) == "drift"
        if drift_triggered:
            context.log.info("refit started by a drift event: the champions' CV CRPS is not compared")
        with warehouse.get_connection() as conn:
            incumbents = {m: champion(conn, m) for m in markets}
            # A tightened gate re-registering the serving pooled champion keeps it serving (as for a
            # market fitted alone), flagged by the champion_meets_gate warning.
            serving_fails = bool(failures) and all(
                (incumbents[m] or {}).get("model_id") == records[m].model_id for m in markets
            )
            blocked_by = (
                []
                if serving_fails
                else failures
                + [
                    f"market {m}: {reason}"
                    for m in markets
                    for reason in cv_failures(
                        cvs[m],
                        incumbents[m],
                        cfg.model.max_cv_crps_increase,
                        drift_triggered=drift_triggered,
                        min_skill=gate.min_cv_skill,
                    )
                ]
            )
            status = register_group(
                conn, [(records[m], tables[m], cvs[m]) for m in markets], blocked_by, national
            )
            serving = {m: champion(conn, m) for m in markets}
            drift = pd.concat([roas_drift(conn, records[m].model_id) for m in markets], ignore_index=True)
        context.log.info(
            f"pooled fit {group.pooled_fit_id} registered as {status} for {len(markets)} markets"
            + (f" ({'; '.join(blocked_by)})" if blocked_by else "")
        )
        moved = drift[drift["relative_change"].abs() > cfg.model.max_roas_change]
        yield dg.MaterializeResult(
            metadata={
                "pooled_fit_id": group.pooled_fit_id,
                "status": status,
                "blocked_by": "; ".join(blocked_by) or "nothing",
                "champions": dg.MetadataValue.md(
                    markdown_table(
                        pd.DataFrame(
                            {
                                "market": markets,
                                "champion": [
                                    serving[m]["model_id"] if serving[m] else "none" for m in markets
                                ],
                                "cv_status": [cvs[m].status for m in markets],
                                "cv_crps": [cvs[m].overall.get("mmm", {}).get("crps") for m in markets],
                            }
                        )
                    )
                ),
            }
        )
        without = [m for m in markets if serving[m] is None]
        yield _check(
            "champion_serving",
            [
                line
                for m in without
                for line in _no_champion_text(
                    records[m], cvs[m], blocked_by, tables[m].get("fit_attempts"), gate
                )
            ],
            champion=", ".join(f"{m}: {serving[m]['model_id'] if serving[m] else 'none'}" for m in markets),
        )
        yield _gate_check(serving_fails, group.pooled_fit_id, failures, context)
        failed_folds = [f"market {m}: {f}" for m in markets for f in cvs[m].failed_folds]
        yield _check(
            "cv_folds_ok", failed_folds, cv_status=", ".join(f"{m}: {cvs[m].status}" for m in markets)
        )
        yield from _registry_warnings([(f"market {m}: ", cvs[m]) for m in markets], moved)

    return [model_fit, model_registry]
