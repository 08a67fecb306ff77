"""Break simulation: weeks of a synthetic world with a known structural break arrive one by one.

A project is loaded with the pre-break history and a champion is fitted once. Then each following week
is delivered as landing files and goes through the real Dagster machinery against a real instance:
the new-data sensor (``build_sensor_context``) requests the ingestion run, the follow-up sensor
(``build_run_status_sensor_context``) requests the feature run for the weeks Dagster reports stale
(which refreshes tracking and drift events), and the drift sensor is evaluated; the runs it requests
are executed (refit, CV, optimization, tracking) and the sensor is evaluated again to check it requests
nothing more.
Used by ``tests/test_sensors.py`` and ``benchmarks/break_simulation.py``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import yaml

from mmm_pipeline.config import ProjectConfig, load_config
from mmm_pipeline.definitions import build_definitions
from mmm_pipeline.defs.jobs import FEATURES_JOB, INGEST_JOB, MODEL_JOB
from mmm_pipeline.defs.sensors import DRIFT_SENSOR, FOLLOW_UP_SENSOR, NEW_DATA_SENSOR
from mmm_pipeline.runner import RUN_CONFIG, project_instance, run_pipeline
from mmm_pipeline.scaffold import init_project
from mmm_testkit.synthetic import Break, SyntheticWorld, generate_world


@dataclass
class SimulationSettings:
    seed: int = 3
    history_weeks: int = 104
    stable_weeks: int = 8
    """Weeks delivered one by one before the break (a drift alarm there is a false alarm)."""
    post_weeks: int = 10
    """Weeks delivered after the break (the break is the first of them)."""
    channel: str = "search"
    multiplier: float = 0.5
    draws: int = 400
    tune: int = 400
    chains: int = 2
    cv: bool = True
    cv_folds: int = 2
    cv_horizon: int = 8
    """Weeks per CV fold (folds step by as many weeks). The drift thresholds are calibrated on the CV
    errors: 2 x 8 weeks keep the simulation quick but estimate the champion's level error loosely, so
    whether a given shift fires varies from fit to fit; the product's default layout is 4 x 13."""
    refit: bool = True
    """Execute the runs the drift sensor requests (False: only check the requests)."""
    weeks_after_refit: int | None = None
    """Stop this many weeks after the first drift refit (``None``: deliver every week)."""
    drift_rules: list[dict] | None = None
    conditions: list[dict] | None = None
    """Config ``conditions`` (market conditions that tighten the budget plans)."""
    markets: tuple[str, ...] = ("all",)


@dataclass
class WeekRecord:
    week: dt.date
    index: int
    post_break: bool
    champion: str
    ingest_runs: int
    feature_runs: int
    drift_requests: int
    repeat_requests: int
    tracked: dict = field(default_factory=dict)
    firing: list[str] = field(default_factory=list)


@dataclass
class SimulationResult:
    world: SyntheticWorld
    cfg: ProjectConfig
    break_week: dt.date
    weeks: list[WeekRecord]
    runs: list[tuple[str, str, str, bool]]  # (job, run id, why, success)
    drift_requests: list[dg.RunRequest]
    champions: list[str]
    roas: pd.DataFrame  # model_id x channel ROAS (mean, HDI) of every champion
    truth: dict[str, float]
    seconds: float

    @property
    def fired_week(self) -> dt.date | None:
        return next((w.week for w in self.weeks if w.drift_requests), None)


def write_weeks(world: SyntheticWorld, landing: Path, dates: list[pd.Timestamp], name: str) -> None:
    """The world's rows of ``dates`` as one landing file per kind (``<kind>/<name>.csv``)."""
    for kind, frame in (("media", world.media), ("kpi", world.kpi), ("controls", world.controls)):
        folder = landing / kind
        folder.mkdir(parents=True, exist_ok=True)
        rows = frame[frame["date"].isin(dates)]
        tmp = folder / f".{name}.csv.tmp"
        rows.to_csv(tmp, index=False, date_format="%Y-%m-%d")
        tmp.rename(folder / f"{name}.csv")  # delivered whole


def setup_project(directory: Path, s: SimulationSettings) -> tuple[ProjectConfig, SyntheticWorld]:
    config_path = init_project(directory, "synthetic")
    raw = yaml.safe_load(config_path.read_text())
    raw["model"] = {
        "spec": {"l_max": 4, "n_fourier": 1,
                 "sampler": {"chains": s.chains, "draws": s.draws, "tune": s.tune, "seed": 1}},
        "gate": {"min_ess_bulk": 20, "min_ess_tail": 20, "max_r_hat": 1.2, "max_divergences": 50},
        "max_roas_change": 10.0,
    }  # fmt: skip
    raw["cv"] = {"enabled": s.cv, "n_folds": s.cv_folds, "min_train_weeks": 52, "horizon": s.cv_horizon,
                 "step": s.cv_horizon, "baseline_draws": 500}  # fmt: skip
    raw["optimization"] = {"plan": "plans/synthetic/base_plan.yaml", "scenarios": [], "max_draws": 200}
    raw["monitoring"] = {"max_draws": 400}
    if s.drift_rules is not None:
        raw["monitoring"]["drift_rules"] = s.drift_rules
    if s.conditions is not None:
        raw["conditions"] = s.conditions
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config_path)
    total = s.history_weeks + s.stable_weeks + s.post_weeks
    world = generate_world(
        seed=s.seed, n_weeks=total, start=cfg.calendar.start, markets=s.markets,
        breaks=[Break(s.channel, s.history_weeks + s.stable_weeks, s.multiplier)],
    )  # fmt: skip
    return cfg, world


def _roas(cfg: ProjectConfig, model_ids: list[str], channel: str) -> pd.DataFrame:
    marks = ", ".join("?" for _ in model_ids)
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        return conn.execute(
            "SELECT c.model_id, r.train_end, r.status, c.roas_mean, c.roas_hdi_low, c.roas_hdi_high "
            "FROM models.channel_summary c JOIN models.model_runs r USING (model_id) "
            f"WHERE c.channel = ? AND c.model_id IN ({marks}) ORDER BY r.created_at",
            [channel, *model_ids],
        ).df()


def _champion(cfg: ProjectConfig, market: str) -> str:
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        row = conn.execute(
            "SELECT model_id FROM models.model_runs WHERE market = ? AND status = 'champion'", [market]
        ).fetchone()
    return row[0] if row else ""


def _tracked(cfg: ProjectConfig, market: str, model_id: str, week: dt.date) -> dict:
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        frame = conn.execute(
            "SELECT week, actual, pred_mean, pred_94_low, pred_94_high, in_94, z_score, rolling_mape, crps "
            "FROM monitoring.performance_tracking WHERE market = ? AND model_id = ? AND week = ?",
            [market, model_id, week],
        ).df()
    return {} if frame.empty else frame.iloc[0].to_dict()


def run_simulation(
    directory: Path, s: SimulationSettings | None = None, log: Callable[[str], None] = lambda _m: None
) -> SimulationResult:
    """Run the break simulation in ``directory`` (a fresh folder); DAGSTER_HOME should point into it."""
    s = s or SimulationSettings()
    started = time.perf_counter()
    cfg, world = setup_project(directory, s)
    market = s.markets[0]
    dates = list(world.dates)
    break_index = s.history_weeks + s.stable_weeks
    instance = project_instance(cfg)
    runs: list[tuple[str, str, str, bool]] = []

    # 1. The history before the break, loaded and fitted once (the CLI path).
    write_weeks(world, cfg.landing_dir, dates[: s.history_weeks], "history")
    summary = run_pipeline(cfg, instance=instance, log=log)
    runs += [(job, run_id, "initial load", ok) for job, run_id, ok, _ in summary.runs]
    if not summary.ok:
        raise RuntimeError(f"initial load failed: {summary.problems}")
    first_champion = _champion(cfg, market)
    log(f"initial champion {first_champion} fitted on weeks up to {dates[s.history_weeks - 1].date()}")

    defs = build_definitions(cfg)
    new_data = defs.get_sensor_def(NEW_DATA_SENSOR)
    follow_up = defs.get_sensor_def(FOLLOW_UP_SENSOR)
    drift_sensor = defs.get_sensor_def(DRIFT_SENSOR)
    # The initial files are known to the new-data sensor: it starts from the current landing folder.
    first = new_data.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    cursors = {"new_data": first.cursor, "drift": None}

    def execute(job: str, request: dg.RunRequest, why: str) -> dg.ExecuteInProcessResult:
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance, raise_on_error=False, run_config=RUN_CONFIG, tags=dict(request.tags),
            partition_key=request.partition_key,
        )  # fmt: skip
        runs.append((job, result.run_id, why, result.success))
        return result

    weeks: list[WeekRecord] = []
    drift_requests: list[dg.RunRequest] = []
    champions = [first_champion]
    refit_at: int | None = None  # week index of the first drift refit
    for i in range(s.history_weeks, len(dates)):
        week = dates[i]
        write_weeks(world, cfg.landing_dir, [week], f"week_{week.date()}")
        tick = new_data.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=cursors["new_data"], definitions=defs)
        )
        cursors["new_data"] = tick.cursor
        feature_runs = 0
        tick_requests = list(tick.run_requests or [])
        for request in tick_requests:
            ingest = execute(INGEST_JOB, request, f"new data {week.date()}")
            context = dg.build_run_status_sensor_context(
                sensor_name=FOLLOW_UP_SENSOR, dagster_event=ingest.get_run_success_event(),
                dagster_instance=instance, dagster_run=ingest.dagster_run,
                repository_def=defs.get_repository_def(),
            )  # fmt: skip
            for follow in follow_up(context) or []:
                if isinstance(follow, dg.RunRequest):
                    execute(
                        FEATURES_JOB, follow, f"features {follow.tags['dagster/asset_partition_range_start']}"
                    )
                    feature_runs += 1
        champion = _champion(cfg, market)
        tracked = _tracked(cfg, market, champion, week.date())
        # Market partitions are dynamic: the daemon validates run requests against the instance.
        with dg.partition_loading_context(dynamic_partitions_store=instance):
            tick = drift_sensor.evaluate_tick(
                dg.build_sensor_context(instance=instance, cursor=cursors["drift"], definitions=defs)
            )
            cursors["drift"] = tick.cursor or cursors["drift"]
            # Evaluated again at once: the same event must not start a second run.
            again = drift_sensor.evaluate_tick(
                dg.build_sensor_context(instance=instance, cursor=cursors["drift"], definitions=defs)
            )
        requests = list(tick.run_requests or [])
        drift_requests += requests
        repeat = len(again.run_requests or [])
        record = WeekRecord(
            week.date(), i, i >= break_index, champion, len(tick_requests), feature_runs, len(requests),
            repeat, tracked,
        )  # fmt: skip
        weeks.append(record)
        nan = float("nan")
        log(
            f"week {week.date()} ({'post' if i >= break_index else 'pre'}-break): champion {champion}, "
            f"actual {tracked.get('actual', nan):,.0f} vs forecast {tracked.get('pred_mean', nan):,.0f} "
            f"(z {tracked.get('z_score', nan):+.2f}), drift requests {len(requests)}, repeat {repeat}"
        )
        if requests and s.refit:
            for request in requests:
                execute(MODEL_JOB, request, f"drift {request.tags.get('mmm/drift_rule')}")
            champions.append(_champion(cfg, market))
            refit_at = i if refit_at is None else refit_at
            if champions[-1] != champions[-2]:
                log(f"drift refit promoted {champions[-1]}")
        if refit_at is not None and s.weeks_after_refit is not None and i - refit_at >= s.weeks_after_refit:
            break
        if not s.refit and requests:
            break

    roas = _roas(cfg, list(dict.fromkeys(champions)), s.channel)
    final = roas[roas["model_id"] == champions[-1]]["train_end"].iloc[0]
    in_final_fit = int((world.dates <= pd.Timestamp(final)).sum())
    truth = true_roas(world, s, market, weeks_in_last_fit=in_final_fit)
    return SimulationResult(world, cfg, dates[break_index].date(), weeks, runs, drift_requests,
                            champions, roas, truth, time.perf_counter() - started)  # fmt: skip


def true_roas(world: SyntheticWorld, s: SimulationSettings, market: str, weeks_in_last_fit: int) -> dict:
    """True ROAS of the broken channel: before the break, after it, and pooled over each fit's window."""
    decomposition = world.truth.decomposition
    decomposition = decomposition[decomposition["market"] == market].reset_index(drop=True)
    media = world.media[(world.media["market"] == market) & (world.media["channel"] == s.channel)]
    spend = media.set_index("date")["spend"].reindex(world.dates).to_numpy()
    contribution = decomposition[s.channel].to_numpy()
    break_index = s.history_weeks + s.stable_weeks
    return {
        "before_break": float(contribution[:break_index].sum() / spend[:break_index].sum()),
        "after_break": float(contribution[break_index:].sum() / spend[break_index:].sum()),
        "first_fit_window": float(contribution[: s.history_weeks].sum() / spend[: s.history_weeks].sum()),
        "last_fit_window": float(contribution[:weeks_in_last_fit].sum() / spend[:weeks_in_last_fit].sum()),
    }
