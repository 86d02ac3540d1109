"""moment_ode against the closed forms of MODEL.md §4 and §6.3; moments of particles and densities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import meanfield_jax as mfj

TS = np.linspace(0.0, 5.0, 11)
U28 = np.array([1.0, 5.0, 28.0])  # raw moments of U[2, 8]: mean 5, variance 3


def test_uniform_with_w_minus_one_b_zero():
    """Fig. 1 left: μ(t) = 5 e^{-t}, V(t) = 3 e^{-2t}, m2 = m2(0) e^{-2t}."""
    m = np.asarray(mfj.moment_ode(-1.0, 0.0, U28, TS))
    np.testing.assert_allclose(m[:, 0], 1.0)
    np.testing.assert_allclose(m[:, 1], 5 * np.exp(-TS), rtol=1e-12)
    np.testing.assert_allclose(m[:, 2], 28 * np.exp(-2 * TS), rtol=1e-12)
    np.testing.assert_allclose(m[:, 2] - m[:, 1] ** 2, 3 * np.exp(-2 * TS), rtol=1e-12)


@pytest.mark.parametrize(("w", "b", "m0"), [(-1.0, 2.0, 1.0), (0.5, -1.0, 2.0), (-0.3, 0.7, 0.5)])
def test_constant_bias_closed_forms(w, b, m0):
    m_init = np.array([m0, m0 * 1.5, m0 * (1.5**2 + 0.8)])
    m = np.asarray(mfj.moment_ode(w, b, m_init, TS))
    m1 = np.exp(w * TS) * m_init[1] + (b * m0 / w) * (np.exp(w * TS) - 1)
    V = 0.8 * np.exp(2 * w * TS)
    np.testing.assert_allclose(m[:, 1], m1, rtol=1e-12)
    np.testing.assert_allclose(m[:, 2], m0 * (V + (m1 / m0) ** 2), rtol=1e-12)


def test_zero_weight_is_a_translation():
    m = np.asarray(mfj.moment_ode(0.0, 0.4, U28, TS))
    np.testing.assert_allclose(m[:, 1], 5 + 0.4 * TS, rtol=1e-14)
    np.testing.assert_allclose(m[:, 2] - m[:, 1] ** 2, 3.0, rtol=1e-12)


@pytest.mark.parametrize("beta", [-1.0, 0.5, 1.0])
def test_feedback_bias(beta):
    """b(t) = β m1/m0: m1 = m1(0) e^{(w+β)t}, m2 = e^{2wt}[m2(0) + m1(0)²/m0 (e^{2βt} − 1)]."""
    w, m0 = -1.0, 2.0
    m_init = m0 * U28
    m = np.asarray(mfj.moment_ode(w, 0.0, m_init, TS, feedback=beta))
    np.testing.assert_allclose(m[:, 1], m_init[1] * np.exp((w + beta) * TS), rtol=1e-12)
    m2 = np.exp(2 * w * TS) * (m_init[2] + m_init[1] ** 2 / m0 * (np.exp(2 * beta * TS) - 1))
    np.testing.assert_allclose(m[:, 2], m2, rtol=1e-12)


def test_centering_feedback_freezes_the_mean():
    m = np.asarray(mfj.moment_ode(-0.7, 0.0, U28, TS, feedback=0.7))
    np.testing.assert_allclose(m[:, 1], 5.0, rtol=1e-12)


@pytest.mark.parametrize(("w", "b", "K"), [(-1.0, 0.0, 1.0), (-2.0, 1.0, 0.5)])
def test_fokker_planck_variance_law(w, b, K):
    """V(t) = V∞ + (V0 − V∞) e^{2wt}, V∞ = −K/w; dm2/dt = 2 w m2 + 2 b m1 + 2 K m0."""
    m = np.asarray(mfj.moment_ode(w, b, U28, TS, diffusion=K))
    Vinf = -K / w
    np.testing.assert_allclose(m[:, 2] - m[:, 1] ** 2, Vinf + (3 - Vinf) * np.exp(2 * w * TS), rtol=1e-12)
    np.testing.assert_allclose(m[:, 1], np.exp(w * TS) * 5 + (b / w) * (np.exp(w * TS) - 1), rtol=1e-12)


def test_higher_orders_match_the_moment_hierarchy():
    """dm_k/dt = k w m_k + k b(t) m_{k-1} + k(k-1) K m_{k-2}, integrated numerically, order 5."""
    w, b, K, beta = -0.6, 0.4, 0.3, -0.5
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 0.7, 400)
    m_init = np.array([np.mean(x**k) for k in range(6)])

    def rhs(t, m):
        bias = b + beta * m[1] / m[0]
        out = np.zeros_like(m)
        for k in range(1, 6):
            out[k] = k * w * m[k] + k * bias * m[k - 1] + (k * (k - 1) * K * m[k - 2] if k >= 2 else 0.0)
        return out

    ref = solve_ivp(rhs, (0, 5), m_init, t_eval=TS, rtol=1e-12, atol=1e-12).y.T
    m = np.asarray(mfj.moment_ode(w, b, m_init, TS, feedback=beta, diffusion=K))
    np.testing.assert_allclose(m, ref, rtol=1e-8, atol=1e-10)


def test_moment_ode_is_differentiable():
    """∂V(T)/∂w = 2T V(T) (Vlasov, identity), ∂V/∂b = 0."""
    T = 1.5

    def var_T(w, b):
        m = mfj.moment_ode(w, b, jnp.asarray(U28), jnp.array([T]))[0]
        return m[2] - m[1] ** 2

    gw, gb = jax.grad(var_T, argnums=(0, 1))(-0.8, 0.3)
    np.testing.assert_allclose(gw, 2 * T * var_T(-0.8, 0.3), rtol=1e-12)
    np.testing.assert_allclose(gb, 0.0, atol=1e-12)


def test_moment_ode_errors():
    with pytest.raises(ValueError, match="m_init"):
        mfj.moment_ode(-1.0, 0.0, [1.0], TS)
    with pytest.raises(ValueError, match="diffusion"):
        mfj.moment_ode(-1.0, 0.0, U28, TS, diffusion=-1.0)


def test_particle_moments_shapes_and_values():
    x = jnp.array([1.0, 2.0, 3.0, 6.0])
    np.testing.assert_allclose(mfj.particle_moments(x, 3), [1.0, 3.0, 12.5, 63.0])
    xy = jnp.stack([x, -x], axis=1)
    m = mfj.particle_moments(xy, 2)
    assert m.shape == (3, 2)
    np.testing.assert_allclose(m[:, 1], [1.0, -3.0, 12.5])
    with pytest.raises(ValueError, match="order"):
        mfj.particle_moments(x, -1)


def test_density_moments_on_grids():
    grid = mfj.Grid1D(-10.0, 10.0, 2000)
    f = grid.project(lambda x: jnp.exp(-((x - 1.0) ** 2) / 2) / jnp.sqrt(2 * jnp.pi))
    m = mfj.moments(f, grid, order=2)
    np.testing.assert_allclose(m, [1.0, 1.0, 2.0], rtol=1e-5)
    g2 = mfj.Grid2D((-6.0, 6.0, 120), (-6.0, 6.0, 100))
    C = np.array([[1.0, 0.3], [0.3, 0.5]])
    P = np.linalg.inv(C)

    def gauss(X, Y):
        dx, dy = X - 0.5, Y + 0.2
        q = P[0, 0] * dx**2 + 2 * P[0, 1] * dx * dy + P[1, 1] * dy**2
        return jnp.exp(-q / 2) / (2 * np.pi * np.sqrt(np.linalg.det(C)))

    out = mfj.moments(g2.project(gauss), g2, order=2)
    np.testing.assert_allclose(out["mass"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["mean"], [0.5, -0.2], atol=1e-6)
    np.testing.assert_allclose(out["covariance"], C, atol=2e-3)  # midpoint rule: O(Δx²)


def test_grid_project_is_exact_on_polynomials_and_from_samples_is_normalised():
    grid = mfj.Grid1D(0.0, 1.0, 7)
    avg = grid.project(lambda x: x**3)
    exact = np.diff(np.asarray(grid.faces) ** 4 / 4) / grid.dx
    np.testing.assert_allclose(avg, exact, rtol=1e-12)
    x = jax.random.uniform(jax.random.PRNGKey(0), (1000,), minval=0.2, maxval=0.8)
    np.testing.assert_allclose(grid.integrate(grid.from_samples(x)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(grid.integrate(grid.from_samples(x, bandwidth=0.01)), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="lo < hi"):
        mfj.Grid1D(1.0, 0.0, 10)
    with pytest.raises(ValueError, match="integer >= 2"):
        mfj.Grid1D(0.0, 1.0, 1)
    with pytest.raises(ValueError, match="finite"):
        mfj.Grid2D((0.0, np.inf, 4), (0.0, 1.0, 4))
    with pytest.raises(ValueError, match="the length hi - lo must be finite"):  # dx was inf
        mfj.Grid1D(-1e308, 1e308, 10)


def test_histograms_of_samples_against_numpy():
    """A NaN sample was counted in the first cell, a sample at x = hi dropped, weights not normalised (mass
    3 for three unit weights), a negative bandwidth gave negative densities, an (n, 2) x was flattened, and a
    constant fn could not be projected."""
    grid = mfj.Grid1D(-3.0, 3.0, 6)
    x = np.array([np.nan, -3.0, -0.5, 0.5, 0.5, 2.9, 3.0, 3.5])
    weights = np.arange(1.0, 9.0)
    kept = np.isfinite(x) & (x >= -3.0) & (x <= 3.0)
    expected = np.histogram(x[kept], bins=6, range=(-3.0, 3.0), weights=weights[kept])[0] / weights.sum()
    np.testing.assert_allclose(grid.from_samples(x, weights=weights) * grid.dx, expected, rtol=1e-15)
    grid2 = mfj.Grid2D((0.0, 1.0, 2), (0.0, 2.0, 2))
    xy = np.array([[np.nan, 0.5], [0.5, np.nan], [1.0, 2.0], [0.25, 0.5], [0.75, 0.5]])
    keep = np.all(np.isfinite(xy), axis=1)
    expected_2d = np.histogram2d(xy[keep, 0], xy[keep, 1], bins=2, range=[[0, 1], [0, 2]])[0] / len(xy)
    np.testing.assert_allclose(grid2.from_samples(xy) * grid2.cell_volume, expected_2d, rtol=1e-15)
    for call, message in [
        (lambda: grid.from_samples(x[1:], bandwidth=-0.5), "bandwidth must be a finite number > 0"),
        (lambda: grid.from_samples(np.zeros((4, 2))), r"x must have shape \(n,\) or \(n, 1\)"),
        (lambda: grid.from_samples(np.zeros(0)), "at least one sample"),
        (lambda: grid.from_samples(x, weights=weights[:3]), r"weights must have shape \(8,\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()
    np.testing.assert_allclose(grid.project(lambda x: 0.25), np.full(6, 0.25))
    means = jnp.array([-1.0, 0.0, 1.0])  # a batch of functions on a leading axis
    batched = grid.project(lambda x: jnp.exp(-((x[None] - means[:, None, None]) ** 2)))
    np.testing.assert_allclose(batched[1], grid.project(lambda x: jnp.exp(-(x**2))), rtol=1e-15)
    # float32 samples just below hi, whose cell index rounds to n, are in the last cell
    just_below = np.nextafter(np.float32(3.0), np.float32(0.0), dtype=np.float32)
    assert float(jnp.sum(grid.from_samples(jnp.full(4, just_below, jnp.float32))) * grid.dx) == 1.0
    # a traced bandwidth (under jax.grad) is not refused
    kde_sum = jax.grad(lambda h: jnp.sum(grid.from_samples(jnp.array([0.2, -0.4]), bandwidth=h) ** 2))
    h = 1e-6
    fd = (jnp.sum(grid.from_samples(jnp.array([0.2, -0.4]), bandwidth=0.5 + h) ** 2)
          - jnp.sum(grid.from_samples(jnp.array([0.2, -0.4]), bandwidth=0.5 - h) ** 2)) / (2 * h)
    np.testing.assert_allclose(kde_sum(0.5), fd, rtol=1e-7)


def test_moment_ode_is_differentiable_in_the_diffusion_and_checks_a_concrete_one():
    """V(t) = V∞ + (V(0) − V∞) e^{2wt} with V∞ = −K/w, so ∂V/∂K = (e^{2wt} − 1)/w exactly; traced K under
    jax.grad and jax.jit; a negative or NaN K is refused."""
    w, t, m_init = -0.7, 0.9, jnp.asarray([1.0, 0.3, 0.5])

    def variance(K):
        m = mfj.moment_ode(w, 0.2, m_init, jnp.asarray([t]), diffusion=K)[-1]
        return m[2] / m[0] - (m[1] / m[0]) ** 2

    for K in (0.0, 0.4):
        np.testing.assert_allclose(jax.grad(variance)(K), np.expm1(2 * w * t) / w, rtol=1e-13)
        np.testing.assert_allclose(jax.jit(variance)(K), variance(K), rtol=1e-14)
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="diffusion must be a finite number >= 0"):
            variance(bad)


def test_moment_ode_gradients_where_the_rates_vanish_and_in_the_feedback():
    """m1(T) = e^{aT} m1(0) + b m0 (e^{aT} − 1)/a with a = w + β: at a = 0, ∂m1/∂w = T m1(0) + b m0 T²/2
    (MODEL.md §5.2). The select of T at a = 0 gave 0.6 instead of 2.0 here, the same at w + β = 0, and for
    m2 with K > 0 (rate 2w) 3.68 instead of the 12.44 of finite differences. A traced β failed
    (float(feedback)); its derivative is ∂m1/∂β = ∂m1/∂w without diffusion."""
    m_init, T, b = jnp.array([1.0, 0.3, 0.5]), 2.0, 0.7

    def moment(w, k, feedback=None, diffusion=0.0):
        return mfj.moment_ode(w, b, m_init, jnp.array([T]), feedback=feedback, diffusion=diffusion)[0, k]

    exact = T * 0.3 + b * T**2 / 2
    np.testing.assert_allclose(jax.grad(moment)(0.0, 1), exact, rtol=1e-14)
    np.testing.assert_allclose(jax.grad(moment)(0.5, 1, -0.5), exact, rtol=1e-14)
    for w, k, fb, K in [(0.0, 2, None, 0.5), (0.0, 2, -0.3, 0.5), (1e-9, 1, None, 0.0), (-0.4, 2, 0.4, 0.2)]:
        h = 1e-5
        fd = (moment(w + h, k, fb, K) - moment(w - h, k, fb, K)) / (2 * h)
        np.testing.assert_allclose(jax.grad(moment)(w, k, fb, K), fd, rtol=1e-8)
    grad_beta = jax.grad(lambda beta: moment(-0.4, 1, beta))(0.1)
    np.testing.assert_allclose(grad_beta, jax.grad(moment)(-0.4, 1, 0.1), rtol=1e-14)
    jitted = jax.jit(lambda beta: moment(-0.4, 1, beta))
    np.testing.assert_allclose(jitted(0.1), moment(-0.4, 1, 0.1), rtol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"w": float("nan")}, ValueError, "w must be finite, got w=nan"),
        ({"b": float("inf")}, ValueError, "b must be finite, got b=inf"),
        ({"feedback": float("nan")}, ValueError, "feedback must be finite"),
        ({"feedback": "x"}, TypeError, "feedback must be a number, got str"),
        ({"diffusion": True}, TypeError, "diffusion must be a number, got bool"),
        ({"m_init": [1.0, float("nan"), 2.0]}, ValueError, "m_init must be finite, got 1 non-finite"),
        ({"m_init": [0.0, 0.0, 0.0]}, ValueError, "m_init's mass m0 must be > 0, got m0=0.0"),
    ],
)
def test_moment_ode_refuses_inputs_that_made_it_return_nan(kwargs, error, message):
    args = {"w": -1.0, "b": 0.0, "m_init": U28, "ts": TS} | kwargs
    with pytest.raises(error, match=message):
        mfj.moment_ode(**args)


def test_particle_moments_of_integer_data_do_not_overflow_and_need_a_particle():
    got = mfj.particle_moments(jnp.asarray([80, 90], dtype=jnp.int32), order=5)
    np.testing.assert_allclose(got, [(80**k + 90**k) / 2 for k in range(6)], rtol=1e-15)
    with pytest.raises(ValueError, match="n >= 1"):
        mfj.particle_moments(jnp.zeros((0,)))
