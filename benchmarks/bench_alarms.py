"""Drift alarms: false alarms per stable year and detection delay, fixed rules vs calibrated rules.

Prints figures; not a test. Two parts, each on the real rule code (``drift.decide`` week by week on
tracking rows, the way the ``drift_events`` asset runs it) and the real calibration
(``monitoring.calibration.calibrate``, the product's defaults: 5% per year, 20,000 simulated years,
no event before 4 tracked weeks):

1. **False alarms per stable year.** Each simulated year is a new champion: its time-slice CV errors
   (the product's default CV layout, 4 folds x 13 weeks; each fold forecast from its own origin, so
   with its own level error) are drawn from a residual process, the champion's thresholds are
   calibrated on them, then it is tracked for 52 stable weeks from the same process (a new level
   error). Processes (standardized errors z; the forecast is calibrated overall, sd 1): independent;
   AR(1) rho 0.3; a level error shared by the champion's weeks (sd 0.5, the rest independent, sd
   0.87); both. The relative errors are ``sigma_rel * z`` on a KPI of 1 (``sigma_rel`` 0.05: MAPE
   about 4%; 0.34: about 27%, the case study's CV MAPE). "Fixed" are the rules as they were (interval
   94% 3 of 4, MAPE 10%, CUSUM 5 / slack 0.5, events from the first week); "calibrated" the defaults.
2. **Detection delay** on the break simulation's world (``mmm_testkit.synthetic``, seed 3, market
   ``all``; the champion fitted on 104 weeks, tracked 8 stable weeks, then the break). Refitting the
   MMM for hundreds of replications is too slow on this machine, so the forecast errors a champion
   would see are simulated from the known truth: the champion's forecast is the world's expected KPI
   without the break, its errors follow the level + AR(1) process above with sd ``error_sd`` x the
   world's noise sd (its CV errors likewise, for calibration), and from the break week on the actual
   KPI moves by the break's true effect: ``-0.3 x`` the channel's true weekly contribution (a 30% drop of
   its effect) or ``+-5%`` of the true baseline (intercept, trend, seasonality and controls).
   Delay = weeks from the break week (0) to the first event opened at or after it; not found within the
   post-break weeks counts as never (above any median it reaches).

    .venv/bin/python benchmarks/bench_alarms.py [--years 300] [--replications 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from mmm_pipeline.monitoring import drift
from mmm_pipeline.monitoring.calibration import NullErrors, calibrate
from mmm_pipeline.monitoring.settings import (
    CusumRule,
    IntervalMissRule,
    MonitoringConfig,
    RollingMapeRule,
    SpendRangeRule,
)

FIXED_RULES = [IntervalMissRule(interval=94), RollingMapeRule(threshold=0.1), CusumRule(threshold=5.0),
               SpendRangeRule()]  # fmt: skip
CV_FOLDS, CV_HORIZON = 4, 13
LEVEL_SD = 0.5
PROCESSES = {  # name -> (level sd, AR(1) rho); the total sd is 1
    "independent": (0.0, 0.0),
    "AR(1) rho 0.3": (0.0, 0.3),
    "level error sd 0.5": (LEVEL_SD, 0.0),
    "level error sd 0.5 + AR(1) rho 0.3": (LEVEL_SD, 0.3),
}
START = pd.Timestamp("2024-01-01")


def process(level_sd: float, rho: float) -> NullErrors:
    return NullErrors(level_sd, float(np.sqrt(1.0 - level_sd**2)), rho, 0, 0)


def cv_errors(null: NullErrors, rng: np.random.Generator, scale: float) -> tuple[np.ndarray, ...]:
    """A champion's CV errors in KPI units (each fold with its own level error) and their groups."""
    errors = null.simulate(rng, CV_FOLDS, CV_HORIZON).ravel() * scale
    return errors, np.repeat(np.arange(CV_FOLDS), CV_HORIZON)


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


def calibrated(cfg: MonitoringConfig, errors: np.ndarray, kpi: np.ndarray, groups: np.ndarray, sd: float):  # noqa: ANN201
    """The product's calibration on a champion's CV errors (forecast ``kpi``, forecast sd ``sd``)."""
    return calibrate(cfg.drift_rules, errors / sd, sd / np.abs(kpi), groups, cfg.false_alarm_rate_per_year,
                     cfg.min_weeks_before_event, "cv")  # fmt: skip


def false_alarms(years: int, seed: int) -> None:
    cfg = MonitoringConfig()
    print(f"\n=== 1. false alarms per stable year ({years} simulated years per row: a new champion each, "
          f"CV {CV_FOLDS}x{CV_HORIZON} weeks, tracked 52 weeks) ===")  # fmt: skip
    print(f"{'process':<36} {'sigma_rel':>9}  {'fixed rules':>11}  {'calibrated':>10}  "
          f"{'calibrated, by rule (interval / MAPE / CUSUM)':<46} {'median thresholds':<30}")  # fmt: skip
    for sigma_rel in (0.05, 0.34):
        for name, (level_sd, rho) in PROCESSES.items():
            null = process(level_sd, rho)
            rng = np.random.default_rng([seed, int(sigma_rel * 100), int(level_sd * 10), int(rho * 10)])
            fixed = new = 0
            by_rule = {r.name: 0 for r in cfg.drift_rules}
            thresholds = []
            for _ in range(years):
                errors, groups = cv_errors(null, rng, sigma_rel)
                calibration = calibrated(cfg, errors, np.ones_like(errors), groups, sigma_rel)
                thresholds.append(calibration.thresholds)
                z = null.simulate(rng, 1, 52)[0]
                rows = tracking_rows(np.ones(52), 1.0 + sigma_rel * z, sigma_rel)
                fixed += first_event(FIXED_RULES, rows, None, 1) is not None
                week = first_event(cfg.drift_rules, rows, calibration, cfg.min_weeks_before_event)
                if week is not None:
                    new += 1
                    for f in drift.evaluate(cfg.drift_rules, rows.iloc[: week + 1], calibration):
                        by_rule[f.rule] += 1
            med = pd.DataFrame(thresholds).median()
            rules = " / ".join(f"{by_rule[r] / years:.1%}" for r in ("outside_interval", "rolling_mape",
                                                                     "residual_shift"))  # fmt: skip
            print(f"{name:<36} {sigma_rel:>9.2f}  {fixed / years:>11.1%}  {new / years:>10.1%}  {rules:<46} "
                  f"|z| {med['outside_interval']:.2f}, MAPE {med['rolling_mape']:.1%}, "
                  f"CUSUM {med['residual_shift']:.1f}")  # fmt: skip


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


def detection(replications: int, seed: int, error_sd: float, post: int = 26) -> None:
    cfg = MonitoringConfig()
    history, stable, channel = 104, 8, "search"
    truth = world_truth(3, history, stable, post, channel)
    sd = error_sd * truth["noise_sd"]
    tracked = slice(history, history + stable + post)
    expected = truth["expected"][tracked]
    level = float(truth["expected"][:history].mean())
    shifts = {
        f"{channel} effect -30%": -0.3 * truth["channel"][tracked],
        "baseline +5%": 0.05 * truth["baseline"][tracked],
        "baseline -5%": -0.05 * truth["baseline"][tracked],
    }
    for shift in shifts.values():
        shift[:stable] = 0.0
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
            delays: dict[str, list[float]] = {"fixed": [], "calibrated": []}
            early = {"fixed": 0, "calibrated": 0}
            for _ in range(replications):
                errors, groups = cv_errors(null, rng, sd)
                calibration = calibrated(cfg, errors, np.full(errors.size, level), groups, sd)
                e = null.simulate(rng, 1, stable + post)[0] * sd
                rows = tracking_rows(expected, expected + e + shift, sd)
                for kind, rules, cal, min_weeks in (("fixed", FIXED_RULES, None, 1),
                                                    ("calibrated", cfg.drift_rules, calibration,
                                                     cfg.min_weeks_before_event)):  # fmt: skip
                    before = first_event(rules, rows.iloc[:stable], cal, min_weeks)
                    early[kind] += before is not None
                    week = first_event(rules, rows, cal, min_weeks, after=stable)
                    delays[kind].append(np.inf if week is None else week - stable)
            for kind, values in delays.items():
                v = np.array(values)
                print(f"{label:<20} {name:<36} {kind:<11} {np.median(v):>12} {np.mean(v <= 8):>10.1%} "
                      f"{np.mean(np.isfinite(v)):>11.1%} {early[kind] / replications:>34.1%}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, default=300)
    parser.add_argument("--replications", type=int, default=300)
    parser.add_argument("--error-sd", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", choices=["all", "false", "detection"], default="all")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.part in ("all", "false"):
        false_alarms(args.years, args.seed)
    if args.part in ("all", "detection"):
        for error_sd in args.error_sd:
            detection(args.replications, args.seed, error_sd)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
