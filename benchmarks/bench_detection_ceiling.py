"""Drift alarms: how fast could any detector find the break at 5% false alarms per stable year?

Prints figures; not a test. Same break simulation as part 2 of ``benchmarks/bench_alarms.py`` (its
functions, worlds and seeds: the same champions' CV errors and the same tracked error paths, replication
by replication), four detectors side by side, each held to 5% false alarms per stable year of 52
tracked weeks with no event before ``min_weeks_before_event`` (4) tracked weeks:

* ``product``: the product's defaults (interval, MAPE and changepoint rules, 5%/3 each), calibrated per
  champion on its own simulated CV errors (4 folds x 13 weeks), exactly as in bench_alarms.
* ``oracle rules``: the same three rules and split, thresholds calibrated on the *true* null model
  (level sd, noise sd, AR(1) coefficient known, nothing drawn): what estimating the null from four CV
  folds costs the product's rules.
* ``oracle GLS``: the changepoint statistic alone (the largest GLS ``|t|`` of a step over candidate
  start weeks, all tracked weeks, two-sided) under the true covariance, the whole 5% budget on it.
* ``oracle LR``: the likelihood ratio of a step of the known size and sign ``delta`` (the break's mean
  over the post-break weeks, in forecast sds) starting at an unknown week, under the true Gaussian
  covariance (level + AR(1)): ``max_s delta g_s'w - delta^2 |g_s|^2 / 2`` with ``w`` the whitened errors
  and ``g_s`` the whitened step from week ``s`` (a CUSUM for correlated errors, tuned to the break). It
  knows the size, the sign and the null exactly, which no real detector does (for independent errors
  the CUSUM of a known shift is the delay-optimal detector at a given false-alarm rate; with the level
  error and AR(1) taken into the likelihood it is the natural counterpart, not a proven optimum).

The oracles' thresholds come from ``--null-paths`` simulated stable years of the true null (the 95%
quantile of the yearly maximum from week 4 on; the oracle rules 1 - 5%/3 per rule). Their simulated
false-alarm rate on a fresh set of as many stable years is printed next to them.

    nice -n 19 .venv/bin/python -u benchmarks/bench_detection_ceiling.py [--replications 100]
        [--calibration-paths 5000] [--null-paths 20000] [--seed 0] [--error-sd 1] [--cv-folds 4]
        [--changepoint-weight W] [--product-lr SIZE] [--chance-paths N] [--no-product]

``--changepoint-weight W``: the changepoint rule's ``rate_weight`` (product and oracle rules).
``--product-lr SIZE``: also the product with its changepoint test replaced by a two-sided likelihood ratio
of a step of SIZE forecast sds under the champion's fitted null (same share of the rate, same simulated
years). ``--chance-paths N``: the product's chance of a false alarm per champion on N shared stable years
of the true process (averaged, in the rate column). ``--cv-folds``: CV folds per champion (more folds
draw more from the generator: other tracked paths than the 4-fold run's).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_alarms as ba  # noqa: E402

from mmm_pipeline.monitoring.calibration import (  # noqa: E402
    YEAR_WEEKS,
    NullErrors,
    _whitener,
    ape,
    null_thresholds,
    rate_shares,
    weekly_statistic,
)
from mmm_pipeline.monitoring.settings import ChangepointRule, MonitoringConfig  # noqa: E402

RATE = 0.05


def step_sums(z: np.ndarray, null: NullErrors) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` (paths x start s x end t): ``A = g_s'w`` and ``B = |g_s|^2`` over the weeks ``s..t``
    (``w`` the whitened errors, ``g_s`` the whitened step from week ``s``; zero where ``s > t``). The
    whitener is lower triangular, so its leading block whitens every prefix: cumulative sums give all
    ends at once. ``null`` must have no drawn parameters (``shift_test_level_sd`` is then its level sd)."""
    n = z.shape[1]
    whiten, steps = _whitener(null, n)
    w = z @ whiten.T
    mask = np.tril(np.ones((n, n)))  # [k, s]: week k on a step from s
    a = np.cumsum(w[:, :, None] * (steps * mask)[None], axis=1).transpose(0, 2, 1)
    b = np.cumsum(steps**2 * mask, axis=0).T
    return a, np.broadcast_to(b, a.shape)


def lr_statistic(z: np.ndarray, null: NullErrors, delta: float, min_weeks: int) -> np.ndarray:
    """Per path and week, the largest log likelihood ratio of a step of size ``delta`` (in z units)
    from any week up to it against none; ``-inf`` before ``min_weeks``."""
    out = np.empty(z.shape)
    for lo in range(0, z.shape[0], 2000):
        a, b = step_sums(z[lo : lo + 2000], null)
        lr = delta * a - 0.5 * delta**2 * b
        n = z.shape[1]
        lr = np.where(np.tril(np.ones((n, n), dtype=bool)).T[None], lr, -np.inf)  # s <= t
        out[lo : lo + 2000] = lr.max(axis=1)
    out[:, : min_weeks - 1] = -np.inf
    return out


def two_sided_lr(z: np.ndarray, null: NullErrors, size: float, min_weeks: int) -> np.ndarray:
    """The larger of :func:`lr_statistic` for a step of ``+size`` and of ``-size``."""
    return np.maximum(lr_statistic(z, null, size, min_weeks), lr_statistic(z, null, -size, min_weeks))


def tuned_threshold(cal, rules, size: float, min_weeks: int) -> float:  # noqa: ANN001
    """Threshold of a two-sided likelihood ratio tuned to a step of ``size`` forecast sds under the
    champion's fitted null (whitened as the changepoint test is), at the changepoint rule's share of the
    rate on the calibration's own simulated years (the same generator and draws as ``calibrate``)."""
    changepoint = next(r.name for r in rules if r.kind == "changepoint")
    share = rate_shares(rules, cal.rate_per_year)[changepoint]
    years = cal.z_null.simulate(np.random.default_rng(cal.seed), cal.n_paths, YEAR_WEEKS)
    return float(np.quantile(two_sided_lr(years, cal.z_null, size, min_weeks).max(axis=1), 1 - share))


def tuned_rules_fire(cal, rules, z, pct, min_weeks: int, size: float, threshold: float) -> np.ndarray:  # noqa: ANN001
    """Weeks in which the product's interval or MAPE rule fires (its own calibration) or, in place of its
    changepoint rule, the likelihood ratio of :func:`tuned_threshold` exceeds that threshold."""
    others = [r for r in rules if r.kind != "changepoint"]
    return ba.firing(others, cal, z, pct, min_weeks) | (
        two_sided_lr(z, cal.z_null, size, min_weeks) > threshold
    )


def gls_statistic(z: np.ndarray, null: NullErrors, min_weeks: int) -> np.ndarray:
    """The product's changepoint statistic, reading every tracked week, under ``null``."""
    return weekly_statistic(ChangepointRule(window=YEAR_WEEKS), z, min_weeks, null)


def detection_ceiling(args: argparse.Namespace, error_sd: float) -> None:
    cfg = MonitoringConfig()
    if args.changepoint_weight is not None:
        cfg = MonitoringConfig(drift_rules=[
            r.model_copy(update={"rate_weight": args.changepoint_weight}) if r.kind == "changepoint" else r
            for r in cfg.drift_rules
        ])  # fmt: skip
    rules, min_weeks = cfg.drift_rules, cfg.min_weeks_before_event
    stable, post, channel = ba.BREAK_STABLE, 26, ba.BREAK_CHANNEL
    sd, expected, level, shifts = ba.break_setup(error_sd, post)
    forecast_cv = np.array([sd / level])
    print(
        f"\n=== detection ceiling, break simulation world (seed 3, {channel}), {args.replications} "
        f"replications, forecast error sd {error_sd:g} x noise sd, 8 stable weeks, {RATE:.0%} a year ==="
    )
    print(f"{'break':<20} {'process':<36} {'detector':<13} {'median delay':>12} {'<= 8 weeks':>10} "
          f"{'found <= 26':>11} {'early':>6} {'rate/yr (sim)':>13}  threshold")  # fmt: skip
    for name, (level_sd, rho) in list(ba.PROCESSES.items())[1:]:
        null = ba.process(level_sd, rho)
        # Stable years of the true null: one set to calibrate the oracles, a fresh one to check them.
        key = [args.seed, 7, int(level_sd * 10), int(rho * 10)]
        cal_z = null.simulate(np.random.default_rng(key), args.null_paths, YEAR_WEEKS)
        check_z = null.simulate(np.random.default_rng([*key, 1]), args.null_paths, YEAR_WEEKS)
        rule_thr = null_thresholds(rules, null, forecast_cv, RATE, min_weeks, args.null_paths, args.seed)[0]
        gls_thr = float(np.quantile(gls_statistic(cal_z, null, min_weeks).max(axis=1), 1 - RATE))
        gls_rate = float(np.mean(gls_statistic(check_z, null, min_weeks).max(axis=1) > gls_thr))
        check_ape = ape(check_z, np.full_like(check_z, forecast_cv[0]))
        rules_rate = float(ba.firing(rules, _Known(rule_thr, null), check_z, check_ape, min_weeks)
                           .any(axis=1).mean())  # fmt: skip
        for label, shift in shifts.items():
            delta = float(np.mean(shift[stable:]) / sd)
            lr_thr = float(np.quantile(lr_statistic(cal_z, null, delta, min_weeks).max(axis=1), 1 - RATE))
            lr_rate = float(np.mean(lr_statistic(check_z, null, delta, min_weeks).max(axis=1) > lr_thr))
            # The same generator, consumed in the same order, as bench_alarms.detection.
            rng = np.random.default_rng([args.seed, int(level_sd * 10), int(rho * 10), len(label)])
            zs, apes, product, product_lr = [], [], [], []
            chance: dict[str, list[float]] = {"product": [], "product LR": []}
            k = args.chance_paths
            for _ in range(args.replications):
                errors, groups = ba.cv_errors(null, rng, sd, args.cv_folds)
                e = null.simulate(rng, 1, stable + post)[0] * sd
                actual = expected + e + shift
                z = ((actual - expected) / sd)[None, :]
                pct = (np.abs(actual - expected) / np.abs(actual))[None, :]
                zs.append(z[0])
                apes.append(pct[0])
                if not args.no_product:
                    cal = ba.calibrated(cfg, rules, errors, np.full(errors.size, level), groups, sd)
                    product.append(ba.firing(rules, cal, z, pct, min_weeks)[0])
                    if k:
                        f = ba.firing(rules, cal, check_z[:k], check_ape[:k], min_weeks)
                        chance["product"].append(float(f.any(axis=1).mean()))
                    if args.product_lr:
                        size, thr_lr = (
                            args.product_lr,
                            tuned_threshold(cal, rules, args.product_lr, min_weeks),
                        )
                        product_lr.append(tuned_rules_fire(cal, rules, z, pct, min_weeks, size, thr_lr)[0])
                        if k:
                            f = tuned_rules_fire(
                                cal, rules, check_z[:k], check_ape[:k], min_weeks, size, thr_lr
                            )
                            chance["product LR"].append(float(f.any(axis=1).mean()))
            z, pct = np.array(zs), np.array(apes)
            fires = {
                "oracle rules": ba.firing(rules, _Known(rule_thr, null), z, pct, min_weeks),
                "oracle GLS": gls_statistic(z, null, min_weeks) > gls_thr,
                "oracle LR": lr_statistic(z, null, delta, min_weeks) > lr_thr,
            }
            rates = {"oracle rules": rules_rate, "oracle GLS": gls_rate, "oracle LR": lr_rate}
            thr = {
                "oracle rules": "interval {outside_interval:.2f} MAPE {rolling_mape:.1%} "
                "t {forecast_shift:.2f}".format(**rule_thr),
                "oracle GLS": f"t {gls_thr:.2f}", "oracle LR": f"log LR {lr_thr:.2f} (delta {delta:+.2f} sd)",
            }  # fmt: skip
            if product:
                fires = {"product": np.array(product), **fires}
                rates["product"] = float(np.mean(chance["product"])) if k else np.nan
            if product_lr:
                name_lr = f"product LR{args.product_lr:g}"
                fires = {name_lr: np.array(product_lr), **fires}
                rates[name_lr] = float(np.mean(chance["product LR"])) if k else np.nan
            for detector, f in fires.items():
                delays = np.array([ba.first_week(row, stable) - stable for row in f])
                early = float(np.mean(f[:, :stable].any(axis=1)))
                simulated = f"{rates[detector]:.2%}" if np.isfinite(rates.get(detector, np.nan)) else "-"
                print(f"{label:<20} {name:<36} {detector:<13} {np.median(delays):>12} "
                      f"{np.mean(delays <= 8):>10.1%} {np.mean(np.isfinite(delays)):>11.1%} {early:>6.1%} "
                      f"{simulated:>13}  {thr.get(detector, '')}",
                      flush=True)  # fmt: skip


class _Known:
    """Thresholds under a known null model, in the shape ``bench_alarms.firing`` reads."""

    def __init__(self, thresholds: dict[str, float], null: NullErrors) -> None:
        self.thresholds, self.z_null = thresholds, null


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--error-sd", type=float, nargs="+", default=[1.0])
    parser.add_argument("--cv-folds", type=int, default=ba.CV_FOLDS)
    parser.add_argument(
        "--calibration-paths",
        type=int,
        default=5000,
        help="simulated years per product calibration (as bench_alarms)",
    )
    parser.add_argument(
        "--null-paths",
        type=int,
        default=20_000,
        help="stable years of the true null (oracle thresholds, and again to check them)",
    )
    parser.add_argument(
        "--changepoint-weight",
        type=float,
        default=None,
        help="the changepoint rule's rate_weight (product and oracle rules; default: the config's)",
    )
    parser.add_argument(
        "--product-lr",
        type=float,
        default=0.0,
        help="also the product, its changepoint rule replaced by a likelihood ratio tuned to this step (sds)",
    )
    parser.add_argument(
        "--chance-paths",
        type=int,
        default=0,
        help="the product's chance of a false alarm per champion on this many shared stable years",
    )
    parser.add_argument("--no-product", action="store_true", help="oracles only (fast)")
    args = parser.parse_args()
    ba.CALIBRATION_PATHS[0] = args.calibration_paths
    started = time.perf_counter()
    for error_sd in args.error_sd:
        detection_ceiling(args, error_sd)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
