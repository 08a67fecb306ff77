"""Weekly refreshes by reweighting the last sampled posterior (``model.refresh``, issue 18 item 4).

Real fits with small draws: the reweighted posterior of a longer window against a fresh sample of it,
the fallback to sampling when the weights are unreliable, and which changes rule an anchor out.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TWO_MARKETS, model_runs

from mmm_pipeline.config import load_config
from mmm_pipeline.features.data_version import modeling_fingerprint
from mmm_pipeline.model import insights
from mmm_pipeline.model.build import ScalingSpec
from mmm_pipeline.model.refit import refit_market, refresh_anchor
from mmm_pipeline.model.refresh import Anchor, importance_update, systematic_resample
from mmm_pipeline.model.settings import ModelConfig
from mmm_pipeline.model.spec import ModelSpec
from mmm_pipeline.runner import project_instance, run_pipeline
from mmm_testkit.adapters import model_data
from mmm_testkit.synthetic import generate_world, write_world

MODEL = ModelConfig(
    spec=ModelSpec.model_validate({"l_max": 4, "n_fourier": 1, "sampler": {"chains": 2, "draws": 300,
                                                                          "tune": 300, "seed": 3}}),
    gate={"min_ess_bulk": 20, "min_ess_tail": 20, "max_r_hat": 1.2, "max_divergences": 50},
    remedies={"enabled": False},
    refresh={"mode": "importance"},
)  # fmt: skip


def test_systematic_resampling_keeps_equal_weights_and_follows_unequal_ones() -> None:
    assert (systematic_resample(np.ones(8)) == np.arange(8)).all()
    weights = np.array([0.0, 0.0, 4.0, 1.0, 1.0, 2.0, 0.0, 0.0])
    index = systematic_resample(weights)
    assert np.bincount(index, minlength=8).tolist() == [0, 0, 4, 1, 1, 2, 0, 0]
    # a small change of the weights moves few picks: what keeps refreshes from jittering
    nudged = systematic_resample(weights + np.array([0, 0, 0.2, 0, 0, -0.2, 0, 0]))
    assert (nudged != index).sum() <= 1


@pytest.fixture(scope="module")
def anchored() -> dict[str, object]:
    """A sampled fit on the first 100 weeks of a synthetic world, and the world's first 104 weeks."""
    data = model_data(generate_world(seed=11, n_weeks=104))
    first = data.window(0, 100)
    scaling = ScalingSpec.from_data(first)
    outcome = refit_market(first, MODEL, scaling, "fresh")
    return {"data": data, "scaling": scaling, "anchor": Anchor("m-100", outcome.fit.idata, first)}


def test_reweighted_posterior_agrees_with_a_fresh_sample(anchored: dict) -> None:
    data, scaling, anchor = anchored["data"], anchored["scaling"], anchored["anchor"]
    carry = np.zeros((MODEL.spec.l_max - 1, len(data.channels)))
    update = importance_update(anchor, MODEL.spec, scaling, data, carry)
    assert update.weeks_added == 4 and update.pareto_k < 0.7
    assert 0 < update.ess < anchor.idata.posterior.sizes["chain"] * anchor.idata.posterior.sizes["draw"]
    # equally weighted draws picked from the anchor's, chain by chain; the anchor's gradients dropped
    before, after = anchor.idata.posterior["sigma"].to_numpy(), update.idata.posterior["sigma"].to_numpy()
    assert after.shape == before.shape
    assert all(np.isin(after[c], before[c]).all() for c in range(after.shape[0]))
    assert "gradient" not in update.idata.sample_stats
    assert update.idata.attrs["refresh_anchor"] == "m-100"

    refreshed = refit_market(data, MODEL, scaling, "m-100", anchor=anchor)
    assert refreshed.refresh_anchor == "m-100" and "refreshed without sampling" in refreshed.refresh_note
    assert refreshed.attempts[0]["sampler"] == "importance"
    assert refreshed.fit.timings["sample"] == 0.0
    sampled = refit_market(data, MODEL, scaling, "m-100")
    assert sampled.refresh_anchor is None
    ours = refreshed.tables["channel_summary"].set_index("channel")
    fresh = sampled.tables["channel_summary"].set_index("channel")
    # every channel's reweighted ROAS lies inside the fresh sample's 94% interval
    inside = (fresh["roas_hdi_low"] <= ours["roas_mean"]) & (ours["roas_mean"] <= fresh["roas_hdi_high"])
    assert inside.all(), pd.concat([ours["roas_mean"], fresh[["roas_hdi_low", "roas_hdi_high"]]], axis=1)
    # the refresh's tables are the fit's own (plain means: the Stein controls belong to the anchor)
    roas = insights.channel_summary(refreshed.fit.idata, scaling, MODEL.spec, data)
    assert np.allclose(roas["roas_mean"], ours["roas_mean"])


def test_unreliable_weights_fall_back_to_sampling(anchored: dict) -> None:
    data, scaling, anchor = anchored["data"], anchored["scaling"], anchored["anchor"]
    kpi = data.kpi.copy()
    kpi[-2:] *= 6.0  # two weeks no draw of the anchor explains
    odd = type(data)(data.dates, data.spend, data.controls, kpi, data.channels, data.control_names)
    messages: list[str] = []
    outcome = refit_market(odd, MODEL, scaling, "m-100", anchor=anchor, progress=messages.append)
    assert outcome.refresh_anchor is None
    assert "Pareto k" in outcome.refresh_note and "sampling" in outcome.refresh_note
    assert any(m.startswith("refresh: ") for m in messages)
    assert outcome.attempts[0]["sampler"] == MODEL.spec.sampler.name


def test_an_anchor_is_ruled_out_by_what_changed(anchored: dict) -> None:
    data, scaling = anchored["data"], anchored["scaling"]
    frame = pd.DataFrame({"week": data.dates, "kpi": data.kpi})
    run = {
        "model_id": "m-100", "n_weeks": 100, "train_start": str(data.dates[0].date()),
        "train_end": str(data.dates[99].date()), "config_hash": "abc", "scaling": scaling.model_dump_json(),
        "n_lift_tests": 0, "data_fingerprint": modeling_fingerprint(frame.iloc[:100]),
        "artifact_path": "/nonexistent",
    }  # fmt: skip

    def why(**changes: object) -> str:
        anchor, reason = refresh_anchor(MODEL, data, frame, scaling, "abc", {**run, **changes})
        assert anchor is None
        return reason

    assert "cannot be read" in why()  # every rule passed; only the artifact is missing
    assert "the model config changed" in why(config_hash="other")
    assert "lift tests" in why(n_lift_tests=1)
    assert "weeks were revised" in why(data_fingerprint="other")
    quarterly = MODEL.model_copy(update={"refresh": MODEL.refresh.model_copy(update={"max_weeks": 3})})
    assert "4 weeks old" in refresh_anchor(quarterly, data, frame, scaling, "abc", run)[1]
    assert "no week was added" in why(n_weeks=104)
    assert "drift" in refresh_anchor(MODEL, data, frame, scaling, "abc", run, drift_triggered=True)[1]
    default = ModelConfig()  # samples every refit
    assert refresh_anchor(default, data, frame, scaling, "abc", run)[1] == "model.refresh.mode is sample"


def test_a_new_week_reweights_the_champion_through_the_pipeline(
    two_markets_project: tuple, tmp_path: Path
) -> None:
    """The shared two-market project (fitted once on 104 weeks of its world), the world's next week
    landed, the model stage run: a market whose weights are reliable is refreshed from its champion's
    draws, registered and promoted without sampling; one whose weights are not says why it sampled."""
    config_path, _ = two_markets_project
    raw = yaml.safe_load(config_path.read_text())
    raw["cv"]["enabled"] = False  # the refresh is under test, not the folds
    raw["model"]["refresh"] = {"mode": "importance"}
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config_path)
    before = model_runs(config_path).set_index("market")
    world = generate_world(seed=5, n_weeks=105, start=cfg.calendar.start, markets=TWO_MARKETS)
    paths = write_world(world, tmp_path / "landing", tmp_path / "truth")
    for kind in ("media", "kpi", "controls"):
        frame = pd.read_csv(paths[kind] / f"{kind}.csv", parse_dates=["date"])
        last = frame[frame["date"] == frame["date"].max()]
        last.to_csv(cfg.landing_dir / kind / f"{kind}_next.csv", index=False, date_format="%Y-%m-%d")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(config_path.parent / "dagster_home"))
        instance = project_instance(cfg)
        summary = run_pipeline(cfg, instance=instance, log=lambda _m: None, until="model")
        notes = {}
        for market in before.index:
            (record,) = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_fit"), asset_partitions=[market]), limit=1
            ).records
            notes[market] = record.asset_materialization.metadata["refresh"].value
    assert summary.ok, summary.problems
    runs = model_runs(config_path)
    new = runs[~runs["model_id"].isin(before["model_id"])].set_index("market")
    assert sorted(new.index) == sorted(before.index)
    refreshed = [m for m in new.index if isinstance(new.loc[m, "refresh_anchor"], str)]
    assert refreshed, notes
    for market, row in new.iterrows():
        assert row["n_weeks"] == before.loc[market, "n_weeks"] + 1
        if market in refreshed:
            assert row["refresh_anchor"] == before.loc[market, "model_id"]
            assert row["pareto_k"] <= cfg.model.refresh.max_pareto_k and row["sample_seconds"] == 0.0
            assert row["status"] == "champion" and "refreshed without sampling" in notes[market]
        else:  # unreliable weights: sampled, and the metadata says why
            assert "sampling" in notes[market] and row["sample_seconds"] > 0, notes[market]
