"""The real console script: scaffold, synthetic data in two markets, run (through the model), bad config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
from conftest import small_model_config

from mmm_pipeline.config import load_config

CLI = str(Path(sys.executable).with_name("mmm-pipeline"))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_init_synthetic_two_markets_and_run(tmp_path: Path) -> None:
    assert _cli("init", "proj", "--example", "synthetic", cwd=tmp_path).returncode == 0
    config = str(tmp_path / "proj" / "mmm_pipeline.yaml")
    made = _cli(
        "--config",
        config,
        "synthetic",
        "--seed",
        "3",
        "--weeks",
        "60",
        "--markets",
        "north,south",
        "--lift-tests",
        "1",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    small_model_config(Path(config))
    result = _cli("--config", config, "run", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fct_modeling_weekly" in result.stdout and "120 rows" in result.stdout
    # One model per market, fitted, gated, registered and published; the CLI prints each champion.
    for market in ("north", "south"):
        assert f"Champion of market {market}: {market}-" in result.stdout
    model_runs = [line.split()[3:] for line in result.stdout.splitlines() if "refit_model" in line]
    # Per market: its inputs hashed, then its fit to its plan; every market's monitoring once; then
    # each market's report (it reads that monitoring).
    assert sorted(model_runs) == sorted(
        [[m, "(inputs", "hash)", "ok"] for m in ("north", "south")]
        + [[m, "ok"] for m in ("north", "south")]
        + [["all", "markets", "ok"]]
        + [[m, "(report)", "ok"] for m in ("north", "south")]
    ), result.stdout
    # The run ends with each market's executive report (written after its refit).
    reports = [line for line in result.stdout.splitlines() if line.startswith("Executive report")]
    assert len(reports) == 2 and result.stdout.rstrip().endswith(reports[-1])
    assert all(Path(line.split(": ", 1)[1]).is_file() for line in reports)
    truth_media = pd.read_csv(tmp_path / "proj" / "data" / "landing" / "media" / "media.csv")
    with duckdb.connect(str(tmp_path / "proj" / "data" / "bi.duckdb"), read_only=True) as bi:
        table = bi.execute("SELECT * FROM fct_modeling_weekly ORDER BY market, week").df()
    assert sorted(table["market"].unique()) == ["north", "south"]
    assert table.groupby("market").size().tolist() == [60, 60]
    for market in ("north", "south"):
        expected = truth_media[truth_media["market"] == market].groupby("channel")["spend"].sum()
        got = table[table["market"] == market][[f"spend_{c}" for c in expected.index]].sum()
        assert got.tolist() == __import__("pytest").approx(expected.tolist())
    assert (tmp_path / "proj" / "data" / "truth" / "truth.json").exists()
    # One lift test per channel and market was written, landed, and every test calibrated its market's fit
    # (they ended within the 60 weeks).
    tests = pd.read_csv(tmp_path / "proj" / "data" / "landing" / "lift_tests" / "lift_tests.csv")
    assert tests.groupby("market").size().to_dict() == {"north": 6, "south": 6}
    warehouse = load_config(Path(config)).warehouse_path
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        used = conn.execute("SELECT market, n_lift_tests FROM models.model_runs ORDER BY market").fetchall()
    assert used == [("north", 6), ("south", 6)]


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "mmm_pipeline.yaml"
    bad.write_text("calendar: {week_start: sunday, start: 2014-08-03}\nchannels: [{name: tv, budget: 3}]\n")
    result = _cli("--config", str(bad), "run", cwd=tmp_path)
    assert result.returncode == 2
    assert "channels.0.budget" in result.stderr


def test_failed_file_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    assert _cli("init", "proj", "--example", "synthetic", cwd=tmp_path).returncode == 0
    config = str(tmp_path / "proj" / "mmm_pipeline.yaml")
    (tmp_path / "proj" / "data" / "landing" / "media" / "x.csv").write_text(
        "date,channel,spend\n2022-01-03,tiktok,1\n"
    )
    result = _cli("--config", config, "run", cwd=tmp_path)
    assert result.returncode == 1
    assert "known_channels" in result.stderr and "x.csv" in result.stderr and "tiktok" in result.stderr


def test_a_run_started_with_interrupts_ignored_leaves_its_children_stoppable(tmp_path: Path) -> None:
    """A script's background job starts with SIGINT ignored; Dagster maps SIGTERM to SIGINT's handler, and
    an ignored signal stays ignored in every process started afterwards (step processes, dask workers,
    Dagster's ``tail -F`` log mirrors, which it stops with SIGTERM and then waits 30 s for each). After a
    real ``run``, a process it starts ignores neither."""
    assert _cli("init", "proj", "--example", "synthetic", cwd=tmp_path).returncode == 0
    config = str(tmp_path / "proj" / "mmm_pipeline.yaml")
    assert _cli("--config", config, "synthetic", "--weeks", "60", cwd=tmp_path).returncode == 0
    script = f"""
import signal, subprocess
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `mmm-pipeline run &` in a script starts
from mmm_pipeline.config import load_config
from mmm_pipeline.runner import run_pipeline
assert run_pipeline(load_config({config!r}), until="ingest", log=lambda _m: None).ok
child = subprocess.Popen(["sleep", "30"])
ignored = [line for line in open(f"/proc/{{child.pid}}/status") if line.startswith("SigIgn:")][0]
child.kill()
print(int(ignored.split()[1], 16))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ignored = int(done.stdout.split()[-1])
    assert not ignored & (1 << (15 - 1)) and not ignored & (1 << (2 - 1)), hex(ignored)  # TERM, INT
