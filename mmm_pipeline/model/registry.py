"""The model registry: every fit as a versioned model run in DuckDB, its posterior on disk.

A fit produces an artifact folder ``<artifacts>/models/<market>/<model_id>/`` holding the posterior
(``posterior.nc``, ArviZ NetCDF with the frozen scaling and the model spec in its attributes), the
run record (``run.json``) and the insight tables (``tables/*.parquet``). The folder is written aside and
renamed into place, so it is complete or absent. Registering copies the record and tables into the
``models`` schema in one transaction and, if the run passed the gate, makes it the market's champion.

Fitting never holds a DuckDB connection: it reads the modeling table and the champion briefly, fits,
writes files; only registration writes to the warehouse (in the writer pool).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import arviz as az
import duckdb
import pandas as pd

from mmm_pipeline.model.build import ScalingSpec
from mmm_pipeline.model.spec import ModelSpec
from mmm_pipeline.warehouse import transaction

#: The registry's tables; every insight table is keyed by ``model_id`` and ``market``.
MODELS_DDL = """
CREATE SCHEMA IF NOT EXISTS models;
CREATE TABLE IF NOT EXISTS models.model_runs (
    model_id VARCHAR PRIMARY KEY,
    market VARCHAR NOT NULL,
    status VARCHAR NOT NULL,          -- champion | retired (was champion) | rejected (failed the gate)
    created_at TIMESTAMP NOT NULL,    -- when the fit finished (UTC)
    registered_at TIMESTAMP,
    promoted_at TIMESTAMP,
    retired_at TIMESTAMP,
    train_start DATE, train_end DATE, n_weeks INTEGER,
    config_hash VARCHAR,              -- sha256 of the model config, channels and controls
    code_version VARCHAR,             -- package version (+ git commit when run from a checkout)
    model_spec VARCHAR,               -- ModelSpec JSON (structure, priors, sampler)
    scaling VARCHAR,                  -- ScalingSpec JSON (frozen scaling constants)
    scaling_source VARCHAR,           -- model_id whose scaling was reused, or 'fresh'
    previous_champion VARCHAR,        -- the market's champion when this run was fitted
    sampler VARCHAR, chains INTEGER, draws INTEGER, tune INTEGER, target_accept DOUBLE, seed BIGINT,
    max_r_hat DOUBLE, min_ess_bulk DOUBLE, min_ess_tail DOUBLE, divergences INTEGER,
    r2 DOUBLE, mape DOUBLE, nrmse DOUBLE,
    build_seconds DOUBLE, compile_seconds DOUBLE, sample_seconds DOUBLE, total_seconds DOUBLE,
    reused_graph BOOLEAN,
    gate_passed BOOLEAN, gate_failures VARCHAR,
    artifact_path VARCHAR, dagster_run_id VARCHAR
);
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_status VARCHAR;  -- ok | partial | failed | skipped
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_note VARCHAR;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_n_folds INTEGER;      -- folds where the MMM ran
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_folds_failed INTEGER;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_crps DOUBLE;          -- pooled over test weeks
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_crps_skill DOUBLE;    -- 1 - crps / seasonal-naive's
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_mape DOUBLE;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_coverage_50 DOUBLE;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_coverage_94 DOUBLE;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_unstable_channels VARCHAR;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS promotion_blocked_by VARCHAR;  -- why not promoted
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS n_lift_tests INTEGER;  -- lift tests in the fit
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS fit_attempts INTEGER;  -- fits tried (model.remedies)
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS data_fingerprint VARCHAR;  -- of the training rows
CREATE TABLE IF NOT EXISTS models.cv_folds (
    model_id VARCHAR, market VARCHAR, fold INTEGER, status VARCHAR, error VARCHAR,
    train_start DATE, train_end DATE, test_start DATE, test_end DATE, n_train INTEGER, n_test INTEGER,
    kpi_scale DOUBLE, n_time INTEGER, fit_seconds DOUBLE, compile_seconds DOUBLE, sample_seconds DOUBLE,
    reused_graph BOOLEAN, divergences INTEGER, max_r_hat DOUBLE, min_ess_bulk DOUBLE, seconds DOUBLE
);
CREATE TABLE IF NOT EXISTS models.cv_predictions (
    model_id VARCHAR, market VARCHAR, fold INTEGER,
    model VARCHAR,                    -- mmm | seasonal_naive | ridge
    week DATE, horizon INTEGER, observed DOUBLE, mean DOUBLE, sd DOUBLE,
    lower_94 DOUBLE, lower_50 DOUBLE, median DOUBLE, upper_50 DOUBLE, upper_94 DOUBLE, crps DOUBLE
);
CREATE TABLE IF NOT EXISTS models.cv_metrics (
    model_id VARCHAR, market VARCHAR,
    scope VARCHAR,                    -- fold | overall (pooled over the folds where the model ran)
    fold INTEGER, model VARCHAR, status VARCHAR, error VARCHAR, method VARCHAR,
    n_folds INTEGER, n_folds_failed INTEGER, folds VARCHAR, n_weeks INTEGER,
    crps DOUBLE, mape DOUBLE, rmse DOUBLE,
    bias DOUBLE, bias_pct DOUBLE,     -- mean(predicted - observed): positive = over-forecast
    coverage_50 DOUBLE, coverage_94 DOUBLE,
    crps_skill DOUBLE                 -- 1 - crps / seasonal-naive crps on the same weeks
);
CREATE TABLE IF NOT EXISTS models.cv_fold_parameters (
    model_id VARCHAR, market VARCHAR, fold INTEGER, channel VARCHAR,
    parameter VARCHAR,                -- roas | share | alpha | theta | lam | half_sat | slope | beta
    mean DOUBLE, hdi_low DOUBLE, hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.cv_stability (
    model_id VARCHAR, market VARCHAR, channel VARCHAR, parameter VARCHAR, n_folds INTEGER,
    mean DOUBLE, sd DOUBLE, cv DOUBLE, min DOUBLE, max DOUBLE, spread DOUBLE, hdi_overlap BOOLEAN
);
CREATE TABLE IF NOT EXISTS models.cv_parameter_stability (
    model_id VARCHAR, market VARCHAR, channel VARCHAR, n_folds INTEGER,
    roas_mean DOUBLE, roas_sd DOUBLE, roas_cv DOUBLE, roas_min DOUBLE, roas_max DOUBLE,
    roas_hdi_overlap BOOLEAN, share_mean DOUBLE, share_min DOUBLE, share_max DOUBLE, share_spread DOUBLE,
    roas_unstable BOOLEAN,            -- coefficient of variation of fold-mean ROAS > roas_cv_threshold
    roas_cv_threshold DOUBLE
);
CREATE TABLE IF NOT EXISTS models.fit_attempts (     -- one row per sampling attempt of the run
    model_id VARCHAR, market VARCHAR, attempt INTEGER,
    sampler VARCHAR, chains INTEGER, draws INTEGER, tune INTEGER, target_accept DOUBLE, seed BIGINT,
    max_r_hat DOUBLE, min_ess_bulk DOUBLE, min_ess_tail DOUBLE, divergences INTEGER,
    gate_passed BOOLEAN, gate_failures VARCHAR,
    worst_parameters VARCHAR,         -- parameters with the worst R-hat/ESS, when convergence failed
    remedy VARCHAR,                   -- what this attempt changed against the previous one, and why
    seconds DOUBLE
);
CREATE TABLE IF NOT EXISTS models.parameter_summary (
    model_id VARCHAR, market VARCHAR, parameter VARCHAR,
    mean DOUBLE, sd DOUBLE, hdi_low DOUBLE, hdi_high DOUBLE, r_hat DOUBLE, ess_bulk DOUBLE, ess_tail DOUBLE
);
CREATE TABLE IF NOT EXISTS models.decomposition (
    model_id VARCHAR, market VARCHAR, week DATE, component VARCHAR,
    mean DOUBLE, hdi_low DOUBLE, hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.channel_summary (
    model_id VARCHAR, market VARCHAR, channel VARCHAR, spend DOUBLE,
    contribution_mean DOUBLE, contribution_hdi_low DOUBLE, contribution_hdi_high DOUBLE,
    share_mean DOUBLE, share_hdi_low DOUBLE, share_hdi_high DOUBLE,
    roas_mean DOUBLE, roas_hdi_low DOUBLE, roas_hdi_high DOUBLE,
    mroas_mean DOUBLE, mroas_hdi_low DOUBLE, mroas_hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.channel_period_summary (   -- from the posterior draws of each period's sum
    model_id VARCHAR, market VARCHAR,
    period_type VARCHAR,              -- quarter | year (calendar periods of the week start dates)
    period VARCHAR,                   -- 2018-Q2 | 2018
    period_start DATE, period_end DATE, first_week DATE, last_week DATE, n_weeks INTEGER,
    complete BOOLEAN,                 -- the training window holds every week starting in the period
    channel VARCHAR, spend DOUBLE,
    contribution_mean DOUBLE, contribution_hdi_low DOUBLE, contribution_hdi_high DOUBLE,
    share_mean DOUBLE, share_hdi_low DOUBLE, share_hdi_high DOUBLE,
    roas_mean DOUBLE, roas_hdi_low DOUBLE, roas_hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.response_curves (
    model_id VARCHAR, market VARCHAR, channel VARCHAR, weekly_spend DOUBLE,
    mean DOUBLE, hdi_low DOUBLE, hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.adstock_weights (
    model_id VARCHAR, market VARCHAR, channel VARCHAR, lag INTEGER,
    mean DOUBLE, hdi_low DOUBLE, hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.fit_weekly (
    model_id VARCHAR, market VARCHAR, week DATE, actual DOUBLE,
    predicted_mean DOUBLE, predicted_hdi_low DOUBLE, predicted_hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.roas_drift (
    model_id VARCHAR, market VARCHAR, champion_model_id VARCHAR, channel VARCHAR,
    roas_mean DOUBLE, roas_hdi_low DOUBLE, roas_hdi_high DOUBLE,
    champion_roas_mean DOUBLE, champion_roas_hdi_low DOUBLE, champion_roas_hdi_high DOUBLE,
    change DOUBLE, relative_change DOUBLE,
    within_champion_hdi BOOLEAN        -- the new mean lies inside the champion's 94% HDI
);
"""

#: Insight tables a fit writes (``tables/<name>.parquet``) and registration copies into ``models``.
INSIGHT_TABLES = (
    "fit_attempts",
    "parameter_summary",
    "decomposition",
    "channel_summary",
    "channel_period_summary",
    "response_curves",
    "adstock_weights",
    "fit_weekly",
)
#: Cross-validation tables a CV run writes (``<model_id>.cv/<name>.parquet``), keyed like the insights.
CV_TABLES = (
    "cv_folds",
    "cv_predictions",
    "cv_metrics",
    "cv_fold_parameters",
    "cv_stability",
    "cv_parameter_stability",
)
#: Per-run tables, for BI: each also gets a ``champion_<name>`` view of the current champions' rows.
RUN_TABLES = (*INSIGHT_TABLES, "roas_drift", *CV_TABLES)

CHAMPION = "champion"
RETIRED = "retired"
REJECTED = "rejected"


@dataclass
class FitRecord:
    """What registration needs to know about a fit (also written as the artifact's ``run.json``)."""

    model_id: str
    market: str
    created_at: str
    train_start: str
    train_end: str
    n_weeks: int
    config_hash: str
    code_version: str
    model_spec: str
    scaling: str
    scaling_source: str
    previous_champion: str | None
    diagnostics: dict[str, float]
    timings: dict[str, float]
    reused_graph: bool
    gate_failures: list[str]
    artifact_path: str
    dagster_run_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    n_lift_tests: int = 0
    """Lift tests that calibrated the fit (:mod:`mmm_pipeline.model.calibration`)."""
    fit_attempts: int = 1
    """Sampling attempts made (``model.remedies``); the record describes the last one."""
    data_fingerprint: str | None = None
    """Fingerprint of the modeling-table rows the fit trained on
    (:mod:`mmm_pipeline.features.data_version`)."""

    @property
    def gate_passed(self) -> bool:
        return not self.gate_failures

    def row(self, status: str) -> dict[str, object]:
        """The ``models.model_runs`` row for this record."""
        spec = ModelSpec.model_validate_json(self.model_spec)
        d, t = self.diagnostics, self.timings
        return {
            "model_id": self.model_id,
            "market": self.market,
            "status": status,
            "created_at": dt.datetime.fromisoformat(self.created_at),
            "train_start": dt.date.fromisoformat(self.train_start),
            "train_end": dt.date.fromisoformat(self.train_end),
            "n_weeks": self.n_weeks,
            "n_lift_tests": self.n_lift_tests,
            "fit_attempts": self.fit_attempts,
            "data_fingerprint": self.data_fingerprint,
            "config_hash": self.config_hash,
            "code_version": self.code_version,
            "model_spec": self.model_spec,
            "scaling": self.scaling,
            "scaling_source": self.scaling_source,
            "previous_champion": self.previous_champion,
            "sampler": spec.sampler.name,
            "chains": spec.sampler.chains,
            "draws": spec.sampler.draws,
            "tune": spec.sampler.tune,
            "target_accept": spec.sampler.target_accept,
            "seed": spec.sampler.seed,
            "max_r_hat": d.get("max_r_hat"),
            "min_ess_bulk": d.get("min_ess_bulk"),
            "min_ess_tail": d.get("min_ess_tail"),
            "divergences": d.get("divergences"),
            "r2": d.get("r2"),
            "mape": d.get("mape"),
            "nrmse": d.get("nrmse"),
            "build_seconds": t.get("build"),
            "compile_seconds": t.get("compile"),
            "sample_seconds": t.get("sample"),
            "total_seconds": t.get("total"),
            "reused_graph": self.reused_graph,
            "gate_passed": self.gate_passed,
            "gate_failures": "; ".join(self.gate_failures) or None,
            "artifact_path": self.artifact_path,
            "dagster_run_id": self.dagster_run_id,
        }


@dataclass
class CVRecord:
    """The outcome of a fit's cross-validation: tables on disk, headline figures for the registry.

    ``status``: ``ok`` (every fold ran), ``partial`` (some folds failed), ``failed`` (the MMM ran on
    no fold), ``skipped`` (switched off, or too little data: ``note`` says which).
    """

    model_id: str
    status: str
    note: str | None = None
    folder: str | None = None
    overall: dict[str, dict[str, float]] = field(default_factory=dict)
    """Overall metrics by model (``mmm``, ``seasonal_naive``, ``ridge``): crps, crps_skill, mape..."""
    unstable_channels: list[str] = field(default_factory=list)
    failed_folds: list[str] = field(default_factory=list)
    """``fold <i>: <error>`` for every failed fold."""

    def row(self) -> dict[str, object]:
        """The ``cv_*`` columns of ``models.model_runs``."""
        mmm = self.overall.get("mmm", {})
        return {
            "cv_status": self.status,
            "cv_note": self.note,
            "cv_n_folds": mmm.get("n_folds"),
            "cv_folds_failed": len(self.failed_folds),
            "cv_crps": mmm.get("crps"),
            "cv_crps_skill": mmm.get("crps_skill"),
            "cv_mape": mmm.get("mape"),
            "cv_coverage_50": mmm.get("coverage_50"),
            "cv_coverage_94": mmm.get("coverage_94"),
            "cv_unstable_channels": ", ".join(self.unstable_channels) or None,
        }


def new_model_id(market: str, train_end: dt.date) -> str:
    """``<market>-<last training week>-<8 hex>``: readable, sortable per market, unique."""
    return f"{market}-{train_end:%Y%m%d}-{uuid.uuid4().hex[:8]}"


#: Views of ``models.model_runs`` with one row per market, for BI: the serving model and the newest fit.
RUN_VIEWS = {
    "champion_model_runs": f"SELECT * FROM models.model_runs WHERE status = '{CHAMPION}'",
    "latest_model_runs": "SELECT * FROM models.model_runs "
    "QUALIFY row_number() OVER (PARTITION BY market ORDER BY created_at DESC, model_id DESC) = 1",
}


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(MODELS_DDL)
    for name, sql in RUN_VIEWS.items():
        conn.execute(f"CREATE OR REPLACE VIEW models.{name} AS {sql}")
    for name in RUN_TABLES:
        conn.execute(
            f"CREATE OR REPLACE VIEW models.champion_{name} AS SELECT t.* FROM models.{name} t "
            f"JOIN models.model_runs r USING (model_id) WHERE r.status = '{CHAMPION}'"
        )


# --- artifacts -------------------------------------------------------------------------------------


def _write_folder(
    folder: Path, record_name: str, record: object, tables: dict[str, pd.DataFrame], extra=None
) -> Path:
    """Write ``tables/*.parquet``, the record as JSON and ``extra(tmp)``'s files into ``folder``
    atomically: everything goes to a hidden sibling first, which then replaces ``folder`` by rename."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    (tmp / "tables").mkdir(parents=True)
    try:
        if extra is not None:
            extra(tmp)
        for name, frame in tables.items():
            frame.to_parquet(tmp / "tables" / f"{name}.parquet", index=False)
        (tmp / record_name).write_text(json.dumps(asdict(record), indent=2, default=str))
        if folder.exists():  # a re-run for the same model replaces the old files
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def write_artifacts(
    folder: Path, record: FitRecord, idata: az.InferenceData, tables: dict[str, pd.DataFrame]
) -> Path:
    """Write the posterior, record and tables into ``folder`` atomically (aside, then renamed)."""
    return _write_folder(
        folder, "run.json", record, tables, extra=lambda tmp: idata.to_netcdf(str(tmp / "posterior.nc"))
    )


def write_cv_artifacts(folder: Path, record: CVRecord, tables: dict[str, pd.DataFrame]) -> Path:
    """Write a CV run's tables and record into ``folder`` atomically (aside, then renamed)."""
    return _write_folder(folder, "cv.json", record, tables)


def read_record(folder: Path) -> FitRecord:
    return FitRecord(**json.loads((Path(folder) / "run.json").read_text()))


def read_tables(folder: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted((Path(folder) / "tables").glob("*.parquet"))}


@dataclass(frozen=True)
class StoredModel:
    """A registered model loaded from its artifact: enough to predict, decompose or optimize."""

    model_id: str
    idata: az.InferenceData
    spec: ModelSpec
    scaling: ScalingSpec


def load_model(folder: Path | str) -> StoredModel:
    """Load a model run's posterior with its spec and frozen scaling, without refitting."""
    folder = Path(folder)
    idata = az.from_netcdf(str(folder / "posterior.nc"))
    return StoredModel(
        model_id=folder.name,
        idata=idata,
        spec=ModelSpec.model_validate_json(idata.attrs["model_spec"]),
        scaling=ScalingSpec.model_validate_json(idata.attrs["scaling"]),
    )


# --- the registry tables ---------------------------------------------------------------------------


def champion(conn: duckdb.DuckDBPyConnection, market: str) -> dict[str, object] | None:
    """The market's champion run (its ``model_runs`` row as a dict), or None before the first promotion."""
    ensure_schema(conn)
    frame = conn.execute(
        "SELECT * FROM models.model_runs WHERE market = ? AND status = ?", [market, CHAMPION]
    ).df()
    return None if frame.empty else frame.iloc[0].to_dict()


def latest_run(conn: duckdb.DuckDBPyConnection, market: str) -> dict[str, object] | None:
    """The market's most recently fitted run, whatever its status."""
    ensure_schema(conn)
    frame = conn.execute(
        "SELECT * FROM models.model_runs WHERE market = ? ORDER BY created_at DESC LIMIT 1", [market]
    ).df()
    return None if frame.empty else frame.iloc[0].to_dict()


def register(
    conn: duckdb.DuckDBPyConnection,
    record: FitRecord,
    tables: dict[str, pd.DataFrame],
    blocked_by: list[str],
    cv: CVRecord | None = None,
) -> str:
    """Record a fit, its tables, its CV and its ROAS drift against the champion, in one transaction.

    With no ``blocked_by`` reasons the fit becomes the market's champion (the previous one is
    retired); otherwise it is stored as ``rejected`` with the reasons. Re-registering the same
    ``model_id`` replaces its rows. Returns the status given.
    """
    ensure_schema(conn)
    promote = not blocked_by
    status = CHAMPION if promote else REJECTED
    row = pd.DataFrame(
        [
            {
                **record.row(status),
                **(cv.row() if cv else {}),
                "promotion_blocked_by": "; ".join(blocked_by) or None,
            }
        ]
    )
    if cv is not None and cv.folder is not None:
        tables = {**tables, **read_tables(cv.folder)}
    with transaction(conn):
        for name in ("model_runs", *RUN_TABLES):
            conn.execute(f"DELETE FROM models.{name} WHERE model_id = ?", [record.model_id])
        conn.register("run_row", row)
        conn.execute("INSERT INTO models.model_runs BY NAME SELECT * FROM run_row")
        conn.unregister("run_row")
        for name in (*INSIGHT_TABLES, *CV_TABLES):
            if name not in tables:  # CV tables when the CV was skipped
                continue
            frame = tables[name].assign(model_id=record.model_id, market=record.market)
            conn.register("insight_rows", frame)
            conn.execute(f"INSERT INTO models.{name} BY NAME SELECT * FROM insight_rows")
            conn.unregister("insight_rows")
        _record_roas_drift(conn, record)
        if promote:
            conn.execute(
                "UPDATE models.model_runs SET status = ?, retired_at = now()::TIMESTAMP "
                "WHERE market = ? AND status = ? AND model_id <> ?",
                [RETIRED, record.market, CHAMPION, record.model_id],
            )
            conn.execute(
                "UPDATE models.model_runs SET promoted_at = now()::TIMESTAMP WHERE model_id = ?",
                [record.model_id],
            )
        conn.execute(
            "UPDATE models.model_runs SET registered_at = now()::TIMESTAMP WHERE model_id = ?",
            [record.model_id],
        )
    return status


def _record_roas_drift(conn: duckdb.DuckDBPyConnection, record: FitRecord) -> None:
    """ROAS of each channel against the champion the fit started from (nothing before a first champion)."""
    if record.previous_champion is None:
        return
    conn.execute(
        """
        INSERT INTO models.roas_drift BY NAME
        SELECT
            n.model_id, n.market, c.model_id AS champion_model_id, n.channel,
            n.roas_mean, n.roas_hdi_low, n.roas_hdi_high,
            c.roas_mean AS champion_roas_mean, c.roas_hdi_low AS champion_roas_hdi_low,
            c.roas_hdi_high AS champion_roas_hdi_high,
            n.roas_mean - c.roas_mean AS change,
            (n.roas_mean - c.roas_mean) / nullif(abs(c.roas_mean), 0) AS relative_change,
            n.roas_mean BETWEEN c.roas_hdi_low AND c.roas_hdi_high AS within_champion_hdi
        FROM models.channel_summary n
        JOIN models.channel_summary c ON c.channel = n.channel AND c.model_id = ?
        WHERE n.model_id = ?
        """,
        [record.previous_champion, record.model_id],
    )


def roas_drift(conn: duckdb.DuckDBPyConnection, model_id: str) -> pd.DataFrame:
    return conn.execute(
        "SELECT * FROM models.roas_drift WHERE model_id = ? ORDER BY channel", [model_id]
    ).df()
