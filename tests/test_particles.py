"""The ResNet on particles against exact characteristics, exact discrete maps and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import lambertw

import meanfield_jax as mfj

W_, B_, T_ = 0.7, -0.4, 1.0
X0 = np.linspace(-1.5, 2.5, 9)


def exact_characteristic(activation, x0, w=W_, b=B_, t=T_):
    """MODEL.md §2.3: the exact flow of dx/dt = σ(w x + b) in 1-D."""
    z0 = w * x0 + b
    if activation == "identity":
        return np.exp(w * t) * x0 + (b / w) * (np.exp(w * t) - 1)
    if activation == "tanh":
        return (np.arcsinh(np.sinh(z0) * np.exp(w * t)) - b) / w
    if activation == "relu":
        return np.where(z0 <= 0, x0, (z0 * np.exp(w * t) - b) / w)
    if activation == "sigmoid":
        c = z0 - np.exp(-z0) + w * t
        z = c + np.real(lambertw(np.exp(-c)))
        return (z - b) / w
    raise AssertionError(activation)


@pytest.mark.parametrize("activation", ["identity", "tanh", "relu", "sigmoid"])
def test_resnet_converges_to_characteristics_at_first_order(activation):
    exact = exact_characteristic(activation, X0)
    errors = []
    for L in (200, 400, 800):
        field = mfj.NeuralField.constant(W_, B_, num_layers=L, T=T_, activation=activation)
        xT = mfj.resnet_forward(field, X0[:, None])[:, 0]
        errors.append(np.max(np.abs(np.asarray(xT) - exact)))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 5e-3
    np.testing.assert_allclose(orders, 1.0, atol=0.05)


def test_diagonal_2d_field_splits_into_scalar_flows():
    field = mfj.NeuralField.constant(np.diag([0.7, -1.2]), [-0.4, 0.3], num_layers=2000, activation="tanh")
    x0 = np.stack([X0, X0[::-1]], axis=1)
    xT = np.asarray(mfj.resnet_forward(field, x0))
    np.testing.assert_allclose(xT[:, 0], exact_characteristic("tanh", x0[:, 0]), atol=2e-3)
    np.testing.assert_allclose(xT[:, 1], exact_characteristic("tanh", x0[:, 1], w=-1.2, b=0.3), atol=2e-3)


def test_identity_gradient_equals_exact_discrete_derivative():
    """X_L = a^L x0 + b Δt Σ_{k<L} a^k with a = 1 + Δt w; per layer ∂X_L/∂b_l = Δt a^{L-1-l}."""
    L, T, w, b, x0 = 25, 2.0, -0.8, 0.3, 1.7
    dt, a = T / L, 1 + T / L * w
    field = mfj.NeuralField.constant(w, b, num_layers=L, T=T)

    def out(fl):
        return mfj.resnet_forward(fl, jnp.array([[x0]]))[0, 0]

    g = jax.grad(out)(field)
    xs = x0 * a ** np.arange(L) + b * dt * np.array([np.sum(a ** np.arange(k)) for k in range(L)])
    powers = a ** (L - 1 - np.arange(L))
    np.testing.assert_allclose(g.b[:, 0], dt * powers, rtol=1e-10)
    np.testing.assert_allclose(g.W[:, 0, 0], dt * xs * powers, rtol=1e-10)
    # the total derivative for a constant layer (closed form)
    dXdb = dt * np.sum(a ** np.arange(L))
    dXdw = L * a ** (L - 1) * dt * x0 + b * dt * dt * np.sum(np.arange(1, L) * a ** np.arange(L - 1))
    np.testing.assert_allclose(np.sum(g.b), dXdb, rtol=1e-10)
    np.testing.assert_allclose(np.sum(g.W), dXdw, rtol=1e-10)


def test_tanh_gradient_matches_finite_differences():
    key = jax.random.PRNGKey(0)
    kW, kb, kx = jax.random.split(key, 3)
    field = mfj.NeuralField(
        0.5 * jax.random.normal(kW, (6, 3, 3)), 0.3 * jax.random.normal(kb, (6, 3)), activation="tanh", T=1.2
    )
    x0 = jax.random.normal(kx, (11, 3))

    def loss(fl):
        xT = mfj.resnet_forward(fl, x0)
        return jnp.mean(jnp.sum((xT - 0.5) ** 2, axis=1))

    g = jax.grad(loss)(field)
    h = 1e-6
    for idx in [(0, 0, 0), (2, 1, 2), (5, 2, 1)]:
        e = jnp.zeros_like(field.W).at[idx].set(h)
        fd = (loss(eqx_replace(field, W=field.W + e)) - loss(eqx_replace(field, W=field.W - e))) / (2 * h)
        np.testing.assert_allclose(g.W[idx], fd, rtol=1e-6, atol=1e-10)
    for idx in [(0, 0), (3, 2)]:
        e = jnp.zeros_like(field.b).at[idx].set(h)
        fd = (loss(eqx_replace(field, b=field.b + e)) - loss(eqx_replace(field, b=field.b - e))) / (2 * h)
        np.testing.assert_allclose(g.b[idx], fd, rtol=1e-6, atol=1e-10)


def eqx_replace(field, **kw):
    W, b = kw.get("W", field.W), kw.get("b", field.b)
    return mfj.NeuralField(W, b, field.activation, field.T, field.feedback)


def test_save_every_returns_the_layer_states():
    field = mfj.NeuralField.constant(-1.0, 0.5, num_layers=12, T=1.2, activation="tanh")
    x0 = jnp.linspace(-2, 2, 5)[:, None]
    traj = mfj.resnet_forward(field, x0, save_every=3)
    assert traj.shape == (5, 5, 1)
    np.testing.assert_array_equal(traj[0], x0)
    np.testing.assert_allclose(traj[-1], mfj.resnet_forward(field, x0), rtol=1e-15)
    x = x0
    for _ in range(6):
        x = x + field.dt * jnp.tanh(-x + 0.5)
    np.testing.assert_allclose(traj[2], x, rtol=1e-14)


def test_one_dimensional_input_keeps_its_shape():
    field = mfj.NeuralField.constant(-1.0, 0.0, num_layers=4)
    out = mfj.resnet_forward(field, jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(out, np.array([1.0, 2.0]) * 0.75**4)


def test_euler_maruyama_moments_follow_the_discrete_recursions():
    """Identity σ: μ_{k+1} = a μ_k + Δt b, V_{k+1} = a² V_k + 2 K Δt, a = 1 + Δt w."""
    L, T, w, b, K, n = 20, 2.0, -1.0, 0.5, 0.7, 200_000
    field = mfj.NeuralField.constant(w, b, num_layers=L, T=T)
    x0 = jax.random.uniform(jax.random.PRNGKey(1), (n, 1), minval=2.0, maxval=8.0)
    xT = np.asarray(mfj.resnet_forward(field, x0, diffusion=K, key=jax.random.PRNGKey(2)))[:, 0]
    x0n = np.asarray(x0)[:, 0]
    dt, a = T / L, 1 + T / L * w
    mu, V = x0n.mean(), x0n.var()
    for _ in range(L):
        mu, V = a * mu + dt * b, a * a * V + 2 * K * dt
    se_mean = np.sqrt(V / n)
    se_var = V * np.sqrt(2.0 / n) * 1.5  # the sample is not exactly Gaussian
    assert abs(xT.mean() - mu) < 4 * se_mean
    assert abs(xT.var() - V) < 4 * se_var


def test_space_dependent_diffusion_and_noise_replay():
    field = mfj.NeuralField.constant(-1.0, 0.0, num_layers=10)
    x0 = jnp.zeros((5000, 1))
    K = 0.2
    a = mfj.resnet_forward(field, x0, diffusion=lambda x: K * jnp.ones(x.shape[0]), key=jax.random.PRNGKey(3))
    b = mfj.resnet_forward(field, x0, diffusion=K, key=jax.random.PRNGKey(3))
    # same key, same noise: the run is reproducible (to round-off of the O(1) terms: XLA may fuse the two
    # amplitudes, an array and a scalar, into their products differently)
    np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_feedback_mean_follows_discrete_law_and_variance_ignores_bias():
    L, T, w, beta, b = 50, 2.0, -1.0, -1.0, 0.3
    x0 = jax.random.uniform(jax.random.PRNGKey(4), (1000, 1), minval=2.0, maxval=8.0)
    dt = T / L
    fb = mfj.NeuralField.constant(w, b, num_layers=L, T=T, feedback=beta)
    plain = mfj.NeuralField.constant(w, 0.0, num_layers=L, T=T)
    xf, xp = mfj.resnet_forward(fb, x0), mfj.resnet_forward(plain, x0)
    mu0 = float(jnp.mean(x0))
    mu = mu0
    for _ in range(L):
        mu = (1 + dt * (w + beta)) * mu + dt * b
    np.testing.assert_allclose(jnp.mean(xf), mu, rtol=1e-12)
    np.testing.assert_allclose(jnp.var(xf), jnp.var(xp), rtol=1e-12)
    np.testing.assert_allclose(jnp.var(xp), (1 + dt * w) ** (2 * L) * jnp.var(x0), rtol=1e-12)
    # first order towards the continuous law m1(t) = e^{(w+β)t} m1(0) (here with b = 0)
    errs = []
    for L in (100, 200):
        f0 = mfj.NeuralField.constant(w, 0.0, num_layers=L, T=T, feedback=beta)
        errs.append(abs(float(jnp.mean(mfj.resnet_forward(f0, x0))) - mu0 * np.exp((w + beta) * T)))
    np.testing.assert_allclose(np.log2(errs[0] / errs[1]), 1.0, atol=0.05)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"x0": np.zeros((4, 3))}, ValueError, r"x0 must have shape \(n, d\) with d = 2"),
        ({"x0": np.zeros(4)}, ValueError, r"x0 must have shape"),
        ({"diffusion": 1.0}, ValueError, r"diffusion was given but key is None"),
        ({"diffusion": -1.0, "key": jax.random.PRNGKey(0)}, ValueError, r"diffusion must be .* >= 0.*-1"),
        ({"diffusion": "big", "key": jax.random.PRNGKey(0)}, TypeError, r"diffusion must be"),
        ({"save_every": 3}, ValueError, r"save_every=3 must divide .* L=4"),
        ({"save_every": 0}, ValueError, r"save_every must be a positive integer"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, exc, match):
    field = mfj.NeuralField.constant(np.eye(2), np.zeros(2), num_layers=4)
    kwargs = {"x0": np.zeros((4, 2)), **kwargs}
    with pytest.raises(exc, match=match):
        mfj.resnet_forward(field, **kwargs)
    with pytest.raises(TypeError, match="field must be a NeuralField"):
        mfj.resnet_forward("field", np.zeros((4, 2)))


@pytest.mark.parametrize("adjoint", ["checkpointed", "direct", "discrete"])
def test_gradient_is_finite_where_a_callable_diffusion_vanishes(adjoint):
    """K(x) = max(x, 0)/2 is zero at the particles left of 0: sqrt(2 Δt K) has derivative 0 there (K is
    zero around them), so the gradient is finite and matches central finite differences."""
    x0 = jnp.asarray([[-1.0], [0.5], [2.0], [3.0], [-0.5]])

    def loss(W):
        field = mfj.NeuralField(W, jnp.zeros((4, 1)), activation="tanh")
        x = mfj.resnet_forward(field, x0, diffusion=lambda x: 0.5 * jnp.maximum(x, 0.0),
                               key=jax.random.key(0), adjoint=adjoint)
        return jnp.sum(x**2)

    W = -jnp.ones((4, 1, 1))
    grad = jax.grad(loss)(W)
    assert np.all(np.isfinite(grad))
    h = 1e-6
    for l in range(4):
        e = jnp.zeros_like(W).at[l, 0, 0].set(h)
        np.testing.assert_allclose(grad[l, 0, 0], (loss(W + e) - loss(W - e)) / (2 * h), rtol=1e-6)


def test_a_callable_diffusion_sees_the_particles_passed_and_a_wrong_shape_is_named():
    """K is called on the n particles the user passed (an odd n too, where the CPU kernel would pad one),
    and a K of a shape that fits none of (), (n,), (n, 1), (n, d) is refused with its shape."""
    field = mfj.NeuralField(-jnp.ones((2, 1, 1)), jnp.zeros((2, 1)))
    seen = []

    def K(x):
        seen.append(x.shape)
        return 0.1 * jnp.ones(x.shape[0])

    x = mfj.resnet_forward(field, jnp.zeros((5, 1)), diffusion=K, key=jax.random.key(1))
    assert x.shape == (5, 1) and seen and all(shape == (5, 1) for shape in seen)
    field3 = mfj.NeuralField(-jnp.eye(3), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"diffusion K\(x\).*got shape \(4, 2\)"):
        mfj.resnet_forward(field3, jnp.zeros((4, 3)), diffusion=lambda y: y[:, :2] ** 2,
                           key=jax.random.key(1))


def test_complex_particles_are_refused():
    field = mfj.NeuralField(-jnp.eye(2), jnp.zeros(2))
    with pytest.raises(TypeError, match="x0 must be real-valued"):
        mfj.resnet_forward(field, jnp.ones((3, 2)) * (1 + 1j))
