"""Per-channel saturation families (``ModelSpec.saturation_by_channel``): spec, graph, prediction, optimizer.

Every default check reads prior draws of a mixed graph (no sampling); one ``slow`` test fits it for real
(nutpie, 2 chains x 200 draws, 104 weeks, about 2.5 minutes with compilation on a busy machine).
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pymc as pm
import pytest

from mmm_pipeline.cv.stability import fold_parameters
from mmm_pipeline.model import insights
from mmm_pipeline.model.build import ModelData, ScalingSpec, build_model, model_inputs
from mmm_pipeline.model.calibration import LiftTests, padded_tests
from mmm_pipeline.model.fit import FitResult, fit
from mmm_pipeline.model.predict import PosteriorDraws, predict
from mmm_pipeline.model.spec import ModelSpec, SamplerSpec
from mmm_pipeline.optimize import ResponseModel
from mmm_testkit.adapters import model_data
from mmm_testkit.synthetic import generate_world

N_WEEKS = 104


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=2, n_weeks=N_WEEKS, lift_tests_per_channel=1)


@pytest.fixture(scope="module")
def data(world) -> ModelData:
    return model_data(world)


@pytest.fixture(scope="module")
def truth_kinds(world) -> dict[str, str]:
    """The generator's own family per channel: Hill for tv/social/print, logistic for the others."""
    return {c: world.truth.channel(c, "all").saturation for c in world.channels}


@pytest.fixture(scope="module")
def mixed(truth_kinds) -> ModelSpec:
    return ModelSpec(
        saturation="hill", saturation_by_channel=truth_kinds, l_max=6, n_fourier=1,
        sampler=SamplerSpec(chains=2, draws=200, tune=200, seed=4),
    )  # fmt: skip


@pytest.fixture(scope="module")
def result(world, data, mixed) -> FitResult:
    return fit(data, mixed, lift_tests=LiftTests.from_frame(world.lift_tests))


def _numpy_curve(kind: str, x: np.ndarray, draws: PosteriorDraws, i: int) -> np.ndarray:
    """Channel ``i``'s curve at ``x`` (broadcasting against the draws), written out for its family."""
    if kind == "hill":
        half_sat, slope = draws.saturation["half_sat"][:, i], draws.saturation["slope"][:, i]
        ratio = (x / half_sat) ** slope
        return ratio / (1 + ratio)
    return np.tanh(draws.saturation["lam"][:, i] * x / 2)


def _numpy_curves(kinds: tuple[str, ...], draws: PosteriorDraws, x: np.ndarray) -> np.ndarray:
    """``(S, C)``: each channel's curve at the scaled weekly spend ``x`` ``(C,)``, with its own family."""
    return np.stack([_numpy_curve(kind, x[i], draws, i) for i, kind in enumerate(kinds)], axis=-1)


def test_spec_option_is_invisible_when_empty_and_checked_against_the_data(data, truth_kinds):
    default = ModelSpec()
    assert "saturation_by_channel" not in default.model_dump() and "saturation_by_channel" not in (
        default.structure_key()
    )  # the config hash and compile key of every existing project stay as they were
    mixed = ModelSpec(saturation_by_channel=truth_kinds)
    assert mixed.structure_key() != default.structure_key()
    assert ModelSpec.model_validate_json(mixed.model_dump_json()) == mixed
    assert mixed.saturation_kinds(data.channels) == tuple(truth_kinds[c] for c in data.channels)
    assert ModelSpec(saturation_by_channel={"tv": "logistic"}).saturation_kinds(["search", "tv"]) == (
        "hill", "logistic",
    )  # fmt: skip
    typo = ModelSpec(saturation_by_channel={"tvv": "logistic"})
    with pytest.raises(ValueError, match=r"saturation_by_channel names channels \['tvv'\] that the data"):
        model_inputs(data, ScalingSpec.from_data(data), typo)


def test_one_kind_named_per_channel_is_the_default_graph(data):
    """Naming channels with the kind they would have anyway builds exactly the one-kind graph."""
    scaling = ScalingSpec.from_data(data)
    spec = ModelSpec(saturation="hill", l_max=4, n_fourier=1)
    same = spec.model_copy(update={"saturation_by_channel": {"tv": "hill"}})
    shapes = {}
    for s in (spec, same):
        model = build_model(model_inputs(data, scaling, s), scaling, s)
        shapes[s.structure_key()] = {v.name: model.initial_point()[v.name].shape for v in model.value_vars}
    assert len(set(map(str, shapes.values()))) == 1 and "half_sat_typical_log__" in next(
        iter(shapes.values())
    )


def test_mixed_graph_matches_numpy_prediction_and_lift_tests(world, data, mixed):
    """Prior draws of the mixed graph: each kind's parameters live on its own channels only, the NumPy
    prediction reproduces the graph's ``mu``, each lift test is read on its channel's own curve, and the
    optimizer, response curves and stability table use each channel's family."""
    scaling = ScalingSpec.from_data(data)
    tests = LiftTests.from_frame(world.lift_tests)
    inputs = model_inputs(data, scaling, mixed, lift_tests=tests)
    model = build_model(inputs, scaling, mixed)
    assert list(model.coords["channel_hill"]) == ["tv", "social", "print"]
    assert list(model.coords["channel_logistic"]) == ["search", "display", "radio"]
    with model:
        prior = pm.sample_prior_predictive(draws=20, random_seed=3, compile_kwargs={"mode": "FAST_COMPILE"})
    assert np.isfinite(model.point_logps()["lift_loglik"])
    idata = az.InferenceData(posterior=prior.prior)
    draws = PosteriorDraws.from_idata(idata, mixed)
    kinds = mixed.saturation_kinds(data.channels)
    assert draws.kinds() == kinds
    assert np.isnan(draws.saturation["lam"][:, 0]).all() and np.isfinite(draws.saturation["lam"][:, 1]).all()

    pred = predict(idata, scaling, mixed, data)
    mu = prior.prior["mu"].to_numpy()[..., : data.n_weeks].reshape(-1, data.n_weeks)
    np.testing.assert_allclose(pred.expected, mu * scaling.kpi_scale, rtol=1e-6)

    n = len(tests)
    channel = inputs["lift_channel"][:n]
    expected = np.stack(
        [
            draws.beta[:, c]
            * (
                _numpy_curve(kinds[c], inputs["lift_x_new"][j], draws, c)
                - _numpy_curve(kinds[c], inputs["lift_x"][j], draws, c)
            )
            for j, c in enumerate(channel)
        ],
        axis=1,
    )
    lift = prior.prior["lift_expected"].to_numpy().reshape(-1, padded_tests(n))[:, :n]
    np.testing.assert_allclose(lift, expected, rtol=1e-6)
    _check_each_family(idata, scaling, mixed, data)


def _check_each_family(
    idata: az.InferenceData, scaling: ScalingSpec, spec: ModelSpec, data: ModelData
) -> None:
    """The optimizer's response model, the response curves and the CV stability table each use every
    channel's own family (against the curves written out by hand)."""
    kinds = spec.saturation_kinds(data.channels)
    draws = PosteriorDraws.from_idata(idata, spec)
    response = ResponseModel.from_idata(idata, scaling, spec)
    blocks = {b.kind: b.channels.tolist() for b in response.saturation}
    assert blocks == {"hill": [0, 3, 5], "logistic": [1, 2, 4]}
    weekly = np.array([50_000.0, 20_000.0, 10_000.0, 15_000.0, 25_000.0, 8_000.0])
    by_hand = scaling.kpi_scale * draws.beta * _numpy_curves(kinds, draws, scaling.scale_spend(weekly))
    np.testing.assert_allclose(response.steady_state(weekly), by_hand, rtol=1e-9)

    curves = insights.response_curves(idata, scaling, spec, spend_grid=weekly[None, :])
    np.testing.assert_allclose(curves["mean"], by_hand.mean(axis=0), rtol=1e-9)

    table = fold_parameters(idata, scaling, spec, data)
    per_parameter = table.groupby("parameter")["channel"].apply(list)
    assert per_parameter["half_sat"] == per_parameter["slope"] == ["tv", "social", "print"]
    assert per_parameter["lam"] == ["search", "display", "radio"]
    assert table["mean"].notna().all()


@pytest.mark.slow
def test_mixed_spec_fits_and_predicts_its_own_mean(data, mixed, result):
    """A real fit (nutpie, lift tests included): each kind's parameters on its own channels, finite draws,
    prediction reproduces the fitted ``mu``, and the downstream readers use each channel's family."""
    assert result.idata.posterior["half_sat"].dims[-1] == "channel_hill"
    assert result.idata.posterior["lam"].dims[-1] == "channel_logistic"
    assert int(result.idata.sample_stats["diverging"].sum()) < 20
    pred = predict(result.idata, result.scaling, mixed, data)
    mu = result.idata.posterior["mu"].to_numpy()[..., : data.n_weeks].reshape(-1, data.n_weeks)
    np.testing.assert_allclose(pred.expected, mu * result.scaling.kpi_scale, rtol=1e-6)
    _check_each_family(result.idata, result.scaling, mixed, data)
