"""Many markets in independent mode through the dask executor: wall time with 1 and 2 workers.

Setup: a synthetic world from the project's generator with ``--markets`` markets of ``--weeks`` weeks
(seed 11), ingested once into a base project; for each worker count a fresh copy of that project (its
own Dagster instance) refits every market with ``mmm-pipeline run`` (``run_pipeline``, the model stage)
through a local dask cluster started here (``LocalCluster``, worker processes on 127.0.0.1, one thread
each), ``execution.executor: dask``. Each fit samples ``--chains`` chains with nutpie on one core
(``sampler.cores: 1``), so one worker is one busy core. Every model step (fit, CV folds, registry,
optimization, publish, report) runs on the cluster; a worker compiles the model graph once and reuses it
for its later markets. ``--in-process`` adds the default path (markets one after another in this
process) for reference.

Printed per configuration: wall time of the model stage, markets per minute, and for 2 workers the
throughput against 1 worker as a share of linear (``t1 / (2 * t2)``; goal >= 0.8). Then where the time
went, from the Dagster event log: seconds from the model stage's start to the first fit step, each
worker process's busy share of the span of the market runs' steps (idle = waiting for the next step),
and the seconds of each kind of step summed over markets. Timed runs: keep the machine otherwise idle
(figures from a shared machine are noisy); the load average is printed with the figures.

Run::

    .venv/bin/python benchmarks/bench_markets_executor.py --markets 4 --draws 200
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from dagster import DagsterEventType, DagsterInstance
from dagster._core.storage.dagster_run import RunsFilter
from distributed import LocalCluster

from mmm_pipeline.config import load_config
from mmm_pipeline.runner import project_instance, run_pipeline
from mmm_pipeline.scaffold import init_project
from mmm_testkit.synthetic import generate_world, write_world


def base_project(directory: Path, args: argparse.Namespace) -> Path:
    """The ingested project every configuration copies (features built, nothing fitted)."""
    config_path = init_project(directory, "synthetic")
    raw = yaml.safe_load(config_path.read_text())
    sampler = {"chains": args.chains, "draws": args.draws, "tune": args.draws, "seed": 3, "cores": 1}
    raw["model"] = {
        "spec": {"l_max": 4, "n_fourier": 1, "sampler": sampler},
        "gate": {"min_ess_bulk": 20, "min_ess_tail": 20, "max_r_hat": 1.2, "max_divergences": 50},
    }
    raw["cv"] = {"n_folds": args.folds, "min_train_weeks": 52, "horizon": 8, "step": 8, "baseline_draws": 200}
    raw["optimization"]["scenarios"] = []  # the base plan only (a scenario may be infeasible in a world)
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config_path)
    markets = [f"m{i:02d}" for i in range(args.markets)]
    world = generate_world(seed=11, n_weeks=args.weeks, start=cfg.calendar.start, markets=markets)
    write_world(world, cfg.landing_dir, directory / "truth")
    os.environ["DAGSTER_HOME"] = str(directory / "dagster_home")
    summary = run_pipeline(cfg, instance=project_instance(cfg), log=lambda _m: None, until="features")
    assert summary.ok, summary.problems
    return config_path


def timed_refit(base: Path, target: Path, execution: dict[str, object]) -> tuple[float, float]:
    """Copy the base project, set ``execution``, run the model stage; its wall seconds and start time."""
    shutil.copytree(base.parent, target, ignore=shutil.ignore_patterns("*.lock"))
    config_path = target / base.name
    raw = yaml.safe_load(config_path.read_text())
    raw["execution"] = execution
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config_path)
    os.environ["DAGSTER_HOME"] = str(target / "dagster_home")
    started, wall_start = time.perf_counter(), time.time()
    summary = run_pipeline(cfg, instance=project_instance(cfg), log=lambda _m: None)
    seconds = time.perf_counter() - started
    assert summary.ok, summary.problems
    return seconds, wall_start


def where_the_time_went(home: Path, started: float) -> str:
    """The model runs' steps from the event log: time to the first fit, each step process's busy share of
    the steps' span, and seconds per kind of step (summed over markets)."""
    steps = []  # (step key, pid, start, end)
    with DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs(RunsFilter(job_name="refit_model")):
            begun: dict[str, tuple[float, int]] = {}
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event if entry.is_dagster_event else None
                if event is None:
                    continue
                if event.event_type == DagsterEventType.STEP_START:
                    begun[entry.step_key] = (entry.timestamp, event.pid)
                elif event.event_type == DagsterEventType.STEP_SUCCESS and entry.step_key in begun:
                    start, pid = begun[entry.step_key]
                    steps.append((entry.step_key, pid, start, entry.timestamp))
    first, last = min(s[2] for s in steps), max(s[3] for s in steps)
    first_fit = min(s[2] for s in steps if s[0] == "model_fit")
    busy: dict[int, float] = collections.defaultdict(float)
    kinds: dict[str, float] = collections.defaultdict(float)
    for key, pid, start, end in steps:
        busy[pid] += end - start
        kinds[key.rsplit(".", 1)[-1]] += end - start
    workers = sorted((b for b in busy.values() if b > 0.05 * (last - first)), reverse=True)
    top = sorted(kinds.items(), key=lambda kv: -kv[1])[:6]
    return (
        f"  first fit step {first_fit - started:.1f} s after the start; steps span {last - first:.1f} s; "
        f"step processes busy {', '.join(f'{b / (last - first):.0%}' for b in workers)}\n"
        f"  step seconds: {', '.join(f'{k} {v:.0f}' for k, v in top)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markets", type=int, default=4)
    parser.add_argument("--weeks", type=int, default=70)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=200, help="draws and tuning steps per chain")
    parser.add_argument("--folds", type=int, default=1, help="CV folds per fit")
    parser.add_argument("--workers", default="1,2", help="worker counts to time, comma-separated")
    parser.add_argument("--in-process", action="store_true", help="also time the default in-process path")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench_markets_executor_"))
    base = base_project(root / "base", args)
    print(
        f"{args.markets} markets x {args.weeks} weeks, {args.chains} chains x {args.draws} draws (1 core "
        f"each), {args.folds} CV fold(s); machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    times: dict[str, float] = {}
    breakdown: dict[str, str] = {}
    if args.in_process:
        times["in_process"], _ = timed_refit(base, root / "in_process", {"executor": "in_process"})
        print(f"in_process: {times['in_process']:.1f} s", flush=True)
    for n in (int(w) for w in args.workers.split(",")):
        with LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
            memory_limit=0,
        ) as cluster:  # fmt: skip
            execution = {"executor": "dask", "dask": {"scheduler_address": cluster.scheduler_address}}
            name = f"dask, {n} worker(s)"
            times[name], started = timed_refit(base, root / f"dask_{n}", execution)
            breakdown[name] = f"load {os.getloadavg()[0]:.1f} at the end\n" + where_the_time_went(
                root / f"dask_{n}" / "dagster_home", started
            )
            # as each configuration ends: a later one that hangs (or is stopped) keeps this figure
            print(f"{name}: {times[name]:.1f} s", flush=True)
    print(f"{'configuration':<22} {'wall s':>8} {'markets/min':>12}")
    for name, seconds in times.items():
        print(f"{name:<22} {seconds:8.1f} {args.markets / seconds * 60:12.2f}")
    for name, text in breakdown.items():
        print(f"{name}: {text}")
    one, two = times.get("dask, 1 worker(s)"), times.get("dask, 2 worker(s)")
    if one and two:
        print(f"2 workers vs 1: {one / two:.2f}x throughput = {one / (2 * two):.2f} of linear (goal >= 0.8)")
    print(f"projects under {root} (delete when done)")


if __name__ == "__main__":
    main()
