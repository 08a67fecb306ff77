"""Posterior predictive of the MMM in NumPy: the KPI and its decomposition for any weeks, no refit.

Why NumPy and not ``pm.sample_posterior_predictive``: scoring forecast weeks, decomposing history,
response curves and the budget optimizer all need the same computation many times on new inputs, and a
vectorised NumPy evaluation of the shared ``transforms`` (draws x weeks x channels at once) is fast and
needs no graph compilation. The formulas are the ones ``build.py`` hands to PyTensor, so in-sample
predictions reproduce the model's ``mu``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import arviz as az
import numpy as np
import pandas as pd

from mmm_pipeline.metrics import hdi
from mmm_pipeline.model import transforms
from mmm_pipeline.model.build import (
    SATURATION_PARAMS,
    ModelData,
    ScalingSpec,
    fourier_features,
    saturation_groups,
)
from mmm_pipeline.model.spec import ModelSpec


@dataclass(frozen=True)
class PosteriorDraws:
    """The posterior's parameters with chains and draws flattened into one leading axis of ``S`` draws."""

    intercept: np.ndarray  # (S,)
    trend_slope: np.ndarray | None  # (S,)
    gamma_fourier: np.ndarray | None  # (S, 2 n_fourier)
    gamma_control: np.ndarray | None  # (S, K)
    beta: np.ndarray  # (S, C)
    alpha: np.ndarray  # (S, C)
    theta: np.ndarray | None  # (S, C), delayed adstock only
    saturation: dict[str, np.ndarray]  # name -> (S, C); NaN in the columns of channels of another kind
    sigma: np.ndarray  # (S,)
    nu: np.ndarray | None  # (S,), Student-t only
    saturation_kinds: tuple[transforms.SaturationKind, ...] | None = None
    """Each channel's saturation kind (``ModelSpec.saturation_by_channel``); ``None``: every channel has
    the one kind whose parameters ``saturation`` holds."""

    @classmethod
    def from_idata(cls, idata: az.InferenceData, spec: ModelSpec) -> PosteriorDraws:
        post = idata.posterior

        def get(name: str) -> np.ndarray | None:
            if name not in post:
                return None
            values = post[name].to_numpy()
            return values.reshape(values.shape[0] * values.shape[1], *values.shape[2:])

        if "channel" in post.coords:
            channels = [str(c) for c in post.coords["channel"].to_numpy()]
        elif spec.saturation_by_channel:
            raise ValueError("the posterior has no channel coordinate to match saturation_by_channel with")
        else:  # a posterior without coordinates (e.g. built by hand): one kind, names not needed
            channels = [str(i) for i in range(post["alpha"].shape[-1])]
        saturation = {}
        for kind, idx, dim in saturation_groups(spec, channels):
            for name in SATURATION_PARAMS[kind]:
                values = get(name)
                if dim != "channel":  # this kind's channels only: NaN elsewhere keeps the (S, C) shape
                    full = np.full((values.shape[0], len(channels)), np.nan)
                    full[:, idx] = values
                    values = full
                saturation[name] = values
        return cls(
            intercept=get("intercept"),
            trend_slope=get("trend_slope"),
            gamma_fourier=get("gamma_fourier"),
            gamma_control=get("gamma_control"),
            beta=get("beta_channel"),
            alpha=get("alpha"),
            theta=get("theta"),
            saturation=saturation,
            sigma=get("sigma"),
            nu=get("nu"),
            saturation_kinds=spec.saturation_kinds(channels),
        )

    @property
    def n_draws(self) -> int:
        return self.intercept.shape[0]

    def kinds(self) -> tuple[transforms.SaturationKind, ...]:
        """Each channel's saturation kind."""
        if self.saturation_kinds is not None:
            return self.saturation_kinds
        for kind, names in SATURATION_PARAMS.items():
            if set(names) == set(self.saturation):
                return (kind,) * self.beta.shape[1]
        raise ValueError(f"saturation parameters {sorted(self.saturation)} match no one kind; give the kinds")

    def saturation_groups(self) -> list[transforms.SaturationGroup]:
        """The channels grouped by kind with their parameters ``(S, k)``, for
        :func:`~mmm_pipeline.model.transforms.grouped_saturation` (one group when every channel has one
        kind)."""
        kinds = self.kinds()
        groups = []
        for kind in dict.fromkeys(kinds):
            idx = np.array([i for i, k in enumerate(kinds) if k == kind], dtype=int)
            whole = idx.size == len(kinds)
            params = {
                p: self.saturation[p] if whole else self.saturation[p][..., idx]
                for p in SATURATION_PARAMS[kind]
            }
            groups.append((kind, idx, params))
        return groups

    def saturate(self, x: np.ndarray) -> np.ndarray:
        """Each channel's saturation curve (its own kind) at ``x`` (channels last, broadcasting against
        the ``(S, C)`` parameters)."""
        return transforms.grouped_saturation(self.saturation_groups(), x)


@dataclass(frozen=True)
class Prediction:
    """Posterior predictive draws in KPI units, ``S`` draws over ``T`` weeks.

    ``expected`` ``(S, T)`` is the model mean (no observation noise); ``kpi`` adds a noise draw from the
    likelihood (what forecast intervals and CRPS need). ``components`` ``(S, T)``: ``intercept``,
    ``trend``, ``seasonality``, ``controls`` (sum of all control effects); ``contributions`` ``(S, T, C)``
    per channel. ``expected`` is the sum of the components and the contributions.
    """

    dates: pd.DatetimeIndex
    channels: tuple[str, ...]
    expected: np.ndarray
    kpi: np.ndarray
    components: dict[str, np.ndarray]
    contributions: np.ndarray


def media_response(
    draws: PosteriorDraws, spec: ModelSpec, scaled_spend: np.ndarray, scaled_carry_in: np.ndarray
) -> np.ndarray:
    """Scaled media contributions ``(S, T, C)`` of scaled spend ``(T, C)`` with carry-in ``(l_max-1, C)``.

    The channel axis broadcasts against the draws' ``(S, C)`` parameters by giving the spend a singleton
    draw axis, so adstock loops only over lags and everything else is one array expression.
    """
    adstocked = transforms.adstock(
        spec.adstock,
        scaled_spend[:, None, :],
        spec.l_max,
        alpha=draws.alpha,
        theta=draws.theta,
        x_init=scaled_carry_in[:, None, :],
    )  # (T, S, C)
    saturated = draws.saturate(adstocked)
    return np.moveaxis(saturated * draws.beta, 0, 1)


def predict(
    idata: az.InferenceData | PosteriorDraws,
    scaling: ScalingSpec,
    spec: ModelSpec,
    data: ModelData,
    carry_in: np.ndarray | None = None,
    seed: int | None = 0,
) -> Prediction:
    """Predict the KPI and its decomposition for the weeks of ``data`` (any weeks; KPI not needed).

    ``carry_in``: raw spend of the ``l_max - 1`` weeks before ``data.dates[0]``, oldest first (e.g.
    ``history.carry_in(n_train, l_max)`` when ``data`` starts right after the training window); zeros
    when ``None``. ``seed`` drives the observation-noise draws only.
    """
    scaling.check(data)
    draws = idata if isinstance(idata, PosteriorDraws) else PosteriorDraws.from_idata(idata, spec)
    n_draws, n_weeks = draws.n_draws, data.n_weeks
    if carry_in is None:
        carry_in = np.zeros((spec.l_max - 1, len(data.channels)))
    kpi_scale = scaling.kpi_scale
    components = {"intercept": np.repeat(draws.intercept[:, None], n_weeks, axis=1)}
    zeros = np.zeros((n_draws, n_weeks))
    components["trend"] = (
        zeros if draws.trend_slope is None else draws.trend_slope[:, None] * scaling.trend_feature(data.dates)
    )
    components["seasonality"] = (
        zeros
        if draws.gamma_fourier is None
        else draws.gamma_fourier @ fourier_features(data.dates, spec.n_fourier).T
    )
    components["controls"] = (
        zeros
        if draws.gamma_control is None
        else draws.gamma_control @ scaling.scale_controls(data.controls).T
    )
    components = {name: values * kpi_scale for name, values in components.items()}
    contributions = kpi_scale * media_response(
        draws, spec, scaling.scale_spend(data.spend), scaling.scale_spend(carry_in)
    )
    expected = sum(components.values()) + contributions.sum(axis=2)
    rng = np.random.default_rng(seed)
    if draws.nu is None:
        noise = rng.standard_normal((n_draws, n_weeks))
    else:
        noise = rng.standard_t(draws.nu[:, None], size=(n_draws, n_weeks))
    kpi = expected + noise * draws.sigma[:, None] * kpi_scale
    return Prediction(data.dates, data.channels, expected, kpi, components, contributions)


def thin(draws: PosteriorDraws, max_draws: int | None) -> PosteriorDraws:
    """Every k-th draw so that at most ``max_draws`` remain (all draws when ``None``)."""
    if max_draws is None or draws.n_draws <= max_draws:
        return draws
    index = np.linspace(0, draws.n_draws - 1, max_draws).round().astype(int)
    fields = {}
    for name in ("intercept", "trend_slope", "gamma_fourier", "gamma_control", "beta", "alpha", "theta",
                 "sigma", "nu"):  # fmt: skip
        value = getattr(draws, name)
        fields[name] = None if value is None else value[index]
    fields["saturation"] = {k: v[index] for k, v in draws.saturation.items()}
    return replace(draws, **fields)


def week_noise(draws: PosteriorDraws, dates: pd.DatetimeIndex, seed: int) -> np.ndarray:
    """Observation noise ``(S, T)`` in scaled units, as the likelihood has it, from one random stream per
    week keyed by the week's date: a week's predictive draws are the same whichever forecast holds it
    (tracking, the plan forecast at the recommendation, the scorecard's counterfactual), and do not change
    when later weeks are added."""
    columns = []
    for week in pd.DatetimeIndex(dates).date:
        rng = np.random.default_rng([seed, int(week.toordinal())])
        if draws.nu is None:
            columns.append(rng.standard_normal(draws.n_draws) * draws.sigma)
        else:
            columns.append(rng.standard_t(draws.nu) * draws.sigma)
    return np.column_stack(columns) if columns else np.zeros((draws.n_draws, 0))


def forecast(
    draws: PosteriorDraws,
    scaling: ScalingSpec,
    spec: ModelSpec,
    data: ModelData,
    carry_in: np.ndarray,
    seed: int = 0,
) -> Prediction:
    """:func:`predict` for weeks after a fit, with the observation noise keyed by week
    (:func:`week_noise`): the one forecast that tracking, the plan forecast and the scorecard share."""
    prediction = predict(draws, scaling, spec, data, carry_in=carry_in, seed=seed)
    noise = week_noise(draws, data.dates, seed) * scaling.kpi_scale
    return replace(prediction, kpi=prediction.expected + noise)


@dataclass(frozen=True)
class PlanForecast:
    """The model's forecast of a plan's weeks under several allocations (same draws, same noise).

    ``predictions``: allocation name -> :class:`Prediction` over ``dates``. ``controls_known`` ``(T,)``:
    the week's controls had landed (used as they are); otherwise every control was held at its mean over
    the ``hold_weeks`` weeks up to the last history week (``held_from`` .. ``held_to``).
    """

    dates: pd.DatetimeIndex
    predictions: dict[str, Prediction]
    controls_known: np.ndarray
    hold_weeks: int
    held_from: pd.Timestamp | None
    held_to: pd.Timestamp | None
    carry_in: np.ndarray

    def controls_note(self) -> str:
        """Which weeks' controls were known and which were held, in words (stored with the forecast)."""
        known = int(self.controls_known.sum())
        if known == len(self.dates):
            return "controls known (landed) for every plan week"
        held = (
            f"held at their mean of the {self.hold_weeks} weeks "
            f"{self.held_from:%Y-%m-%d} to {self.held_to:%Y-%m-%d}"
        )
        if known == 0:
            return f"controls {held} (no plan week had landed)"
        return f"controls known for {known} of {len(self.dates)} plan weeks, the others {held}"


def forecast_plan(
    draws: PosteriorDraws,
    scaling: ScalingSpec,
    spec: ModelSpec,
    history: ModelData,
    after: pd.Timestamp,
    allocations: Mapping[str, np.ndarray],
    hold_weeks: int = 4,
    seed: int = 0,
) -> PlanForecast:
    """Forecast the ``H`` weeks after ``after`` (a landed week of ``history``) under each allocation
    ``(H, C)`` (raw weekly spend per channel, the model's channel order).

    Why this and not "baseline x weeks + contribution": the plan weeks have their own seasonality and
    trend, their controls, and the adstock of the real spend of the weeks before them (the carry-in);
    the carry-over of the plan's spend past its last week is not a KPI of these weeks. ``history``: the
    market's modeling rows, every landed week (KPI may be missing); a plan week found there with all its
    controls takes them as they are, the others hold each control at its mean over the ``hold_weeks``
    weeks up to ``after``.
    """
    after = pd.Timestamp(after)
    position = int(np.searchsorted(history.dates, after, side="right"))
    if position == 0 or history.dates[position - 1] != after:
        raise ValueError(f"the history has no week {after:%Y-%m-%d} to forecast the plan from")
    shapes = {name: np.asarray(a, dtype=float).shape for name, a in allocations.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"allocations of different shapes: {shapes}")
    ((n_weeks, n_channels),) = set(shapes.values())
    if n_channels != len(history.channels):
        raise ValueError(f"allocations have {n_channels} channels, the model {len(history.channels)}")
    dates = pd.DatetimeIndex([after + pd.Timedelta(weeks=i + 1) for i in range(n_weeks)])
    start = max(0, position - hold_weeks)
    held = np.nanmean(history.controls[start:position], axis=0) if history.controls.shape[1] else np.zeros(0)
    controls = np.tile(held, (n_weeks, 1)).reshape(n_weeks, len(history.control_names))
    known = np.zeros(n_weeks, dtype=bool)
    index = {d: i for i, d in enumerate(history.dates)}
    for t, week in enumerate(dates):
        i = index.get(week)
        if i is not None and np.isfinite(history.controls[i]).all():
            controls[t], known[t] = history.controls[i], True
    carry_in = history.carry_in(position, spec.l_max)
    predictions = {}
    for name, spend in allocations.items():
        data = ModelData(dates, np.asarray(spend, dtype=float), controls, None, history.channels,
                         history.control_names)  # fmt: skip
        predictions[name] = forecast(draws, scaling, spec, data, carry_in, seed)
    return PlanForecast(dates, predictions, known, hold_weeks, history.dates[start], after, carry_in)


def interval(values: np.ndarray, prob: float = 0.94) -> tuple[float, float, float]:
    """Mean and HDI of 1-d draws (a plan total, an uplift): ``(mean, low, high)``."""
    values = np.asarray(values, dtype=float)
    low, high = hdi(values, prob)
    return float(values.mean()), float(low), float(high)
