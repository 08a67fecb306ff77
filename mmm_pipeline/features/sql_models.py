"""dbt-like SQL models run in DuckDB.

Each ``.sql`` file under ``dbt_like_sql/<layer>/`` is one model named after the file and built into the
schema named after its folder (staging, intermediate, marts). Templates are Jinja:

- ``{{ ref('stg_media') }}`` refers to another model; ``{{ source('landing', 'media') }}`` to a table
  written by a Python asset. Dependencies (and so Dagster lineage) are read from these calls.
- ``{{ config(materialized='incremental_weekly', unique_key=[...]) }}`` makes a model weekly-incremental:
  a run rebuilds only the weeks of its partition window (the SQL filters on ``$window_start`` /
  ``$window_end``) by delete-then-insert, so re-running a week is safe. Such a model depends week by week
  on the landed rows it reads (:data:`WEEKLY_SOURCES`), so Dagster reports stale exactly the weeks whose
  landed content changed.
- Identifiers from user data (channel and control names) go through the ``ident`` filter and string
  values through ``literal``; nothing from a data file is pasted into SQL raw.
- Leading ``--`` comment lines are the model's description (shown in the Dagster UI).
- ``macros/*.sql`` hold Jinja macros that models import (``{% from 'macros/x.sql' import m with context %}``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import jinja2
import pandas as pd

from mmm_pipeline.ingest.categorical import NO_LABEL_MARKERS
from mmm_pipeline.ingest.contract import InputContract
from mmm_pipeline.warehouse import quote_ident, relation_exists, transaction

LAYERS = ("staging", "intermediate", "marts")

#: Tables written by Python assets that SQL models read: (source, table) -> (relation, asset name).
SOURCES: dict[tuple[str, str], tuple[str, str]] = {
    ("landing", "files"): ("raw.landing_files", "landing_files"),
    ("landing", "media"): ("raw.landed_media", "landing_files"),
    ("landing", "kpi"): ("raw.landed_kpi", "landing_files"),
    ("landing", "controls"): ("raw.landed_controls", "landing_files"),
    ("landing", "lift_tests"): ("raw.landed_lift_tests", "landing_files"),
    ("landing", "quarantine"): ("raw.quarantined_files", "landing_files"),
    ("reference", "holidays"): ("raw.holidays", "holiday_calendar"),
}


#: Sources a weekly-incremental model reads week by week: (source, table) -> weekly-partitioned asset.
WEEKLY_SOURCES: dict[tuple[str, str], str] = {
    ("landing", kind): "landed_weeks" for kind in ("media", "kpi", "controls", "lift_tests")
}
#: Sources a weekly model reads that are no dependency of it: which deliveries are active is part of each
#: ``landed_weeks`` week's content hash, and the manifest (unpartitioned, new on every scan) would make every
#: week stale after every scan.
IN_WEEKLY_VERSIONS = {("landing", "files")}


class SqlModelError(ValueError):
    """A SQL model that cannot be loaded (bad reference, bad config, cycle)."""


def quote_literal(value: Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class SqlModel:
    name: str
    layer: str
    path: Path
    description: str
    materialized: Literal["table", "incremental_weekly"] = "table"
    unique_key: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()
    source_assets: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def relation(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def incremental(self) -> bool:
        return self.materialized == "incremental_weekly"


def _environment(folder: Path) -> jinja2.Environment:
    """Jinja with the models folder as loader, so models can import macros from ``macros/``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["ident"] = quote_ident
    env.filters["literal"] = quote_literal
    return env


def _context(cfg: InputContract) -> dict[str, Any]:
    return {
        "channels": cfg.channel_names,
        "channel_configs": [c.model_dump() for c in cfg.channels],
        "controls": [c.model_dump() for c in cfg.controls],
        "no_label_markers": list(NO_LABEL_MARKERS),
        "media_gap_fill": cfg.validation.media_gap_fill,
        "week_start_index": cfg.calendar.week_start_index,
    }


def _description(text: str) -> str:
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("--"):
            lines.append(stripped[2:].strip())
        elif stripped and not stripped.startswith("{{"):
            break
    return " ".join(lines)


def render(path: Path, cfg: InputContract, models: dict[str, SqlModel] | None = None) -> tuple[str, dict]:
    """Render a model's SQL; returns (sql, facts) where facts hold its config, refs and sources."""
    facts: dict[str, Any] = {"config": {}, "refs": [], "sources": []}

    def config(**kwargs: Any) -> str:
        facts["config"].update(kwargs)
        return ""

    def ref(name: str) -> str:
        facts["refs"].append(name)
        if models is None:
            return "__ref__"
        if name not in models:
            raise SqlModelError(f"{path}: ref('{name}') names no model")
        return models[name].relation

    def source(source_name: str, table: str) -> str:
        key = (source_name, table)
        if key not in SOURCES:
            raise SqlModelError(f"{path}: source{key} is not a known source ({sorted(SOURCES)})")
        facts["sources"].append(key)
        return SOURCES[key][0]

    env = _environment(path.parent.parent)
    env.globals.update(config=config, ref=ref, source=source, **_context(cfg))
    sql = env.from_string(path.read_text()).render()
    return sql, facts


def discover_models(folder: Path, cfg: InputContract) -> dict[str, SqlModel]:
    """All models under ``folder``, keyed by name, in dependency order."""
    models: dict[str, SqlModel] = {}
    for layer in LAYERS:
        for path in sorted((folder / layer).glob("*.sql")):
            if path.stem in models:
                raise SqlModelError(f"{path}: a model named {path.stem!r} already exists")
            _, facts = render(path, cfg)
            conf = dict(facts["config"])
            materialized = conf.pop("materialized", "table")
            if materialized not in ("table", "incremental_weekly"):
                raise SqlModelError(
                    f"{path}: materialized={materialized!r} is not table or incremental_weekly"
                )
            sources = list(dict.fromkeys(facts["sources"]))
            if materialized == "incremental_weekly":
                weekly = [s for s in sources if s not in IN_WEEKLY_VERSIONS]
                assets = [WEEKLY_SOURCES.get(s, SOURCES[s][1]) for s in weekly]
            else:
                assets = [SOURCES[s][1] for s in sources]
            models[path.stem] = SqlModel(
                name=path.stem,
                layer=layer,
                path=path,
                description=_description(path.read_text()),
                materialized=materialized,
                unique_key=tuple(conf.pop("unique_key", ())),
                refs=tuple(dict.fromkeys(facts["refs"])),
                source_assets=tuple(dict.fromkeys(assets)),
                extra=conf,
            )
    for model in models.values():
        missing = [r for r in model.refs if r not in models]
        if missing:
            raise SqlModelError(f"{model.path}: ref() to unknown model(s) {missing}")
    return _topological(models)


def _topological(models: dict[str, SqlModel]) -> dict[str, SqlModel]:
    ordered: dict[str, SqlModel] = {}
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered:
            return
        if name in visiting:
            raise SqlModelError(f"dependency cycle through model {name!r}")
        visiting.add(name)
        for dep in models[name].refs:
            visit(dep)
        visiting.discard(name)
        ordered[name] = models[name]

    for name in models:
        visit(name)
    return ordered


@dataclass(frozen=True)
class Window:
    """Half-open week window [start, end) of an incremental run."""

    start: dt.date
    end: dt.date


BUILD_TABLE = "__model_build"


def build_model(
    conn: duckdb.DuckDBPyConnection,
    model: SqlModel,
    cfg: InputContract,
    models: dict[str, SqlModel],
    window: Window | None = None,
) -> pd.DataFrame:
    """Run the model's SQL into a temporary build table and return what it built (not yet published).

    Call :func:`commit_model` after validating the frame; until then the model's table is untouched.
    """
    sql, _ = render(model.path, cfg, models)
    params = {}
    if model.incremental:
        if window is None:
            raise SqlModelError(f"{model.name} is incremental and needs a week window")
        params = {"window_start": window.start, "window_end": window.end}
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {BUILD_TABLE} AS {sql}", params or None)
    return conn.execute(f"SELECT * FROM {BUILD_TABLE}").df()


def commit_model(conn: duckdb.DuckDBPyConnection, model: SqlModel, window: Window | None = None) -> None:
    """Publish the build table into the model's table in one transaction (readers never see half)."""
    schema, name = model.layer, model.name
    target = f"{schema}.{quote_ident(name)}"
    try:
        with transaction(conn):
            if model.incremental:
                assert window is not None
                if not relation_exists(conn, schema, name):
                    conn.execute(f"CREATE TABLE {target} AS SELECT * FROM {BUILD_TABLE} WITH NO DATA")
                _add_new_columns(conn, target, schema, name)
                bounds = [window.start, window.end]
                conn.execute(f"DELETE FROM {target} WHERE week >= ? AND week < ?", bounds)
                conn.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {BUILD_TABLE}")
            else:
                conn.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM {BUILD_TABLE}")
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {BUILD_TABLE}")


def _add_new_columns(conn: duckdb.DuckDBPyConnection, target: str, schema: str, name: str) -> None:
    """Add the build's columns that an incremental table made by an older version of its SQL lacks.

    The weeks built before keep NULL there until they are rebuilt (``run --weeks all``); without this a
    new column in a model (``stg_controls.label``) would fail every incremental run of an old warehouse.
    """
    existing = {
        c
        for (c,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()
    }
    built = conn.execute(f"SELECT column_name, column_type FROM (DESCRIBE {BUILD_TABLE})").fetchall()
    for column, dtype in built:
        if column not in existing:
            conn.execute(f"ALTER TABLE {target} ADD COLUMN {quote_ident(column)} {dtype}")
