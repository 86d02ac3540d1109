"""Property tests over random fields, activations and data (hypothesis)."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import meanfield_jax as mfj

SETTINGS = settings(max_examples=8, deadline=None, derandomize=True)
activations = st.sampled_from(["identity", "tanh", "relu", "sigmoid"])
weights = st.floats(-2.0, 2.0, allow_nan=False)
biases = st.floats(-1.5, 1.5, allow_nan=False)
GRID = mfj.Grid1D(-6.0, 6.0, 96)


def _bump(centre, width):
    return GRID.project(lambda x: jnp.exp(-(((x - centre) / width) ** 2)) * (jnp.abs(x - centre) < 3 * width))


@SETTINGS
@given(w=weights, b=biases, act=activations, centre=st.floats(-1.0, 1.0), scheme=st.sampled_from(
    ["upwind", "muscl", "cweno3"]))
def test_vlasov_conserves_mass_and_positivity(w, b, act, centre, scheme):
    field = mfj.NeuralField.constant(w, b, num_layers=2, T=0.5, activation=act)
    f0 = _bump(centre, 0.7)
    cfl = 0.4 if scheme == "cweno3" else 0.5
    zero_flux = mfj.solve_vlasov(field, f0, GRID, scheme=scheme, cfl=cfl, boundary="zero_flux")
    np.testing.assert_allclose(zero_flux.mass(), zero_flux.mass()[0], rtol=1e-12)
    outflow = mfj.solve_vlasov(field, f0, GRID, scheme=scheme, cfl=cfl, boundary="outflow")
    np.testing.assert_allclose(outflow.total_mass(), outflow.total_mass()[0], rtol=1e-12)
    assert float(jnp.min(zero_flux.f)) >= -1e-14 and float(jnp.min(outflow.f)) >= -1e-14


@SETTINGS
@given(w=st.floats(-2.0, -0.3), b=biases, act=st.sampled_from(["identity", "tanh"]), K=st.floats(0.2, 1.5))
def test_fokker_planck_conserves_mass_and_positivity(w, b, act, K):
    field = mfj.NeuralField.constant(w, b, num_layers=1, T=0.5, activation=act)
    sol = mfj.solve_fokker_planck(field, _bump(0.5, 0.5), GRID, diffusion=K, save_at=[0.0, 0.25, 0.5])
    np.testing.assert_allclose(sol.mass(), sol.mass()[0], rtol=1e-12)
    assert float(jnp.min(sol.f)) >= 0.0


@SETTINGS
@given(seed=st.integers(0, 2**16), act=activations, d=st.integers(1, 3))
def test_particles_are_permutation_equivariant_and_deterministic(seed, act, d):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    field = mfj.NeuralField(jax.random.normal(k1, (4, d, d)), jax.random.normal(k2, (4, d)), activation=act)
    x0 = jax.random.normal(k3, (17, d))
    perm = jax.random.permutation(k4, 17)
    out = mfj.resnet_forward(field, x0)
    np.testing.assert_allclose(mfj.resnet_forward(field, x0[perm]), out[perm], rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(mfj.resnet_forward(field, x0), out)  # bitwise deterministic
    noisy = [mfj.resnet_forward(field, x0, diffusion=0.3, key=k4) for _ in range(2)]
    np.testing.assert_array_equal(noisy[0], noisy[1])


@SETTINGS
@given(w=st.floats(-1.5, 1.5).filter(lambda v: abs(v) > 0.05), b=biases, shift=st.floats(-1.0, 1.0))
def test_bias_shift_is_a_translation_for_identity(w, b, shift):
    """σ = id: changing b by w·s translates every trajectory by −s (x ↦ x − s solves the shifted ODE)."""
    x0 = jnp.linspace(-1.0, 1.0, 9)[:, None]
    base = mfj.NeuralField.constant(w, b, num_layers=8, T=1.0)
    moved = mfj.NeuralField.constant(w, b + w * shift, num_layers=8, T=1.0)
    np.testing.assert_allclose(mfj.resnet_forward(moved, x0 - shift), mfj.resnet_forward(base, x0) - shift,
                               rtol=1e-12, atol=1e-12)


@SETTINGS
@given(w=st.floats(-1.0, -0.2), b=st.floats(-0.5, 0.5))
def test_particle_and_pde_moments_agree_within_error_bounds(w, b):
    """Identity σ: the ResNet mean is the exact discrete law, the PDE mean converges at O(Δx²) + O(Δt)."""
    field = mfj.NeuralField.constant(w, b, num_layers=50, T=1.0)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (4000, 1)) * 0.5
    xT = mfj.resnet_forward(field, x0)
    f0 = GRID.project(lambda x: jnp.exp(-2.0 * x**2) / jnp.sqrt(np.pi / 2))
    sol = mfj.solve_vlasov(field, f0, GRID, boundary="zero_flux")
    m_pde = mfj.moments(sol.f[-1], GRID, order=1)
    mu_exact = float(mfj.moment_ode(w, b, [1.0, 0.0, 0.25], [1.0])[0, 1])
    assert abs(float(m_pde[1] / m_pde[0]) - mu_exact) < 5 * GRID.dx**2
    sampling = 4 * 0.5 / np.sqrt(4000)
    assert abs(float(jnp.mean(xT)) - mu_exact) < sampling + field.dt * (abs(w) + abs(b))
