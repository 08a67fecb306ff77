"""Drift-rule thresholds with a stated false-alarm rate, calibrated on the champion's own forecast errors.

Why: the fixed thresholds (CUSUM 5, 3 of 4 weeks outside the 94% interval, MAPE 10%) treat weekly
errors as independent and the forecast as well calibrated. A champion's out-of-sample errors are
neither: its weeks share the posterior's level error and its residuals are autocorrelated, so fixed
rules fire on a stable world far more often than they appear to, and a 10% MAPE limit fires on every
champion whose honest out-of-sample MAPE is above 10%. Every alarm starts a refit and a re-optimization.

The null model of a champion's weekly errors (fitted by :func:`fit_null` on its time-slice CV errors,
one group per fold; or, without CV, on its in-sample residuals, one group) is

    x_t = level + u_t,   level ~ N(0, level_sd^2) shared by all weeks of one forecast origin,
                         u_t = rho * u_{t-1} + e_t stationary AR(1) with sd noise_sd,

fitted to the standardized errors ``z = (actual - mean) / sd`` (what the CUSUM, changepoint and interval
rules read). Four CV folds of 13 weeks estimate it loosely, so the simulated years do not take the
estimates as known: each draws its own noise variance, level variance and autocorrelation around them
(:meth:`NullErrors.simulate`), so that the stated rate holds averaged over what the estimates may have
missed, not only for a champion whose estimates happen to be right. The changepoint rule also uses the
fitted model itself: :func:`shift_fit` is the GLS t of a step in ``z`` under this covariance (the level
error is the champion's own, a change of it is drift). The MAPE rule averages ``|actual - mean| /
|actual| = |z c| / |1 + z c|`` with ``c = sd / mean`` the forecast's own coefficient of variation: its
simulated weeks take ``z`` from the null model and ``c`` drawn from the champion's own weeks, which keeps
the heavy tail that weeks with a small KPI give relative errors (a Gaussian fitted to relative errors
would miss it and fire on every such week). :func:`calibrate` simulates stable years of tracking under it
(numpy, seeded: the same champion always gets the same thresholds) and takes, per rule, the threshold
whose chance of firing at least once in a year equals its share of ``rate`` (:func:`rate_shares`: by
each rule's ``rate_weight``, evenly by default; the spend-range rule reads spend, not errors, and is not
part of the split); events only count from ``min_weeks``
tracked weeks on, as in :func:`mmm_pipeline.monitoring.drift.decide`. Pure functions, no Dagster, no DuckDB.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import chi2

from .settings import ChangepointRule, CusumRule, DriftRule, IntervalMissRule, RollingMapeRule

T = TypeVar("T")

#: Weeks of one stable year of tracking.
YEAR_WEEKS = 52
#: Rule kinds that read the forecast errors (the ones the false-alarm rate is split over).
ERROR_RULES = ("interval_misses", "rolling_mape", "cusum", "changepoint")
#: Residuals needed to fit a null model at all.
MIN_RESIDUALS = 8
#: Upper bound on the fitted autocorrelation (a near-unit root is not a stable forecast error).
MAX_RHO = 0.9
#: Calibrations kept per process (see :func:`calibrate`): a market's champion changes rarely, and
#: hundreds of markets stay cheap.
MAX_CACHED = 1024
#: Quantile of the level variance's sampling spread the changepoint test assumes (see
#: :attr:`NullErrors.shift_test_level_sd`).
SHIFT_TEST_LEVEL_QUANTILE = 0.9


def _remembered(function: Callable[..., T]) -> Callable[..., T]:
    """``function`` (pure and seeded) remembered per process by the content of its arguments (their
    pickle's digest), up to :data:`MAX_CACHED` results, the oldest dropped first."""
    cache: dict[str, T] = {}

    @functools.wraps(function)
    def remembered(*args: object, **kwargs: object) -> T:
        key = hashlib.sha256(pickle.dumps((args, sorted(kwargs.items())))).hexdigest()
        if key not in cache:
            if len(cache) >= MAX_CACHED:
                cache.pop(next(iter(cache)))
            cache[key] = function(*args, **kwargs)
        return cache[key]

    return remembered


@dataclass(frozen=True)
class NullErrors:
    """The fitted null model of a champion's weekly errors (see the module doc)."""

    level_sd: float
    noise_sd: float
    rho: float
    n_residuals: int
    n_groups: int
    noise_dof: float = np.inf
    """Degrees of freedom behind ``noise_sd`` (``inf``: known exactly, nothing drawn)."""
    level_dof: float = np.inf
    """Degrees of freedom behind the squared group means that ``level_sd`` comes from."""
    mean_factor: float = 0.0
    """Mean over the groups of Var(group mean) / noise variance (see :func:`fit_null`)."""
    rho_se: float = 0.0
    """Standard error of ``rho``'s estimate (``0``: known exactly, nothing drawn; see :meth:`simulate`)."""

    @property
    def total_sd(self) -> float:
        return float(np.hypot(self.level_sd, self.noise_sd))

    @property
    def shift_test_level_sd(self) -> float:
        """The level-error sd the changepoint test whitens with: the upper
        :data:`SHIFT_TEST_LEVEL_QUANTILE` of the spread :meth:`simulate` draws it from (the estimate
        itself when it is known exactly).

        Why not the estimate: from four CV folds it is loose, and the test errs asymmetrically: a level
        error taken too small is read as a shift from the first weeks on (false alarms), one taken too
        large only leans more on the weeks before a shift. Measured (150 simulated champions per process,
        CV 4 x 13, the test alone at 5%/3 a year): with the estimate, 6.0% / 4.7% of stable years fired
        with a level error sd 0.5 (without / with AR(1) 0.3); with the 90% quantile 0.7% / 2.7%, the
        median delay of a 1.6-sd shift 1-1.5 weeks longer."""
        if not np.isfinite(self.level_dof):
            return self.level_sd
        means_sq = self.level_sd**2 + self.noise_sd**2 * self.mean_factor
        upper = means_sq * chi2.ppf(SHIFT_TEST_LEVEL_QUANTILE, self.level_dof) / self.level_dof
        return float(np.sqrt(max(upper - self.noise_sd**2 * self.mean_factor, self.level_sd**2)))

    def simulate(self, rng: np.random.Generator, n_paths: int, n_weeks: int) -> np.ndarray:
        """``n_paths`` independent stretches of ``n_weeks`` errors, each with its own level error.

        With finite degrees of freedom each path first draws its own variances around the estimates:
        a few CV folds estimate them loosely, and thresholds set on the point estimates fire more often
        than stated whenever the estimate happens to be low. The noise variance is drawn from its scaled
        inverse chi-square; the squared group means from a chi-square with one degree of freedom per
        group around their estimate (tried: the inverse chi-square of four folds has so heavy a tail
        that the actual false-alarm rate fell to about 1% a year and the CUSUM thresholds doubled, while
        the point estimates alone gave 6-11% a year where 5% was meant, with 5%/3 per rule, on 60
        simulated champions per residual process, CV 4 x 13 weeks).

        The autocorrelation is drawn too (``rho + rho_se * N(0, 1)``, kept in ``[0, MAX_RHO]``): with it
        at its point estimate, champions whose 4 x 13 CV weeks happen to show less autocorrelation than
        their errors have got thresholds that fire too often on every rule (the interval rule's k of n
        misses and the rolling MAPE cluster with the autocorrelation; the changepoint test whitens with
        the estimate, so a ``rho`` taken too small reads correlated noise as a shift). Measured (200
        simulated champions per process, each one's chance of a false alarm in a stable year averaged,
        level error sd 0.5 + AR(1) 0.3, forecast sd 5%): 6.4% a year with ``rho`` fixed (interval / MAPE /
        changepoint 2.5% / 2.4% / 3.3%, each meant to be 1.7%), 4.6% with it drawn (1.9% / 1.9% / 2.0%).
        Drawing the level variance from its inverse chi-square (the fiducial spread) instead as well gave
        2.3% and held a 30% drop of search's effect back past 26 weeks (benchmarks/README.md)."""
        noise_var = np.full((n_paths, 1), self.noise_sd**2)
        level_var = np.full((n_paths, 1), self.level_sd**2)
        if np.isfinite(self.noise_dof):
            noise_var = noise_var * self.noise_dof / rng.chisquare(self.noise_dof, (n_paths, 1))
        if np.isfinite(self.level_dof):
            means_sq = self.level_sd**2 + self.noise_sd**2 * self.mean_factor
            means_sq = means_sq * rng.chisquare(self.level_dof, (n_paths, 1)) / self.level_dof
            level_var = np.maximum(0.0, means_sq - noise_var * self.mean_factor)
        level = rng.standard_normal((n_paths, 1)) * np.sqrt(level_var)
        shocks = rng.standard_normal((n_paths, n_weeks)) * np.sqrt(noise_var)
        rho: float | np.ndarray = self.rho
        if self.rho_se > 0:
            rho = np.clip(self.rho + self.rho_se * rng.standard_normal(n_paths), 0.0, MAX_RHO)
        u = np.empty((n_paths, n_weeks))
        u[:, 0] = shocks[:, 0]
        scale = np.sqrt(1.0 - np.square(rho))
        for t in range(1, n_weeks):
            u[:, t] = rho * u[:, t - 1] + scale * shocks[:, t]
        return level + u

    def as_dict(self) -> dict[str, float | int]:
        return {
            "level_sd": round(self.level_sd, 4), "noise_sd": round(self.noise_sd, 4),
            "rho": round(self.rho, 3), "rho_se": round(self.rho_se, 3), "n_residuals": self.n_residuals,
            "n_groups": self.n_groups,
        }  # fmt: skip


def ape(z: np.ndarray, forecast_cv: np.ndarray) -> np.ndarray:
    """Absolute percentage error of weeks whose standardized error is ``z`` and whose forecast has
    coefficient of variation ``forecast_cv`` (``actual = mean * (1 + z * forecast_cv)``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.abs(z * forecast_cv) / np.abs(1.0 + z * forecast_cv)
    return np.nan_to_num(out, nan=0.0, posinf=1e6)


def _mean_variance_factor(rho: float, h: int) -> float:
    """Var(mean of ``h`` stationary AR(1) values) / their variance."""
    k = np.arange(1, h)
    return float((1.0 + 2.0 * np.sum((1.0 - k / h) * rho**k)) / h)


def fit_null(values: Sequence[float] | np.ndarray, groups: Sequence[object] | np.ndarray) -> NullErrors:
    """Method-of-moments fit of :class:`NullErrors` to errors ``values`` in week order within ``groups``
    (one group per CV fold: the weeks forecast from one origin, which share its level error).

    ``rho``: pooled lag-1 autocorrelation of the within-group deviations, corrected for the downward
    bias of short demeaned series (``+ (1 + 4 rho) / h``) and kept in ``[0, 0.9]`` (a negative estimate
    from a few weeks is treated as none: the conservative side). ``noise_sd``: the within-group spread,
    corrected for the part of the AR(1) variance the group means absorb. ``level_sd``: what the squared
    group means (around zero, so a systematic bias counts as level error) hold beyond that; zero when
    one group (in-sample residuals) cannot separate it. ``rho_se``: the large-sample standard error of a
    lag-1 autocorrelation, ``sqrt((1 - rho^2) / m)`` with ``m`` the lag pairs left after demeaning each
    group (its size less 2, summed), widened by the bias correction's factor ``1 + 4 / h``. Measured over
    3,000 simulated 4 x 13 CV sets (level error sd 0.5): the corrected estimate before clipping spreads
    with sd 0.17 / 0.17 / 0.16 at true rho 0 / 0.3 / 0.6, where this gives a median 0.20 / 0.19 / 0.16
    (on the wide side at small rho: the conservative side).
    """
    x = np.asarray(values, dtype=float)
    g = np.asarray(groups)
    keep = np.isfinite(x)
    x, g = x[keep], g[keep]
    if x.size < MIN_RESIDUALS:
        raise ValueError(f"{x.size} finite residuals; at least {MIN_RESIDUALS} are needed to calibrate")
    parts = [x[g == key] for key in dict.fromkeys(g.tolist())]
    deviations = [p - p.mean() for p in parts]
    num = sum(float(np.sum(d[1:] * d[:-1])) for d in deviations if d.size >= 3)
    den = sum(float(np.sum(d**2)) for d in deviations if d.size >= 3)
    rho = num / den if den > 0 else 0.0
    mean_h = float(np.mean([p.size for p in parts]))
    rho = float(np.clip(rho + (1.0 + 4.0 * rho) / mean_h, 0.0, MAX_RHO))
    absorbed = [_mean_variance_factor(rho, p.size) for p in parts]
    within = sum(float(np.sum(d**2)) for d in deviations)
    dof = sum(p.size * (1.0 - f) for p, f in zip(parts, absorbed, strict=True))
    noise_var = within / dof if dof > 0 else float(np.mean(x**2))
    level_var, level_dof = 0.0, np.inf
    if len(parts) > 1:
        means_sq = np.mean([p.mean() ** 2 for p in parts])
        level_var = max(0.0, float(means_sq - noise_var * np.mean(absorbed)))
        level_dof = float(len(parts))
    # Autocorrelated weeks carry less information than as many independent ones.
    noise_dof = max(dof * (1.0 - rho) / (1.0 + rho), 1.0)
    pairs = max(sum(p.size - 2 for p in parts if p.size >= 3), 1)
    rho_se = float(np.sqrt((1.0 - rho**2) / pairs) * (1.0 + 4.0 / mean_h))
    return NullErrors(float(np.sqrt(level_var)), float(np.sqrt(noise_var)), rho, int(x.size), len(parts),
                      noise_dof, level_dof, float(np.mean(absorbed)), rho_se)  # fmt: skip


def _whitener(null: NullErrors, n_weeks: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W, G)`` for ``n_weeks`` consecutive errors: ``W = L^-1``, ``L`` the lower Cholesky factor of
    their null covariance (the level variance on every entry, at its upper quantile
    :attr:`NullErrors.shift_test_level_sd`; AR(1) noise ``noise_sd^2 rho^|i-j|``),
    so ``W x`` is independent standard normal under the null; and the whitened step regressors,
    ``G[:, s] = W h_s`` with ``h_s`` 1 from week ``s`` on (a shift that began in week ``s``), which are
    the reverse cumulative sums of ``W``'s columns. ``W`` is lower triangular: its leading ``n x n``
    block whitens the first ``n`` weeks, so one factor serves every prefix of a path. A tiny ridge keeps
    a degenerate fit (no noise) factorable."""
    lag = np.abs(np.subtract.outer(np.arange(n_weeks), np.arange(n_weeks)))
    cov = null.shift_test_level_sd**2 + null.noise_sd**2 * null.rho**lag
    whiten = np.linalg.inv(np.linalg.cholesky(cov + 1e-9 * np.eye(n_weeks)))
    return whiten, np.cumsum(whiten[:, ::-1], axis=1)[:, ::-1]


def shift_fit(z: np.ndarray, null: NullErrors) -> tuple[float, int, float]:
    """The changepoint test on one path of standardized errors as of its last week: ``(t, start,
    shift)``, the largest ``|t|`` over candidate first weeks of a shift, that week (0-based) and the
    shift's GLS estimate there (in forecast sds; negative: actuals below the forecast).

    For a shift that began in week ``s`` (step regressor ``h_s``) and null covariance ``Sigma`` (see
    :func:`_whitener`), GLS gives ``shift = h' Sigma^-1 z / h' Sigma^-1 h`` with standard error
    ``(h' Sigma^-1 h)^-1/2``; ``t = shift / se``. The level error is part of ``Sigma``, not of the
    alternative: the weeks before ``s`` tell what the level is, the level error's spread says how much
    of a constant offset is the champion's own; ``s = 0`` is a shift since the first tracked week,
    judged against that spread alone."""
    x = np.nan_to_num(np.asarray(z, dtype=float))
    whiten, steps = _whitener(null, x.size)
    info = np.sum(steps**2, axis=0)
    t = steps.T @ (whiten @ x) / np.sqrt(info)
    best = int(np.argmax(np.abs(t)))
    return float(abs(t[best])), best, float(t[best] / np.sqrt(info[best]))


def shift_statistic(paths: np.ndarray, null: NullErrors, window: int) -> np.ndarray:
    """:func:`shift_fit`'s ``t`` as of every week of every path (paths x weeks), each week reading its
    last ``window`` weeks. Vectorized: one factor whitens every prefix, so the statistic of all weeks up
    to ``window`` comes from cumulative sums per candidate start (tested equal to :func:`shift_fit`)."""
    x = np.nan_to_num(np.asarray(paths, dtype=float))
    n_paths, n_weeks = x.shape
    head = min(n_weeks, window)
    whiten, steps = _whitener(null, head)
    w = x[:, :head] @ whiten.T
    out = np.zeros((n_paths, n_weeks))
    for s in range(head):
        t = np.cumsum(w[:, s:] * steps[s:, s], axis=1) / np.sqrt(np.cumsum(steps[s:, s] ** 2))
        np.maximum(out[:, s:head], np.abs(t), out=out[:, s:head])
    # Weeks past the window read their last `window` weeks: whitened, the statistic for each candidate
    # start s is the (lower-triangular) step regressor's dot product, one matrix product per week.
    scale = np.sqrt(np.sum(steps**2, axis=0))
    for end in range(head + 1, n_weeks + 1):
        t = (x[:, end - window : end] @ whiten.T) @ steps / scale
        out[:, end - 1] = np.max(np.abs(t), axis=1)
    return out


def _start(rule: DriftRule, min_weeks: int) -> int:
    """First tracked week (1-based) in which ``rule`` can open an event."""
    own = {"interval_misses": getattr(rule, "n", 1), "rolling_mape": getattr(rule, "min_weeks", 1)}
    return max(min_weeks, own.get(rule.kind, 1))


def weekly_statistic(
    rule: DriftRule, paths: np.ndarray, min_weeks: int, null: NullErrors | None = None
) -> np.ndarray:
    """The rule's statistic as of each week of each simulated path (paths x weeks), ``-inf`` in the
    weeks it cannot fire in; the rule fires in a week iff it exceeds the threshold there. ``paths``:
    standardized errors ``z`` for the CUSUM, changepoint and interval rules, absolute percentage errors
    for the MAPE rule; ``null``: the champion's fitted null model (the changepoint rule's covariance).
    Vectorized twins of :mod:`mmm_pipeline.monitoring.drift`'s rules (tested equal)."""
    start = _start(rule, min_weeks)
    n_paths, n_weeks = paths.shape
    out = np.full((n_paths, n_weeks), -np.inf)
    if start > n_weeks:
        return out
    if isinstance(rule, CusumRule):
        up = np.zeros(n_paths)
        down = np.zeros(n_paths)
        for t in range(n_weeks):
            up = np.maximum(0.0, up + paths[:, t] - rule.slack)
            down = np.maximum(0.0, down - paths[:, t] - rule.slack)
            out[:, t] = np.maximum(up, down)
    elif isinstance(rule, IntervalMissRule):
        # Fires when at least k of the last n |z| exceed the bound, i.e. the k-th largest does.
        windows = sliding_window_view(np.abs(paths), rule.n, axis=1)
        windows = np.partition(windows, rule.n - rule.k, axis=2)[:, :, rule.n - rule.k]
        out[:, rule.n - 1 :] = windows
    elif isinstance(rule, RollingMapeRule):
        cumulative = np.cumsum(np.abs(paths), axis=1)
        t = np.arange(1, n_weeks + 1)
        lagged = np.concatenate([np.zeros((n_paths, 1)), cumulative], axis=1)
        lower = np.maximum(0, t - rule.window)
        out = (cumulative - lagged[:, lower]) / (t - lower)
    elif isinstance(rule, ChangepointRule):
        if null is None:
            raise ValueError(f"rule {rule.name!r} needs the champion's null error model")
        out = shift_statistic(paths, null, rule.window)
    else:
        raise ValueError(f"rule kind {rule.kind!r} is not calibrated")
    out[:, : start - 1] = -np.inf
    return out


def year_statistic(
    rule: DriftRule, paths: np.ndarray, min_weeks: int, null: NullErrors | None = None
) -> np.ndarray:
    """Per simulated path, the largest value the rule's statistic takes in the weeks it may fire in; the
    rule fires in that year iff this exceeds its threshold (see :func:`weekly_statistic`)."""
    return weekly_statistic(rule, paths, min_weeks, null).max(axis=1)


def fixed_threshold(rule: DriftRule) -> float | None:
    """The rule's configured threshold on its own statistic (``None``: calibrated)."""
    if isinstance(rule, CusumRule | RollingMapeRule):
        return rule.threshold
    if isinstance(rule, IntervalMissRule):
        # A nominal central interval of a well-calibrated Gaussian forecast: |z| beyond its quantile.
        return None if rule.interval is None else {50: 0.6745, 94: 1.8808}[rule.interval]
    return None


@dataclass(frozen=True)
class Calibration:
    """Calibrated thresholds of one champion's drift rules and what they rest on."""

    rate_per_year: float
    source: str
    """``cv``: the champion's time-slice CV errors; ``in_sample``: its in-sample residuals (no CV)."""
    note: str
    z_null: NullErrors
    reference_mape: float | None
    """The champion's CV MAPE (in-sample MAPE under ``in_sample``): what the MAPE rule is relative to."""
    min_weeks: int
    thresholds: dict[str, float] = field(default_factory=dict)
    """Rule name -> threshold in use (calibrated, or the configured fixed one)."""
    calibrated: dict[str, bool] = field(default_factory=dict)
    simulated_rates: dict[str, float] = field(default_factory=dict)
    """Rule name -> simulated chance of firing in a stable year at its threshold (and ``all``: any rule)."""
    n_paths: int = 0
    seed: int = 0

    def rule_evidence(self, name: str) -> dict:
        """What a firing rule's evidence states about its threshold."""
        out: dict[str, object] = {
            "calibrated": self.calibrated.get(name, False),
            "false_alarm_rate_per_year": self.rate_per_year,
            "rule_rate_per_year": round(self.simulated_rates.get(name, float("nan")), 4),
            "calibration_source": self.source,
        }
        if self.reference_mape is not None:
            out["reference_mape"] = round(self.reference_mape, 4)
        return out

    def as_dict(self) -> dict:
        """JSON-ready summary (Dagster metadata)."""
        return {
            "false_alarm_rate_per_year": self.rate_per_year,
            "source": self.source,
            "note": self.note,
            "thresholds": {k: round(v, 4) for k, v in self.thresholds.items()},
            "calibrated": self.calibrated,
            "simulated_rate_per_year": {k: round(v, 4) for k, v in self.simulated_rates.items()},
            "reference_mape": None if self.reference_mape is None else round(self.reference_mape, 4),
            "min_weeks_before_event": self.min_weeks,
            "null_z": self.z_null.as_dict(),
            "simulated_years": self.n_paths,
        }


def rate_shares(rules: Sequence[DriftRule], rate_per_year: float) -> dict[str, float]:
    """Each error rule's share of ``rate_per_year``: its ``rate_weight`` over the sum of the error
    rules' weights (a union bound: together they fire in at most about ``rate_per_year`` of the stable
    years). Splitting on the rules' joint behaviour instead (each rule more, all together exactly the
    rate under the fitted model) was tried: with four CV folds the fitted level error is often too
    small, and the actual rate came out at 7.5-11% a year where there is a level error; the union
    bound's slack covers part of that (6-8.5%, benchmarks/README.md)."""
    error_rules = [r for r in rules if r.kind in ERROR_RULES]
    total = sum(float(getattr(r, "rate_weight", 1.0)) for r in error_rules)
    return {r.name: rate_per_year * float(getattr(r, "rate_weight", 1.0)) / total for r in error_rules}


def null_thresholds(
    rules: Sequence[DriftRule],
    z_null: NullErrors,
    forecast_cv: np.ndarray,
    rate_per_year: float,
    min_weeks: int,
    n_paths: int = 20_000,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, bool], dict[str, float]]:
    """``(thresholds, calibrated, simulated_rates)`` of the error rules among ``rules`` under the null
    model ``z_null`` (see :class:`Calibration`'s fields), the MAPE rule's weeks drawing their forecast
    coefficient of variation from ``forecast_cv``. The core of :func:`calibrate`, separate so that a
    known null model can be calibrated as well (the detection ceiling in
    benchmarks/bench_detection_ceiling.py calibrates the product's rules on the true one)."""
    error_rules = [r for r in rules if r.kind in ERROR_RULES]
    rng = np.random.default_rng(seed)
    z_paths = z_null.simulate(rng, n_paths, YEAR_WEEKS)
    pct_paths = ape(z_paths, rng.choice(forecast_cv, (n_paths, YEAR_WEEKS)))
    stats = {
        r.name: year_statistic(r, pct_paths if isinstance(r, RollingMapeRule) else z_paths, min_weeks, z_null)
        for r in error_rules
    }
    fixed = {r.name: fixed_threshold(r) for r in error_rules}
    shares = rate_shares(error_rules, rate_per_year)
    thresholds, calibrated, rates = {}, {}, {}
    fired = np.zeros(n_paths, dtype=bool)
    for name, stat in stats.items():
        given = fixed[name]
        threshold = float(np.quantile(stat, 1.0 - shares[name])) if given is None else float(given)
        thresholds[name], calibrated[name] = threshold, given is None
        hit = stat > threshold
        rates[name] = float(hit.mean())
        fired |= hit
    rates["all"] = float(fired.mean())
    return thresholds, calibrated, rates


@_remembered
def calibrate(
    rules: Sequence[DriftRule],
    z: np.ndarray,
    forecast_cv: np.ndarray,
    groups: np.ndarray,
    rate_per_year: float,
    min_weeks: int,
    source: str,
    reference_mape: float | None = None,
    n_paths: int = 20_000,
    seed: int = 0,
) -> Calibration:
    """Thresholds of the error rules among ``rules`` (see the module doc).

    ``z``: the champion's standardized errors, week-ordered within ``groups`` (CV folds; one group for
    in-sample residuals); ``forecast_cv``: its forecast sd / |forecast mean| in the same weeks;
    ``reference_mape``: its CV MAPE (default: the MAPE of these weeks). A rule with a configured
    threshold keeps it (its simulated rate is reported); the others get the ``1 - rate / m`` quantile of
    their yearly statistic, ``m`` the number of error rules. Seeded, so the same inputs always give the
    same thresholds: a run's tracking and drift steps (and every later run until the champion or the
    settings change) reuse one simulation per champion and process.
    """
    if not 0 < rate_per_year < 1:
        raise ValueError(f"false_alarm_rate_per_year must be in (0, 1), got {rate_per_year}")
    z, forecast_cv = np.asarray(z, dtype=float), np.abs(np.asarray(forecast_cv, dtype=float))
    z_null = fit_null(z, groups)
    ok = np.isfinite(z) & np.isfinite(forecast_cv)
    scale = forecast_cv[ok]
    if reference_mape is None:
        reference_mape = float(np.mean(ape(z[ok], scale)))
    error_rules = [r for r in rules if r.kind in ERROR_RULES]
    thresholds, calibrated, rates = null_thresholds(error_rules, z_null, scale, rate_per_year, min_weeks,
                                                    n_paths, seed)  # fmt: skip
    shares = rate_shares(error_rules, rate_per_year)
    split = ", ".join(f"{name} {share:.2%}" for name, share in shares.items())
    note = (
        f"thresholds from {n_paths:,} simulated stable years of the champion's {source_words(source)}"
        f" (level error sd {z_null.level_sd:.2f}, AR(1) rho {z_null.rho:.2f}, noise sd {z_null.noise_sd:.2f}"
        f" in z units); {rate_per_year:.0%} per year split over {len(error_rules)} error rule(s)"
        f" ({split}; all together: {rates['all']:.1%} of the simulated years)"
    )
    if source == "cv" and z_null.n_groups == 1:
        note += "; one CV fold: the level error between forecast origins cannot be estimated"
    if source == "in_sample":
        note += (
            "; no cross-validation errors: in-sample residuals understate out-of-sample error and cannot "
            "show the level error a new forecast origin brings, so alarms may fire more often than stated"
        )
    return Calibration(rate_per_year, source, note, z_null, reference_mape, min_weeks, thresholds,
                       calibrated, rates, n_paths, seed)  # fmt: skip


def source_words(source: str) -> str:
    return {"cv": "cross-validation errors", "in_sample": "in-sample residuals"}.get(source, source)
