"""Bad and unusual deliveries through the real CLI (ingestion only): every landing entry is accounted
for, a touched backup never undoes a correction, history ceilings reject or warn, plan files exit 2."""

from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from mmm_pipeline.cli import main

CONFIG = """
calendar: {week_start: monday, start: 2024-01-01, holidays_country: null}
channels: [{name: tv}, {name: search}]
validation: {as_of: 2024-12-31%s}
optimization: {enabled: false}
"""


def _project(tmp_path: Path, validation: str = "") -> Path:
    config = tmp_path / "project" / "mmm_pipeline.yaml"
    config.parent.mkdir()
    config.write_text(CONFIG % validation)
    for kind in ("media", "kpi", "controls"):
        (config.parent / "data" / "landing" / kind).mkdir(parents=True)
    return config


def _ingest(config: Path, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(["--config", str(config), "run", "--until", "ingest"])
    out = capsys.readouterr()
    return code, out.out + out.err


def _rows(config: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(config.parent / "data" / "warehouse.duckdb"), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def _weeks(n: int, tv: float = 1000.0) -> str:
    dates = pd.date_range("2024-01-01", periods=n, freq="7D").strftime("%Y-%m-%d")
    return "date,channel,spend\n" + "".join(f"{d},tv,{tv}\n{d},search,500\n" for d in dates)


def test_every_entry_of_the_landing_folder_is_accounted_for(tmp_path, capsys) -> None:
    config = _project(tmp_path)
    landing = config.parent / "data" / "landing"
    week = "date,channel,spend\n2024-01-01,tv,10\n"
    (landing / "media" / "a.csv.gz").write_bytes(gzip.compress(week.encode()))
    with zipfile.ZipFile(landing / "media" / "b.zip", "w") as archive:
        archive.writestr("b.csv", week.replace("2024-01-01", "2024-01-08"))
    frame = pd.DataFrame({"date": pd.to_datetime(["2024-01-15"]), "channel": ["tv"], "spend": [10.0]})
    frame.to_excel(landing / "media" / "c.xlsx", index=False)
    (landing / "media" / "2024").mkdir()
    (landing / "media" / "2024" / "d.csv").write_text(week.replace("2024-01-01", "2024-01-22"))
    (landing / "media" / "notes.txt").write_text("not data")
    (landing / "stray.csv").write_text(week)
    outside = tmp_path / "outside.csv"
    outside.write_text(week.replace("2024-01-01", "2024-01-29"))
    (landing / "media" / "link.csv").symlink_to(outside)
    (tmp_path / "folder").mkdir()
    (landing / "media" / "linked_folder").symlink_to(tmp_path / "folder", target_is_directory=True)
    (landing / "media" / ".partial.csv").write_text("date,channel,spend\n2024-01-01,tv,inf\n")

    code, text = _ingest(config, capsys)

    assert code == 1
    assert "Traceback" not in text
    accepted = _rows(config, "SELECT path FROM raw.landing_files WHERE status = 'active' ORDER BY 1")
    assert [p for (p,) in accepted] == ["media/2024/d.csv", "media/a.csv.gz", "media/b.zip", "media/c.xlsx"]
    assert _rows(config, "SELECT count(DISTINCT week) FROM raw.landed_media") == [(4,)]
    quarantined = dict(_rows(config, "SELECT path, rules FROM raw.quarantined_files"))
    assert quarantined == {
        "media/notes.txt": "readable_format",
        "stray.csv": "landing_layout",
        "media/link.csv": "landing_layout",
        "media/linked_folder": "landing_layout",
    }
    for name in ("notes.txt", "stray.csv", "link.csv", "linked_folder"):
        assert name in text
    assert outside.read_text().startswith("date")  # the symlink moved, its target untouched and unread
    assert (landing / "media" / ".partial.csv").exists()  # hidden names are skipped, as documented


def test_a_touched_backup_never_undoes_a_correction(tmp_path, capsys) -> None:
    config = _project(tmp_path)
    media = config.parent / "data" / "landing" / "media"
    original = "date,channel,spend\n2024-01-01,tv,100\n"
    (media / "week.csv").write_text(original)
    (media / "week_backup.csv").write_text(original)
    assert _ingest(config, capsys)[0] == 0
    (media / "week.csv").write_text(original.replace("100", "120"))  # corrected in place
    assert _ingest(config, capsys)[0] == 0
    os.utime(media / "week_backup.csv", ns=(1, 10**18))  # the backup is touched
    (media / "late_copy.csv").write_text(original)  # and an old copy arrives under a new name
    code, text = _ingest(config, capsys)
    assert code == 0, text
    active = _rows(
        config,
        "SELECT m.spend FROM raw.landed_media m JOIN raw.landing_files f USING (delivery_id) "
        "WHERE f.status = 'active' QUALIFY row_number() OVER (ORDER BY m.delivery_id DESC) = 1",
    )
    assert active == [(120.0,)]
    statuses = dict(
        _rows(config, "SELECT path, status FROM raw.landing_files WHERE path <> 'media/week.csv'")
    )
    assert statuses == {"media/week_backup.csv": "duplicate", "media/late_copy.csv": "duplicate"}
    # Rewriting a file in place to content it held before is a new version: it arrives last, it wins.
    (media / "week.csv").write_text(original)
    assert _ingest(config, capsys)[0] == 0
    assert _rows(config, "SELECT path FROM raw.landing_files WHERE status = 'active'") == [
        ("media/week.csv",)
    ]
    assert _rows(
        config,
        "SELECT m.spend FROM raw.landed_media m JOIN raw.landing_files f USING (delivery_id) "
        "WHERE f.status = 'active'",
    ) == [(100.0,)]


@pytest.mark.parametrize("action", ["reject", "warn"])
def test_a_week_far_above_history_is_rejected_or_warned(tmp_path, capsys, action) -> None:
    config = _project(tmp_path, f", history_ceiling_action: {action}")
    media = config.parent / "data" / "landing" / "media"
    (media / "history.csv").write_text(_weeks(10))
    assert _ingest(config, capsys)[0] == 0
    (media / "absurd.csv").write_text("date,channel,spend\n2024-03-11,tv,5000000\n2024-03-11,search,500\n")
    code, text = _ingest(config, capsys)
    assert "within_history" in text and "absurd.csv" in text and "row(s) 1" in text
    loaded = _rows(config, "SELECT count(*) FROM raw.landing_files WHERE path = 'media/absurd.csv'")
    if action == "reject":
        assert code == 1 and loaded == [(0,)]
        assert _rows(config, "SELECT rules FROM raw.quarantined_files") == [("within_history",)]
    else:
        assert code == 0 and loaded == [(1,)]


def test_a_tiny_spend_against_history_is_warned(tmp_path, capsys) -> None:
    config = _project(tmp_path)
    media = config.parent / "data" / "landing" / "media"
    (media / "history.csv").write_text(_weeks(10))
    assert _ingest(config, capsys)[0] == 0
    (media / "typo.csv").write_text("date,channel,spend\n2024-03-11,tv,0.5\n")
    code, text = _ingest(config, capsys)
    assert code == 0
    assert "Warnings:" in text and "spend_far_below_history" in text and "typo.csv" in text
    note = _rows(config, "SELECT note FROM raw.landing_files WHERE path = 'media/typo.csv'")[0][0]
    assert "spend_far_below_history" in note


def test_a_market_name_that_is_a_path_never_gets_in(tmp_path, capsys) -> None:
    config = _project(tmp_path)
    landing = config.parent / "data" / "landing"
    (landing / "kpi" / "k.csv").write_text("date,market,sales\n2024-01-01,../../../../x,100\n")
    code, text = _ingest(config, capsys)
    assert code == 1 and "identifier_names" in text and "k.csv" in text
    assert _rows(config, "SELECT count(*) FROM raw.landed_kpi") == [(0,)]


@pytest.mark.parametrize(
    ("plan", "key"),
    [
        ("name: base\nbudget: {change_pct: -150}\n", "budget.change_pct"),
        ("name: base\nbudget: {change_pct: 0}\nbudgett: 3\n", "budgett"),
        ("name: base\nbudget: [1, 2\n", "not valid YAML"),
    ],
)
def test_an_invalid_plan_file_exits_2_naming_file_and_key(tmp_path, capsys, plan, key) -> None:
    config = _project(tmp_path)
    (config.parent / "plan.yaml").write_text(plan)
    config.write_text(
        config.read_text().replace("optimization: {enabled: false}", "optimization: {plan: plan.yaml}")
    )
    code = main(["--config", str(config), "run", "--until", "ingest"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert str(config.parent / "plan.yaml") in err and key in err
    assert not (config.parent / "data" / "warehouse.duckdb").exists()  # nothing ran
