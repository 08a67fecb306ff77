"""Drift alarms: false alarms per stable year and detection delay, fixed rules vs calibrated rules.

Prints figures; not a test. Thresholds come from the real calibration (``monitoring.calibration.
calibrate`` with the product's defaults: 5% per year, 20,000 simulated years, no event before 4 tracked
weeks), one calibration per simulated champion on its own simulated CV errors. Whether a rule fires in a
week is computed with ``calibration.weekly_statistic``, the vectorized twin of the rules in
``monitoring.drift`` (tested equal week by week in ``tests/test_monitoring.py``); the first
``--check`` champions of every row are also run through the real ``drift.decide`` week by week on
tracking rows, and the script stops if the two disagree.

1. **False alarms per stable year.** Each simulated year is a new champion: its time-slice CV errors
   (the product's default CV layout, 4 folds x 13 weeks; each fold forecast from its own origin, so
   with its own level error) are drawn from a residual process, the champion's thresholds are
   calibrated on them, then it is tracked for 52 stable weeks of the same process (a new level error).
   Processes (standardized errors z; the forecast is calibrated overall, sd 1): independent; AR(1)
   rho 0.3; a level error shared by the champion's weeks (sd 0.5, the rest independent, sd 0.87);
   both. The KPI forecast is 1 with forecast sd ``sigma_rel`` (0.05: MAPE about 4%; for the last
   process also 0.25: about 22%, near the case study's CV MAPE of 27%). Three rule sets in the same run,
   on the same simulated years: "fixed", the rules as they were before issue 18 (94% interval 3 of 4
   weeks, MAPE 10%, CUSUM 5 / slack 0.5, events from the first tracked week); "CUSUM", the calibrated
   rules of the first issue-18 session (interval, MAPE and CUSUM slack 0.5, each calibrated to 5%/3 a
   year); "changepoint", the defaults now (interval, MAPE and the changepoint test ``forecast_shift``
   instead of the CUSUM, 5%/3 each). Both calibrated sets open no event before 4 tracked weeks.
2. **Detection delay** on the break simulation's world (``mmm_testkit.synthetic``, seed 3, market
   ``all``; the champion fitted on 104 weeks, tracked 8 stable weeks, then the break). Refitting the
   MMM for hundreds of replications is too slow on this machine, so the forecast errors a champion
   would see are simulated from the known truth: the champion's forecast is the world's expected KPI
   without the break, its errors follow the processes above with sd ``error_sd`` x the world's noise sd
   (its CV errors likewise, for calibration), and from the break week on the actual KPI moves by the
   break's true effect: ``-0.3 x`` the channel's true weekly contribution (its effect 30% lower) or
   ``+-5%`` of the true baseline (intercept, trend, seasonality and controls). Delay = weeks from the
   break week (0) to the first week at or after it in which a rule fires (an event opens there unless
   one is already open); not found within the 26 post-break weeks counts as never (``inf``).

   What this break simulation assumes: the champion's forecast is unbiased apart from its null errors
   (the residual processes above, the same process in its CV folds as in tracking, only the level
   error drawn anew); the forecast sd is constant and right on average; the break is a step at a
   known week that then persists (the channel's effect is 30% lower in every later week, so the KPI
   moves by 30% of that week's true contribution, which for search in this world varies little: its
   weekly contribution's coefficient of variation is 0.13 after the break); one champion serves all
   34 tracked weeks (no refits in between, no carry of the level error across champions); spend
   follows the world's plan, within the training range (the spend rule never fires here).

    .venv/bin/python benchmarks/bench_alarms.py [--years 1000] [--replications 500] [--error-sd 1 2]
        [--check 20] [--seed 0] [--part all|false|detection] [--calibration-paths 20000]
        [--expected-paths 1000]

``--expected-paths N`` adds to part 1 each champion's chance of a false alarm: the share of N shared
simulated stable years of the row's process in which its thresholds fire, averaged over the champions
(with its standard error). One tracked year per champion only says fired or not (a standard error of
about 1.5% at 5% with 200 years); the chance has far less noise and is the same quantity in expectation.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from mmm_pipeline.monitoring import drift
from mmm_pipeline.monitoring.calibration import ERROR_RULES, NullErrors, calibrate, weekly_statistic
from mmm_pipeline.monitoring.calibration import ape as calibration_ape
from mmm_pipeline.monitoring.settings import (
    CusumRule,
    IntervalMissRule,
    MonitoringConfig,
    RollingMapeRule,
    SpendRangeRule,
)

FIXED_RULES = [IntervalMissRule(interval=94), RollingMapeRule(threshold=0.1), CusumRule(threshold=5.0),
               SpendRangeRule()]  # fmt: skip
#: The calibrated defaults of the first issue-18 session (the CUSUM where the changepoint test is now).
CUSUM_RULES = [IntervalMissRule(), RollingMapeRule(), CusumRule(), SpendRangeRule()]
CV_FOLDS, CV_HORIZON = 4, 13
LEVEL_SD = 0.5
PROCESSES = {  # name -> (level sd, AR(1) rho); the total sd is 1
    "independent": (0.0, 0.0),
    "AR(1) rho 0.3": (0.0, 0.3),
    "level error sd 0.5": (LEVEL_SD, 0.0),
    "level error sd 0.5 + AR(1) rho 0.3": (LEVEL_SD, 0.3),
}
START = pd.Timestamp("2024-01-01")
#: Simulated years per calibration (the product's default; ``--calibration-paths`` sets it).
CALIBRATION_PATHS = [20_000]


def process(level_sd: float, rho: float) -> NullErrors:
    return NullErrors(level_sd, float(np.sqrt(1.0 - level_sd**2)), rho, 0, 0)


def cv_errors(null: NullErrors, rng: np.random.Generator, scale: float, folds: int) -> tuple[np.ndarray, ...]:
    """A champion's CV errors in KPI units (each fold with its own level error) and their groups."""
    errors = null.simulate(rng, folds, CV_HORIZON).ravel() * scale
    return errors, np.repeat(np.arange(folds), CV_HORIZON)


def tracking_rows(pred: np.ndarray, actual: np.ndarray, sd: float) -> pd.DataFrame:
    """Tracking rows with the columns the rules read (the forecast sd ``sd``, Gaussian intervals)."""
    error = actual - pred
    z = error / sd
    return pd.DataFrame({
        "week": START + pd.to_timedelta(7 * np.arange(len(z)), unit="D"), "z_score": z, "error": error,
        "in_94": np.abs(z) <= 1.8808, "in_50": np.abs(z) <= 0.6745,
        "abs_pct_error": np.abs(error) / np.abs(actual), "spend_flags": None,
    })  # fmt: skip


def first_event(rules, rows: pd.DataFrame, calibration, min_weeks: int, after: int = 0) -> int | None:  # noqa: ANN001
    """Index (0-based week) of the first week at or after ``after`` in which ``decide`` opens an event."""
    for i in range(max(after, min_weeks - 1), len(rows)):
        d = drift.decide(rules, rows.iloc[: i + 1], "m", "champion", [], 4, calibration, min_weeks)
        if d.open is not None:
            return i
    return None


def rule_firing(rules, calibration, z: np.ndarray, ape: np.ndarray, min_weeks: int) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Per error rule, the weeks (paths x weeks) in which it fires (``weekly_statistic`` above its
    threshold); ``calibration``: the champion's :class:`Calibration`, or a dict of fixed thresholds."""
    thresholds = calibration if isinstance(calibration, dict) else calibration.thresholds
    null = None if isinstance(calibration, dict) else calibration.z_null
    return {
        rule.name: weekly_statistic(rule, ape if rule.kind == "rolling_mape" else z, min_weeks, null)
        > thresholds[rule.name]
        for rule in rules
        if rule.kind in ERROR_RULES
    }


def firing(rules, calibration, z: np.ndarray, ape: np.ndarray, min_weeks: int) -> np.ndarray:  # noqa: ANN001
    """Weeks (paths x weeks) in which any error rule fires."""
    return np.logical_or.reduce(list(rule_firing(rules, calibration, z, ape, min_weeks).values()))


def first_week(fires: np.ndarray, after: int = 0) -> float:
    weeks = np.flatnonzero(fires[after:])
    return float(weeks[0] + after) if weeks.size else np.inf


def calibrated(cfg: MonitoringConfig, rules, errors, kpi, groups, sd: float):  # noqa: ANN001, ANN201
    """The product's calibration of ``rules`` on a champion's CV errors (forecast ``kpi``, its sd ``sd``)."""
    return calibrate(rules, errors / sd, sd / np.abs(kpi), groups, cfg.false_alarm_rate_per_year,
                     cfg.min_weeks_before_event, "cv", n_paths=CALIBRATION_PATHS[0])  # fmt: skip


def rule_sets(cfg: MonitoringConfig) -> dict[str, tuple[list, int]]:
    """Rule set name -> (rules, min weeks before an event)."""
    m = cfg.min_weeks_before_event
    return {"fixed": (FIXED_RULES, 1), "CUSUM": (CUSUM_RULES, m), "changepoint": (cfg.drift_rules, m)}


FIXED_THRESHOLDS = {"outside_interval": 1.8808, "rolling_mape": 0.1, "residual_shift": 5.0}


def champion_calibrations(cfg: MonitoringConfig, errors, kpi, groups, sd: float) -> dict:  # noqa: ANN001
    """Rule set name -> the champion's calibration of it (fixed: the fixed thresholds)."""
    return {
        name: FIXED_THRESHOLDS if name == "fixed" else calibrated(cfg, rules, errors, kpi, groups, sd)
        for name, (rules, _) in rule_sets(cfg).items()
    }


def check(rules, rows: pd.DataFrame, calibration, min_weeks: int, fires: np.ndarray, after: int = 0) -> None:  # noqa: ANN001
    """Stop unless the real ``drift.decide`` opens its first event in the week the statistics say."""
    real = first_event(rules, rows, calibration, min_weeks, after)
    expected = first_week(fires, after)
    if (np.inf if real is None else real) != expected:
        raise SystemExit(f"real rules: first event in week {real}, vectorized statistics: {expected}")


def false_alarms(years: int, seed: int, n_check: int, folds: int, expected_paths: int = 0) -> None:
    cfg = MonitoringConfig()
    sets = rule_sets(cfg)
    if expected_paths:
        print(f"(chance: per champion, the share of {expected_paths:,} shared simulated stable years in which"
              " its thresholds fire, averaged over the champions, +- its standard error)")  # fmt: skip
    print(f"\n=== 1. false alarms per stable year ({years} simulated years per row: a new champion each, "
          f"CV {folds}x{CV_HORIZON} weeks, tracked 52 weeks) ===")  # fmt: skip
    print(f"{'process':<36} {'sigma_rel':>9}  {'fixed':>6}  {'CUSUM':>6}  {'changepoint':>11}  "
          f"{'by rule: interval / MAPE / CUSUM / changepoint':<48} {'median thresholds':<30}")  # fmt: skip
    names = ("outside_interval", "rolling_mape", "residual_shift", "forecast_shift")
    # Every process at MAPE ~4%; the most realistic one (level error + AR(1)) also at ~22%.
    last = list(PROCESSES)[-1]
    for sigma_rel, name in [(0.05, p) for p in PROCESSES] + [(0.25, last)]:
        level_sd, rho = PROCESSES[name]
        null = process(level_sd, rho)
        rng = np.random.default_rng([seed, int(sigma_rel * 100), int(level_sd * 10), int(rho * 10)])
        years_fired = dict.fromkeys(sets, 0)
        by_rule = dict.fromkeys(names, 0)
        thresholds = []
        chances: dict[str, list[float]] = {kind: [] for kind in sets}
        if expected_paths:  # own generator: the Bernoulli years above are the same with or without
            key = [seed, 99, int(sigma_rel * 100), int(level_sd * 10), int(rho * 10)]
            truth_z = null.simulate(np.random.default_rng(key), expected_paths, 52)
            truth_ape = calibration_ape(truth_z, np.full_like(truth_z, sigma_rel))
        for year in range(years):
            errors, groups = cv_errors(null, rng, sigma_rel, folds)
            calibrations = champion_calibrations(cfg, errors, np.ones_like(errors), groups, sigma_rel)
            thresholds.append({**calibrations["CUSUM"].thresholds, **calibrations["changepoint"].thresholds})
            z = null.simulate(rng, 1, 52)
            ape = calibration_ape(z, np.full_like(z, sigma_rel))
            for kind, (rules, min_weeks) in sets.items():
                if expected_paths:
                    chances[kind].append(firing(rules, calibrations[kind], truth_z, truth_ape, min_weeks)
                                         .any(axis=1).mean())  # fmt: skip
                fires = rule_firing(rules, calibrations[kind], z, ape, min_weeks)
                now = np.logical_or.reduce(list(fires.values()))[0]
                years_fired[kind] += bool(now.any())
                if kind == "changepoint":  # by rule: the defaults', and the CUSUM of the CUSUM set
                    for rule_name, weeks in fires.items():
                        by_rule[rule_name] += bool(weeks.any())
                elif kind == "CUSUM":
                    by_rule["residual_shift"] += bool(fires["residual_shift"].any())
                if year < n_check:
                    rows = tracking_rows(np.ones(52), 1.0 + sigma_rel * z[0], sigma_rel)
                    cal = None if kind == "fixed" else calibrations[kind]
                    check(rules, rows, cal, min_weeks, now)
        med = pd.DataFrame(thresholds).median()
        rates = " / ".join(f"{by_rule[r] / years:.1%}" for r in names)
        fired = {k: v / years for k, v in years_fired.items()}
        print(f"{name:<36} {sigma_rel:>9.2f}  {fired['fixed']:>6.1%}  "
              f"{fired['CUSUM']:>6.1%}  {fired['changepoint']:>11.1%}  {rates:<48} "
              f"|z| {med['outside_interval']:.2f}, MAPE {med['rolling_mape']:.1%}, "
              f"CUSUM {med['residual_shift']:.1f}, changepoint t {med['forecast_shift']:.2f}")  # fmt: skip
        if expected_paths:
            se = {k: np.std(v, ddof=1) / np.sqrt(len(v)) for k, v in chances.items()}
            print(f"{'':<36} {'chance':>9}  " + "  ".join(
                f"{k} {np.mean(v):.2%} +- {se[k]:.2%}" for k, v in chances.items()))  # fmt: skip


def world_truth(seed: int, history: int, stable: int, post: int, channel: str) -> dict[str, np.ndarray]:
    from mmm_testkit.synthetic import generate_world

    world = generate_world(seed=seed, n_weeks=history + stable + post, markets=("all",))
    d = world.truth.decomposition
    d = d[d["market"] == "all"].reset_index(drop=True)
    media = list(world.channels)
    expected = d[world.kpi_name].to_numpy(float) - d["noise"].to_numpy(float)
    baseline = expected - d[media].sum(axis=1).to_numpy(float)
    return {"expected": expected, "baseline": baseline, "channel": d[channel].to_numpy(float),
            "noise_sd": float(world.truth.noise_sd["all"])}  # fmt: skip


#: The break simulation: weeks the champion is fitted on, stable weeks tracked before the break, the
#: channel whose effect drops.
BREAK_HISTORY, BREAK_STABLE, BREAK_CHANNEL = 104, 8, "search"


def break_setup(error_sd: float, post: int) -> tuple[float, np.ndarray, float, dict[str, np.ndarray]]:
    """The break simulation's tracked weeks: the forecast error sd (``error_sd`` x the world's noise sd),
    the expected KPI of the tracked weeks, the KPI's mean level over the history, and each break's shift
    of the actual KPI (zero in the stable weeks)."""
    truth = world_truth(3, BREAK_HISTORY, BREAK_STABLE, post, BREAK_CHANNEL)
    tracked = slice(BREAK_HISTORY, BREAK_HISTORY + BREAK_STABLE + post)
    shifts = {
        f"{BREAK_CHANNEL} effect -30%": -0.3 * truth["channel"][tracked],
        "baseline +5%": 0.05 * truth["baseline"][tracked],
        "baseline -5%": -0.05 * truth["baseline"][tracked],
    }
    for shift in shifts.values():
        shift[:BREAK_STABLE] = 0.0
    level = float(truth["expected"][:BREAK_HISTORY].mean())
    return error_sd * truth["noise_sd"], truth["expected"][tracked], level, shifts


def detection(
    replications: int, seed: int, error_sd: float, n_check: int, folds: int, post: int = 26
) -> None:
    cfg = MonitoringConfig()
    sets = rule_sets(cfg)
    stable, channel = BREAK_STABLE, BREAK_CHANNEL
    sd, expected, level, shifts = break_setup(error_sd, post)
    print(
        f"\n=== 2. detection delay, break simulation world (seed 3, {channel}), {replications} "
        f"replications, forecast error sd {error_sd:g} x noise sd ({sd:,.0f}; KPI ~{level:,.0f}/week), "
        "8 stable weeks ==="
    )
    print("  break size in error sds (mean over the post-break weeks): " + ", ".join(
        f"{k} {np.mean(np.abs(v[stable:])) / sd:.2f}" for k, v in shifts.items()))  # fmt: skip
    print(f"{'break':<20} {'process':<36} {'rules':<11} {'median delay':>12} {'<= 8 weeks':>10} "
          f"{'found <= 26':>11} {'false alarm in the 8 stable weeks':>34}")  # fmt: skip
    for name, (level_sd, rho) in list(PROCESSES.items())[1:]:
        null = process(level_sd, rho)
        for label, shift in shifts.items():
            rng = np.random.default_rng([seed, int(level_sd * 10), int(rho * 10), len(label)])
            delays: dict[str, list[float]] = {kind: [] for kind in sets}
            early = dict.fromkeys(sets, 0)
            for rep in range(replications):
                errors, groups = cv_errors(null, rng, sd, folds)
                calibrations = champion_calibrations(cfg, errors, np.full(errors.size, level), groups, sd)
                e = null.simulate(rng, 1, stable + post)[0] * sd
                actual = expected + e + shift
                z = ((actual - expected) / sd)[None, :]
                ape = (np.abs(actual - expected) / np.abs(actual))[None, :]
                for kind, (rules, min_weeks) in sets.items():
                    fires = firing(rules, calibrations[kind], z, ape, min_weeks)[0]
                    early[kind] += bool(fires[:stable].any())
                    delays[kind].append(first_week(fires, stable) - stable)
                    if rep < n_check:
                        cal = None if kind == "fixed" else calibrations[kind]
                        check(rules, tracking_rows(expected, actual, sd), cal, min_weeks, fires, stable)
            for kind, values in delays.items():
                v = np.array(values)
                found = np.mean(np.isfinite(v))
                print(f"{label:<20} {name:<36} {kind:<11} {np.median(v):>12} {np.mean(v <= 8):>10.1%} "
                      f"{found:>11.1%} {early[kind] / replications:>34.1%}", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, default=1000)
    parser.add_argument("--replications", type=int, default=500)
    parser.add_argument("--check", type=int, default=20, help="champions per row also run by drift.decide")
    parser.add_argument("--error-sd", type=float, nargs="+", default=[1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cv-folds", type=int, default=CV_FOLDS, help="CV folds of each champion (13 weeks)")
    parser.add_argument(
        "--expected-paths",
        type=int,
        default=0,
        help="also each champion's chance of a false alarm, on this many shared stable years",
    )
    parser.add_argument("--part", choices=["all", "false", "detection"], default="all")
    parser.add_argument("--calibration-paths", type=int, default=20_000,
                        help="simulated years per calibration (product default 20,000; fewer: faster, "
                        "thresholds with more Monte-Carlo error)")  # fmt: skip
    args = parser.parse_args()
    CALIBRATION_PATHS[0] = args.calibration_paths
    started = time.perf_counter()
    if args.part in ("all", "false"):
        false_alarms(args.years, args.seed, args.check, args.cv_folds, args.expected_paths)
    if args.part in ("all", "detection"):
        for error_sd in args.error_sd:
            detection(args.replications, args.seed, error_sd, args.check, args.cv_folds)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
