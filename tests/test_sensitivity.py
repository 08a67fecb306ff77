"""Prior sensitivity (``model/sensitivity.py``): the alternative prior set, its schedule, the comparison
table, and (slow) one tiny alternative fit on the champion's compiled graph."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from mmm_pipeline.config import load_config
from mmm_pipeline.model import insights
from mmm_pipeline.model.build import ScalingSpec
from mmm_pipeline.model.fit import fit
from mmm_pipeline.model.sensitivity import (
    LastComputation,
    alternative_prior_scale,
    describe,
    due,
    run_sensitivity,
    sensitivity_table,
    settings_hash,
    unsupported,
)
from mmm_pipeline.model.settings import ModelConfig, SensitivityConfig
from mmm_pipeline.model.spec import ModelSpec, PriorSpec, SamplerSpec
from mmm_pipeline.report import ReportData, latest_report
from mmm_pipeline.report.content import prior_sensitivity, what_changed
from mmm_pipeline.report.render import fmt_ratio
from mmm_pipeline.runner import project_instance, run_pipeline
from mmm_testkit.adapters import model_data
from mmm_testkit.synthetic import generate_world


def _scaling(shares: list[float]) -> ScalingSpec:
    n = len(shares)
    return ScalingSpec(
        channels=[f"c{i}" for i in range(n)], controls=[], kpi_scale=1.0, spend_scale=[1.0] * n,
        spend_share=shares, control_loc=[], control_scale=[], trend_origin=dt.date(2024, 1, 1),
        trend_weeks=52.0, fitted_on=(dt.date(2024, 1, 1), dt.date(2024, 12, 30)),
    )  # fmt: skip


def test_alternative_is_the_opposite_spend_share_scaling_by_default() -> None:
    scaling = _scaling([0.7, 0.25, 0.05])
    cfg = SensitivityConfig()
    # The model scales by spend share (n * share, floored at 0.1): the alternative is equal for all.
    assert np.allclose(alternative_prior_scale(ModelSpec(), scaling, cfg), [1.0, 1.0, 1.0])
    flat = ModelSpec(beta_by_spend_share=False)
    assert np.allclose(alternative_prior_scale(flat, scaling, cfg), [2.1, 0.75, 0.15])
    assert np.allclose(
        alternative_prior_scale(ModelSpec(), scaling, SensitivityConfig(spend_share="on", scale=2.0)),
        [4.2, 1.5, 0.3],
    )
    assert "the same for every channel" in describe(ModelSpec(), cfg)
    assert "2x as wide" in describe(ModelSpec(), SensitivityConfig(spend_share="on", scale=2.0))
    # Defaults sit in the config section, so a project without the key gets them.
    assert ModelConfig().sensitivity == cfg


def test_alternative_needs_a_sigma_to_scale_and_a_single_market_model() -> None:
    assert unsupported(ModelSpec()) is None
    gamma = ModelSpec(
        beta_by_spend_share=False,
        priors={"beta_channel": PriorSpec(dist="Gamma", params={"alpha": 2.0, "beta": 1.0})},
    )
    assert "no sigma" in unsupported(gamma)
    assert "pooling" in unsupported(ModelSpec(pooling="partial"))


def test_schedule_recomputes_on_new_settings_and_every_n_weeks() -> None:
    h = settings_hash(ModelSpec(), SensitivityConfig())
    end = dt.date(2024, 6, 2)
    assert due(None, "m1", end, h, 4)[0]
    last = LastComputation("m1", end, h)
    assert not due(last, "m1", end, h, 4)[0]
    assert not due(last, "m2", end + dt.timedelta(weeks=3), h, 4)[0]
    now, why = due(last, "m3", end + dt.timedelta(weeks=4), h, 4)
    assert now and "4 week(s)" in why
    assert due(last, "m1", end, settings_hash(ModelSpec(), SensitivityConfig(scale=2.0)), 4)[0]
    # The sampler of the champion is not part of it (a remedy's extra draws are no reason).
    sampled = ModelSpec(sampler=SamplerSpec(draws=2000))
    assert settings_hash(sampled, SensitivityConfig()) == h


def test_table_flags_material_differences() -> None:
    champion = pd.DataFrame(
        {"channel": ["tv", "search", "radio"], "roas_mean": [2.0, 1.0, 0.0],
         "roas_hdi_low": [1.0, 0.5, 0.0], "roas_hdi_high": [3.0, 1.5, 0.1]}
    ).set_index("channel")  # fmt: skip
    alternative = pd.DataFrame(
        {"channel": ["search", "tv", "radio"], "roas_mean": [1.5, 2.2, 0.2],
         "roas_hdi_low": [0.9, 1.1, 0.0], "roas_hdi_high": [2.0, 3.3, 0.5]}
    )  # fmt: skip
    table = sensitivity_table(champion, alternative, 0.25).set_index("channel")
    assert table.loc["tv", "relative_difference"] == pytest.approx(0.1)
    assert table.loc["search", "relative_difference"] == pytest.approx(0.5)
    assert table["material"].to_dict() == {"tv": False, "search": True, "radio": True}
    assert table.loc["search", "alt_roas_hdi_high"] == 2.0
    with pytest.raises(ValueError, match="no ROAS for channels"):
        sensitivity_table(champion, alternative[alternative["channel"] != "tv"], 0.25)


@pytest.mark.slow
def test_alternative_fit_reuses_the_champions_graph_and_moves_with_the_prior() -> None:
    """A prior 1000x narrower than the champion's must pull every channel's ROAS towards zero, on the
    champion's compiled graph (the prior scale is a data container)."""
    data = model_data(generate_world(seed=3, n_weeks=65))
    spec = ModelSpec(l_max=4, n_fourier=1, sampler=SamplerSpec(chains=2, draws=150, tune=150, seed=2))
    champion = fit(data, spec)
    channels = insights.channel_summary(champion.idata, champion.scaling, spec, data)
    cfg = SensitivityConfig(spend_share="on", scale=1e-3, draws=100, tune=1000, chains=4)
    result = run_sensitivity(data, spec, champion.scaling, channels, cfg)
    assert result.reused_graph
    # Capped at the champion's own settings.
    assert (result.chains, result.draws, result.tune) == (2, 100, 150)
    table = result.table.set_index("channel")
    assert list(table.index) == list(data.channels)
    assert (table["alt_roas_mean"] < 0.3 * table["roas_mean"]).all()
    assert table["material"].all()
    assert "1000x" not in result.alternative and "0.001x as wide" in result.alternative


# --- the report's "what changed" and prior-sensitivity content -----------------------------------------


def _report_data(previous: dict | None, drift: list[dict], events: list[dict], sensitivity=None):  # noqa: ANN001, ANN202
    run = pd.Series(
        {"model_id": "m2", "train_end": pd.Timestamp("2024-06-30"), "config_hash": "a", "code_version": "1",
         "n_lift_tests": 0, "data_fingerprint": "f2", "scaling_source": "m1", "previous_champion": "m1"}
    )  # fmt: skip
    prev = None if previous is None else run.copy()
    if prev is not None:
        prev.update(pd.Series({"model_id": "m1", "data_fingerprint": "f1", **previous}))
    empty = pd.DataFrame()
    event_columns = ["event_id", "model_id", "new_model_id", "rule", "detected_week"]
    return ReportData(
        market="north", kpi="sales", catalog=Path("bi.duckdb"), published_at=None, run=run, latest_run=None,
        channels=empty, periods=empty, decomposition=empty, response_curves=empty, adstock=empty,
        fit_weekly=empty, cv_metrics=empty, cv_stability=empty, cv_fold_parameters=empty,
        roas_drift=pd.DataFrame(drift), plan=None, recommendations=empty, scenarios=empty, deliveries=empty,
        tracking=empty, history=empty, drift_events=pd.DataFrame(events, columns=event_columns),
        previous_run=prev, sensitivity=empty if sensitivity is None else sensitivity,
    )  # fmt: skip


DRIFT = [
    {"channel": "tv", "champion_roas_mean": 2.0, "roas_mean": 2.02, "relative_change": 0.01,
     "within_champion_hdi": True},
    {"channel": "search", "champion_roas_mean": 1.0, "roas_mean": 1.6, "relative_change": 0.6,
     "within_champion_hdi": False},
]  # fmt: skip


def test_what_changed_names_new_weeks_and_unexplained_moves() -> None:
    assert what_changed(_report_data(None, [], []))["first"]
    changes = what_changed(_report_data({"train_end": pd.Timestamp("2024-06-16")}, DRIFT, []))
    assert changes["reasons"] == ["2 new weeks of data (2024-06-23 to 2024-06-30)"]
    assert [r["change_pct"] for r in changes["channels"]] == pytest.approx([1.0, 60.0])
    # Out of the previous interval on new weeks alone: the reader is told.
    assert changes["unexplained"] == ["search"]
    # A refresh that reweighted its anchor's draws (model.refresh.mode: importance) says so.
    data = _report_data({"train_end": pd.Timestamp("2024-06-16")}, DRIFT, [])
    data.run["refresh_anchor"], data.run["pareto_k"] = "m0", 0.123
    reasons = what_changed(data)["reasons"]
    assert reasons[1].startswith("taken in by reweighting the draws of m0") and "Pareto k 0.12" in reasons[1]


def test_what_changed_credits_a_drift_event_or_a_config_change() -> None:
    event = {"event_id": "drift-north-1", "model_id": "m1", "new_model_id": None, "rule": "cusum",
             "detected_week": pd.Timestamp("2024-06-23")}  # fmt: skip
    changes = what_changed(_report_data({"train_end": pd.Timestamp("2024-06-23")}, DRIFT, [event]))
    assert "1 new week of data (2024-06-30 to 2024-06-30)" in changes["reasons"]
    assert any("drift event drift-north-1 (cusum" in r for r in changes["reasons"])
    assert changes["unexplained"] == []
    changes = what_changed(_report_data({"config_hash": "b", "data_fingerprint": "f2"}, DRIFT, []))
    assert changes["reasons"] == [
        "the model configuration changed (spec, priors, sampler, channels or controls)"
    ]
    assert changes["unexplained"] == []
    restated = what_changed(_report_data({}, [], []))
    assert restated["reasons"][0].startswith("restated data in the same window")


def test_prior_sensitivity_content_states_its_age() -> None:
    table = pd.DataFrame(
        {"model_id": "m1", "train_end": pd.Timestamp("2024-06-02"), "computed_at": pd.Timestamp("2024-06-03"),
         "alternative": "channel-effect prior the same for every channel", "chains": 2, "draws": 500,
         "alt_max_r_hat": 1.01, "alt_divergences": 0, "channel": ["search", "tv"],
         "roas_mean": [1.0, 2.0], "relative_difference": [0.5, -0.1], "material": [True, False]}
    )  # fmt: skip
    assert prior_sensitivity(_report_data(None, [], [])) is None
    shown = prior_sensitivity(_report_data(None, [], [], sensitivity=table))
    assert not shown["on_champion"] and shown["weeks_old"] == 4
    assert shown["material"] == ["search"]
    assert [r["difference_pct"] for r in shown["rows"]] == pytest.approx([50.0, -10.0])


# --- the asset on a real project -------------------------------------------------------------------------


@pytest.mark.slow
def test_asset_records_publishes_and_reports_the_alternative(two_markets_project) -> None:  # noqa: ANN001
    """On a copy of the suite's fitted project, switching the prior sensitivity on runs it (no refit:
    the fit's code version does not hold it), records and publishes both markets' rows and the report
    shows them; the next run finds it not due and changes nothing."""
    config_path, _ = two_markets_project
    raw = yaml.safe_load(config_path.read_text())
    raw["model"]["sensitivity"] = {"enabled": True, "draws": 100, "tune": 100}
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(config_path.parent / "dagster_home"))
        instance = project_instance(cfg)
        log: list[str] = []
        summary = run_pipeline(cfg, instance=instance, log=log.append)
        assert summary.ok, summary.problems
        assert not any("model_fit" in line and "out of date" in line for line in log)
        with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
            rows = bi.execute("SELECT * FROM prior_sensitivity ORDER BY market, channel").df()
            champions = bi.execute("SELECT market, model_id FROM champion_model_runs").df()
        assert set(rows["market"]) == {"north", "south"}
        assert dict(zip(champions["market"], champions["model_id"], strict=True)) == dict(
            rows.groupby("market")["model_id"].first()
        )
        assert (rows["draws"] == 100).all() and (rows["chains"] == 2).all()
        assert rows["alt_roas_mean"].notna().all()
        assert (rows["alternative"].str.contains("the same for every channel")).all()
        report = (latest_report(cfg.reports_dir, "north") / "report.md").read_text()
        assert "How much the ROAS depends on the priors" in report
        north = rows[rows["market"] == "north"].iloc[0]
        assert f"| {north['channel']} | {fmt_ratio(north['roas_mean'])} [" in report
        assert f"| {fmt_ratio(north['alt_roas_mean'])} [" in report
        assert "This is the market's first champion model" in report

        (event,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("prior_sensitivity"), asset_partitions=["north"]),
            limit=1,
        ).records
        metadata = event.event_log_entry.asset_materialization.metadata
        assert metadata["status"].value == "computed" and metadata["reused_compiled_graph"].value
        # A second run: nothing is due, the rows stay as they were.
        again = run_pipeline(cfg, instance=instance, log=lambda _m: None, refit=False)
        assert again.ok
        with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
            count = conn.execute("SELECT count(*) FROM models.prior_sensitivity").fetchone()[0]
        assert count == len(rows)


# --- refresh stability: control-variate means (insights.stein_controls) -----------------------------------


def test_control_variate_mean_removes_the_monte_carlo_error_of_a_gaussian() -> None:
    """Draws of N(mu, I): the Stein controls are exact linear functions of x, so the control-variate
    mean of x is mu itself while the plain mean is off by the sampling error; a column with infinities
    keeps its plain mean (no regression on it)."""
    import arviz as az

    rng = np.random.default_rng(0)
    mu = np.array([1.0, -2.0, 0.5])
    x = mu + rng.normal(size=(2, 300, 3))
    gradient = -(x - mu)
    idata = az.from_dict(
        posterior={"x": x}, sample_stats={"gradient": gradient, "unconstrained_draw": x}
    )
    controls = insights.stein_controls(idata)
    assert controls.shape == (600, 6)
    values = np.concatenate([x.reshape(600, 3), np.full((600, 1), np.inf)], axis=1)
    plain = values.mean(axis=0)
    adjusted = insights.control_variate_mean(values, controls)
    assert np.abs(plain[:3] - mu).max() > 1e-3
    assert adjusted[:3] == pytest.approx(mu, abs=1e-9)
    assert adjusted[3] == np.inf
    # x**2 (mean mu**2 + 1) is linear in the second-order controls x * g + 1 as well.
    squares = insights.control_variate_mean(x.reshape(600, 3) ** 2, controls)
    assert squares == pytest.approx(mu**2 + 1, abs=1e-9)
    assert insights.stein_controls(az.from_dict(posterior={"x": x})) is None
    # Too few draws for the regression: the plain mean.
    few = insights.control_variate_mean(values[:20], controls[:20])
    assert few[:3] == pytest.approx(values[:20, :3].mean(axis=0))


def test_control_variates_option_keeps_existing_spec_hashes() -> None:
    assert "control_variates" not in ModelSpec().model_dump()
    assert ModelSpec(control_variates=False).model_dump()["control_variates"] is False
    assert ModelSpec.model_validate_json(ModelSpec().model_dump_json()).control_variates


def test_both_subsections_render_in_html_and_markdown() -> None:
    from mmm_pipeline.report.render import environment

    table = pd.DataFrame(
        {"model_id": "m2", "train_end": pd.Timestamp("2024-06-30"), "computed_at": pd.Timestamp("2024-07-01"),
         "alternative": "channel-effect prior HalfNormal the same for every channel", "chains": 2,
         "draws": 500, "alt_max_r_hat": 1.004, "alt_divergences": 0, "channel": ["search", "tv"],
         "roas_mean": [1.0, 2.0], "roas_hdi_low": [0.5, 1.5], "roas_hdi_high": [1.5, 2.5],
         "alt_roas_mean": [1.5, 1.9], "alt_roas_hdi_low": [0.9, 1.3], "alt_roas_hdi_high": [2.2, 2.6],
         "relative_difference": [0.5, -0.05], "material": [True, False]}
    )  # fmt: skip
    data = _report_data({"train_end": pd.Timestamp("2024-06-16")}, DRIFT, [], sensitivity=table)
    context = {"changes": what_changed(data), "sensitivity": prior_sensitivity(data)}
    markdown = environment().get_template("changes_sensitivity.md.j2").render(**context)
    html = environment().get_template("changes_sensitivity.html.j2").render(**context)
    assert "| search | 1.00 [0.50 – 1.50] | 1.50 [0.90 – 2.20] | +50% | yes |" in markdown
    assert "| search | 1.00 | 1.60 | +60.0% | no |" in markdown
    assert "2 new weeks of data (2024-06-23 to 2024-06-30)" in markdown
    assert "no drift event or configuration change to explain it: search" in markdown
    assert "<td>+50%</td>" in html and "the same for every channel" in html
    first = _report_data(None, [], [])
    markdown = environment().get_template("changes_sensitivity.md.j2").render(
        changes=what_changed(first), sensitivity=prior_sensitivity(first)
    )
    assert "first champion model" in markdown and "Not computed yet" in markdown
