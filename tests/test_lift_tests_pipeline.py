"""Lift tests through the real pipeline: landing file -> pandera -> DuckDB -> the refit and its CV folds.

One synthetic project (one market, 72 weeks) receives a lift-test file with two experiments on TV: one
that ended inside the data and one that ended after its last week. The file lands in
``staging.stg_lift_tests``; a broken new version of it is quarantined with its row and rule while the
table keeps the good tests; a refit materialization says how many tests entered the fit and each fold.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from conftest import query, run, small_model_config

from mmm_pipeline.config import ProjectConfig, load_config
from mmm_pipeline.definitions import build_definitions
from mmm_pipeline.ingest.landing import LandingFileError, validate_landing_file
from mmm_pipeline.runner import project_instance, run_pipeline, week_ranges
from mmm_pipeline.scaffold import init_project
from mmm_testkit.synthetic import generate_world, write_world

N_WEEKS = 72
LIFT_FILE = "lift_tests/experiments.csv"
STAGED = (
    "SELECT market, week, channel, start_date, end_date, spend, delta_spend, lift, lift_se "
    "FROM staging.stg_lift_tests ORDER BY end_date"
)


def _experiments(world) -> pd.DataFrame:  # noqa: ANN001 - a SyntheticWorld
    """Two +50% TV tests read from the true curve: one ending mid-week in week 45 of the data, one 30
    weeks after its last week.

    No ``market`` column (it defaults to ``all``) and the channel spelled ``TV``: labels map to configured
    channels case-insensitively, as in media files.
    """
    truth = world.truth.channel("tv", "all")
    level = float(world.media.query("channel == 'tv'")["spend"].mean())
    delta = 0.5 * level
    lift = float(truth.steady_state(np.array([level + delta]))[0] - truth.steady_state(np.array([level]))[0])
    ends = [world.dates[45] + pd.Timedelta(days=2), world.dates[-1] + pd.Timedelta(weeks=30)]
    return pd.DataFrame(
        {
            "channel": ["TV", "tv"],
            "start_date": [(end - pd.Timedelta(weeks=5)).date() for end in ends],
            "end_date": [end.date() for end in ends],
            "spend": round(level, 2),
            "delta_spend": round(delta, 2),
            "lift": round(lift, 2),
            "lift_se": round(0.2 * abs(lift) + 1.0, 2),
        }
    )


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A synthetic project with its data and one lift-test file loaded up to the feature tables."""
    directory = tmp_path_factory.mktemp("lift_project")
    config_path = init_project(directory, "synthetic")
    small_model_config(config_path)
    cfg = load_config(config_path)
    world = generate_world(seed=4, n_weeks=N_WEEKS, start=cfg.calendar.start)
    write_world(world, cfg.landing_dir, directory / "truth")
    path = cfg.landing_dir / LIFT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    _experiments(world).to_csv(path, index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(directory / ".module_dagster_home"))
        summary = run(cfg)
    assert summary.ok, summary.problems
    return directory, world


@pytest.fixture
def project(loaded: tuple[Path, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProjectConfig:
    """A private copy of the loaded project with its Dagster instance (what was built), safe to change."""
    directory = tmp_path / "project"
    shutil.copytree(loaded[0], directory, ignore=shutil.ignore_patterns("*.lock"))
    monkeypatch.setenv("DAGSTER_HOME", str(directory / ".module_dagster_home"))
    return load_config(directory / "mmm_pipeline.yaml")


def test_a_good_lift_test_file_lands_in_the_staging_table(loaded: tuple[Path, object]) -> None:
    directory, world = loaded
    cfg = load_config(directory / "mmm_pipeline.yaml")
    expected = _experiments(world)
    staged = query(cfg, STAGED)
    assert [(market, channel) for market, _, channel, *_ in staged] == [("all", "tv"), ("all", "tv")]
    assert [row[4] for row in staged] == list(expected["end_date"])
    # A test is filed under the model week (Monday) that holds its end date.
    assert [row[1] for row in staged] == [d - dt.timedelta(days=d.weekday()) for d in expected["end_date"]]
    assert [row[5:] for row in staged] == list(
        expected[["spend", "delta_spend", "lift", "lift_se"]].itertuples(index=False, name=None)
    )
    assert query(cfg, "SELECT status FROM raw.landing_files WHERE kind = 'lift_tests'") == [("active",)]
    instance = dg.DagsterInstance.from_config(str(directory / ".module_dagster_home"))
    assert week_ranges("pending", build_definitions(cfg), instance) == []  # every week built


def test_a_bad_lift_test_file_is_quarantined_and_the_last_good_table_kept(project: ProjectConfig) -> None:
    cfg = project
    before = query(cfg, STAGED)
    path = cfg.landing_dir / LIFT_FILE
    frame = pd.read_csv(path)
    frame.loc[1, "lift_se"] = 0.0  # a new version of the file whose second test has no uncertainty
    frame.to_csv(path, index=False)

    summary = run(cfg)

    assert not summary.ok
    message = "\n".join(summary.problems)
    assert "experiments.csv" in message and "rule 'positive_lift_se'" in message and "row(s) 2" in message
    assert not path.exists()
    (report,) = (cfg.quarantine_dir / "lift_tests").glob("*.error.json")
    content = json.loads(report.read_text())
    assert content["rules"] == ["positive_lift_se"] and content["violations"][0]["rows"] == [2]
    assert query(cfg, STAGED) == before
    assert query(cfg, "SELECT status FROM raw.landing_files WHERE kind = 'lift_tests'") == [("active",)]


BAD_ROWS = [  # data rows after the header, the rule they break, the row it names
    (
        "tv,2023-03-06,2023-03-27,1000,500,120,30\ntiktok,2023-03-06,2023-03-27,1000,500,120,30",
        "known_channels",
        2,
    ),
    ("tv,2023-04-03,2023-03-27,1000,500,120,30", "end_not_before_start", 1),
    ("tv,2023-03-06,2023-03-27,-5,500,120,30", "nonnegative_numeric_spend", 1),
    ("tv,2023-03-06,2023-03-27,100,-500,120,30", "nonnegative_tested_spend", 1),
    ("tv,2023-03-06,2023-03-27,100,0,120,30", "nonzero_delta_spend", 1),
    ("tv,2023-03-06,2023-03-27,100,10,120,0", "positive_lift_se", 1),
    ("tv,2023-03-06,2023-03-27,100,10,inf,3", "finite_numbers", 1),
    ("tv,2023-03-06,2023-03-27,lots,10,1,3", "finite_numbers", 1),
    ("tv,2023-03-06,,100,10,1,3", "missing_values", 1),
    ("tv,2023-03-06,2023-02-30,100,10,1,3", "parseable_dates", 1),
    ("tv,2021-03-06,2021-03-27,100,10,1,3", "dates_within_calendar", 1),
    ("tv,2023-03-06,2023-03-27,100,10,1,3\ntv,2023-03-06,2023-03-27,100,10,2,3", "unique_keys", 1),
]


@pytest.mark.parametrize(
    ("rows", "rule", "row"), BAD_ROWS, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD_ROWS)]
)
def test_each_lift_test_rule_names_file_row_and_rule(tmp_path: Path, rows: str, rule: str, row: int) -> None:
    config_path = init_project(tmp_path / "p", "synthetic")
    path = tmp_path / "tests.csv"
    path.write_text("channel,start_date,end_date,spend,delta_spend,lift,lift_se\n" + rows + "\n")
    with pytest.raises(LandingFileError) as caught:
        validate_landing_file("lift_tests", path, load_config(config_path))
    error = caught.value
    assert error.rules == [rule]
    assert str(path) in str(error) and f"rule '{rule}'" in str(error) and f"row(s) {row}" in str(error)


def test_refits_report_their_lift_tests_and_a_new_test_triggers_one(project: ProjectConfig) -> None:
    """The weekly run's fit and CV say how many tests entered them (only those ended by their data's last
    week), and the run refits a market when a newly delivered test would enter its fit, and only then
    (Dagster reports the fit stale: the content hash of what it reads, market_training_data, changed)."""
    cfg = project
    instance = project_instance(cfg)
    model_assets = "key:model_fit or key:model_cv or key:model_registry"

    def run_model() -> list[str]:
        lines: list[str] = []
        summary = run_pipeline(cfg, select=model_assets, instance=instance, log=lines.append, until="model")
        assert summary.ok, summary.problems
        return lines

    def metadata(asset: str) -> dict:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        return event.asset_materialization.metadata

    assert any("fitting the model" in line for line in run_model())
    # The test that ended after the data's last week does not enter the fit, nor any fold.
    assert metadata("model_fit")["lift_tests"].value == 1
    # The fitted lift agrees with the test (read from the true curve): the check passes and shows it.
    key = dg.AssetCheckKey(dg.AssetKey("model_fit"), "lift_tests_agree")
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert check.status.value == "SUCCEEDED"
    evaluation = check.event.dagster_event.event_specific_data
    assert evaluation.metadata["lift_tests"].value == 1 and evaluation.metadata["max_abs_z"].value < 3
    assert metadata("model_cv")["lift_tests_per_fold"].value == "fold 0: 1, fold 1: 1"
    (run_record,) = cfg.artifacts_dir.glob("models/all/*/run.json")
    assert json.loads(run_record.read_text())["n_lift_tests"] == 1
    assert query(cfg, "SELECT n_lift_tests FROM models.latest_model_runs") == [(1,)]

    assert any("already covers" in line for line in run_model())
    second = pd.read_csv(cfg.landing_dir / LIFT_FILE).iloc[:1]
    second["start_date"] = cfg.calendar.start + dt.timedelta(weeks=20)
    second["end_date"] = cfg.calendar.start + dt.timedelta(weeks=25)
    second.to_csv(cfg.landing_dir / "lift_tests" / "second.csv", index=False)
    assert run(cfg).ok  # ingest and stage it
    lines = run_model()
    assert any("is out of date" in line and "market_training_data" in line for line in lines), lines
    assert any("fitting the model" in line for line in lines), lines
    assert query(cfg, "SELECT n_lift_tests FROM models.latest_model_runs") == [(2,)]
