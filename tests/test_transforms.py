"""The media transforms: hand-computed cases, carry-in, and NumPy/PyTensor agreement."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from mmm_pipeline.model import transforms as tf

RNG = np.random.default_rng(42)
X = RNG.gamma(2.0, 50.0, size=(30, 3)) * (RNG.random((30, 3)) < 0.7)  # spend with dark weeks
ALPHA = np.array([0.2, 0.5, 0.8])
THETA = np.array([0.0, 1.5, 3.0])


def test_geometric_adstock_hand_computed():
    x = np.array([1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(tf.geometric_adstock(x, 0.5, 3, normalize=False), [1.0, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(tf.geometric_adstock(x, 0.5, 3), np.array([1.0, 0.5, 0.25, 0.0]) / 1.75)
    np.testing.assert_allclose(tf.geometric_adstock([0.0, 2.0, 4.0], 0.5, 2, normalize=False), [0, 2, 5])


def test_delayed_adstock_peaks_at_theta():
    # Exponents (l - 1)^2 for l = 0..3 are 1, 0, 1, 4.
    weights = tf.adstock_weights("delayed", 4, alpha=0.5, theta=1.0, normalize=False)
    np.testing.assert_allclose(weights, [0.5, 1.0, 0.5, 0.0625])
    impulse = np.zeros(6)
    impulse[0] = 1.0
    np.testing.assert_allclose(tf.delayed_adstock(impulse, 0.5, 1.0, 4)[:4], weights / weights.sum())


def test_weights_are_normalized_per_channel_and_keep_constant_spend():
    weights = tf.adstock_weights("geometric", 5, alpha=ALPHA)
    assert weights.shape == (5, 3)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0)
    constant = np.full((10, 3), 7.0)
    np.testing.assert_allclose(tf.geometric_adstock(constant, ALPHA, 5)[4:], 7.0)
    np.testing.assert_allclose(tf.delayed_adstock(constant, ALPHA, THETA, 5)[4:], 7.0)


def test_channels_are_independent_columns():
    together = tf.delayed_adstock(X, ALPHA, THETA, 6)
    for c in range(3):
        np.testing.assert_allclose(together[:, c], tf.delayed_adstock(X[:, c], ALPHA[c], THETA[c], 6))


@pytest.mark.parametrize("kind", ["geometric", "delayed"])
def test_carry_in_equals_adstock_of_the_whole_series(kind):
    l_max, split = 5, 12
    params = {"alpha": ALPHA} if kind == "geometric" else {"alpha": ALPHA, "theta": THETA}
    whole = tf.adstock(kind, X, l_max, **params)
    tail = tf.adstock(kind, X[split:], l_max, x_init=X[split - l_max + 1 : split], **params)
    np.testing.assert_allclose(tail, whole[split:])
    without_carry = tf.adstock(kind, X[split:], l_max, **params)
    assert not np.allclose(without_carry[: l_max - 1], whole[split : split + l_max - 1])


def test_carry_in_shape_is_checked():
    with pytest.raises(ValueError, match="l_max - 1"):
        tf.geometric_adstock(X, ALPHA, 4, x_init=np.zeros((2, 3)))


def test_invalid_kinds_and_params_are_rejected():
    with pytest.raises(ValueError, match="unknown adstock"):
        tf.adstock_weights("weibull", 3, alpha=0.5)
    with pytest.raises(ValueError, match="theta"):
        tf.adstock_weights("delayed", 3, alpha=0.5)
    with pytest.raises(ValueError, match="unknown saturation"):
        tf.saturation("tanh", X, lam=1.0)


def test_logistic_saturation_matches_formula_and_limits():
    x = np.linspace(0, 50, 101)
    expected = (1 - np.exp(-0.3 * x)) / (1 + np.exp(-0.3 * x))
    np.testing.assert_allclose(tf.logistic_saturation(x, 0.3), expected)
    assert tf.logistic_saturation(0.0, 0.3) == 0.0
    assert np.all(np.diff(tf.logistic_saturation(x, 0.3)) > 0)
    np.testing.assert_allclose(tf.logistic_saturation(1e9, 0.3), 1.0)  # no overflow for huge inputs


def test_hill_saturation_matches_formula_and_is_safe_at_zero():
    x = np.linspace(0, 500, 101)
    with np.errstate(all="raise"):
        y = tf.hill_saturation(x, 100.0, 2.0)
    np.testing.assert_allclose(y, x**2 / (x**2 + 100.0**2))
    assert y[0] == 0.0
    assert tf.hill_saturation(100.0, 100.0, 2.0) == pytest.approx(0.5)
    assert np.all(np.diff(y) > 0)
    assert tf.hill_saturation(1e12, 100.0, 0.7) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(tf.saturation("hill", x, half_sat=100.0, slope=2.0), y)


def test_numpy_and_pytensor_give_identical_numbers():
    x, x_init = pt.matrix("x"), pt.matrix("x_init")
    alpha, theta, lam, half_sat, slope = (pt.vector(n) for n in ["alpha", "theta", "lam", "k", "s"])
    outputs = [
        tf.geometric_adstock(x, alpha, 4, x_init=x_init, xp=pt),
        tf.delayed_adstock(x, alpha, theta, 6, xp=pt),
        tf.adstock_weights("delayed", 6, alpha=alpha, theta=theta, xp=pt),
        tf.logistic_saturation(x, lam, xp=pt),
        tf.hill_saturation(x, half_sat, slope, xp=pt),
    ]
    fn = pytensor.function([x, x_init, alpha, theta, lam, half_sat, slope], outputs)
    lam_v, half_sat_v, slope_v = np.array([0.01, 0.02, 0.05]), np.array([50.0, 80.0, 120.0]), THETA + 0.5
    got = fn(X, X[:3], ALPHA, THETA, lam_v, half_sat_v, slope_v)
    expected = [
        tf.geometric_adstock(X, ALPHA, 4, x_init=X[:3]),
        tf.delayed_adstock(X, ALPHA, THETA, 6),
        tf.adstock_weights("delayed", 6, alpha=ALPHA, theta=THETA),
        tf.logistic_saturation(X, lam_v),
        tf.hill_saturation(X, half_sat_v, slope_v),
    ]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


def test_hill_gradients_are_finite_in_weeks_without_spend():
    x, half_sat, slope = pt.matrix("x"), pt.vector("k"), pt.vector("s")
    total = tf.hill_saturation(x, half_sat, slope, xp=pt).sum()
    grads = pytensor.function([x, half_sat, slope], pytensor.grad(total, [half_sat, slope]))
    for g in grads(X, np.array([50.0, 80.0, 120.0]), np.array([0.5, 1.0, 2.0])):
        assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_hill_graph_form_has_the_power_form_gradients():
    """The graph's log/tanh form of the Hill curve has the power form's gradients (same function)."""
    x, half_sat, slope = pt.matrix("x"), pt.vector("k"), pt.vector("s")
    total = tf.hill_saturation(x, half_sat, slope, xp=pt).sum()
    grads = pytensor.function([x, half_sat, slope], pytensor.grad(total, [x, half_sat, slope]))
    k, s = np.array([50.0, 80.0, 120.0]), np.array([0.5, 1.0, 2.0])
    d_x, d_k, d_s = grads(X, k, s)
    positive = X > 0
    safe = np.where(positive, X, 1.0)
    r = (safe / k) ** s
    bend = np.where(positive, r / (1 + r) ** 2, 0.0)  # d sat / d log r
    np.testing.assert_allclose(d_x, bend * s / safe, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(d_k, (bend * -s / k).sum(axis=0), rtol=1e-10)
    np.testing.assert_allclose(d_s, (bend * np.log(safe / k)).sum(axis=0), rtol=1e-10)
