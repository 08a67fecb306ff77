"""The synthetic world: determinism, an exact decomposition, and a truth consistent with its files."""

import datetime as dt
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from mmm_testkit.synthetic import (
    DEFAULT_CHANNELS,
    EVENT_CONTROL,
    Break,
    generate_world,
    write_world,
)

CHANNELS = ["tv", "search", "display", "social", "radio", "print"]


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=0)


@pytest.fixture(scope="module")
def two_markets():
    return generate_world(seed=3, n_weeks=60, markets=["north", "south"])


def _components(world):
    decomposition = world.truth.decomposition
    return decomposition.drop(columns=["date", "market", world.kpi_name]), decomposition[world.kpi_name]


def test_same_seed_same_world_and_other_seed_differs():
    a, b, c = (
        generate_world(seed=7, n_weeks=30),
        generate_world(seed=7, n_weeks=30),
        generate_world(seed=8, n_weeks=30),
    )
    for frame in ["media", "kpi", "controls"]:
        pd.testing.assert_frame_equal(getattr(a, frame), getattr(b, frame))
    pd.testing.assert_frame_equal(a.truth.decomposition, b.truth.decomposition)
    assert not a.media["spend"].equals(c.media["spend"])


def test_default_shape_dates_and_names(world):
    assert world.channels == CHANNELS
    assert set(world.controls["control"]) == {"competitor_spend", "macro_index", "price"}
    dates = world.dates
    assert len(dates) == 156 and dates[0] == pd.Timestamp("2022-01-03")
    assert (dates.weekday == 0).all() and (np.diff(dates.values) == np.timedelta64(7, "D")).all()
    assert dates[-1] < pd.Timestamp("2026-11-24")
    assert len(world.media) == 156 * 6 and len(world.kpi) == 156 and len(world.controls) == 156 * 3
    assert list(world.media.columns) == ["date", "channel", "spend", "impressions", "market"]
    assert list(world.kpi.columns) == ["date", "sales", "market"]
    assert list(world.controls.columns) == ["date", "control", "value", "market"]


def test_spend_is_realistic_media_plans(world):
    spend = world.media.pivot(index="date", columns="channel", values="spend")
    assert (world.media["spend"] >= 0).all() and (world.media["impressions"] >= 0).all()
    assert ((world.media["spend"] == 0) == (world.media["impressions"] == 0)).all()
    for flighted in ["tv", "radio", "print"]:
        assert 0.2 < (spend[flighted] == 0).mean() < 0.7
    for always_on in ["search", "display", "social"]:
        assert (spend[always_on] > 0).all()
        assert spend[always_on].std() / spend[always_on].mean() > 0.1


def test_other_week_start_and_start_validation():
    sunday = generate_world(n_weeks=10, week_start="sunday")
    assert (sunday.dates.weekday == 6).all() and sunday.dates[0] == pd.Timestamp("2022-01-09")
    with pytest.raises(ValueError, match="not a monday"):
        generate_world(start=dt.date(2022, 1, 4))


def test_components_add_up_to_kpi_with_small_noise(world):
    components, kpi = _components(world)
    np.testing.assert_allclose(components.sum(axis=1), kpi, rtol=1e-12)
    np.testing.assert_array_equal(kpi.to_numpy(), world.kpi["sales"].to_numpy())
    noise = components["noise"]
    assert noise.std() == pytest.approx(world.truth.noise_sd["all"], rel=0.2)
    assert noise.std() < 0.03 * kpi.mean()


def test_roas_is_realistic_and_media_share_plausible(world):
    summary = world.summary()
    assert summary["roas"].between(0.5, 5).all()
    np.testing.assert_allclose(summary["share"].sum(), 1.0)
    media_share = world.truth.decomposition[CHANNELS].to_numpy().sum() / world.kpi["sales"].sum()
    assert 0.1 < media_share < 0.4


def test_truth_files_agree_with_landing_files(world, tmp_path):
    paths = write_world(world, tmp_path / "landing", tmp_path / "truth")
    media = pd.read_csv(paths["media"] / "media.csv")
    contributions = pd.read_csv(paths["contributions"])
    truth = json.loads(paths["truth"].read_text())
    kpi = pd.read_csv(paths["kpi"] / "kpi.csv")
    controls = pd.read_csv(paths["controls"] / "controls.csv")
    assert list(kpi.columns) == ["date", "sales", "market"] and kpi["date"].iloc[0] == "2022-01-03"
    assert list(controls.columns) == ["date", "control", "value", "market"]
    spend = media.groupby("channel")["spend"].sum()
    for channel in CHANNELS:
        recomputed = contributions[channel].sum() / spend[channel]
        assert truth["channels"][channel]["roas"] == pytest.approx(recomputed, rel=1e-9)
    shares = [truth["channels"][c]["share"] for c in CHANNELS]
    assert sum(shares) == pytest.approx(1.0)
    np.testing.assert_allclose(
        contributions.drop(columns=["date", "market", "sales"]).sum(axis=1), kpi["sales"]
    )


def test_split_by_week_writes_one_file_per_week_and_kind(two_markets, tmp_path):
    paths = write_world(two_markets, tmp_path / "landing", tmp_path / "truth", split_by_week=True)
    for kind in ["media", "kpi", "controls"]:
        files = sorted(paths[kind].glob("*.csv"))
        assert len(files) == 60
        week = pd.read_csv(files[0])
        assert week["date"].nunique() == 1 and set(week["market"]) == {"north", "south"}
    media = pd.concat(pd.read_csv(f) for f in sorted(paths["media"].glob("*.csv")))
    assert len(media) == len(two_markets.media)


def test_true_contribution_reproduces_recorded_contributions(two_markets):
    for market in two_markets.markets:
        recorded = two_markets.truth.decomposition.query("market == @market")[CHANNELS].to_numpy()
        spend = two_markets.spend_matrix(market)
        np.testing.assert_allclose(two_markets.true_contribution(spend, market), recorded, rtol=1e-12)
        # Scoring only the weeks from 25 on, the actual weeks before carry over.
        tail = two_markets.true_contribution(spend[25:], market, start_week=25)
        np.testing.assert_allclose(tail, recorded[25:], rtol=1e-12)


def test_steady_state_matches_a_long_constant_plan(world):
    weekly = np.array([80_000, 25_000, 20_000, 20_000, 15_000, 15_000.0])  # past the S-curves' inflection
    steady = world.true_contribution(weekly)
    plan = world.true_contribution(np.tile(weekly, (12, 1)), start_week=world.n_weeks)
    np.testing.assert_allclose(plan[-1], steady, rtol=1e-12)
    assert not np.allclose(plan[0], steady)  # the first forecast week still carries the actual history
    more = world.true_contribution(weekly * 1.5)
    assert np.all(more > steady) and np.all(more < 1.5 * steady)  # diminishing returns


def test_markets_differ_in_scale_and_data(two_markets):
    scales = two_markets.truth.market_scale
    assert scales["north"] == 1.0 and scales["south"] != 1.0
    spend = two_markets.media.groupby("market")["spend"].sum()
    assert spend["south"] / spend["north"] == pytest.approx(scales["south"], rel=0.35)
    north, south = (two_markets.spend_matrix(m) for m in ["north", "south"])
    assert not np.allclose(north * scales["south"], south)
    weekly = np.full(6, 20_000.0)
    # Same curve stretched by the scale: s times the spend in a market s times bigger, s times the effect.
    np.testing.assert_allclose(
        two_markets.true_contribution(weekly * scales["south"], "south"),
        scales["south"] * two_markets.true_contribution(weekly, "north"),
    )
    with pytest.raises(ValueError, match="name one"):
        two_markets.true_contribution(weekly)


def test_break_changes_the_effect_from_the_break_week(world):
    broken = generate_world(seed=0, breaks=[Break(channel="tv", week_index=100, effect_multiplier=0.5)])
    pd.testing.assert_frame_equal(broken.media, world.media)
    before, after = world.truth.decomposition, broken.truth.decomposition
    pd.testing.assert_series_equal(after["tv"][:100], before["tv"][:100])
    np.testing.assert_allclose(after["tv"][100:], 0.5 * before["tv"][100:])
    others = [c for c in CHANNELS if c != "tv"]
    pd.testing.assert_frame_equal(after[others], before[others])
    np.testing.assert_allclose(after["sales"] - before["sales"], after["tv"] - before["tv"], atol=0.01)
    assert broken.summary().loc["tv", "roas"] < world.summary().loc["tv", "roas"]
    record = broken.truth_dict()["breaks"]
    assert record == [{"channel": "tv", "week_index": 100, "date": "2023-12-04", "effect_multiplier": 0.5}]
    # Plans are scored with the effect in force: halved after the break.
    weekly = np.full(6, 30_000.0)
    np.testing.assert_allclose(broken.true_contribution(weekly)[0], 0.5 * world.true_contribution(weekly)[0])
    with pytest.raises(ValueError, match="invalid"):
        generate_world(breaks=[Break(channel="tv", week_index=156, effect_multiplier=0.5)])


def test_default_world_is_pinned():
    """The default random streams never change: benchmarks and tests compare worlds across versions.

    The digest is of a world generated before the shape options existed (channels, noise_share, ...).
    """
    w = generate_world(seed=11, n_weeks=40, markets=["a", "b"], lift_tests_per_channel=1)
    digest = hashlib.sha256()
    for frame in (w.media, w.kpi, w.controls, w.lift_tests, w.truth.decomposition):
        digest.update(frame.to_csv(index=False).encode())
    assert digest.hexdigest() == "78dfcc652fa15f5a89ab0ea3395f685e89707ac287d933f4c2991bd278be1e72"
    explicit = generate_world(
        seed=11, n_weeks=40, markets=["a", "b"], lift_tests_per_channel=1, channels=DEFAULT_CHANNELS,
        noise_share=0.02, controls=["competitor_spend", "macro_index", "price"],
    )  # fmt: skip
    pd.testing.assert_frame_equal(explicit.truth.decomposition, w.truth.decomposition)


def test_shape_options_give_the_asked_world_and_keep_the_rest(tmp_path):
    base = generate_world(seed=4, n_weeks=104)
    channels = ["tv", "ooh", "video", "affiliate", "search"]
    w = generate_world(
        seed=4, n_weeks=104, channels=channels, spend_patterns={"search": "flighting"}, noise_share=0.1
    )
    assert w.channels == channels and list(w.media["channel"].unique()) == channels
    np.testing.assert_allclose(w.summary()["roas"], [1.6, 0.9, 1.2, 2.5, 3.5], rtol=1e-9)
    spend = w.media.pivot(index="date", columns="channel", values="spend")
    assert (spend["ooh"] == 0).any() and (spend["search"] == 0).any()  # flighted, search by override
    assert (spend["video"] > 0).all() and (spend["affiliate"] > 0).all()
    # tv is bought as in the default world, from the same stream; controls and noise draws are shared.
    np.testing.assert_array_equal(spend["tv"], base.spend_matrix()[:, 0])
    pd.testing.assert_frame_equal(w.controls, base.controls)
    assert w.truth.noise_sd["all"] == pytest.approx(0.1 * 1_000_000)
    noise, base_noise = w.truth.decomposition["noise"], base.truth.decomposition["noise"]
    np.testing.assert_allclose(noise, 5 * base_noise, atol=0.06)  # same draws, 5x the sd (cents rounding)

    bare = generate_world(seed=4, n_weeks=104, controls=(), seasonal_amplitude=0.0, trend_per_year=0.0)
    assert bare.controls.empty and not bare.truth.control_coef["all"]
    assert (bare.truth.decomposition[["trend", "seasonality"]] == 0).all().all()
    components = bare.truth.decomposition.drop(columns=["date", "market", "sales"]).sum(axis=1)
    np.testing.assert_allclose(components, bare.kpi["sales"], rtol=1e-12)
    written = write_world(bare, tmp_path / "landing", tmp_path / "truth")
    assert "controls" not in written and not (tmp_path / "landing" / "controls").exists()


def test_event_control_is_a_label_a_week_with_its_effect():
    w = generate_world(seed=2, n_weeks=104, controls=["price"], event_control=True)
    events = w.controls[w.controls["control"] == EVENT_CONTROL].set_index("date")["value"]
    assert len(events) == 104 and set(events) == {"na", "sale", "launch"}
    assert (events == "na").mean() > 0.7
    effect = w.truth.decomposition.set_index("date")[EVENT_CONTROL]
    for label, value in w.truth.event_effects.items():
        assert (effect[events == label] == value).all() and value > 0
    assert (effect[events == "na"] == 0).all()
    assert w.truth_dict()["categorical_controls"][EVENT_CONTROL]["baseline"] == "na"


def test_shape_options_are_checked():
    with pytest.raises(ValueError, match="channels must be distinct names"):
        generate_world(channels=["tv", "cinema"])
    with pytest.raises(ValueError, match="spend_patterns"):
        generate_world(channels=["tv"], spend_patterns={"search": "flighting"})
    with pytest.raises(ValueError, match="controls must be"):
        generate_world(controls=["weather"])
    with pytest.raises(ValueError, match="noise_share"):
        generate_world(noise_share=-0.1)


def test_lift_tests_in_a_world_with_a_break_use_each_channel_own_breaks():
    """A break on one channel used to crash the design of every other channel's tests."""
    kw = dict(seed=5, n_weeks=60, lift_tests_per_channel=1)
    plain = generate_world(**kw).lift_tests
    broken = generate_world(**kw, breaks=[Break("search", 1, 0.0)]).lift_tests
    others = broken["channel"] != "search"
    pd.testing.assert_frame_equal(broken[others], plain[others])
    # search's effect is gone from week 1 on: its test reads only measurement noise.
    row = broken[~others].iloc[0]
    assert abs(row["lift"]) < 4 * row["lift_se"] and row["lift"] != plain[~others].iloc[0]["lift"]


def test_geo_world_markets_vary_around_national_channels_and_some_are_small_and_noisy():
    from mmm_testkit.markets import GEO_CHANNELS, generate_geo_world

    geo = generate_geo_world(6, seed=2, n_weeks=40)
    again = generate_geo_world(6, seed=2, n_weeks=40)
    pd.testing.assert_frame_equal(geo.world.kpi, again.world.kpi)
    assert geo.noisy == again.noisy and len(geo.noisy) == 2
    assert not generate_geo_world(6, seed=3, n_weeks=40).world.kpi.equals(geo.world.kpi)
    world, truth = geo.world, geo.world.truth
    assert world.channels == list(GEO_CHANNELS) and world.n_weeks == 40
    for market in geo.markets:
        share = truth.noise_sd[market] / (1_000_000.0 * truth.market_scale[market])
        if market in geo.noisy:
            assert truth.market_scale[market] <= 0.3 and share == pytest.approx(0.08)
        else:
            assert truth.market_scale[market] >= 0.3 and share == pytest.approx(0.02)
    # Channels work differently by market beyond size: per-market ROAS differ, the pooled one is the target.
    roas = geo.true_roas().pivot(index="market", columns="channel", values="roas")
    assert (roas.std() / roas.mean() > 0.05).all()
    np.testing.assert_allclose(world.summary()["roas"], [1.6, 3.5, 2.0, 1.4, 1.0], rtol=1e-9)
    # The recorded contributions are the per-market truth's, and the truth file says so.
    for market in geo.markets:
        recorded = truth.decomposition.query("market == @market")[world.channels].to_numpy()
        np.testing.assert_allclose(world.true_contribution(world.spend_matrix(market), market), recorded)
    by_market = world.truth_dict()["channels"]["tv"]["by_market"][geo.markets[0]]
    assert by_market["alpha"] == truth.channel("tv", geo.markets[0]).alpha != truth.channels["tv"].alpha
    curve = geo.true_curve(geo.markets[0], np.full((1, 5), 10_000.0))
    np.testing.assert_allclose(curve, world.true_contribution(np.full(5, 10_000.0), geo.markets[0])[None])


def test_market_options_are_checked():
    with pytest.raises(ValueError, match="market_scales names markets"):
        generate_world(n_weeks=10, markets=["a"], market_scales={"b": 1.0})
    with pytest.raises(ValueError, match="market_variation"):
        generate_world(n_weeks=10, market_variation=-1.0)
    # Zero variation and no overrides: the default world, unchanged.
    pd.testing.assert_frame_equal(
        generate_world(seed=4, n_weeks=20, market_variation=0.0).kpi, generate_world(seed=4, n_weeks=20).kpi
    )
