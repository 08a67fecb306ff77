"""Synthetic marketing data with a known ground truth.

Why: a model can only be trusted to recover adstock, saturation and ROAS if it is tested on data where
those are known, and a budget optimizer can only be scored against the true response. This module
generates such a world: six media channels bought the way real media plans buy them (TV, radio and print
in on/off flights, search always on, display and social drifting with occasional pushes), three controls,
a baseline with trend and yearly seasonality, and noise. It writes the observable part in the pipeline's
landing format and the truth (parameters, ROAS, weekly decomposition) next to it.

The KPI of market ``m`` in week ``t`` is, to float precision::

    kpi = baseline + trend + seasonality + sum_k controls_k + sum_c media_c + noise

with ``media_c = multiplier_c(t) * beta_c * saturation_c(adstock_c(spend_c))``, where ``multiplier`` is 1
unless a structural :class:`Break` changed the channel's effect. Markets differ in size by a factor
``scale``: spend, baseline and effects all scale with it, and the saturation curve stretches with it, so a
market twice as big needs twice the spend to reach the same point on the curve (see
:meth:`ChannelTruth.in_market`). Each channel's ``beta`` is calibrated so that its true ROAS over the
window, pooled over markets and before breaks, equals a realistic target (e.g. 3.5 for search).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from mmm_pipeline.model import transforms
from mmm_pipeline.settings import IDENTIFIER, WEEKDAYS

#: Default first week: a Monday, so that 156 default weeks end well in the past (2024-12-23).
DEFAULT_START = dt.date(2022, 1, 3)
WEEKS_PER_YEAR = 365.25 / 7

SpendPattern = Literal["flighting", "always_on", "variable"]


@dataclass(frozen=True)
class Break:
    """From week ``week_index`` on (0 is the first week), ``channel``'s effect is ``effect_multiplier`` times.

    Models a structural change (new creative, a platform's attribution change...) that a continuous
    pipeline should notice. The spend is unchanged; only the response is.
    """

    channel: str
    week_index: int
    effect_multiplier: float


@dataclass(frozen=True)
class ChannelTruth:
    """The true response of one channel: ``beta * saturation(adstock(spend))`` in KPI units per week.

    Saturation parameters are in the units of weekly adstocked spend (currency): ``lam`` in 1/currency for
    ``logistic``, ``half_sat`` in currency for ``hill``. Adstock weights are normalized (sum to 1), so a
    constant weekly spend ``s`` eventually yields ``beta * saturation(s)`` per week; ``beta`` is the weekly
    contribution at full saturation.
    """

    name: str
    adstock: transforms.AdstockKind
    alpha: float
    l_max: int
    saturation: transforms.SaturationKind
    saturation_params: Mapping[str, float]
    beta: float

    def in_market(self, scale: float) -> ChannelTruth:
        """This channel in a market ``scale`` times the reference size: same curve, stretched on both axes."""
        params = dict(self.saturation_params)
        if "lam" in params:
            params["lam"] /= scale
        if "half_sat" in params:
            params["half_sat"] *= scale
        return replace(self, saturation_params=params, beta=self.beta * scale)

    def response(self, spend: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
        """Weekly contribution ``(T,)`` of a spend series ``(T,)``, ignoring breaks.

        ``history`` holds the actual spend of the weeks right before ``spend`` (oldest first, any length);
        its last ``l_max - 1`` weeks carry over into the first weeks of ``spend``. Missing weeks are zero.
        """
        carry = np.zeros(self.l_max - 1)
        if history is not None and self.l_max > 1:
            tail = np.asarray(history, dtype=float)[-(self.l_max - 1) :]
            carry[carry.size - tail.size :] = tail
        adstocked = transforms.adstock(self.adstock, spend, self.l_max, alpha=self.alpha, x_init=carry)
        return self.beta * transforms.saturation(self.saturation, adstocked, **self.saturation_params)

    def steady_state(self, weekly_spend: np.ndarray) -> np.ndarray:
        """Weekly contribution once a constant weekly spend has run for ``l_max`` weeks (adstock = spend)."""
        return self.beta * transforms.saturation(self.saturation, weekly_spend, **self.saturation_params)


@dataclass(frozen=True)
class MarketVariation:
    """How one channel works in one market compared with the national (reference) channel.

    Why: markets share channel behaviour but not exactly (audiences, competition, media prices differ),
    which is what a partially pooled model assumes and has to recover. ``effect`` multiplies ``beta``;
    ``curve`` stretches the saturation curve along the spend axis (``half_sat`` times it, ``lam`` over
    it: the market needs ``curve`` times the spend to reach the same point); ``alpha`` replaces the
    adstock's decay. All apply on top of the market's size (:meth:`ChannelTruth.in_market`).
    """

    effect: float = 1.0
    curve: float = 1.0
    alpha: float | None = None

    def apply(self, truth: ChannelTruth) -> ChannelTruth:
        """``truth`` (already in the market's size) with this market's own effect, curve and decay."""
        params = dict(truth.saturation_params)
        if "lam" in params:
            params["lam"] /= self.curve
        if "half_sat" in params:
            params["half_sat"] *= self.curve
        alpha = truth.alpha if self.alpha is None else self.alpha
        return replace(truth, saturation_params=params, beta=truth.beta * self.effect, alpha=alpha)


@dataclass(frozen=True)
class _Setup:
    """How a channel is bought (spend pattern, typical weekly spend, price) and how it works (response)."""

    pattern: SpendPattern
    level: float
    cpm: float
    alpha: float
    l_max: int
    saturation: transforms.SaturationKind
    saturation_params: Mapping[str, float]
    target_roas: float


# Reference-market setup. Average and marginal ROAS part ways differently per channel (search: high
# average, lower at the margin; display: nearly linear, room to grow; print and tv: S-curves), so the
# optimal allocation differs visibly from the historical mix (about +12% contribution at equal budget).
_CHANNELS: dict[str, _Setup] = {
    "tv": _Setup("flighting", 120_000, 22.0, 0.6, 8, "hill", {"half_sat": 90_000.0, "slope": 1.5}, 1.6),
    "search": _Setup("always_on", 30_000, 2.5, 0.15, 3, "logistic", {"lam": 1 / 20_000}, 3.5),
    "display": _Setup("variable", 15_000, 4.0, 0.3, 4, "logistic", {"lam": 1 / 60_000}, 2.0),
    "social": _Setup("variable", 20_000, 7.0, 0.4, 5, "hill", {"half_sat": 30_000.0, "slope": 1.0}, 1.4),
    "radio": _Setup("flighting", 30_000, 9.0, 0.5, 6, "logistic", {"lam": 1 / 40_000}, 1.0),
    "print": _Setup("flighting", 15_000, 30.0, 0.5, 6, "hill", {"half_sat": 12_000.0, "slope": 2.0}, 0.6),
    # Not in the default world (see DEFAULT_CHANNELS); worlds of other shapes ask for them by name.
    "ooh": _Setup("flighting", 40_000, 5.0, 0.55, 6, "hill", {"half_sat": 35_000.0, "slope": 1.3}, 0.9),
    "video": _Setup("variable", 25_000, 12.0, 0.45, 5, "hill", {"half_sat": 30_000.0, "slope": 0.8}, 1.2),
    "affiliate": _Setup("always_on", 10_000, 3.0, 0.1, 2, "logistic", {"lam": 1 / 15_000}, 2.5),
}
#: The default world's channels, in order. Their spend always comes from the market's main random
#: stream in this order, so adding archetypes or options never changes a default world.
DEFAULT_CHANNELS = ("tv", "search", "display", "social", "radio", "print")

# Controls: value reference (where the effect is zero) and effect per unit in the reference market.
# Competitor spend grows with the market, so its per-dollar effect does not; the others scale with it.
_CONTROL_REFERENCE = {"competitor_spend": 0.0, "macro_index": 100.0, "price": 10.0}
_CONTROL_COEF = {"competitor_spend": -0.3, "macro_index": 5_000.0, "price": -50_000.0}
_CONTROL_COEF_SCALES = {"competitor_spend": False, "macro_index": True, "price": True}
# The categorical control of ``generate_world(event_control=True)``: weekly labels ('na' most weeks, the
# no-label group) and each label's effect as a share of the baseline (it scales with the market).
EVENT_CONTROL = "event"
_EVENT_NO_LABEL = "na"
_EVENT_LABELS = {"sale": (0.08, 0.05), "launch": (0.04, 0.08)}  # label: (share of weeks, effect share)

_BASELINE = 1_000_000.0  # weekly KPI without media, controls or seasonality, reference market
_TREND_PER_YEAR = 0.04  # baseline growth per year, as a share of the baseline
_SEASONAL_AMPLITUDE = 0.08  # share of the baseline
_NOISE_SHARE = 0.02  # noise standard deviation as a share of the baseline


@dataclass
class Truth:
    """Everything the generator knows and a model has to recover.

    ``channels`` are the reference-market (scale 1) responses; ``channel(name, market)`` gives a market's.
    ``control_coef[market][control]`` multiplies ``value - control_reference[control]``.
    ``decomposition`` has one row per market and week: ``date, market, baseline, trend, seasonality``, one
    column per control effect, one per channel contribution, ``noise`` and the KPI; the components sum to
    the KPI to float precision (rounding the KPI to cents is part of ``noise``).
    ``event_effects[label]`` is the weekly effect of a week labelled ``label`` in the categorical
    :data:`EVENT_CONTROL`, in the reference market (it scales with the market); empty without one.
    """

    channels: dict[str, ChannelTruth]
    market_scale: dict[str, float]
    control_reference: dict[str, float]
    control_coef: dict[str, dict[str, float]]
    breaks: tuple[Break, ...]
    noise_sd: dict[str, float]
    decomposition: pd.DataFrame
    trend_per_year: float = _TREND_PER_YEAR
    seasonal_amplitude: float = _SEASONAL_AMPLITUDE
    event_effects: dict[str, float] = field(default_factory=dict)
    variation: dict[str, dict[str, MarketVariation]] = field(default_factory=dict)
    """``variation[market][channel]``: how the channel works in that market beyond its size (empty in
    worlds without ``market_variation``: every market then has the reference curve, scaled)."""

    def channel(self, name: str, market: str) -> ChannelTruth:
        """The channel's true response in ``market`` (parameters scaled by the market's size, then the
        market's own :class:`MarketVariation`, if any)."""
        truth = self.channels[name].in_market(self.market_scale[market])
        variation = self.variation.get(market, {}).get(name)
        return truth if variation is None else variation.apply(truth)


@dataclass
class SyntheticWorld:
    """Observable data in landing shape (``media``, ``kpi``, ``controls``) plus the ``truth`` behind it."""

    media: pd.DataFrame
    kpi: pd.DataFrame
    controls: pd.DataFrame
    truth: Truth
    channels: list[str]
    kpi_name: str
    week_start: str
    seed: int
    lift_tests: pd.DataFrame | None = None
    """Experiments run in this world (:data:`~mmm_pipeline.ingest.contract.LIFT_TEST_COLUMNS`), or
    ``None``; see :func:`design_lift_tests`."""

    @property
    def markets(self) -> list[str]:
        return list(self.truth.market_scale)

    @property
    def dates(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.kpi["date"].drop_duplicates().sort_values())

    @property
    def n_weeks(self) -> int:
        return len(self.dates)

    def spend_matrix(self, market: str | None = None) -> np.ndarray:
        """Actual weekly spend of a market, shape ``(n_weeks, C)`` in :attr:`channels` order."""
        market = self._market(market)
        rows = self.media[self.media["market"] == market]
        wide = rows.pivot(index="date", columns="channel", values="spend")
        return wide.reindex(index=self.dates, columns=self.channels).to_numpy(dtype=float)

    def true_contribution(
        self, spend: np.ndarray, market: str | None = None, start_week: int = 0
    ) -> np.ndarray:
        """The true media contribution of a spend plan, in KPI units, channels in :attr:`channels` order.

        ``spend`` of shape ``(C,)``: a constant weekly spend per channel; returns the steady-state weekly
        contribution ``(C,)`` once it has run ``l_max`` weeks, with the effects in force after the window
        (all breaks applied). This is the budget optimizer's objective: "what does a week at this
        allocation yield in the long run".

        ``spend`` of shape ``(T, C)``: a weekly plan whose first row is week ``start_week`` of the world
        (``0`` is the first week, ``n_weeks`` the first week after the window); returns ``(T, C)``. The
        actual spend of the weeks before ``start_week`` carries over into the plan's first weeks and breaks
        apply by week, so the actual spend with ``start_week=0`` reproduces the recorded contributions, and
        a plan starting at ``n_weeks`` is scored as a continuation of the history.
        """
        market = self._market(market)
        spend = np.asarray(spend, dtype=float)
        if spend.shape[-1:] != (len(self.channels),) or spend.ndim not in (1, 2):
            raise ValueError(f"spend must have shape (C,) or (T, C) with C = {len(self.channels)}")
        if (spend < 0).any():
            raise ValueError("spend must not be negative")
        truths = [self.truth.channel(c, market) for c in self.channels]
        if spend.ndim == 1:
            multiplier = _multiplier(self.truth.breaks, self.channels, np.array([self.n_weeks]))[0]
            return multiplier * np.array([t.steady_state(s) for t, s in zip(truths, spend, strict=True)])
        if not 0 <= start_week <= self.n_weeks:
            raise ValueError(f"start_week must be within 0..{self.n_weeks}, got {start_week}")
        history = self.spend_matrix(market)[:start_week]
        weeks = start_week + np.arange(spend.shape[0])
        return _multiplier(self.truth.breaks, self.channels, weeks) * _media_response(truths, spend, history)

    def summary(self, market: str | None = None) -> pd.DataFrame:
        """Per channel: total spend, true contribution, ROAS and contribution share; pooled if no market."""
        decomposition, media = self.truth.decomposition, self.media
        if market is not None:
            decomposition = decomposition[decomposition["market"] == self._market(market)]
            media = media[media["market"] == market]
        contribution = decomposition[self.channels].sum()
        spend = media.groupby("channel")["spend"].sum().reindex(self.channels)
        return pd.DataFrame(
            {
                "spend": spend,
                "contribution": contribution,
                "roas": contribution / spend,
                "share": contribution / contribution.sum(),
            }
        )

    def truth_dict(self) -> dict:
        """The truth as plain JSON-ready data (what ``truth.json`` holds)."""
        pooled = self.summary()
        by_market = {m: self.summary(m) for m in self.markets}
        channels = {}
        for name in self.channels:
            ref = self.truth.channels[name]
            channels[name] = {
                "adstock": ref.adstock,
                "alpha": ref.alpha,
                "l_max": ref.l_max,
                "normalized": True,
                "saturation": ref.saturation,
                "saturation_params": dict(ref.saturation_params),
                "beta": ref.beta,
                **{k: float(v) for k, v in pooled.loc[name].items()},
                "by_market": {
                    m: {
                        "beta": self.truth.channel(name, m).beta,
                        "saturation_params": dict(self.truth.channel(name, m).saturation_params),
                        # Only in worlds whose markets differ beyond size: default truth files stay.
                        **({"alpha": self.truth.channel(name, m).alpha} if self.truth.variation else {}),
                        **{k: float(v) for k, v in by_market[m].loc[name].items()},
                    }
                    for m in self.markets
                },
            }
        dates = self.dates
        return {
            "seed": self.seed,
            "kpi": self.kpi_name,
            "start": dates[0].date().isoformat(),
            "n_weeks": self.n_weeks,
            "week_start": self.week_start,
            "roas_definition": "total true contribution over the window / total spend over the window",
            "media_response": "multiplier(t) * beta * saturation(adstock(spend)); saturation params in "
            "currency of weekly adstocked spend; adstock weights normalized to sum 1",
            "markets": {
                m: {
                    "scale": scale,
                    "baseline": _BASELINE * scale,
                    "trend_per_week": _BASELINE * scale * self.truth.trend_per_year / WEEKS_PER_YEAR,
                    "noise_sd": self.truth.noise_sd[m],
                }
                for m, scale in self.truth.market_scale.items()
            },
            "channels": channels,
            "controls": {
                c: {
                    "reference": ref,
                    "coef": {m: self.truth.control_coef[m][c] for m in self.markets},
                }
                for c, ref in self.truth.control_reference.items()
            },
            # Only in worlds with the categorical control, so that default truth files stay as they were.
            **(
                {
                    "categorical_controls": {
                        EVENT_CONTROL: {
                            "baseline": _EVENT_NO_LABEL,
                            "effect": {
                                label: {m: effect * s for m, s in self.truth.market_scale.items()}
                                for label, effect in self.truth.event_effects.items()
                            },
                        }
                    }
                }
                if self.truth.event_effects
                else {}
            ),
            "breaks": [
                {
                    "channel": b.channel,
                    "week_index": b.week_index,
                    "date": dates[b.week_index].date().isoformat(),
                    "effect_multiplier": b.effect_multiplier,
                }
                for b in self.truth.breaks
            ],
        }

    def _market(self, market: str | None) -> str:
        if market is None:
            if len(self.markets) != 1:
                raise ValueError(f"this world has markets {self.markets}; name one")
            return self.markets[0]
        if market not in self.truth.market_scale:
            raise ValueError(f"unknown market {market!r}; known: {self.markets}")
        return market


def generate_world(
    seed: int = 0,
    n_weeks: int = 156,
    start: dt.date | str | None = None,
    week_start: str = "monday",
    markets: Sequence[str] = ("all",),
    breaks: Sequence[Break] = (),
    kpi_name: str = "sales",
    lift_tests_per_channel: int = 0,
    *,
    channels: Sequence[str] | None = None,
    spend_patterns: Mapping[str, SpendPattern] | None = None,
    noise_share: float = _NOISE_SHARE,
    controls: Sequence[str] | None = None,
    event_control: bool = False,
    seasonal_amplitude: float = _SEASONAL_AMPLITUDE,
    trend_per_year: float = _TREND_PER_YEAR,
    market_scales: Mapping[str, float] | None = None,
    market_noise: Mapping[str, float] | None = None,
    market_variation: float = 0.0,
) -> SyntheticWorld:
    """Generate a world, deterministic given the arguments.

    ``lift_tests_per_channel`` > 0 adds that many experiments per channel and market
    (:func:`design_lift_tests`); they are drawn from their own random stream, so the rest of the world
    is the same with or without them.

    The world's shape, so that a benchmark can try the pipeline on worlds it was not tuned on (every
    option at its default gives the default world, byte for byte): ``channels`` names the channel
    archetypes, in order (default :data:`DEFAULT_CHANNELS`; ``ooh``, ``video`` and ``affiliate`` are
    the others); ``spend_patterns`` buys a channel another way (``{"search": "flighting"}``);
    ``noise_share`` is the weekly noise sd as a share of the baseline; ``controls`` keeps a subset of
    ``competitor_spend``, ``macro_index``, ``price`` (``()``: none, and no control effect in the KPI);
    ``event_control`` adds the categorical control :data:`EVENT_CONTROL` (a label a week: 'na' most
    weeks, 'sale' or 'launch' in some, each with its own effect); ``seasonal_amplitude`` and
    ``trend_per_year`` size the baseline's yearly cycle and growth as shares of the baseline (0: none).
    The default channels' spend and all numeric controls and noise always come from the market's main
    random stream, drawn as in the default world; channels bought otherwise or not in the default set
    draw from a second stream ``(seed, i, 1)`` and event labels from a third ``(seed, i, 2)``. So a
    subset of the default channels, another noise level or fewer controls keep the rest of the world.

    ``start`` must be a ``week_start`` weekday; by default it is the first such day on or after
    2022-01-03. Market ``i`` draws from its own random stream seeded by ``(seed, i)``; the first market
    has scale 1, the others a random scale in ``[0.4, 1.6]``. Breaks do not change any random draw, so a
    world with a break differs from the same world without it only by the changed media effect.

    Many markets (issue 17): ``market_scales`` gives markets their sizes instead (the random scale is
    still drawn, so nothing else moves); ``market_noise`` a market's own ``noise_share``; and
    ``market_variation`` > 0 makes each channel work differently in each market beyond its size
    (:class:`MarketVariation`): its effect and the spend scale of its curve are multiplied by
    ``exp(N(0, market_variation))`` and its adstock decay moved by ``N(0, market_variation / 2)`` on
    the logit scale, drawn from a fourth stream ``(seed, i, 3)`` (0: none, the world as without it).
    The pooled ROAS over markets is calibrated to each channel's target with the variations in force.
    """
    week_start = week_start.lower()
    if week_start not in WEEKDAYS:
        raise ValueError(f"week_start must be one of {WEEKDAYS}, got {week_start!r}")
    if start is None:
        start = DEFAULT_START + dt.timedelta(days=(WEEKDAYS.index(week_start) - DEFAULT_START.weekday()) % 7)
    start = pd.Timestamp(start).date()
    if start.weekday() != WEEKDAYS.index(week_start):
        raise ValueError(f"start {start} is a {WEEKDAYS[start.weekday()]}, not a {week_start}")
    if n_weeks < 4:
        raise ValueError("n_weeks must be at least 4 (every flighted channel starts a flight by week 4)")
    markets = list(markets)
    for name in [*markets, kpi_name]:
        if not IDENTIFIER.match(name):
            raise ValueError(f"{name!r} is not a lower-case identifier")
    if not markets or len(set(markets)) != len(markets):
        raise ValueError(f"markets must be a non-empty list of distinct names, got {markets}")
    channels = list(DEFAULT_CHANNELS if channels is None else channels)
    if not channels or len(set(channels)) != len(channels) or not set(channels) <= set(_CHANNELS):
        raise ValueError(f"channels must be distinct names out of {list(_CHANNELS)}, got {channels}")
    setups = {c: _CHANNELS[c] for c in channels}
    for c, pattern in (spend_patterns or {}).items():
        if c not in setups or pattern not in ("flighting", "always_on", "variable"):
            raise ValueError(
                f"spend_patterns: {c!r}: {pattern!r} must map one of {channels} to "
                "'flighting', 'always_on' or 'variable'"
            )
        setups[c] = replace(setups[c], pattern=pattern)
    controls = list(_CONTROL_COEF if controls is None else controls)
    if len(set(controls)) != len(controls) or not set(controls) <= set(_CONTROL_COEF):
        raise ValueError(f"controls must be distinct names out of {list(_CONTROL_COEF)}, got {controls}")
    if not (noise_share >= 0 and np.isfinite([noise_share, seasonal_amplitude, trend_per_year]).all()):
        raise ValueError("noise_share must be >= 0; seasonal_amplitude and trend_per_year finite")
    for option, values in (("market_scales", market_scales), ("market_noise", market_noise)):
        unknown = sorted(set(values or {}) - set(markets))
        if unknown:
            raise ValueError(f"{option} names markets {unknown} that are not in markets {markets}")
        bad = {m: v for m, v in (values or {}).items() if not (np.isfinite(v) and v >= 0)}
        if bad or (option == "market_scales" and any(v == 0 for v in (values or {}).values())):
            raise ValueError(
                f"{option} must be positive (scales) or non-negative (noise), got {bad or values}"
            )
    if not (np.isfinite(market_variation) and market_variation >= 0):
        raise ValueError(f"market_variation must be >= 0, got {market_variation}")
    for b in breaks:
        if b.channel not in channels or not 0 <= b.week_index < n_weeks or b.effect_multiplier < 0:
            raise ValueError(
                f"invalid {b}: channel must be one of {channels}, week_index in 0..{n_weeks - 1}"
            )

    dates = pd.date_range(start, periods=n_weeks, freq="7D")
    years = np.arange(n_weeks) / WEEKS_PER_YEAR
    season = _season_shape(dates)
    drawn = {}
    for i, market in enumerate(markets):
        rng = np.random.default_rng([seed, i])
        scale = 1.0 if i == 0 else round(float(rng.uniform(0.4, 1.6)), 3)
        scale = float((market_scales or {}).get(market, scale))
        drawn[market] = _draw_market(rng, np.random.default_rng([seed, i, 1]), scale, season, years, setups)
        if event_control:
            labels = _event_labels(np.random.default_rng([seed, i, 2]), n_weeks)
            drawn[market]["controls"][EVENT_CONTROL] = labels

    variation = {
        m: _draw_variation(np.random.default_rng([seed, i, 3]), channels, market_variation)
        for i, m in enumerate(markets)
        if market_variation > 0
    }
    # Calibrate beta: pooled true ROAS over the window equals the target before any break.
    unit = {
        m: _media_response(
            [_in_market(_unit_truth(name), d["scale"], variation.get(m, {}).get(name)) for name in channels],
            d["spend"],
            history=None,
        )
        for m, d in drawn.items()
    }
    total_spend = sum(d["spend"].sum(axis=0) for d in drawn.values())
    total_unit = sum(u.sum(axis=0) for u in unit.values())
    target = np.array([_CHANNELS[c].target_roas for c in channels])
    betas = target * total_spend / total_unit
    truths = {c: replace(_unit_truth(c), beta=float(b)) for c, b in zip(channels, betas, strict=True)}
    multiplier = _multiplier(tuple(breaks), channels, np.arange(n_weeks))

    media, kpi, control_rows, decomposition = [], [], [], []
    control_coef, noise_sd = {}, {}
    for market, d in drawn.items():
        scale = d["scale"]
        coef = {c: _CONTROL_COEF[c] * (scale if _CONTROL_COEF_SCALES[c] else 1.0) for c in controls}
        share = (market_noise or {}).get(market, noise_share)
        control_coef[market], noise_sd[market] = coef, share * _BASELINE * scale
        parts = {
            "baseline": np.full(n_weeks, _BASELINE * scale),
            "trend": _BASELINE * scale * trend_per_year * years,
            "seasonality": _BASELINE * scale * seasonal_amplitude * season,
        }
        d["controls"] = {c: v for c, v in d["controls"].items() if c in controls or c == EVENT_CONTROL}
        for c, values in d["controls"].items():
            if c == EVENT_CONTROL:
                effect = {label: share * _BASELINE * scale for label, (_, share) in _EVENT_LABELS.items()}
                parts[c] = np.array([effect.get(label, 0.0) for label in values])
            else:
                parts[c] = coef[c] * (values - _CONTROL_REFERENCE[c]) + 0.0  # + 0.0: no "-0.0" in files
        contribution = multiplier * unit[market] * betas
        parts.update(zip(channels, contribution.T, strict=True))
        expected = sum(parts.values())
        sales = np.round(expected + noise_sd[market] * d["noise"], 2)
        parts["noise"] = sales - expected
        parts[kpi_name] = sales
        decomposition.append(pd.DataFrame({"date": dates, "market": market, **parts}))
        kpi.append(pd.DataFrame({"date": dates, kpi_name: sales, "market": market}))
        media.append(_long(dates, channels, {"spend": d["spend"], "impressions": d["impressions"]}, market))
        control_names = list(d["controls"])
        if control_names:
            values = np.column_stack(list(d["controls"].values()))  # object dtype with event labels
            control_rows.append(_long(dates, control_names, {"value": values}, market, key="control"))

    truth = Truth(
        channels=truths,
        market_scale={m: d["scale"] for m, d in drawn.items()},
        control_reference={c: _CONTROL_REFERENCE[c] for c in controls},
        control_coef=control_coef,
        breaks=tuple(breaks),
        noise_sd=noise_sd,
        decomposition=pd.concat(decomposition, ignore_index=True),
        trend_per_year=trend_per_year,
        seasonal_amplitude=seasonal_amplitude,
        event_effects=(
            {label: share * _BASELINE for label, (_, share) in _EVENT_LABELS.items()} if event_control else {}
        ),
        variation=variation,
    )
    world = SyntheticWorld(
        media=pd.concat(media, ignore_index=True),
        kpi=pd.concat(kpi, ignore_index=True),
        controls=(
            pd.concat(control_rows, ignore_index=True)
            if control_rows
            else pd.DataFrame(columns=["date", "control", "value", "market"])
        ),
        truth=truth,
        seed=seed,
        week_start=week_start,
        kpi_name=kpi_name,
        channels=channels,
    )
    if lift_tests_per_channel > 0:
        world.lift_tests = design_lift_tests(world, lift_tests_per_channel)
    return world


#: Spend changes of a channel's successive lift tests, as shares of its typical active week: a spend-up
#: test first, then a spend-down one, then bigger changes; the curve is seen on both sides of today.
_LIFT_TEST_CHANGES = (0.5, -0.5, 1.0, -1.0)


def design_lift_tests(world: SyntheticWorld, per_channel: int) -> pd.DataFrame:
    """Experiments as a marketing team runs them, with results drawn from the true response.

    Each channel gets ``per_channel`` tests in every market, spread over the last year: at the channel's
    typical active weekly spend (mean of its weeks with spend in the last 52), the spend is changed by
    the shares in :data:`_LIFT_TEST_CHANGES` (+50%, -50%, +100%, off) for 4-8 weeks. The reported lift
    is the true sustained weekly effect of that change (the steady-state curve, with the channel's
    effect after any break up to the test's end) plus measurement noise whose standard error, also
    reported, is the market's weekly KPI noise over the square root of the test's weeks: a test reads
    the KPI as precisely as the weekly data do, only at a spend the history may not have.
    """
    if not 1 <= per_channel <= len(_LIFT_TEST_CHANGES):
        raise ValueError(f"per_channel must be in 1..{len(_LIFT_TEST_CHANGES)}, got {per_channel}")
    rng = np.random.default_rng([world.seed, 7919])
    dates = world.dates
    rows = []
    for market in world.markets:
        spend = world.spend_matrix(market)[-52:]
        for c, name in enumerate(world.channels):
            active = spend[:, c][spend[:, c] > 0]
            level = float(active.mean()) if active.size else 0.0
            truth = world.truth.channel(name, market)
            for k in range(per_channel):
                weeks = int(rng.integers(4, 9))
                end = int(rng.integers(max(weeks - 1, len(dates) - 52), len(dates)))
                own = [b for b in world.truth.breaks if b.channel == name]
                after = _multiplier(own, [name], np.array([end]))[0, 0]
                delta = level * _LIFT_TEST_CHANGES[k]
                lift = after * float(
                    truth.steady_state(np.array([level + delta]))[0]
                    - truth.steady_state(np.array([level]))[0]
                )
                se = world.truth.noise_sd[market] / np.sqrt(weeks)
                rows.append(
                    {
                        "market": market, "channel": name,
                        "start_date": dates[end - weeks + 1], "end_date": dates[end],
                        "spend": round(level, 2), "delta_spend": round(delta, 2),
                        "lift": round(lift + se * float(rng.normal()), 2), "lift_se": round(se, 2),
                    }
                )  # fmt: skip
    return pd.DataFrame(rows).sort_values(["market", "end_date", "channel"], ignore_index=True)


def write_world(
    world: SyntheticWorld, landing_dir: str | Path, truth_dir: str | Path, split_by_week: bool = False
) -> dict[str, Path]:
    """Write the landing files and the truth; returns the paths by kind.

    Landing: ``media/``, ``kpi/`` and ``controls/`` folders (the returned paths for those kinds), each
    with one CSV (``media/media.csv``) or, with ``split_by_week``, one CSV per week
    (``media/media_2022-01-03.csv``), which is how weekly deliveries arrive; a world with lift tests adds
    ``lift_tests/lift_tests.csv``. Truth: ``truth.json``
    (parameters, ROAS, shares, breaks) and ``contributions.csv`` (the weekly decomposition).
    """
    landing_dir, truth_dir = Path(landing_dir), Path(truth_dir)
    paths: dict[str, Path] = {}
    for kind, frame in (("media", world.media), ("kpi", world.kpi), ("controls", world.controls)):
        if frame.empty:  # a world without controls delivers no control file
            continue
        folder = paths[kind] = landing_dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        if split_by_week:
            for date, week in frame.groupby("date"):
                _write_csv(week, folder / f"{kind}_{date.date().isoformat()}.csv")
        else:
            _write_csv(frame, folder / f"{kind}.csv")
    if world.lift_tests is not None and not world.lift_tests.empty:
        folder = paths["lift_tests"] = landing_dir / "lift_tests"
        folder.mkdir(parents=True, exist_ok=True)
        _write_csv(world.lift_tests, folder / "lift_tests.csv")
    truth_dir.mkdir(parents=True, exist_ok=True)
    paths["truth"] = truth_dir / "truth.json"
    paths["truth"].write_text(json.dumps(world.truth_dict(), indent=2) + "\n")
    paths["contributions"] = truth_dir / "contributions.csv"
    _write_csv(world.truth.decomposition, paths["contributions"])
    return paths


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, date_format="%Y-%m-%d")


def _draw_variation(
    rng: np.random.Generator, channels: Sequence[str], spread: float
) -> dict[str, MarketVariation]:
    """One market's :class:`MarketVariation` per channel: log-normal effect and curve multipliers around 1
    (log sd ``spread``) and the decay moved on the logit scale (sd ``spread / 2``)."""
    out = {}
    for name in channels:
        effect, curve, shift = rng.normal(0.0, [spread, spread, spread / 2])
        logit = np.log(_CHANNELS[name].alpha / (1 - _CHANNELS[name].alpha)) + shift
        out[name] = MarketVariation(
            effect=round(float(np.exp(effect)), 4),
            curve=round(float(np.exp(curve)), 4),
            alpha=round(float(1 / (1 + np.exp(-logit))), 4),
        )
    return out


def _in_market(truth: ChannelTruth, scale: float, variation: MarketVariation | None) -> ChannelTruth:
    """``truth`` in a market of size ``scale`` with its own variation (if any), as :meth:`Truth.channel`."""
    truth = truth.in_market(scale)
    return truth if variation is None else variation.apply(truth)


def _unit_truth(name: str) -> ChannelTruth:
    """A channel's true response with ``beta = 1`` (beta is calibrated afterwards)."""
    setup = _CHANNELS[name]
    return ChannelTruth(
        name, "geometric", setup.alpha, setup.l_max, setup.saturation, dict(setup.saturation_params), 1.0
    )


def _media_response(
    truths: Sequence[ChannelTruth], spend: np.ndarray, history: np.ndarray | None
) -> np.ndarray:
    """``(T, C)`` contributions (no breaks) of a ``(T, C)`` plan; ``history`` ``(H, C)`` carries over."""
    columns = [
        t.response(spend[:, i], None if history is None else history[:, i]) for i, t in enumerate(truths)
    ]
    return np.column_stack(columns)


def _multiplier(breaks: Sequence[Break], channels: Sequence[str], weeks: np.ndarray) -> np.ndarray:
    """``(len(weeks), C)`` effect multipliers: the product of all breaks that started by each week."""
    multiplier = np.ones((len(weeks), len(channels)))
    for b in breaks:
        multiplier[weeks >= b.week_index, channels.index(b.channel)] *= b.effect_multiplier
    return multiplier


def _season_shape(dates: pd.DatetimeIndex) -> np.ndarray:
    """Yearly shape in about [-1, 1], anchored on the calendar: a December peak and a small summer bump."""
    day = dates.dayofyear.to_numpy()
    shape = np.cos(2 * np.pi * (day - 350) / 365.25) + 0.3 * np.cos(4 * np.pi * (day - 190) / 365.25)
    return shape / 1.3


def _draw_market(
    rng: np.random.Generator,
    other_rng: np.random.Generator,
    scale: float,
    season: np.ndarray,
    years: np.ndarray,
    setups: Mapping[str, _Setup],
) -> dict:
    """All random draws of one market: spend and impressions of the ``setups`` channels, controls, noise.

    ``rng`` draws, in a fixed order, the default channels' spend and impressions as the default world
    buys them, then the controls and the noise, whatever ``setups`` asks for: so a world of another
    shape keeps the default world's controls, noise and (where bought the same way) spend. A channel not
    in the default set, or bought another way, draws from ``other_rng``, in ``setups`` order.
    """
    n = len(season)
    default = [_CHANNELS[c] for c in DEFAULT_CHANNELS]
    spend = np.column_stack([_spend(rng, s.pattern, s.level * scale, season) for s in default]).round(2)
    # Impressions at a noisy, slowly inflating price per thousand impressions.
    cpm = np.array([s.cpm for s in default])
    price = cpm * np.exp(rng.normal(0, 0.08, spend.shape)) * (1 + 0.03 * years)[:, None]
    impressions = np.round(spend / price * 1000).astype(np.int64)
    spend_of = dict(zip(DEFAULT_CHANNELS, spend.T, strict=True))
    impressions_of = dict(zip(DEFAULT_CHANNELS, impressions.T, strict=True))
    for name, setup in setups.items():
        if name in DEFAULT_CHANNELS and setup == _CHANNELS[name]:
            continue
        spend_of[name] = _spend(other_rng, setup.pattern, setup.level * scale, season).round(2)
        own_price = setup.cpm * np.exp(other_rng.normal(0, 0.08, n)) * (1 + 0.03 * years)
        impressions_of[name] = np.round(spend_of[name] / own_price * 1000).astype(np.int64)
    spend = np.column_stack([spend_of[c] for c in setups])
    impressions = np.column_stack([impressions_of[c] for c in setups])
    promo = rng.random(n) < 0.1
    controls = {
        "competitor_spend": _spend(rng, "flighting", 60_000 * scale, season).round(2),
        "macro_index": (100 + lfilter([1.0], [1.0, -0.97], rng.normal(0, 0.6, n))).round(2),
        "price": (10 * (1 + 0.03 * years) * np.where(promo, rng.uniform(0.8, 0.9, n), 1.0)).round(2),
    }
    return {
        "scale": scale,
        "spend": spend,
        "impressions": impressions,
        "controls": controls,
        "noise": rng.standard_normal(n),
    }


def _event_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """A label a week for :data:`EVENT_CONTROL`: each label in its share of weeks, 'na' in the rest."""
    labels = np.full(n, _EVENT_NO_LABEL, dtype=object)
    u = rng.random(n)
    low = 0.0
    for label, (share, _) in _EVENT_LABELS.items():
        labels[(u >= low) & (u < low + share)] = label
        low += share
    return labels


def _spend(rng: np.random.Generator, pattern: SpendPattern, level: float, season: np.ndarray) -> np.ndarray:
    """A weekly spend series that looks like a media plan; ``level`` is the typical spend of an active week.

    ``flighting``: bursts of 3-8 weeks at varying levels, separated by 2-8 dark weeks (first burst within
    4 weeks). ``always_on``: every week, following demand (seasonality) with slow drift. ``variable``:
    every week, slowly drifting level plus occasional pushes. Varying levels make saturation identifiable.
    """
    n = len(season)
    if pattern == "flighting":
        bursts = np.zeros(n)
        week = int(rng.integers(0, 4))
        while week < n:
            length = int(rng.integers(3, 9))
            bursts[week : week + length] = rng.uniform(0.5, 1.6)
            week += length + int(rng.integers(2, 9))
        return level * bursts * rng.lognormal(0, 0.1, n)
    drift = lfilter([1.0], [1.0, -0.8], rng.normal(0, 0.12, n))  # AR(1) on the log level
    if pattern == "always_on":
        return level * (1 + 0.2 * season) * np.exp(drift)
    pushes = np.where(rng.random(n) < 0.12, rng.uniform(1.5, 2.5, n), 1.0)
    return level * np.exp(2 * drift) * pushes


def _long(
    dates: pd.DatetimeIndex,
    names: list[str],
    values: dict[str, np.ndarray],
    market: str,
    key: str = "channel",
) -> pd.DataFrame:
    """Wide ``(T, K)`` arrays to landing rows ``date, <key>, <value columns...>, market``."""
    n, k = len(dates), len(names)
    return pd.DataFrame(
        {
            "date": np.repeat(dates, k),
            key: np.tile(names, n),
            **{column: array.reshape(n * k) for column, array in values.items()},
            "market": market,
        }
    )
