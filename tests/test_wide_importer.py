"""The wide-table importer on the real case-study table, plus the errors a user is likely to hit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from mmm_pipeline.config import load_config
from mmm_pipeline.ingest.importers.wide import (
    WideImportError,
    WideMapping,
    config_entries,
    import_wide,
    load_wide_mapping,
    slugify,
)

DEMO = Path(__file__).resolve().parent.parent / "mmm_pipeline" / "demo"
TABLE = DEMO / "case_study_weekly.csv"
MAPPING = DEMO / "case_study_mapping.yaml"
CHANNELS = {
    "direct_mail": "dm",
    "insert": "inst",
    "newspaper": "nsp",
    "radio": "audtr",
    "tv": "vidtr",
    "social": "so",
    "online_display": "on",
}


@pytest.fixture(scope="module")
def wide() -> pd.DataFrame:
    return pd.read_csv(TABLE)


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("landing")
    written = import_wide(TABLE, MAPPING, root)
    assert sorted(p.relative_to(root).as_posix() for p in written) == [
        "controls/case_study_weekly.csv",
        "kpi/case_study_weekly.csv",
        "media/case_study_weekly.csv",
    ]
    return root


def _read(landing: Path, kind: str) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted((landing / kind).glob("*.csv"))], ignore_index=True)


def test_media_rows_hold_the_wide_spend_and_impressions(landing: Path, wide: pd.DataFrame) -> None:
    media = _read(landing, "media")
    assert list(media.columns) == ["date", "market", "channel", "spend", "impressions"]
    assert len(media) == 209 * 7
    assert media.groupby("channel").size().to_dict() == dict.fromkeys(CHANNELS, 209)
    assert media["date"].nunique() == 209
    assert (media["date"].min(), media["date"].max()) == ("2014-08-03", "2018-07-29")
    assert set(media["market"]) == {"all"}
    for name, code in CHANNELS.items():
        rows = media[media["channel"] == name]
        assert rows["spend"].sum() == pytest.approx(wide[f"mdsp_{code}"].sum(), rel=1e-12)
        assert rows["impressions"].sum() == wide[f"mdip_{code}"].sum()
    first_tv = media[(media["date"] == "2014-08-03") & (media["channel"] == "tv")].iloc[0]
    assert first_tv["spend"] == 216725.59 and first_tv["impressions"] == 10038746


def test_kpi_and_control_rows(landing: Path, wide: pd.DataFrame) -> None:
    kpi = _read(landing, "kpi")
    assert list(kpi.columns) == ["date", "market", "sales"]
    assert len(kpi) == 209
    assert kpi["sales"].tolist() == wide["sales"].tolist()

    controls = _read(landing, "controls")
    assert list(controls.columns) == ["date", "market", "control", "value"]
    holidays = [c for c in wide.columns if c.startswith("hldy_")]
    assert len(controls) == 209 * len(holidays) == 209 * 22
    assert {"hldy_black_friday", "hldy_fathers_day", "hldy_new_years_day"} <= set(controls["control"])
    bf = controls[controls["control"] == "hldy_black_friday"]
    assert bf["value"].tolist() == wide["hldy_Black Friday"].tolist()


def test_weekly_split_is_the_unsplit_import_in_209_files(
    landing: Path, tmp_path: Path, wide: pd.DataFrame
) -> None:
    written = import_wide(TABLE, load_wide_mapping(MAPPING), tmp_path, split="week", week_start="sunday")
    assert len(written) == 3 * 209
    for kind in ("media", "kpi", "controls"):
        files = sorted((tmp_path / kind).iterdir())
        assert len(files) == 209  # and no temp files left behind
        assert files[0].name == "case_study_weekly_2014-08-03.csv"
        assert all(set(pd.read_csv(f)["date"]) == {f.stem.rsplit("_", 1)[1]} for f in files[:5])
        pd.testing.assert_frame_equal(_read(tmp_path, kind), _read(landing, kind))


def test_parquet_table_imports_like_csv(landing: Path, tmp_path: Path, wide: pd.DataFrame) -> None:
    table = tmp_path / "export.parquet"
    wide.to_parquet(table)
    import_wide(table, MAPPING, tmp_path / "landing", file_stem="case_study_weekly")
    for kind in ("media", "kpi", "controls"):
        pd.testing.assert_frame_equal(_read(tmp_path / "landing", kind), _read(landing, kind))


def test_market_column_and_date_format(tmp_path: Path) -> None:
    table = tmp_path / "markets.csv"
    table.write_text("Week,Region,TV Spend,Revenue\n03/08/2014,north,10,100\n03/08/2014,south,20,200\n")
    mapping = WideMapping(
        date_column="Week",
        date_format="%d/%m/%Y",
        market_column="Region",
        kpi={"column": "Revenue"},
        channels={"tv": {"spend": "TV Spend"}},
    )
    import_wide(table, mapping, tmp_path / "landing")
    media = pd.read_csv(tmp_path / "landing" / "media" / "markets.csv")
    assert media.to_dict("records") == [
        {"date": "2014-08-03", "market": "north", "channel": "tv", "spend": 10},
        {"date": "2014-08-03", "market": "south", "channel": "tv", "spend": 20},
    ]


def test_missing_column_is_named_with_its_mapping_key(tmp_path: Path) -> None:
    raw = yaml.safe_load(MAPPING.read_text())
    raw["channels"]["tv"]["spend"] = "mdsp_vidtv"
    with pytest.raises(WideImportError, match=r"case_study_weekly\.csv: no column 'mdsp_vidtv'") as err:
        import_wide(TABLE, WideMapping.model_validate(raw), tmp_path)
    assert "channels.tv.spend" in str(err.value) and "'mdsp_vidtr'" in str(err.value)
    assert not any(tmp_path.iterdir())


def test_two_columns_with_one_slug_are_an_error(tmp_path: Path) -> None:
    table = tmp_path / "dupes.csv"
    table.write_text("date,spend,hldy_Black Friday,hldy_black-friday\n2024-01-01,1,0,1\n")
    mapping = WideMapping(
        date_column="date", channels={"tv": {"spend": "spend"}}, controls_from_prefix=[{"prefix": "hldy_"}]
    )
    with pytest.raises(
        WideImportError, match="'hldy_Black Friday' and 'hldy_black-friday'.*'hldy_black_friday'"
    ):
        import_wide(table, mapping, tmp_path / "landing")


def test_bad_mapping_key_is_named_with_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "mapping.yaml"
    bad.write_text("date_column: wk_strt_dt\nchannels:\n  tv: {spnd: mdsp_vidtr}\n  TV: {spend: x}\n")
    with pytest.raises(WideImportError) as err:
        load_wide_mapping(bad)
    message = str(err.value)
    assert str(bad) in message
    assert "channels.tv.spnd" in message and "channels.tv.spend" in message
    assert "'TV' is not a safe identifier" in message


def test_non_numeric_value_is_named_with_column_and_date(tmp_path: Path) -> None:
    table = tmp_path / "text.csv"
    table.write_text("date,spend\n2024-01-01,1\n2024-01-08,n/a?\n")
    mapping = WideMapping(date_column="date", channels={"tv": {"spend": "spend"}})
    with pytest.raises(WideImportError, match="column 'spend' holds 'n/a\\?' on 2024-01-08"):
        import_wide(table, mapping, tmp_path / "landing")


@pytest.mark.parametrize(
    ("label", "slug"),
    [
        ("hldy_Father's Day", "hldy_fathers_day"),
        ("  TV -- Spend (€) ", "tv_spend"),
        ("4th of July", "c_4th_of_july"),
    ],
)
def test_slugify(label: str, slug: str) -> None:
    assert slugify(label) == slug


def test_demo_config_matches_the_mapping(wide: pd.DataFrame) -> None:
    config = load_config(DEMO / "case_study_config.yaml")
    entries = config_entries(load_wide_mapping(MAPPING), wide.columns)
    assert [{"name": c.name, "aliases": c.aliases} for c in config.channels] == entries["channels"]
    assert [{"name": c.name, "aliases": c.aliases} for c in config.controls] == entries["controls"]
    assert config.channel_names == list(CHANNELS)
    assert config.calendar.week_start == "sunday" and config.kpi.name == "sales"
    groups = {c.name: c.group for c in config.channels}
    assert {n for n, g in groups.items() if g == "digital"} == {"social", "online_display"}
    assert {n for n, g in groups.items() if g == "traditional"} == set(CHANNELS) - {
        "social",
        "online_display",
    }
