"""What Dagster's SQLite instance costs a feature run: on a disk or a RAM disk, and with Dagster's storage
classes (a new SQLAlchemy engine, so a new statement cache, for every event) or the project's
(``mmm_pipeline.defs.storage``: one engine per file, and a batch of events in one transaction).

Dagster's default instance stores every event in SQLite (WAL mode, ``synchronous=FULL``), one connection
and one commit per event. The case study's historical load in weekly files (624 files, 208 weekly
partitions) stores about 4 000 events: per-partition planned and materialization events, observations,
logs. This script runs that first run (ingestion + feature tables) once per configuration and repeat,
each in a fresh process, alternating the configurations so drift in the machine's speed hits them alike,
and prints the wall time and the events the run stored. Why the test suite keeps its temporary projects
on ``/dev/shm`` (``tests/conftest.py``), and why the CLI's instance reuses its engines and stores
batches whole.

    .venv/bin/python benchmarks/bench_instance_storage.py [--disk /tmp] [--ram /dev/shm] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: ``dagster``: Dagster's classes and defaults (events stored one by one); ``engines``: the project's
#: classes with batches off (``DAGSTER_EVENT_BATCH_SIZE=0``: one engine per file, a commit per event);
#: ``project``: the project's classes as the CLI uses them (a batch of events per transaction).
STORAGES = ("dagster", "engines", "project")


def one_run(root: Path, storage: str) -> dict[str, float]:
    """The case study's first feature run in a fresh project under ``root`` (this process)."""
    os.environ["DAGSTER_HOME"] = str(root / "dagster_home")
    if storage != "project":
        os.environ["DAGSTER_EVENT_BATCH_SIZE"] = "0"  # Dagster's default
    from dagster import DagsterInstance

    from mmm_pipeline.config import load_config
    from mmm_pipeline.ingest.importers.wide import import_wide, load_wide_mapping
    from mmm_pipeline.runner import project_instance, run_pipeline
    from mmm_pipeline.scaffold import demo_file, init_project

    cfg = load_config(init_project(root / "project", "case-study"))
    mapping = load_wide_mapping(demo_file("case_study_mapping.yaml"))
    import_wide(
        demo_file("case_study_weekly.csv"), mapping, cfg.landing_dir, split="week", week_start="sunday"
    )
    instance = project_instance(cfg)  # writes dagster.yaml: Dagster's default storage
    if storage == "dagster":
        instance = DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
    start = time.perf_counter()
    summary = run_pipeline(cfg, instance=instance, log=lambda _m: None, until="features")
    wall = time.perf_counter() - start
    assert summary.ok, summary.problems
    events = sum(len(instance.all_logs(run_id)) for _, run_id, _, _ in summary.runs)
    return {"wall_s": wall, "events": events, "class": type(instance.event_log_storage).__name__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disk", default=tempfile.gettempdir(), help="a folder on the disk")
    parser.add_argument("--ram", default="/dev/shm", help="a folder on a RAM disk")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(Path(args.child[0]), args.child[1])))
        return
    walls: dict[tuple[str, str], list[float]] = {}
    print(f"{'where':<6} {'storage':<8} {'event log class':<30} {'events':>7} {'wall s':>8}", flush=True)
    for _ in range(args.repeats):
        for label, base in (("disk", args.disk), ("ram", args.ram)):
            for storage in STORAGES:
                root = Path(tempfile.mkdtemp(prefix="mmm-bench-storage-", dir=base))
                try:
                    done = subprocess.run(
                        [sys.executable, __file__, "--child", str(root), storage],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    figures = json.loads(done.stdout.strip().splitlines()[-1])
                finally:
                    shutil.rmtree(root, ignore_errors=True)
                walls.setdefault((label, storage), []).append(figures["wall_s"])
                print(
                    f"{label:<6} {storage:<8} {figures['class']:<30} {figures['events']:>7} "
                    f"{figures['wall_s']:>8.1f}",
                    flush=True,
                )
    print("\nmedian wall s")
    for (label, storage), values in walls.items():
        print(f"{label:<6} {storage:<8} {statistics.median(values):8.1f}")


if __name__ == "__main__":
    main()
