"""The CLI's Dagster instance: Dagster's SQLite files, written through one engine per file, read back by
Dagster's own classes (as the webserver and the daemon read them)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

from mmm_pipeline.config import load_config
from mmm_pipeline.defs.storage import (
    EngineReusingEventLogStorage,
    EngineReusingRunStorage,
    EngineReusingScheduleStorage,
    project_storage,
)
from mmm_pipeline.runner import project_instance, run_pipeline
from mmm_pipeline.scaffold import init_project
from mmm_testkit.synthetic import generate_world, write_world


def test_cli_instance_writes_what_dagsters_own_classes_read(tmp_path: Path, dagster_home: Path) -> None:
    cfg = load_config(init_project(tmp_path / "proj", "case-study"))
    instance = project_instance(cfg)
    assert isinstance(instance.event_log_storage, EngineReusingEventLogStorage)
    assert isinstance(instance.run_storage, EngineReusingRunStorage)
    assert isinstance(instance.schedule_storage, EngineReusingScheduleStorage)
    # Step processes and workers rebuild the instance from its reference: they get the same classes.
    assert instance.get_ref().storage_data.class_name == "EngineReusingSqliteStorage"
    assert isinstance(
        DagsterInstance.from_ref(instance.get_ref()).event_log_storage, EngineReusingEventLogStorage
    )
    # dagster.yaml stays Dagster's default storage, which the UI reads.
    assert "storage" not in (dagster_home / "dagster.yaml").read_text().split("run_monitoring")[0]

    summary = run_pipeline(cfg, instance=instance, log=lambda _m: None, until="ingest")
    assert summary.ok, summary.problems
    plain = DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
    assert type(plain.event_log_storage).__name__ == "SqliteEventLogStorage"
    (run_id,) = [r[1] for r in summary.runs]
    assert plain.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
    written = [e.dagster_event_type for e in instance.all_logs(run_id)]
    assert [e.dagster_event_type for e in plain.all_logs(run_id)] == written
    assert dg.DagsterEventType.ASSET_MATERIALIZATION in written
    # The asset index (another shard of the event log) too: the UI's asset pages read it.
    landed = dg.AssetKey("landing_files")
    assert plain.get_latest_materialization_event(landed).run_id == run_id


def test_a_storage_the_user_configured_is_left_alone(tmp_path: Path) -> None:
    """Only Dagster's default SQLite storage is swapped; legacy per-storage settings (or Postgres) stay."""
    home = tmp_path / "home"
    home.mkdir()
    history = home / "history"
    (home / "dagster.yaml").write_text(
        "run_storage:\n  module: dagster._core.storage.runs\n  class: SqliteRunStorage\n"
        f"  config:\n    base_dir: {history}\n"
    )
    ref = InstanceRef.from_dir(str(home))
    assert ref.storage_data.class_name == "CompositeStorage"
    assert project_storage(ref) == ref
    default = InstanceRef.from_dir(str(tmp_path))
    swapped = project_storage(default)
    assert swapped.storage_data.class_name == "EngineReusingSqliteStorage"
    assert swapped._replace(storage_data=default.storage_data) == default


def test_event_batches_are_stored_whole_and_dagsters_classes_read_them(tmp_path: Path) -> None:
    """A feature run over 30 weekly partitions: Dagster hands the storage its planned events and each
    partitioned step's materializations as batches, which go in one transaction per file; Dagster's own
    classes read back every event and every partition's materialization, as one by one."""
    cfg = load_config(init_project(tmp_path / "proj", "synthetic"))
    world = generate_world(seed=2, n_weeks=30, start=cfg.calendar.start)
    write_world(world, cfg.landing_dir, tmp_path / "truth")
    instance = project_instance(cfg)
    assert int(os.environ["DAGSTER_EVENT_BATCH_SIZE"]) > 1  # set by the project's storage
    stored: list[int] = []
    batch = instance.event_log_storage.store_event_batch

    def counted(events: list) -> None:
        stored.append(len(events))
        batch(events)

    instance.event_log_storage.store_event_batch = counted  # the real method, its calls counted
    summary = run_pipeline(cfg, instance=instance, log=lambda _m: None, until="features")
    assert summary.ok, summary.problems
    assert stored and max(stored) >= 30  # a batch per partitioned step at least
    plain = DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
    weeks = {d.date().isoformat() for d in world.dates}
    for run_id in [r[1] for r in summary.runs]:
        written = [(e.dagster_event_type, e.message) for e in instance.all_logs(run_id)]
        assert [(e.dagster_event_type, e.message) for e in plain.all_logs(run_id)] == written
    for asset in ("stg_media", "stg_kpi"):
        assert plain.get_materialized_partitions(dg.AssetKey(asset)) >= weeks, asset
