"""Every landing-file rule, one bad file each: the error names the file, the rows and the rule."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mmm_pipeline.config import load_config
from mmm_pipeline.ingest.landing import LandingFileError, validate_landing_file
from mmm_pipeline.ingest.schemas import LANDING_RULES

CONFIG = """
calendar: {week_start: sunday, start: 2020-01-05}
markets: [north, south]
channels:
  - {name: tv, aliases: [TV, television]}
  - {name: search, aliases: [Google Ads]}
controls:
  - {name: price}
validation: {as_of: 2024-06-30}
"""


@pytest.fixture
def cfg(tmp_path: Path):
    path = tmp_path / "mmm_pipeline.yaml"
    path.write_text(CONFIG)
    return load_config(path)


def _file(tmp_path: Path, text: str, name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_text(text.strip() + "\n")
    return path


BAD_FILES = [
    ("media", "date,channel,spend\n", "no_empty_files", []),
    ("media", "date,channel,impressions\n2020-01-05,tv,5", "required_columns", []),
    ("media", "date,channel,spend\n2020-01-05,tv,5\n2020-02-31,tv,5", "parseable_dates", [2]),
    (
        "media",
        "date,channel,spend\n2020-01-05,tv,-5\n2020-01-05,search,abc",
        "nonnegative_numeric_spend",
        [1, 2],
    ),
    ("media", "date,channel,spend,impressions\n2020-01-05,tv,5,-1", "nonnegative_numeric_spend", [1]),
    ("media", "date,channel,spend\n2020-01-05,tv,5\n2020-01-05,TV,6", "unique_keys", [1, 2]),
    ("media", "date,channel,spend\n2020-01-05,tv,5\n2020-01-05,radio,6", "known_channels", [2]),
    ("media", "date,channel,spend,market\n2020-01-05,tv,5,east", "known_markets", [1]),
    ("media", "date,channel,spend\n2020-01-05,tv,5\n2031-01-05,tv,5", "no_future_dates", [2]),
    ("media", "date,channel,spend\n2019-12-29,tv,5", "dates_within_calendar", [1]),
    ("media", "date,channel,spend\n2020-01-05,,5", "missing_values", [1]),
    ("kpi", "date,sales\n2020-01-05,100\n2020-01-12,n/a", "numeric_values", [2]),
    ("controls", "date,control,value\n2020-01-05,weather,1", "known_controls", [1]),
    ("media", "date,channel,spend\n2020-01-05,tv,5\n2020-01-05,search,inf", "finite_numbers", [2]),
    ("media", "date,channel,spend\n2020-01-05,tv,-Infinity\n2020-01-05,search,NaN", "finite_numbers", [1, 2]),
    ("media", "date,channel,spend,impressions\n2020-01-05,tv,5,1e999", "finite_numbers", [1]),
    ("kpi", "date,sales\n2020-01-05,100\n2020-01-12,Infinity", "finite_numbers", [2]),
    ("controls", "date,control,value\n2020-01-05,price,nan", "finite_numbers", [1]),
    ("media", "date,channel,spend\n2020-01-05,tv,1e300", "plausible_magnitude", [1]),
    ("kpi", "date,sales\n2020-01-05,1e300", "plausible_magnitude", [1]),
    ("kpi", "date,sales\n2020-01-05,100\n2020-01-12,-3", "nonnegative_kpi", [2]),
    (
        "media",
        "date,channel,spend\n03/02/2020,tv,5\n04/02/2020,tv,5\n04/04/2020,tv,5",
        "unambiguous_dates",
        [1, 2],
    ),
    ("media", "date,channel,spend\n2020-01-05,tv,5\n12/01/2020,tv,5", "parseable_dates", [2]),
    ("media", "date,channel,spend\n,tv,5", "missing_values", [1]),
]


@pytest.mark.parametrize(
    ("kind", "text", "rule", "rows"), BAD_FILES, ids=[b[2] + "-" + b[0] for b in BAD_FILES]
)
def test_bad_file_names_file_rows_and_rule(cfg, tmp_path, kind, text, rule, rows) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(LandingFileError) as caught:
        validate_landing_file(kind, path, cfg)
    error = caught.value
    assert rule in error.rules, str(error)
    assert str(path) in str(error)
    assert f"rule '{rule}'" in str(error)
    violation = next(v for v in error.violations if v.rule == rule)
    assert violation.rows == rows
    if rows:
        assert f"row(s) {rows[0]}" in str(error)


def test_unknown_channel_error_names_the_channel(cfg, tmp_path) -> None:
    path = _file(tmp_path, "date,channel,spend\n2020-01-05,Tik Tok,5")
    with pytest.raises(LandingFileError, match="Tik Tok"):
        validate_landing_file("media", path, cfg)


def test_unknown_channels_admitted_when_configured(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text(
        CONFIG.replace("as_of: 2024-06-30", "as_of: 2024-06-30, allow_unknown_channels: true")
    )
    cfg = load_config(tmp_path / "c.yaml")
    rows = validate_landing_file(
        "media", _file(tmp_path, "date,channel,spend,market\n2020-01-05,radio,6,north"), cfg
    )
    assert rows["channel"].tolist() == ["radio"]


def test_daily_rows_map_to_configured_week_and_aliases(cfg, tmp_path) -> None:
    text = "date,channel,spend,impressions,market\n" + "\n".join(
        f"2020-01-{d:02d},Google Ads,1.5,,south" for d in range(5, 13)
    )
    rows = validate_landing_file("media", _file(tmp_path, text), cfg)
    assert set(rows["channel"]) == {"search"}
    assert rows["week"].dt.strftime("%Y-%m-%d").tolist() == ["2020-01-05"] * 7 + ["2020-01-12"]
    assert rows["impressions"].isna().all()
    assert rows["market"].unique().tolist() == ["south"]


def test_parquet_files_are_read(cfg, tmp_path) -> None:
    path = tmp_path / "kpi.parquet"
    pd.DataFrame({"date": pd.to_datetime(["2020-01-05"]), "sales": [10.0], "market": ["north"]}).to_parquet(
        path
    )
    rows = validate_landing_file("kpi", path, cfg)
    assert rows["kpi"].tolist() == [10.0]


def _markets_free(tmp_path: Path, **validation: object) -> object:
    extra = "".join(f", {k}: {v}" for k, v in validation.items())
    text = CONFIG.replace("markets: [north, south]\n", "").replace(
        "as_of: 2024-06-30", f"as_of: 2024-06-30{extra}"
    )
    (tmp_path / "free.yaml").write_text(text)
    return load_config(tmp_path / "free.yaml")


@pytest.mark.parametrize("market", ["../../../../x", "a/b", "x..y", "new york", ".hidden", ""])
def test_market_names_from_data_must_be_identifiers(tmp_path, market) -> None:
    cfg = _markets_free(tmp_path)
    path = _file(tmp_path, f"date,channel,spend,market\n2020-01-05,tv,5,ok-1.a\n2020-01-05,tv,5,{market}")
    with pytest.raises(LandingFileError) as caught:
        validate_landing_file("media", path, cfg)
    rule = "missing_values" if market == "" else "identifier_names"
    assert next(v for v in caught.value.violations if v.rule == rule).rows == [2]


def test_unknown_channels_admitted_only_as_identifiers(tmp_path) -> None:
    cfg = _markets_free(tmp_path, allow_unknown_channels="true")
    path = _file(tmp_path, "date,channel,spend\n2020-01-05,radio,5\n2020-01-05,../etc,5")
    with pytest.raises(LandingFileError, match="identifier_names") as caught:
        validate_landing_file("media", path, cfg)
    assert caught.value.violations[0].rows == [2]


def _dates_read(cfg, tmp_path: Path, values: list[str]) -> list[str]:
    text = "date,channel,spend,market\n" + "\n".join(f"{v},tv,5,north" for v in values)
    rows = validate_landing_file("media", _file(tmp_path, text), cfg)
    return rows["date"].dt.strftime("%Y-%m-%d").tolist()


def test_one_date_format_per_file_never_a_guess_per_row(cfg, tmp_path) -> None:
    # 03/06 beside 13/06: only day-first reads every row, so 03/06 is 3 June (not 6 March).
    assert _dates_read(cfg, tmp_path, ["03/06/2024", "13/06/2024"]) == ["2024-06-03", "2024-06-13"]
    assert _dates_read(cfg, tmp_path, ["03.06.2024"]) == ["2024-06-03"]
    assert _dates_read(cfg, tmp_path, ["06/13/2024", "06/03/2024"]) == ["2024-06-13", "2024-06-03"]


def test_iso_timestamps_with_time_and_zone_are_the_day_they_denote(cfg, tmp_path) -> None:
    values = ["2024-06-03T00:00:00Z", "2024-06-10T23:30:00-05:00", "2024-06-17 08:15:00+0200"]
    assert _dates_read(cfg, tmp_path, values) == ["2024-06-03", "2024-06-10", "2024-06-17"]


def test_ambiguous_file_names_the_rows_and_how_to_declare_the_format(cfg, tmp_path) -> None:
    path = _file(tmp_path, "date,channel,spend,market\n03/06/2024,tv,5,north\n05/05/2024,tv,5,north")
    with pytest.raises(LandingFileError) as caught:
        validate_landing_file("media", path, cfg)
    violation = caught.value.violations[0]
    assert (violation.rule, violation.rows) == ("unambiguous_dates", [1])  # 05/05 reads the same either way
    assert "date_format" in str(caught.value) and "03 Jun 2024" in str(caught.value)
    declared = load_config_with(tmp_path, "date_format: '%m/%d/%Y'")
    assert validate_landing_file("media", path, declared)["date"].dt.strftime("%m-%d").tolist() == [
        "03-06",
        "05-05",
    ]


def load_config_with(tmp_path: Path, validation: str):
    (tmp_path / "declared.yaml").write_text(
        CONFIG.replace("as_of: 2024-06-30", f"as_of: 2024-06-30, {validation}")
    )
    return load_config(tmp_path / "declared.yaml")


def test_declared_format_rejects_other_formats(tmp_path) -> None:
    cfg = load_config_with(tmp_path, "date_format: '%d/%m/%Y'")
    path = _file(tmp_path, "date,channel,spend,market\n03/06/2024,tv,5,north\n2024-06-10,tv,5,north")
    with pytest.raises(LandingFileError) as caught:
        validate_landing_file("media", path, cfg)
    assert [(v.rule, v.rows) for v in caught.value.violations] == [("parseable_dates", [2])]


def test_negative_kpi_allowed_when_configured(tmp_path) -> None:
    cfg = load_config_with(tmp_path, "allow_negative_kpi: true")
    rows = validate_landing_file("kpi", _file(tmp_path, "date,sales,market\n2020-01-05,-3,north"), cfg)
    assert rows["kpi"].tolist() == [-3.0]


def test_every_rule_reported_is_documented() -> None:
    for rule in ("finite_numbers", "plausible_magnitude", "nonnegative_kpi", "unambiguous_dates",
                 "identifier_names", "readable_format", "landing_layout", "within_history",
                 "spend_far_below_history"):  # fmt: skip
        assert rule in LANDING_RULES


def test_compressed_zipped_and_excel_files_are_read(cfg, tmp_path) -> None:
    import gzip
    import zipfile

    text = "date,channel,spend,market\n2020-01-05,tv,5,north\n"
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(text.encode()))
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as archive:
        archive.writestr("export/b.csv", text)
    frame = pd.DataFrame(
        {"date": pd.to_datetime(["2020-01-05"]), "channel": ["tv"], "spend": [5], "market": ["north"]}
    )
    frame.to_excel(tmp_path / "c.xlsx", index=False)
    for name in ("a.csv.gz", "b.zip", "c.xlsx"):
        rows = validate_landing_file("media", tmp_path / name, cfg)
        assert rows[["channel", "spend"]].values.tolist() == [["tv", 5.0]], name
        assert rows["date"].dt.strftime("%Y-%m-%d").tolist() == ["2020-01-05"], name


def test_zip_with_two_files_and_workbook_with_two_sheets_are_unreadable(cfg, tmp_path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a.csv", "date,channel,spend\n")
        archive.writestr("b.csv", "date,channel,spend\n")
    frame = pd.DataFrame({"date": ["2020-01-05"], "channel": ["tv"], "spend": [5]})
    with pd.ExcelWriter(tmp_path / "two.xlsx") as writer:
        frame.to_excel(writer, sheet_name="a", index=False)
        frame.to_excel(writer, sheet_name="b", index=False)
    for name in ("two.zip", "two.xlsx"):
        with pytest.raises(LandingFileError) as caught:
            validate_landing_file("media", tmp_path / name, cfg)
        assert caught.value.rules == ["readable_format"], name
