"""One market's weekly refit, without Dagster: training window, scaling choice, fit, insight tables.

The Dagster asset ``model_fit`` is a thin wrapper around :func:`refit_market`; tests and benchmarks call
it directly. Nothing here opens the warehouse: the caller reads the modeling table, the lift tests and
the champion first (on its own connection) and registers the outcome afterwards (see
:mod:`mmm_pipeline.model.registry`).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from mmm_pipeline import metrics
from mmm_pipeline.features.data_version import modeling_fingerprint
from mmm_pipeline.ingest.categorical import encode_controls
from mmm_pipeline.ingest.contract import LIFT_TEST_COLUMNS, InputContract
from mmm_pipeline.model import insights
from mmm_pipeline.model.build import ModelData, ScalingSpec, padded_length
from mmm_pipeline.model.calibration import LiftTests
from mmm_pipeline.model.fit import FitResult, fit
from mmm_pipeline.model.predict import predict
from mmm_pipeline.model.promotion import gate_failures
from mmm_pipeline.model.refresh import Anchor, importance_update
from mmm_pipeline.model.registry import load_model
from mmm_pipeline.model.remedies import failure_kinds, next_remedy
from mmm_pipeline.model.settings import ModelConfig
from mmm_pipeline.model.spec import ModelSpec
from mmm_pipeline.warehouse import quote_ident, relation_exists


class RefitError(ValueError):
    """The market cannot be fitted as configured; the message says which data or setting is at fault."""


@dataclass
class RefitOutcome:
    fit: FitResult
    scaling_source: str
    diagnostics: dict[str, float]
    tables: dict[str, pd.DataFrame]
    gate_failures: list[str]
    attempts: list[dict[str, object]] = field(default_factory=list)
    """One row per fit attempt (:data:`ATTEMPT_COLUMNS`), the last one being ``fit``."""
    refresh_anchor: str | None = None
    """The sampled model whose draws were reweighted (:mod:`mmm_pipeline.model.refresh`); None when
    this fit sampled."""
    refresh_note: str = ""
    """Why the fit reweighted or sampled (Pareto k, or what ruled the anchor out)."""


#: Columns of a fit's ``fit_attempts`` table (one row per attempt; the registry keys it by model).
ATTEMPT_COLUMNS = (
    "attempt", "sampler", "chains", "draws", "tune", "target_accept", "seed",
    "max_r_hat", "min_ess_bulk", "min_ess_tail", "divergences", "gate_passed", "gate_failures",
    "worst_parameters", "remedy", "seconds",
)  # fmt: skip


def training_data(
    frame: pd.DataFrame,
    market: str,
    contract: InputContract,
    model: ModelConfig,
    log: Callable[[str], None] | None = None,
) -> ModelData:
    """The market's training window from the modeling table: every week up to ``model.train_end``.

    Categorical controls become their indicators here (:mod:`mmm_pipeline.ingest.categorical`);
    ``log`` is told each one's baseline and levels.
    """
    rows = frame[frame["market"] == market]
    if model.train_end is not None:
        rows = rows[pd.to_datetime(rows["week"]) <= pd.Timestamp(model.train_end)]
    if len(rows) < model.min_train_weeks:
        raise RefitError(
            f"market {market!r}: {len(rows)} weeks in marts.fct_modeling_weekly"
            + (f" up to model.train_end {model.train_end}" if model.train_end else "")
            + f"; the model needs at least model.min_train_weeks = {model.min_train_weeks}"
        )
    if rows["kpi"].isna().any():
        weeks = ", ".join(str(w)[:10] for w in rows.loc[rows["kpi"].isna(), "week"].head(5))
        raise RefitError(f"market {market!r}: the KPI is missing in weeks {weeks}")
    first, last = (str(w)[:10] for w in (rows["week"].min(), rows["week"].max()))
    where = f"market {market!r}, training weeks {first}..{last}"
    rows, controls, encodings = encode_controls(rows, contract.controls, where)
    for encoding in encodings if log else ():
        log(encoding.describe())
    return ModelData.from_frame(rows, market, channels=contract.channel_names, controls=controls)


def market_lift_tests(conn: duckdb.DuckDBPyConnection, market: str) -> LiftTests:
    """Every validated lift test of ``market`` (``staging.stg_lift_tests``); none before any was delivered.

    All of them, whenever they ended: ``fit`` keeps those that ended by its window's last week, so the
    weekly refit and each CV fold see exactly the experiments that had been read out by then.
    """
    if not relation_exists(conn, "staging", "stg_lift_tests"):
        return LiftTests.empty()
    columns = ", ".join(quote_ident(c) for c in LIFT_TEST_COLUMNS)
    frame = conn.execute(f"SELECT {columns} FROM staging.stg_lift_tests WHERE market = ?", [market]).df()
    return LiftTests.from_frame(frame, market)


def choose_scaling(
    data: ModelData, champion: dict[str, object] | None, keep: bool
) -> tuple[ScalingSpec, str]:
    """The champion's frozen scaling when it fits the data's channels and controls, else fresh constants.

    Returns the scaling and where it came from (the champion's model id, or ``fresh``), which the
    registry records so a user can see why a refresh's ROAS did or did not stay comparable.
    """
    if keep and champion is not None:
        scaling = ScalingSpec.model_validate_json(str(champion["scaling"]))
        if scaling.channels == list(data.channels) and scaling.controls == list(data.control_names):
            return scaling, str(champion["model_id"])
    return ScalingSpec.from_data(data), "fresh"


def refresh_anchor(
    model: ModelConfig,
    data: ModelData,
    frame: pd.DataFrame,
    scaling: ScalingSpec,
    config: str,
    anchor_run: dict[str, object] | None,
    drift_triggered: bool = False,
) -> tuple[Anchor | None, str]:
    """The posterior a refit may reweight instead of sampling (``model.refresh``), or None and why not.

    ``anchor_run``: the ``model_runs`` row of the champion's anchor (the champion itself when it was
    sampled); ``frame``: the market's modeling rows; ``config``: :func:`config_hash` now. Reweighting is
    sound only when the two posteriors differ by the new weeks' likelihood alone: same model and frozen
    scaling, the anchor's weeks unchanged (its data fingerprint), no lift tests, and weeks added.
    """
    refresh = model.refresh
    if refresh.mode != "importance":
        return None, "model.refresh.mode is sample"
    if anchor_run is None:
        return None, "no champion to refresh yet"
    if drift_triggered:
        return None, "a drift event started this run"
    name = str(anchor_run["model_id"])
    weeks = data.n_weeks - int(anchor_run["n_weeks"])
    anchor_rows = frame[pd.to_datetime(frame["week"]) <= pd.Timestamp(anchor_run["train_end"])]
    first_week = str(anchor_run["train_start"])[:10]
    reasons = {
        "the model config changed": anchor_run["config_hash"] != config,
        "the scaling changed": anchor_run["scaling"] != scaling.model_dump_json(),
        "lift tests calibrate the market": bool(anchor_run.get("n_lift_tests") or 0),
        "the training window starts elsewhere": first_week != str(data.dates[0].date()),
        "no week was added": weeks <= 0,
        f"the anchor is {weeks} weeks old (model.refresh.max_weeks {refresh.max_weeks})": weeks
        > refresh.max_weeks,
        "the anchor's weeks were revised": anchor_run.get("data_fingerprint")
        != modeling_fingerprint(anchor_rows),
    }
    failed = [reason for reason, hit in reasons.items() if hit]
    if failed:
        return None, f"anchor {name}: {'; '.join(failed)}"
    try:
        stored = load_model(str(anchor_run["artifact_path"]))
    except (OSError, KeyError, ValueError) as exc:
        return None, f"anchor {name}: its posterior cannot be read ({exc})"
    return Anchor(name, stored.idata, data.window(0, int(anchor_run["n_weeks"]))), f"anchor {name}"


def refit_market(
    data: ModelData,
    model: ModelConfig,
    scaling: ScalingSpec,
    scaling_source: str,
    *,
    lift_tests: LiftTests | None = None,
    progress: Callable[[str], None] | None = None,
    anchor: Anchor | None = None,
) -> RefitOutcome:
    """Fit the configured model (``model``: the config's model section) to ``data``, compute diagnostics,
    the gate and every insight table.

    A fit that misses the gate's convergence rules is fitted again with the sampler settings of the
    next rung of ``model.remedies`` (:mod:`mmm_pipeline.model.remedies`), on the same compiled graph,
    until it passes or the ladder ends; every attempt is a row of the ``fit_attempts`` table, and the
    outcome is the last attempt (whose sampler settings the CV folds then use).
    ``lift_tests``: the market's experiments (:func:`market_lift_tests`); the fit uses those that ended
    by the data's last week (``outcome.fit.lift_tests``).
    ``anchor``: the last sampled posterior, when the caller found it valid for ``data`` (same model,
    scaling, first weeks and lift tests; see :func:`importance_refresh`): the new weeks are taken in by
    reweighting it, and sampling happens only when that is unreliable or misses the gate.
    """
    report = progress or (lambda _message: None)
    note = ""
    if anchor is not None:
        refreshed, note = importance_refresh(data, model, scaling, scaling_source, anchor, lift_tests)
        report(f"refresh: {note}")
        if refreshed is not None:
            return refreshed
    gate, remedies, spec = model.gate, model.remedies, model.spec
    attempts: list[dict[str, object]] = []
    remedy_reason = None
    while True:
        attempt = len(attempts) + 1
        if attempt > 1:
            report(f"attempt {attempt} of at most {remedies.max_attempts}: {remedy_reason}")
        result = fit(data, spec, scaling, lift_tests=lift_tests, progress=progress)
        report("computing diagnostics (ArviZ)")
        diagnostics = insights.diagnostics(result.idata, result.scaling, spec, data, result.carry_in)
        failures = gate_failures(diagnostics, gate)
        seconds = result.timings["total"]
        attempts.append(
            attempt_row(attempt, spec, result.idata, diagnostics, gate, failures, remedy_reason, seconds)
        )
        diverged, poorly_mixed = failure_kinds(diagnostics, gate)
        remedy = next_remedy(spec.sampler, diverged, poorly_mixed, attempt, remedies)
        if not failures or remedy is None:
            break
        report(f"attempt {attempt} missed the gate ({'; '.join(failures)}): trying again")
        spec = spec.model_copy(update={"sampler": remedy.sampler})
        remedy_reason = remedy.reason
    if len(attempts) > 1:
        report(f"{'passed' if not failures else 'still missed'} the gate after {len(attempts)} attempts")
    report("computing insight tables")
    tables = insight_tables(result)
    tables["fit_attempts"] = pd.DataFrame(attempts, columns=list(ATTEMPT_COLUMNS))
    return RefitOutcome(
        fit=result,
        scaling_source=scaling_source,
        diagnostics=diagnostics,
        tables=tables,
        gate_failures=failures,
        attempts=attempts,
        refresh_note=note,
    )


def importance_refresh(
    data: ModelData,
    model: ModelConfig,
    scaling: ScalingSpec,
    scaling_source: str,
    anchor: Anchor,
    lift_tests: LiftTests | None,
) -> tuple[RefitOutcome | None, str]:
    """The refit as the anchor's draws reweighted by the weeks since (:mod:`mmm_pipeline.model.refresh`),
    or None when the market must be sampled instead: a lift test ended in the window (its likelihood is
    not reweighted), the Pareto k is above ``model.refresh.max_pareto_k``, or the reweighted posterior
    misses the gate's convergence rules (repeated draws lower its ESS); and what was decided, why."""
    start = time.perf_counter()
    spec = ModelSpec.model_validate_json(str(anchor.idata.attrs["model_spec"]))
    if lift_tests is not None and len(lift_tests.ended_by(data.dates[-1])):
        return None, "lift tests calibrate this market: sampling instead of reweighting the anchor"
    carry_in = np.zeros((spec.l_max - 1, len(data.channels)))
    update = importance_update(anchor, spec, scaling, data, carry_in)
    limit = model.refresh.max_pareto_k
    summary = (
        f"{update.weeks_added} week(s) reweighting {anchor.model_id}'s draws: Pareto k "
        f"{update.pareto_k:.2f}, importance ESS {update.ess:.0f}"
    )
    if update.pareto_k > limit:
        return None, f"{summary} > {limit}: the draws no longer cover the new posterior, sampling"
    diagnostics = insights.diagnostics(update.idata, scaling, spec, data, carry_in)
    diagnostics |= {"pareto_k": update.pareto_k, "importance_ess": update.ess}
    failures = gate_failures(diagnostics, model.gate)
    if failures:
        return None, f"{summary}; the reweighted draws miss the gate ({'; '.join(failures)}): sampling"
    seconds = time.perf_counter() - start
    timings = {"build": 0.0, "compile": 0.0, "sample": 0.0, "total": seconds}
    result = FitResult(
        update.idata, spec, scaling, data, carry_in, padded_length(data.n_weeks, spec), timings, False
    )
    row = attempt_row(1, spec, update.idata, diagnostics, model.gate, [], f"importance update of "
                      f"{anchor.model_id} (Pareto k {update.pareto_k:.2f})", seconds)  # fmt: skip
    row["sampler"] = "importance"
    tables = insight_tables(result)
    tables["fit_attempts"] = pd.DataFrame([row], columns=list(ATTEMPT_COLUMNS))
    return RefitOutcome(
        fit=result,
        scaling_source=scaling_source,
        diagnostics=diagnostics,
        tables=tables,
        gate_failures=[],
        attempts=[row],
        refresh_anchor=anchor.model_id,
        refresh_note=f"{summary}: refreshed without sampling",
    ), f"{summary}: refreshed without sampling"


def attempt_row(
    attempt: int,
    spec: ModelSpec,
    idata: object,
    diagnostics: dict[str, float],
    gate: object,
    failures: list[str],
    remedy: str | None,
    seconds: float,
) -> dict[str, object]:
    """One row of the ``fit_attempts`` table (:data:`ATTEMPT_COLUMNS`): the attempt's sampler settings,
    convergence figures, verdict, worst parameters and the remedy that led to it."""
    s = spec.sampler
    return {
        "attempt": attempt, "sampler": s.name, "chains": s.chains, "draws": s.draws,
        "tune": s.tune, "target_accept": s.target_accept, "seed": s.seed,
        **{k: float(diagnostics[k]) for k in ("max_r_hat", "min_ess_bulk", "min_ess_tail")},
        "divergences": int(diagnostics["divergences"]),
        "gate_passed": not failures,
        "gate_failures": "; ".join(failures) or None,
        "worst_parameters": ", ".join(worst_parameters(idata, diagnostics, gate)) or None,
        "remedy": remedy,
        "seconds": float(seconds),
    }  # fmt: skip


def worst_parameters(idata: object, diagnostics: dict[str, float], gate: object, n: int = 3) -> list[str]:
    """The parameters most responsible for a convergence failure, worst first (empty when it converged).

    Ranked by R-hat above the gate's limit, then by how short the bulk or tail ESS falls; names carry
    the channel (``half_sat[tv]``), which is what a user acts on.
    """
    diverged, poorly_mixed = failure_kinds(diagnostics, gate)
    if not (diverged or poorly_mixed):
        return []
    table = insights.parameter_summary(idata)  # type: ignore[arg-type]
    ess = table[["ess_bulk", "ess_tail"]].min(axis=1)
    limit = min(gate.min_ess_bulk, gate.min_ess_tail) or 1.0  # type: ignore[attr-defined]
    badness = (table["r_hat"] - 1.0) / max(gate.max_r_hat - 1.0, 1e-6) + limit / ess.clip(lower=1.0)  # type: ignore[attr-defined]
    return [str(name) for name in badness.sort_values(ascending=False).index[:n]]


def insight_tables(result: FitResult) -> dict[str, pd.DataFrame]:
    """The BI tables of a fit (schemas in :data:`mmm_pipeline.tables.MODELS_DDL`), without keys."""
    idata, scaling, spec, data, carry = (
        result.idata,
        result.scaling,
        result.spec,
        result.data,
        result.carry_in,
    )
    summary = insights.parameter_summary(idata).reset_index(names="parameter")
    hdi_columns = [c for c in summary.columns if c.startswith("hdi_")]
    summary = summary.rename(columns=dict(zip(hdi_columns, ["hdi_low", "hdi_high"], strict=True)))
    prediction = predict(idata, scaling, spec, data, carry)
    bounds = metrics.hdi(prediction.kpi)
    fit_weekly = pd.DataFrame(
        {
            "week": data.dates.date,
            "actual": data.kpi,
            "predicted_mean": prediction.expected.mean(axis=0),
            "predicted_hdi_low": bounds[:, 0],
            "predicted_hdi_high": bounds[:, 1],
        }
    )
    decomposition = insights.decomposition(idata, scaling, spec, data, carry)
    decomposition["week"] = pd.to_datetime(decomposition["week"]).dt.date
    return {
        "parameter_summary": summary,
        "decomposition": decomposition,
        "channel_summary": insights.channel_summary(idata, scaling, spec, data, carry).reset_index(),
        "channel_period_summary": insights.channel_period_summary(idata, scaling, spec, data, carry),
        "response_curves": insights.response_curves(idata, scaling, spec),
        "adstock_weights": insights.adstock_weights(idata, spec),
        "fit_weekly": fit_weekly,
    }


def config_hash(contract: InputContract, model: ModelConfig) -> str:
    """sha256 of what defines the model (spec, channels, controls, KPI), not of paths or the gate."""
    payload = {
        "spec": model.spec.model_dump(mode="json"),
        "channels": contract.channel_names,
        "controls": contract.control_names,
        "kpi": contract.kpi.name,
    }
    if contract.categorical_controls:  # only then, so the hash of a project without any stays as it was
        payload["categorical"] = {
            c.name: [c.baseline, c.max_levels] for c in contract.categorical_controls.values()
        }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def code_version() -> str:
    """The package version, plus the git commit (``+dirty`` if modified) when run from a checkout."""
    version = metadata.version("mmm-pipeline")
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=10"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+{commit}" if commit else version


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def as_float_dict(values: dict[str, float]) -> dict[str, float]:
    """Plain floats (JSON- and DuckDB-friendly) from NumPy scalars."""
    return {k: float(v) if isinstance(v, np.floating | float) else v for k, v in values.items()}
