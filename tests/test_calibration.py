"""Lift-test calibration: the tests' rules, and a real fit that the experiments pin to the true curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmm_pipeline.model.calibration import LiftTests, lift_test_agreement, padded_tests
from mmm_pipeline.model.fit import fit
from mmm_pipeline.model.spec import ModelSpec, SamplerSpec
from mmm_pipeline.optimize import ResponseModel
from mmm_testkit.adapters import model_data, true_response
from mmm_testkit.synthetic import generate_world

SPEC = ModelSpec(l_max=8, n_fourier=2, sampler=SamplerSpec(chains=2, draws=300, tune=300, seed=1))


def _tests(**changes: object) -> LiftTests:
    fields = {
        "channel": ("tv", "search"),
        "end_date": pd.DatetimeIndex(["2024-03-04", "2024-10-07"]),
        "spend": np.array([100_000.0, 30_000.0]),
        "delta_spend": np.array([50_000.0, -15_000.0]),
        "lift": np.array([40_000.0, -20_000.0]),
        "lift_se": np.array([8_000.0, 8_000.0]),
    }
    return LiftTests(**(fields | changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lift_se": np.array([8_000.0, 0.0])}, "lift_se must be positive"),
        ({"delta_spend": np.array([50_000.0, 0.0])}, "non-zero delta_spend"),
        ({"delta_spend": np.array([50_000.0, -40_000.0])}, "non-negative"),
        ({"lift": np.array([np.nan, 1.0])}, "finite"),
        ({"spend": np.array([1.0])}, "one value per test"),
    ],
)
def test_lift_tests_reject_impossible_experiments(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _tests(**changes)


def test_only_tests_that_ended_within_the_window_are_kept() -> None:
    tests = _tests()
    assert tests.ended_by("2024-06-24").channel == ("tv",)
    assert len(tests.ended_by("2024-02-26")) == 0  # the week of 2024-02-26 ends before 2024-03-04
    assert len(tests.ended_by("2024-10-07")) == 2
    assert len(tests.ended_by("2024-10-01")) == 2  # the week starting Oct 1 holds Oct 7


def test_inputs_are_scaled_padded_and_name_unknown_channels() -> None:
    tests = _tests()
    inputs = tests.inputs(["search", "tv"], [60_000.0, 200_000.0], 2_000_000.0, padded_tests(len(tests)))
    assert padded_tests(2) == 8 and padded_tests(0) == 0
    assert inputs["lift_channel"][:2].tolist() == [1, 0]
    np.testing.assert_allclose(inputs["lift_x"][:2], [0.5, 0.5])
    np.testing.assert_allclose(inputs["lift_x_new"][:2], [0.75, 0.25])
    np.testing.assert_allclose(inputs["lift_y"][:2], [0.02, -0.01])
    assert inputs["lift_mask"].tolist() == [1, 1] + [0] * 6
    with pytest.raises(ValueError, match=r"channels the model does not have: \['tv'\]"):
        tests.inputs(["search"], [60_000.0], 2_000_000.0, 8)


@pytest.mark.slow  # two fits on a graph of its own (35 s of compiling); the default suite checks each
# pipeline fit against its lift tests (tests/test_lift_tests_pipeline.py, the lift_tests_agree check)
def test_precise_lift_tests_pin_the_fitted_curves_to_the_truth() -> None:
    """Experiments at two spend levels per channel, read without noise and with a small standard error,
    leave each channel's fitted curve close to the true one; without them the same fit is off by much
    more (the curvature is the prior's). Scored on the contribution's height at 1.5x the tested level,
    which no test measured (tests measure rises, not heights)."""
    world = generate_world(seed=3, n_weeks=156, lift_tests_per_channel=2)
    truth = true_response(world)
    frame = world.lift_tests.copy()
    for i, row in frame.iterrows():
        index = world.channels.index(row["channel"])
        low, high = (np.full(len(world.channels), row["spend"] + d) for d in (0.0, row["delta_spend"]))
        frame.loc[i, "lift"] = truth.steady_state(high)[0, index] - truth.steady_state(low)[0, index]
    frame["lift_se"] = 1_000.0
    data = model_data(world)

    def error(lift_tests: LiftTests | None) -> float:
        """Mean absolute error, as a share of the true value, of the fitted mean weekly contribution of
        each channel at 1.5x its tested level."""
        result = fit(data, SPEC, lift_tests=lift_tests)
        model = ResponseModel.from_idata(result.idata, result.scaling, SPEC)
        level = frame.groupby("channel", sort=False)["spend"].first().reindex(world.channels).to_numpy()
        fitted = model.steady_state(1.5 * level).mean(axis=0)
        true = truth.steady_state(1.5 * level)[0]
        return float(np.mean(np.abs(fitted - true) / true))

    calibrated = error(LiftTests.from_frame(frame))
    # The same experiments read with a standard error a million times the KPI carry no information: the
    # fit of the prior alone, on the graph the calibrated fit compiled (the same number of test slots).
    uncalibrated = error(LiftTests.from_frame(frame.assign(lift_se=1e6 * float(np.sum(data.kpi)))))
    # Measured (seed 3, 2 x 300 draws): 0.08 with the tests, 0.36 without; search stays the worst (0.17):
    # always on, its height trades off with the intercept, and tests only measure rises.
    assert calibrated < 0.15
    assert calibrated < 0.5 * uncalibrated


def test_agreement_measures_each_test_against_the_fitted_lift() -> None:
    tests = _tests()
    rng = np.random.default_rng(0)
    # Fitted lifts (scaled by a KPI scale of 1e6): tv's centred on its measurement, search's 5 se away.
    draws = np.column_stack([rng.normal(0.04, 0.001, 4000), rng.normal(0.02, 0.001, 4000), np.zeros(4000)])
    table = lift_test_agreement(draws, tests, kpi_scale=1_000_000.0)
    assert table["channel"].tolist() == ["tv", "search"]
    assert table["z"].abs().iloc[0] < 0.1
    # search measured -20,000 +- 8,000, fitted +20,000 +- 1,000: z = -40,000 / sqrt(8,000² + 1,000²)
    assert table["z"].iloc[1] == pytest.approx(-40_000 / np.hypot(8_000, 1_000), rel=0.02)
    assert (table["fitted_hdi_low"] < table["fitted_mean"]).all()
