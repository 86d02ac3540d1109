"""Closed-form parameter choices reach their targets: checked with the ResNet, the exact moment ODE and
finite differences (float64)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield_jax as mfj
from meanfield_jax import closed_forms as cf

X0 = jnp.linspace(-2.0, 3.0, 11)
TARGETS = [(0.5, 1.0), (1.0, -0.3), (3.0, 0.2), (1.0 + 1e-9, 0.7), (0.05, -2.0)]


@pytest.mark.parametrize(("a", "c"), TARGETS)
@pytest.mark.parametrize("num_layers", [1, 7, 64])
def test_discrete_line_map_parameters_make_the_resnet_realise_the_line(a, c, num_layers):
    T = 1.7
    w, b = cf.line_map_parameters_discrete(a, c, T, num_layers)
    field = mfj.NeuralField.constant(w, b, num_layers=num_layers, T=T, activation="identity")
    np.testing.assert_allclose(mfj.resnet_forward(field, X0), a * X0 + c, rtol=0, atol=1e-12)
    slope, intercept = cf.line_map(w, b, T, num_layers=num_layers)
    np.testing.assert_allclose([slope, intercept], [a, c], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("a", "c"), TARGETS)
def test_continuous_line_map_parameters_realise_the_line_along_exact_characteristics(a, c):
    # the mean of a Dirac at x0 follows the characteristic; moment_ode integrates it independently
    T = 1.7
    w, b = cf.line_map_parameters(a, c, T)
    for x0 in (-1.0, 0.5, 2.0):
        xT = mfj.moment_ode(w, b, jnp.array([1.0, x0]), jnp.array([T]))[0, 1]
        np.testing.assert_allclose(float(xT), a * x0 + c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cf.line_map(w, b, T), [a, c], rtol=1e-12, atol=1e-14)


def test_resnet_with_continuous_parameters_converges_to_the_line_at_first_order():
    a, c, T = 0.5, 1.0, 1.0
    w, b = cf.line_map_parameters(a, c, T)
    errors = []
    for L in (16, 32, 64, 128):
        field = mfj.NeuralField.constant(w, b, num_layers=L, T=T)
        errors.append(float(jnp.max(jnp.abs(mfj.resnet_forward(field, X0) - (a * X0 + c)))))
    orders = np.log2(np.asarray(errors[:-1]) / np.asarray(errors[1:]))
    np.testing.assert_allclose(orders, 1.0, atol=0.05)
    # the discrete weight (e^{ℓ/L} − 1) L/T = w + w² T/(2L) + O(L⁻²) approaches the continuous one
    for L in (32, 128):
        wd, _ = cf.line_map_parameters_discrete(a, c, T, L)
        np.testing.assert_allclose(float(wd - w), float(w) ** 2 * T / (2 * L), rtol=1e-2)


def test_discrete_line_map_with_an_overshooting_step():
    # 1 + Δt w = −2 < 0: the Euler map flips orientation; slope (−2)^L, intercept Δt b ((−2)^L − 1)/(−3)
    w, b, T, L = -30.0, 1.0, 1.0, 10
    slope, intercept = cf.line_map(w, b, T, num_layers=L)
    field = mfj.NeuralField.constant(w, b, num_layers=L, T=T)
    x = jnp.array([0.0, 1.0])
    y = mfj.resnet_forward(field, x)
    np.testing.assert_allclose([intercept, slope], [y[0], y[1] - y[0]], rtol=1e-13)
    np.testing.assert_allclose(float(slope), (-2.0) ** 10, rtol=1e-14)


def central_difference(fn, x, eps=1e-6):
    return (fn(x + eps) - fn(x - eps)) / (2 * eps)


@pytest.mark.parametrize("a", [1.0, 1.0 + 3e-5, 0.4, 2.5])
def test_line_map_parameters_are_smooth_through_a_equal_one(a):
    for fn in (
        lambda a: cf.line_map_parameters(a, 0.8, 1.3)[1],
        lambda a: cf.line_map_parameters_discrete(a, 0.8, 1.3, 5)[1],
        lambda a: cf.line_map(jnp.log(a), 0.8, 1.3)[1],
        lambda a: cf.line_map(jnp.log(a), 0.8, 1.3, num_layers=5)[1],
    ):
        grad = jax.grad(fn)(a)
        np.testing.assert_allclose(float(grad), float(central_difference(fn, a)), rtol=1e-7)
    # the removable singularity: b → c/T with slope −c/(2T) (since ln a/(a − 1) = 1 − (a − 1)/2 + …)
    if a == 1.0:
        np.testing.assert_allclose(cf.line_map_parameters(a, 0.8, 1.3), [0.0, 0.8 / 1.3], rtol=1e-15)
        np.testing.assert_allclose(float(jax.grad(lambda a: cf.line_map_parameters(a, 0.8, 1.3)[1])(a)),
                                   -0.8 / 2.6, rtol=1e-12)


def variance_and_mean(m):
    return m[2] / m[0] - (m[1] / m[0]) ** 2, m[1] / m[0]


M_INIT = jnp.array([2.0, 2.0 * 1.5, 2.0 * (0.7 + 1.5**2)])  # m0 = 2, μ = 1.5, V = 0.7


@pytest.mark.parametrize("Vd", [0.1, 0.7, 3.0])
@pytest.mark.parametrize("mud", [-1.0, 1.5, 4.0])
def test_desired_variance_and_mean_are_hit_by_the_exact_moment_ode(Vd, mud):
    T = 2.0
    V0, mu0 = variance_and_mean(M_INIT)
    w = cf.desired_variance_weight(V0, Vd, T)
    b = cf.desired_mean_bias(w, mu0, mud, T)
    V, mu = variance_and_mean(mfj.moment_ode(w, b, M_INIT, jnp.array([T]))[0])
    np.testing.assert_allclose([float(V), float(mu)], [Vd, mud], rtol=1e-12, atol=1e-12)


def test_desired_mean_bias_is_smooth_at_zero_weight():
    T, mu0, mud = 2.0, 1.5, -0.5
    np.testing.assert_allclose(float(cf.desired_mean_bias(0.0, mu0, mud, T)), (mud - mu0) / T, rtol=1e-15)
    for w in (0.0, 2e-5, -0.3):
        fn = lambda w: cf.desired_mean_bias(w, mu0, mud, T)  # noqa: E731
        np.testing.assert_allclose(float(jax.grad(fn)(w)), float(central_difference(fn, w)), rtol=1e-7)


def test_desired_energy_weight_hits_the_energy_with_zero_bias():
    T, Ed = 1.5, 0.9
    w = cf.desired_energy_weight(M_INIT[2], Ed, T)
    m = mfj.moment_ode(w, 0.0, M_INIT, jnp.array([T]))[0]
    np.testing.assert_allclose(float(m[2]), Ed, rtol=1e-12)


def test_asymptotic_energy_bias_steers_the_energy_to_its_target():
    Ed, w = 5.0, -1.0
    b = cf.asymptotic_energy_bias(w, Ed, m0=M_INIT[0])
    ts = jnp.array([0.3, 5.0, 40.0])
    m2 = mfj.moment_ode(w, b, M_INIT, ts)[:, 2]
    np.testing.assert_allclose(float(m2[-1]), Ed, rtol=1e-12)  # e^{−40} is below rounding
    # on the way: the data contract (V0 e^{2wt}) onto x* = sqrt(Ed/m0), the mean relaxing like e^{wt}
    m0, mu0, V0 = 2.0, 1.5, 0.7
    x_star = math.sqrt(Ed / m0)
    decay = np.exp(w * np.asarray(ts))
    expected = m0 * (V0 * decay**2 + (x_star + (mu0 - x_star) * decay) ** 2)
    np.testing.assert_allclose(m2, expected, rtol=1e-12)
    assert abs(float(m2[0]) - Ed) > 0.1


@pytest.mark.parametrize(("mu", "s2", "K"), [(0.0, 1.0, 1.0), (2.0, 0.25, 0.5), (-1.0, 3.0, 2.0)])
def test_gaussian_steady_state_parameters_give_the_target_moments(mu, s2, K):
    w, b = cf.gaussian_steady_state_parameters(mu, s2, K)
    m = mfj.moment_ode(w, b, M_INIT, jnp.array([200.0 * s2 / K]), diffusion=K)[0]
    V, mean = variance_and_mean(m)
    np.testing.assert_allclose([float(mean), float(V)], [mu, s2], rtol=1e-10, atol=1e-12)
    # the steady-state drift w x + b vanishes at μ and the stationary variance is K/(−w)
    np.testing.assert_allclose([float(w * mu + b), float(K / -w)], [0.0, s2], atol=1e-14)


def test_least_squares_line_recovers_an_exact_line_and_matches_numpy():
    x = jnp.linspace(0.0, 1.0, 50)
    np.testing.assert_allclose(cf.least_squares_line(x, 0.5 * x + 1.0), [0.5, 1.0], rtol=1e-13)
    key = jax.random.key(0)
    y = x + 0.1 * jax.random.normal(key, x.shape, jnp.float64)
    np.testing.assert_allclose(cf.least_squares_line(x, y), np.polyfit(np.asarray(x), np.asarray(y), 1),
                               rtol=1e-12)


def test_bad_inputs_are_rejected_with_the_argument_named():
    with pytest.raises(ValueError, match="a must be finite and > 0"):
        cf.line_map_parameters(-0.5, 1.0, 1.0)
    with pytest.raises(ValueError, match="T must be finite and > 0"):
        cf.line_map_parameters_discrete(0.5, 1.0, 0.0, 4)
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        cf.line_map_parameters_discrete(0.5, 1.0, 1.0, 0)
    with pytest.raises(ValueError, match="Vd must be finite and > 0"):
        cf.desired_variance_weight(1.0, -1.0, 1.0)
    with pytest.raises(ValueError, match="w must be finite and < 0"):
        cf.asymptotic_energy_bias(0.5, 1.0)
    with pytest.raises(ValueError, match="s2 must be finite and > 0"):
        cf.gaussian_steady_state_parameters(0.0, 0.0)
    with pytest.raises(ValueError, match="y must have the shape of x"):
        cf.least_squares_line(jnp.zeros(3), jnp.zeros(4))
    with pytest.raises(ValueError, match="mud must be finite"):
        cf.desired_mean_bias(0.1, 0.0, math.inf, 1.0)
    # a bool ran as 0 or 1, a string failed with "Only integer scalar arrays ..."
    for bad in (True, "1"):
        with pytest.raises(TypeError, match="T must be a real number or array"):
            cf.line_map(1.0, 1.0, T=bad)
    # these returned (nan, nan)
    with pytest.raises(ValueError, match="x must not be all equal"):
        cf.least_squares_line(jnp.ones(4), jnp.arange(4.0))
    with pytest.raises(ValueError, match="y must be finite, got 1 non-finite"):
        cf.least_squares_line(jnp.arange(4.0), jnp.array([0.0, 1.0, math.nan, 3.0]))


def test_data_sets_refuse_what_would_give_wrong_samples():
    """U[8, 2] gave 8 for every vehicle, n = -1 an MLIR error, n = True one vehicle, NaN bounds NaN data."""
    from meanfield_jax import data

    key = jax.random.key(0)
    for call, message in [
        (lambda: data.vehicle_lengths(key, 5, low=8.0, high=2.0), "low < high, got low=8.0, high=2.0"),
        (lambda: data.vehicle_lengths(key, 3, low=math.nan), "low and high must be finite"),
        (lambda: data.vehicle_lengths(key, -1), "n must be a positive integer, got n=-1"),
        (lambda: data.regression_cloud(key, True), "n must be a positive integer, got n=True"),
        (lambda: data.regression_cloud(key, 4, noise=math.nan), "noise must be finite and >= 0"),
        (lambda: data.vehicle_lengths(key, 2, low=np.array([1.0, 3.0]), high=np.array([2.0, 3.0])),
         "low < high"),
        (lambda: data.uniform_density(2.0, 2.0), "low < high, got low=2.0, high=2.0"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()
    lengths = data.vehicle_lengths(key, np.int64(400), low=2.0, high=8.0)
    assert lengths.shape == (400,) and 2.0 <= float(lengths.min()) and float(lengths.max()) <= 8.0
    per_vehicle = data.vehicle_lengths(key, 3, low=jnp.arange(1.0, 4.0), high=jnp.arange(2.0, 5.0))
    assert np.all((np.arange(1.0, 4.0) <= per_vehicle) & (per_vehicle <= np.arange(2.0, 5.0)))
