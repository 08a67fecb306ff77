"""Where a feature run's time goes with Dagster's SQLite storage on a disk and on a RAM disk.

Dagster's default instance stores every event in SQLite (WAL mode, ``synchronous=FULL``) and opens a
connection per event: each event is a commit and an fsync, and each connection close checkpoints the
WAL. A feature run over a year of weekly partitions stores about a thousand events. This script runs the
same first run (ingestion + feature tables, a synthetic two-market world of 60 weeks) twice, once with
the project and its DAGSTER_HOME under ``--disk`` and once under ``--ram`` (``/dev/shm``), each in a
fresh process, and prints the wall time and the seconds spent in ``sqlite3`` commit and close (cProfile).
Why the test suite keeps its temporary projects on ``/dev/shm`` (``tests/conftest.py``).

    .venv/bin/python benchmarks/bench_instance_storage.py [--disk /tmp] [--ram /dev/shm]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(root: Path) -> dict[str, float]:
    """The first run of a fresh project under ``root`` (this process), profiled."""
    os.environ["DAGSTER_HOME"] = str(root / "dagster_home")
    from mmm_pipeline.config import load_config
    from mmm_pipeline.runner import project_instance, run_pipeline
    from mmm_pipeline.scaffold import init_project
    from mmm_testkit.synthetic import generate_world, write_world

    cfg = load_config(init_project(root / "project", "synthetic"))
    world = generate_world(seed=3, n_weeks=60, start=cfg.calendar.start, markets=("north", "south"))
    write_world(world, cfg.landing_dir, root / "truth")
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    summary = run_pipeline(cfg, instance=project_instance(cfg), log=lambda _m: None, until="features")
    profile.disable()
    wall = time.perf_counter() - start
    assert summary.ok, summary.problems
    stats = pstats.Stats(profile).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    sqlite = {
        name: sum(
            v[2]
            for (f, _, n), v in stats.items()
            if n == f"<method '{name}' of 'sqlite3.Connection' objects>"
        )
        for name in ("commit", "close")
    }
    return {"wall_s": wall, "sqlite_commit_s": sqlite["commit"], "sqlite_close_s": sqlite["close"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disk", default=tempfile.gettempdir(), help="a folder on the disk")
    parser.add_argument("--ram", default="/dev/shm", help="a folder on a RAM disk")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(Path(args.child))))
        return
    print(f"{'where':<6} {'folder':<28} {'wall s':>8} {'commit s':>9} {'close s':>8}")
    for label, base in (("disk", args.disk), ("ram", args.ram)):
        root = Path(tempfile.mkdtemp(prefix="mmm-bench-storage-", dir=base))
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(root)], capture_output=True, text=True, check=True
            )
            figures = json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(
            f"{label:<6} {str(root.parent):<28} {figures['wall_s']:>8.1f} {figures['sqlite_commit_s']:>9.1f} "
            f"{figures['sqlite_close_s']:>8.1f}"
        )


if __name__ == "__main__":
    main()
