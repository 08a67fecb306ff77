"""Dagster's SQLite instance storage, with one SQLAlchemy engine per database file, not one per query.

Dagster's SQLite storages build a new SQLAlchemy engine for every connection they open: for every event
a run stores, and twice for an asset event (the run's own file, then the asset index). A new engine has
an empty statement cache, so each event also compiles its INSERT again. On the case study's first
feature run (4 237 events: per-partition planned and materialization events over 208 weekly partitions),
one engine per file took the run from 96 to 69 s on a disk and from 66 to 50 s on a RAM disk (medians of
two alternating runs, ``benchmarks/bench_instance_storage.py``, 2026-12-02).

The event log also writes a batch of events in one transaction per file. Dagster hands a storage
batches when ``DAGSTER_EVENT_BATCH_SIZE`` is set (the planned events a run logs at its start, one per
asset and partition, and the materializations of a partitioned step), but its SQLite storage then stores
them one by one, a connection and a commit each. This storage sets the variable (unless it is set) and
stores a batch through one connection and one transaction per file: the same run took 40.7 s on a disk
and 39.1 s on a RAM disk, against 74.7 and 53.1 s with batches off and 92.9 and 57.9 s with Dagster's
classes (medians of two alternating runs, ``benchmarks/bench_instance_storage.py``, 2026-12-02 09:00).

The classes below change only that: files, tables, schema, the rows written, locking and NullPool (a
connection per use, closed after it) are Dagster's. They are what :func:`project_storage` puts in the
instance the CLI builds; the webserver and the daemon read the same files with Dagster's own classes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import yaml
from dagster._core.events.log import EventLogEntry
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


#: Events Dagster hands the event log at once (``DAGSTER_EVENT_BATCH_SIZE``, which Dagster reads per
#: event): a run's planned events and a partitioned step's materializations, about 20 per weekly
#: partition on the case study. A batch holds the asset index's write lock while it is stored, so it is
#: kept to a few hundred events (a fraction of a second).
EVENT_BATCH_SIZE = 500


class EngineReusingEventLogStorage(SqliteEventLogStorage):
    """Dagster's per-run-sharded SQLite event log, one engine per shard file, a batch of events in one
    transaction per shard."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._engines: dict[str, Engine] = {}
        self._batch = threading.local()  # this thread's open batch: shard -> (connection, transaction)
        self._known_tables: set[str] = set()
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))
        super().__init__(*args, **kwargs)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        batch = getattr(self._batch, "connections", None)
        if batch is not None:  # inside store_event_batch: this thread holds the lock and the transactions
            if shard not in batch:
                conn = self._shard_engine(shard).connect()
                batch[shard] = (conn, conn.begin())
            yield batch[shard][0]
            return
        with self._db_lock, self._shard_engine(shard).connect() as conn, conn.begin():
            yield conn  # Dagster's lock: one connection of this storage at a time in this process

    def _shard_engine(self, shard: str) -> Engine:
        """The shard's engine, its tables created on first use (the caller holds ``_db_lock``)."""
        timeout = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        engine = _engine(self._engines, self.conn_string_for_shard(shard), connect_args=timeout)
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        return engine

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Dagster's ``store_event`` for each event, through one connection and one transaction per shard
        file: all of the batch is stored or none of it (Dagster then stores the events one by one)."""
        with self._db_lock:
            batch = self._batch.connections = {}
            try:
                for event in events:
                    self.store_event(event)
                for _conn, transaction in batch.values():
                    transaction.commit()
            finally:
                self._batch.connections = None
                for conn, transaction in batch.values():
                    if transaction.is_active:
                        transaction.rollback()
                    conn.close()

    def has_table(self, table_name: str) -> bool:
        """Dagster asks for every asset event whether the index has a table; a table, once there, stays."""
        if table_name not in self._known_tables and super().has_table(table_name):
            self._known_tables.add(table_name)
        return table_name in self._known_tables


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
