"""Publishing for BI: versioned Parquet snapshots behind one read-only catalog, switched all at once.

DuckDB allows one read-write process or many read-only ones on a file, never both, so BI tools never
open the working warehouse, and the pipeline can never open the catalog BI holds to re-point its views
(a read-only reader's lock blocks every writer). Instead each publish builds a complete, immutable
snapshot and switches to it with one rename:

1. every relation it publishes is exported to ``<publish>/.staging-<id>/<name>.parquet``; the relations
   it does not publish (other publishing assets own them) are hard-linked from the current snapshot;
2. the folder is renamed to ``<publish>/v<NNNNNN>`` (complete or absent);
3. the snapshot's own catalog ``v<NNNNNN>/catalog.duckdb`` is written: one view per relation over that
   folder's files, and ``published_tables`` naming the relations and the version;
4. that catalog is hard-linked over ``bi.duckdb`` by :func:`os.replace`: the one atomic switch.

A DuckDB connection reads the catalog file it opened, so it sees one snapshot from its first query to
its last, never a mix of two publishes; a new connection (in a process holding none) sees the newest.

A publish first removes what an interrupted one left (staging folders, temporary catalogs, version
folders that were never switched to), and afterwards deletes old versions: it keeps the newest
:data:`KEEP_VERSIONS`, and an older one only while some reader still holds its catalog open (DuckDB's
own file lock tells). Publishers run under the warehouse writer lock, so two never interleave.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

import duckdb

from mmm_pipeline.warehouse import quote_ident

CATALOG_TABLE = "published_tables"
#: Each snapshot folder's own catalog; ``bi.duckdb`` is a hard link to the current one.
CATALOG_FILE = "catalog.duckdb"
#: Snapshot versions kept however unused (the current one included); older ones go once no reader holds them.
KEEP_VERSIONS = 3

_VERSION = re.compile(r"^v(\d{6,})$")
_STAGING = ".staging-"


def publish(
    conn: duckdb.DuckDBPyConnection,
    relations: Mapping[str, str],
    publish_dir: Path,
    bi_database: Path,
    keep: int = KEEP_VERSIONS,
) -> dict[str, int]:
    """Publish ``relations`` (BI name -> warehouse relation) as a new snapshot and switch BI to it.

    Relations published earlier and not named here are carried over unchanged. Returns the row count
    of each relation exported. If anything fails before the switch, BI keeps the previous snapshot
    and nothing of this attempt remains; call it with the warehouse writer lock held.
    """
    publish_dir.mkdir(parents=True, exist_ok=True)
    bi_database.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(publish_dir, bi_database)
    carried = current_files(publish_dir, bi_database)
    staging = publish_dir / f"{_STAGING}{uuid.uuid4().hex}"
    staging.mkdir()
    counts: dict[str, int] = {}
    try:
        for name, relation in relations.items():
            target = staging / f"{name}.parquet"
            conn.execute(f"COPY (SELECT * FROM {relation}) TO {_sql_string(target)} (FORMAT parquet)")
            sql = f"SELECT count(*) FROM read_parquet({_sql_string(target)})"
            (counts[name],) = conn.execute(sql).fetchone()
        for name, path in carried.items():
            if name not in relations:
                _link_or_copy(path, staging / path.name)
        version = publish_dir / f"v{_next_sequence(publish_dir):06d}"
        os.rename(staging, version)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    _switch_catalog(version, bi_database)
    collect_garbage(publish_dir, version, keep)
    return counts


def current_version(publish_dir: Path, bi_database: Path) -> Path | None:
    """The snapshot folder ``bi.duckdb`` serves, per its ``published_tables``; without a readable
    versioned catalog, the newest complete snapshot folder; None before the first (or in a project
    published before snapshots were versioned)."""
    try:
        with duckdb.connect(str(bi_database), read_only=True) as bi:
            row = bi.execute(f"SELECT max(version) FROM {CATALOG_TABLE}").fetchone()
        folder = publish_dir / row[0]
        if folder.is_dir():
            return folder
    except (duckdb.Error, TypeError):  # no catalog, or the unversioned layout's (no version column)
        pass
    if not publish_dir.is_dir():
        return None
    complete = [p for p in publish_dir.iterdir() if _sequence(p) is not None and (p / CATALOG_FILE).exists()]
    return max(complete, key=_sequence, default=None)


def current_files(publish_dir: Path, bi_database: Path) -> dict[str, Path]:
    """Every currently published snapshot file, by relation name (carried into the next version).

    A project published before snapshots were versioned has its files directly in ``publish_dir``.
    """
    folder = current_version(publish_dir, bi_database) or publish_dir
    return {p.stem: p for p in sorted(folder.glob("*.parquet"))}


def clean_leftovers(publish_dir: Path, bi_database: Path) -> list[Path]:
    """Remove what an interrupted publish left: staging folders, temporary files, and version folders
    that were never switched to (no catalog yet, or newer than the current one). Returns what went."""
    current = current_version(publish_dir, bi_database)
    gone: list[Path] = []
    for path in publish_dir.iterdir() if publish_dir.is_dir() else []:
        sequence = _sequence(path)
        never_switched = (
            sequence is not None
            and path != current
            and (current is None or sequence > _sequence(current) or not (path / CATALOG_FILE).exists())
        )
        if path.name.startswith(_STAGING) or ".tmp-" in path.name or never_switched:
            _remove(path)
            gone.append(path)
    for path in bi_database.parent.glob(f".{bi_database.name}.tmp-*"):
        _remove(path)
        gone.append(path)
    return gone


def collect_garbage(publish_dir: Path, current: Path, keep: int = KEEP_VERSIONS) -> list[Path]:
    """Delete superseded versions beyond the newest ``keep`` that no reader holds open, and the files
    of the unversioned layout. Returns what was deleted."""
    older = sorted(
        (p for p in publish_dir.iterdir() if _sequence(p) is not None and _sequence(p) < _sequence(current)),
        key=_sequence,
    )
    gone: list[Path] = []
    for folder in older[: max(len(older) - (keep - 1), 0)]:
        if not _held_by_a_reader(folder / CATALOG_FILE):
            shutil.rmtree(folder)
            gone.append(folder)
    for path in publish_dir.glob("*.parquet"):  # the unversioned layout, now inside the versions
        path.unlink()
        gone.append(path)
    return gone


def _switch_catalog(version: Path, bi_database: Path) -> None:
    """Write the version's catalog, then make ``bi.duckdb`` that catalog with one atomic rename."""
    catalog = version / CATALOG_FILE
    tmp = _atomic_path(catalog)
    try:
        with duckdb.connect(str(tmp)) as bi:
            bi.begin()  # one transaction: every relation gets the same published_at
            bi.execute(
                f"CREATE TABLE {CATALOG_TABLE} "
                "(name VARCHAR, snapshot VARCHAR, version VARCHAR, published_at TIMESTAMP)"
            )
            for path in sorted(version.glob("*.parquet")):
                bi.execute(
                    f"CREATE VIEW {quote_ident(path.stem)} AS "
                    f"SELECT * FROM read_parquet({_sql_string(path.resolve())})"
                )
                bi.execute(
                    f"INSERT INTO {CATALOG_TABLE} VALUES (?, ?, ?, now()::TIMESTAMP)",
                    [path.stem, str(path.resolve()), version.name],
                )
            bi.commit()
        os.replace(tmp, catalog)
        link = _atomic_path(bi_database)
        _link_or_copy(catalog, link)
        os.replace(link, bi_database)
    finally:
        for leftover in (tmp, Path(f"{tmp}.wal")):
            leftover.unlink(missing_ok=True)


def _held_by_a_reader(catalog: Path) -> bool:
    """Whether a connection holds ``catalog`` open: its read lock blocks a read-write open.

    (A connection of this very process to the same file under another name is not seen: POSIX locks
    do not conflict within a process; the pipeline holds none while publishing.)
    """
    if not catalog.exists():
        return False
    try:
        duckdb.connect(str(catalog)).close()
    except duckdb.Error:
        return True
    return False


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link (no copy of the bytes; the file is immutable), or copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _sequence(path: Path) -> int | None:
    match = _VERSION.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def _next_sequence(publish_dir: Path) -> int:
    return max((s for p in publish_dir.iterdir() if (s := _sequence(p)) is not None), default=0) + 1


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _atomic_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")


def _sql_string(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"
