"""Which weeks a run rebuilds is Dagster's answer: the stale weekly partitions, not a queue.

Each landing scan observes ``landed_weeks`` with one content hash per week as data version; the
weekly staging models depend on them week by week. A corrected value makes exactly its week stale, in
the resolver the UI uses and in what ``mmm-pipeline run`` rebuilds; content delivered again (even as a
new version of a file) makes nothing stale. Market conditions and gate settings reach the model job
through Dagster too: a condition that starts to hold makes only the recommendation (and what reads
it) stale, a gate change only the registration; neither refits.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml
from conftest import modeling_table
from dagster._core.definitions.data_version import StaleStatus

from mmm_pipeline.config import load_config
from mmm_pipeline.definitions import build_definitions
from mmm_pipeline.defs.assets.ingestion import NO_ROWS, changed_weeks
from mmm_pipeline.defs.jobs import FEATURES_JOB, MODEL_JOB
from mmm_pipeline.defs.staleness import WeekRange, model_plans, stale_resolver
from mmm_pipeline.ingest.ingestion import week_versions
from mmm_pipeline.runner import project_instance, run_job, run_pipeline, week_ranges
from mmm_pipeline.tables import RAW_DDL

WEEK = "2016-01-03"
STG_MEDIA, STG_KPI = dg.AssetKey("stg_media"), dg.AssetKey("stg_kpi")


def _warehouse(rows: list[tuple]) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse with ``rows`` as media deliveries: (delivery_id, status, date, spend)."""
    conn = duckdb.connect()
    conn.execute(RAW_DDL)
    for delivery_id in sorted({r[0] for r in rows}):
        status = next(r[1] for r in rows if r[0] == delivery_id)
        conn.execute(
            "INSERT INTO raw.landing_files VALUES (?, 'media', ?, ?, 1, 1, now(), ?, 1, NULL, NULL, NULL)",
            [delivery_id, f"media/{delivery_id}.csv", f"sha{delivery_id}", status],
        )
    for i, (delivery_id, _, date, spend) in enumerate(rows):
        week = date - dt.timedelta(days=date.weekday())
        conn.execute(
            "INSERT INTO raw.landed_media VALUES (?, ?, ?, ?, 'all', 'tv', ?, 1.0)",
            [delivery_id, i, date, week, spend],
        )
    return conn


def test_a_week_hash_changes_with_its_content_only() -> None:
    monday, next_monday = dt.date(2024, 1, 1), dt.date(2024, 1, 8)
    first = week_versions(_warehouse([(1, "active", monday, 10.0), (1, "active", next_monday, 20.0)]))
    # A later delivery correcting the first week: only that week's hash moves.
    corrected = week_versions(
        _warehouse(
            [(1, "active", monday, 10.0), (1, "active", next_monday, 20.0), (2, "active", monday, 11.0)]
        )
    )
    assert corrected[next_monday] == first[next_monday] and corrected[monday] != first[monday]
    # The same rows delivered again (a new version of the file, the old one superseded): nothing moves.
    restated = week_versions(
        _warehouse([(1, "superseded", monday, 10.0), (1, "superseded", next_monday, 20.0),
                    (2, "active", monday, 10.0), (2, "active", next_monday, 20.0)]),
    )  # fmt: skip
    assert restated == first
    # What gets observed: changed and new weeks, a week whose rows all went, never an unchanged week.
    observed = {monday.isoformat(): first[monday], next_monday.isoformat(): first[next_monday]}
    assert changed_weeks(corrected, observed, monday, next_monday) == {monday.isoformat(): corrected[monday]}
    assert changed_weeks(restated, observed, monday, next_monday) == {}
    assert changed_weeks({monday: first[monday]}, observed, monday, next_monday) == {
        next_monday.isoformat(): NO_ROWS
    }


def _ingest(cfg) -> None:  # noqa: ANN001 - a ProjectConfig
    summary = run_pipeline(cfg, instance=project_instance(cfg), log=lambda _m: None, until="ingest")
    assert summary.ok, summary.problems


def _features(cfg) -> list[str]:  # noqa: ANN001 - a ProjectConfig
    """A real ``run`` up to the feature tables; the week ranges its feature runs covered."""
    summary = run_pipeline(cfg, instance=project_instance(cfg), log=lambda _m: None, until="features")
    assert summary.ok, summary.problems
    return [scope for job, _, _, scope in summary.runs if job == FEATURES_JOB]


def test_a_corrected_old_week_is_the_only_stale_week_and_the_only_one_rebuilt(case_study) -> None:
    cfg = case_study
    before = modeling_table(cfg)
    media = pd.read_csv(cfg.landing_dir / "media" / f"case_study_weekly_{WEEK}.csv")
    correction = media[media["channel"] == "tv"].assign(spend=lambda f: f["spend"] * 1.1)
    correction.to_csv(cfg.landing_dir / "media" / f"tv_correction_{WEEK}.csv", index=False)
    _ingest(cfg)
    # Dagster's own answer (the resolver behind the UI's partition status) and the runner's agree.
    defs, instance = build_definitions(cfg), project_instance(cfg)
    resolver = stale_resolver(instance, defs.resolve_asset_graph())
    assert resolver.get_status(STG_MEDIA, WEEK) == StaleStatus.STALE
    causes = resolver.get_stale_causes(STG_MEDIA, WEEK)
    assert [c.dependency.asset_key.to_user_string() for c in causes] == ["landed_weeks"]
    for key in (STG_MEDIA, STG_KPI):  # the weeks around it did not change
        assert resolver.get_status(key, "2015-12-27") == StaleStatus.FRESH
        assert resolver.get_status(key, "2016-01-10") == StaleStatus.FRESH
    assert week_ranges("pending", defs, instance) == [WeekRange(WEEK, WEEK, 1, "1 stale")]

    assert _features(cfg) == [f"{WEEK}..{WEEK}"]
    after = modeling_table(cfg)
    changed = after.compare(before)
    assert after.loc[changed.index, "week"].unique().tolist() == [pd.Timestamp(WEEK)]
    row = after[after["week"] == pd.Timestamp(WEEK)].iloc[0]
    assert row["spend_tv"] == pytest.approx(correction["spend"].iloc[0])
    assert week_ranges("pending", build_definitions(cfg), project_instance(cfg)) == []


def test_the_same_content_delivered_again_makes_nothing_stale(case_study) -> None:
    cfg = case_study
    before = modeling_table(cfg)
    path = cfg.landing_dir / "media" / f"case_study_weekly_{WEEK}.csv"
    media = pd.read_csv(path)
    media.iloc[::-1].to_csv(path, index=False)  # a new version of the file: other bytes, the same rows
    _ingest(cfg)
    assert week_ranges("pending", build_definitions(cfg), project_instance(cfg)) == []
    assert _features(cfg) == []
    pd.testing.assert_frame_equal(modeling_table(cfg), before)


#: Always holds on the synthetic world (the recent mean is above the 0th percentile).
CONDITION = {
    "name": "competitor_pressure",
    "when": {"control": "competitor_spend", "above_quantile": 0.0, "over_last_weeks": 4},
    "plan_changes": {"shares": {"search_floor": {"channels": ["search"], "min": 0.2}}},
}


def _plans(config_path: Path) -> dict[str, set[str]]:
    """Per market, the roots of what the model job would run now (Dagster's stale status, after the
    re-hash); checks that the fit is never in the selection."""
    cfg = load_config(config_path)
    defs, instance = build_definitions(cfg), project_instance(cfg)
    job = defs.resolve_job_def(MODEL_JOB)
    for market in ("north", "south"):  # re-evaluated on every run, as the runner and the sensor do
        keys = [dg.AssetKey("market_training_data"), dg.AssetKey("market_conditions")]
        assert run_job(defs, MODEL_JOB, instance, keys, partition_key=market).success
    plans = model_plans(
        instance, defs.resolve_asset_graph(), job.asset_layer.selected_asset_keys, ["north", "south"]
    )
    for plan in plans:
        assert not plan.refit and dg.AssetKey("model_fit") not in plan.selection
        assert not plan.roots or dg.AssetKey("executive_report") in plan.selection
    return {p.market: {k.to_user_string() for k in p.roots} for p in plans}


def test_conditions_reoptimize_and_gate_changes_reregister_without_a_refit(
    two_markets_project, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path, _ = two_markets_project
    monkeypatch.setenv("DAGSTER_HOME", str(config_path.parent / "dagster_home"))  # the copy's instance
    assert _plans(config_path) == {"north": set(), "south": set()}
    raw = yaml.safe_load(config_path.read_text())
    raw["conditions"] = [CONDITION]
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert _plans(config_path) == {"north": {"budget_recommendation"}, "south": {"budget_recommendation"}}
    raw["model"]["gate"]["max_r_hat"] = 1.25
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    # The registration (the gate is its code version) and the report (it judges by the gate); no fit.
    roots = _plans(config_path)
    expected = {"budget_recommendation", "model_registry", "executive_report"}
    assert roots == {m: expected for m in ("north", "south")}
