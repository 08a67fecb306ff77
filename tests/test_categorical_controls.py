"""Categorical controls (events, promotions, holidays by name): declared, landed, encoded, fitted.

The pure encoding rules run on small frames; the landing rules on real files; the whole chain (long
format and ``import-wide``, ``run`` through the model, tracking, BI) through the real CLI, marked slow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import small_model_config

from mmm_pipeline.config import load_config
from mmm_pipeline.ingest.categorical import (
    CategoricalError,
    choose_encoding,
    encode_controls,
    with_indicators,
)
from mmm_pipeline.ingest.contract import ControlConfig
from mmm_pipeline.ingest.importers.wide import WideImportError, WideMapping, config_entries, import_wide
from mmm_pipeline.ingest.landing import LandingFileError, validate_landing_file
from mmm_pipeline.model.refit import config_hash, training_data
from mmm_pipeline.settings import ConfigError

CLI = str(Path(sys.executable).with_name("mmm-pipeline"))
EVENTS = ControlConfig(name="events", kind="categorical")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=900)


# ---- encoding rules (pure) -----------------------------------------------------------------------


def test_baseline_is_the_no_label_group_when_there_is_one() -> None:
    labels = pd.Series(["event1", None, "na", "NONE", "", "Event 2", "event1", "event1", "event1"])
    encoding = choose_encoding(EVENTS, labels, "test data")
    # None, 'na', 'NONE' and '' are one group, although event1 is more frequent.
    assert encoding.baseline == "none" and encoding.weeks["none"] == 4
    assert encoding.levels == ("event1", "event_2")
    assert encoding.names == ["events__event1", "events__event_2"]


def test_baseline_is_the_most_frequent_label_without_a_no_label_group() -> None:
    labels = pd.Series(["mid", "High", "mid", "low", "high", "mid"])
    encoding = choose_encoding(ControlConfig(name="tier", kind="categorical"), labels, "x")
    assert (encoding.baseline, encoding.levels) == ("mid", ("high", "low"))  # 'High' and 'high' are one
    configured = ControlConfig(name="tier", kind="categorical", baseline="LOW")
    assert choose_encoding(configured, labels, "x").baseline == "low"
    with pytest.raises(CategoricalError, match="baseline 'top' does not occur in x"):
        choose_encoding(ControlConfig(name="tier", kind="categorical", baseline="top"), labels, "x")


def test_level_cap_names_the_control_column_and_count() -> None:
    labels = pd.Series([f"promo {i}" for i in range(5)] + ["na"])
    capped = ControlConfig(name="promo", kind="categorical", max_levels=4)
    with pytest.raises(CategoricalError) as err:
        choose_encoding(capped, labels, "market 'all', training weeks 2022-01-03..2022-02-07")
    message = str(err.value)
    assert "'promo'" in message and "column control_promo" in message
    assert "6 distinct labels" in message and "max_levels is 4" in message
    assert "market 'all', training weeks 2022-01-03..2022-02-07" in message


def test_indicators_replace_the_label_and_forecasts_reuse_the_fit_levels() -> None:
    frame = pd.DataFrame(
        {
            "week": pd.date_range("2022-01-03", periods=5, freq="7D"),
            "control_price": [1.0, 2.0, 3.0, 4.0, 5.0],
            "control_events": ["na", "event1", None, "event2", "na"],
        }
    )
    encoded, names, _ = encode_controls(frame, [ControlConfig(name="price"), EVENTS], "x")
    assert names == ["price", "events__event1", "events__event2"]
    assert "control_events" not in encoded.columns
    assert encoded["control_events__event1"].tolist() == [0, 1, 0, 0, 0]
    # Later weeks: a label the fit never saw (event3) gets no column, so it counts as the baseline.
    later = pd.DataFrame({"control_price": [1.0, 1.0], "control_events": ["event3", "Event2"]})
    forecast = with_indicators(later, names)
    assert forecast["control_events__event1"].tolist() == [0, 0]
    assert forecast["control_events__event2"].tolist() == [0, 1]


def test_config_rules_for_categorical_controls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'aggregate' does not apply"):
        ControlConfig(name="events", kind="categorical", aggregate="max")
    with pytest.raises(ValueError, match="baseline only apply to a control with kind: categorical"):
        ControlConfig(name="price", baseline="na")
    config = tmp_path / "c.yaml"
    config.write_text(
        "calendar: {start: 2022-01-03}\nchannels: [{name: tv}]\n"
        "controls: [{name: events, kind: categorical}, {name: events__x}]\n"
    )
    with pytest.raises(ConfigError, match="'events__x' looks like an indicator"):
        load_config(config)


# ---- landing -------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = tmp_path / "mmm_pipeline.yaml"
    config.write_text(
        "calendar: {start: 2022-01-03}\nchannels: [{name: tv}]\n"
        "controls: [{name: price}, {name: promo, kind: categorical}]\n"
        "validation: {as_of: 2023-01-01}\n"
    )
    return config


def test_labels_of_a_declared_control_land_as_labels(project: Path, tmp_path: Path) -> None:
    file = tmp_path / "controls.csv"
    file.write_text(
        "date,control,value\n2022-01-03,promo, Spring Sale \n2022-01-03,price,9.5\n2022-01-10,promo,7\n"
    )
    rows = validate_landing_file("controls", file, load_config(project))
    assert rows["label"].tolist() == ["Spring Sale", None, "7"]
    assert rows["value"].isna().tolist() == [True, False, True]
    assert rows["value"].iloc[1] == 9.5


def test_labels_of_an_undeclared_control_say_how_to_declare_it(project: Path, tmp_path: Path) -> None:
    file = tmp_path / "controls.csv"
    file.write_text("date,control,value\n2022-01-03,price,na\n2022-01-10,price,event1\n2022-01-17,promo,x\n")
    with pytest.raises(LandingFileError) as err:
        validate_landing_file("controls", file, load_config(project))
    message = str(err.value)
    assert "rule 'numeric_values'" in message and "row(s) 1, 2 " in message
    assert "{name: price, kind: categorical}" in message  # the declared categorical 'promo' passed
    assert err.value.report()["violations"][0]["hint"].startswith("control(s) 'price' hold text")


# ---- import-wide ----------------------------------------------------------------------------------


def _wide_table(path: Path, events: list[str]) -> Path:
    dates = pd.date_range("2022-01-03", periods=len(events), freq="7D").strftime("%Y-%m-%d")
    pd.DataFrame({"date": dates, "tv": 100.0, "events": events, "price": 2.0}).to_csv(path, index=False)
    return path


def test_import_wide_detects_a_label_column_and_says_so(tmp_path: Path) -> None:
    table = _wide_table(tmp_path / "wide.csv", ["na", "event1", "na", "event2", "", "event1"])
    mapping = WideMapping(
        date_column="date", channels={"tv": {"spend": "tv"}}, controls={"events": "events", "price": "price"}
    )
    notes: list[str] = []
    import_wide(table, mapping, tmp_path / "landing", notify=notes.append)
    controls = pd.read_csv(tmp_path / "landing" / "controls" / "wide.csv")
    events = controls[controls["control"] == "events"]
    # Labels as delivered ('na' too: the model puts it in the no-label group); an empty cell is no row.
    assert events["value"].tolist() == ["na", "event1", "na", "event2", "event1"]
    assert len(notes) == 1 and "column 'events' holds labels ('event1', 'event2', 'na')" in notes[0]
    assert "{name: events, kind: categorical}" in notes[0]
    entries = config_entries(mapping, ["date", "tv", "events", "price"], categorical=["events"])
    assert entries["controls"] == [
        {"name": "events", "aliases": [], "kind": "categorical"},
        {"name": "price", "aliases": []},
    ]


def test_import_wide_level_cap_and_stray_text(tmp_path: Path) -> None:
    table = _wide_table(tmp_path / "wide.csv", [f"store {i}" for i in range(14)])
    mapping = WideMapping(date_column="date", controls={"events": "events"})
    with pytest.raises(
        WideImportError, match=r"column 'events' .*holds 14 distinct labels, more than max_levels 12"
    ):
        import_wide(table, mapping, tmp_path / "landing")
    declared = WideMapping(
        date_column="date", controls={"events": {"column": "events", "kind": "categorical", "max_levels": 20}}
    )
    import_wide(table, declared, tmp_path / "landing")
    numeric = WideMapping(date_column="date", controls={"events": {"column": "events", "kind": "numeric"}})
    with pytest.raises(WideImportError, match="not a number .*map it as {column: events, kind: categorical}"):
        import_wide(table, numeric, tmp_path / "other")


# ---- the whole chain through the CLI --------------------------------------------------------------


def test_refit_data_cap_error(project: Path) -> None:
    cfg = load_config(project)
    cfg = cfg.model_copy(
        update={"controls": [cfg.controls[0], ControlConfig(name="promo", kind="categorical", max_levels=3)]}
    )
    weeks = pd.date_range("2022-01-03", periods=60, freq="7D")
    frame = pd.DataFrame(
        {
            "market": "all",
            "week": weeks,
            "kpi": 1.0,
            "spend_tv": 1.0,
            "control_price": 1.0,
            "control_promo": ["a", "b", "c", "d"] * 15,
        }
    )
    with pytest.raises(
        CategoricalError, match="'promo' .*has 4 distinct labels in market 'all', training weeks"
    ):
        training_data(frame, "all", cfg, cfg.model)
    new = load_config(project)
    assert config_hash(cfg, cfg.model) != config_hash(new, new.model)  # the cap is part of the model


@pytest.mark.slow
def test_long_format_and_import_wide_categoricals_through_the_cli(tmp_path: Path) -> None:
    """A synthetic project gets an ``events`` column through ``import-wide`` and daily ``promo`` labels in
    the long format; event1 weeks carry a real KPI lift. Undeclared, the labels are rejected with how to
    declare them; declared, the model fits an indicator per label, tracks the held-out weeks, and BI keeps
    the labels; a cap below the label count fails the refit naming the control and the count."""
    assert _cli("init", "proj", "--example", "synthetic", cwd=tmp_path).returncode == 0
    config = tmp_path / "proj" / "mmm_pipeline.yaml"
    made = _cli("--config", str(config), "synthetic", "--seed", "3", "--weeks", "70", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    landing = tmp_path / "proj" / "data" / "landing"
    weeks = pd.date_range("2022-01-03", periods=70, freq="7D")
    rng = np.random.default_rng(0)
    events = rng.choice(["na", "event1", "event2"], size=70, p=[0.6, 0.2, 0.2])
    pd.DataFrame({"week": weeks.strftime("%Y-%m-%d"), "events": events}).to_csv(
        tmp_path / "events.csv", index=False
    )
    (tmp_path / "events.yaml").write_text("date_column: week\ncontrols: {events: events}\n")
    imported = _cli(
        "--config", str(config), "import-wide", str(tmp_path / "events.csv"),
        "--mapping", str(tmp_path / "events.yaml"), "--print-config", cwd=tmp_path,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert "note: column 'events' holds labels" in imported.stderr and "kind: categorical" in imported.stdout
    # Daily promo labels in the long format, only on promotion days (other weeks: no label).
    promo_days = [
        ("2022-03-01", "Spring Sale"),
        ("2022-03-02", "Spring Sale"),
        ("2022-11-25", "Black Friday"),
    ]
    promo_days += [("2023-03-07", "spring sale"), ("2023-04-04", "black-friday")]  # the last: after train_end
    pd.DataFrame(
        [(d, "promo", label) for d, label in promo_days], columns=["date", "control", "value"]
    ).to_csv(landing / "controls" / "promo.csv", index=False)
    kpi_file = landing / "kpi" / "kpi.csv"
    kpi = pd.read_csv(kpi_file)
    lift = 0.15 * kpi["sales"].mean()
    kpi["sales"] = kpi["sales"] + lift * (events == "event1")
    kpi.to_csv(kpi_file, index=False)
    raw = yaml.safe_load(config.read_text())
    raw["controls"] += [{"name": "events"}, {"name": "promo"}]  # not yet declared categorical
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    small_model_config(config, train_end=str(weeks[61].date()))
    raw = yaml.safe_load(config.read_text())
    raw["cv"]["enabled"] = False
    config.write_text(yaml.safe_dump(raw, sort_keys=False))

    rejected = _cli("--config", str(config), "run", "--until", "ingest", cwd=tmp_path)
    assert rejected.returncode == 1
    assert "{name: events, kind: categorical}" in rejected.stderr
    assert "{name: promo, kind: categorical}" in rejected.stderr

    raw["controls"][-2:] = [
        {"name": "events", "kind": "categorical"},
        {"name": "promo", "kind": "categorical"},
    ]
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    for name in ("events.csv", "promo.csv"):  # deliver the quarantined files again
        (landing / "controls" / name).unlink(missing_ok=True)
    import_wide(tmp_path / "events.csv", tmp_path / "events.yaml", landing)
    pd.DataFrame(
        [(d, "promo", label) for d, label in promo_days], columns=["date", "control", "value"]
    ).to_csv(landing / "controls" / "promo.csv", index=False)
    result = _cli("--config", str(config), "run", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Champion of market all: all-" in result.stdout

    cfg = load_config(config)
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        table = bi.execute(
            "SELECT week, control_events, control_promo FROM fct_modeling_weekly ORDER BY week"
        ).df()
        params = (
            bi.execute(
                "SELECT parameter, mean, hdi_low, hdi_high FROM champion_parameter_summary "
                "WHERE parameter LIKE 'gamma_control%'"
            )
            .df()
            .set_index("parameter")
        )
        tracked = bi.execute("SELECT count(*) FROM performance_tracking").fetchone()[0]
    # BI keeps the labels: events as delivered, promo as the week's label (weeks without one: NULL).
    assert table["control_events"].tolist() == events.tolist()
    promo = table.set_index(table["week"].dt.strftime("%Y-%m-%d"))["control_promo"]
    assert promo["2022-02-28"] == "Spring Sale" and promo["2022-11-21"] == "Black Friday"
    assert promo.notna().sum() == 4
    # One coefficient per label against the baseline (no label); the real event1 lift is found.
    assert {"gamma_control[events__event1]", "gamma_control[events__event2]"} <= set(params.index)
    assert {"gamma_control[promo__black_friday]", "gamma_control[promo__spring_sale]"} <= set(params.index)
    assert params.loc["gamma_control[events__event1]", "hdi_low"] > 0
    assert (
        params.loc["gamma_control[events__event2]", "hdi_low"]
        < 0
        < params.loc["gamma_control[events__event2]", "hdi_high"]
    )
    assert tracked == 8  # the held-out weeks were forecast with the fit's indicators

    raw["controls"][-1] = {"name": "promo", "kind": "categorical", "max_levels": 2}
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    capped = _cli("--config", str(config), "run", cwd=tmp_path)
    assert capped.returncode == 1
    assert "categorical control 'promo'" in capped.stderr and "3 distinct labels" in capped.stderr
