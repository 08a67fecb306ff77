"""Dagster's SQLite instance storage, with one SQLAlchemy engine per database file, not one per query.

Dagster's SQLite storages build a new SQLAlchemy engine for every connection they open: for every event
a run stores, and twice for an asset event (the run's own file, then the asset index). A new engine has
an empty statement cache, so each event also compiles its INSERT again. On the case study's first
feature run (4 237 events: per-partition planned and materialization events over 208 weekly partitions),
one engine per file took the run from 96 to 69 s on a disk and from 66 to 50 s on a RAM disk (medians of
two alternating runs, ``benchmarks/bench_instance_storage.py``, 2026-12-02).

The classes below change only that: files, tables, schema, locking and NullPool (a connection per use,
closed after it) are Dagster's. They are what :func:`project_storage` puts in the instance the CLI
builds; the webserver and the daemon read the same files with Dagster's own classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import yaml
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

#: Dagster's default storage class, which :func:`project_storage` replaces (and nothing else).
_DEFAULT_STORAGE = ("dagster._core.storage.sqlite_storage", "DagsterSqliteStorage")


def _engine(engines: dict[str, Engine], conn_string: str, **kwargs: object) -> Engine:
    """The engine of ``conn_string``, made on first use; NullPool, as Dagster's: no connection is kept."""
    if conn_string not in engines:
        engines[conn_string] = create_engine(conn_string, poolclass=NullPool, **kwargs)
    return engines[conn_string]


class EngineReusingEventLogStorage(SqliteEventLogStorage):
    """Dagster's per-run-sharded SQLite event log, one engine per shard file."""

    _engines: dict[str, Engine]

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:  # Dagster's: one connection of this storage at a time in this process
            engines = self.__dict__.setdefault("_engines", {})
            engine = _engine(
                engines,
                self.conn_string_for_shard(shard),
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn


class _OneEngine:
    """``connect`` of Dagster's SQLite run and schedule storages (one database file each), on one engine."""

    _conn_string: str

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        engine = _engine(self.__dict__.setdefault("_engines", {}), self._conn_string)
        with engine.connect() as conn, conn.begin():
            yield conn


class EngineReusingRunStorage(_OneEngine, SqliteRunStorage):
    """Dagster's SQLite run storage, one engine."""


class EngineReusingScheduleStorage(_OneEngine, SqliteScheduleStorage):
    """Dagster's SQLite schedule storage (sensor cursors and ticks), one engine."""


class EngineReusingSqliteStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage (same folders and files) made of the three classes above."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        # The parent's body with these classes (its own would open Dagster's three storages first).
        self.base_dir = base_dir
        self._run_storage = EngineReusingRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = EngineReusingEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = EngineReusingScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(  # type: ignore[override]  # Dagster's signature, its own TypedDict
        cls, inst_data: ConfigurableClassData, config_value: dict[str, str]
    ) -> EngineReusingSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)


def project_storage(ref: InstanceRef) -> InstanceRef:
    """``ref`` with Dagster's default SQLite storage swapped for :class:`EngineReusingSqliteStorage` on the
    same folder; any other storage (a user's Postgres, say) is left as configured.

    The swap is in the instance reference, not in ``dagster.yaml``: the reference carries absolute paths
    into step processes and workers, while ``dagster.yaml`` stays Dagster's plain default, which the UI
    and the daemon read (and a copied project folder stays self-contained).
    """
    data = ref.storage_data
    if data is None or (data.module_name, data.class_name) != _DEFAULT_STORAGE:
        return ref
    base_dir = yaml.safe_load(data.config_yaml)["base_dir"]
    swapped = ConfigurableClassData(
        __name__,
        EngineReusingSqliteStorage.__name__,
        yaml.dump({"base_dir": base_dir}, default_flow_style=False),
    )
    return ref._replace(storage_data=swapped)
