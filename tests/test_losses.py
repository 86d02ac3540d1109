"""Distribution losses against closed forms (Gaussians), sampling laws, and finite differences (float64)."""

import functools
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import meanfield_jax as mfj
from meanfield_jax import losses

MU1, S1, MU2, S2 = 0.3, 0.8, -0.5, 1.3


def gaussian(mu, s):
    return lambda x: jnp.exp(-((x - mu) ** 2) / (2 * s**2)) / jnp.sqrt(2 * jnp.pi * s**2)


@functools.cache
def pair(n, mu1=MU1, s1=S1, mu2=MU2, s2=S2):
    grid = mfj.Grid1D(-12.0, 12.0, n)
    return grid, grid.project(gaussian(mu1, s1)), grid.project(gaussian(mu2, s2))


def observed_order(errors):
    """Convergence orders log2(e_h / e_{h/2}) for grids refined by factors of 2."""
    e = np.abs(np.asarray(errors))
    return np.log2(e[:-1] / e[1:])


# ---- grid losses: closed forms and second-order convergence ------------------------------------------
W2_EXACT = math.sqrt((MU1 - MU2) ** 2 + (S1 - S2) ** 2)
KL_EXACT = math.log(S2 / S1) + (S1**2 + (MU1 - MU2) ** 2) / (2 * S2**2) - 0.5
L2_SQ_EXACT = (
    1 / (2 * math.sqrt(math.pi) * S1)
    + 1 / (2 * math.sqrt(math.pi) * S2)
    - 2 * stats.norm.pdf(MU1 - MU2, scale=math.sqrt(S1**2 + S2**2))
)
# W1 = ∫ |Φ((x − μ1)/s1) − Φ((x − μ2)/s2)| dx, by adaptive quadrature (scipy), the two CDFs crossing once.
W1_EXACT = integrate.quad(
    lambda x: abs(stats.norm.cdf(x, MU1, S1) - stats.norm.cdf(x, MU2, S2)), -30, 30, points=[0.0], limit=200
)[0]


@pytest.mark.parametrize(
    ("name", "loss", "exact"),
    [
        ("W2", lambda f, g, grid: losses.wasserstein_1d(f, g, grid, p=2), W2_EXACT),
        ("W1", lambda f, g, grid: losses.wasserstein_1d(f, g, grid, p=1), W1_EXACT),
        ("KL", losses.kl, KL_EXACT),
        ("L2", lambda f, g, grid: losses.l2(f, g, grid, squared=True), L2_SQ_EXACT),
    ],
)
def test_grid_losses_converge_at_second_order_to_gaussian_closed_forms(name, loss, exact):
    errors = []
    for n in (200, 400, 800):
        grid, f, g = pair(n)
        errors.append(float(loss(f, g, grid)) - exact)
    assert abs(errors[-1]) < 1e-3 * exact, (name, errors)
    np.testing.assert_allclose(observed_order(errors), 2.0, atol=0.1, err_msg=name)


def test_w1_between_equal_variance_gaussians_is_the_mean_shift():
    grid, f, g = pair(400, s2=S1)
    np.testing.assert_allclose(float(losses.wasserstein_1d(f, g, grid, p=1)), abs(MU1 - MU2), rtol=1e-10)


def test_l2_is_the_root_of_the_squared_version_and_zero_for_equal_densities():
    grid, f, g = pair(200)
    np.testing.assert_allclose(float(losses.l2(f, g, grid)) ** 2, float(losses.l2(f, g, grid, squared=True)))
    assert float(losses.l2(f, f, grid)) == 0.0
    assert float(losses.kl(f, f, grid)) == 0.0
    assert float(losses.wasserstein_1d(f, f, grid, p=2)) == 0.0


def test_wasserstein_of_a_density_and_its_shift_by_whole_cells_is_the_shift_for_every_p():
    grid = mfj.Grid1D(0.0, 10.0, 50)
    f = jnp.zeros(50).at[10:17].set(jnp.array([1.0, 3.0, 0.0, 2.0, 5.0, 0.5, 1.0]))
    g = jnp.roll(f, 6)  # translate by 6 Δx = 1.2: every coupling-optimal map is x ↦ x + 1.2
    for p in (1, 2):
        np.testing.assert_allclose(float(losses.wasserstein_1d(f, g, grid, p=p)), 1.2, rtol=1e-12)


def test_kl_floor_keeps_zeros_finite():
    grid = mfj.Grid1D(0.0, 1.0, 4)
    f = jnp.array([0.0, 2.0, 2.0, 0.0])
    g = jnp.array([1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(float(losses.kl(f, g, grid)), math.log(2.0), rtol=1e-14)  # 0 log 0 = 0
    # g = 0 where f > 0: KL is infinite; the floor caps log(f/g) at log(f/floor)
    value, grad = jax.value_and_grad(losses.kl)(g, f, grid)
    np.testing.assert_allclose(float(value), 0.5 * math.log(1.0 / 1e-30) + 0.5 * math.log(0.5), rtol=1e-12)
    assert np.all(np.isfinite(grad))


def test_kl_and_l2_on_a_2d_grid_match_product_gaussians():
    grid = mfj.Grid2D((-10.0, 10.0, 240), (-10.0, 10.0, 240))
    f = grid.project(lambda x, y: gaussian(MU1, S1)(x) * gaussian(0.0, 1.0)(y))
    g = grid.project(lambda x, y: gaussian(MU2, S2)(x) * gaussian(0.0, 1.0)(y))
    np.testing.assert_allclose(float(losses.kl(f, g, grid)), KL_EXACT, rtol=2e-3)  # KL of a product adds up
    l2_sq_exact = L2_SQ_EXACT / (2 * math.sqrt(math.pi))  # ∫ φ(y)² dy = 1/(2√π) factors out
    np.testing.assert_allclose(float(losses.l2(f, g, grid, squared=True)), l2_sq_exact, rtol=2e-3)


# ---- gradients of the grid losses equal central finite differences ----------------------------------
def directional_fd_check(fn, x, direction, eps=1e-6, rtol=1e-6):
    """∇fn(x)·v against (fn(x + εv) − fn(x − εv))/(2ε); x and v are matching pytrees."""
    fn = jax.jit(fn)
    leaves = jax.tree_util.tree_leaves
    grad = jax.jit(jax.grad(fn))(x)
    exact = sum(jnp.vdot(g, v) for g, v in zip(leaves(grad), leaves(direction)))
    plus, minus = (jax.tree_util.tree_map(lambda a, v, s=s: a + s * eps * v, x, direction) for s in (1, -1))
    fd = (fn(plus) - fn(minus)) / (2 * eps)
    np.testing.assert_allclose(float(exact), float(fd), rtol=rtol, atol=1e-9)


@pytest.mark.parametrize(
    "loss",
    [
        lambda f, g, grid: losses.l2(f, g, grid),
        losses.kl,
        lambda f, g, grid: losses.wasserstein_1d(f, g, grid, p=1),
        lambda f, g, grid: losses.wasserstein_1d(f, g, grid, p=2),
    ],
    ids=["l2", "kl", "w1", "w2"],
)
def test_grid_loss_gradients_equal_finite_differences(loss):
    grid, f, g = pair(60)
    key_f, key_g = jax.random.split(jax.random.key(1))
    # relative perturbations of both densities at once keep them positive
    df = f * jax.random.uniform(key_f, f.shape, minval=-1.0, maxval=1.0)
    dg = g * jax.random.uniform(key_g, g.shape, minval=-1.0, maxval=1.0)
    directional_fd_check(lambda fg: loss(fg[0], fg[1], grid), (f, g), (df, dg))


@pytest.mark.parametrize("p", [1, 2])
def test_wasserstein_gradient_at_equal_densities_is_zero_as_documented(p):
    """CDFs of equal densities differ by round-off (a closed-over g's CDF is folded by the compiler), and
    the derivative of |F − G| or √ of that residue was O(1): ~0.1 per cell."""
    grid, f, _ = pair(60)
    for loss in (lambda h: losses.wasserstein_1d(h, f, grid, p=p),
                 lambda h: losses.wasserstein_1d(f, h, grid, p=p)):
        np.testing.assert_array_equal(jax.grad(loss)(f), np.zeros(60))
        assert float(loss(f)) == 0.0


def test_nan_inputs_give_nan_not_zero():
    """√ of a NaN went to its branch for x ≤ 0 and came out 0 (energy distance: −1.25); a loss logged by
    fit must show NaN."""
    grid, f, g = pair(20)
    nan_f = jnp.full_like(f, jnp.nan)
    x = normal_cloud(jax.random.key(0), 5, [0.0, 0.0], 1.0)
    y = x.at[0, 0].set(jnp.nan)
    traced = [
        jax.jit(lambda h: losses.l2(h, g, grid))(nan_f),
        jax.jit(lambda h: losses.wasserstein_1d(h, g, grid, p=2))(nan_f),
        losses.energy_distance(x, y),
        losses.sliced_wasserstein(x, y, jax.random.key(1)),
    ]
    assert all(np.isnan(float(v)) for v in traced), traced


def test_sliced_wasserstein_takes_numpy_and_jax_scalars_for_p():
    x = normal_cloud(jax.random.key(5), 40, [0.0, 1.0], 1.0)
    y = normal_cloud(jax.random.key(6), 30, [0.5, 0.0], 2.0)
    value = losses.sliced_wasserstein(x, y, jax.random.key(7), p=2)
    for p in (np.int64(2), np.float32(2.0), jnp.asarray(2.0)):
        assert float(losses.sliced_wasserstein(x, y, jax.random.key(7), p=p)) == float(value)
    for bad in (True, "2"):
        with pytest.raises(TypeError, match="p must be a number"):
            losses.sliced_wasserstein(x, y, jax.random.key(7), p=bad)


def test_grid_losses_are_jit_compatible():
    grid, f, g = pair(100)
    for p in (1, 2):
        jitted = jax.jit(losses.wasserstein_1d, static_argnames=("grid", "p"))
        np.testing.assert_allclose(jitted(f, g, grid=grid, p=p), losses.wasserstein_1d(f, g, grid, p=p))


# ---- particle losses ---------------------------------------------------------------------------------
def normal_cloud(key, n, mean, std):
    mean = jnp.atleast_1d(jnp.asarray(mean, jnp.float64))
    return mean[None, :] + std * jax.random.normal(key, (n, mean.shape[0]), jnp.float64)


@pytest.mark.parametrize("d", [1, 2, 4, 5, 16])
def test_pairwise_squared_distances_are_those_of_each_pair(d):
    """Both forms (a sum over the coordinates up to d = 4, a reduction beyond) give |x_i − y_j|² of every
    pair, and exactly 0 between a point and itself."""
    x = np.random.default_rng(d).normal(size=(6, d))
    y = np.random.default_rng(d + 1).normal(size=(5, d))
    want = np.array([[np.sum((xi - yj) ** 2) for yj in y] for xi in x])
    np.testing.assert_allclose(losses._pairwise_sq_dists(jnp.asarray(x), jnp.asarray(y)), want, rtol=1e-14)
    assert np.all(np.diag(np.asarray(losses._pairwise_sq_dists(jnp.asarray(x), jnp.asarray(x)))) == 0.0)


def test_particle_losses_of_a_cloud_to_itself_are_exactly_zero():
    x = normal_cloud(jax.random.key(0), 101, [0.0, 1.0, -2.0], 1.5)
    assert float(losses.energy_distance(x, x)) == 0.0
    assert float(losses.mmd(x, x, bandwidth=0.7)) == 0.0
    assert float(losses.sliced_wasserstein(x, x, jax.random.key(3))) == 0.0
    assert float(jax.jit(losses.energy_distance)(x, x)) == 0.0
    assert float(jax.jit(losses.mmd)(x, x, 0.7)) == 0.0


def mean_abs_normal(delta, sigma):
    """E|Z| for Z ~ N(delta, sigma²)."""
    return sigma * math.sqrt(2 / math.pi) * math.exp(-(delta**2) / (2 * sigma**2)) + delta * (
        1 - 2 * stats.norm.cdf(-delta / sigma)
    )


REPLICATES = 32


def replicate_statistics(estimator, sampler, n, m):
    """Mean and standard error of an estimator over independent pairs of samples."""
    keys = jax.random.split(jax.random.key(42), (REPLICATES, 2))
    values = np.asarray(jax.lax.map(lambda k: estimator(sampler(k[0], n, 0), sampler(k[1], m, 1)), keys))
    return values.mean(), values.std(ddof=1) / math.sqrt(REPLICATES)


def test_energy_distance_matches_the_population_value_within_sampling_error():
    n, m, delta = 800, 600, 0.8

    def sampler(key, size, which):
        return normal_cloud(key, size, [0.0 if which == 0 else delta], S1 if which == 0 else S2)

    mean, stderr = replicate_statistics(losses.energy_distance, sampler, n, m)
    exx, eyy = 2 * S1 / math.sqrt(math.pi), 2 * S2 / math.sqrt(math.pi)
    population = 2 * mean_abs_normal(delta, math.hypot(S1, S2)) - exx - eyy
    # the V-statistic's diagonal zeros bias E|X − X'| by the factor (1 − 1/n)
    expected = population + exx / n + eyy / m
    assert stderr < 0.04 * population
    assert abs(mean - expected) < 5 * stderr, (mean, expected, stderr)


def test_mmd_matches_the_population_value_within_sampling_error():
    n, m, h, d = 250, 150, 0.9, 2
    delta = np.array([0.6, -0.3])

    def sampler(key, size, which):
        return normal_cloud(key, size, [0.0, 0.0] if which == 0 else delta, S1 if which == 0 else S2)

    mean, stderr = replicate_statistics(lambda x, y: losses.mmd(x, y, h), sampler, n, m)

    def kernel_mean(var, shift_sq):  # E exp(−|Z|²/(2h²)), Z ~ N(shift, var I_d)
        return (h**2 / (h**2 + var)) ** (d / 2) * math.exp(-shift_sq / (2 * (h**2 + var)))

    kxx, kyy = kernel_mean(2 * S1**2, 0.0), kernel_mean(2 * S2**2, 0.0)
    kxy = kernel_mean(S1**2 + S2**2, float(delta @ delta))
    population = kxx + kyy - 2 * kxy
    expected = population + (1 - kxx) / n + (1 - kyy) / m  # diagonal terms k(x, x) = 1
    assert stderr < 0.05 * population
    assert abs(mean - expected) < 5 * stderr, (mean, expected, stderr)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_sliced_wasserstein_in_1d_is_exact_for_a_translate(p):
    x = normal_cloud(jax.random.key(5), 77, [0.0], 1.0)
    v = 0.37
    value = losses.sliced_wasserstein(x, x + v, jax.random.key(6), num_projections=8, p=p)
    np.testing.assert_allclose(float(value), v, rtol=1e-12)


def test_sliced_wasserstein_of_a_translate_averages_the_projected_shift():
    # W_2(θ·x, θ·x + θ·v) = |θ·v| exactly, so SW_2² = mean_k (θ_k·v)²: for θ uniform on the circle this is
    # |v|² cos²φ, mean |v|²/2 and variance |v|⁴/8 per direction.
    x = normal_cloud(jax.random.key(7), 64, [0.0, 0.0], 1.0)
    v = jnp.array([0.6, -0.8])
    K = 4096
    sw = losses.sliced_wasserstein(x, x + v[None, :], jax.random.key(8), num_projections=K, p=2)
    assert abs(float(sw) ** 2 - 0.5) < 5 * math.sqrt(1 / 8 / K)


def test_sliced_wasserstein_handles_clouds_of_different_sizes_exactly():
    # x has each of 3 values once, y the same values twice each: the same empirical measure
    x = jnp.array([[0.0, 1.0], [2.0, -1.0], [1.0, 3.0]])
    y = jnp.concatenate([x, x[::-1]])
    assert float(losses.sliced_wasserstein(x, y, jax.random.key(0), num_projections=16)) == 0.0
    # 1-D: W_1 between {0, 1} and {0, 0.5, 1.5} from the quantile functions: on the pieces (0, 1/3),
    # (1/3, 1/2), (1/2, 2/3), (2/3, 1) the gaps are 0, 0.5, 0.5, 0.5, so W_1 = 0.5/6 + 0.5/6 + 0.5/3 = 1/3
    x1, y1 = jnp.array([0.0, 1.0]), jnp.array([0.0, 0.5, 1.5])
    value = losses.sliced_wasserstein(x1, y1, jax.random.key(0), p=1)
    np.testing.assert_allclose(float(value), 1 / 3, rtol=1e-14)


@pytest.mark.parametrize(
    "loss",
    [
        losses.energy_distance,
        lambda x, y: losses.mmd(x, y, 0.8),
        lambda x, y: losses.sliced_wasserstein(x, y, jax.random.key(2), num_projections=16),
        lambda x, y: losses.sliced_wasserstein(x, y, jax.random.key(2), num_projections=16, p=1),
    ],
    ids=["energy", "mmd", "sliced_w2", "sliced_w1"],
)
def test_particle_loss_gradients_equal_finite_differences(loss):
    kx, ky, kd = jax.random.split(jax.random.key(9), 3)
    x = normal_cloud(kx, 30, [0.0, 0.0], 1.0)
    y = normal_cloud(ky, 20, [0.5, -0.2], 1.3)
    directional_fd_check(lambda u: loss(u, y), x, jax.random.normal(kd, x.shape, jnp.float64))


def test_sinkhorn_divergence_of_a_translate_is_the_squared_shift():
    pytest.importorskip("ott")
    # With cost |x − y|², OT_ε(μ, τ_v μ) = OT_ε(μ, μ) + |v|² for every ε (the cross term integrates to
    # ⟨mean − mean, v⟩ = 0), so the debiased divergence is exactly |v|².
    x = normal_cloud(jax.random.key(10), 100, [0.0, 0.0], 1.0)
    v = jnp.array([0.3, -0.2])
    value = losses.sinkhorn_divergence(x, x + v[None, :], epsilon=0.1)
    np.testing.assert_allclose(float(value), float(v @ v), rtol=1e-3)
    grad = jax.grad(lambda w: losses.sinkhorn_divergence(x, x + w[None, :], epsilon=0.1))(v)
    np.testing.assert_allclose(grad, 2 * v, rtol=1e-2)


def test_sinkhorn_divergence_without_ott_names_the_extra(monkeypatch):
    for name in ("ott", "ott.geometry", "ott.tools"):
        monkeypatch.setitem(sys.modules, name, None)
    x = jnp.zeros((3, 2))
    with pytest.raises(ImportError, match=r'pip install "meanfield-jax\[ot\]"'):
        losses.sinkhorn_divergence(x, x, epsilon=0.1)


# ---- input validation --------------------------------------------------------------------------------
def test_bad_inputs_are_rejected_with_the_argument_named():
    grid, f, g = pair(50)
    with pytest.raises(ValueError, match=r"g must have the grid's shape \(50,\)"):
        losses.l2(f, g[:-1], grid)
    with pytest.raises(ValueError, match="f must have the grid's shape"):
        losses.kl(f[None], g, grid)
    for p in (3, True):  # True ran as p = 1
        with pytest.raises(ValueError, match="p must be 1 or 2"):
            losses.wasserstein_1d(f, g, grid, p=p)
    with pytest.raises(TypeError, match="squared must be True or False, got squared='no'"):
        losses.l2(f, g, grid, squared="no")
    grid2 = mfj.Grid2D((0, 1, 4), (0, 1, 4))
    with pytest.raises(ValueError, match="needs a Grid1D"):
        losses.wasserstein_1d(jnp.ones((4, 4)), jnp.ones((4, 4)), grid2)
    with pytest.raises(ValueError, match="floor"):
        losses.kl(f, g, grid, floor=0.0)
    x = jnp.zeros((5, 2))
    with pytest.raises(ValueError, match="y must have the same dimension d = 2"):
        losses.energy_distance(x, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="x must be particles"):
        losses.mmd(jnp.zeros((2, 2, 2)), x, 1.0)
    with pytest.raises(ValueError, match="bandwidth"):
        losses.mmd(x, x, bandwidth=-1.0)
    with pytest.raises(ValueError, match="num_projections"):
        losses.sliced_wasserstein(x, x, jax.random.key(0), num_projections=0)
    with pytest.raises(ValueError, match="p must be a number >= 1"):
        losses.sliced_wasserstein(x, x, jax.random.key(0), p=0.5)
