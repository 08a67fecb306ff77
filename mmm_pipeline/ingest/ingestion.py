"""Incremental, idempotent registration of landing files in the warehouse.

Each scan reads only files that are new or changed since the last scan (by path, size and mtime; then
by content hash), so a new week's file costs one file read, not a re-read of history:

- a delivery's identity is its content and its order of arrival: content already delivered (under any
  name, whatever became of it since) is recorded as a duplicate and changes nothing, and a file whose
  content is unchanged is never re-read, however often it is touched, so an old backup copy cannot
  undo a later correction;
- a new version of a file at the same path supersedes the old version's rows (rewriting a file in
  place to content it held before is such a new version: it arrives later, so it wins);
- every entry of the landing folder is accounted for: one in no kind folder, in a format no reader
  knows, or behind a symlink out of the folder is quarantined like a file that breaks a rule;
- a week far above its series' history is rejected (or warned about), a spend far below it warned
  about: the accepted delivery's ``note`` holds the warning;
- where two deliveries hold the same (date, market, channel/control), the later delivery wins
  (applied by the staging SQL models);
- a file that breaks a rule is moved to the quarantine folder with a JSON error report and nothing of
  it reaches the warehouse.

Which weeks need rebuilding is not queued here: :func:`week_versions` gives each week a content hash of
the landed rows the staging models read, and Dagster's stale status of the weekly partitions (fed by
those hashes as data versions, ``defs/assets/ingestion.py``) decides. A lift test belongs to the week it
ended in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from mmm_pipeline.ingest.contract import LIFT_TEST_COLUMNS, InputContract
from mmm_pipeline.ingest.landing import (
    HISTORY_COLUMNS,
    LandingFileError,
    RuleViolation,
    check_history,
    discover,
    layout_problem,
    sha256_of,
    validate_landing_file,
)
from mmm_pipeline.warehouse import transaction

LANDED_COLUMNS = {
    "media": ["delivery_id", "row_number", "date", "week", "market", "channel", "spend", "impressions"],
    "kpi": ["delivery_id", "row_number", "date", "week", "market", "kpi"],
    "controls": ["delivery_id", "row_number", "date", "week", "market", "control", "value", "label"],
    "lift_tests": ["delivery_id", "row_number", "week", *LIFT_TEST_COLUMNS],
}


@dataclass
class ScanResult:
    """What one scan of the landing folder did, file by file."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    rejected: list[LandingFileError] = field(default_factory=list)
    warnings: list[tuple[str, RuleViolation]] = field(default_factory=list)
    unchanged: int = 0
    rows_loaded: int = 0
    files: list[tuple[str, str]] = field(default_factory=list)
    """Every entry the scan saw, in order, with what became of it (``accepted``, ``duplicate``...)."""

    def summary(self) -> str:
        warned = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return (
            f"{len(self.accepted)} accepted ({self.rows_loaded} rows), "
            f"{len(self.duplicates)} duplicate, {len(self.superseded)} superseded, "
            f"{len(self.rejected)} rejected, {self.unchanged} unchanged{warned}"
        )

    def file_lines(self) -> list[str]:
        """One line per file that was not unchanged: its path and outcome."""
        return [f"{rel}: {outcome}" for rel, outcome in self.files if outcome != "unchanged"]


def _history(conn: duckdb.DuckDBPyConnection, kind: str) -> pd.DataFrame:
    """Per (market, series) weekly totals of the active landed rows (the latest delivery of each key):
    weeks above 0, the biggest week and their median. ``series`` is the channel, or ``kpi``."""
    if kind == "media":
        value, series, keys = "spend", "channel", "r.channel"
    elif kind == "kpi":
        value, series, keys = "kpi", "'kpi'", ""
    else:
        return pd.DataFrame(columns=list(HISTORY_COLUMNS))
    partition = "r.market, r.date" + (f", {keys}" if keys else "")
    return conn.execute(
        f"""
        WITH latest AS (
            SELECT r.market, {series} AS series, r.week, r.{value} AS value
            FROM raw.landed_{kind} r JOIN raw.landing_files f USING (delivery_id)
            WHERE f.status = 'active'
            QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY r.delivery_id DESC) = 1
        ), weekly AS (
            SELECT market, series, week, sum(value) AS total FROM latest GROUP BY ALL HAVING sum(value) > 0
        )
        SELECT market, series, count(*) AS n_weeks, max(total) AS max_week, median(total) AS median_week
        FROM weekly GROUP BY ALL
        """
    ).df()


@dataclass(frozen=True)
class LandingEntry:
    """One entry of the landing folder with its fingerprint."""

    kind: str
    path: Path
    rel: str  # path relative to the landing folder, POSIX style: the entry's identity across scans
    stat: os.stat_result
    sha256: str
    unchanged: bool  # same size and mtime as in ``known``: the known hash was reused, nothing was read

    @property
    def fingerprint(self) -> tuple[int, int, str]:
        return self.stat.st_size, self.stat.st_mtime_ns, self.sha256


def landing_fingerprints(
    landing: Path, known: Mapping[str, tuple[int, int, str]]
) -> Iterator[LandingEntry]:
    """Every entry of the landing folder (:func:`discover`) with its (size, mtime_ns, SHA-256).

    The one change detection of the pipeline: the scan (``known`` from the warehouse manifest) and the
    new-data sensor (``known`` from its cursor) both call it. The content is hashed again only when the
    size or mtime differ from ``known``. Pure: reads files, writes nothing.
    """
    for kind, path in discover(landing):
        rel = path.relative_to(landing).as_posix()
        stat = path.stat() if path.is_file() else path.lstat()
        previous = known.get(rel)
        if previous is not None and tuple(previous[:2]) == (stat.st_size, stat.st_mtime_ns):
            yield LandingEntry(kind, path, rel, stat, str(previous[2]), unchanged=True)
        else:
            yield LandingEntry(kind, path, rel, stat, sha256_of(path, landing), unchanged=False)


#: Accepted files logged one by one; past this, a progress line every as many files. A historical load
#: of weekly files is hundreds of files, and every log line is an event in the Dagster instance; the
#: asset's metadata lists every file.
LOGGED_FILES = 25


def scan_landing(
    conn: duckdb.DuckDBPyConnection,
    cfg: InputContract,
    landing: Path,
    quarantine: Path,
    log: logging.Logger | None = None,
) -> ScanResult:
    """Register every new or changed file under ``landing`` (validated against the input contract);
    move the ones that break a rule to ``quarantine``."""
    log = log or logging.getLogger(__name__)
    landing.mkdir(parents=True, exist_ok=True)
    last = {
        path: (delivery_id, sha, size, mtime)
        for delivery_id, path, sha, size, mtime in conn.execute(
            "SELECT delivery_id, path, sha256, size, mtime_ns FROM raw.landing_files "
            "QUALIFY row_number() OVER (PARTITION BY path ORDER BY delivery_id DESC) = 1"
        ).fetchall()
    }
    result = ScanResult()
    fingerprints = {rel: (size, mtime, sha) for rel, (_, sha, size, mtime) in last.items()}
    for entry in landing_fingerprints(landing, fingerprints):
        kind, path, rel, sha, stat = entry.kind, entry.path, entry.rel, entry.sha256, entry.stat
        known = last.get(rel)
        if entry.unchanged:
            result.unchanged += 1
            result.files.append((rel, "unchanged"))
            continue
        problem = layout_problem(landing, kind, path)
        if problem is not None:
            error = LandingFileError(path, kind, [problem])
            _quarantine(conn, quarantine, kind, path, rel, sha, error)
            result.rejected.append(error)
            result.files.append((rel, f"quarantined ({problem.rule})"))
            log.error(str(error))
            continue
        if known and known[1] == sha:
            # Touched, not changed: the same delivery. Remember the new mtime so it is not hashed again.
            conn.execute(
                "UPDATE raw.landing_files SET size = ?, mtime_ns = ? WHERE delivery_id = ?",
                [stat.st_size, stat.st_mtime_ns, known[0]],
            )
            result.unchanged += 1
            result.files.append((rel, "unchanged"))
            continue
        twin = _twin(conn, kind, rel, sha)
        if twin:
            _record(conn, kind, rel, sha, stat, "duplicate", note=twin)
            result.duplicates.append(rel)
            result.files.append((rel, "duplicate"))
            log.info(f"{rel}: {twin} - nothing to do")
            continue
        try:
            rows = validate_landing_file(kind, path, cfg)
            errors, warnings = check_history(kind, rows, _history(conn, kind), cfg)
            if errors:
                raise LandingFileError(path, kind, errors)
        except LandingFileError as error:
            _quarantine(conn, quarantine, kind, path, rel, sha, error)
            result.rejected.append(error)
            result.files.append((rel, f"quarantined ({', '.join(error.rules)})"))
            log.error(str(error))
            continue
        note = "; ".join(f"warning: {w.describe()}" for w in warnings) or None
        _accept(conn, kind, rel, sha, stat, rows, result, note)
        result.warnings += [(rel, w) for w in warnings]
        result.files.append((rel, "accepted" + (" with warnings" if warnings else "")))
        for warning in warnings:
            log.warning(f"{rel}: {warning.describe()}")
        accepted = len(result.accepted)
        if accepted <= LOGGED_FILES:
            weeks = f"{rows['week'].min():%Y-%m-%d}..{rows['week'].max():%Y-%m-%d}"
            log.info(f"{rel}: {len(rows)} rows for weeks {weeks}")
        elif accepted % LOGGED_FILES == 0:
            log.info(f"... {accepted} files accepted so far (the full list is in the scan's metadata)")
    return result


def _twin(conn: duckdb.DuckDBPyConnection, kind: str, rel: str, sha: str) -> str | None:
    """Why content is a duplicate, or None if it is a new delivery.

    Content active anywhere, or delivered before under another name (superseded or a duplicate since),
    is a duplicate: an old copy arriving again never overrides what came after it. Content this same
    path held before (and then replaced) is a rewrite in place, a new version that arrives now.
    """
    active = conn.execute(
        "SELECT path FROM raw.landing_files WHERE sha256 = ? AND kind = ? AND status = 'active' LIMIT 1",
        [sha, kind],
    ).fetchone()
    if active:
        return f"same content as {active[0]}"
    if conn.execute(
        "SELECT 1 FROM raw.landing_files WHERE sha256 = ? AND kind = ? AND path = ? LIMIT 1", [sha, kind, rel]
    ).fetchone():
        return None
    earlier = conn.execute(
        "SELECT path, delivery_id, status FROM raw.landing_files WHERE sha256 = ? AND kind = ? "
        "ORDER BY delivery_id LIMIT 1",
        [sha, kind],
    ).fetchone()
    if earlier:
        return (
            f"same content as delivery {earlier[1]} ({earlier[0]}, {earlier[2]}): old content does not "
            "override later deliveries"
        )
    return None


def _record(
    conn: duckdb.DuckDBPyConnection,
    kind: str,
    rel: str,
    sha: str,
    stat,
    status: str,
    rows: pd.DataFrame | None = None,
    note: str | None = None,
) -> int:
    delivery_id = conn.execute("SELECT coalesce(max(delivery_id), 0) + 1 FROM raw.landing_files").fetchone()[
        0
    ]
    conn.execute(
        "INSERT INTO raw.landing_files VALUES (?, ?, ?, ?, ?, ?, now()::TIMESTAMP, ?, ?, ?, ?, ?)",
        [
            delivery_id,
            kind,
            rel,
            sha,
            stat.st_size,
            stat.st_mtime_ns,
            status,
            None if rows is None else len(rows),
            None if rows is None else rows["week"].min().date(),
            None if rows is None else rows["week"].max().date(),
            note,
        ],
    )
    return delivery_id


def _accept(
    conn: duckdb.DuckDBPyConnection,
    kind: str,
    rel: str,
    sha: str,
    stat,
    rows: pd.DataFrame,
    result: ScanResult,
    note: str | None = None,
) -> None:
    """Load one valid delivery in a single transaction: its rows and its manifest entry (superseding
    the active version of the same path)."""
    with transaction(conn):
        previous = conn.execute(
            "SELECT delivery_id FROM raw.landing_files WHERE path = ? AND status = 'active'", [rel]
        ).fetchall()
        for (old_id,) in previous:
            conn.execute(
                "UPDATE raw.landing_files SET status = 'superseded', "
                "note = 'replaced by a newer delivery at this path' "
                "WHERE delivery_id = ?",
                [old_id],
            )
        delivery_id = _record(conn, kind, rel, sha, stat, "active", rows=rows, note=note)
        landed = rows.assign(delivery_id=delivery_id)[LANDED_COLUMNS[kind]]
        conn.register("landed_frame", landed)
        conn.execute(f"INSERT INTO raw.landed_{kind} SELECT * FROM landed_frame")
        conn.unregister("landed_frame")
    if previous:
        result.superseded.append(rel)
    result.accepted.append(rel)
    result.rows_loaded += len(rows)


def _quarantine(
    conn: duckdb.DuckDBPyConnection,
    quarantine: Path,
    kind: str,
    path: Path,
    rel: str,
    sha: str,
    error: LandingFileError,
) -> None:
    """Move a rejected file out of the landing folder, with its error report beside it."""
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
    target = quarantine / kind / f"{stamp}__{path.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), target)
    report = {**error.report(), "file": rel, "sha256": sha, "moved_to": str(target)}
    target.with_name(target.name + ".error.json").write_text(json.dumps(report, indent=2, default=str))
    conn.execute(
        "INSERT INTO raw.quarantined_files VALUES (?, ?, ?, now()::TIMESTAMP, ?, ?, ?)",
        [rel, kind, sha, str(target), ",".join(error.rules), str(error)],
    )


#: Per kind: the columns that identify a landed row (the latest active delivery wins among rows with
#: equal keys, as in ``dbt_like_sql/macros/latest_delivery.sql``) and the value columns.
WEEK_KEYS = {
    "media": (["market", "date", "channel"], ["spend", "impressions"]),
    "kpi": (["market", "date"], ["kpi"]),
    "controls": (["market", "date", "control"], ["value", "label"]),
    "lift_tests": (
        ["market", "channel", "start_date", "end_date", "spend", "delta_spend"],
        ["lift", "lift_se"],
    ),
}


def week_versions(conn: duckdb.DuckDBPyConnection) -> dict[dt.date, str]:
    """Per week, a content hash of the landed rows (every kind) that the staging models of that week
    read: the active deliveries' rows, the latest delivery winning among rows with the same keys.

    These are the data versions of the weekly partitions of ``landed_weeks``: a corrected value changes
    its week's hash; a delivery that restates what is there (a file rewritten in place with the same
    rows for old weeks) does not, so only the weeks whose content changed are rebuilt. Which delivery a
    row came from is not part of the hash, so ``last_delivery_id`` of a week whose content did not change
    keeps naming the earlier delivery. One hash over all kinds, not one per kind: a feature run rebuilds
    every staging model of a week anyway, and the scan records one observation per changed week.
    """
    parts: dict[dt.date, list[str]] = {}
    for kind in WEEK_KEYS:
        for week, digest in _kind_week_versions(conn, kind):
            parts.setdefault(week, []).append(f"{kind}:{digest}")
    return {
        week: hashlib.sha256("|".join(sorted(texts)).encode()).hexdigest() for week, texts in parts.items()
    }


def _kind_week_versions(conn: duckdb.DuckDBPyConnection, kind: str) -> list[tuple[dt.date, str]]:
    keys, values = WEEK_KEYS[kind]
    columns = ", ".join(f"rows.{c}" for c in keys + values)
    text = " || '|' || ".join(f"coalesce(CAST({c} AS VARCHAR), '')" for c in keys + values)
    return conn.execute(
        f"""
        WITH latest AS (
            SELECT rows.week, {columns}
            FROM raw.landed_{kind} AS rows JOIN raw.landing_files AS files USING (delivery_id)
            WHERE files.status = 'active'
            QUALIFY row_number() OVER (
                PARTITION BY {", ".join(f"rows.{c}" for c in keys)} ORDER BY rows.delivery_id DESC
            ) = 1
        )
        SELECT week, sha256(string_agg({text}, chr(10) ORDER BY {text})) FROM latest GROUP BY week
        """
    ).fetchall()


def landed_markets(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Markets with KPI in an active delivery: the markets a model can be fitted for."""
    rows = conn.execute(
        "SELECT DISTINCT k.market FROM raw.landed_kpi k JOIN raw.landing_files f USING (delivery_id) "
        "WHERE f.status = 'active' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]
