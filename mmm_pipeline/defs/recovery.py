"""Runs whose process died: find them, mark them failed, free their pool slots, say what they left undone.

A run killed with SIGKILL (or a machine that lost power) never writes its failure: Dagster keeps it
STARTED and, worse, keeps the ``duckdb_writer`` pool slot its running step had claimed, so every later
run waits for that slot forever. Dagster's own run monitoring cannot help here: it asks the run launcher
whether the worker lives, and neither the default launcher nor in-process (CLI) runs can answer. So the
check is ours: every run records the process that executes it (the CLI tags its runs with pid and host;
a run launched from the UI or by the daemon logs its worker's pid in its first engine event), and a run
in progress whose process is gone on this host is dead. The CLI checks at start-up
(:func:`recover_dead_runs`); the daemon runs the same check in :func:`build_recovery_sensor`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

PID_TAG = "mmm_pipeline/pid"
HOST_TAG = "mmm_pipeline/host"
#: Set on a run that redoes what a dead run left undone: the dead run's id.
REDO_OF_TAG = "mmm_pipeline/redo_of"

#: Run statuses in which a run has (or will have) a live process.
_RUNNING = [
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
_PARTITION_TAGS = (
    "dagster/partition",
    "dagster/asset_partition_range_start",
    "dagster/asset_partition_range_end",
)


def process_tags() -> dict[str, str]:
    """Tags naming this process, for the runs it executes in-process."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


@dataclass(frozen=True)
class Redo:
    """What a dead run had planned and not materialized, to run again in a new run."""

    run_id: str
    job_name: str
    asset_keys: tuple[dg.AssetKey, ...]
    partition_tags: dict[str, str]

    @property
    def partition_key(self) -> str | None:
        return self.partition_tags.get("dagster/partition")

    @property
    def range_tags(self) -> dict[str, str]:
        return {k: v for k, v in self.partition_tags.items() if k != "dagster/partition"}

    def describe(self) -> str:
        scope = self.partition_key or "..".join(self.range_tags.values()) or "unpartitioned"
        keys = ", ".join(k.to_user_string() for k in self.asset_keys)
        return f"{self.job_name} ({scope}): {keys}"


@dataclass
class Recovery:
    """What :func:`recover_dead_runs` found and did."""

    failed: list[str] = field(default_factory=list)  # ids of dead runs marked failed
    freed: list[str] = field(default_factory=list)  # ids of runs whose pool slots were freed
    redo: list[Redo] = field(default_factory=list)
    #: Runs in progress whose process lives (or cannot be checked from here) and that hold or wait
    #: for a pool slot (the warehouse writer's): (run id, job, where it runs).
    live_holders: list[tuple[str, str, str]] = field(default_factory=list)


def run_process(instance: DagsterInstance, run: dg.DagsterRun) -> tuple[str | None, int] | None:
    """(host, pid) of the process executing ``run``; host None means this instance's host (a worker
    the run launcher started); None if the run has not said yet."""
    if PID_TAG in run.tags:
        return run.tags.get(HOST_TAG), int(run.tags[PID_TAG])
    for record in instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=20
    ).records:
        event = record.event_log_entry.dagster_event
        metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
        if "pid" in metadata:
            return None, int(metadata["pid"].value)
    return None


def process_alive(host: str | None, pid: int) -> bool | None:
    """Whether the process lives; None if it runs on another host (cannot be checked from here)."""
    if host is not None and host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _where(host: str | None, pid: int) -> str:
    return f"pid {pid}" + (f" on {host}" if host else "")


def unfinished_assets(instance: DagsterInstance, run: dg.DagsterRun, planned: Sequence[dg.AssetKey]) -> Redo:
    """The assets ``run`` planned (``planned`` when it ran its whole job) that it never materialized."""
    if run.asset_selection:
        planned = sorted(run.asset_selection)
    done = {
        record.event_log_entry.dagster_event.asset_key
        for record in instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=100_000
        ).records
        if record.event_log_entry.dagster_event
    }
    return Redo(
        run_id=run.run_id,
        job_name=run.job_name,
        asset_keys=tuple(k for k in planned if k not in done),
        partition_tags={k: run.tags[k] for k in _PARTITION_TAGS if k in run.tags},
    )


def recover_dead_runs(
    instance: DagsterInstance,
    job_assets: Callable[[str], Sequence[dg.AssetKey]],
    log: Callable[[str], None] = print,
    own_pid: int | None = None,
) -> Recovery:
    """Mark runs whose process died failed, free the pool slots they (or finished runs) still hold.

    ``job_assets`` gives a job's assets (for a dead run that ran its whole job). Runs of this process
    (``own_pid``, default this one) are never touched. Everything done is logged through ``log``.
    """
    own_pid = os.getpid() if own_pid is None else own_pid
    recovery = Recovery()
    for record in instance.get_run_records(filters=RunsFilter(statuses=_RUNNING)):
        run = record.dagster_run
        process = run_process(instance, run)
        if process is None or process == (socket.gethostname(), own_pid) or process == (None, own_pid):
            continue
        if process_alive(*process) is not False:
            continue
        message = (
            f"The process that ran this run ({_where(*process)}) is gone: it was killed or crashed. "
            "Marked failed by mmm-pipeline, which frees its pool slots and redoes what it left undone."
        )
        instance.report_run_failed(run, message)
        recovery.failed.append(run.run_id)
        try:
            planned = job_assets(run.job_name)
        except Exception:  # a job this code location no longer has: nothing to redo
            planned = []
        redo = unfinished_assets(instance, run, planned)
        if redo.asset_keys:
            recovery.redo.append(redo)
        log(
            f"run {run.run_id[:8]} ({run.job_name}) died with its process ({_where(*process)}): marked failed"
        )

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return recovery
    holders = set(storage.get_concurrency_run_ids())
    for pool in storage.get_concurrency_keys():
        holders |= {slot.run_id for slot in storage.get_concurrency_info(pool).claimed_slots}
    for run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
            recovery.freed.append(run_id)
            log(f"run {run_id[:8]} has ended but still held pool slots: freed them")
        else:
            process = run_process(instance, run)
            if process is None or process[1] != own_pid:
                where = _where(*process) if process else "its process not known yet"
                recovery.live_holders.append((run_id, run.job_name, where))
    return recovery
