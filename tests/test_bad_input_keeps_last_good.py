"""Bad input through the real pipeline: clear errors, the file quarantined, the last good tables kept."""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import pytest
from conftest import modeling_table, query, run

from mmm_pipeline.definitions import build_definitions
from mmm_pipeline.defs.jobs import FEATURES_JOB
from mmm_pipeline.runner import project_instance, week_ranges
from mmm_pipeline.warehouse import transaction


def test_bad_correction_is_quarantined_and_tables_stay(case_study) -> None:
    cfg = case_study
    before = modeling_table(cfg)
    path = cfg.landing_dir / "media" / "case_study_weekly_2016-01-03.csv"
    frame = pd.read_csv(path)
    frame.loc[2, "spend"] = -100.0
    frame.to_csv(path, index=False)

    summary = run(cfg)

    assert not summary.ok
    message = "\n".join(summary.problems)
    assert "nonnegative_numeric_spend" in message
    assert "case_study_weekly_2016-01-03.csv" in message
    assert "row(s) 3" in message
    assert not path.exists()  # moved aside
    reports = list((cfg.quarantine_dir / "media").glob("*.error.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["rules"] == ["nonnegative_numeric_spend"]
    assert report["violations"][0]["rows"] == [3]
    pd.testing.assert_frame_equal(modeling_table(cfg), before)
    assert query(cfg, "SELECT count(*) FROM raw.quarantined_files") == [(1,)]
    # Nothing of the file reached the warehouse: no week's landed content changed, none is stale.
    assert week_ranges("pending", build_definitions(cfg), project_instance(cfg)) == []


def test_good_files_in_a_bad_delivery_still_load(case_study) -> None:
    cfg = case_study
    (cfg.landing_dir / "kpi" / "bad.csv").write_text("date,sales\n2018-07-29,lots\n")
    (cfg.landing_dir / "kpi" / "fix.csv").write_text("date,sales\n2016-01-03,1.5\n")
    summary = run(cfg)
    assert not summary.ok
    assert any("numeric_values" in p and "bad.csv" in p for p in summary.problems)
    table = modeling_table(cfg)
    assert table.loc[table["week"] == pd.Timestamp("2016-01-03"), "kpi"].item() == 1.5


def test_kpi_gap_fails_the_modeling_check_and_keeps_the_previous_table(case_study) -> None:
    cfg = case_study
    before = modeling_table(cfg)
    # A new version of week 2016-01-03's KPI file that holds a different week: 2016-01-03 loses its KPI.
    path = cfg.landing_dir / "kpi" / "case_study_weekly_2016-01-03.csv"
    frame = pd.read_csv(path)
    frame["date"] = "2016-01-10"
    frame.to_csv(path, index=False)

    summary = run(cfg)

    assert not summary.ok
    assert any("kpi_every_week" in p and "2016-01-03" in p for p in summary.problems)
    assert [r[2] for r in summary.runs if r[0] == FEATURES_JOB] == [False]
    pd.testing.assert_frame_equal(modeling_table(cfg), before)


def test_a_failed_transaction_leaves_the_table_as_it_was(tmp_path) -> None:
    """Every multi-statement write goes through ``warehouse.transaction``: all of it or none of it."""
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (1), (2)")
        with pytest.raises(RuntimeError), transaction(conn):
            conn.execute("DELETE FROM t")
            raise RuntimeError("fails half-way")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
        with pytest.raises(duckdb.Error), transaction(conn):
            conn.execute("INSERT INTO t VALUES (3)")
            conn.execute("INSERT INTO missing_table VALUES (4)")
        assert sorted(conn.execute("SELECT x FROM t").fetchall()) == [(1,), (2,)]
