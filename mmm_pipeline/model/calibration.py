"""Lift tests: experiment results that calibrate the media response curves.

Why: a channel's weekly data pin down how much its contribution moves, but rarely how its curve bends.
Flighted channels run at a few levels, always-on ones near one level, so the posterior curvature of most
channels stays what the prior said (``benchmarks/README.md``, decision quality), and the budget
recommendation follows the prior. An experiment (a geo holdout, a spend-up test) measures what a spend
change does at a known point of the curve: exactly the information the observational data lack. This is
the calibration Meridian, Robyn and PyMC-Marketing offer, stated the same way as PyMC-Marketing's lift
tests.

A lift test says: in ``market``, with ``channel`` spending ``spend`` a week, changing it by
``delta_spend`` a week changed the KPI by ``lift`` a week (standard error ``lift_se``), once the new
level had run long enough for the carry-over to build up. In the model::

    lift ~ Normal(beta_c * (saturation_c((spend + delta_spend) / s_c) - saturation_c(spend / s_c)), lift_se)

in scaled KPI units (everything divided by the KPI scale). A test that ran too briefly for a long
carry-over understates the sustained lift; report the sustained weekly effect, or a longer test.

Only tests that ended by the end of a fit's last week enter it, so time-slice cross-validation sees no
experiment from its test weeks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmm_pipeline.metrics import hdi

#: Lift-test rows are padded to a multiple of this, so a new test rarely changes the compiled graph.
PAD_TESTS_TO = 8

@dataclass(frozen=True)
class LiftTests:
    """Lift tests of one market, raw units (currency a week, KPI a week); one entry per test."""

    channel: tuple[str, ...]
    end_date: pd.DatetimeIndex
    spend: np.ndarray
    delta_spend: np.ndarray
    lift: np.ndarray
    lift_se: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.channel)
        arrays = (self.spend, self.delta_spend, self.lift, self.lift_se)
        if len(self.end_date) != n or any(np.shape(a) != (n,) for a in arrays):
            raise ValueError("every lift-test field needs one value per test")
        if not all(np.isfinite(a).all() for a in arrays):
            raise ValueError("lift-test values must be finite")
        if (self.spend < 0).any() or (self.spend + self.delta_spend < 0).any():
            raise ValueError("lift-test spend and spend + delta_spend must be non-negative")
        if (self.delta_spend == 0).any():
            raise ValueError("a lift test needs a non-zero delta_spend")
        if (self.lift_se <= 0).any():
            raise ValueError("lift_se must be positive")

    @classmethod
    def empty(cls) -> LiftTests:
        return cls((), pd.DatetimeIndex([]), *(np.zeros(0) for _ in range(4)))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, market: str | None = None) -> LiftTests:
        """From a lift-test table (:data:`mmm_pipeline.ingest.contract.LIFT_TEST_COLUMNS`); ``market``
        keeps that market's rows."""
        if market is not None and "market" in frame.columns:
            frame = frame[frame["market"] == market]
        frame = frame.sort_values(["end_date", "channel"])
        return cls(
            tuple(frame["channel"].astype(str)),
            pd.DatetimeIndex(pd.to_datetime(frame["end_date"])),
            *(frame[c].to_numpy(dtype=float) for c in ("spend", "delta_spend", "lift", "lift_se")),
        )

    def __len__(self) -> int:
        return len(self.channel)

    def ended_by(self, last_week: pd.Timestamp | str) -> LiftTests:
        """The tests that ended by the end of the week starting ``last_week`` (a fit's last week)."""
        keep = np.asarray(self.end_date < pd.Timestamp(last_week) + pd.Timedelta(days=7))
        return LiftTests(
            tuple(c for c, k in zip(self.channel, keep, strict=True) if k),
            self.end_date[keep],
            self.spend[keep], self.delta_spend[keep], self.lift[keep], self.lift_se[keep],
        )  # fmt: skip

    def inputs(
        self, channels: Sequence[str], spend_scale: Sequence[float], kpi_scale: float, n_rows: int
    ) -> dict[str, np.ndarray]:
        """Scaled values of the model's lift-test containers, padded to ``n_rows`` (masked rows).

        Raises ``ValueError`` naming a test's channel the model does not have.
        """
        unknown = sorted(set(self.channel) - set(channels))
        if unknown:
            raise ValueError(f"lift tests name channels the model does not have: {unknown}")
        if n_rows < len(self):
            raise ValueError(f"{len(self)} lift tests do not fit in {n_rows} rows")
        index = np.array([list(channels).index(c) for c in self.channel], dtype=int)
        scale = np.asarray(spend_scale, dtype=float)[index]
        pad = n_rows - len(self)

        def padded(values: np.ndarray, fill: float) -> np.ndarray:
            return np.concatenate([values, np.full(pad, fill)])

        return {
            "lift_channel": np.concatenate([index, np.zeros(pad, dtype=int)]),
            "lift_x": padded(self.spend / scale, 0.0),
            "lift_x_new": padded((self.spend + self.delta_spend) / scale, 1.0),
            "lift_y": padded(self.lift / kpi_scale, 0.0),
            "lift_se": padded(self.lift_se / kpi_scale, 1.0),
            "lift_mask": padded(np.ones(len(self)), 0.0),
        }


def padded_tests(n_tests: int) -> int:
    """Rows the lift-test containers get for ``n_tests`` tests: 0 for none, else a multiple of 8."""
    return math.ceil(n_tests / PAD_TESTS_TO) * PAD_TESTS_TO


def lift_test_agreement(
    expected: np.ndarray, tests: LiftTests, kpi_scale: float, prob: float = 0.94
) -> pd.DataFrame:
    """How well a fit agrees with the lift tests it was calibrated with, one row per test.

    ``expected`` ``(S, n_rows)``: posterior draws of the model's ``lift_expected`` (scaled KPI, padded
    rows after the tests). ``z`` is the measured lift's distance from the fitted one in units of both
    uncertainties together (``sqrt(sd_fit^2 + lift_se^2)``): beyond about 3 the experiment and the
    weekly data disagree (a test mis-read, a channel whose effect changed, a curve family that cannot
    bend as the test says), which a user should see before trusting either.
    """
    draws = np.asarray(expected, dtype=float)[:, : len(tests)] * kpi_scale
    mean, sd = draws.mean(axis=0), draws.std(axis=0)
    bounds = hdi(draws, prob) if len(tests) else np.zeros((0, 2))
    return pd.DataFrame(
        {
            "channel": list(tests.channel),
            "end_date": tests.end_date.date,
            "spend": tests.spend,
            "delta_spend": tests.delta_spend,
            "lift": tests.lift,
            "lift_se": tests.lift_se,
            "fitted_mean": mean,
            "fitted_hdi_low": bounds[:, 0],
            "fitted_hdi_high": bounds[:, 1],
            "z": (tests.lift - mean) / np.sqrt(sd**2 + tests.lift_se**2),
        }
    )
