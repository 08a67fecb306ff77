"""Model data, frozen scaling, and the PyMC graph of one market's MMM.

The model, on scaled data (``~`` marks scaled quantities)::

    kpi~_t = intercept + trend_slope * t~ + sum_j gamma_fourier_j * fourier_j(t)
             + sum_c beta_c * saturation_c(adstock_c(spend~_c))_t + sum_k gamma_control_k * control~_k,t
             + eps_t,     eps ~ Normal(0, sigma) or StudentT(nu, 0, sigma)

Scaling (frozen in :class:`ScalingSpec`, computed once from the first training window):

* KPI / max KPI and spend / max spend per channel, as PyMC-Marketing does, so its default priors and
  ours mean the same thing (saturation parameters are relative to the biggest week's spend; ``beta_c`` is
  the weekly contribution at full saturation as a share of the biggest week's KPI).
* Controls: 0/1 flags stay as they are (their effect is "this week vs. a week without the flag");
  other controls are standardized (their effect is "one standard deviation above the training mean").
* Trend: weeks since the first training week over the number of training weeks (slope = change over
  the first window). Seasonality: Fourier terms of the calendar date, so they do not depend on the window.

Every array the data determines enters through one ``pm.Data`` container (:class:`PackedData`), and the
time axis is padded to a multiple of :attr:`ModelSpec.pad_weeks_to` weeks with a mask on the likelihood.
Padding sits after the last week and adstock only looks back, so padded weeks change nothing; they let
next week's refit or another CV fold swap the data into an already compiled graph (see ``fit.py``).

NUTS samples ``intercept`` and ``beta_c`` in other coordinates (``intercept_centered``,
``log_contribution_sd``); the equation, the priors and the posterior are the same (see
:func:`build_model`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
from pydantic import BaseModel, ConfigDict

from mmm_pipeline.model import transforms
from mmm_pipeline.model.calibration import LiftTests, padded_tests
from mmm_pipeline.model.spec import ModelSpec, PriorSpec

#: Parameters per saturation kind, in the order the transforms take them.
SATURATION_PARAMS = {"logistic": ("lam",), "hill": ("half_sat", "slope")}
#: Channels sharing a saturation kind in the graph: ``(kind, channel indices, dimension name)``.
SaturationGroupDims = tuple[transforms.SaturationKind, np.ndarray, str]
#: Prior families on positive numbers: a ``beta_channel`` prior of one of these is sampled on the log
#: scale of the channel's contribution spread (see :func:`_channel_effect`).
POSITIVE_PRIORS = frozenset({"HalfNormal", "HalfStudentT", "Gamma", "LogNormal", "Beta"})
_DAYS_PER_YEAR = 365.25
_EPOCH = pd.Timestamp("1970-01-01")


@dataclass(frozen=True)
class ModelData:
    """One market's weekly series, raw units: ``spend`` ``(T, C)``, ``controls`` ``(T, K)``, ``kpi`` ``(T,)``.

    ``kpi`` is ``None`` for future weeks that are only predicted.
    """

    dates: pd.DatetimeIndex
    spend: np.ndarray
    controls: np.ndarray
    kpi: np.ndarray | None
    channels: tuple[str, ...]
    control_names: tuple[str, ...]

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        market: str | None = None,
        channels: Sequence[str] | None = None,
        controls: Sequence[str] | None = None,
    ) -> ModelData:
        """From the modeling table (``marts.fct_modeling_weekly``): ``spend_<c>``, ``control_<k>``, ``kpi``.

        Channels and controls default to every ``spend_*`` / ``control_*`` column, in column order. A
        frame with several markets needs ``market``; a missing ``kpi`` column gives ``kpi=None``.
        """
        if "market" in frame.columns:
            markets = frame["market"].unique()
            if market is None and len(markets) > 1:
                raise ValueError(f"the frame holds markets {sorted(markets)}; name one")
            if market is not None:
                frame = frame[frame["market"] == market]
                if frame.empty:
                    raise ValueError(f"market {market!r} not in the frame")
        frame = frame.sort_values("week")
        if channels is None:
            channels = [c.removeprefix("spend_") for c in frame.columns if c.startswith("spend_")]
        if controls is None:
            controls = [c.removeprefix("control_") for c in frame.columns if c.startswith("control_")]
        spend = frame[[f"spend_{c}" for c in channels]].to_numpy(dtype=float)
        control_values = frame[[f"control_{k}" for k in controls]].to_numpy(dtype=float)
        kpi = frame["kpi"].to_numpy(dtype=float) if "kpi" in frame.columns else None
        return cls(
            pd.DatetimeIndex(frame["week"]), spend, control_values.reshape(len(frame), len(controls)), kpi,
            tuple(channels), tuple(controls),
        )  # fmt: skip

    @property
    def n_weeks(self) -> int:
        return len(self.dates)

    def __post_init__(self) -> None:
        t = len(self.dates)
        if self.spend.shape != (t, len(self.channels)) or self.controls.shape != (t, len(self.control_names)):
            raise ValueError("spend must be (T, C) and controls (T, K), with T the number of dates")
        if self.kpi is not None and self.kpi.shape != (t,):
            raise ValueError("kpi must be (T,)")
        if (self.spend < 0).any() or not np.isfinite(self.spend).all():
            raise ValueError("spend must be finite and non-negative")

    def window(self, start: int, stop: int | None = None) -> ModelData:
        """Weeks ``start:stop`` (positional), e.g. a training window or the test weeks after it."""
        rows = slice(start, stop)
        kpi = None if self.kpi is None else self.kpi[rows]
        return ModelData(
            self.dates[rows], self.spend[rows], self.controls[rows], kpi, self.channels, self.control_names
        )

    def carry_in(self, stop: int, l_max: int) -> np.ndarray:
        """Spend ``(l_max - 1, C)`` of the ``l_max - 1`` weeks before week ``stop`` (zeros before week 0).

        This is the adstock ``x_init`` of a window starting at ``stop``.
        """
        out = np.zeros((l_max - 1, len(self.channels)))
        tail = self.spend[max(0, stop - (l_max - 1)) : stop]
        out[out.shape[0] - tail.shape[0] :] = tail
        return out


class ScalingSpec(BaseModel):
    """The constants that turn raw data into the model's scaled data, frozen at the first fit.

    Passing the champion's ``ScalingSpec`` to a refit keeps priors and parameters meaning the same thing
    across refreshes (a refit on a window with a record week would otherwise shrink every scaled value).
    It is plain JSON (``model_dump_json``) so a model run can record it next to the posterior.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: list[str]
    controls: list[str]
    kpi_scale: float
    spend_scale: list[float]
    spend_share: list[float]
    spend_typical: list[float] | None = None
    """Each channel's typical weekly spend (raw units, :func:`typical_spend`): the unit of the saturation
    priors when :attr:`ModelSpec.saturation_prior_unit` is ``typical_spend``. ``None`` in scalings
    recorded before it existed; the data being fitted then supply it."""
    control_loc: list[float]
    control_scale: list[float]
    trend_origin: dt.date
    trend_weeks: float
    fitted_on: tuple[dt.date, dt.date]
    """First and last week of the data the constants came from (for the record)."""

    @classmethod
    def from_data(cls, data: ModelData) -> ScalingSpec:
        """Compute the constants from a training window (which must have a KPI)."""
        if data.kpi is None:
            raise ValueError("scaling needs the KPI")
        kpi_scale = float(np.abs(data.kpi).max())
        spend_max = data.spend.max(axis=0)
        totals = data.spend.sum(axis=0)
        loc, scale = [], []
        for column in data.controls.T:
            if np.isin(column, (0.0, 1.0)).all():
                loc.append(0.0)
                scale.append(1.0)
            else:
                sd = float(column.std())
                loc.append(float(column.mean()))
                scale.append(sd if sd > 0 else 1.0)
        return cls(
            channels=list(data.channels),
            controls=list(data.control_names),
            kpi_scale=kpi_scale if kpi_scale > 0 else 1.0,
            # A channel that never spent in the window gets scale 1: its scaled spend is then raw spend.
            spend_scale=[float(m) if m > 0 else 1.0 for m in spend_max],
            spend_share=[float(s) for s in totals / totals.sum()]
            if totals.sum() > 0
            else [0.0] * len(totals),
            spend_typical=typical_spend(data.spend).tolist(),
            control_loc=loc,
            control_scale=scale,
            trend_origin=data.dates[0].date(),
            trend_weeks=float(max(data.n_weeks - 1, 1)),
            fitted_on=(data.dates[0].date(), data.dates[-1].date()),
        )

    def check(self, data: ModelData) -> None:
        """Raise if ``data`` has other channels or controls (or another order) than the scaling."""
        if list(data.channels) != self.channels or list(data.control_names) != self.controls:
            raise ValueError(
                f"data has channels {list(data.channels)} and controls {list(data.control_names)}; the "
                f"scaling was made for {self.channels} and {self.controls}"
            )

    def scale_spend(self, spend: np.ndarray) -> np.ndarray:
        return np.asarray(spend, dtype=float) / np.asarray(self.spend_scale)

    def scale_controls(self, controls: np.ndarray) -> np.ndarray:
        return (np.asarray(controls, dtype=float) - np.asarray(self.control_loc)) / np.asarray(
            self.control_scale
        )

    def trend_feature(self, dates: pd.DatetimeIndex) -> np.ndarray:
        """Weeks since the frozen origin over the frozen window length: 0 at the first training week."""
        days = (dates - pd.Timestamp(self.trend_origin)).days.to_numpy(dtype=float)
        return days / 7.0 / self.trend_weeks


def typical_spend(spend: np.ndarray) -> np.ndarray:
    """``(C,)`` each channel's spend-weighted mean weekly spend, ``sum_t x_t**2 / sum_t x_t`` (1 if none).

    The weekly spend level at which the channel's average currency unit was spent: where its budget
    sits on the saturation curve. Dark weeks carry no weight, so flighting does not drag it down, and
    unlike the maximum a single record week hardly moves it; unlike the median of the active weeks it
    follows the money into the big weeks of a channel bought in a few large bursts.
    """
    totals = spend.sum(axis=0)
    out = np.ones(spend.shape[1])
    np.divide((spend**2).sum(axis=0), totals, out=out, where=totals > 0)
    return out


def fourier_features(dates: pd.DatetimeIndex, n_modes: int) -> np.ndarray:
    """``(T, 2 n_modes)``: ``sin, cos`` of ``2 pi k * years since 1970`` for ``k = 1..n_modes``.

    Tied to the calendar, not to the window, so a coefficient means the same in every refit.
    """
    years = (dates - _EPOCH).days.to_numpy(dtype=float) / _DAYS_PER_YEAR
    angle = 2 * np.pi * years[:, None] * np.arange(1, n_modes + 1)[None, :]
    return np.concatenate([np.sin(angle), np.cos(angle)], axis=1)


def saturation_groups(spec: ModelSpec, channels: Sequence[str]) -> list[SaturationGroupDims]:
    """The channels grouped by saturation kind (:meth:`ModelSpec.saturation_kinds`), kinds in order of
    first appearance.

    One kind for every channel (the default) is one group over the ``channel`` dimension: today's graph
    and parameter names. Several kinds each get a dimension ``channel_<kind>`` over their own channels,
    so a parameter exists only where its curve uses it (no prior-only ``lam`` of a Hill channel for the
    sampler to wander in, no meaningless column in the posterior).
    """
    kinds = spec.saturation_kinds(channels)
    distinct = list(dict.fromkeys(kinds))
    if len(distinct) <= 1:
        return [(kinds[0] if kinds else spec.saturation, np.arange(len(channels)), "channel")]
    return [
        (kind, np.array([i for i, k in enumerate(kinds) if k == kind], dtype=int), f"channel_{kind}")
        for kind in distinct
    ]


def padded_length(n_weeks: int, spec: ModelSpec) -> int:
    """The time-axis length the graph is built for: ``n_weeks`` rounded up to ``spec.pad_weeks_to``."""
    return math.ceil(n_weeks / spec.pad_weeks_to) * spec.pad_weeks_to


def model_inputs(
    data: ModelData,
    scaling: ScalingSpec,
    spec: ModelSpec,
    carry_in: np.ndarray | None = None,
    n_time: int | None = None,
    lift_tests: LiftTests | None = None,
) -> dict[str, np.ndarray]:
    """The values of the model's data containers for ``data``, padded to ``n_time`` weeks.

    ``carry_in`` is the raw spend of the ``l_max - 1`` weeks before ``data`` (zeros if ``None``).
    ``lift_tests`` (already limited to those that ended within ``data``) add the ``lift_*`` containers,
    padded to :func:`~mmm_pipeline.model.calibration.padded_tests` rows; none or empty adds nothing.
    """
    scaling.check(data)
    spec.saturation_kinds(scaling.channels)  # a channel named in saturation_by_channel but not in the data
    if data.kpi is None:
        raise ValueError("fitting needs the KPI")
    n_time = padded_length(data.n_weeks, spec) if n_time is None else n_time
    if n_time < data.n_weeks:
        raise ValueError(f"n_time {n_time} is shorter than the data ({data.n_weeks} weeks)")
    n_pad = n_time - data.n_weeks
    dates = pd.DatetimeIndex(
        list(data.dates) + [data.dates[-1] + pd.Timedelta(weeks=i + 1) for i in range(n_pad)]
    )

    def pad(values: np.ndarray) -> np.ndarray:
        return np.concatenate([values, np.zeros((n_pad, *values.shape[1:]))], axis=0)

    if carry_in is None:
        carry_in = np.zeros((spec.l_max - 1, len(data.channels)))
    n_channels = len(data.channels)
    # Floor at a tenth of an equal share: a channel with (almost) no spend still gets a proper prior.
    share = np.maximum(n_channels * np.asarray(scaling.spend_share), 0.1)
    inputs = {}
    if spec.saturation_prior_unit == "typical_spend":
        typical = scaling.spend_typical
        typical = typical_spend(data.spend) if typical is None else np.asarray(typical)
        inputs["saturation_unit"] = scaling.scale_spend(typical)
    if lift_tests is not None and len(lift_tests):
        inputs |= lift_tests.inputs(
            scaling.channels, scaling.spend_scale, scaling.kpi_scale, padded_tests(len(lift_tests))
        )
    return inputs | {
        "beta_prior_scale": share if spec.beta_by_spend_share else np.ones(n_channels),
        "media": pad(scaling.scale_spend(data.spend)),
        "media_init": scaling.scale_spend(carry_in).reshape(spec.l_max - 1, len(data.channels)),
        "controls": pad(scaling.scale_controls(data.controls)),
        "fourier": fourier_features(dates, spec.n_fourier),
        "trend": scaling.trend_feature(dates),
        "y": pad(data.kpi / scaling.kpi_scale),
        "mask": pad(np.ones(data.n_weeks)),
    }


def _prior_params(prior: PriorSpec, scale: Any = None) -> dict[str, Any]:
    """A prior's parameters as arrays; ``scale`` (a tensor or array) multiplies ``sigma`` per element.

    A prior without ``sigma`` ignores ``scale``: :class:`ModelSpec` only allows one for the channel
    effect when ``beta_by_spend_share`` is off, and the scale is then all ones.
    """
    params: dict[str, Any] = {k: np.asarray(v, dtype=float) for k, v in prior.params.items()}
    if scale is not None and "sigma" in params:
        params["sigma"] = params["sigma"] * scale
    return params


def prior_variable(
    name: str, prior: PriorSpec, dims: str | tuple[str, ...] | None = None, scale: Any = None
) -> pt.TensorVariable:
    """A PyMC random variable from a :class:`PriorSpec`; ``scale`` multiplies its ``sigma`` per element.

    The channel effect prior's scale is a data container (from the spend shares), not a constant, so a
    refit with different scaling still reuses the compiled graph.
    """
    return getattr(pm, prior.dist)(name, **_prior_params(prior, scale), dims=dims)


#: How each saturation parameter changes with the unit of spend: ``x / K`` and ``lam * x`` stay the same
#: when the unit is multiplied by ``u``, so ``K`` (``half_sat``) is multiplied by it and ``lam`` divided.
SPEND_POWER = {"half_sat": 1.0, "lam": -1.0, "slope": 0.0}


def group_prior(spec: ModelSpec, name: str, group: SaturationGroupDims) -> PriorSpec:
    """The prior in force for parameter ``name``, cut to ``group``'s channels when the group is not all
    of them (a prior given per channel keeps only those channels' values)."""
    _, idx, dim = group
    prior = spec.prior(name)
    if dim == "channel":
        return prior
    return PriorSpec(
        dist=prior.dist,
        params={
            k: np.asarray(v)[idx].tolist() if isinstance(v, list) else v for k, v in prior.params.items()
        },
    )


def _saturation_param(
    name: str, spec: ModelSpec, unit: pt.TensorVariable | None, group: SaturationGroupDims
) -> pt.TensorVariable:
    """A saturation parameter on the max-scaled spend for ``group``'s channels, its prior stated in ``unit``.

    ``unit`` ``(C,)`` is each channel's typical week's spend in max-scaled units (see
    :attr:`ModelSpec.saturation_prior_unit`); the sampler moves ``<name>_typical``, the parameter in
    that unit, and ``name`` (what predictions and the optimizer read) is derived from it. With ``unit``
    ``None`` the prior is on the max-scaled spend and ``name`` is sampled directly. The parameter runs
    over ``group``'s dimension: ``channel`` in a one-kind model, the kind's own channels otherwise (a
    prior given per channel is cut to them too).
    """
    _, idx, dim = group
    prior = group_prior(spec, name, group)
    if dim != "channel":
        unit = None if unit is None else unit[idx]
    power = SPEND_POWER[name]
    if unit is None or power == 0.0:
        return prior_variable(name, prior, dim)
    relative = prior_variable(f"{name}_typical", prior, dim)
    return pm.Deterministic(name, relative * unit**power, dims=dim)


def _masked_mean(mask: pt.TensorVariable, values: pt.TensorVariable) -> pt.TensorVariable:
    """Mean over the observed (unpadded) weeks, along the time axis (axis 0)."""
    return pt.dot(mask, values) / mask.sum()


def shifted_prior(
    name: str,
    prior: PriorSpec,
    shift: pt.TensorVariable,
    *,
    log: bool = False,
    scale: Any = None,
    dims: str | tuple[str, ...] | None = None,
) -> pt.TensorVariable:
    """A variable distributed as ``X + shift`` (``log(X) + shift`` with ``log``), ``X`` drawn from ``prior``.

    ``shift`` may depend on other parameters: the variable is then what the sampler moves along, and
    ``X`` is recovered from it exactly. PyMC derives the density of the log and the shift (Jacobian
    included), so ``X`` keeps exactly its prior, the joint density is the one of sampling ``X`` directly
    (a change of coordinates with unit Jacobian), and prior predictive sampling still works.
    """
    params = _prior_params(prior, scale)
    names = sorted(params)

    def dist(shift: pt.TensorVariable, *args: pt.TensorVariable) -> pt.TensorVariable:
        *values, size = args
        base = getattr(pm, prior.dist).dist(**dict(zip(names, values, strict=True)), size=size)
        return (pt.log(base) if log else base) + shift

    return pm.CustomDist(name, shift, *(params[k] for k in names), dist=dist, dims=dims)


def _channel_effect(
    prior: PriorSpec,
    scale: pt.TensorVariable,
    saturated: pt.TensorVariable,
    mask: pt.TensorVariable,
    reparameterize: bool,
) -> pt.TensorVariable:
    """``beta_channel`` with its prior, sampled as the log week-to-week spread of the channel's contribution.

    What a channel's data pin down is how much its contribution moves from week to week,
    ``beta_c * sd_t(saturation_ct)``, not ``beta_c`` alone: on the near-linear part of the curve only
    ``beta * lam`` is known (a ridge along which ``beta`` grows as ``lam`` shrinks), and of a channel that
    is always on and near saturation only a small variation is left (``beta`` grows exponentially with
    ``lam``). In ``(log beta, log lam)`` these are curved ridges of varying width that a NUTS step size
    fitted to the bulk cannot follow. So the sampler's coordinate is ``log_contribution_sd_c =
    log(beta_c) + log(sd_t(saturation_ct))`` (the sd over the observed weeks, with the same adstock and
    saturation parameters), and ``beta_c`` is a deterministic of it; ``beta_c`` keeps exactly its prior
    (see :func:`shifted_prior`). A prior on the whole real line (``Normal``...) has no log; it is then
    sampled directly, as it is without ``reparameterize``.
    """
    if not reparameterize or prior.dist not in POSITIVE_PRIORS:
        return getattr(pm, prior.dist)("beta_channel", **_prior_params(prior, scale), dims="channel")
    deviation = saturated - _masked_mean(mask, saturated)
    # The floor keeps a channel without spend in the window (zero spread) finite; its beta is then
    # decided by the prior alone, as it would be sampled directly.
    log_spread = 0.5 * pt.log(_masked_mean(mask, deviation**2) + 1e-12)
    log_sd = shifted_prior("log_contribution_sd", prior, log_spread, log=True, scale=scale, dims="channel")
    return pm.Deterministic("beta_channel", pt.exp(log_sd - log_spread), dims="channel")


#: The name of the one data container of every graph (:class:`PackedData`).
DATA_CONTAINER = "data"


def input_layout(inputs: dict[str, np.ndarray]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Names and shapes of ``inputs`` in packing order: what a compiled graph expects its data to be."""
    return tuple((name, np.shape(inputs[name])) for name in sorted(inputs))


def pack_inputs(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Every array of ``inputs`` in one float vector, in :func:`input_layout`'s order (the value of the
    :data:`DATA_CONTAINER` container)."""
    return np.concatenate([np.asarray(inputs[name], dtype=float).ravel() for name, _ in input_layout(inputs)])


class PackedData:
    """Every array of ``inputs`` as a view of one ``pm.Data`` vector, by name.

    Why one container: nutpie wraps each data container of a graph in numba code of its own, compiled again
    in every process, so the compile time grows with their number (the single-market graph with 9
    containers compiled in 26-28 s with warm caches, frozen to constants in 13 s). One container keeps the
    data swappable (next week's refit, a CV fold, another market on the compiled graph) at the cost of
    one. Shapes are fixed by the graph (they are part of the graph key); integer arrays (lift-test
    indices) travel as floats, exact for any index, and are cast back.
    """

    def __init__(self, inputs: dict[str, np.ndarray]) -> None:
        self.layout = input_layout(inputs)
        packed = pm.Data(DATA_CONTAINER, pack_inputs(inputs))
        self._views: dict[str, pt.TensorVariable] = {}
        offset = 0
        for name, shape in self.layout:
            size = math.prod(shape)
            view = packed[offset : offset + size].reshape(shape)
            if np.issubdtype(np.asarray(inputs[name]).dtype, np.integer):
                view = pt.cast(pt.round(view), "int64")
            self._views[name] = view
            offset += size

    def __getitem__(self, name: str) -> pt.TensorVariable:
        return self._views[name]

    def __contains__(self, name: str) -> bool:
        return name in self._views


def lift_test_likelihood(
    data: PackedData,
    groups: list[tuple[SaturationGroupDims, dict[str, pt.TensorVariable]]],
    beta: pt.TensorVariable,
) -> None:
    """Each lift test's measured weekly lift is the steady-state curve's rise over the test's spend
    change, with the test's standard error (see :mod:`mmm_pipeline.model.calibration`); padded rows are
    masked out. The curve is the model's own (same ``beta``, saturation kind and parameters), so the test
    pins down its height and bend at the tested spend.

    With several saturation kinds each test is read on its channel's kind: every kind's curve is
    evaluated for every test (parameters of other kinds' channels filled with 1, which keeps the unused
    branch finite, so its zero gradient stays zero) and the test's own is kept.

    In a pooled model (:mod:`mmm_pipeline.model.pooled`) ``beta`` and the parameters carry a leading
    market axis and ``lift_market`` says in which market each test ran: a test reads its own market's
    curve."""
    channel = data["lift_channel"]
    pooled = "lift_market" in data
    market = data["lift_market"] if pooled else None

    def per_test(values: pt.TensorVariable) -> pt.TensorVariable:
        """Each test's value of a ``(C,)`` (or, pooled, ``(M, C)``) parameter."""
        return values[market, channel] if pooled else values[channel]

    x_old, x_new = data["lift_x"], data["lift_x_new"]
    observed, se, lift_mask = data["lift_y"], data["lift_se"], data["lift_mask"]
    full_shape = dict(data.layout)["beta_prior_scale"]  # (C,), or (M, C) pooled
    n_channels = full_shape[-1]
    rises = []
    for (kind, idx, dim), params in groups:
        if dim == "channel":
            values = {name: per_test(value) for name, value in params.items()}
        else:
            values = {
                name: per_test(pt.set_subtensor(pt.ones(full_shape)[..., idx], value))
                for name, value in params.items()
            }
        rise = transforms.saturation(kind, x_new, xp=pt, **values) - transforms.saturation(
            kind, x_old, xp=pt, **values
        )
        if dim != "channel":
            rise = pt.switch(pt.as_tensor(np.isin(np.arange(n_channels), idx))[channel], rise, 0.0)
        rises.append(rise)
    rise = per_test(beta) * sum(rises[1:], rises[0])
    pm.Deterministic("lift_expected", rise, dims="lift_test")
    logp = pm.logp(pm.Normal.dist(mu=rise, sigma=se), observed)
    pm.Potential("lift_loglik", (lift_mask * logp).sum())


def model_coords(
    inputs: dict[str, np.ndarray], scaling: ScalingSpec, spec: ModelSpec, markets: list[str] | None = None
) -> dict[str, Any]:
    """The PyMC coordinates of the single-market model, or of the pooled one with ``markets``: time
    (the padded length of ``inputs["media"]``), channel, control, Fourier mode, carry-in lag, lift test
    (when ``inputs`` has tests) and each saturation kind's own channel dimension when kinds are mixed.
    One definition for both models, so a market's view of a pooled posterior has a single-market fit's
    coordinates."""
    channels = scaling.channels
    coords: dict[str, Any] = {
        "time": np.arange(inputs["media"].shape[0]),
        **({"market": markets} if markets is not None else {}),
        "channel": channels,
        "control": scaling.controls,
        "fourier_mode": [f"{f}_{k}" for f in ("sin", "cos") for k in range(1, spec.n_fourier + 1)],
        "lag_init": np.arange(spec.l_max - 1),
    }
    if "lift_x" in inputs:
        coords["lift_test"] = np.arange(len(inputs["lift_x"]))
    for _, idx, dim in saturation_groups(spec, channels):
        if dim != "channel":
            coords[dim] = [channels[i] for i in idx]
    return coords


def build_model(inputs: dict[str, np.ndarray], scaling: ScalingSpec, spec: ModelSpec) -> pm.Model:
    """The PyMC model on ``inputs`` (:func:`model_inputs`, one :class:`PackedData` container; see the module
    docstring).

    Media effects are non-negative: ``beta_c`` has a positive prior and saturation maps into ``[0, 1)``.
    The likelihood is a ``Potential`` summing the masked pointwise log-density, so padded weeks add
    nothing; ``mu`` (scaled expected KPI, padded length) is kept as a deterministic for in-sample fit.

    With :attr:`ModelSpec.reparameterize` (the default) two parameters are sampled in other coordinates.
    Model, priors and posterior stay exactly the same (the joint density is equal at corresponding
    points, see ``tests/test_model.py``); ``intercept`` and ``beta_channel`` become deterministics:

    * ``intercept_centered = intercept + mean_t(everything else)``, the expected scaled KPI of an average
      observed week (centering, as brms and rstanarm do, but with the prior kept on ``intercept``).
      Otherwise the intercept trades off with every effect that is nearly constant over the window (an
      always-on channel close to saturation, the trend) along a narrow ridge whose direction changes
      with the saturation parameters: the funnel where the plain parameterization diverged.
    * ``log_contribution_sd``, the log week-to-week spread of each channel's contribution, in place of
      ``beta_channel``: see :func:`_channel_effect`.
    """
    n_time = inputs["media"].shape[0]
    channels, controls = scaling.channels, scaling.controls
    groups = saturation_groups(spec, channels)
    with pm.Model(coords=model_coords(inputs, scaling, spec)) as model:
        data = PackedData(inputs)
        media, media_init, y, mask = data["media"], data["media_init"], data["y"], data["mask"]

        if not spec.reparameterize:
            intercept = prior_variable("intercept", spec.prior("intercept"))
        # Everything but the intercept (scaled KPI units), and its mean over the observed weeks, summed
        # term by term from the data's means (the same number as the mean of the sum).
        terms, mean_terms = pt.zeros(n_time), pt.zeros(())
        if spec.trend:
            trend = data["trend"]
            slope = prior_variable("trend_slope", spec.prior("trend_slope"))
            terms, mean_terms = terms + slope * trend, mean_terms + slope * _masked_mean(mask, trend)
        linear = []
        if spec.n_fourier:
            fourier = data["fourier"]
            linear.append(
                (fourier, prior_variable("gamma_fourier", spec.prior("gamma_fourier"), "fourier_mode"))
            )
        if controls:
            control_data = data["controls"]
            linear.append(
                (control_data, prior_variable("gamma_control", spec.prior("gamma_control"), "control"))
            )
        for features, coef in linear:
            terms = terms + pt.dot(features, coef)
            mean_terms = mean_terms + pt.dot(_masked_mean(mask, features), coef)

        prior_scale = data["beta_prior_scale"]
        alpha = prior_variable("alpha", spec.prior("alpha"), "channel")
        theta = prior_variable("theta", spec.prior("theta"), "channel") if spec.adstock == "delayed" else None
        adstocked = transforms.adstock(
            spec.adstock, media, spec.l_max, alpha=alpha, theta=theta, x_init=media_init, xp=pt
        )
        unit = None
        if spec.saturation_prior_unit == "typical_spend":
            unit = data["saturation_unit"]
        group_params = [
            (group, {p: _saturation_param(p, spec, unit, group) for p in SATURATION_PARAMS[group[0]]})
            for group in groups
        ]
        saturated = transforms.grouped_saturation(
            [(kind, idx, params) for (kind, idx, _), params in group_params], adstocked, xp=pt
        )
        beta = _channel_effect(spec.prior("beta_channel"), prior_scale, saturated, mask, spec.reparameterize)
        terms = terms + (saturated * beta).sum(axis=1)
        mean_terms = mean_terms + (_masked_mean(mask, saturated) * beta).sum()
        if "lift_x" in inputs:
            lift_test_likelihood(data, group_params, beta)

        if spec.reparameterize:
            centered = shifted_prior("intercept_centered", spec.prior("intercept"), mean_terms)
            intercept = pm.Deterministic("intercept", centered - mean_terms)
        mu = pm.Deterministic("mu", intercept + terms, dims="time")

        sigma = prior_variable("sigma", spec.prior("sigma"))
        if spec.likelihood == "normal":
            noise = pm.Normal.dist(mu=mu, sigma=sigma)
        else:
            noise = pm.StudentT.dist(nu=prior_variable("nu", spec.prior("nu")), mu=mu, sigma=sigma)
        pm.Potential("loglik", (mask * pm.logp(noise, y)).sum())
    return model
