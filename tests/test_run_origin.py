"""CLI runs are runs of the code location (the UI lists them under its jobs); partitions start at the
first week with data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import yaml
from conftest import query

from mmm_pipeline.config import ProjectConfig, load_config
from mmm_pipeline.definitions import build_definitions
from mmm_pipeline.defs.jobs import FEATURES_JOB, INGEST_JOB, WEEKLY_JOB
from mmm_pipeline.runner import project_instance, run_pipeline
from mmm_pipeline.scaffold import init_project

#: How the webserver names the location it loads from workspace.yaml or `dagster dev -m`.
LOCATION = "mmm_pipeline.definitions"


def test_cli_runs_belong_to_the_code_location(case_study: ProjectConfig) -> None:
    instance = project_instance(case_study)
    loaded = {r.run_id for r in instance.get_runs()}  # the copied project's instance knows its load
    summary = run_pipeline(case_study, instance=instance, log=lambda _m: None, until="ingest")
    assert summary.ok, summary.problems
    (run,) = [r for r in instance.get_runs() if r.run_id not in loaded]
    assert run.job_name == INGEST_JOB
    origin = run.remote_job_origin
    assert origin is not None and origin.location_name == LOCATION
    assert origin.repository_origin.repository_name == "__repository__"
    # The filters the UI's Overview and job pages use: by location tag and by repository label.
    assert instance.get_runs(dg.RunsFilter(tags={"dagster/code_location": LOCATION}))
    label = f"__repository__@{LOCATION}"
    assert instance.get_runs(dg.RunsFilter(job_name=INGEST_JOB, tags={".dagster/repository": label}))


def test_partitions_start_at_the_first_week_with_data(case_study: ProjectConfig, tmp_path: Path) -> None:
    # A calendar that accepts weeks from a year before the first delivered one.
    config = case_study.root / "mmm_pipeline.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["calendar"]["start"] = (case_study.calendar.start - dt.timedelta(weeks=52)).isoformat()
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    case_study = load_config(config)
    ((first,),) = query(case_study, "SELECT min(week) FROM marts.fct_modeling_weekly")
    assert first > case_study.calendar.start
    defs = build_definitions(case_study)
    for job in (FEATURES_JOB, WEEKLY_JOB):
        partitions = defs.resolve_job_def(job).partitions_def
        assert partitions.get_first_partition_key() == first.isoformat()
    # A week before the first one with data is no partition; the first is.
    partitions = defs.resolve_job_def(FEATURES_JOB).partitions_def
    assert not partitions.has_partition_key((first - dt.timedelta(days=7)).isoformat())
    # A warehouse locked by a writer: the week read last time, not calendar.start.
    with duckdb.connect(str(case_study.warehouse_path)):
        locked = build_definitions(case_study).resolve_job_def(FEATURES_JOB).partitions_def
        assert locked.get_first_partition_key() == first.isoformat()
    # No data yet: the calendar's start.
    empty = load_config(init_project(tmp_path / "empty", "case-study"))
    partitions = build_definitions(empty).resolve_job_def(FEATURES_JOB).partitions_def
    assert partitions.get_first_partition_key() == empty.calendar.start.isoformat()
