"""Every landing-file rule, one bad file each: the error names the file, the rows and the rule."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mmm_pipeline.config import load_config
from mmm_pipeline.landing import LandingFileError, validate_landing_file

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
]


@pytest.mark.parametrize(
    ("kind", "text", "rule", "rows"), BAD_FILES, ids=[b[2] + "-" + b[0] for b in BAD_FILES]
)
def test_bad_file_names_file_rows_and_rule(cfg, tmp_path, kind, text, rule, rows) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(LandingFileError) as caught:
        validate_landing_file(kind, path, cfg)
    error = caught.value
    assert rule in error.rules
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
