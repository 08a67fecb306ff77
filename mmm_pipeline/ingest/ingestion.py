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

The weeks each accepted delivery touches are queued in ``raw.pending_weeks``; the weekly-partitioned
staging models rebuild exactly those weeks and clear them. A lift test touches the week it ended in.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from mmm_pipeline.ingest.calendar import last_complete_week
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
    weeks_queued: int = 0
    files: list[tuple[str, str]] = field(default_factory=list)
    """Every entry the scan saw, in order, with what became of it (``accepted``, ``duplicate``...)."""

    def summary(self) -> str:
        warned = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return (
            f"{len(self.accepted)} accepted ({self.rows_loaded} rows, {self.weeks_queued} week(s) queued), "
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
    for kind, path in discover(landing):
        rel = path.relative_to(landing).as_posix()
        stat = path.stat() if path.is_file() else path.lstat()
        known = last.get(rel)
        if known and known[2:] == (stat.st_size, stat.st_mtime_ns):
            result.unchanged += 1
            result.files.append((rel, "unchanged"))
            continue
        sha = sha256_of(path, landing)
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
        log.info(
            f"{rel}: {len(rows)} rows for weeks {rows['week'].min():%Y-%m-%d}..{rows['week'].max():%Y-%m-%d}"
        )
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
    """Load one valid delivery in a single transaction: its rows, its manifest entry, its weeks."""
    with transaction(conn):
        previous = conn.execute(
            "SELECT delivery_id FROM raw.landing_files WHERE path = ? AND status = 'active'", [rel]
        ).fetchall()
        affected = set(rows["week"].dt.date)
        for (old_id,) in previous:
            affected |= {
                w
                for (w,) in conn.execute(
                    f"SELECT DISTINCT week FROM raw.landed_{kind} WHERE delivery_id = ?", [old_id]
                ).fetchall()
            }
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
        weeks = pd.DataFrame({"kind": kind, "week": sorted(affected)})
        conn.register("week_frame", weeks)
        conn.execute("INSERT OR IGNORE INTO raw.pending_weeks SELECT kind, week FROM week_frame")
        conn.unregister("week_frame")
    if previous:
        result.superseded.append(rel)
    result.accepted.append(rel)
    result.rows_loaded += len(rows)
    result.weeks_queued += len(affected)


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


def pending_week_ranges(conn: duckdb.DuckDBPyConnection, cfg: InputContract) -> list[tuple[dt.date, dt.date]]:
    """Queued weeks as contiguous (first, last) ranges, limited to complete weeks.

    Each range is one run of the weekly-partitioned models (a single-run backfill), so the historical
    load is one run and a corrected old week plus a new week are two small runs.

    Not yet Dagster's decision (issue 16 moved the model side only; defs/staleness.py): Dagster's
    partitions can express this (a weekly-partitioned landing asset whose data version per week is the
    hash of that week's active rows, the staging models depending on it week by week, the stale weekly
    partitions grouped into ranges), but that is a rewrite of the landing scan, the follow-up sensor and
    the feature runs that this change did not make. Until then the weeks travel through this queue and
    the ``landing_files`` materialization's metadata.
    """
    last = last_complete_week(cfg.today(), cfg.calendar.week_start_index)
    weeks = [
        w
        for (w,) in conn.execute(
            "SELECT DISTINCT week FROM raw.pending_weeks WHERE week >= ? AND week <= ? ORDER BY week",
            [cfg.calendar.start, last],
        ).fetchall()
    ]
    ranges: list[tuple[dt.date, dt.date]] = []
    for week in weeks:
        if ranges and week - ranges[-1][1] == dt.timedelta(days=7):
            ranges[-1] = (ranges[-1][0], week)
        else:
            ranges.append((week, week))
    return ranges


def landed_markets(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Markets with KPI in an active delivery: the markets a model can be fitted for."""
    rows = conn.execute(
        "SELECT DISTINCT k.market FROM raw.landed_kpi k JOIN raw.landing_files f USING (delivery_id) "
        "WHERE f.status = 'active' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]
