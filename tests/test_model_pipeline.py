"""The refit as Dagster assets on a real project: fit, gate, registry, promotion, ROAS drift, BI tables.

One synthetic project with two markets goes through a first fit (both markets promoted), a run with no
new data (nothing refitted), a forced refit (new champions reusing the old scaling, drift recorded) and
a refit under an impossible gate (kept as rejected; the champion keeps serving; the run fails loudly),
then a refit asking for more history than the data has (fails naming the setting).
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
import yaml
from conftest import model_runs, query

from mmm_pipeline.config import load_config
from mmm_pipeline.model.build import ModelData
from mmm_pipeline.model.predict import predict
from mmm_pipeline.model.promotion import cv_failures, gate_failures
from mmm_pipeline.model.registry import CVRecord, load_model
from mmm_pipeline.model.settings import GateConfig
from mmm_pipeline.runner import INPUTS_SCOPE, project_instance, run_pipeline

MARKETS = ("north", "south")


def _recommendations(config_path: Path) -> dict[str, object]:
    """The recorded recommendations (optimization ids) and the status of each market's latest
    ``budget_recommendation`` materialization."""
    cfg = load_config(config_path)
    instance = project_instance(cfg)
    statuses = {}
    for market in MARKETS:
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey("budget_recommendation"), asset_partitions=[market]), limit=1
        ).records
        statuses[market] = record.asset_materialization.metadata["status"].value
    ids = query(cfg, "SELECT optimization_id FROM optimization.plan_summary ORDER BY optimization_id")
    checks = {}
    for check in ("plan_feasible", "scenarios_feasible", "within_history", "uplift_positive"):
        key = dg.AssetCheckKey(dg.AssetKey("budget_recommendation"), check)
        execution = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        evaluation = execution.event.dagster_event.event_specific_data
        note = evaluation.metadata.get("note")
        checks[check] = (execution.status.value, "" if note is None else str(note.value))
    return {"ids": [i for (i,) in ids], "status": statuses, "checks": checks}


def _run(config_path: Path, refit: bool = False):
    cfg = load_config(config_path)
    return run_pipeline(cfg, instance=project_instance(cfg), log=lambda _m: None, refit=refit)


@pytest.fixture(scope="module")
def project(two_markets_project: tuple[Path, object]) -> dict[str, object]:
    """The suite's shared first run (seed 5, 104 weeks, both markets fitted and promoted), in a copy
    taken through a run with no new data, a forced refit and a refit under an impossible gate."""
    config_path, first = two_markets_project
    home = config_path.parent / "dagster_home"
    stages: dict[str, object] = {"config": config_path, "first": first}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        stages["after_first"] = model_runs(config_path)
        stages["unchanged"] = _run(config_path)
        stages["after_unchanged"] = model_runs(config_path)
        # From here on no cross-validation: the first run's CV is checked above; what the later stages
        # check is scaling, retirement, drift and the gate (a refit without CV can still be promoted).
        raw = yaml.safe_load(config_path.read_text())
        raw["cv"]["enabled"] = False
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        stages["refit"] = _run(config_path, refit=True)
        stages["after_refit"] = model_runs(config_path)
        stages["recommended_after_refit"] = _recommendations(config_path)
        # An impossible gate. First no new fit: the champions are registered again under it.
        raw["model"]["gate"]["min_ess_bulk"] = 1e9
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        stages["tightened"] = _run(config_path)
        stages["after_tightened"] = model_runs(config_path)
        stages["recommended_after_tightened"] = _recommendations(config_path)
        # Then a refit: the new fit must be kept as rejected and the champions must stay. One attempt:
        # the retry ladder through the pipeline to BI is test_remedies' (the CLI test).
        raw["model"]["remedies"] = {"max_attempts": 1}
        # No draw count passes this gate: the fewest draws that still give a posterior to keep.
        raw["model"]["spec"]["sampler"] |= {"draws": 50, "tune": 50}
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        stages["strict"] = _run(config_path, refit=True)
        stages["after_strict"] = model_runs(config_path)
        stages["recommended_after_strict"] = _recommendations(config_path)
        # More history required than the project has: the refit fails and the message names the setting.
        raw["model"]["min_train_weeks"] = 200
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        stages["short"] = _run(config_path, refit=True)
    return stages


def test_first_fit_promotes_one_champion_per_market(project: dict) -> None:
    assert project["first"].ok, project["first"].problems
    runs = project["after_first"]
    assert sorted(runs["market"]) == list(MARKETS)
    assert (runs["status"] == "champion").all() and runs["gate_passed"].all()
    assert (runs["scaling_source"] == "fresh").all() and runs["previous_champion"].isna().all()
    assert (runs["n_weeks"] == 104).all() and runs["train_end"].nunique() == 1
    for column in ("config_hash", "code_version", "model_spec", "scaling", "artifact_path"):
        assert runs[column].notna().all(), column
    assert (
        (runs["sampler"] == "nutpie").all() and (runs["chains"] == 2).all() and (runs["draws"] == 200).all()
    )
    assert (runs["max_r_hat"] < 1.2).all() and (runs["min_ess_bulk"] > 20).all()
    assert (runs["total_seconds"] > runs["sample_seconds"]).all()
    # The second market reused the graph the first one compiled (same shapes, same process).
    assert runs["reused_graph"].tolist() == [False, True]


def test_insight_tables_are_keyed_and_complete(project: dict) -> None:
    cfg = load_config(project["config"])
    runs = project["after_first"]
    first = runs["model_id"].iloc[0]
    n_channels, n_weeks = len(cfg.channel_names), 104
    counts = dict(
        query(
            cfg,
            "SELECT 'channel_summary', count(*) FROM models.channel_summary WHERE model_id = "
            f"'{first}' UNION ALL SELECT 'decomposition', count(*) FROM models.decomposition WHERE "
            f"model_id = '{first}' UNION ALL SELECT 'adstock_weights', count(*) FROM models.adstock_weights "
            f"WHERE model_id = '{first}' UNION ALL SELECT 'fit_weekly', count(*) FROM models.fit_weekly "
            f"WHERE model_id = '{first}'",
        )
    )
    assert counts["channel_summary"] == n_channels
    assert counts["decomposition"] == n_weeks * (4 + n_channels)  # intercept, trend, seasonality, controls
    assert counts["adstock_weights"] == n_channels * 4  # l_max 4
    assert counts["fit_weekly"] == n_weeks
    (lo_ok,) = query(
        cfg,
        "SELECT bool_and(roas_hdi_low <= roas_mean AND roas_mean <= roas_hdi_high AND roas_hdi_low >= 0) "
        f"FROM models.channel_summary WHERE model_id = '{first}'",
    )[0]
    assert lo_ok
    (share_total,) = query(
        cfg, f"SELECT sum(share_mean) FROM models.channel_summary WHERE model_id = '{first}'"
    )[0]
    assert share_total == pytest.approx(1.0, abs=1e-6)
    params = query(cfg, f"SELECT parameter FROM models.parameter_summary WHERE model_id = '{first}'")
    assert any(p[0].startswith("beta_channel[") for p in params) and all(p[0] != "mu" for p in params)


def test_cross_validation_is_recorded_per_fold_and_used_for_promotion(project: dict) -> None:
    cfg = load_config(project["config"])
    runs = project["after_first"]
    assert (runs["cv_status"] == "ok").all() and (runs["cv_n_folds"] == 2).all()
    assert (runs["cv_crps"] > 0).all() and runs["cv_crps_skill"].notna().all()
    first = runs["model_id"].iloc[0]
    folds = query(
        cfg,
        "SELECT fold, status, train_end, test_start, test_end FROM models.cv_folds "
        f"WHERE model_id = '{first}' ORDER BY fold",
    )
    assert [(f, s) for f, s, *_ in folds] == [(0, "ok"), (1, "ok")]
    assert all(train_end < test_start for _, _, train_end, test_start, _ in folds)  # no leakage by layout
    assert folds[-1][4] == runs["train_end"].iloc[0].date()  # the last fold ends at the last fitted week
    metrics = dict(
        query(
            cfg,
            f"SELECT model, crps FROM models.cv_metrics WHERE model_id = '{first}' AND scope = 'overall'",
        )
    )
    assert set(metrics) == {"mmm", "seasonal_naive", "ridge"} and all(v > 0 for v in metrics.values())
    assert metrics["mmm"] == pytest.approx(runs["cv_crps"].iloc[0])
    (n_predictions,) = query(cfg, f"SELECT count(*) FROM models.cv_predictions WHERE model_id = '{first}'")[0]
    assert n_predictions == 3 * 2 * 8  # models x folds x horizon
    stability = query(
        cfg, f"SELECT channel, n_folds FROM models.cv_parameter_stability WHERE model_id = '{first}'"
    )
    assert sorted(c for c, _ in stability) == sorted(cfg.channel_names) and all(n == 2 for _, n in stability)


def test_stored_posterior_predicts_without_refitting(project: dict) -> None:
    cfg = load_config(project["config"])
    row = project["after_first"].iloc[0]
    stored = load_model(row["artifact_path"])
    assert stored.model_id == row["model_id"]
    assert json.loads(row["scaling"]) == json.loads(stored.scaling.model_dump_json())
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        frame = conn.execute("SELECT * FROM marts.fct_modeling_weekly ORDER BY week").df()
        fitted = conn.execute(
            "SELECT predicted_mean FROM models.fit_weekly WHERE model_id = ? ORDER BY week", [row["model_id"]]
        ).df()
    data = ModelData.from_frame(frame, row["market"], cfg.channel_names, cfg.control_names)
    prediction = predict(stored.idata, stored.scaling, stored.spec, data)
    np.testing.assert_allclose(prediction.expected.mean(axis=0), fitted["predicted_mean"], rtol=1e-9)


def test_unchanged_data_is_not_refitted(project: dict) -> None:
    assert project["unchanged"].ok, project["unchanged"].problems
    # only each market's inputs are hashed again; same content, so Dagster finds nothing stale to run
    runs = [r for r in project["unchanged"].runs if r[0] == "refit_model"]
    assert runs and all(r[3].endswith(INPUTS_SCOPE) for r in runs), runs
    assert len(project["after_unchanged"]) == len(project["after_first"])


def test_refit_keeps_scaling_retires_the_old_champion_and_records_drift(project: dict) -> None:
    assert project["refit"].ok, project["refit"].problems
    runs = project["after_refit"]
    first = project["after_first"].set_index("market")["model_id"]
    new = runs[~runs["model_id"].isin(first)].set_index("market")
    assert (new["status"] == "champion").all()
    assert (runs[runs["model_id"].isin(first)]["status"] == "retired").all()
    for market in MARKETS:
        assert new.loc[market, "previous_champion"] == first[market]
        assert new.loc[market, "scaling_source"] == first[market]
        assert new.loc[market, "scaling"] == project["after_first"].set_index("market").loc[market, "scaling"]
    cfg = load_config(project["config"])
    drift = query(
        cfg,
        "SELECT market, champion_model_id, count(*), max(abs(relative_change)) FROM models.roas_drift "
        f"WHERE model_id IN {tuple(new['model_id'])} GROUP BY ALL ORDER BY market",
    )
    assert [(m, c) for m, c, _, _ in drift] == [(m, first[m]) for m in MARKETS]
    assert all(n == len(cfg.channel_names) for _, _, n, _ in drift)


def test_failing_gate_keeps_the_fit_but_not_as_champion(project: dict) -> None:
    summary = project["strict"]
    assert not summary.ok
    assert any("convergence" in p and "bulk ESS" in p for p in summary.problems), summary.problems
    before = project["after_refit"]
    runs = project["after_strict"]
    rejected = runs[~runs["model_id"].isin(before["model_id"])]
    assert len(rejected) == 2 and (rejected["status"] == "rejected").all()
    assert rejected["gate_failures"].str.contains("bulk ESS").all()
    assert (rejected["fit_attempts"] == 1).all()
    assert all(Path(p, "posterior.nc").exists() for p in rejected["artifact_path"])  # kept to inspect
    champions = runs[runs["status"] == "champion"]["model_id"]
    assert sorted(champions) == sorted(before[before["status"] == "champion"]["model_id"])
    cfg = load_config(project["config"])
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        served = bi.execute("SELECT DISTINCT model_id FROM champion_channel_summary").fetchall()
        published_runs = bi.execute("SELECT count(*) FROM model_runs").fetchone()[0]
        attempts = bi.execute(
            "SELECT model_id, attempt, draws, tune, remedy FROM model_fit_attempts ORDER BY model_id, attempt"
        ).df()
    assert sorted(r[0] for r in served) == sorted(champions)
    assert published_runs == len(runs)
    recorded = attempts[attempts["model_id"].isin(rejected["model_id"])]
    assert recorded.groupby("model_id")["attempt"].apply(list).tolist() == [[1], [1]]


def test_a_tightened_gate_warns_but_keeps_the_champion_serving(project: dict) -> None:
    """A gate change alone re-registers the champions under the new gate (no fit); one that misses it
    keeps serving (rejecting it would leave the market without a champion), flagged by a warning."""
    summary = project["tightened"]
    assert summary.ok, summary.problems
    warned = [w for w in summary.warnings if "champion_meets_gate" in w]
    assert len(warned) == 2 and all("misses the current gate" in w and "bulk ESS" in w for w in warned)
    before, after = project["after_refit"], project["after_tightened"]
    assert sorted(after["model_id"]) == sorted(before["model_id"])  # registered again, no new fit
    champions = after[after["status"] == "champion"]
    assert sorted(champions["model_id"]) == sorted(before[before["status"] == "champion"]["model_id"])
    assert not champions["gate_passed"].any() and champions["gate_failures"].str.contains("bulk ESS").all()


def test_a_registration_that_keeps_the_champion_keeps_its_recommendation(project: dict) -> None:
    """The refit's new champions were optimized once; the tightened gate and the rejected refit changed
    the registry (so Dagster reran the recommendation) but not the champion, the plans or the weeks: the
    serving recommendation stays, nothing optimized or recorded twice."""
    refit = project["recommended_after_refit"]
    assert refit["status"] == {m: "recorded" for m in MARKETS}
    for stage in ("recommended_after_tightened", "recommended_after_strict"):
        assert project[stage]["ids"] == refit["ids"], stage
        assert project[stage]["status"] == {m: "unchanged: not optimized again" for m in MARKETS}, stage
        # its checks are stated again from what was recorded (the UI shows them, not "skipped")
        checks = project[stage]["checks"]
        assert all(status in ("SUCCEEDED", "FAILED") for status, _ in checks.values()), checks
        recorded_with = [note.removeprefix("as recorded with ").split()[0] for _, note in checks.values()]
        assert all(note.startswith("as recorded with") for _, note in checks.values()), checks
        assert set(recorded_with) <= set(refit["ids"]), checks


def test_too_little_history_names_the_setting(project: dict) -> None:
    summary = project["short"]
    assert not summary.ok
    assert any("104 weeks" in p and "model.min_train_weeks = 200" in p for p in summary.problems), (
        summary.problems
    )


def test_gate_rules() -> None:
    good = {"max_r_hat": 1.004, "min_ess_bulk": 900, "min_ess_tail": 700, "divergences": 0}
    good |= {"r2": 0.8, "mape": 0.05}
    assert gate_failures(good, GateConfig()) == []
    bad = {**good, "max_r_hat": 1.03, "divergences": 2, "r2": 0.2, "min_ess_tail": float("nan")}
    assert not any("R²" in m for m in gate_failures(bad, GateConfig()))  # no fixed R² floor by default
    messages = gate_failures(bad, GateConfig(max_mape=0.01, min_r2=0.5))
    assert len(messages) == 5
    assert any("R-hat 1.0300 > 1.01" in m for m in messages) and any("2 divergences" in m for m in messages)
    assert any("tail ESS" in m for m in messages) and any("MAPE" in m for m in messages)
    assert gate_failures(bad, GateConfig(max_r_hat=1.05, max_divergences=2, min_r2=None, min_ess_tail=0)) == [
        "min tail ESS nan < 0"
    ]


def test_cv_promotion_rule() -> None:
    better = CVRecord("m2", "ok", overall={"mmm": {"crps": 100.0}})
    worse = CVRecord("m2", "partial", overall={"mmm": {"crps": 120.0}})
    champion = {"model_id": "m1", "cv_crps": 105.0}
    assert cv_failures(better, champion, 0.1) == []
    assert cv_failures(worse, champion, 0.1) == [
        "cross-validated CRPS 120 is over 10% above the champion's 105"
    ]
    assert cv_failures(worse, champion, None) == [] and cv_failures(worse, None, 0.1) == []
    assert cv_failures(worse, {"cv_crps": float("nan")}, 0.1) == []  # a champion without CV
    assert cv_failures(worse, champion, 0.1, drift_triggered=True) == []  # its CV predates the drift
    assert cv_failures(CVRecord("m2", "skipped", "too short"), champion, 0.1) == []
    assert cv_failures(CVRecord("m2", "failed"), champion, 0.1) == [
        "cross-validation: the model failed on every fold"
    ]
