"""A run killed with SIGKILL mid-step: the next `mmm-pipeline run` finds it dead, marks it failed, frees
the warehouse writer's pool slot and redoes what it left undone, so BI ends equal to the warehouse.

Real processes: the console script is started, killed once its run starts the named step (watched in
the Dagster instance's event log), and run again with a timeout (before the fix it waited forever).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from conftest import LAST_WEEK, small_model_config

from mmm_pipeline.config import ProjectConfig, load_config
from mmm_pipeline.defs.recovery import REDO_OF_TAG
from mmm_pipeline.defs.resources import WRITER_POOL
from mmm_pipeline.runner import project_instance

CLI = str(Path(sys.executable).with_name("mmm-pipeline"))


def _kill_at_step(cfg: ProjectConfig, step_key: str, *args: str) -> str:
    """Start `mmm-pipeline run ARGS`, SIGKILL it once one of its runs starts ``step_key``; the run id."""
    instance = project_instance(cfg)
    known = {run.run_id for run in instance.get_runs()}
    process = subprocess.Popen(
        [CLI, "--config", str(cfg.root / "mmm_pipeline.yaml"), "run", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 900
    try:
        while process.poll() is None and time.monotonic() < deadline:
            for run in instance.get_runs():
                if run.run_id in known:
                    continue
                starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
                if any(event.step_key == step_key for event in starts):
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
                    return run.run_id
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    raise AssertionError(f"the run ended (exit {process.returncode}) before it reached step {step_key}")


def _run_again(cfg: ProjectConfig, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, "--config", str(cfg.root / "mmm_pipeline.yaml"), "run", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )


def _assert_recovered(cfg: ProjectConfig, dead: str, output: str) -> None:
    instance = project_instance(cfg)
    run = instance.get_run_by_id(dead)
    assert run.status.value == "FAILURE"
    failure = instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "is gone: it was killed or crashed" in failure[-1].message
    assert f"run {dead[:8]}" in output and "marked failed" in output
    info = instance.event_log_storage.get_concurrency_info(WRITER_POOL)
    assert not info.claimed_slots and not info.pending_steps  # nothing holds the writer's slot


def test_killed_publish_is_redone_and_bi_equals_the_warehouse(case_study: ProjectConfig) -> None:
    for kind in ("media", "kpi", "controls"):
        shutil.move(cfg_incoming(case_study, kind), case_study.landing_dir / kind)
    dead = _kill_at_step(case_study, "bi_snapshots", "--until", "features")

    result = _run_again(case_study, "--until", "features")
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_recovered(case_study, dead, result.stdout)
    redo = [r for r in project_instance(case_study).get_runs() if r.tags.get(REDO_OF_TAG) == dead]
    assert len(redo) == 1 and redo[0].status.value == "SUCCESS"
    # The publish the dead run never finished happened: BI holds the new week, row for row.
    with duckdb.connect(str(case_study.warehouse_path), read_only=True) as conn:
        warehouse = conn.execute("SELECT * FROM marts.fct_modeling_weekly ORDER BY ALL").df()
    with duckdb.connect(str(case_study.bi_database_path), read_only=True) as bi:
        published = bi.execute("SELECT * FROM fct_modeling_weekly ORDER BY ALL").df()
    assert str(published["week"].max().date()) == LAST_WEEK
    assert published.equals(warehouse)


def cfg_incoming(cfg: ProjectConfig, kind: str) -> Path:
    return cfg.root / "incoming" / kind / f"case_study_weekly_{LAST_WEEK}.csv"


@pytest.mark.slow
def test_killed_fit_optimization_and_publish_are_redone(tmp_path: Path) -> None:
    """Killed at the fit, then (the run that redoes it) at the optimization, then at the model publish:
    the fourth run finishes and BI's champion and recommendation are the warehouse's."""
    subprocess.run([CLI, "init", "proj", "--example", "synthetic"], cwd=tmp_path, check=True, timeout=120)
    config = tmp_path / "proj" / "mmm_pipeline.yaml"
    subprocess.run(
        [CLI, "--config", str(config), "synthetic", "--seed", "3", "--weeks", "60", "--markets", "north"],
        check=True,
        timeout=300,
    )
    small_model_config(config)
    cfg = load_config(config)
    dead = [_kill_at_step(cfg, "model_fit")]
    dead.append(_kill_at_step(cfg, "budget_recommendation.record_recommendation"))
    dead.append(_kill_at_step(cfg, "bi_model_snapshots"))
    result = _run_again(cfg)
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_recovered(cfg, dead[-1], result.stdout)
    instance = project_instance(cfg)
    assert all(instance.get_run_by_id(run_id).status.value == "FAILURE" for run_id in dead)
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        champion = conn.execute("SELECT model_id FROM models.model_runs WHERE status = 'champion'").fetchall()
        latest = conn.execute("SELECT optimization_id FROM optimization.latest_plan_summary").fetchall()
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        bi_champion = bi.execute("SELECT model_id FROM model_runs WHERE status = 'champion'").fetchall()
        bi_latest = bi.execute("SELECT optimization_id FROM latest_plan_summary").fetchall()
    assert champion and bi_champion == champion
    assert latest and bi_latest == latest
