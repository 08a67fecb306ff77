"""Model configuration: structure, priors and sampler settings of the Bayesian MMM, validated by pydantic.

Why a separate spec: the structure (adstock kind, ``l_max``, saturation, Fourier modes...) decides the
compiled graph, so it is also the key of the compile-once cache, and it is what a champion model records
so that a refit next week is the same model on more data. Priors are stated on the *scaled* data (see
:class:`mmm_pipeline.model.build.ScalingSpec`), which is what makes them scale-free: the same defaults
serve a market selling 1,000 units a week and one selling 10 million.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from mmm_pipeline.model.transforms import AdstockKind, SaturationKind

SamplerName = Literal["nutpie", "pymc", "numpyro", "blackjax"]
Pooling = Literal["none", "partial"]
#: Parameters that may vary by market around a national value in the pooled model.
MarketParameter = Literal["beta_channel", "alpha", "theta", "half_sat", "lam", "slope"]
#: What varies by market by default: every channel parameter but the Hill slope (see
#: :attr:`ModelSpec.market_varying`).
DEFAULT_MARKET_VARYING: tuple[MarketParameter, ...] = ("beta_channel", "alpha", "theta", "half_sat", "lam")
Likelihood = Literal["normal", "student_t"]
PriorDist = Literal[
    "Normal", "HalfNormal", "StudentT", "HalfStudentT", "Laplace", "Beta", "Gamma", "LogNormal", "Uniform"
]

#: ``1 / sqrt(1 - 2 / pi)``: a HalfNormal with this sigma has standard deviation 1. Multiplied by
#: ``n_channels * spend_share`` it gives the PyMC-Marketing case study's channel effect prior.
HALFNORMAL_UNIT_SD = 1.6588


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriorSpec(_Strict):
    """A prior: a PyMC distribution name and its keyword parameters.

    A parameter is a number, shared by every channel/control, or a list with one value per channel
    (or control), in the order of the data's channels.
    """

    dist: PriorDist
    params: dict[str, float | list[float]]


#: Priors on the scaled data (KPI / max KPI, spend / max spend per channel, standardized controls).
#: Names are the model's parameter names; ``beta_channel``'s sigma is further multiplied by
#: ``n_channels * spend_share`` per channel when :attr:`ModelSpec.beta_by_spend_share` is on.
DEFAULT_PRIORS: dict[str, PriorSpec] = {
    "intercept": PriorSpec(dist="Normal", params={"mu": 0.5, "sigma": 0.5}),
    "trend_slope": PriorSpec(dist="Normal", params={"mu": 0.0, "sigma": 0.5}),
    "gamma_fourier": PriorSpec(dist="Laplace", params={"mu": 0.0, "b": 0.25}),
    "beta_channel": PriorSpec(dist="HalfNormal", params={"sigma": HALFNORMAL_UNIT_SD}),
    "alpha": PriorSpec(dist="Beta", params={"alpha": 1.0, "beta": 3.0}),
    "theta": PriorSpec(dist="Gamma", params={"mu": 1.5, "sigma": 1.0}),
    # Saturation, in units of the channel's typical week (ModelSpec.saturation_prior_unit): the priors
    # that used to hold in units of the biggest week, for a channel whose biggest week is twice its
    # typical one. A priori about half saturated at a typical week (logistic: lam x = 1.1 at half).
    "lam": PriorSpec(dist="Gamma", params={"alpha": 3.0, "beta": 2.0}),
    "half_sat": PriorSpec(dist="Gamma", params={"mu": 1.0, "sigma": 0.6}),
    "slope": PriorSpec(dist="Gamma", params={"mu": 1.5, "sigma": 0.5}),
    "gamma_control": PriorSpec(dist="Normal", params={"mu": 0.0, "sigma": 0.25}),
    "sigma": PriorSpec(dist="HalfNormal", params={"sigma": 0.25}),
    "nu": PriorSpec(dist="Gamma", params={"alpha": 2.0, "beta": 0.1}),
    # Partial pooling (ModelSpec.pooling): how far a market's channel parameters stray from the national
    # ones, on the log scale of the effect and the curve parameters and the logit scale of the decay.
    # A sd of 0.3 lets a market's effect be about 0.55-1.8 times the national one a priori.
    "market_sd": PriorSpec(dist="HalfNormal", params={"sigma": 0.3}),
}


#: The saturation priors in units of the channel's biggest week (``saturation_prior_unit: max_spend``).
MAX_SPEND_SATURATION_PRIORS: dict[str, PriorSpec] = {
    "lam": PriorSpec(dist="Gamma", params={"alpha": 3.0, "beta": 1.0}),
    "half_sat": PriorSpec(dist="Gamma", params={"mu": 0.5, "sigma": 0.3}),
}


class SamplerSpec(_Strict):
    """How to sample. ``nutpie`` is the default: fastest here and it supports compile-once refits."""

    name: SamplerName = "nutpie"
    chains: int = Field(4, ge=1)
    draws: int = Field(1000, ge=10)
    tune: int = Field(1000, ge=10)
    target_accept: float = Field(0.95, gt=0.5, lt=1.0)
    """0.95 (was 0.9): on 10 synthetic worlds (``bench_recovery.py``, nutpie 4 x 1000) 0.9 left
    divergences in 3 worlds (20, 2, 1), 0.95 in 2 (3, 1), for about 11% more gradient evaluations per
    draw (16.4 vs 14.7); in an earlier round 0.97 did no better for about 37% more. See
    ``benchmarks/README.md``."""
    seed: int = 0
    cores: int | None = None
    """Chains run in parallel; default min(chains, CPUs)."""


class ModelSpec(_Strict):
    """Structure, priors and sampler of one market's MMM (see ``build.py`` for the equation)."""

    adstock: AdstockKind = "geometric"
    l_max: int = Field(8, ge=1, le=52)
    """Weeks an adstock reaches back (the spend week included)."""
    saturation: SaturationKind = "hill"
    """``hill`` (``x^s / (x^s + K^s)``: returns falling from the first unit, an S-curve, or nearly linear)
    or ``logistic`` (``tanh(lam x / 2)``: linear at first, then bending, so it can show neither a channel
    whose first units return the most nor a threshold). On 20 synthetic worlds mixing both kinds the
    logistic fits were sure of wrong slopes (true marginal returns 1.37 posterior sds off in root mean
    square, TV up to 4.8) and promised +15% where their plans delivered +10%; Hill fits were 1.05 sds off
    and promised what they delivered, and their plans captured more of the achievable uplift (median
    0.856 against 0.830, worst 0.515 against 0.163). ``benchmarks/README.md``, decision quality."""
    saturation_by_channel: dict[str, SaturationKind] = Field(default_factory=dict)
    """Per-channel saturation kinds, by channel name; channels not named use :attr:`saturation`. Why: a
    channel's curve family is a modelling choice a user may know (e.g. from an experiment), and the
    decision-quality benchmark's oracle ceiling fits each synthetic channel with the generator's own
    family. Empty (the default) is exactly the one-kind model; a name the data lack is an error at fit
    time (:meth:`saturation_kinds`). Left out of the serialized spec when empty, so the structure key and
    the config hash of a spec without it stay what they were."""
    n_fourier: int = Field(2, ge=0, le=26)
    """Yearly Fourier modes (each a sine and a cosine); 0 switches seasonality off."""
    trend: bool = True
    likelihood: Likelihood = "normal"
    priors: dict[str, PriorSpec] = Field(default_factory=dict)
    """Overrides of :data:`DEFAULT_PRIORS`, by parameter name; unnamed parameters keep the default."""
    beta_by_spend_share: bool = True
    """Scale each channel's effect prior by ``n_channels * spend_share`` (PyMC-Marketing case study):
    a channel that got a tenth of the budget is a priori expected to do less than one that got half."""
    saturation_prior_unit: Literal["typical_spend", "max_spend"] = "typical_spend"
    """The spend unit the saturation priors (``half_sat``, ``lam``) are stated in: the channel's typical
    week (the spend-weighted mean weekly spend, :func:`mmm_pipeline.model.build.typical_spend`; the
    default) or its biggest week. With ``max_spend`` a channel bought with occasional pushes (biggest week
    4-5x its usual ones) is a priori nearly linear over its usual weeks and a steady channel nearly
    saturated: the prior's view of the curvature depends on how spiky the buying was, not on the channel.
    On synthetic worlds that hid the low-spend return of such a channel and the optimizer switched it
    off (``benchmarks/README.md``, decision quality)."""
    reparameterize: bool = True
    """Sample the intercept centered and each channel's effect as the log spread of its contribution
    (see :func:`mmm_pipeline.model.build.build_model`): the same model, priors and posterior in
    coordinates without the funnels that made the plain parameterization (``False``) diverge."""
    pooling: Pooling = "none"
    """How the markets of a market group share information. ``none`` (the default): each market is its
    own model (:func:`mmm_pipeline.model.fit.fit`). ``partial``: one hierarchical model over the group
    (:mod:`mmm_pipeline.model.pooled`): channel effects, curve and adstock parameters drawn around shared
    national values, each market with its own baseline, trend, seasonality, controls and noise; a market
    whose own data say little borrows from the others. Left out of the serialized spec when ``none``, so
    the structure key and the config hash of every existing spec stay what they were."""
    market_varying: tuple[MarketParameter, ...] = DEFAULT_MARKET_VARYING
    """With ``pooling: partial``: the channel parameters each market draws around the national value;
    the others (by default the Hill ``slope``) every market shares. Why the slope is shared by default:
    a market's own weeks say little about how S-shaped its curve is apart from its effect size, so the
    markets' slopes and effects trade off along a ridge in every market; on a 40-market world (156 weeks,
    5 channels) the spreads of search's effect and slope then mixed worst (R-hat 1.03, bulk ESS 150), and
    with the slope shared no quantity had R-hat above 1.01 or bulk ESS under 400, and a log-density
    gradient cost a fifth less (``benchmarks/README.md``, many markets). Meridian likewise shares its
    Hill curves across geos. Left out of the serialized spec with ``pooling: none``."""
    control_variates: bool = True
    """Estimate the posterior means of the channel summary (contribution, ROAS, share, marginal ROAS;
    hence ``roas_drift`` and the report), the period summary and the decomposition with zero-variance
    control variates from
    the gradients nutpie stores with the draws (:func:`mmm_pipeline.model.insights.stein_controls`):
    the same expectation with less Monte Carlo error, so a weekly refit's ROAS moves less for reasons
    that are only sampling noise (``benchmarks/bench_refresh.py``). Intervals are unchanged; samplers
    other than nutpie store no gradients and keep the plain means. Left out of the serialized spec when
    on (the default), so the structure key and config hash of every existing spec stay what they were."""
    pad_weeks_to: int = Field(13, ge=1)
    """Pad the time axis to a multiple of this many weeks (masked in the likelihood), so that fits on
    windows a few weeks apart (weekly refits, CV folds) share one compiled graph; 1 disables padding."""
    sampler: SamplerSpec = SamplerSpec()

    @field_validator("priors")
    @classmethod
    def _known_priors(cls, value: dict[str, PriorSpec]) -> dict[str, PriorSpec]:
        unknown = set(value) - set(DEFAULT_PRIORS)
        if unknown:
            raise ValueError(f"unknown prior names {sorted(unknown)}; known: {sorted(DEFAULT_PRIORS)}")
        return value

    @model_validator(mode="after")
    def _beta_prior_has_sigma(self) -> ModelSpec:
        if self.beta_by_spend_share and "sigma" not in self.prior("beta_channel").params:
            raise ValueError("beta_by_spend_share scales the beta_channel prior's sigma; that prior has none")
        return self

    @model_serializer(mode="wrap")
    def _drop_defaults_kept_out(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if not self.saturation_by_channel:
            data.pop("saturation_by_channel", None)
        if self.pooling == "none":
            data.pop("pooling", None)
            data.pop("market_varying", None)
        if self.control_variates:
            data.pop("control_variates", None)
        return data

    def saturation_kinds(self, channels: Sequence[str]) -> tuple[SaturationKind, ...]:
        """Each channel's saturation kind, in the order of ``channels`` (the data's channels).

        Raises ``ValueError`` naming any channel of :attr:`saturation_by_channel` the data do not have:
        a typo there would otherwise silently leave that channel on the default kind.
        """
        unknown = sorted(set(self.saturation_by_channel) - set(channels))
        if unknown:
            raise ValueError(
                f"saturation_by_channel names channels {unknown} that the data do not have; the data's "
                f"channels are {list(channels)}"
            )
        return tuple(self.saturation_by_channel.get(c, self.saturation) for c in channels)

    def prior(self, name: str) -> PriorSpec:
        """The prior in force for parameter ``name``: the override if given, else the default (of the
        saturation prior unit in force)."""
        if name in self.priors:
            return self.priors[name]
        if self.saturation_prior_unit == "max_spend" and name in MAX_SPEND_SATURATION_PRIORS:
            return MAX_SPEND_SATURATION_PRIORS[name]
        return DEFAULT_PRIORS[name]

    def structure_key(self) -> str:
        """Everything that shapes the compiled graph except data: the compile-once cache key's part.

        ``pad_weeks_to`` is left out: it only decides the padded length, which the cache key holds
        itself, so a CV fold padded to the full window's length shares the full fit's graph.
        """
        return self.model_dump_json(exclude={"sampler", "pad_weeks_to"})
