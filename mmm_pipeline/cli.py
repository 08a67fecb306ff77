"""``mmm-pipeline``: drive the Dagster definitions headless (cron, CI, scripts) or open the UI."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import duckdb
import yaml

from .config import CONFIG_ENV_VAR, ConfigError, ProjectConfig, load_config
from .importers.wide import WideImportError, config_entries, import_wide, load_wide_mapping, read_table
from .runner import PipelineRunError, RunSummary, project_instance, run_pipeline
from .scaffold import EXAMPLES, demo_file, init_project


def _config(args: argparse.Namespace) -> ProjectConfig:
    return load_config(args.config)


def _print_summary(summary: RunSummary) -> int:
    for job, run_id, success, weeks in summary.runs:
        print(f"  run {run_id[:8]} {job:<16} weeks {weeks:<24} {'ok' if success else 'FAILED'}")
    if summary.problems:
        print("\nProblems:", file=sys.stderr)
        for problem in summary.problems:
            print(f"- {problem}", file=sys.stderr)
        return 1
    return 0


def _print_outputs(cfg: ProjectConfig) -> None:
    print(f"\nWorking warehouse : {cfg.warehouse_path}")
    print(f"BI catalog        : {cfg.bi_database_path}  (open read-only; views over {cfg.publish_dir})")
    print(f"Quarantine        : {cfg.quarantine_dir}")
    if cfg.bi_database_path.exists():
        with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
            for (name,) in bi.execute("SELECT name FROM published_tables ORDER BY name").fetchall():
                rows = bi.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
                print(f"  {name:<28} {rows:>8} rows")


def cmd_init(args: argparse.Namespace) -> int:
    target = init_project(Path(args.directory), args.example, force=args.force)
    print(
        f"created {target}\n"
        f"next: add files under its landing folder, then `mmm-pipeline --config {target} run`"
    )
    return 0


def cmd_import_wide(args: argparse.Namespace) -> int:
    cfg = _config(args)
    mapping = load_wide_mapping(args.mapping)
    written = import_wide(
        args.table, mapping, cfg.landing_dir, split=args.split, week_start=cfg.calendar.week_start
    )
    print(f"wrote {len(written)} landing file(s) under {cfg.landing_dir}")
    if args.print_config:
        entries = config_entries(mapping, read_table(Path(args.table), mapping).columns)
        print(yaml.safe_dump(entries, sort_keys=False))
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    from .synthetic import generate_world, write_world

    cfg = _config(args)
    world = generate_world(
        seed=args.seed,
        n_weeks=args.weeks,
        start=cfg.calendar.start,
        week_start=cfg.calendar.week_start,
        markets=tuple(args.markets.split(",")),
        kpi_name=cfg.kpi.name,
    )
    truth_dir = Path(args.truth_dir) if args.truth_dir else cfg.data_dir / "truth"
    written = write_world(world, cfg.landing_dir, truth_dir, split_by_week=args.split == "week")
    print(f"wrote synthetic data (seed {args.seed}) to {cfg.landing_dir} and its truth to {truth_dir}")
    for name, path in written.items():
        print(f"  {name}: {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    started = time.perf_counter()
    summary = run_pipeline(cfg, weeks=args.weeks, select=args.select)
    status = _print_summary(summary)
    _print_outputs(cfg)
    print(f"\nfinished in {time.perf_counter() - started:.1f}s")
    return status


def cmd_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    directory = Path(args.dir).resolve()
    config_path = directory / "mmm_pipeline.yaml"
    if not config_path.exists():
        init_project(directory, "case-study")
    cfg = load_config(config_path)
    import_wide(
        demo_file("case_study_weekly.csv"),
        load_wide_mapping(demo_file("case_study_mapping.yaml")),
        cfg.landing_dir,
        week_start=cfg.calendar.week_start,
    )
    print(f"demo project: {directory} (case-study data imported into {cfg.landing_dir})")
    summary = run_pipeline(cfg)
    status = _print_summary(summary)
    _print_outputs(cfg)
    print(f"\ndemo finished in {time.perf_counter() - started:.1f}s")
    print(f"UI: mmm-pipeline --config {config_path} ui")
    return status


def cmd_ui(args: argparse.Namespace) -> int:
    cfg = _config(args)
    project_instance(cfg)  # make sure the instance config exists
    env = {
        **os.environ,
        CONFIG_ENV_VAR: str(
            Path(args.config or os.environ.get(CONFIG_ENV_VAR, "mmm_pipeline.yaml")).resolve()
        ),
        "DAGSTER_HOME": os.environ.get("DAGSTER_HOME") or str(cfg.dagster_home),
    }
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-m",
        "mmm_pipeline.definitions",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    print(" ".join(command))
    os.execvpe(command[0], command, env)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmm-pipeline", description=__doc__)
    parser.add_argument(
        "--config", help=f"project config file (default: ${CONFIG_ENV_VAR}, else ./mmm_pipeline.yaml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="scaffold a project: config file and landing folders")
    p.add_argument("directory")
    p.add_argument("--example", choices=sorted(EXAMPLES), default="synthetic")
    p.add_argument("--force", action="store_true", help="overwrite an existing config file")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("import-wide", help="turn a wide table into landing files using a YAML mapping")
    p.add_argument("table")
    p.add_argument("--mapping", required=True)
    p.add_argument("--split", choices=["none", "week"], default="none", help="one file, or one per week")
    p.add_argument("--print-config", action="store_true", help="print the channels/controls config entries")
    p.set_defaults(func=cmd_import_wide)

    p = sub.add_parser(
        "synthetic", help="write synthetic data with known ground truth into the landing folder"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weeks", type=int, default=156)
    p.add_argument("--markets", default="all", help="comma-separated market names")
    p.add_argument("--split", choices=["none", "week"], default="none")
    p.add_argument("--truth-dir", help="where the truth goes (default: <data_dir>/truth)")
    p.set_defaults(func=cmd_synthetic)

    p = sub.add_parser("run", help="ingest new landing files, rebuild features for affected weeks, publish")
    p.add_argument("--weeks", default="pending", help="pending (default), all, or YYYY-MM-DD..YYYY-MM-DD")
    p.add_argument("--select", help="only these assets, in Dagster selection syntax (e.g. 'group:marts')")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="set up and run the case-study demo end to end")
    p.add_argument("--dir", default="demo_project")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ui", help="open the Dagster UI (127.0.0.1) on this project")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, WideImportError, PipelineRunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
