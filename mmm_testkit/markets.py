"""Many-market worlds with known per-market truth, for the hierarchical model (issue 17).

Why: pooling markets only pays where a market's own data say little, and whether it pays can only be
measured where each market's true ROAS and curves are known. A geo world is a
:func:`~mmm_testkit.synthetic.generate_world` world whose markets share channel behaviour with
market-level variation (:class:`~mmm_testkit.synthetic.MarketVariation`: effect, curve and decay drawn
around the national channel), most of them of ordinary size and noise, and some small and noisy: a
small market whose weekly KPI noise is several times the usual share of its baseline, as the KPI of a
single region or DMA is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmm_testkit.synthetic import SyntheticWorld, generate_world

#: The five channels of a geo world (the issue's 5-channel shape): one of each buying pattern and both
#: curve families.
GEO_CHANNELS = ("tv", "search", "display", "social", "radio")
#: Weekly noise sd as a share of the baseline: ordinary markets (the default world's) and noisy ones.
ORDINARY_NOISE = 0.02
NOISY_NOISE = 0.08


@dataclass
class GeoWorld:
    """A many-market world and which of its markets are the small, noisy ones."""

    world: SyntheticWorld
    noisy: tuple[str, ...]

    @property
    def markets(self) -> list[str]:
        return self.world.markets

    def true_roas(self) -> pd.DataFrame:
        """True ROAS over the window per market, channel: ``market, channel, spend, contribution, roas``."""
        frames = [
            self.world.summary(m)[["spend", "contribution", "roas"]]
            .rename_axis("channel")
            .reset_index()
            .assign(market=m)
            for m in self.markets
        ]
        table = pd.concat(frames, ignore_index=True)
        return table[["market", "channel", "spend", "contribution", "roas"]]

    def true_curve(self, market: str, weekly_spend: np.ndarray) -> np.ndarray:
        """True steady-state contribution ``(G, C)`` of constant weekly spends ``(G, C)`` in ``market``."""
        truths = [self.world.truth.channel(c, market) for c in self.world.channels]
        spend = np.asarray(weekly_spend, dtype=float)
        return np.column_stack([t.steady_state(spend[:, i]) for i, t in enumerate(truths)])


def market_names(n_markets: int) -> list[str]:
    """``m01, m02, ...`` (zero-padded so that names sort in order)."""
    width = max(2, len(str(n_markets)))
    return [f"m{i + 1:0{width}d}" for i in range(n_markets)]


def generate_geo_world(
    n_markets: int,
    seed: int = 0,
    n_weeks: int = 156,
    *,
    channels: Sequence[str] = GEO_CHANNELS,
    noisy_share: float = 0.3,
    variation: float = 0.2,
    noise_share: float = ORDINARY_NOISE,
    noisy_noise_share: float = NOISY_NOISE,
    lift_tests_per_channel: int = 0,
) -> GeoWorld:
    """A world of ``n_markets`` markets, deterministic given the arguments.

    Sizes: ordinary markets ``exp(N(0, 0.5))`` times the reference (clipped to ``[0.3, 3]``), the
    ``round(noisy_share * n_markets)`` noisy ones (at least one when ``noisy_share > 0``, chosen at
    random) ``U(0.1, 0.3)`` with weekly noise ``noisy_noise_share`` of their baseline instead of
    ``noise_share``. Channel behaviour varies by market with log sd ``variation``
    (:func:`~mmm_testkit.synthetic.generate_world`'s ``market_variation``). Sizes and the noisy markets
    come from their own random stream ``(seed, 104729)``; everything else as ``generate_world`` draws it.
    """
    if n_markets < 1:
        raise ValueError(f"n_markets must be at least 1, got {n_markets}")
    if not 0 <= noisy_share <= 1:
        raise ValueError(f"noisy_share must be in [0, 1], got {noisy_share}")
    markets = market_names(n_markets)
    rng = np.random.default_rng([seed, 104729])
    n_noisy = max(1, round(noisy_share * n_markets)) if noisy_share > 0 else 0
    noisy = sorted(rng.choice(markets, size=n_noisy, replace=False).tolist()) if n_noisy else []
    ordinary_scale = np.clip(np.exp(rng.normal(0.0, 0.5, n_markets)), 0.3, 3.0)
    small_scale = rng.uniform(0.1, 0.3, n_markets)
    scales = {
        m: round(float(small_scale[i] if m in noisy else ordinary_scale[i]), 3) for i, m in enumerate(markets)
    }
    world = generate_world(
        seed=seed,
        n_weeks=n_weeks,
        markets=markets,
        channels=list(channels),
        noise_share=noise_share,
        market_scales=scales,
        market_noise={m: noisy_noise_share for m in noisy},
        market_variation=variation,
        lift_tests_per_channel=lift_tests_per_channel,
    )
    return GeoWorld(world, tuple(noisy))
