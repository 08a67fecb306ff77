"""Incremental, idempotent registration of landing files in the warehouse.

Each scan reads only files that are new or changed since the last scan (by path, size and mtime; then
by content hash), so a new week's file costs one file read, not a re-read of history:

- identical content delivered again (any name) is recorded as a duplicate and changes nothing;
- a new version of a file at the same path supersedes the old version's rows;
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

from .calendar import last_complete_week
from .config import ProjectConfig
from .landing import LandingFileError, discover, sha256_of, validate_landing_file
from .model.calibration import LIFT_TEST_COLUMNS
from .warehouse import transaction

LANDED_COLUMNS = {
    "media": ["delivery_id", "row_number", "date", "week", "market", "channel", "spend", "impressions"],
    "kpi": ["delivery_id", "row_number", "date", "week", "market", "kpi"],
    "controls": ["delivery_id", "row_number", "date", "week", "market", "control", "value", "label"],
    "lift_tests": ["delivery_id", "row_number", "week", *LIFT_TEST_COLUMNS],
}


@dataclass
class ScanResult:
    """What one scan of the landing folder did."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    rejected: list[LandingFileError] = field(default_factory=list)
    unchanged: int = 0
    rows_loaded: int = 0
    weeks_queued: int = 0

    def summary(self) -> str:
        return (
            f"{len(self.accepted)} accepted ({self.rows_loaded} rows, {self.weeks_queued} week(s) queued), "
            f"{len(self.duplicates)} duplicate, {len(self.superseded)} superseded, "
            f"{len(self.rejected)} rejected, {self.unchanged} unchanged"
        )


def scan_landing(
    conn: duckdb.DuckDBPyConnection, cfg: ProjectConfig, log: logging.Logger | None = None
) -> ScanResult:
    """Register every new or changed landing file; quarantine the ones that break a rule."""
    log = log or logging.getLogger(__name__)
    landing = cfg.landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    seen = {
        path: (size, mtime)
        for path, size, mtime in conn.execute(
            "SELECT path, size, mtime_ns FROM raw.landing_files "
            "QUALIFY row_number() OVER (PARTITION BY path ORDER BY delivery_id DESC) = 1"
        ).fetchall()
    }
    result = ScanResult()
    for kind, path in discover(landing):
        rel = path.relative_to(landing).as_posix()
        stat = path.stat()
        if seen.get(rel) == (stat.st_size, stat.st_mtime_ns):
            result.unchanged += 1
            continue
        sha = sha256_of(path)
        twin = conn.execute(
            "SELECT path FROM raw.landing_files WHERE sha256 = ? AND kind = ? AND status = 'active' LIMIT 1",
            [sha, kind],
        ).fetchone()
        if twin:
            _record(conn, kind, rel, sha, stat, "duplicate", note=f"same content as {twin[0]}")
            result.duplicates.append(rel)
            log.info(f"{rel}: same content as {twin[0]} - nothing to do")
            continue
        try:
            rows = validate_landing_file(kind, path, cfg)
        except LandingFileError as error:
            _quarantine(conn, cfg, kind, path, rel, sha, error)
            result.rejected.append(error)
            log.error(str(error))
            continue
        _accept(conn, kind, rel, sha, stat, rows, result)
        log.info(
            f"{rel}: {len(rows)} rows for weeks {rows['week'].min():%Y-%m-%d}..{rows['week'].max():%Y-%m-%d}"
        )
    return result


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
        delivery_id = _record(conn, kind, rel, sha, stat, "active", rows=rows)
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
    cfg: ProjectConfig,
    kind: str,
    path: Path,
    rel: str,
    sha: str,
    error: LandingFileError,
) -> None:
    """Move a rejected file out of the landing folder, with its error report beside it."""
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
    target = cfg.quarantine_dir / kind / f"{stamp}__{path.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), target)
    report = {**error.report(), "file": rel, "sha256": sha, "moved_to": str(target)}
    target.with_name(target.name + ".error.json").write_text(json.dumps(report, indent=2, default=str))
    conn.execute(
        "INSERT INTO raw.quarantined_files VALUES (?, ?, ?, now()::TIMESTAMP, ?, ?, ?)",
        [rel, kind, sha, str(target), ",".join(error.rules), str(error)],
    )


def pending_week_ranges(conn: duckdb.DuckDBPyConnection, cfg: ProjectConfig) -> list[tuple[dt.date, dt.date]]:
    """Queued weeks as contiguous (first, last) ranges, limited to complete weeks.

    Each range is one run of the weekly-partitioned models (a single-run backfill), so the historical
    load is one run and a corrected old week plus a new week are two small runs.
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
