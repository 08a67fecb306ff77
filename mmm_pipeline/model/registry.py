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
import functools
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
from mmm_pipeline.tables import (
    CHAMPION,
    CV_TABLES,
    INSIGHT_TABLES,
    REJECTED,
    RETIRED,
    RUN_TABLES,
    ensure_models,
)
from mmm_pipeline.warehouse import transaction


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
    pooled_fit_id: str | None = None
    """The pooled fit (``model.spec.pooling: partial``) this market's model is one view of: every market
    of the group has a run with the same id, and they are registered, promoted and retired together."""
    refresh_anchor: str | None = None
    """The sampled run whose draws this run reweighted (``model.refresh``); None when it sampled."""

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
            "pooled_fit_id": self.pooled_fit_id,
            "refresh_anchor": self.refresh_anchor,
            "pareto_k": d.get("pareto_k"),
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


@dataclass
class PooledFitRecord:
    """A pooled fit of a market group (``pooling: partial``): which markets, and where each market's
    view of it lies (an ordinary model artifact, whose :class:`FitRecord` carries ``pooled_fit_id``).
    Written as ``group.json`` into ``<artifacts>/models/_pooled/<pooled_fit_id>/`` with the national
    roll-up tables, after every market's artifact: a group folder means a complete group."""

    pooled_fit_id: str
    created_at: str
    train_end: str
    markets: list[str]
    runs: dict[str, str]
    """Each market's artifact folder."""
    gate_failures: list[str] = field(default_factory=list)
    dagster_run_id: str | None = None


#: Folder of the pooled fits under ``<artifacts>/models``; no market can be named so (market names start
#: with a letter or a digit).
POOLED_FOLDER = "_pooled"


def write_group_artifacts(folder: Path, record: PooledFitRecord, national: dict[str, pd.DataFrame]) -> Path:
    """Write a pooled fit's record and national tables into ``folder`` atomically (aside, then renamed)."""
    return _write_folder(folder, "group.json", record, national)


def read_group_record(folder: Path | str) -> PooledFitRecord:
    return PooledFitRecord(**json.loads((Path(folder) / "group.json").read_text()))


def cv_folder(record: FitRecord) -> Path:
    """Where a fit's cross-validation is written: ``<model_id>.cv`` beside its artifact folder."""
    return Path(record.artifact_path).with_name(f"{record.model_id}.cv")


def read_cv_record(folder: Path | str) -> CVRecord:
    return CVRecord(**json.loads((Path(folder) / "cv.json").read_text()))


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
    """Load a model run's posterior with its spec and frozen scaling, without refitting.

    A run reads the same champion in several steps (each plan's optimization, the recording, tracking,
    the scorecard), so loads are kept per process, keyed by the file's path and modification time: an
    artifact is written once under its own model id, and a rewritten file is read again. Callers only
    read the posterior.
    """
    path = (Path(folder) / "posterior.nc").resolve()
    return _load_posterior(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_posterior(path: str, _mtime_ns: int) -> StoredModel:
    # Read into memory and close the file (ArviZ opens lazily by default): a kept entry must not depend
    # on a file that a re-run of the same model may replace.
    with az.rc_context({"data.load": "eager"}):
        idata = az.from_netcdf(path)
    return StoredModel(
        model_id=Path(path).parent.name,
        idata=idata,
        spec=ModelSpec.model_validate_json(idata.attrs["model_spec"]),
        scaling=ScalingSpec.model_validate_json(idata.attrs["scaling"]),
    )


# --- the registry tables ---------------------------------------------------------------------------


def champion_runs(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every market's champion run (``model_runs`` rows), ordered by market; the one champion query.

    A writer first brings the ``models`` schema up to date; a read-only connection (a freshness check)
    reads it as it is.
    """
    (read_only,) = conn.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    if not read_only:
        ensure_models(conn)
    return conn.execute("SELECT * FROM models.model_runs WHERE status = ? ORDER BY market", [CHAMPION]).df()


def champion(conn: duckdb.DuckDBPyConnection, market: str) -> dict[str, object] | None:
    """The market's champion run (its ``model_runs`` row as a dict), or None before the first promotion."""
    frame = champion_runs(conn)
    frame = frame[frame["market"] == market]
    return None if frame.empty else frame.iloc[0].to_dict()


def run_of(conn: duckdb.DuckDBPyConnection, model_id: str) -> dict[str, object] | None:
    """One ``model_runs`` row by model id, or None."""
    ensure_models(conn)
    frame = conn.execute("SELECT * FROM models.model_runs WHERE model_id = ?", [model_id]).df()
    return None if frame.empty else frame.iloc[0].to_dict()


def latest_run(conn: duckdb.DuckDBPyConnection, market: str) -> dict[str, object] | None:
    """The market's most recently fitted run, whatever its status."""
    ensure_models(conn)
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
    ensure_models(conn)
    with transaction(conn):
        return _register_run(conn, record, tables, blocked_by, cv)


def register_group(
    conn: duckdb.DuckDBPyConnection,
    runs: list[tuple[FitRecord, dict[str, pd.DataFrame], CVRecord | None]],
    blocked_by: list[str],
    national: dict[str, pd.DataFrame] | None = None,
) -> str:
    """Record every market's view of one pooled fit, in one transaction, as one unit: with no
    ``blocked_by`` reasons (the group's, for any market) every market's run becomes its champion; else
    every one is stored as ``rejected`` with the same reasons. So the markets of a group never serve
    models of different fits. ``national``: the roll-up tables (``channel_summary``, ``decomposition``,
    ``response_curves`` with ``market = 'national'``), stored in those tables under the pooled fit's id
    (``model_runs.pooled_fit_id``). Returns the status given."""
    ids = {record.pooled_fit_id for record, _, _ in runs}
    if len(ids) != 1 or None in ids:
        raise ValueError(
            f"register_group takes the runs of one pooled fit; got pooled fit ids {sorted(map(str, ids))}"
        )
    (pooled_fit_id,) = ids
    ensure_models(conn)
    with transaction(conn):
        statuses = {_register_run(conn, record, tables, blocked_by, cv) for record, tables, cv in runs}
        for name, frame in (national or {}).items():
            conn.execute(f"DELETE FROM models.{name} WHERE model_id = ?", [pooled_fit_id])
            conn.register("national_rows", frame.assign(model_id=pooled_fit_id))
            conn.execute(f"INSERT INTO models.{name} BY NAME SELECT * FROM national_rows")
            conn.unregister("national_rows")
    (status,) = statuses
    return status


def _register_run(
    conn: duckdb.DuckDBPyConnection,
    record: FitRecord,
    tables: dict[str, pd.DataFrame],
    blocked_by: list[str],
    cv: CVRecord | None,
) -> str:
    """:func:`register`'s writes, inside the caller's transaction."""
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
