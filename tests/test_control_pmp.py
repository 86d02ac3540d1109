"""PMP forward–backward sweep: exact adjoints, an explicit optimum, gradient descent, the kinetic costate."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import norm

import meanfield_jax as mfj
from meanfield_jax.control import (
    AutoencODE,
    bimodal_data,
    cost,
    costate,
    hamiltonian_gradient,
    hessian_min_eigenvalue,
    solve_pmp,
)

REG = 0.1
SMALL_GRID = mfj.Grid2D((-7.0, 7.0, 141), (-3.0, 3.0, 7))  # ∂_x ψ is linear in y: a coarse y axis is exact


@pytest.fixture(scope="module")
def bimodal():
    return bimodal_data(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def tanh_field():
    return mfj.NeuralField(jnp.ones((10, 1, 1)), jnp.ones((10, 1)), activation="tanh", T=1.0)


@pytest.fixture(scope="module")
def particle_solution(tanh_field, bimodal):
    return solve_pmp(tanh_field, *bimodal, reg=REG, iterations=60, hessian=True)


def _random_fields():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    W = 0.8 * jax.random.normal(k1, (4, 2, 2))
    b = 0.5 * jax.random.normal(k2, (4, 2))
    return {
        "tanh": mfj.NeuralField(W, b, activation="tanh", T=1.3),
        "feedback": mfj.NeuralField(W, b, activation="sigmoid", T=1.3, feedback=-0.7),
        "autoencode": AutoencODE((2, 1, 2), layers_per_stage=2, T=1.3, key=k3, init_scale=0.8),
    }


def _cost_with_state_perturbations(field, x, y, deltas):
    """J with δ_l added to the state x_l (l = 0..L): ∂J/∂δ_l at δ = 0 is ∂J/∂x_l."""

    def layer(z, inputs):
        l, delta = inputs
        return mfj.particles.euler_step(field, l, z + delta), None

    xL, _ = jax.lax.scan(layer, x, (jnp.arange(field.num_layers), deltas[:-1]))
    return jnp.mean(jnp.sum((xL + deltas[-1] - y) ** 2, axis=-1))


@pytest.mark.parametrize("name", ["tanh", "feedback", "autoencode"])
def test_costate_is_the_gradient_of_the_cost_with_respect_to_the_states(name):
    field = _random_fields()[name]
    kx, ky = jax.random.split(jax.random.PRNGKey(2))
    n = 7
    x = jax.random.normal(kx, (n, field.d))
    y = jax.random.normal(ky, (n, field.d))
    states, costates = costate(field, x, y)
    deltas = jnp.zeros((field.num_layers + 1, n, field.d))
    grad = jax.grad(lambda dl: _cost_with_state_perturbations(field, x, y, dl))(deltas)
    assert costates.shape == (field.num_layers + 1, n, field.d)
    np.testing.assert_allclose(states, mfj.resnet_forward(field, x, save_every=1), rtol=0, atol=1e-14)
    np.testing.assert_allclose(costates, n * grad, rtol=0, atol=1e-10)
    assert np.max(np.abs(costates[0])) > 1e-2


@pytest.mark.parametrize("name", ["tanh", "feedback", "autoencode"])
def test_hamiltonian_gradient_is_minus_cost_gradient_over_dt(name):
    field = _random_fields()[name]
    kx, ky = jax.random.split(jax.random.PRNGKey(3))
    x = jax.random.normal(kx, (6, field.d))
    y = jax.random.normal(ky, (6, field.d))
    states, costates = costate(field, x, y)
    grad_H = hamiltonian_gradient(field, states, costates, REG)
    grad_J = eqx.filter_grad(lambda f: cost(f, x, y, REG))(field)
    np.testing.assert_allclose(grad_H.W, -grad_J.W / field.dt, rtol=0, atol=1e-10)
    np.testing.assert_allclose(grad_H.b, -grad_J.b / field.dt, rtol=0, atol=1e-10)


def test_linear_one_layer_problem_reaches_the_explicit_optimum():
    """σ = id, L = 1, d = 1: x_1 = x + Δt (w x + b), so J is the quadratic
    mean(Δt x w + Δt b − (y − x))² + reg Δt (w² + b²), minimised by the 2×2 normal equations."""
    x = np.linspace(-1.0, 2.0, 11)
    y = 0.3 + 1.7 * x + 0.2 * np.sin(3 * x)
    T, reg = 0.8, 0.05
    features = T * np.stack([x, np.ones_like(x)], axis=1)
    gram = features.T @ features / x.size + reg * T * np.eye(2)
    w_star, b_star = np.linalg.solve(gram, features.T @ (y - x) / x.size)
    J_star = np.mean((features @ [w_star, b_star] - (y - x)) ** 2) + reg * T * (w_star**2 + b_star**2)

    field = mfj.NeuralField(0.0, 0.0, activation="identity", T=T)
    res = solve_pmp(field, x, y, reg=reg, iterations=25, hessian=True)
    np.testing.assert_allclose([res.field.W[0, 0, 0], res.field.b[0, 0]], [w_star, b_star], rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.history[-1], J_star, rtol=1e-12)
    assert res.residual < 1e-9
    # the Hessian of the quadratic is 2 · gram everywhere
    np.testing.assert_allclose(res.hessian_min_eig, 2 * np.linalg.eigvalsh(gram)[0], rtol=1e-10)


def test_pmp_history_decreases_and_residual_vanishes(particle_solution):
    res = particle_solution
    assert res.history.shape == (61,)
    assert np.all(np.diff(res.history) <= 0.0)
    assert res.history[-1] < 0.25 * res.history[0]
    assert res.residual < 1e-3 * res.residual_history[0]
    # a strict local minimum: the Hessian of J is positive definite there
    assert res.hessian_min_eig > 0


def test_pmp_agrees_with_gradient_descent_on_the_same_cost(particle_solution, tanh_field, bimodal):
    x, y = bimodal
    fitted = mfj.training.fit(
        tanh_field, lambda f: cost(f, x, y, REG), optimizer=optax.adam(0.05), steps=600, progress=False
    )
    gd_field = fitted.params
    J_gd = float(cost(gd_field, x, y, REG))
    res = particle_solution
    assert abs(res.history[-1] - J_gd) < 0.02 * J_gd
    np.testing.assert_allclose(res.field.W, gd_field.W, atol=2e-2)
    np.testing.assert_allclose(res.field.b, gd_field.b, atol=2e-2)


def test_low_regularisation_decreases_monotonically_to_a_locally_convex_minimum(bimodal):
    x, y = bimodal
    field = mfj.NeuralField(-jnp.ones((10, 1, 1)), 0.5 * jnp.ones((10, 1)), activation="tanh", T=1.0)
    res = solve_pmp(field, x, y, reg=1e-4, iterations=60, hessian=True)
    assert np.all(np.isfinite(res.history))
    assert np.all(np.diff(res.history) <= 0.0)
    assert res.history[-1] < 0.01 * res.history[0]
    assert res.residual < 1e-6 * res.residual_history[0]
    assert res.hessian_min_eig > 0


def test_kinetic_and_particle_pmp_agree_in_1d(particle_solution, tanh_field, bimodal):
    kinetic = solve_pmp(tanh_field, *bimodal, reg=REG, iterations=60, method="kinetic", grid=SMALL_GRID)
    assert np.all(np.diff(kinetic.history) <= 0.0)
    J_particles = particle_solution.history[-1]
    assert abs(kinetic.history[-1] - J_particles) < 0.01 * J_particles
    np.testing.assert_allclose(kinetic.field.W, particle_solution.field.W, atol=3e-2)
    np.testing.assert_allclose(kinetic.field.b, particle_solution.field.b, atol=3e-2)
    np.testing.assert_allclose(kinetic.costate, particle_solution.costate, atol=0.1)


def test_kinetic_costate_converges_at_first_order_to_the_exact_value_function():
    """One tanh layer on [0, T]: sinh(w X + b) = sinh(w x + b) e^{wT} (MODEL.md §2.3) gives
    ψ(0, x, y) = (X(x) − y)² and ∂_x ψ = 2 (X − y) X'(x), X' = cosh(w x + b) e^{wT} / cosh(w X + b)."""
    w, b, T = 0.9, -0.3, 1.0
    x = np.linspace(-1.0, 1.0, 9)
    y = np.where(x > 0, 2.0, -2.0)
    X = (np.arcsinh(np.sinh(w * x + b) * np.exp(w * T)) - b) / w
    dX = np.cosh(w * x + b) * np.exp(w * T) / np.cosh(w * X + b)
    exact = 2 * (X - y) * dX
    field = mfj.NeuralField(w, b, activation="tanh", T=T)
    errors = []
    for nx in (200, 400, 800):
        grid = mfj.Grid2D((-5.0, 5.0, nx), (-3.0, 3.0, 4))
        _, p = costate(field, x, y, method="kinetic", grid=grid)
        errors.append(np.max(np.abs(np.asarray(p[0, :, 0]) - exact)))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 0.05
    np.testing.assert_allclose(orders, 1.0, atol=0.1)


def test_kinetic_costate_is_exact_for_a_constant_velocity():
    """F = b: ψ(t, x, y) = (x + b (T − t) − y)², quadratic in x, which upwind + centred differences keep."""
    field = mfj.NeuralField.constant(0.0, 0.7, num_layers=4, T=1.0, activation="identity")
    x = np.linspace(-1.0, 1.0, 5)
    y = np.array([-2.0, 1.0, 0.5, 2.0, 0.0])
    states, p = costate(field, x, y, method="kinetic", grid=SMALL_GRID)
    _, p_particles = costate(field, x, y)
    np.testing.assert_allclose(p, p_particles, rtol=0, atol=1e-11)
    terminal = 2 * (np.asarray(states[-1, :, 0]) - y)
    np.testing.assert_allclose(p[:, :, 0], np.broadcast_to(terminal, p.shape[:2]), rtol=0, atol=1e-11)


def test_kinetic_substep_budget_is_checked():
    field = mfj.NeuralField.constant(0.0, 0.7, num_layers=2, T=1.0, activation="identity")
    with pytest.raises(RuntimeError, match="max_substeps=1"):
        costate(field, [0.0, 1.0], [1.0, 0.0], method="kinetic", grid=SMALL_GRID, max_substeps=1)
    with pytest.raises(eqx.EquinoxRuntimeError, match="max_substeps=1"):  # the same check, compiled
        eqx.filter_jit(lambda b: costate(mfj.NeuralField.constant(0.0, b, num_layers=2, T=1.0), [0.0, 1.0],
                                  [1.0, 0.0], method="kinetic", grid=SMALL_GRID, max_substeps=1))(0.7)


@pytest.mark.parametrize("method", ["particles", "kinetic"])
def test_costate_under_jit_equals_the_eager_call(method):
    """The sub-step check called bool() on a traced flag: TracerBoolConversionError under jax.jit."""
    x, y = jnp.linspace(-1.0, 1.0, 6)[:, None], 2.0 * jnp.sign(jnp.linspace(-1.0, 1.0, 6))[:, None]

    def run(W):
        field = mfj.NeuralField(W, jnp.zeros((3, 1)), activation="tanh", T=1.0)
        kwargs = {"grid": SMALL_GRID, "max_substeps": 64} if method == "kinetic" else {}  # a traced W
        return costate(field, x, y, method=method, **kwargs)

    W = -0.5 * jnp.ones((3, 1, 1))
    for eager, compiled in zip(run(W), jax.jit(run)(W)):
        np.testing.assert_allclose(compiled, eager, rtol=1e-13, atol=1e-15)


def test_hessian_min_eigenvalue_matches_finite_differences(bimodal):
    x, y = bimodal
    field = mfj.NeuralField(0.5 * jnp.ones((2, 1, 1)), jnp.zeros((2, 1)), activation="tanh", T=1.0)
    theta = np.array([0.5, 0.5, 0.0, 0.0])

    @jax.jit
    def J(v):
        f = eqx.tree_at(lambda g: (g.W, g.b), field, (v[:2].reshape(2, 1, 1), v[2:].reshape(2, 1)))
        return cost(f, x, y, REG)

    h = 1e-4
    eye = np.eye(4) * h
    hess = np.array(
        [[float(J(theta + a + c) - J(theta + a - c) - J(theta - a + c) + J(theta - a - c)) / (4 * h * h)
          for c in eye] for a in eye]
    )
    smallest = hessian_min_eigenvalue(field, x, y, REG)
    np.testing.assert_allclose(smallest, np.linalg.eigvalsh(hess)[0], atol=1e-6)


def test_bimodal_data_follows_the_truncated_gaussian_law():
    x, y = bimodal_data(jax.random.PRNGKey(4), n_per_mode=20000, radius=0.2)
    x, y = np.asarray(x[:, 0]).reshape(2, -1), np.asarray(y[:, 0]).reshape(2, -1)
    np.testing.assert_array_equal(y[0], -2.0)
    np.testing.assert_array_equal(y[1], 2.0)
    xi = x - np.array([[-1.0], [1.0]])
    assert np.max(np.abs(xi)) <= 0.2
    a = 0.2
    variance = 1 - 2 * a * norm.pdf(a) / (2 * norm.cdf(a) - 1)  # standard normal truncated to [−a, a]
    standard_error = np.sqrt(2 / xi.shape[1]) * variance
    assert np.all(np.abs(xi.var(axis=1) - variance) < 4 * standard_error)
    assert np.all(np.abs(xi.mean(axis=1)) < 4 * np.sqrt(variance / xi.shape[1]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "adjoint"}, ValueError, "method must be 'particles' or 'kinetic'"),
        ({"reg": -1.0}, ValueError, "reg must be a finite number >= 0"),
        ({"iterations": 0}, ValueError, "iterations must be a positive integer"),
        ({"y": np.zeros((5, 1))}, ValueError, "x and y must have the same shape"),
        ({"x": np.zeros((4, 2)), "y": np.zeros((4, 2))}, ValueError, r"shape \(n, d\)"),
        ({"method": "kinetic", "grid": mfj.Grid1D(0, 1, 4)}, TypeError, "grid must be a Grid2D"),
        ({"method": "kinetic", "cfl": 1.5}, ValueError, "cfl must be in"),
        ({"step_size": 0.0}, ValueError, "step_size must be a finite number > 0"),
        ({"x": np.array([[0.0], [np.nan], [1.0], [2.0]])}, ValueError, "x must be finite, got 1 non-finite"),
        ({"y": np.full((4, 1), np.inf)}, ValueError, "y must be finite, got 4 non-finite"),
    ],
)
def test_bad_input_is_rejected(tanh_field, kwargs, error, match):
    args = {"x": np.zeros((4, 1)), "y": np.zeros((4, 1)), **kwargs}
    with pytest.raises(error, match=match):
        solve_pmp(tanh_field, **args)


def test_kinetic_method_needs_1d_data():
    field = mfj.NeuralField(np.eye(2), np.zeros(2), activation="tanh")
    with pytest.raises(ValueError, match="1-D data only, got d=2"):
        solve_pmp(field, np.zeros((3, 2)), np.zeros((3, 2)), method="kinetic")
