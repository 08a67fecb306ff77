"""The partially pooled (hierarchical) MMM of a market group: one PyMC model over a ``market`` dimension.

Why: a single market's weekly KPI is noisy, and fitted alone a small market's channel effects are mostly
prior; markets of one brand share how its channels work. So each market's channel parameters are drawn
around shared national values (issue 17, ``ModelSpec.pooling: partial``)::

    log beta_mc      = log beta_c     + sd_beta_c  * z_mc        (the same for half_sat, lam, theta)
    logit alpha_mc   = logit alpha_c  + sd_alpha_c * z_mc        z_mc ~ Normal(0, 1)  (non-centred)

for the parameters of ``ModelSpec.market_varying``; the others (by default the Hill slope, which a
market's own weeks barely identify) every market shares at the national value.

The national values have the single-market model's priors (``beta_c``'s spread scaled by the markets'
mean spend share), the spreads ``sd ~ market_sd`` (``ModelSpec.priors``). The sampler moves the national
effect as the log of the national contribution's rise from a low to a high week of spend
(``log_national_contribution_rise``; ``beta_c`` keeps its prior exactly), as the single-market model
samples its contribution's spread: what the data pin down. Everything else is each
market's own, with the single-market priors: intercept, trend, seasonality, control effects and noise
scale. Each market keeps its own frozen :class:`~mmm_pipeline.model.build.ScalingSpec` (KPI / its max,
spend / its max per channel, saturation priors in units of its typical week), so ``beta`` and the curve
parameters mean the same thing in a big and a small market and can be pooled. Lift tests attach to the
market they ran in.

Arrays are time-major, ``(T, M, C)``, so that ``(M, C)`` parameters broadcast against them as the
single-market model's ``(C,)`` ones do against ``(T, C)``: adstock and saturation are the shared
:mod:`~mmm_pipeline.model.transforms`, and the market-level variables carry the single-market names with
a leading ``market`` dimension, so that :func:`market_posterior` gives each market a posterior that every
single-market insight reads unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

import arviz as az
import numpy as np
import pymc as pm
import pytensor.tensor as pt

from mmm_pipeline.model import transforms
from mmm_pipeline.model.build import (
    POSITIVE_PRIORS,
    SATURATION_PARAMS,
    SPEND_POWER,
    ModelData,
    PackedData,
    ScalingSpec,
    group_prior,
    input_layout,
    lift_test_likelihood,
    model_coords,
    model_inputs,
    padded_length,
    prior_variable,
    saturation_groups,
    shifted_prior,
)
from mmm_pipeline.model.calibration import LiftTests, padded_tests
from mmm_pipeline.model.fit import (
    DEFAULT_CACHE,
    CacheEntry,
    FitResult,
    ModelCache,
    Progress,
    graph_key,
    sample_entry,
)
from mmm_pipeline.model.spec import ModelSpec, PriorSpec

#: The market name of the national roll-up in per-market outputs; no market may be called so.
NATIONAL = "national"
#: Inputs that are one array per market, stacked on axis 1 (after time) or 0 (per-market vectors).
_TIME_MAJOR = ("media", "media_init", "controls", "trend", "y", "mask")
_MARKET_MAJOR = ("beta_prior_scale", "saturation_unit")


def check_group(data: Mapping[str, ModelData]) -> None:
    """Raise ``ValueError`` unless ``data`` is a market group one pooled model can hold: at least one
    market, none named :data:`NATIONAL`, and the same channels, controls and weeks in every market."""
    if not data:
        raise ValueError("a pooled model needs at least one market")
    if NATIONAL in data:
        raise ValueError(f"no market may be named {NATIONAL!r}: that name is the national roll-up")
    first_name, first = next(iter(data.items()))
    for name, other in data.items():
        if other.channels != first.channels or other.control_names != first.control_names:
            raise ValueError(
                f"market {name!r} has channels {list(other.channels)} and controls "
                f"{list(other.control_names)}; market {first_name!r} has {list(first.channels)} and "
                f"{list(first.control_names)}: a pooled model needs the same in every market"
            )
        if not other.dates.equals(first.dates):
            raise ValueError(
                f"market {name!r} has weeks {other.dates[0].date()}..{other.dates[-1].date()} "
                f"({other.n_weeks}); market {first_name!r} has {first.dates[0].date()}.."
                f"{first.dates[-1].date()} ({first.n_weeks}): a pooled model needs the same weeks"
            )


def pooled_inputs(
    data: Mapping[str, ModelData],
    scalings: Mapping[str, ScalingSpec],
    spec: ModelSpec,
    carry_in: Mapping[str, np.ndarray] | None = None,
    n_time: int | None = None,
    lift_tests: Mapping[str, LiftTests] | None = None,
) -> dict[str, np.ndarray]:
    """The pooled model's data containers: each market's :func:`~mmm_pipeline.model.build.model_inputs`
    (its own scaling), stacked on a market axis in the order of ``data``.

    Time-major ``(T, M, ...)``: ``media``, ``media_init`` (lags first), ``controls``, ``trend``, ``y``,
    ``mask``; ``(M, C)``: ``beta_prior_scale``, ``saturation_unit``; ``fourier`` ``(T, F)`` is shared
    (the weeks are). Lift tests of all markets are concatenated with their market's index in
    ``lift_market``, each scaled by its own market's scaling, padded as the single-market ones.
    """
    check_group(data)
    markets = list(data)
    first = data[markets[0]]
    n_time = padded_length(first.n_weeks, spec) if n_time is None else n_time
    per_market = [
        model_inputs(data[m], scalings[m], spec, carry_in=(carry_in or {}).get(m), n_time=n_time)
        for m in markets
    ]
    inputs = {"fourier": per_market[0]["fourier"]}
    for key in _TIME_MAJOR:
        inputs[key] = np.stack([one[key] for one in per_market], axis=1)
    for key in _MARKET_MAJOR:
        if key in per_market[0]:
            inputs[key] = np.stack([one[key] for one in per_market], axis=0)
    inputs["national_spend_points"] = _spend_points(inputs)
    tests = {m: t for m, t in (lift_tests or {}).items() if len(t)}
    unknown = sorted(set(tests) - set(markets))
    if unknown:
        raise ValueError(f"lift tests name markets {unknown} that are not in the group {markets}")
    if tests:
        parts = []
        for m, t in tests.items():
            part = t.inputs(scalings[m].channels, scalings[m].spend_scale, scalings[m].kpi_scale, len(t))
            part["lift_market"] = np.full(len(t), markets.index(m), dtype=int)
            parts.append(part)
        n_tests = sum(len(t) for t in tests.values())
        fill = {"lift_x_new": 1.0, "lift_se": 1.0}
        pad = padded_tests(n_tests) - n_tests
        for key in parts[0]:
            values = np.concatenate([p[key] for p in parts])
            filler = np.full(pad, fill.get(key, 0), dtype=values.dtype)
            inputs[key] = np.concatenate([values, filler])
    return inputs


#: The low and high week of spend between which the national curves' rise is read (:func:`_spend_points`).
SPEND_QUANTILES = np.array([0.1, 0.9])


def _spend_points(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(2, C)``: a low and a high week of each channel's spend (:data:`SPEND_QUANTILES` over the group's
    observed weeks and markets), in the units of the national curve parameters (each market's typical
    week with the default ``saturation_prior_unit``, else its biggest week). Why: the national effect is
    sampled as the log of the national contribution's rise between them (:func:`build_pooled_model`);
    they are data, so a compiled graph refits new weeks with them."""
    media = inputs["media"]
    if "saturation_unit" in inputs:
        media = media / inputs["saturation_unit"][None]
    observed = media[inputs["mask"] > 0]  # (observed week-markets, C)
    return np.quantile(observed, SPEND_QUANTILES, axis=0)


def _masked_mean(mask: pt.TensorVariable, values: pt.TensorVariable) -> pt.TensorVariable:
    """Each market's mean over its observed weeks: ``(T, M, ...)`` to ``(M, ...)``."""
    extra = values.ndim - 2
    weights = mask.reshape((*mask.shape, *([1] * extra))) if extra else mask
    return (weights * values).sum(axis=0) / mask.sum(axis=0).reshape((-1, *([1] * extra)))


def _pooled_positive(
    name: str,
    prior: PriorSpec,
    dim: str,
    spread: PriorSpec,
    scale: pt.TensorVariable | None = None,
    log_shift: pt.TensorVariable | float = 0.0,
    sampled_as: str | None = None,
    varies: bool = True,
) -> tuple[pt.TensorVariable, pt.TensorVariable]:
    """``(M, k)`` market values of a positive parameter, log-normal around a national value, and the
    ``(k,)`` national value.

    The national value is a draw from ``prior`` (the single-market prior, so that it means what a single
    market's does), sampled as its log plus ``log_shift`` under the name ``sampled_as`` (default
    ``log_<name>_national``; :func:`~mmm_pipeline.model.build.shifted_prior`: the prior stays exact, only
    the sampler's coordinate moves); the markets' log values spread around it as :func:`_market_values`
    draws them (or equal it, unless ``varies``).
    """
    if prior.dist not in POSITIVE_PRIORS:
        raise ValueError(
            f"pooling: partial draws {name} on the log scale around its national value; its prior must be "
            f"one of {sorted(POSITIVE_PRIORS)}, got {prior.dist}"
        )
    sampled_as = sampled_as or f"log_{name}_national"
    shifted = shifted_prior(sampled_as, prior, log_shift, log=True, scale=scale, dims=dim)
    log_national = shifted - log_shift
    national = pm.Deterministic(f"{name}_national", pt.exp(log_national), dims=dim)
    return pt.exp(_market_values(name, log_national, spread, dim, varies)), national


def _pooled_share(
    name: str, prior: PriorSpec, dim: str, spread: PriorSpec, varies: bool = True
) -> pt.TensorVariable:
    """``(M, k)`` market values of a parameter in ``(0, 1)`` (adstock decay), logit-normal around a
    national value drawn from the single-market prior."""
    national = prior_variable(f"{name}_national", prior, dim)
    return pt.sigmoid(_market_values(name, pt.log(national / (1 - national)), spread, dim, varies))


def _market_values(
    name: str, national: pt.TensorVariable, spread: PriorSpec, dim: str, varies: bool
) -> pt.TensorVariable:
    """``(M, k)``: each market's value of a parameter on its link scale, ``national + sd * z`` with
    ``<name>_market_sd`` the spread and ``<name>_z ~ Normal(0, 1)`` its standardized deviations
    (non-centred: the funnel between a small spread and the deviations is what centred hierarchies
    diverge in); the national value in every market when the parameter does not ``vary`` by market
    (:attr:`~mmm_pipeline.model.spec.ModelSpec.market_varying`)."""
    n_markets = len(pm.modelcontext(None).coords["market"])
    if not varies:
        return pt.ones((n_markets, 1)) * national[None, :]
    sd = prior_variable(f"{name}_market_sd", spread, dim)
    z = pm.Normal(f"{name}_z", 0.0, 1.0, dims=("market", dim))
    return national[None, :] + sd[None, :] * z


def build_pooled_model(
    inputs: dict[str, np.ndarray], markets: list[str], scaling: ScalingSpec, spec: ModelSpec
) -> pm.Model:
    """The pooled PyMC model on containers named as :func:`pooled_inputs`' keys (see the module docstring).

    ``scaling`` is any market's (only its channel and control names are read). Market-level variables
    keep the single-market names with a leading ``market`` dimension (``beta_channel``, ``alpha``,
    ``half_sat``..., ``intercept``, ``sigma``); national ones end in ``_national``. The likelihood is
    each market's masked Normal or Student-t (one ``nu`` for all); with ``reparameterize`` each market's
    intercept is sampled centred, as in the single-market model.
    """
    n_time = inputs["media"].shape[0]
    channels, controls = scaling.channels, scaling.controls
    groups = saturation_groups(spec, channels)
    spread = spec.prior("market_sd")
    with pm.Model(coords=model_coords(inputs, scaling, spec, markets)) as model:
        data = PackedData(inputs)
        media, media_init, y, mask = data["media"], data["media_init"], data["y"], data["mask"]

        if not spec.reparameterize:
            intercept = prior_variable("intercept", spec.prior("intercept"), "market")
        terms, mean_terms = pt.zeros((n_time, len(markets))), pt.zeros(len(markets))
        if spec.trend:
            trend = data["trend"]
            slope = prior_variable("trend_slope", spec.prior("trend_slope"), "market")
            terms, mean_terms = terms + slope * trend, mean_terms + slope * _masked_mean(mask, trend)
        if spec.n_fourier:
            fourier = data["fourier"]
            gamma = prior_variable("gamma_fourier", spec.prior("gamma_fourier"), ("market", "fourier_mode"))
            terms = terms + pt.dot(fourier, gamma.T)
            mean_fourier = pt.dot(mask.T, fourier) / mask.sum(axis=0)[:, None]  # (M, F)
            mean_terms = mean_terms + (mean_fourier * gamma).sum(axis=1)
        if controls:
            control_data = data["controls"]
            gamma = prior_variable("gamma_control", spec.prior("gamma_control"), ("market", "control"))
            terms = terms + (control_data * gamma[None]).sum(axis=2)
            mean_terms = mean_terms + (_masked_mean(mask, control_data) * gamma).sum(axis=1)

        prior_scale = data["beta_prior_scale"]
        alpha = pm.Deterministic(
            "alpha",
            _pooled_share("alpha", spec.prior("alpha"), "channel", spread, "alpha" in spec.market_varying),
            dims=("market", "channel"),
        )
        theta = None
        if spec.adstock == "delayed":
            theta = pm.Deterministic(
                "theta",
                _pooled_positive(
                    "theta", spec.prior("theta"), "channel", spread, varies="theta" in spec.market_varying
                )[0],
                dims=("market", "channel"),
            )
        adstocked = transforms.adstock(
            spec.adstock, media, spec.l_max, alpha=alpha, theta=theta, x_init=media_init, xp=pt
        )  # (T, M, C)
        unit = None
        if spec.saturation_prior_unit == "typical_spend":
            unit = data["saturation_unit"]
        group_params, national_curves = [], []
        for group in groups:
            kind, idx, dim = group
            params, national = {}, {}
            for name in SATURATION_PARAMS[kind]:
                power = SPEND_POWER[name]
                relative = unit is not None and power != 0.0
                base = f"{name}_typical" if relative else name
                value, national[name] = _pooled_positive(
                    base, group_prior(spec, name, group), dim, spread, varies=name in spec.market_varying
                )
                if relative:
                    pm.Deterministic(base, value, dims=("market", dim))
                    value = value * (unit if dim == "channel" else unit[:, idx]) ** power
                params[name] = pm.Deterministic(name, value, dims=("market", dim))
            group_params.append((group, params))
            national_curves.append((kind, idx, national))
        saturated = transforms.grouped_saturation(
            [(kind, idx, params) for (kind, idx, _), params in group_params], adstocked, xp=pt
        )
        national_scale = prior_scale.mean(axis=0)
        # The national effect is sampled as the log of the national contribution's rise from a low to a
        # high week of spend (as the single-market model samples its spread, build._channel_effect): what
        # the markets' data pin down is how much a channel's contribution moves with its spend, not beta
        # and the curve apart. Sampled as log beta, beta and the curve parameters of a channel sit on a
        # ridge shared by every market (40-market world: R-hat 1.03, ESS 160-200; benchmarks/README.md).
        # (The rise, not the sd over more points: PyTensor 2.38's fusion rewrite fails on the sd's graph.)
        # The floor keeps a channel whose low and high weeks are equal finite (its beta is then prior).
        rise = transforms.grouped_saturation(national_curves, data["national_spend_points"], xp=pt)
        log_spread = pt.log(rise[1] - rise[0] + 1e-12)
        beta, _ = _pooled_positive(
            "beta_channel",
            spec.prior("beta_channel"),
            "channel",
            spread,
            national_scale,
            log_shift=log_spread,
            sampled_as="log_national_contribution_rise",
            varies="beta_channel" in spec.market_varying,
        )
        beta = pm.Deterministic("beta_channel", beta, dims=("market", "channel"))
        terms = terms + (saturated * beta[None]).sum(axis=2)
        mean_terms = mean_terms + (_masked_mean(mask, saturated) * beta).sum(axis=1)
        if "lift_x" in inputs:
            lift_test_likelihood(data, group_params, beta)

        if spec.reparameterize:
            centered = shifted_prior("intercept_centered", spec.prior("intercept"), mean_terms, dims="market")
            intercept = pm.Deterministic("intercept", centered - mean_terms, dims="market")
        mu = pm.Deterministic("mu", intercept[None, :] + terms, dims=("time", "market"))

        sigma = prior_variable("sigma", spec.prior("sigma"), "market")
        if spec.likelihood == "normal":
            noise = pm.Normal.dist(mu=mu, sigma=sigma[None, :])
        else:
            noise = pm.StudentT.dist(nu=prior_variable("nu", spec.prior("nu")), mu=mu, sigma=sigma[None, :])
        pm.Potential("loglik", (mask * pm.logp(noise, y)).sum())
    return model


@dataclass
class PooledFitResult:
    """A fitted pooled model: the joint posterior over all markets plus each market's data and scaling.

    ``timings`` as :class:`~mmm_pipeline.model.fit.FitResult`'s. Dicts are keyed by market, in the
    order of the posterior's ``market`` coordinate.
    """

    idata: az.InferenceData
    spec: ModelSpec
    markets: list[str]
    scalings: dict[str, ScalingSpec]
    data: dict[str, ModelData]
    carry_in: dict[str, np.ndarray]
    n_time: int
    timings: dict[str, float]
    reused_graph: bool
    lift_tests: dict[str, LiftTests]

    def market_fit(self, market: str) -> FitResult:
        """``market``'s view of the fit as a single-market :class:`~mmm_pipeline.model.fit.FitResult`
        (its :func:`market_posterior`, scaling, data, carry-in and lift tests), so every reader of a
        single-market fit (insight tables, CV scoring, diagnostics) serves each market of the group."""
        return FitResult(
            idata=market_posterior(self.idata, market),
            spec=self.spec,
            scaling=self.scalings[market],
            data=self.data[market],
            carry_in=self.carry_in[market],
            n_time=self.n_time,
            timings=self.timings,
            reused_graph=self.reused_graph,
            lift_tests=self.lift_tests.get(market, LiftTests.empty()),
        )


def fit_pooled(
    data: Mapping[str, ModelData],
    spec: ModelSpec,
    scalings: Mapping[str, ScalingSpec] | None = None,
    *,
    carry_in: Mapping[str, np.ndarray] | None = None,
    lift_tests: Mapping[str, LiftTests] | None = None,
    progress: Progress | None = None,
    cache: ModelCache | None = DEFAULT_CACHE,
) -> PooledFitResult:
    """Fit the pooled model of a market group (``spec.pooling`` must be ``partial``).

    ``data``: each market's training window (same weeks, channels and controls). ``scalings``: each
    market's frozen constants (the champion's for a refresh); computed from its data when ``None`` or
    missing. ``carry_in``, ``lift_tests``: per market, as :func:`~mmm_pipeline.model.fit.fit` takes them
    (tests that ended after the window's last week are left out). Compiled graphs are cached as the
    single-market ones, keyed also by the markets.
    """
    if spec.pooling != "partial":
        raise ValueError(f"fit_pooled fits pooling: partial; this spec has pooling: {spec.pooling}")
    check_group(data)
    markets = list(data)
    scalings = {m: (scalings or {}).get(m) or ScalingSpec.from_data(data[m]) for m in markets}
    report = progress or (lambda _message: None)
    start = time.perf_counter()
    first = data[markets[0]]
    n_time = padded_length(first.n_weeks, spec)
    carry = {
        m: np.zeros((spec.l_max - 1, len(first.channels))) if (carry_in or {}).get(m) is None else carry_in[m]
        for m in markets
    }
    tests = {m: t.ended_by(first.dates[-1]) for m, t in (lift_tests or {}).items()}
    inputs = pooled_inputs(data, scalings, spec, carry_in=carry, n_time=n_time, lift_tests=tests)
    n_lift = len(inputs.get("lift_x", ()))
    key = f"pooled|{markets}|{graph_key(spec, scalings[markets[0]], n_time, n_lift)}"
    entry = cache.get(key) if cache is not None else None
    sampler = spec.sampler
    reused = entry is not None and (sampler.name != "nutpie" or entry.compiled is not None)
    if entry is None:
        model = build_pooled_model(inputs, markets, scalings[markets[0]], spec)
        entry = CacheEntry(model, input_layout(inputs))
        if cache is not None:
            cache.put(key, entry)
    built = time.perf_counter()
    n_tests = sum(len(t) for t in tests.values())
    report(
        f"fitting {len(markets)} markets x {first.n_weeks} weeks (padded to {n_time}) partially pooled"
        + (f" with {n_tests} lift test(s)" if n_tests else "")
        + f", {sampler.name}: {sampler.chains} chains x ({sampler.tune} tune + {sampler.draws} draws)"
        + ("; reusing the compiled graph" if reused else "")
    )
    idata, compile_s, sample_s = sample_entry(entry, inputs, spec, progress)
    timings = {
        "build": built - start,
        "compile": compile_s,
        "sample": sample_s,
        "total": time.perf_counter() - start,
    }
    idata.attrs["scalings"] = scalings_attr(scalings)
    idata.attrs["model_spec"] = spec.model_dump_json()
    idata.attrs["n_lift_tests"] = n_tests
    return PooledFitResult(idata, spec, markets, scalings, dict(data), carry, n_time, timings, reused, tests)


def scalings_attr(scalings: Mapping[str, ScalingSpec]) -> str:
    """Every market's scaling as one JSON string, the pooled posterior's ``scalings`` attribute (a plain
    string, as the single-market ``scaling`` is, so that the posterior saves to netCDF)."""
    return json.dumps({m: json.loads(s.model_dump_json()) for m, s in scalings.items()})


def market_posterior(idata: az.InferenceData, market: str) -> az.InferenceData:
    """One market's view of a pooled posterior, shaped as a single-market fit's.

    Why: every single-market reader (:mod:`~mmm_pipeline.model.insights`,
    :func:`~mmm_pipeline.model.predict.predict`, the optimizer's response model) reads ``beta_channel``
    ``(chain, draw, channel)``, ``intercept`` ``(chain, draw)`` and so on; selecting the market drops the
    ``market`` dimension and gives exactly those shapes (national and shared variables come along
    unchanged). The draws stay the joint posterior's, so sums over markets draw by draw are valid.
    """
    markets = [str(m) for m in idata.posterior.coords["market"].to_numpy()]
    if market not in markets:
        raise ValueError(f"market {market!r} is not in the pooled posterior; its markets are {markets}")
    groups = {
        group: getattr(idata, group).sel(market=market) if "market" in getattr(idata, group).dims
        else getattr(idata, group)
        for group in idata.groups()
    }  # fmt: skip
    view = az.InferenceData(**groups)
    view.attrs.update({k: v for k, v in idata.attrs.items() if k != "scalings"})
    if "scalings" in idata.attrs:
        view.attrs["scaling"] = json.dumps(json.loads(idata.attrs["scalings"])[market])
    return view
