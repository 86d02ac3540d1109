"""Fokker–Planck solver and steady state against exact solutions (MODEL.md §6, §7.4), in float64.

Oracles: B(z) = z/expm1(z); the Ornstein–Uhlenbeck transient (Gaussian with the mean and variance laws of
``moment_ode``); the zero-flux steady state (1/K) exp(∫F/K) of §6.3, exact at the nodes for OU; the 2-D
Gaussian with the Lyapunov covariance W C + C Wᵀ + 2K I = 0; central finite differences for gradients.
"""

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kinetic_cases import assert_same_solves, solves_by_adjoint
from scipy import integrate, linalg, stats

import meanfield_jax as mfj
from meanfield_jax import chang_cooper
from meanfield_jax.chang_cooper import (
    apply_fitted_operator,
    bernoulli,
    fitted_flux_coefficients,
    fitted_operator_vjp,
    heun_flux_coefficients,
    heun_update,
    heun_update_s_vjp,
    heun_update_vjp,
    heun_whole_step,
    heun_whole_step_flux,
    heun_whole_step_stencil,
    outflow_rate,
    pad_cells,
)
from meanfield_jax.fokker_planck import _heun_update_written, fokker_planck_steady_state, solve_fokker_planck


def gaussian(x, mean, var):
    return np.exp(-((x - mean) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)


def l1(f, g, grid):
    return float(np.sum(np.abs(np.asarray(f) - np.asarray(g))) * grid.cell_volume)


def orders(errors):
    errors = np.asarray(errors)
    return np.log2(errors[:-1] / errors[1:])


def moments_1d(f, grid):
    """(m0, mean, variance) of every row of f (midpoint sums)."""
    f, x = np.asarray(f), np.asarray(grid.x)
    m0 = f.sum(axis=-1) * grid.dx
    mean = (f * x).sum(axis=-1) * grid.dx / m0
    return m0, mean, (f * x**2).sum(axis=-1) * grid.dx / m0 - mean**2


def ou_moments(w, b, K, mean0, var0, ts):
    """Mean and variance of the OU law from the exact moment ODE."""
    m_init = jnp.array([1.0, mean0, var0 + mean0**2])
    m = np.asarray(mfj.moment_ode(w, b, m_init, jnp.asarray(ts), diffusion=K))
    return m[:, 1], m[:, 2] - m[:, 1] ** 2


# ---- the exponentially fitted flux -------------------------------------------------------------------------
def test_bernoulli_accurate_and_stable_for_all_arguments():
    z = np.concatenate([-np.logspace(-12, np.log10(700), 300), np.logspace(-12, np.log10(700), 300)])
    reference = z / np.expm1(z)  # expm1 is accurate to an ulp, so this is the exact value in float64
    np.testing.assert_allclose(np.asarray(bernoulli(z)), reference, rtol=4e-15, atol=0)
    assert float(bernoulli(0.0)) == 1.0
    # B(−z) − B(z) = z, also far beyond exp's overflow, and finite derivatives everywhere
    big = jnp.array([-800.0, -50.0, -1e-3, 0.0, 1e-3, 50.0, 800.0])
    difference = np.asarray(bernoulli(-big) - bernoulli(big))
    np.testing.assert_allclose(difference, np.asarray(big), rtol=1e-14, atol=1e-15)
    slopes = np.asarray(jax.vmap(jax.grad(bernoulli))(big))
    assert np.all(np.isfinite(slopes))
    assert slopes[3] == pytest.approx(-0.5, abs=1e-15)  # B'(0) = −1/2
    assert slopes[0] == pytest.approx(-1.0, abs=1e-15) and slopes[-1] == pytest.approx(0.0, abs=1e-15)


def test_fitted_flux_consistency_upwind_limit_and_zero_flux_ratio():
    h = 0.1
    a = jnp.array([-30.0, -2.0, -1e-4, 0.0, 1e-4, 0.7, 30.0])
    K = jnp.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.02, 0.1])
    alpha, beta = fitted_flux_coefficients(a, K, h)
    assert np.all(np.asarray(alpha) >= 0) and np.all(np.asarray(beta) >= 0)
    # a constant density carries the flux a f
    np.testing.assert_allclose(np.asarray(alpha - beta), np.asarray(a), rtol=1e-14, atol=1e-15)
    # the zero-flux ratio f_{i+1}/f_i = α/β is exp(a h / K) (compare logs: the ratio spans 1e-13 ... 1e13)
    log_ratio = np.log(np.asarray(alpha / beta))
    np.testing.assert_allclose(log_ratio, np.asarray(a * h / K), rtol=1e-13, atol=1e-15)
    # a = 0: the central difference K/h; K = 0: upwind (a⁺, a⁻)
    assert float(alpha[3]) == pytest.approx(5.0, rel=1e-15)
    assert float(beta[3]) == pytest.approx(5.0, rel=1e-15)
    up_a, up_b = fitted_flux_coefficients(a, 0.0, h)
    np.testing.assert_array_equal(np.asarray(up_a), np.maximum(np.asarray(a), 0))
    np.testing.assert_array_equal(np.asarray(up_b), np.maximum(-np.asarray(a), 0))
    # dα/da at a = 0 is 1/2 (no kink from |a|): compare with a central difference
    def alpha_of(s):
        return fitted_flux_coefficients(s, 0.5, h)[0]

    slope = float(jax.grad(alpha_of)(0.0))
    fd = float((alpha_of(1e-6) - alpha_of(-1e-6)) / 2e-6)
    assert slope == pytest.approx(0.5, rel=1e-12) and fd == pytest.approx(0.5, rel=1e-8)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 5)])
@pytest.mark.parametrize("constant_K", [True, False])
def test_fitted_flux_on_many_faces_is_that_of_each_face_alone(shape, constant_K):
    """The coefficients of an array of faces (an odd count is evaluated on CPU with one face repeated and
    dropped) and their cotangents in a and K equal those of each face evaluated alone."""
    keys = jax.random.split(jax.random.key(11), 3)
    a = (3.0 * jax.random.normal(keys[0], shape)).at[..., 0].set(1e-4)  # one face on the series branch
    K = 0.4 if constant_K else jax.random.uniform(keys[1], shape, maxval=0.5).at[..., -1].set(0.0)
    h, q = 0.1, tuple(jax.random.normal(keys[2], (2, *shape)))

    def together(a, K):
        return fitted_flux_coefficients(a, K, h)

    def alone(a, K):
        one_by_one = jax.vmap(fitted_flux_coefficients, in_axes=(0, 0, None))
        alpha, beta = one_by_one(a.ravel(), jnp.broadcast_to(K, shape).ravel(), h)
        return alpha.reshape(shape), beta.reshape(shape)

    got, want = together(a, K), alone(a, K)
    assert got[0].shape == got[1].shape == shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-15, atol=0)
    got_bar, want_bar = jax.vjp(together, a, K)[1](q), jax.vjp(alone, a, K)[1](q)
    for g, w in zip(got_bar, want_bar):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("shape", [(9,), (6, 5)])
def test_fitted_operator_vjp_is_the_operators_own(shape):
    """Lᵀ q and the coefficients' cotangents written out equal JAX's VJP of ⟨q, L f⟩ (random α, β ≥ 0)."""
    keys = iter(jax.random.split(jax.random.key(3), 2 + 2 * len(shape)))
    f, q = jax.random.uniform(next(keys), shape), jax.random.normal(next(keys), shape)
    spacing = (0.3, 0.45)[: len(shape)]
    coefficients = tuple(
        tuple(jax.random.uniform(next(keys), tuple(n - (b == a) for b, n in enumerate(shape))) for _ in "ab")
        for a in range(len(shape))
    )
    _, vjp = jax.vjp(lambda c, g: apply_fitted_operator(c, g, spacing), coefficients, f)
    expected_c, expected_f = vjp(q)
    transposed, cotangents = fitted_operator_vjp(coefficients, f, q, spacing)
    np.testing.assert_allclose(transposed, expected_f, rtol=1e-14, atol=1e-15)
    for ours, theirs in zip(jax.tree.leaves(cotangents), jax.tree.leaves(expected_c)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=1e-15)


def _random_operator(n=11, h=0.3, seed=5):
    """Random face coefficients α, β ≥ 0 of L, a density f ≥ 0, and Δt at the explicit step bound."""
    keys = jax.random.split(jax.random.key(seed), 3)
    alpha, beta = (jax.random.uniform(k, (n - 1,), minval=0.1, maxval=2.0) for k in keys[:2])
    f = jax.random.uniform(keys[2], (n,))
    dt = 1.0 / float(jnp.max(outflow_rate(((alpha, beta),), (h,))))
    return alpha, beta, f, h, dt


@pytest.mark.parametrize("s", [1.0, 0.37])
def test_one_pass_heun_update_is_heuns_two_stage_step(s):
    """The conservative one-pass update of length sΔt equals Heun's two stages f₁ = f + τLf,
    (f + f₁ + τLf₁)/2, τ = sΔt, to round-off; at the step bound it keeps f ≥ 0 and the mass."""
    alpha, beta, f, h, dt = _random_operator()
    tau = s * dt
    f1 = f + tau * apply_fitted_operator(((alpha, beta),), f, (h,))
    expected = 0.5 * (f + f1 + tau * apply_fitted_operator(((alpha, beta),), f1, (h,)))
    out = heun_update(heun_flux_coefficients(alpha, beta, h, dt), f, s)
    np.testing.assert_allclose(out, expected, rtol=1e-14, atol=1e-16)
    assert float(jnp.min(out)) >= 0.0
    assert float(jnp.sum(out)) == pytest.approx(float(jnp.sum(f)), rel=1e-15)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 11])
def test_whole_step_stencil_is_the_one_pass_update_of_full_length(n):
    """Heun's step of the whole length Δt as one four-point stencil, (q₋₁, a + q₀, q₁ − b, q₂), equals the
    six-coefficient update at s = 1 and Heun's two stages to round-off, keeps f ≥ 0 and conserves mass;
    down to two cells (the flux on the inner faces is read by slices of f from three cells on)."""
    alpha, beta, f, h, dt = _random_operator(n)
    coefficients = heun_flux_coefficients(alpha, beta, h, dt)
    f1 = f + dt * apply_fitted_operator(((alpha, beta),), f, (h,))
    two_stages = 0.5 * (f + f1 + dt * apply_fitted_operator(((alpha, beta),), f1, (h,)))
    out = heun_whole_step(heun_whole_step_stencil(coefficients), f)
    np.testing.assert_allclose(out, heun_update(coefficients, f, 1.0), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(out, two_stages, rtol=1e-14, atol=1e-16)
    assert float(jnp.min(out)) >= 0.0
    assert float(jnp.sum(out)) == pytest.approx(float(jnp.sum(f)), rel=1e-15)


def test_solve_with_whole_steps_matches_the_six_coefficient_steps():
    """A solve's full steps take the four-point stencil, its steps landing on a stop (save times, layer
    boundaries) the six-coefficient update; the discrete adjoint's solve takes the latter throughout. Both
    agree to round-off and conserve mass, over several layers and save times."""
    grid = mfj.Grid1D(-6.0, 10.0, 300)
    field = mfj.NeuralField.constant(-1.0, 0.3, num_layers=3, T=0.3, activation="tanh")
    f0 = grid.project(lambda x: jnp.exp(-0.5 * (x - 2.0) ** 2))
    save_at = [0.0, 0.05, 0.17, 0.3]
    whole, six = (
        solve_fokker_planck(field, f0, grid, diffusion=0.7, save_at=save_at, adjoint=adjoint).f
        for adjoint in ("checkpointed", "discrete")
    )
    np.testing.assert_allclose(whole, six, rtol=1e-12, atol=1e-15)
    mass = grid.integrate(f0)
    for f in whole:
        assert float(grid.integrate(f)) == pytest.approx(float(mass), rel=1e-13)


def test_small_grids_carry_the_right_walls_zero_flux_in_the_one_pass_step(monkeypatch):
    """Below ``WALL_FLUX_BELOW`` cells the one-pass step's face flux also holds the right wall's (zero) flux,
    so that its update pads one shifted copy instead of two: the densities bit for bit, and the gradients of
    every adjoint, are those of the flux on the inner faces alone."""
    grid = mfj.Grid1D(-6.0, 6.0, 64)
    f0 = grid.project(lambda x: jnp.exp(-0.5 * (x - 1.0) ** 2))
    W, b = jnp.asarray([[[-0.8]], [[0.5]]]), jnp.asarray([[0.3], [-0.6]])
    alpha, beta, f, h, dt = _random_operator(64)
    stencil = heun_whole_step_stencil(heun_flux_coefficients(alpha, beta, h, dt))

    def loss(W, b, adjoint):
        field = mfj.NeuralField(W, b, activation="tanh", T=1.0)
        sol = solve_fokker_planck(field, f0, grid, diffusion=0.4, max_steps=200, adjoint=adjoint)
        return jnp.sum(grid.x * sol.f[-1]), sol.f[-1]

    results, faces = [], []
    for threshold in (chang_cooper.WALL_FLUX_BELOW, 0):
        monkeypatch.setattr(chang_cooper, "WALL_FLUX_BELOW", threshold)
        jax.clear_caches()
        faces.append(heun_whole_step_flux(stencil, f).shape)
        results.append(solves_by_adjoint(loss, W, b))
    jax.clear_caches()
    assert faces == [(64,), (63,)]
    with_wall, inner = results
    for (_, f), _ in with_wall.values():
        assert float(jnp.abs(f - f0).max()) > 1e-3
    assert_same_solves(with_wall, inner)


def test_one_pass_heun_update_written_adjoint_is_jaxs_own():
    """∂/∂α, ∂/∂β (through a, b and the q's made of them), ∂/∂f and ∂/∂s written out equal JAX's VJP of
    ⟨p, heun_update(heun_flux_coefficients(α, β, h, Δt), f, s)⟩."""
    alpha, beta, f, h, dt = _random_operator()
    p = jax.random.normal(jax.random.key(8), f.shape)
    s = 0.6

    def total(alpha, beta, f, s):
        return jnp.vdot(p, heun_update(heun_flux_coefficients(alpha, beta, h, dt), f, s))

    expected = jax.grad(total, argnums=(0, 1, 2, 3))(alpha, beta, f, s)
    coefficients = heun_flux_coefficients(alpha, beta, h, dt)
    for padded in (False, True):  # f and p given padded by pad_cells: the same cotangents
        f_in, p_in = (pad_cells(f), pad_cells(p)) if padded else (f, p)
        (d_a, d_b), d_f = heun_update_vjp(coefficients, f_in, s, p_in, padded=padded)
        d_s = heun_update_s_vjp(coefficients, f_in, s, p_in, padded=padded)
        ours = (d_a[1:-1] * dt / h, d_b[1:-1] * dt / h, d_f, d_s)
        for mine, theirs in zip(ours, expected):
            np.testing.assert_allclose(mine, theirs, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("full", [False, True])
def test_one_pass_step_of_the_discrete_adjoint_has_no_length_derivative_on_full_steps(full):
    """The discrete adjoint's step takes σ = 1 on a full step (s is then not its length), else σ = s: its
    derivative in s is that of heun_update on a step landing on a stop, even at s = 1, and zero on a
    full one; the other cotangents are JAX's in both cases."""
    alpha, beta, f, h, dt = _random_operator()
    p = jax.random.normal(jax.random.key(9), f.shape)
    coefficients = heun_flux_coefficients(alpha, beta, h, dt)

    def written(coefficients, f, s):
        return jnp.vdot(p, _heun_update_written(coefficients, f, s, jnp.asarray(full)))

    def plain(coefficients, f, s):
        return jnp.vdot(p, heun_update(coefficients, f, 1.0 if full else s))

    for s in (1.0, 0.45):
        if full and s != 1.0:
            continue
        grads = jax.grad(written, argnums=(1, 2))(coefficients, f, jnp.asarray(s))
        expected = jax.grad(plain, argnums=(1, 2))(coefficients, f, jnp.asarray(s))
        np.testing.assert_allclose(grads[0], expected[0], rtol=1e-13, atol=1e-16)
        assert float(grads[1]) == pytest.approx(float(expected[1]), rel=1e-13, abs=1e-16)
        assert (float(grads[1]) == 0.0) == full
    # σ = 0 (a step past the end of the save interval) leaves f and its cotangent as they are
    past_end = (jnp.asarray(0.0), jnp.asarray(False))
    np.testing.assert_array_equal(_heun_update_written(coefficients, f, *past_end), f)
    d_f = jax.grad(lambda g: jnp.vdot(p, _heun_update_written(coefficients, g, *past_end)))(f)
    np.testing.assert_array_equal(d_f, p)


# ---- steady states -----------------------------------------------------------------------------------------
FIG9_GRID = mfj.Grid1D(-6.0, 10.0, 400)
FIG9_FIELD = mfj.NeuralField(-1.0, 0.0, activation="identity", T=5.0)


def test_fig9_steady_state_is_the_gaussian_at_the_nodes():
    grid = FIG9_GRID
    f = np.asarray(fokker_planck_steady_state(FIG9_FIELD, grid, 1.0, scheme="scharfetter_gummel"))
    x = np.asarray(grid.x)
    nodal = gaussian(x, 0.0, 1.0)
    assert float(grid.integrate(f)) == pytest.approx(1.0, abs=1e-14)
    # exact at the nodes: f_i ∝ exp(−x_i²/2) to round-off
    np.testing.assert_allclose(f, nodal / (nodal.sum() * grid.dx), rtol=1e-12, atol=1e-300)
    # and N(0, 1) itself up to the mass outside [−6, 10] (1e-9)
    assert np.max(np.abs(f - nodal)) < 1e-9
    # moments: those of N(0, 1) truncated to [−6, 10] (the midpoint rule is spectrally accurate here)
    _, mean, var = moments_1d(f[None], grid)
    truncated = stats.truncnorm(-6.0, 10.0)
    assert mean[0] == pytest.approx(truncated.mean(), abs=1e-10)
    assert var[0] == pytest.approx(truncated.var(), abs=1e-10)


def test_ou_steady_state_exact_for_any_weight_bias_and_diffusion():
    grid = mfj.Grid1D(-3.0, 4.0, 100)
    w, b, K = -2.5, 1.5, 0.4  # N(−b/w, −K/w) = N(0.6, 0.16)
    f = np.asarray(fokker_planck_steady_state(mfj.NeuralField(w, b), grid, K))
    nodal = gaussian(np.asarray(grid.x), -b / w, -K / w)
    np.testing.assert_allclose(f, nodal / (nodal.sum() * grid.dx), rtol=1e-12)


def _closed_form_errors(field, lo, hi, K, density, ns=(100, 200)):
    """Max-norm errors of the discrete steady state against density/∫density on [lo, hi]."""
    Z = integrate.quad(density, lo, hi, limit=200, epsabs=1e-14, epsrel=1e-13)[0]
    errors = []
    for n in ns:
        grid = mfj.Grid1D(lo, hi, n)
        f = np.asarray(fokker_planck_steady_state(field, grid, K))
        assert float(grid.integrate(f)) == pytest.approx(1.0, abs=1e-13)
        errors.append(np.max(np.abs(f - density(np.asarray(grid.x)) / Z)))
    return errors


W1, B1, K1 = -1.5, 0.4, 0.6
SQRT2 = np.sqrt(2.0)
BETA_THETA, BETA_MEAN, BETA_KAPPA = 4.0, 0.4, 0.5  # K = κ x (1 − x), F = −θ (x − m): Beta(θm/κ, θ(1−m)/κ)
CLOSED_FORMS = {
    # f∞ = (1/K) exp(∫ σ(w x + b)/K dx): tanh → cosh(wx + b)^{1/(wK)}, sigmoid → exp(softplus(wx + b)/(wK))
    "tanh": (mfj.NeuralField(W1, B1, activation="tanh"), (-5.0, 5.0), K1,
             lambda x: np.cosh(W1 * x + B1) ** (1 / (W1 * K1))),
    "sigmoid": (mfj.NeuralField(W1, B1, activation="sigmoid"), (-5.0, 5.0), K1,
                lambda x: np.exp(np.logaddexp(0.0, W1 * x + B1) / (W1 * K1))),
    # K = 1 + x²/2, F = 0.5 − x: ∫F/K = atan(x/√2)/√2 − ln K
    "K=1+x^2/2": (mfj.NeuralField(-1.0, 0.5), (-8.0, 8.0), lambda x: 1 + 0.5 * x**2,
                  lambda x: (1 + x**2 / 2) ** -2 * np.exp(np.arctan(x / SQRT2) / SQRT2)),
    "beta": (mfj.NeuralField(-BETA_THETA, BETA_THETA * BETA_MEAN), (0.0, 1.0),
             lambda x: BETA_KAPPA * x * (1 - x),
             lambda x: x ** (BETA_THETA * BETA_MEAN / BETA_KAPPA - 1)
             * (1 - x) ** (BETA_THETA * (1 - BETA_MEAN) / BETA_KAPPA - 1)),
}


@pytest.mark.parametrize("case", list(CLOSED_FORMS))
def test_steady_state_matches_closed_form_at_second_order(case):
    field, (lo, hi), K, density = CLOSED_FORMS[case]
    errors = _closed_form_errors(field, lo, hi, K, density)
    assert errors[-1] < 3e-4
    np.testing.assert_allclose(orders(errors), 2.0, atol=0.1)


# ---- time stepping -----------------------------------------------------------------------------------------
OU_W, OU_B, OU_K, OU_MEAN0, OU_VAR0 = -1.0, 0.5, 0.5, 2.0, 0.25
OU_TIMES = (0.25, 0.5, 1.0)


def _ou_errors(method, n, **kw):
    """L1 errors against the exact Gaussians, and errors of mean and variance against moment_ode."""
    grid = mfj.Grid1D(-4.0, 6.0, n)
    x = np.asarray(grid.x)
    sol = solve_fokker_planck(mfj.NeuralField(OU_W, OU_B), gaussian(x, OU_MEAN0, OU_VAR0), grid, OU_K,
                              save_at=OU_TIMES, method=method, **kw)
    mean, var = ou_moments(OU_W, OU_B, OU_K, OU_MEAN0, OU_VAR0, OU_TIMES)
    exact = gaussian(x[None], mean[:, None], var[:, None])
    _, num_mean, num_var = moments_1d(sol.f, grid)
    return (max(l1(sol.f[k], exact[k], grid) for k in range(len(OU_TIMES))),
            np.max(np.abs(num_mean - mean)), np.max(np.abs(num_var - var)))


@pytest.mark.parametrize("method", ["explicit", "implicit"])
def test_ou_transient_gaussian_mean_and_variance_converge_at_second_order(method):
    ns = (100, 200)
    # Crank–Nicolson with Δt ∝ Δx for the implicit scheme; the explicit step is ∝ Δx² by stability
    kw = [{"theta": 0.5, "dt": 5.0 / n} if method == "implicit" else {} for n in ns]
    errors = np.array([_ou_errors(method, n, **k) for n, k in zip(ns, kw)])
    assert errors[-1, 0] < 2e-3 and errors[-1, 1] < 1e-3 and errors[-1, 2] < 1e-3
    np.testing.assert_allclose(orders(errors[:, 0]), 2.0, atol=0.25)
    np.testing.assert_allclose(orders(errors[:, 2]), 2.0, atol=0.25)


def test_fig9_long_time_solution_tends_to_standard_normal():
    grid = FIG9_GRID
    x = np.asarray(grid.x)
    f0 = np.where((x > 2) & (x < 8), 1 / 6, 0.0)  # 2 and 8 are faces: these are the exact cell averages
    ts = (0.0, 0.5, 1.0, 5.0, 15.0)
    sol = solve_fokker_planck(FIG9_FIELD, f0, grid, 1.0, save_at=ts)
    mass, mean, var = moments_1d(sol.f, grid)
    np.testing.assert_allclose(mass, 1.0, rtol=1e-13)
    exact_mean, exact_var = ou_moments(-1.0, 0.0, 1.0, 5.0, 3.0, ts)  # U[2, 8]: mean 5, variance 3
    # second-order errors, about Δx² = 1.6e-3
    np.testing.assert_allclose(mean, exact_mean, rtol=0, atol=grid.dx**2)
    np.testing.assert_allclose(var, exact_var, rtol=0, atol=grid.dx**2)
    assert l1(sol.f[-1], gaussian(np.asarray(grid.x), 0.0, 1.0), grid) < 5e-6  # mean 5 e^{−15} ≈ 1.5e-6


STEADY_FIELD = mfj.NeuralField(-2.0, 0.3, activation="tanh")
STEADY_GRID = mfj.Grid1D(-4.0, 4.0, 100)


def steady_K(x):
    return 0.5 + 0.1 * x**2


@pytest.mark.parametrize(
    ("method", "kw"),
    [("explicit", {}), ("implicit", {"dt": 0.02}), ("implicit", {"theta": 0.5, "dt": 0.02})],
)
def test_time_steppers_converge_to_the_direct_steady_state(method, kw):
    grid = STEADY_GRID
    f0 = np.where(np.asarray(grid.x) > 1.0, 1.0 / 3.0, 0.0)
    sol = solve_fokker_planck(STEADY_FIELD, f0, grid, steady_K, save_at=(40.0,), method=method, **kw)
    f_inf = np.asarray(fokker_planck_steady_state(STEADY_FIELD, grid, steady_K)) * f0.sum() * grid.dx
    assert np.max(np.abs(np.asarray(sol.f[-1]) - f_inf)) < 1e-10 * f_inf.max()


def test_mass_and_positivity_from_discontinuous_data_at_the_stability_limit():
    grid = mfj.Grid1D(-3.0, 3.0, 120)
    f0 = np.zeros(120)
    f0[30] = 1.0 / grid.dx  # a single-cell spike
    f0[70:90] = 0.5 / (20 * grid.dx)  # and a box
    field = mfj.NeuralField(1.0, -0.2)  # repelling: the mass piles up on the walls
    for K in (0.0, 0.01):  # one compiled loop: max_steps fixes its length (the steps past the end are idle)
        sol = solve_fokker_planck(field, f0, grid, K, save_at=(0.1, 0.5, 2.0), cfl=1.0, max_steps=400)
        np.testing.assert_allclose(moments_1d(sol.f, grid)[0], 1.5, rtol=1e-14)
        assert float(jnp.min(sol.f)) >= -1e-16 * float(jnp.max(sol.f))
        np.testing.assert_array_equal(np.asarray(sol.outflow), 0.0)


def test_float32_implicit_solve_takes_the_steps_its_dt_gives():
    """dt = T/256 in float32: the loop's time, a running sum, fell short of T after 256 steps and the solve
    stopped with "ran out of steps (max_steps=256 ...)". Now it takes the 256 steps and conserves the mass."""
    grid = mfj.Grid1D(-5.0, 5.0, 64)
    field = mfj.NeuralField.constant(np.float32(-1.0), np.float32(0.5), num_layers=1)
    f0 = grid.project(lambda x: jnp.exp(-(x**2))).astype(jnp.float32)
    sol = solve_fokker_planck(field, f0, grid, 0.3, t_final=0.7, method="implicit", dt=0.7 / 256)
    assert sol.f.dtype == jnp.float32
    assert int(sol.num_steps) == 256
    np.testing.assert_allclose(float(grid.integrate(sol.f[-1])), float(grid.integrate(f0)), rtol=1e-5)


def test_implicit_is_positive_and_stable_at_100_times_the_explicit_step():
    grid = mfj.Grid1D(-5.0, 5.0, 100)
    K, field = 0.5, mfj.NeuralField(-1.0, 1.0)
    a_max = float(jnp.max(jnp.abs(field.velocity(0.0, grid.faces[:, None]))))
    dt = 100 * grid.dx**2 / (2 * K + a_max * grid.dx)  # 100 × the explicit limit Δx²/(2K + |a| Δx)
    f0 = np.where(np.abs(np.asarray(grid.x) - 3.0) < 0.5, 1.0, 0.0)
    sol = solve_fokker_planck(field, f0, grid, K, save_at=(1.0, 30.0), method="implicit", dt=dt)
    assert int(sol.num_steps) < 400
    assert float(jnp.min(sol.f)) >= 0.0
    np.testing.assert_allclose(moments_1d(sol.f, grid)[0], f0.sum() * grid.dx, rtol=1e-13)
    f_inf = fokker_planck_steady_state(field, grid, K) * float(grid.integrate(f0))
    assert float(jnp.max(jnp.abs(sol.f[-1] - f_inf))) < 1e-10


def test_layers_and_feedback_follow_the_moment_laws():
    """Two layers with biases +1 and −1 on [0, 0.5) and [0.5, 1) (the steps must land on t = 0.5) and the
    feedback b_l + β m1/m0: on each layer the moments follow moment_ode, m1 with rate w + β, V with 2w."""
    grid = mfj.Grid1D(-6.0, 8.0, 200)
    f0 = gaussian(np.asarray(grid.x), 2.0, 0.5)
    field = mfj.NeuralField(-1.0, jnp.array([1.0, -1.0]), T=1.0, feedback=-1.0)
    K, half = 0.3, jnp.array([0.5])
    m_half = mfj.moment_ode(-1.0, 1.0, jnp.array([1.0, 2.0, 4.5]), half, feedback=-1.0, diffusion=K)[0]
    m_end = mfj.moment_ode(-1.0, -1.0, m_half, half, feedback=-1.0, diffusion=K)[0]
    oracle = np.stack([np.asarray(m_half), np.asarray(m_end)])
    tol = grid.dx**2  # second order in Δx with a constant below 1 (and the implicit step lags the mean: Δt)
    for method, kw in (("explicit", {}), ("implicit", {"dt": 0.001})):
        sol = solve_fokker_planck(field, f0, grid, K, save_at=(0.5, 1.0), method=method, **kw)
        _, mean, var = moments_1d(sol.f, grid)
        np.testing.assert_allclose(mean, oracle[:, 1], rtol=0, atol=tol)
        np.testing.assert_allclose(var, oracle[:, 2] - oracle[:, 1] ** 2, rtol=0, atol=2 * tol)


# ---- two dimensions ----------------------------------------------------------------------------------------
W2 = np.array([[-1.0, 0.5], [-0.3, -1.2]])  # W + Wᵀ negative definite, not symmetric
B2 = np.array([0.2, -0.1])
K2 = 0.5
C2 = linalg.solve_continuous_lyapunov(W2, -2 * K2 * np.eye(2))  # W C + C Wᵀ + 2K I = 0
MU2 = -np.linalg.solve(W2, B2)
GRIDS_2D = [mfj.Grid2D((-4.5, 4.5, 20), (-5.0, 5.0, 24)), mfj.Grid2D((-4.5, 4.5, 40), (-5.0, 5.0, 48))]


def moments_2d(f, grid):
    """(m0, mean (2,), covariance (2, 2)) of f on a 2-D grid (midpoint sums)."""
    f = np.asarray(f)
    points = np.stack([np.asarray(c).ravel() for c in grid.mesh()])
    weights = f.ravel() * grid.cell_volume
    mass = weights.sum()
    mean = points @ weights / mass
    centred = points - mean[:, None]
    return mass, mean, (centred * weights) @ centred.T / mass


def test_2d_diagonal_steady_state_is_the_product_gaussian_at_the_nodes():
    grid = GRIDS_2D[0]
    w, b = np.array([-1.0, -2.0]), np.array([0.3, -0.2])
    f = np.asarray(fokker_planck_steady_state(mfj.NeuralField(np.diag(w), b), grid, K2))
    X, Y = (np.asarray(c) for c in grid.mesh())
    nodal = gaussian(X, -b[0] / w[0], -K2 / w[0]) * gaussian(Y, -b[1] / w[1], -K2 / w[1])
    np.testing.assert_allclose(f, nodal / (nodal.sum() * grid.cell_volume), rtol=1e-11)


def test_2d_steady_state_mean_and_lyapunov_covariance():
    errors = []
    for grid in GRIDS_2D:
        f = fokker_planck_steady_state(mfj.NeuralField(W2, B2), grid, K2)
        mass, mean, cov = moments_2d(f, grid)
        assert float(mass) == pytest.approx(1.0, abs=1e-13) and float(jnp.min(f)) > 0
        errors.append((np.max(np.abs(mean - MU2)), np.max(np.abs(cov - C2))))
    errors = np.array(errors)
    assert errors[-1, 1] < 1e-3 and errors[-1, 0] < 1e-4
    np.testing.assert_allclose(orders(errors[:, 1]), 2.0, atol=0.2)


def test_2d_transient_mean_and_covariance_laws():
    """μ(t) = μ∞ + e^{Wt}(μ0 − μ∞), C(t) = C∞ + e^{Wt}(C0 − C∞)e^{Wᵀt} (explicit, and Crank–Nicolson)."""
    mu0, var0, t = np.array([1.5, -1.0]), 0.3, 0.5
    E = linalg.expm(W2 * t)
    mu_t = MU2 + E @ (mu0 - MU2)
    C_t = C2 + E @ (var0 * np.eye(2) - C2) @ E.T
    field = mfj.NeuralField(W2, B2)
    errors = []
    for grid in GRIDS_2D:
        X, Y = (np.asarray(c) for c in grid.mesh())
        f0 = gaussian(X, mu0[0], var0) * gaussian(Y, mu0[1], var0)
        sol = solve_fokker_planck(field, f0, grid, K2, save_at=(t,))
        mass, mean, cov = moments_2d(sol.f[-1], grid)
        assert float(mass) == pytest.approx(float(grid.integrate(f0)), rel=1e-13)
        errors.append(max(np.max(np.abs(mean - mu_t)), np.max(np.abs(cov - C_t))))
    assert errors[-1] < 1e-2
    np.testing.assert_allclose(orders(errors), 2.0, atol=0.2)
    grid = GRIDS_2D[0]
    X, Y = (np.asarray(c) for c in grid.mesh())
    f0 = gaussian(X, mu0[0], var0) * gaussian(Y, mu0[1], var0)
    implicit = solve_fokker_planck(field, f0, grid, K2, save_at=(t, 30.0), method="implicit", theta=0.5,
                                   dt=0.05)
    _, mean, cov = moments_2d(implicit.f[0], grid)
    assert max(np.max(np.abs(mean - mu_t)), np.max(np.abs(cov - C_t))) < 2 * errors[0]
    f_inf = fokker_planck_steady_state(field, grid, K2) * float(grid.integrate(f0))
    assert float(jnp.max(jnp.abs(implicit.f[-1] - f_inf))) < 1e-10


# ---- gradients ---------------------------------------------------------------------------------------------
class QuadraticDiffusion(eqx.Module):
    """K(x) = k0 + k2 x²."""

    k0: jax.Array
    k2: jax.Array

    def __call__(self, x):
        return self.k0 + self.k2 * x**2


def _check_gradient(loss, params, eps=1e-5, rtol=1e-6):
    """jax.grad of loss(params) against central differences in every array leaf entry."""
    grads = jax.jit(jax.grad(loss))(params)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    for i, (leaf, grad) in enumerate(zip(leaves, jax.tree_util.tree_leaves(grads))):
        for idx in np.ndindex(leaf.shape):
            shifted = []
            for sign in (1.0, -1.0):
                new = list(leaves)
                new[i] = leaf.at[idx].add(sign * eps)
                shifted.append(float(loss(jax.tree_util.tree_unflatten(treedef, new))))
            fd = (shifted[0] - shifted[1]) / (2 * eps)
            assert float(grad[idx]) == pytest.approx(fd, rel=rtol, abs=1e-9), (i, idx)


GRAD_GRID = mfj.Grid1D(-4.0, 4.0, 100)
GRAD_F0 = gaussian(np.asarray(GRAD_GRID.x), 1.0, 0.25)


def _moment_loss(f, grid):
    m = mfj.moments(f, grid, 2)
    return m[1] + 0.3 * m[2]


def test_steady_state_gradients_match_finite_differences():
    def loss(params):
        field, K = params
        return _moment_loss(fokker_planck_steady_state(field, GRAD_GRID, K), GRAD_GRID)

    field = mfj.NeuralField(-1.3, 0.2, activation="tanh")
    _check_gradient(loss, (field, QuadraticDiffusion(jnp.array(0.5), jnp.array(0.1))))


@pytest.mark.parametrize(
    ("method", "kw"),
    [
        ("explicit", {"max_steps": 400}),
        ("explicit", {"max_steps": 400, "adjoint": "discrete"}),
        ("implicit", {"dt": 0.02}),
    ],
)
def test_solution_gradients_match_finite_differences(method, kw):
    def loss(params, **extra):
        field, K = params
        sol = solve_fokker_planck(field, GRAD_F0, GRAD_GRID, K, save_at=(0.5, 1.0), method=method, **extra)
        return _moment_loss(sol.f[-1], GRAD_GRID)

    params = (mfj.NeuralField(-1.3, 0.2, activation="tanh", T=1.0), jnp.array(0.7))
    _check_gradient(lambda p: loss(p, **kw), params)
    if kw.get("adjoint") != "discrete":  # forward mode (the one-pass step's own JVP) gives the same numbers
        forward = jax.jacfwd(lambda p: loss(p, **kw))(params)
        for leaf, expected in zip(jax.tree.leaves(forward), jax.tree.leaves(jax.grad(loss)(params, **kw))):
            np.testing.assert_allclose(leaf, expected, rtol=1e-10)
    # without max_steps (or a fixed dt) the number of steps would depend on the traced field
    with pytest.raises(ValueError, match="max_steps"):
        jax.grad(loss)(params)


def test_2d_steady_state_gradients_match_finite_differences():
    grid = GRIDS_2D[0]

    def loss(params):
        field, K = params
        mass, mean, cov = (mfj.moments(fokker_planck_steady_state(field, grid, K), grid, 2)[k]
                           for k in ("mass", "mean", "covariance"))
        return mean[0] - 0.5 * mean[1] + cov[0, 0] + 0.7 * cov[0, 1] + 0.2 * cov[1, 1] + mass

    _check_gradient(loss, (mfj.NeuralField(W2, B2), jnp.array(K2)))


# ---- validation and caching --------------------------------------------------------------------------------
V_GRID = mfj.Grid1D(-1.0, 1.0, 10)
V_FIELD = mfj.NeuralField(-1.0, 0.0)
V_F0 = np.ones(10) / 2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"diffusion": -0.1}, "diffusion"),
        ({"diffusion": lambda x: 0.5 - x**2}, "diffusion"),
        ({"diffusion": lambda x: jnp.ones(3)}, "diffusion"),
        ({"diffusion": np.ones(3)}, "diffusion"),
        ({"f0": np.ones(11)}, "f0"),
        ({"f0": -V_F0}, "f0"),
        ({"f0": np.full(10, np.nan)}, "f0"),
        ({"scheme": "weno"}, "scheme"),
        ({"method": "rk4"}, "method"),
        ({"boundary": "outflow"}, "boundary"),
        ({"cfl": 1.5}, "cfl"),
        ({"cfl": 0.0}, "cfl"),
        ({"theta": 0.2, "method": "implicit"}, "theta"),
        ({"dt": 0.1}, "dt"),
        ({"dt": -0.1, "method": "implicit"}, "dt"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 2}, "max_steps"),
        ({"adjoint": "magic"}, "adjoint"),
        ({"grid": mfj.Grid2D((-1, 1, 4), (-1, 1, 4)), "f0": np.ones((4, 4))}, "field.d"),
    ],
)
def test_bad_input_is_rejected_with_the_argument_named(kwargs, name):
    args = {"field": V_FIELD, "f0": V_F0, "grid": V_GRID, "diffusion": 0.5} | kwargs
    with pytest.raises(ValueError, match=name):
        solve_fokker_planck(**args)


def test_a_diffusion_that_is_not_a_number_is_named():
    """None failed with "None is not a valid value for jnp.array", which does not say which argument."""
    for bad in (None, "x"):
        with pytest.raises(TypeError, match="diffusion must be a number, a 0-d array or a callable K"):
            solve_fokker_planck(V_FIELD, V_F0, V_GRID, bad)


def test_steady_state_rejects_feedback_zero_diffusion_and_bad_layer():
    with pytest.raises(ValueError, match="feedback"):
        fokker_planck_steady_state(mfj.NeuralField(-1.0, 0.0, feedback=-1.0), V_GRID, 0.5)
    with pytest.raises(ValueError, match="diffusion"):
        fokker_planck_steady_state(V_FIELD, V_GRID, 0.0)
    with pytest.raises(ValueError, match="layer"):
        fokker_planck_steady_state(V_FIELD, V_GRID, 0.5, layer=1)
    with pytest.raises(TypeError, match="field"):
        fokker_planck_steady_state(np.eye(1), V_GRID, 0.5)


def test_repeated_calls_with_the_same_shapes_do_not_recompile(caplog):
    def run(scale, b, K):
        field = mfj.NeuralField(-1.0, b)
        explicit = solve_fokker_planck(field, V_F0 * scale, V_GRID, K, save_at=(0.0, 0.2))
        implicit = solve_fokker_planck(field, V_F0 * scale, V_GRID, K, save_at=(0.0, 0.2), method="implicit",
                                       dt=0.01)
        steady = fokker_planck_steady_state(field, V_GRID, K)
        return explicit.f, implicit.f, steady

    jax.block_until_ready(run(1.0, 0.0, 0.5))
    caplog.clear()
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        second = jax.block_until_ready(run(2.0, 0.1, 0.5))
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert compiled == []
    assert float(jnp.sum(second[0][-1])) == pytest.approx(2 * float(jnp.sum(V_F0)), rel=1e-14)
