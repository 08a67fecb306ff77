"""The real pipeline on the case-study data: historical load, new weeks, re-deliveries, corrections."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
from conftest import CASE_STUDY, LAST_WEEK, modeling_table, query, run
from dagster import AssetKey, DagsterInstance, RunsFilter

from mmm_pipeline.config import load_config
from mmm_pipeline.definitions import build_definitions
from mmm_pipeline.defs.jobs import FEATURES_JOB, INGEST_JOB
from mmm_pipeline.ingest.ingestion import LOGGED_FILES
from mmm_pipeline.runner import project_instance, run_pipeline, week_ranges


def test_historical_load_is_one_run_and_matches_the_source(loaded_case_study) -> None:
    cfg = load_config(loaded_case_study / "mmm_pipeline.yaml")
    source = pd.read_csv(CASE_STUDY).iloc[:-1]  # the last week is held back
    table = modeling_table(cfg)
    assert len(table) == 208
    assert table["week"].min() == pd.Timestamp("2014-08-03")
    assert table["week"].max() == pd.Timestamp("2018-07-22")
    assert (table["market"] == "all").all()
    assert table["kpi"].sum() == pytest.approx(source["sales"].sum())
    assert table["spend_tv"].tolist() == pytest.approx(source["mdsp_vidtr"].tolist())
    assert table["impressions_social"].sum() == pytest.approx(source["mdip_so"].sum())
    assert table["control_hldy_black_friday"].sum() == source["hldy_Black Friday"].sum()
    assert table["holiday_count"].sum() > 0
    assert query(cfg, "SELECT count(*) FROM raw.landing_files WHERE status = 'active'") == [(624,)]
    # One features run covered all 208 weeks (a single-run backfill, not 208 runs); nothing is left stale.
    instance = DagsterInstance.from_config(str(loaded_case_study / ".session_dagster_home"))
    defs = build_definitions(cfg)
    assert week_ranges("pending", defs, instance) == []
    runs = instance.get_runs(filters=RunsFilter(job_name=FEATURES_JOB))
    assert len(runs) == 1
    assert runs[0].tags["dagster/asset_partition_range_start"] == "2014-08-03"
    assert runs[0].tags["dagster/asset_partition_range_end"] == "2018-07-22"
    # The scan logged the first LOGGED_FILES accepted files one by one, then progress; every file is in
    # the asset's metadata (each log line is an event in the instance: 624 files would be 624 events).
    (scan,) = instance.get_runs(filters=RunsFilter(job_name=INGEST_JOB))
    messages = [e.user_message for e in instance.all_logs(scan.run_id)]
    assert sum("rows for weeks" in m for m in messages) == LOGGED_FILES
    assert sum("files accepted so far" in m for m in messages) == 624 // LOGGED_FILES - 1
    landed = instance.get_latest_materialization_event(AssetKey("landing_files")).asset_materialization
    assert landed.metadata["files"].value.count(": accepted") == 624


def test_new_week_reads_only_its_files_and_rebuilds_only_that_week(case_study) -> None:
    cfg = case_study
    for kind in ("media", "kpi", "controls"):
        shutil.copy(
            cfg.root / "incoming" / kind / f"case_study_weekly_{LAST_WEEK}.csv", cfg.landing_dir / kind
        )
    summary = run(cfg)
    assert summary.ok, summary.problems
    assert [r[3] for r in summary.runs if r[0] == FEATURES_JOB] == [f"{LAST_WEEK}..{LAST_WEEK}"]
    table = modeling_table(cfg)
    source = pd.read_csv(CASE_STUDY)
    assert len(table) == 209
    assert table["spend_tv"].tolist() == pytest.approx(source["mdsp_vidtr"].tolist())
    assert table["kpi"].iloc[-1] == pytest.approx(source["sales"].iloc[-1])
    # Only the three new files were read; the other 624 were recognised as unchanged.
    ingest_meta = _latest_landing_metadata(cfg)
    assert ingest_meta["accepted"] == 3
    assert ingest_meta["unchanged"] == 624


def _latest_landing_metadata(cfg) -> dict:
    event = project_instance(cfg).get_latest_materialization_event(AssetKey("landing_files"))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_redelivered_file_changes_nothing(case_study) -> None:
    cfg = case_study
    before = modeling_table(cfg)
    week_file = cfg.landing_dir / "media" / "case_study_weekly_2016-01-03.csv"
    shutil.copy(week_file, cfg.landing_dir / "media" / "resent_copy.csv")
    os.utime(week_file)  # touched: same content, new mtime
    summary = run(cfg)
    assert summary.ok, summary.problems
    assert [r[0] for r in summary.runs] == ["ingest_landing"]  # nothing to rebuild
    # The copy is a duplicate; the touched original is the same delivery (unchanged), not a new one.
    assert query(cfg, "SELECT count(*) FROM raw.landing_files WHERE status = 'duplicate'") == [(1,)]
    assert _latest_landing_metadata(cfg)["duplicates"] == 1
    pd.testing.assert_frame_equal(modeling_table(cfg), before)


def test_corrected_file_replaces_that_week_only(case_study) -> None:
    cfg = case_study
    before = modeling_table(cfg)
    path = cfg.landing_dir / "media" / "case_study_weekly_2016-01-03.csv"
    frame = pd.read_csv(path)
    frame.loc[frame["channel"] == "tv", "spend"] = 12345.0
    frame = frame[frame["channel"] != "radio"]  # the correction drops a channel: its old row must go
    frame.to_csv(path, index=False)
    summary = run(cfg)
    assert summary.ok, summary.problems
    assert [r[3] for r in summary.runs if r[0] == FEATURES_JOB] == ["2016-01-03..2016-01-03"]
    after = modeling_table(cfg)
    week = after["week"] == pd.Timestamp("2016-01-03")
    assert after.loc[week, "spend_tv"].item() == 12345.0
    assert after.loc[week, "spend_radio"].item() == 0.0  # media gap fill: zero
    pd.testing.assert_frame_equal(after.loc[~week], before.loc[~week])
    dupes = query(
        cfg,
        "SELECT count(*) FROM (SELECT market, week, channel FROM staging.stg_media "
        "GROUP BY ALL HAVING count(*) > 1)",
    )
    assert dupes == [(0,)]
    assert query(cfg, "SELECT count(*) FROM raw.landing_files WHERE status = 'superseded'") == [(1,)]


def test_later_delivery_wins_for_the_same_key(case_study) -> None:
    cfg = case_study
    (cfg.landing_dir / "media" / "tv_restatement.csv").write_text(
        "date,channel,spend\n2016-01-03,TV_alias_unknown,1\n"
    )
    summary = run(cfg)
    assert not summary.ok  # unknown channel label: quarantined
    (cfg.landing_dir / "media" / "tv_restatement.csv").write_text(
        "date,channel,spend\n2016-01-03,mdsp_vidtr,777\n"
    )
    summary = run(cfg)
    assert summary.ok, summary.problems
    table = modeling_table(cfg)
    assert table.loc[table["week"] == pd.Timestamp("2016-01-03"), "spend_tv"].item() == 777.0


def test_select_runs_only_the_chosen_assets(case_study) -> None:
    cfg = case_study
    summary = run_pipeline(cfg, weeks="all", select="group:marts", instance=project_instance(cfg), log=print)
    assert summary.ok, summary.problems
    assert [r[0] for r in summary.runs] == [FEATURES_JOB]
    run_id = summary.runs[0][1]
    materialized = {
        e.dagster_event.asset_key.to_user_string()
        for e in project_instance(cfg).all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
    }
    marts = {"dim_channel", "fct_media_weekly", "fct_modeling_weekly", "fct_landing_deliveries"}
    assert materialized == marts
