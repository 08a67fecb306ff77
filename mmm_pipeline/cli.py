"""``mmm-pipeline``: drive the Dagster definitions headless (cron, CI, scripts) or open the UI."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import yaml

from mmm_pipeline.execution_settings import STAGES
from mmm_pipeline.ingest.importers.wide import (
    WideImportError,
    config_entries,
    control_kinds,
    import_wide,
    load_wide_mapping,
    read_table,
)
from mmm_pipeline.settings import ConfigError, PipelineRunError

from .config import CONFIG_ENV_VAR, ProjectConfig, load_config
from .optimize.plan import PlanError, load_plan, load_scenarios
from .scaffold import EXAMPLES, demo_file, init_project

if TYPE_CHECKING:
    from .runner import RunSummary

# Dagster, PyMC and the report stack load inside the commands that use them: `init`, `import-wide`,
# `synthetic`, `--help` and config errors answer in about a second instead of several.


def _config(args: argparse.Namespace) -> ProjectConfig:
    """The project config, with its plan, scenario and geo plan files validated too: a bad plan is an
    error naming the file and the key before anything runs (exit 2, like a config error)."""
    cfg = load_config(args.config)
    if cfg.optimization.enabled:
        files = cfg.optimization_files()
        load_scenarios(files[0], files[1:])
        geo = cfg.optimization_geo_plan_path
        if geo is not None and load_plan(geo).scope != "geo":
            raise PlanError(str(geo), "scope", "optimization.geo_plan needs a plan with 'scope: geo'")
    return cfg


def _print_summary(summary: RunSummary) -> int:
    for job, run_id, success, scope in summary.runs:
        print(f"  run {run_id[:8]} {job:<16} {scope:<24} {'ok' if success else 'FAILED'}")
    if summary.warnings:
        print("\nWarnings:", file=sys.stderr)
        for warning in summary.warnings:
            print(f"- {warning}", file=sys.stderr)
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
                print(f"  {name:<34} {rows:>8} rows")
    _print_champions(cfg)
    _print_recommendation(cfg)


def _print_recommendation(cfg: ProjectConfig) -> None:
    """Each market's latest budget recommendation (champion model only), from the published BI tables."""
    if not cfg.bi_database_path.exists():
        return
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        names = {r[0] for r in bi.execute("SELECT name FROM published_tables").fetchall()}
        if "latest_plan_summary" not in names:
            return
        plans = bi.execute(
            "SELECT market, optimization_id, model_id, plan, description, mode, weeks, budget, "
            "total_current, total_recommended, uplift_mean, uplift_pct, uplift_hdi_low, uplift_hdi_high, "
            "prob_uplift_positive, n_flags FROM latest_plan_summary ORDER BY market"
        ).fetchall()
        for (market, opt_id, model_id, plan, description, mode, weeks, budget, current, recommended, uplift,
             uplift_pct, low, high, prob, n_flags) in plans:  # fmt: skip
            horizon = "per week (steady state)" if mode == "steady_state" else f"over {weeks} weeks"
            print(
                f"\nBudget recommendation for market {market} ({opt_id}, champion {model_id}):\n"
                f"  plan {plan!r}: {description}; budget {budget:,.0f} {horizon}"
            )
            rows = bi.execute(
                "SELECT channel, current, recommended, change_pct, share_recommended, mroas_recommended, "
                "range_flag FROM latest_recommendations WHERE market = ? ORDER BY recommended DESC",
                [market],
            ).fetchall()
            print(f"  {'channel':<16} {'current':>12} {'recommended':>12} {'change':>7} {'share':>6} mROAS")
            for channel, cur, rec, pct, share, mroas, flag in rows:
                change = f"{pct:+.0f}%" if pct is not None else "new"
                print(
                    f"  {channel:<16} {cur:>12,.0f} {rec:>12,.0f} {change:>7} {share:>6.1%} {mroas:>5.2f}"
                    + (f"  ({flag})" if flag else "")
                )
            print(
                f"  total {current:,.0f} -> {recommended:,.0f}; expected {cfg.kpi.name} uplift "
                f"{uplift:+,.0f} ({uplift_pct:+.1f}% of the media contribution), "
                f"94% HDI [{low:+,.0f}, {high:+,.0f}], P(uplift > 0) = {prob:.0%}"
                + (f"; {n_flags} range flag(s)" if n_flags else "")
            )
            scenarios = bi.execute(
                "SELECT scenario, status, total_recommended, uplift_mean, prob_uplift_positive, conflicts "
                "FROM latest_scenarios WHERE market = ? AND NOT is_base ORDER BY scenario",
                [market],
            ).fetchall()
            for name, status, total, s_uplift, s_prob, conflicts in scenarios:
                if status == "ok":
                    print(
                        f"  scenario {name:<22} spend {total:>12,.0f}  uplift {s_uplift:>+12,.0f}  "
                        f"P(>0) {s_prob:.0%}"
                    )
                else:
                    print(f"  scenario {name:<22} INFEASIBLE: {conflicts}")


def _print_reports(cfg: ProjectConfig) -> None:
    """Each market's newest executive report (HTML, opens offline in any browser)."""
    from .report import latest_report, read_manifest

    markets = (
        sorted(p.name for p in cfg.reports_dir.glob("*") if p.is_dir()) if cfg.reports_dir.exists() else []
    )
    for market in markets:
        folder = latest_report(cfg.reports_dir, market)
        if folder is not None:
            untrusted = read_manifest(folder).get("page") == "model_not_yet_trustworthy"
            title = "Model not yet trustworthy, what to do" if untrusted else "Executive report"
            print(f"{title} (market {market}): {folder / 'report.html'}")


def _print_champions(cfg: ProjectConfig) -> None:
    """Each market's champion model and its channel ROAS, from the published BI tables."""
    if not cfg.bi_database_path.exists():
        return
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        names = {r[0] for r in bi.execute("SELECT name FROM published_tables").fetchall()}
        if "champion_channel_summary" not in names:
            return
        runs = bi.execute(
            "SELECT market, model_id, train_end, max_r_hat, divergences, r2, mape FROM model_runs "
            "WHERE status = 'champion' ORDER BY market"
        ).fetchall()
        for market, model_id, train_end, r_hat, divergences, r2, mape in runs:
            print(
                f"\nChampion of market {market}: {model_id} (trained to {train_end}; R-hat {r_hat:.3f}, "
                f"{divergences} divergences, in-sample R² {r2:.2f}, MAPE {mape:.1%})"
            )
            cv = bi.execute(
                "SELECT model, n_folds, crps, mape, coverage_94, crps_skill FROM champion_cv_metrics "
                "WHERE market = ? AND scope = 'overall' ORDER BY crps",
                [market],
            ).fetchall()
            if cv:
                print(f"  cross-validation, {cv[0][1]} folds (lower CRPS is better):")
                for model, _, crps, cv_mape, coverage, skill in cv:
                    print(
                        f"    {model:<15} CRPS {crps:>14,.0f}  MAPE {cv_mape:6.1%}  94% coverage "
                        f"{coverage:4.0%}  skill vs seasonal-naive {skill:+.2f}"
                    )
            rows = bi.execute(
                "SELECT channel, share_mean, roas_mean, roas_hdi_low, roas_hdi_high, mroas_mean "
                "FROM champion_channel_summary WHERE market = ? ORDER BY roas_mean DESC",
                [market],
            ).fetchall()
            print(f"  {'channel':<16} {'share':>6} {'ROAS':>7} {'94% HDI':>17} {'marginal':>9}")
            for channel, share, roas, low, high, mroas in rows:
                print(f"  {channel:<16} {share:>6.1%} {roas:>7.2f} [{low:>6.2f}, {high:>6.2f}] {mroas:>9.2f}")


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
        args.table,
        mapping,
        cfg.landing_dir,
        split=args.split,
        week_start=cfg.calendar.week_start,
        notify=lambda message: print(f"note: {message}", file=sys.stderr),
    )
    print(f"wrote {len(written)} landing file(s) under {cfg.landing_dir}")
    if args.print_config:
        table = read_table(Path(args.table), mapping)
        kinds = control_kinds(table, mapping)
        categorical = [name for name, (kind, _) in kinds.items() if kind == "categorical"]
        print(yaml.safe_dump(config_entries(mapping, table.columns, categorical), sort_keys=False))
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    from mmm_testkit.synthetic import generate_world, write_world

    cfg = _config(args)
    world = generate_world(
        seed=args.seed,
        n_weeks=args.weeks,
        start=cfg.calendar.start,
        week_start=cfg.calendar.week_start,
        markets=tuple(args.markets.split(",")),
        kpi_name=cfg.kpi.name,
        lift_tests_per_channel=args.lift_tests,
    )
    truth_dir = Path(args.truth_dir) if args.truth_dir else cfg.data_dir / "truth"
    written = write_world(world, cfg.landing_dir, truth_dir, split_by_week=args.split == "week")
    print(f"wrote synthetic data (seed {args.seed}) to {cfg.landing_dir} and its truth to {truth_dir}")
    for name, path in written.items():
        print(f"  {name}: {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args)  # before the heavy imports: a config error answers at once
    from .runner import run_pipeline

    started = time.perf_counter()
    summary = run_pipeline(cfg, weeks=args.weeks, select=args.select, until=args.until, refit=args.refit)
    status = _print_summary(summary)
    _print_outputs(cfg)
    print(f"\nfinished in {time.perf_counter() - started:.1f}s")
    _print_reports(cfg)
    return status


def cmd_track(args: argparse.Namespace) -> int:
    """Recompute tracking and drift events now; print each champion's recent weeks and open events."""
    cfg = _config(args)
    from .definitions import build_definitions
    from .defs.jobs import TRACKING_JOB
    from .runner import project_instance, run_job

    result = run_job(build_definitions(cfg), TRACKING_JOB, project_instance(cfg))
    if not result.success:
        print("error: the tracking run failed (see the Dagster run log)", file=sys.stderr)
        return 1
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        rows = bi.execute(
            "SELECT t.market, t.model_id, t.week, t.actual, t.pred_mean, t.pred_94_low, t.pred_94_high, "
            "t.in_94, t.rolling_mape FROM performance_tracking t JOIN model_runs r USING (model_id) "
            "WHERE r.status = 'champion' "
            "QUALIFY row_number() OVER (PARTITION BY t.market ORDER BY t.week DESC) <= ? "
            "ORDER BY t.market, t.week",
            [args.weeks],
        ).fetchall()
        events = bi.execute(
            "SELECT event_id, rule, detected_week, dagster_run_id, summary FROM drift_events "
            "WHERE status = 'open'"
        ).fetchall()
    for market, model_id, week, actual, mean, low, high, inside, mape in rows:
        print(
            f"{market:<8} {model_id:<28} {week:%Y-%m-%d} actual {actual:>14,.0f} forecast {mean:>14,.0f} "
            f"[{low:,.0f}, {high:,.0f}] {'in' if inside else 'OUT'} rolling MAPE {mape:.1%}"
        )
    if not rows:
        print("no tracked week yet (a champion forecasts the weeks that arrive after its fit)")
    for event_id, rule, week, run_id, summary in events:
        run = run_id or "not started"
        print(f"OPEN drift event {event_id} ({rule}, week {week:%Y-%m-%d}): {summary}; run {run}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .runner import run_pipeline

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
    _print_reports(cfg)
    return status


def cmd_ui(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from .runner import project_instance

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
    print(" ".join(command), flush=True)
    # A script's background job (`mmm-pipeline ui &`) starts with SIGINT ignored, and an ignored signal
    # stays ignored across exec. `dagster dev` maps SIGTERM to its SIGINT handler, so it would then
    # ignore TERM too and never stop. Restore the default, so TERM and INT both stop it cleanly (it
    # interrupts its webserver and daemon and waits for them).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execvpe(command[0], command, env)
    return 0  # not reached


def cmd_celery_worker(args: argparse.Namespace) -> int:
    """A Celery worker for ``execution.executor: celery``: takes the model job's steps from the broker
    the config names until stopped (Ctrl-C or SIGTERM)."""
    from .runner import celery_worker

    celery_worker(load_config(args.config), args.concurrency, args.name)
    return 0


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
    p.add_argument(
        "--lift-tests",
        type=int,
        default=0,
        choices=range(5),
        metavar="N",
        help="also write N lift tests per channel and market (0-4; landing folder lift_tests/)",
    )
    p.set_defaults(func=cmd_synthetic)

    p = sub.add_parser(
        "run", help="ingest new landing files, rebuild features for affected weeks, refit models, publish"
    )
    p.add_argument(
        "--weeks",
        default="pending",
        help="pending (default: the week partitions Dagster reports missing or stale), all, "
        "or YYYY-MM-DD..YYYY-MM-DD",
    )
    p.add_argument("--select", help="only these assets, in Dagster selection syntax (e.g. 'group:marts')")
    p.add_argument("--until", choices=STAGES, default="model", help="stop after this stage (default: model)")
    p.add_argument(
        "--refit", action="store_true", help="refit every market even if its latest fit saw all the data"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "track", help="recompute performance tracking and drift events; print the latest weeks"
    )
    p.add_argument("--weeks", type=int, default=8, help="weeks shown per market (default 8)")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("demo", help="set up and run the case-study demo end to end")
    p.add_argument("--dir", default="demo_project")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "celery-worker",
        help="run a Celery worker for execution.executor: celery (the model job's steps, from the broker "
        "that execution.celery names; default: a folder under the project's data)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="steps at once in pool processes (default 1: a fit samples on the cores it has)",
    )
    p.add_argument("--name", help="the worker's node name (default: celery@HOSTNAME; unique per machine)")
    p.set_defaults(func=cmd_celery_worker)

    p = sub.add_parser("ui", help="open the Dagster UI (127.0.0.1) on this project")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    # nutpie samples through numba; PyTensor's C-linker BLAS notice does not apply to these runs.
    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS installation")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, PlanError, WideImportError, PipelineRunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
