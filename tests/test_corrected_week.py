"""A corrected week makes the market's model stale, and BI never sees two publishes mixed.

One synthetic market is fitted for real (small draws, no CV) and optimized. Then one KPI value of an
already-trained week is corrected through a re-delivered landing file: ``run`` must refit (same training
window, new data fingerprint) instead of saying the champion "already covers" the week, and a reader
process checking cross-table consistency of every published champion relation in a tight loop during
that publish must never see two champions at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml
from conftest import model_runs, small_model_config

from mmm_pipeline.config import load_config
from mmm_pipeline.features.data_version import modeling_fingerprint, training_rows
from mmm_pipeline.runner import project_instance, run_pipeline
from mmm_pipeline.scaffold import init_project
from mmm_testkit.synthetic import generate_world, write_world

pytestmark = pytest.mark.slow

MARKET = "north"

#: In each fresh connection (one consistent unit of reading), every champion_* relation's model ids and
#: the latest plan's model must be one and the same model.
READER = textwrap.dedent(
    """
    import json, os, sys, time, duckdb
    bi, market, stop, out = sys.argv[1:5]
    snapshots, mixed, champions, errors, examples = 0, 0, set(), [], []
    while not os.path.exists(stop):
        try:
            with duckdb.connect(bi, read_only=True) as c:
                names = [r[0] for r in c.execute("SELECT name FROM published_tables").fetchall()]
                ids = {}
                for name in names:
                    if name.startswith("champion_") or name == "latest_plan_summary":
                        rows = c.execute(f'SELECT DISTINCT model_id FROM "{name}" WHERE market = ?', [market])
                        ids[name] = sorted(r[0] for r in rows.fetchall())
            snapshots += 1
            seen = {i for v in ids.values() for i in v}
            champion = ids.get("champion_model_runs", [])
            if len(seen) > 1 or len(champion) != 1:
                mixed += 1
                examples = examples[-4:] + [ids]
            else:
                champions |= seen
        except Exception as exc:
            errors.append(repr(exc))
        open(out + ".ready", "w").close()
    json.dump({"snapshots": snapshots, "mixed": mixed, "champions": sorted(champions), "errors": errors,
               "examples": examples}, open(out, "w"))
    """
)


def _run(config_path: Path, log: list[str]):
    cfg = load_config(config_path)
    return run_pipeline(cfg, instance=project_instance(cfg), log=log.append)



@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    directory = tmp_path_factory.mktemp("corrected_week")
    config_path = init_project(directory, "synthetic")
    small_model_config(config_path)
    raw = yaml.safe_load(config_path.read_text())
    raw["cv"]["enabled"] = False
    raw.setdefault("optimization", {})["max_draws"] = 100
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config_path)
    world = generate_world(seed=5, n_weeks=104, start=cfg.calendar.start, markets=(MARKET,))
    paths = write_world(world, cfg.landing_dir, directory / "truth")
    out: dict[str, object] = {"config": config_path, "logs": {}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(directory / "dagster_home"))
        for stage in ("first", "unchanged"):
            out[stage] = _run(config_path, out["logs"].setdefault(stage, []))
            out[f"after_{stage}"] = model_runs(config_path)
        stop, reads = directory / "stop", directory / "reads.json"
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(cfg.bi_database_path), MARKET, str(stop), str(reads)]
        )
        try:
            while not Path(f"{reads}.ready").exists():
                time.sleep(0.05)
            # A KPI correction in week 30 of the 104 the champion was fitted on, re-delivered in place.
            kpi = pd.read_csv(paths["kpi"] / "kpi.csv")
            row = kpi.index[30]
            out["corrected_week"] = kpi.loc[row, "date"]
            value = next(c for c in kpi.columns if c not in ("date", "market"))  # named after the KPI
            kpi.loc[row, value] = round(kpi.loc[row, value] * 1.2, 2)
            kpi.to_csv(paths["kpi"] / "kpi.csv", index=False)
            out["corrected"] = _run(config_path, out["logs"].setdefault("corrected", []))
            out["after_corrected"] = model_runs(config_path)
        finally:
            stop.touch()
            reader.wait(timeout=120)
        out["reads"] = json.loads(reads.read_text())
        out["rerun"] = _run(config_path, out["logs"].setdefault("rerun", []))
        out["after_rerun"] = model_runs(config_path)
    return out


def test_unchanged_data_is_not_refitted(project: dict) -> None:
    assert project["first"].ok, project["first"].problems
    first = project["after_first"]
    assert len(first) == 1 and first["status"].iloc[0] == "champion"
    assert first["data_fingerprint"].iloc[0].startswith("v1:")
    for stage in ("unchanged", "rerun"):
        assert project[stage].ok, project[stage].problems
        assert any("already covers" in line for line in project["logs"][stage]), project["logs"][stage]
    assert len(project["after_unchanged"]) == 1
    assert len(project["after_rerun"]) == len(project["after_corrected"])


def test_a_corrected_week_refits_the_market(project: dict) -> None:
    assert project["corrected"].ok, project["corrected"].problems
    logs = project["logs"]["corrected"]
    assert any("is out of date" in line and "market_training_data" in line for line in logs), logs
    before, after = project["after_first"].iloc[0], project["after_corrected"].iloc[-1]
    assert len(project["after_corrected"]) == 2
    assert after["train_end"] == before["train_end"]  # no new week: the correction alone refitted
    assert after["data_fingerprint"] != before["data_fingerprint"]
    assert after["status"] == "champion"
    # The registry's fingerprint is what the pure function gives for the rows as they are now.
    cfg = load_config(project["config"])
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        rows = training_rows(conn, MARKET, after["train_end"])
    assert modeling_fingerprint(rows) == after["data_fingerprint"]
    corrected = rows[pd.to_datetime(rows["week"]) == pd.Timestamp(project["corrected_week"])]
    assert len(corrected) == 1


def test_readers_never_see_two_publishes_mixed(project: dict) -> None:
    reads = project["reads"]
    print(
        f"reader: {reads['snapshots']} snapshots read, {reads['mixed']} mixed, champions {reads['champions']}"
    )
    assert reads["errors"] == []
    assert reads["mixed"] == 0, reads["examples"]
    assert reads["snapshots"] > 20
    # The publish changed the champion while the reader read: it saw the old one and the new one.
    assert reads["champions"] == sorted(project["after_corrected"]["model_id"])
