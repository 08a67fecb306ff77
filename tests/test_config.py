"""Config errors name the file and the key; paths resolve against the config file's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmm_pipeline.config import load_config
from mmm_pipeline.settings import ConfigError

BASE = "calendar: {week_start: sunday, start: 2014-08-03}\n"


def _load(tmp_path: Path, text: str):
    path = tmp_path / "mmm_pipeline.yaml"
    path.write_text(text)
    return load_config(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (BASE + "channels: [{name: tv}, {name: Search}]\n", "channels.1.name"),
        (BASE + "channels: [{name: tv}]\nfoo: 1\n", "'foo'"),
        (BASE + "channels: [{name: tv}, {name: tv}]\n", "'channels'"),
        ("calendar: {week_start: monday, start: 2014-08-03}\nchannels: [{name: tv}]\n", "'calendar'"),
        (BASE + "channels: [{name: tv}]\ncontrols: [{name: price, fill: mean}]\n", "controls.0.fill"),
        (BASE + "channels: [{name: tv}]\nmarkets: [North]\n", "markets.0"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert "mmm_pipeline.yaml" in str(caught.value)
    assert key in str(caught.value)


def test_alias_clash_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="alias of both"):
        _load(tmp_path, BASE + "channels: [{name: tv, aliases: [video]}, {name: ctv, aliases: [Video]}]\n")


def test_paths_resolve_next_to_the_config(tmp_path: Path) -> None:
    paths = "paths: {data_dir: store, bi_database: /tmp/x.duckdb}\n"
    cfg = _load(tmp_path, BASE + "channels: [{name: tv}]\n" + paths)
    assert cfg.warehouse_path == tmp_path / "store" / "warehouse.duckdb"
    assert cfg.landing_dir == tmp_path / "store" / "landing"
    assert cfg.bi_database_path == Path("/tmp/x.duckdb")
