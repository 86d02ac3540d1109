"""The finite-volume continuity solver against exact solutions (MODEL.md §3.2, §4.3, §7.2, §7.3).

Oracles: the exact push-forward density f(t, x) = f0(X_{−t}(x)) ∂_x X_{−t}(x) (identity and tanh), the
characteristics of the classification field, the affine flow of the mean and covariance for identity σ,
the closed-form feedback moments, composition over layers, and central finite differences.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kinetic_cases import assert_same_solves, count_primitives, solves_by_adjoint
from scipy.linalg import expm

import meanfield_jax as mfj
from meanfield_jax import transport
from meanfield_jax.kinetic_common import cell_face_velocities, face_velocities, grid_axes
from meanfield_jax.reconstruction import LIMITERS, cweno3, muscl, piecewise_constant
from meanfield_jax.transport import CFL_LIMITS, solve_vlasov, upwind_flux

BUMP_CENTRE, BUMP_WIDTH = 2.0, 0.6


def bump(x):
    """A normal density N(2, 0.6²), negligible (< 1e-20) at the walls of the domains used below."""
    return jnp.exp(-0.5 * ((x - BUMP_CENTRE) / BUMP_WIDTH) ** 2) / (BUMP_WIDTH * np.sqrt(2 * np.pi))


def uniform_2_8(x):
    """f0 of the classification experiment: uniform on [2, 8]."""
    return jnp.where((x > 2) & (x < 8), 1.0 / 6.0, 0.0)


def uniform_2_8_cdf(x):
    return np.clip((np.asarray(x) - 2) / 6, 0, 1)


def backward_characteristic(activation, w, b, t, x, xp=np):
    """X_{−t}(x) and its Jacobian ∂_x X_{−t}(x) for dx/dt = σ(w x + b) (MODEL.md §2.3, §3.2)."""
    if activation == "identity":
        return xp.exp(-w * t) * (x + b / w) - b / w, xp.exp(-w * t)
    s = xp.sinh(w * x + b) * xp.exp(-w * t)
    return (xp.arcsinh(s) - b) / w, xp.exp(-w * t) * xp.cosh(w * x + b) / xp.sqrt(1 + s**2)


# jit-compiled helpers (one compilation per grid), so that the tests spend their time in the solver
project = eqx.filter_jit(lambda grid, fn: grid.project(fn))
moments_1d = eqx.filter_jit(jax.vmap(mfj.moments, in_axes=(0, None)))
moments_2d = eqx.filter_jit(mfj.moments)
moment_ode = jax.jit(mfj.moment_ode, static_argnames="feedback")


@eqx.filter_jit
def exact_push_forward(grid, activation, params):
    """Cell averages of f(t) = f0(X_{−t}) ∂_x X_{−t} with f0 = bump, params = (w, b, t)."""
    w, b, t = params

    def rho(x):
        x0, jacobian = backward_characteristic(activation, w, b, t, x, xp=jnp)
        return bump(x0) * jacobian

    return grid.project(rho)


@eqx.filter_jit
def gaussian_cells(grid, mean, cov):
    """Cell averages of the normal density N(mean, cov) on a Grid2D."""
    P = jnp.linalg.inv(cov)

    def rho(x, y):
        dx, dy = x - mean[0], y - mean[1]
        quad = P[0, 0] * dx * dx + 2 * P[0, 1] * dx * dy + P[1, 1] * dy * dy
        return jnp.exp(-0.5 * quad) / (2 * jnp.pi * jnp.sqrt(jnp.linalg.det(cov)))

    return grid.project(rho)


def l1(f, g, grid):
    return float(np.sum(np.abs(np.asarray(f) - np.asarray(g))) * grid.cell_volume)


def masses(sol):
    """Mass in the domain at each save time (numpy)."""
    f = np.asarray(sol.f)
    return f.reshape(f.shape[0], -1).sum(axis=1) * sol.grid.cell_volume


# ---- reconstructions (pure functions) ---------------------------------------------------------------------
def test_limited_slopes_stay_in_the_tvd_region():
    a, b = np.random.default_rng(0).normal(size=(2, 1000))
    for name, limiter in LIMITERS.items():
        s = np.asarray(jax.jit(limiter)(a, b))
        assert np.all(s[a * b <= 0] == 0), name
        assert np.all(np.abs(s) <= 2 * np.minimum(np.abs(a), np.abs(b)) + 1e-15), name
        assert np.all(s * a >= 0), name
    # on smooth monotone data each limiter returns its textbook value
    np.testing.assert_allclose(LIMITERS["minmod"](1.0, 1.5), 1.0)
    np.testing.assert_allclose(LIMITERS["vanleer"](1.0, 1.5), 2 * 1.5 / 2.5)
    np.testing.assert_allclose(LIMITERS["mc"](1.0, 1.5), 1.25)
    np.testing.assert_allclose(LIMITERS["mc"](1.0, 5.0), 2.0)


@jax.jit
def all_edges(f):
    return [muscl(f, lim) for lim in LIMITERS.values()] + [cweno3(f, 1e-4), piecewise_constant(f)]


def test_edge_values_of_nonnegative_data_lie_in_zero_to_twice_the_mean():
    rng = np.random.default_rng(1)
    f = rng.exponential(size=2000) * (rng.random(2000) > 0.3) * 10.0 ** rng.integers(-30, 3, size=2000)
    mean = f[1:-1]
    for lower, upper in all_edges(jnp.asarray(f)):
        for edge in (np.asarray(lower), np.asarray(upper)):
            assert np.all(edge >= 0)
            assert np.all(edge <= 2 * mean * (1 + 1e-15))


@pytest.mark.parametrize("scheme", ["upwind", "muscl", "cweno3"])
@pytest.mark.parametrize("boundary", ["outflow", "zero_flux", "periodic"])
def test_flux_along_the_first_axis_is_the_transpose_of_the_flux_along_the_second(scheme, boundary):
    """The stencils slice along either axis in place: the x-flux of f is the y-flux of fᵀ, transposed, and
    each row of it is the 1-D flux of that row."""
    rng = np.random.default_rng(3)
    f = jnp.asarray(rng.exponential(size=(7, 9)))
    u = jnp.asarray(rng.normal(size=(8, 9)))
    along_x = upwind_flux(f, u, 0, scheme, "mc", boundary, 0.1)
    along_y = upwind_flux(f.T, u.T, 1, scheme, "mc", boundary, 0.1)
    np.testing.assert_array_equal(along_x, along_y.T)
    column = upwind_flux(f[:, 4], u[:, 4], 0, scheme, "mc", boundary, 0.1)
    if scheme != "cweno3":  # CWENO3's ε uses max|f| of the whole array
        np.testing.assert_array_equal(along_x[:, 4], column)


def test_cweno3_edge_values_are_third_order_on_smooth_data():
    """Edge values from exact cell averages of 2 + sin against its point values at the faces."""
    errors = []
    edges = jax.jit(cweno3)
    for n in (40, 80, 160):
        h = 2 * np.pi / n
        lo_faces = h * np.arange(-1, n + 1)
        averages = (np.cos(lo_faces) - np.cos(lo_faces + h)) / h + 2.0
        lower, upper = edges(jnp.asarray(averages), h**2)
        exact_lower, exact_upper = 2 + np.sin(lo_faces[1:-1]), 2 + np.sin(lo_faces[1:-1] + h)
        errors.append(max(np.abs(lower - exact_lower).max(), np.abs(upper - exact_upper).max()))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(orders > 2.8), (errors, orders)


# ---- 1-D accuracy -----------------------------------------------------------------------------------------
CONVERGENCE_CASES = {"identity": (-0.5, 0.5), "tanh": (0.8, -2.0)}


@pytest.mark.parametrize(
    ("activation", "scheme", "time_stepper", "cfl", "order_range"),
    [
        ("identity", "upwind", "ssprk2", 1.0, (0.85, 1.15)),
        ("identity", "muscl", "ssprk2", 0.5, (1.8, 2.3)),
        ("identity", "cweno3", "ssprk3", 0.5, (2.5, 3.5)),
        ("tanh", "upwind", "ssprk2", 1.0, (0.85, 1.15)),
        ("tanh", "muscl", "ssprk2", 0.5, (1.8, 2.3)),
        ("tanh", "cweno3", "ssprk3", 0.5, (2.5, 3.5)),
    ],
)
def test_convergence_to_the_exact_push_forward(activation, scheme, time_stepper, cfl, order_range):
    """L1 errors of a smooth bump at T = 1 on 200 and 400 cells; MUSCL with the MC limiter."""
    w, b = CONVERGENCE_CASES[activation]
    field = mfj.NeuralField(w, b, activation=activation, T=1.0)
    errors = []
    for n in (200, 400):
        grid = mfj.Grid1D(-2.0, 6.0, n)
        f0 = project(grid, bump)
        sol = solve_vlasov(field, f0, grid, scheme=scheme, time_stepper=time_stepper, cfl=cfl)
        errors.append(l1(sol.f[-1], exact_push_forward(grid, activation, jnp.array([w, b, 1.0])), grid))
    order = np.log2(errors[0] / errors[1])
    assert order_range[0] < order < order_range[1], (errors, order)


# ---- conservation and positivity --------------------------------------------------------------------------
CLASSIFIER = mfj.NeuralField(1.0, -5.0, activation="tanh", T=1.0)  # Fig. 4: x* = 5 repels


def test_zero_flux_walls_conserve_mass_to_round_off():
    grid = mfj.Grid1D(0.0, 10.0, 200)
    sol = solve_vlasov(CLASSIFIER, project(grid, uniform_2_8), grid, t_final=4.0, boundary="zero_flux")
    mass = masses(sol)
    np.testing.assert_allclose(mass, mass[0], rtol=1e-13)
    np.testing.assert_array_equal(np.asarray(sol.outflow), 0.0)
    # the data that would have crossed x = 1 (x = 9) by T = 4 are held in [0, 1] ([9, 10]) by the walls:
    # that mass is F0(X_{−T}(1)) on each side
    f = np.asarray(sol.f[-1])
    expected = float(uniform_2_8_cdf(backward_characteristic("tanh", 1.0, -5.0, 4.0, 1.0)[0]))
    assert expected > 0.4
    np.testing.assert_allclose(f[:20].sum() * grid.dx, expected, atol=grid.dx / 6)
    np.testing.assert_allclose(f[-20:].sum() * grid.dx, expected, atol=grid.dx / 6)
    assert f.min() >= 0


def test_periodic_translation_returns_after_one_period():
    """F ≡ 1 on a periodic domain of length 4, upwind at cfl = 1: each Euler step moves every cell average
    exactly one cell on, across the wrap face too, so f(1) is f0 shifted by 25 cells and f(4) = f0."""
    field = mfj.NeuralField(0.0, 1.0, T=4.0)
    grid = mfj.Grid1D(-2.0, 2.0, 100)
    f0 = np.where(np.abs(np.asarray(grid.x) - 1.5) < 0.3, 1.0, 0.0) + np.exp(-8 * np.asarray(grid.x) ** 2)
    sol = solve_vlasov(
        field, f0, grid, save_at=[0.0, 1.0, 4.0], boundary="periodic", scheme="upwind", cfl=1.0,
        time_stepper="euler",
    )
    np.testing.assert_allclose(np.asarray(sol.f[1]), np.roll(f0, 25), atol=1e-13)
    np.testing.assert_allclose(np.asarray(sol.f[-1]), f0, atol=1e-12)
    np.testing.assert_allclose(masses(sol), masses(sol)[0], rtol=1e-14)
    np.testing.assert_array_equal(np.asarray(sol.outflow), 0.0)


@pytest.mark.parametrize(
    ("scheme", "limiter"),
    [("upwind", "mc"), ("muscl", "minmod"), ("muscl", "vanleer"), ("muscl", "mc"), ("cweno3", "mc")],
)
def test_positivity_of_discontinuous_data_at_the_cfl_limit(scheme, limiter):
    """Forward Euler at the largest allowed cfl (the SSP steppers are convex combinations of it)."""
    grid = mfj.Grid1D(0.0, 10.0, 200)
    sol = solve_vlasov(
        CLASSIFIER, project(grid, uniform_2_8), grid, save_at=[0.0, 0.5, 1.0, 2.0], scheme=scheme,
        limiter=limiter, cfl=CFL_LIMITS[scheme], time_stepper="euler",
    )
    f = np.asarray(sol.f)
    assert f.min() >= 0.0
    # the gap around the repelling x* = 5 opens: the exact density there is f0(5) e^{−t}
    np.testing.assert_allclose(f[-1, 99:101], np.exp(-2.0) / 6, rtol=0.05)
    np.testing.assert_allclose(masses(sol) + np.asarray(sol.outflow).sum(axis=1), 1.0, atol=1e-13)


# ---- Fig. 4: classification --------------------------------------------------------------------------------
def test_classification_keeps_each_class_and_follows_the_characteristics():
    """w = 1, b = −5, tanh, f0 = U[2, 8] on [0, 10] with outflow walls: no mass crosses x* = 5, the CDF
    (counting the mass that left on the left) is F0(X_{−t}(x)), and by t = 3 a fraction F0(X_{−3}(0)) has
    left through each wall, all of it accounted for in ``outflow``."""
    ts = np.array([0.0, 0.5, 1.0, 3.0])
    w1_errors, sup_errors = [], []
    for n in (200, 400):
        grid = mfj.Grid1D(0.0, 10.0, n)  # x = 5 is a face
        sol = solve_vlasov(CLASSIFIER, project(grid, uniform_2_8), grid, save_at=ts)
        f, outflow = np.asarray(sol.f), np.asarray(sol.outflow)
        np.testing.assert_allclose(np.asarray(sol.total_mass()), 1.0, atol=1e-13)
        assert f.min() >= 0.0
        left = f[:, : n // 2].sum(axis=1) * grid.dx + outflow[:, 0]
        np.testing.assert_allclose(left, 0.5, atol=1e-14)
        cdf = np.concatenate([[0.0], np.cumsum(f[2]) * grid.dx]) + outflow[2, 0]
        x0, _ = backward_characteristic("tanh", 1.0, -5.0, ts[2], np.asarray(grid.faces))
        error = np.abs(cdf - uniform_2_8_cdf(x0))
        w1_errors.append(error.sum() * grid.dx)
        sup_errors.append(error.max())
        lost = float(uniform_2_8_cdf(backward_characteristic("tanh", 1.0, -5.0, ts[3], 0.0)[0]))
        assert lost > 0.1  # a real loss, not a round-off one
        np.testing.assert_allclose(outflow[3], lost, atol=grid.dx / 6)
    assert np.log2(w1_errors[0] / w1_errors[1]) > 0.9, w1_errors
    assert sup_errors[1] < 0.01 and sup_errors[1] < sup_errors[0], sup_errors


# ---- 2-D: Fig. 6 and a full weight matrix ------------------------------------------------------------------
def affine_flow(W, b, mean, cov, t):
    """Identity σ: dm/dt = W m + b, dC/dt = W C + C Wᵀ, solved with the exponential of [[W, b], [0, 0]]."""
    A = np.zeros((3, 3))
    A[:2, :2], A[:2, 2] = W, b
    E = expm(A * t)
    return E[:2, :2] @ mean + E[:2, 2], E[:2, :2] @ cov @ E[:2, :2].T


@pytest.mark.parametrize(
    ("W", "b", "mean", "cov", "domain"),
    [
        (np.diag([1.0, -1.0]), [-1.0, 0.0], [1.2, 0.0], np.diag([0.09, 0.16]), ((-1.0, 3.6), (-2.0, 2.0))),
        (
            [[-0.6, 0.8], [-0.5, 0.3]], [0.2, -0.1], [0.3, -0.2], [[0.09, 0.03], [0.03, 0.06]],
            ((-1.6, 2.0), (-1.8, 1.6)),
        ),
    ],
    ids=["fig6", "full_W"],
)
def test_2d_mean_and_covariance_follow_the_affine_flow(W, b, mean, cov, domain):
    """Identity σ: the exact solution is N(m(T), C(T)). Cell averages of a smooth density have the midpoint
    moments m and C + diag(Δx², Δy²)/12 up to O(Δx⁴), which the numerical moments are compared with."""
    W, b, mean, cov = map(np.asarray, (W, b, mean, cov))
    T = 0.5
    field = mfj.NeuralField(W, b, T=T)
    mT, CT = affine_flow(W, b, mean, cov, T)
    errors = []
    for n in (32, 64):
        grid = mfj.Grid2D((*domain[0], n), (*domain[1], n))
        sol = solve_vlasov(field, gaussian_cells(grid, mean, cov), grid)
        total = masses(sol) + np.asarray(sol.outflow).sum(axis=1)
        np.testing.assert_allclose(total, total[0], rtol=1e-13)
        numeric = moments_2d(sol.f[-1], grid)
        midpoint_cov = CT + np.diag([grid.dx**2, grid.dy**2]) / 12
        errors.append(
            max(np.abs(numeric["mean"] - mT).max(), np.abs(numeric["covariance"] - midpoint_cov).max())
        )
    assert np.log2(errors[0] / errors[1]) > 1.6, errors
    assert errors[1] < 1e-2 * np.abs(CT).max(), errors


def test_2d_rotation_of_a_square_stays_positive_and_conservative():
    """A full W turning the data, discontinuous f0, zero-flux walls: mass to round-off, f ≥ 0."""
    field = mfj.NeuralField([[-0.2, -1.5], [1.5, -0.2]], [0.1, 0.0], activation="tanh", T=1.0)
    grid = mfj.Grid2D((-2.0, 2.0, 40), (-2.0, 2.0, 40))
    X, Y = (np.asarray(c) for c in grid.mesh())
    f0 = ((np.abs(X - 0.5) < 0.6) & (np.abs(Y) < 0.4)).astype(float)
    sol = solve_vlasov(field, f0, grid, scheme="cweno3", boundary="zero_flux", time_stepper="euler")
    np.testing.assert_allclose(masses(sol), masses(sol)[0], rtol=1e-13)
    assert np.asarray(sol.f).min() >= 0.0
    assert float(moments_2d(sol.f[-1], grid)["mean"][1]) > 0.2  # the square has turned counter-clockwise


# ---- time-dependent fields ---------------------------------------------------------------------------------
def test_layers_compose():
    """Three layers with different biases = three constant-layer solves chained at the layer boundaries.

    Each single-layer solve uses a field whose first layer is the layer in question and whose other layers
    are the remaining ones, so its CFL step (a bound over all layers) equals that of the full solve.
    """
    L, T = 3, 0.6
    b = np.array([-0.5, 0.3, 0.9])
    grid = mfj.Grid1D(-3.0, 4.0, 140)
    f0 = project(grid, bump)
    stops = [0.0, 0.2, 0.4, 0.6]
    full = solve_vlasov(mfj.NeuralField(0.7, b, activation="tanh", T=T), f0, grid, save_at=stops)
    f = f0
    for l in range(L):
        field_l = mfj.NeuralField(0.7, np.roll(b, -l), activation="tanh", T=T)
        f = solve_vlasov(field_l, f, grid, t_final=T / L).f[-1]
        np.testing.assert_allclose(np.asarray(f), np.asarray(full.f[l + 1]), rtol=0, atol=1e-13)
    # the layers matter: the mean bias in every layer gives a visibly different density
    averaged = mfj.NeuralField(0.7, np.full(L, b.mean()), activation="tanh", T=T)
    assert l1(solve_vlasov(averaged, f0, grid, save_at=stops).f[-1], full.f[-1], grid) > 1e-2


def test_feedback_bias_moments():
    """b(t) = −m1/m0 (β = −1), identity σ: m1 = m1(0) e^{(w+β)t} and m2 from moment_ode, to O(Δx²)."""
    w, beta, T = -0.5, -1.0, 1.0
    field = mfj.NeuralField(w, 0.0, T=T, feedback=beta)
    ts = np.linspace(0.0, T, 5)
    errors = []
    for n in (100, 200):
        grid = mfj.Grid1D(-2.0, 6.0, n)
        sol = solve_vlasov(field, project(grid, bump), grid, save_at=ts)
        numeric = np.asarray(moments_1d(sol.f, grid))
        exact = np.asarray(moment_ode(w, 0.0, numeric[0], ts, feedback=beta))
        np.testing.assert_allclose(exact[:, 1], numeric[0, 1] * np.exp((w + beta) * ts), rtol=1e-12)
        errors.append(np.abs(numeric - exact)[:, 1:].max())
    assert np.log2(errors[0] / errors[1]) > 1.7, errors
    assert errors[1] < 2e-3, errors


# ---- gradients ---------------------------------------------------------------------------------------------
def test_gradients_match_finite_differences_and_traced_equals_concrete():
    """d(m1 + 0.3 m2)(T)/d(W_l, b_l, f0) by reverse mode through the traced solver (max_steps given).

    The MC limiter is piecewise smooth (kinks at extrema and where its branch changes), so the central
    difference uses a step h = 1e-6 small enough not to cross a kink; the peak of f0 is off the faces, since
    two equal neighbouring cells would put a limiter exactly at its kink.
    """
    grid = mfj.Grid1D(-3.0, 5.0, 160)
    f0 = grid.project(lambda x: jnp.exp(-0.5 * ((x - 1.013) / 0.5) ** 2))
    W = np.array([0.6, 0.5]).reshape(2, 1, 1)
    b = np.array([-0.47, -0.32]).reshape(2, 1)  # x* = −b/w of each layer is not on a face

    def objective(field, f, max_steps=128):
        sol = solve_vlasov(field, f, grid, max_steps=max_steps)
        m = mfj.moments(sol.f[-1], grid)
        return m[1] + 0.3 * m[2]

    field = mfj.NeuralField(W, b, activation="tanh", T=0.8)
    traced = jax.jit(objective)
    np.testing.assert_allclose(float(traced(field, f0)), float(objective(field, f0, None)), rtol=1e-14)

    g_field, g_f0 = jax.grad(objective, argnums=(0, 1))(field, f0)
    h = 1e-6
    for name, base, grad in [("W", W, g_field.W), ("b", b, g_field.b)]:
        for idx in np.ndindex(base.shape):
            up, down = base.copy(), base.copy()
            up[idx] += h
            down[idx] -= h
            fd = (
                traced(mfj.NeuralField(**{"W": W, "b": b, name: up}, activation="tanh", T=0.8), f0)
                - traced(mfj.NeuralField(**{"W": W, "b": b, name: down}, activation="tanh", T=0.8), f0)
            ) / (2 * h)
            np.testing.assert_allclose(float(grad[idx]), float(fd), rtol=1e-6, err_msg=f"{name}{idx}")
    direction = f0 * jnp.cos(grid.x)  # keeps f0 ± h · direction non-negative
    fd = (traced(field, f0 + h * direction) - traced(field, f0 - h * direction)) / (2 * h)
    np.testing.assert_allclose(float(jnp.vdot(g_f0, direction)), float(fd), rtol=1e-6)


# ---- fields that map the data between layers --------------------------------------------------------------
def test_autoencoder_bottleneck_collapses_the_density_onto_the_active_axis():
    """AutoencODE widths (2, 1, 2): entering the width-1 stage sets y = 0. y = 0 is a face of the grid, so
    the density sits in the two rows of cells beside it, with y-mean 0, through that stage; the last stage
    moves y again. The PDE mean follows the mean of the ResNet's particles, up to the Euler error O(Δt)."""
    model = mfj.control.AutoencODE(
        widths=(2, 1, 2), layers_per_stage=20, T=0.6, key=jax.random.PRNGKey(3), init_scale=1.0
    )
    grid = mfj.Grid2D((-3.0, 3.0, 48), (-3.0, 3.0, 48))
    mean0, cov0 = np.array([0.3, -0.4]), np.diag([0.3, 0.2])
    sol = solve_vlasov(model, gaussian_cells(grid, mean0, cov0), grid, save_at=[0.0, 0.3, 0.6])
    f_mid = np.asarray(sol.f[1])
    np.testing.assert_allclose(f_mid[:, 23:25].sum(), f_mid.sum(), rtol=1e-13)
    assert abs(float(moments_2d(sol.f[1], grid)["mean"][1])) < 1e-13
    x0 = np.random.default_rng(0).multivariate_normal(mean0, cov0, size=20000)
    particles = np.asarray(mfj.resnet_forward(model, x0))
    pde_mean = np.asarray(moments_2d(sol.f[-1], grid)["mean"])
    assert abs(pde_mean[1]) > 0.03  # the last stage has moved y away from 0
    np.testing.assert_allclose(pde_mean, particles.mean(axis=0), atol=0.015)
    total = masses(sol) + np.asarray(sol.outflow).sum(axis=1)
    np.testing.assert_allclose(total, total[0], rtol=1e-13)


# ---- input checks ------------------------------------------------------------------------------------------
GRID = mfj.Grid1D(0.0, 1.0, 10)
FIELD = mfj.NeuralField(1.0, 0.0)
F0 = np.ones(10)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"f0": np.ones(11)}, ValueError, r"f0 has shape \(11,\) but the grid has shape \(10,\)"),
        ({"f0": -F0}, ValueError, "f0 must be a non-negative density"),
        ({"f0": np.full(10, np.nan)}, ValueError, "f0 must be finite"),
        ({"f0": "density"}, TypeError, "f0 must be"),
        ({"scheme": "weno5"}, ValueError, "scheme='weno5'.*'upwind', 'muscl', 'cweno3'"),
        ({"limiter": "superbee"}, ValueError, "limiter='superbee'.*'minmod', 'vanleer', 'mc'"),
        ({"boundary": "reflect"}, ValueError, "boundary='reflect'.*'outflow', 'zero_flux', 'periodic'"),
        ({"time_stepper": "rk4"}, ValueError, "time_stepper='rk4'.*'euler', 'ssprk2', 'ssprk3'"),
        ({"adjoint": "magic"}, ValueError, "adjoint='magic'"),
        ({"cfl": 0.6}, ValueError, r"cfl=0.6 is outside \(0, 0.5\].*'muscl'"),
        ({"cfl": 1.2, "scheme": "upwind"}, ValueError, r"cfl=1.2 is outside \(0, 1.0\]"),
        ({"cfl": 0.0}, ValueError, "cfl=0.0"),
        ({"cfl": "fast"}, TypeError, "cfl must be a number"),
        ({"field": mfj.NeuralField(np.eye(2), np.zeros(2))}, ValueError, "field.d=2 must equal grid.d=1"),
        ({"field": "tanh"}, TypeError, "field must be a NeuralField"),
        ({"grid": (0.0, 1.0, 10)}, TypeError, "grid must be a Grid1D or a Grid2D"),
        ({"max_steps": 0}, ValueError, "max_steps must be a positive integer"),
        ({"max_steps": 2}, ValueError, "max_steps=2 is too small"),
        ({"t_final": -1.0}, ValueError, "t_final"),
    ],
)
def test_bad_inputs_are_rejected_with_a_clear_message(kwargs, error, match):
    args = {"field": FIELD, "f0": F0, "grid": GRID, **kwargs}
    with pytest.raises(error, match=match):
        solve_vlasov(**args)


def test_traced_field_needs_max_steps():
    with pytest.raises(ValueError, match="pass max_steps="):
        jax.jit(lambda field: solve_vlasov(field, F0, GRID).f)(FIELD)


def test_float32_density_keeps_its_dtype_under_x64():
    """A float32 field and density on a (float64) grid: the solve stays float32 and conserves mass."""
    grid = mfj.Grid1D(-2.0, 2.0, 40)
    field = mfj.NeuralField.constant(np.float32(-1.0), np.float32(0.2), num_layers=2, activation="tanh")
    f0 = grid.project(lambda x: jnp.exp(-4 * x**2)).astype(jnp.float32)
    sol = mfj.solve_vlasov(field, f0, grid, boundary="zero_flux")
    assert sol.f.dtype == jnp.float32
    np.testing.assert_allclose(sol.mass(), sol.mass()[0], rtol=1e-6)


@pytest.mark.parametrize("scheme", ["muscl", "cweno3"])
@pytest.mark.parametrize("shape", [(40,), (12, 9)])
def test_face_flux_derivatives_match_central_differences(scheme, shape):
    """The reconstructions write their slopes / edge values through a conditional with its own JVP rule
    (behind the conditional in 1-D, plain in 2-D): reverse and forward mode must both be the derivative,
    including CWENO3's ε, which depends on max |f|."""
    rng = np.random.default_rng(0)
    f = jnp.asarray(rng.uniform(0.1, 1.0, shape))
    velocity = jnp.asarray(rng.normal(size=(shape[0] + 1, *shape[1:])))
    weights = jnp.sin(jnp.arange(velocity.size).reshape(velocity.shape))
    direction = jnp.asarray(rng.normal(size=shape))

    def loss(f):
        return jnp.sum(weights * upwind_flux(f, velocity, 0, scheme, "vanleer", "outflow", 0.1))

    eps = 1e-6
    central = (loss(f + eps * direction) - loss(f - eps * direction)) / (2 * eps)
    reverse = jnp.vdot(jax.grad(loss)(f), direction)
    forward = jax.jvp(loss, (f,), (direction,))[1]
    assert abs(float(central)) > 1.0
    np.testing.assert_allclose(reverse, central, rtol=1e-8)
    np.testing.assert_allclose(forward, reverse, rtol=1e-13)


@pytest.mark.parametrize("written", [True, False])
@pytest.mark.parametrize("limiter", sorted(LIMITERS))
@pytest.mark.parametrize("shape", [(40,), (18, 9)])
def test_muscl_derivatives_are_those_of_the_limiter_formula(limiter, shape, written):
    """MUSCL's written JVP (in 1-D the limiter's partial derivatives times the tangent's differences) gives
    JAX's derivative of f̄_i ∓ φ(Δ⁻, Δ⁺)/2 in both modes, also at the limiter's kinks: data with zeros,
    a plateau, equal slopes on both sides (a straight line) and extrema."""
    rng = np.random.default_rng(1)
    f = rng.uniform(0.1, 1.0, shape)
    f[:4] = 0.0  # Δ⁻ = Δ⁺ = 0
    f[4:8] = 0.5  # a plateau: one-sided zero differences
    f[8:14] = 0.3 + 0.1 * np.arange(6).reshape((6,) + (1,) * (len(shape) - 1))  # Δ⁻ = Δ⁺ exactly
    f = jnp.asarray(f)
    tangent = jnp.asarray(rng.normal(size=shape))
    cotangents = tuple(jnp.asarray(rng.normal(size=(2, shape[0] - 2, *shape[1:]))))

    def formula(f):
        left, centre, right = f[:-2], f[1:-1], f[2:]
        half = 0.5 * LIMITERS[limiter](centre - left, right - centre)
        return centre - half, centre + half

    def ours(f):
        return muscl(f, LIMITERS[limiter], axis=0, written_slopes=written)

    for a, b in zip(jax.jvp(ours, (f,), (tangent,))[1], jax.jvp(formula, (f,), (tangent,))[1]):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(
        jax.vjp(ours, f)[1](cotangents)[0], jax.vjp(formula, f)[1](cotangents)[0],
        rtol=1e-14, atol=1e-15,
    )


@pytest.mark.parametrize(("scheme", "boundary"), [("muscl", "outflow"), ("cweno3", "zero_flux"),
                                                   ("upwind", "periodic"), ("muscl", "periodic")])
def test_large_2d_grids_pad_once_and_fuse_the_muscl_slopes(scheme, boundary, monkeypatch):
    """From ``LARGE_2D_GRID_BYTES`` a 2-D density is padded once for both axes and the MUSCL slopes are
    evaluated where the edge values read them (no conditional writes them to memory); a 1-D one keeps them
    written (both counted in the jaxpr: the slopes' conditionals of MUSCL, the pads of a stage's increment
    with outflow walls, whose ghost cells are a `pad`; the other walls' are slices and concatenations).
    Densities and gradients of a 2-D solve, with each parametrised scheme and wall, are those of the
    small-grid path."""
    grid = mfj.Grid2D((-3.0, 3.0, 24), (-3.0, 3.0, 20))
    X, Y = (np.asarray(c) for c in grid.mesh())
    f0 = jnp.asarray(np.exp(-((X - 0.4) ** 2 + (Y + 0.3) ** 2) / 0.5))
    flux = functools.partial(upwind_flux, scheme="muscl", limiter="mc", boundary=boundary, h=0.1)

    def loss(W, b):
        field = mfj.NeuralField(W, b, activation="tanh", T=0.3)
        sol = solve_vlasov(field, f0, grid, scheme=scheme, boundary=boundary, max_steps=40)
        return jnp.sum(sol.f[-1] ** 2), sol.f[-1]

    W, b = jnp.asarray([[1.0, -0.8], [0.8, 1.0]]), jnp.asarray([0.1, -0.2])
    config = transport._Config(scheme, "mc", "outflow", "ssprk2", 0.5, "checkpointed")
    velocities = (jnp.ones((25, 20)), jnp.ones((24, 21)))

    def increment(f):
        return transport._flux_increment(grid, config, velocities, 0.01, (f, jnp.zeros(4)), False)

    results, conditionals, pads = [], [], []
    for threshold in (2**62, 0):
        monkeypatch.setattr(transport, "LARGE_2D_GRID_BYTES", threshold)
        jax.clear_caches()
        conditionals.append([
            count_primitives(jax.make_jaxpr(functools.partial(flux, axis=0))(f, v).jaxpr, "cond")
            for f, v in ((f0, velocities[0]), (f0[0], jnp.ones(21)))
        ])
        pads.append(count_primitives(jax.make_jaxpr(increment)(f0).jaxpr, "pad"))  # zero ghost cells
        results.append(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(W[None], b[None]))
    jax.clear_caches()
    assert conditionals == [[1, 1], [0, 1]]
    assert pads == [2, 1]
    with pytest.raises(ValueError, match=r"padded= is for 2-D densities, got f of shape \(20,\)"):
        flux(f0[0], jnp.ones(21), axis=0, padded=jnp.zeros(24))
    (_, f_small), grad_small = results[0]
    (_, f_large), grad_large = results[1]
    assert float(jnp.min(f_small)) >= 0.0 and float(jnp.max(f_small)) > 0.1
    np.testing.assert_allclose(f_large, f_small, rtol=0, atol=1e-15 * float(jnp.max(f_small)))
    for a, b in zip(grad_large, grad_small):
        assert float(jnp.max(jnp.abs(b))) > 1e-3
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_small_1d_densities_join_their_outflow_ghost_cells_by_a_concatenation(monkeypatch):
    """Below ``CONCATENATED_GHOSTS_BELOW`` cells the zero ghost cells beyond outflow walls are concatenated
    to a 1-D density (XLA fuses that, where a pad is a kernel of its own), and its tangent is padded: the
    densities bit for bit, and the gradients of every adjoint, are those of the pad."""
    grid = mfj.Grid1D(-1.0, 4.0, 40)  # the bump reaches the upper wall and flows out
    f0 = grid.project(bump)
    W, b = jnp.asarray([[[1.5]], [[-0.4]]]), jnp.asarray([[0.6], [1.2]])

    def loss(W, b, adjoint):
        field = mfj.NeuralField(W, b, activation="tanh", T=1.0)
        sol = solve_vlasov(field, f0, grid, scheme="muscl", boundary="outflow", max_steps=60, adjoint=adjoint)
        return jnp.sum(grid.x * sol.f[-1]), sol.f[-1]

    config = transport._Config("muscl", "mc", "outflow", "ssprk2", 0.5, "checkpointed")

    def increment(f):  # one forward-Euler increment of the solver's stage
        return transport._flux_increment(grid, config, (jnp.ones(41),), 0.01, (f, jnp.zeros(2)), False)

    def tangent(f, df):
        return jax.jvp(lambda g: transport._ghost_cells(g, 0, "outflow"), (f,), (df,))

    results, primitives = [], []
    for threshold in (transport.CONCATENATED_GHOSTS_BELOW, 0):
        monkeypatch.setattr(transport, "CONCATENATED_GHOSTS_BELOW", threshold)
        jax.clear_caches()
        jaxprs = (jax.make_jaxpr(increment)(f0).jaxpr, jax.make_jaxpr(tangent)(f0, f0).jaxpr)
        primitives.append([(count_primitives(j, "concatenate"), count_primitives(j, "pad")) for j in jaxprs])
        results.append(solves_by_adjoint(loss, W, b))
    jax.clear_caches()
    # the stage's ghost cells concatenated, or padded; the tangent of concatenated ghost cells is padded
    assert primitives == [[(1, 0), (1, 1)], [(0, 1), (0, 2)]]
    concatenated, padded = results
    assert float(jnp.sum(f0) - jnp.sum(padded["checkpointed"][0][1])) > 1e-3  # mass left through the wall
    assert_same_solves(concatenated, padded)


@pytest.mark.parametrize("boundary", ["outflow", "zero_flux", "periodic"])
@pytest.mark.parametrize("d", [1, 2])
def test_cell_face_velocities_and_the_cfl_rate_bound(boundary, d):
    """Each cell's upper and lower face velocities are the face array's entries 1…n and 0…n−1 (walls
    included), and the CFL rate bound is the largest Σ_axes (F⁺ above + F⁻ below)/h over the cells and
    layers, evaluated here in NumPy from the field's formula."""
    from meanfield_jax.kinetic_common import advection_rate_bound, cell_face_velocities, face_velocities

    if d == 1:
        grid = mfj.Grid1D(-4.0, 4.0, 40)
        W, b = jnp.array([[[1.5]], [[-0.8]]]), jnp.array([[0.2], [0.5]])
    else:
        grid = mfj.Grid2D((-4.0, 4.0, 24), (-3.0, 5.0, 20))
        W = jnp.array([[[1.0, -0.8], [0.8, 1.0]], [[-0.5, 0.3], [1.2, -0.9]]])
        b = jnp.array([[0.1, -0.2], [0.4, 0.3]])
    field = mfj.NeuralField(W, b, activation="tanh", T=1.0)
    axes = grid_axes(grid)
    expected_bound = 0.0
    for l in range(2):
        faces = face_velocities(field, l, grid, boundary)
        rate = 0.0
        for a, ((upper, lower), full, ax) in enumerate(
            zip(cell_face_velocities(field, l, grid, boundary), faces, axes)
        ):
            n = full.shape[a]
            for cells, start in [(upper, 1), (lower, 0)]:
                faces_of_cells = jax.lax.slice_in_dim(full, start, start + n - 1, axis=a)
                np.testing.assert_allclose(cells, faces_of_cells, rtol=0, atol=1e-15)
            # the same from the formula, in NumPy: σ(W_l x + b_l)_a at the faces, with the walls
            coords = [np.asarray(other.faces if c == a else other.x) for c, other in enumerate(axes)]
            pts = np.stack(np.meshgrid(*coords, indexing="ij"), axis=-1)
            v = np.moveaxis(np.tanh(pts @ np.asarray(W[l]).T + np.asarray(b[l]))[..., a], a, 0)
            if boundary == "zero_flux":
                v[0] = v[-1] = 0.0
            elif boundary == "periodic":
                v[-1] = v[0]
            rate = rate + np.moveaxis(np.maximum(v[1:], 0) + np.maximum(-v[:-1], 0), 0, a) / ax.dx
        expected_bound = max(expected_bound, rate.max())
    np.testing.assert_allclose(advection_rate_bound(field, grid, boundary), expected_bound, rtol=1e-14)


@pytest.mark.parametrize("boundary", ["outflow", "zero_flux", "periodic"])
def test_wall_conditions_on_the_face_velocities_agree_between_the_face_arrays_and_the_cell_faces(boundary):
    """The 2-D face arrays (the step's) and each cell's upper and lower faces (the rate bound's) follow one
    wall rule: zero on zero-flux walls, the last face equal to the first on a periodic axis, the drift
    itself at outflow walls; interior faces are the drift wherever the walls are."""
    grid = mfj.Grid2D((-2.0, 2.0, 6), (-1.0, 3.0, 4))
    field = mfj.NeuralField(jnp.array([[0.7, -1.1], [0.4, 0.9]]), jnp.array([0.3, -0.2]), activation="tanh")
    faces = face_velocities(field, 0, grid, boundary)
    free = face_velocities(field, 0, grid, "outflow")
    cells = cell_face_velocities(field, 0, grid, boundary)
    for a, (v, v_free, (upper, lower)) in enumerate(zip(faces, free, cells)):
        v, v_free = np.moveaxis(np.asarray(v), a, 0), np.moveaxis(np.asarray(v_free), a, 0)
        np.testing.assert_array_equal(v[1:-1], v_free[1:-1])
        expected_ends = {"outflow": (v_free[0], v_free[-1]), "zero_flux": (0.0 * v_free[0], 0.0 * v_free[-1]),
                         "periodic": (v_free[0], v_free[0])}[boundary]
        np.testing.assert_array_equal(v[0], expected_ends[0])
        np.testing.assert_array_equal(v[-1], expected_ends[1])
        np.testing.assert_array_equal(np.moveaxis(np.asarray(upper), a, 0), v[1:])
        np.testing.assert_array_equal(np.moveaxis(np.asarray(lower), a, 0), v[:-1])
